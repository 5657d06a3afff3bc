//! `journal-fanout check`: what would stop this configuration from shipping, one finding a
//! line (see [`daemon_kit::hostcheck`]). Nothing is sent anywhere.

use std::path::Path;

use daemon_kit::hostcheck::{self, Finding, JournaldConf};

use crate::config::{Config, Destination, JournalLocation, SourceKind};

/// Run every check for `config`, print the findings; the exit status (1 if any FAILs).
pub async fn run(config: &Config) -> u8 {
    let mut findings = Vec::new();
    if config.src == SourceKind::Journald {
        findings.push(state_dir(&config.state_dir));
        findings.push(journal(&config.journal));
        let ns = match &config.journal {
            JournalLocation::Namespace(ns) => Some(ns.as_str()),
            _ => None,
        };
        findings.push(JournaldConf::read(ns).storage_finding());
    }
    for &dst in &config.destinations {
        findings.push(destination(dst).await);
    }
    hostcheck::report(&findings)
}

/// Where cursors are saved: it must exist or be creatable, and be writable.
fn state_dir(dir: &Path) -> Finding {
    const WHAT: &str = "state directory";
    // The nearest existing ancestor decides whether it can be created.
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    let probe = at.join(format!(".journal-fanout-check-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            if at == dir {
                Finding::ok(WHAT, format!("{} is writable", dir.display()))
            } else {
                Finding::ok(
                    WHAT,
                    format!("{} will be created in {}", dir.display(), at.display()),
                )
            }
        }
        Err(e) => Finding::fail(
            WHAT,
            format!(
                "{} is not writable ({e}): cursors cannot be saved; set --state-dir to a writable \
                 directory (the unit's StateDirectory= gives /var/lib/journal-fanout)",
                at.display()
            ),
        ),
    }
}

fn journal(location: &JournalLocation) -> Finding {
    const WHAT: &str = "journal access";
    #[cfg(feature = "journald")]
    {
        use crate::source::journal_access::{check, Verdict};
        let metrics = crate::metrics::Metrics::new();
        match check(location, &metrics, None) {
            Ok(o) => match o.verdict {
                Verdict::Readable => Finding::ok(WHAT, "every journal file is readable"),
                Verdict::NoFiles => Finding::warn(
                    WHAT,
                    "no journal files yet: is journald (or the namespace) running? entries are \
                     read once files appear",
                ),
                Verdict::Partial | Verdict::Unreadable => Finding::warn(
                    WHAT,
                    format!(
                        "{} journal files cannot be read: their lines are not shipped; run as \
                         root or in the systemd-journal group",
                        o.unreadable
                    ),
                ),
            },
            Err(e) => Finding::fail(WHAT, e.0),
        }
    }
    #[cfg(not(feature = "journald"))]
    {
        let _ = location;
        Finding::fail(
            WHAT,
            "this build has no journald support (feature `journald`)",
        )
    }
}

/// A destination's credentials and settings, as the daemon would load them at start.
async fn destination(dst: Destination) -> Finding {
    let (what, result): (&'static str, anyhow::Result<String>) = match dst {
        Destination::Stdout => ("destination stdout", Ok("nothing to configure".into())),
        Destination::Loggly => (
            "destination loggly",
            crate::sinks::loggly::LogglyConfig::from_env(&crate::sinks::secret::process_env)
                .map(|c| format!("token set, sending to {}", c.shown())),
        ),
        Destination::Logdna => (
            "destination logdna",
            crate::sinks::logdna::LogdnaConfig::from_env(&crate::sinks::secret::process_env)
                .map(|_| "ingestion key set".to_string()),
        ),
        Destination::CloudWatchLogs => (
            "destination cloudwatchlogs",
            crate::sinks::cloudwatch::config::client()
                .await
                .map(|_| "AWS region and credentials found".to_string()),
        ),
    };
    match result {
        Ok(detail) => Finding::ok(what, detail),
        Err(e) => Finding::fail(what, daemon_kit::exit::one_line(&e)),
    }
}
