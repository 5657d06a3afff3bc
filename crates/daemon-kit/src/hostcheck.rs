//! The host self-check both daemons offer (`log-proxy check`, `journal-fanout check`): one
//! line per finding, `OK`, `WARN` or `FAIL`, with the fix. Exit 0 when nothing FAILs.
//! The journald facts both need (storage, rate limit) are read here.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

/// One checked thing: its name, what was found, and (unless OK) what to do.
#[derive(Debug, Clone)]
pub struct Finding {
    pub status: Status,
    pub what: &'static str,
    pub detail: String,
}

impl Finding {
    pub fn ok(what: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            status: Status::Ok,
            what,
            detail: detail.into(),
        }
    }
    pub fn warn(what: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            status: Status::Warn,
            what,
            detail: detail.into(),
        }
    }
    pub fn fail(what: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            status: Status::Fail,
            what,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.what, self.detail)
    }
}

/// Print the findings to stdout, one a line; the exit status: 1 if any FAILs, else 0.
pub fn report(findings: &[Finding]) -> u8 {
    for f in findings {
        println!("{f}");
    }
    let worst = findings.iter().map(|f| f.status).max();
    u8::from(worst == Some(Status::Fail))
}

/// `net.unix.max_dgram_qlen`: how many datagrams a unix socket queues (log-proxy's and
/// journald's); the rest of a burst waits in the sender, and a killed journald loses them.
pub fn dgram_qlen() -> Finding {
    const WHAT: &str = "net.unix.max_dgram_qlen";
    match std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen") {
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(n) if n >= 512 => Finding::ok(WHAT, format!("{n}")),
            Ok(n) => Finding::warn(
                WHAT,
                format!(
                    "{n}: unix datagram sockets queue only {n} lines, so bursts stall senders and a \
                     journald restart loses up to {n} queued lines; set it to 512 or more \
                     (echo 'net.unix.max_dgram_qlen = 512' > /etc/sysctl.d/50-logsuite.conf; \
                     sysctl --system), as systemd does at boot"
                ),
            ),
            Err(_) => Finding::warn(WHAT, format!("unreadable value {s:?}")),
        },
        Err(e) => Finding::warn(WHAT, format!("cannot read it ({e})")),
    }
}

/// journald's settings from its configuration files, for the default instance or a
/// namespace: `[Journal]` keys, the last file setting one winning (as systemd reads them).
#[derive(Debug, Default)]
pub struct JournaldConf {
    pub storage: Option<String>,
    pub rate_limit_interval: Option<String>,
    pub rate_limit_burst: Option<String>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

impl JournaldConf {
    pub fn read(namespace: Option<&str>) -> JournaldConf {
        Self::read_from(Path::new("/"), namespace)
    }

    fn read_from(root: &Path, namespace: Option<&str>) -> JournaldConf {
        let name = match namespace {
            Some(ns) => format!("journald@{ns}.conf"),
            None => "journald.conf".to_string(),
        };
        let mut files = vec![root.join("etc/systemd").join(&name)];
        let mut dropins: Vec<PathBuf> = ["etc/systemd", "run/systemd", "usr/lib/systemd"]
            .iter()
            .filter_map(|d| std::fs::read_dir(root.join(d).join(format!("{name}.d"))).ok())
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        // Drop-ins apply in file-name order, whatever their directory.
        dropins.sort_by_key(|p| p.file_name().map(|f| f.to_owned()));
        files.extend(dropins);
        let mut conf = JournaldConf::default();
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            let mut in_journal = false;
            for line in text.lines().map(str::trim) {
                if line.starts_with('[') {
                    in_journal = line == "[Journal]";
                    continue;
                }
                if !in_journal || line.starts_with('#') || line.starts_with(';') {
                    continue;
                }
                if let Some((k, v)) = line.split_once('=') {
                    let v = Some(v.trim().to_string());
                    match k.trim() {
                        "Storage" => conf.storage = v,
                        "RateLimitIntervalSec" => conf.rate_limit_interval = v,
                        "RateLimitBurst" => conf.rate_limit_burst = v,
                        _ => {}
                    }
                }
            }
            conf.files.push(f);
        }
        conf
    }

    /// Where lines wait until they are shipped: on disk, or in memory only.
    pub fn storage_finding(&self) -> Finding {
        const WHAT: &str = "journald storage";
        let set = self.storage.as_deref().unwrap_or("auto");
        let persistent_dir = Path::new("/var/log/journal").is_dir();
        match set {
            "persistent" => Finding::ok(WHAT, "Storage=persistent (on disk)"),
            "auto" if persistent_dir => {
                Finding::ok(WHAT, "Storage=auto with /var/log/journal: on disk")
            }
            "none" => Finding::fail(
                WHAT,
                "Storage=none: journald keeps nothing, so nothing can be shipped; set \
                 Storage=persistent in /etc/systemd/journald.conf",
            ),
            other => Finding::warn(
                WHAT,
                format!(
                    "Storage={other}{}: the journal is in memory only, so a reboot loses lines \
                     not yet shipped and its size is small; set Storage=persistent in \
                     /etc/systemd/journald.conf (or create /var/log/journal)",
                    if other == "auto" {
                        " without /var/log/journal"
                    } else {
                        ""
                    }
                ),
            ),
        }
    }
}

/// Whether something serves the unix socket at `path`: `Ok(true)` if it answers, `Ok(false)`
/// for a stale file, `Err` when there is no socket there.
pub fn socket_served(path: &Path, stream: bool) -> std::io::Result<bool> {
    use std::os::unix::fs::FileTypeExt;
    let m = std::fs::symlink_metadata(path)?;
    if !m.file_type().is_socket() {
        return Err(std::io::Error::other("not a socket"));
    }
    let r = if stream {
        std::os::unix::net::UnixStream::connect(path).map(drop)
    } else {
        std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.connect(path))
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_win_and_only_the_journal_section_counts() {
        let root = std::env::temp_dir().join(format!("hostcheck-{}", std::process::id()));
        let d = root.join("etc/systemd/journald@ns.conf.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            root.join("etc/systemd/journald@ns.conf"),
            "[Journal]\nStorage=persistent\n[Other]\nStorage=none\n",
        )
        .unwrap();
        std::fs::write(
            d.join("50-vol.conf"),
            "[Journal]\n# Storage=auto\nStorage=volatile\n",
        )
        .unwrap();
        let c = JournaldConf::read_from(&root, Some("ns"));
        assert_eq!(c.storage.as_deref(), Some("volatile"));
        assert_eq!(c.storage_finding().status, Status::Warn);
        std::fs::remove_dir_all(root).unwrap();
    }
}
