//! One journal cursor file per destination in `--state-dir`, replaced atomically
//! (write a temporary file, fsync it, rename it over the old one, fsync the directory), so a
//! crash leaves either the old cursor or the new one, never a torn one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
}

impl Checkpoint {
    /// The cursor file for `destination` reading `source` (e.g. a namespace), so switching
    /// journals never resumes from a cursor of another journal.
    pub fn new(state_dir: &Path, destination: &str, source: Option<&str>) -> Checkpoint {
        let name = match source {
            Some(s) => format!("{destination}@{}.cursor", sanitize(s)),
            None => format!("{destination}.cursor"),
        };
        Checkpoint {
            path: state_dir.join(name),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Make sure the state directory exists and is writable, so a bad `--state-dir` fails
    /// at start instead of after the first batch.
    pub fn prepare(&self) -> anyhow::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the state directory {} (set --state-dir to a writable directory)",
                dir.display()
            )
        })?;
        let probe = dir.join(".journal-fanout-probe");
        fs::write(&probe, b"").with_context(|| {
            format!(
                "the state directory {} is not writable (set --state-dir to a writable directory)",
                dir.display()
            )
        })?;
        let _ = fs::remove_file(probe);
        Ok(())
    }

    /// The saved cursor, if any.
    pub fn load(&self) -> anyhow::Result<Option<String>> {
        match fs::read_to_string(&self.path) {
            Ok(s) => {
                let s = s.trim();
                Ok((!s.is_empty()).then(|| s.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e)
                .with_context(|| format!("cannot read the saved cursor {}", self.path.display())),
        }
    }

    /// Save `cursor` durably.
    pub fn save(&self, cursor: &str) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("cursor.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(cursor.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().with_context(|| format!("cannot save the cursor to {}", self.path.display()))
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoint::new(dir.path(), "cloudwatchlogs", Some("ns/1"));
        c.prepare().unwrap();
        assert_eq!(c.load().unwrap(), None);
        c.save("s=1;i=2").unwrap();
        c.save("s=1;i=3").unwrap();
        assert_eq!(c.load().unwrap().as_deref(), Some("s=1;i=3"));
        assert!(c.path().ends_with("cloudwatchlogs@ns_1.cursor"));
    }
}
