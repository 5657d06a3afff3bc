//! Reloading the policy file: on SIGHUP and when the file changes (inotify on its directory,
//! so an editor's write-and-rename is seen too; debounced). A valid file is handed to the
//! processor, which applies it between two lines; a bad one is refused with its reason and
//! the running policy stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::limiter::Limit;
use crate::policy::{Overrides, Policy};

/// Changes closer together than this are one reload (editors write in several steps).
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Where the policy comes from and how to build it again.
#[derive(Clone)]
pub struct Source {
    pub path: PathBuf,
    pub flags: Limit,
    pub over: Overrides,
}

impl Source {
    /// Read and check the file; warnings are logged.
    pub fn load(&self) -> Result<Policy, String> {
        let (p, warnings) = Policy::load(&self.path, self.flags, self.over)?;
        for w in warnings {
            tracing::warn!(policy = %self.path.display(), "{w}");
        }
        Ok(p)
    }

    /// Reload now (`why`: what asked) and hand a good policy to `to`.
    pub fn reload(&self, why: &str, to: &Sender<Arc<Policy>>) {
        match self.load() {
            Ok(p) => {
                tracing::info!(policy = %self.path.display(), "{why}: reloading the policy");
                let _ = to.send(Arc::new(p));
            }
            Err(e) => tracing::error!(
                "{why}: {e}; the policy was not reloaded and the running one stays (fix the file; it is read again when it changes or on SIGHUP)"
            ),
        }
    }
}

/// Watch `path`'s directory and reload `source` when the file changes, until the returned
/// watcher is dropped. Runs on the current tokio runtime.
pub fn watch(source: Source, to: Sender<Arc<Policy>>) -> anyhow::Result<notify::INotifyWatcher> {
    use notify::Watcher;
    let path = source.path.clone();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path.file_name().map(|n| n.to_owned());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
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
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Quiet for DEBOUNCE: the write is complete.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            source.reload("the policy file changed", &to);
        }
    });
    Ok(watcher)
}
