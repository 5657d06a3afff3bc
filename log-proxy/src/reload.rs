//! Reloading the policy file: on SIGHUP and when the file changes (inotify on its directory,
//! so an editor's write-and-rename is seen too; debounced). A valid file is handed to the
//! processor, which applies it between two lines; a bad one is refused with its reason and
//! the running policy stays.

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::limiter::Limit;
use crate::policy::{Overrides, Policy};

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

/// Reload `source` whenever its file changes (see [`daemon_kit::watch`]), for as long as the
/// current tokio runtime runs.
pub fn watch(source: Source, to: Sender<Arc<Policy>>) -> anyhow::Result<()> {
    let mut file = daemon_kit::watch::FileWatch::new(&source.path)?;
    tokio::spawn(async move {
        loop {
            file.changed().await;
            source.reload("the policy file changed", &to);
        }
    });
    Ok(())
}
