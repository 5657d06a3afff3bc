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

/// `journal-fanout check-config [FILE]`: read and check the file as a start or reload would
/// (with the same flags and environment), say what it sets, and with a journal named, where
/// its last 1,000 container lines would go. Exit 0 when valid, 2 when not.
pub fn config_file(args: &crate::config::Args, file: Option<&Path>) -> std::process::ExitCode {
    use crate::config_file::{locate, DEFAULT_PATH};
    let mut a = args.clone();
    a.command = None;
    let Some(path) = locate(file.or(a.config.as_deref())) else {
        eprintln!(
            "journal-fanout: check-config: no configuration file: name one \
             (journal-fanout check-config FILE, or --config) or create {DEFAULT_PATH}"
        );
        return std::process::ExitCode::from(2);
    };
    a.config = Some(path.clone());
    // Without --dst, routes may name any destination journal-fanout has.
    if a.dst.is_none() {
        a.dst = Some("stdout,cloudwatchlogs,loggly,logdna".into());
    }
    let preview = a.journal_namespace.is_some() || a.journal_dir.is_some();
    let config = match Config::from_args(a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("journal-fanout: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let r = &config.rules;
    println!(
        "{}: OK: group = {:?}, stream = {:?}, {} route(s), CloudWatch retention {}",
        path.display(),
        r.group.source(),
        r.stream.source(),
        r.routes.routes.len(),
        match config.cloudwatch_retention_days {
            Some(d) => format!("{d} days"),
            None => "never expires".into(),
        }
    );
    for route in &r.routes.routes {
        println!(
            "  route {}: to [{}]",
            route.number,
            route.to_names.join(", ")
        );
    }
    #[cfg(feature = "journald")]
    if preview {
        if let Err(e) = show_where_entries_go(&config, 1000) {
            eprintln!("journal-fanout: check-config: {e:#}");
            return std::process::ExitCode::from(1);
        }
    }
    #[cfg(not(feature = "journald"))]
    let _ = preview;
    std::process::ExitCode::SUCCESS
}

/// Route the journal's last `n` entries as the daemon would and print the counts.
#[cfg(feature = "journald")]
fn show_where_entries_go(config: &Config, n: u64) -> anyhow::Result<()> {
    use crate::source::{journald::JournaldSource, Read, Source};
    use std::collections::BTreeMap;
    let rules = std::sync::Arc::new(config.rules.clone());
    let mut src = JournaldSource::open_last(&config.journal, rules, n)?;
    let (mut lines, mut others) = (0u64, 0u64);
    let mut per_dest = vec![0u64; config.destinations.len()];
    let mut per_route: BTreeMap<usize, u64> = BTreeMap::new();
    let mut names: BTreeMap<(String, String), u64> = BTreeMap::new();
    loop {
        match src.read()? {
            Read::Record(e) => {
                lines += 1;
                for (i, c) in per_dest.iter_mut().enumerate() {
                    if e.to & (1 << i) != 0 {
                        *c += 1;
                    }
                }
                *per_route.entry(e.route.unwrap_or(0)).or_default() += 1;
                *names
                    .entry((e.record.group.clone(), e.record.stream.clone()))
                    .or_default() += 1;
            }
            Read::Skipped => others += 1,
            Read::Idle | Read::End => break,
        }
    }
    println!(
        "last {} journal entries: {lines} container line(s), {others} other(s) (not shipped)",
        lines + others
    );
    for (d, c) in config.destinations.iter().zip(&per_dest) {
        println!("  to {:<15} {c}", d.name());
    }
    for (route, c) in &per_route {
        match route {
            0 => println!("  no route matched: {c} (sent to every destination)"),
            r => println!("  route {r} matched: {c}"),
        }
    }
    let mut by_count: Vec<_> = names.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    println!("  group / stream (lines), largest first:");
    for ((g, s), c) in by_count.iter().take(20) {
        println!("    {g} / {s} ({c})");
    }
    if by_count.len() > 20 {
        println!("    … and {} more", by_count.len() - 20);
    }
    Ok(())
}
