//! Noticing that a configuration file changed, so a daemon can reload it without a SIGHUP.
//!
//! The file's directory is watched (inotify), not the file: editors and configuration
//! managers replace files by writing another and renaming it over, which a watch on the
//! file itself would miss. Changes closer together than [`DEBOUNCE`] are one change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;

/// Changes closer together than this are one (editors write in several steps).
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches one file; dropping it stops the watch.
pub struct FileWatch {
    _watcher: notify::INotifyWatcher,
    changed: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl FileWatch {
    /// Start watching `path` (its directory must exist).
    pub fn new(path: &Path) -> anyhow::Result<FileWatch> {
        let dir: PathBuf = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let name = path.file_name().map(|n| n.to_owned());
        let (tx, changed) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher = notify::INotifyWatcher::new(
            move |ev: notify::Result<notify::Event>| {
                let Ok(ev) = ev else { return };
                if ev.kind.is_access() {
                    return;
                }
                if ev.paths.iter().any(|p| p.file_name() == name.as_deref()) {
                    let _ = tx.send(());
                }
            },
            notify::Config::default(),
        )?;
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        Ok(FileWatch {
            _watcher: watcher,
            changed,
        })
    }

    /// Wait for the next change, once writing has been quiet for [`DEBOUNCE`].
    pub async fn changed(&mut self) {
        if self.changed.recv().await.is_none() {
            return std::future::pending().await;
        }
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, self.changed.recv()).await {}
    }
}
