//! Command line and environment (`JOURNAL_FANOUT_<NAME>`), checked once at start.
//!
//! Flag names follow ecs-logs where it had them (`--src`, `--dst`, `--max-batch-bytes`,
//! `--max-batch-size`, `--flush-timeout`), so existing unit files keep working.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "journal-fanout",
    version = env!("LOGSUITE_VERSION"),
    about = "Tail journald and ship every container line to stdout, CloudWatch Logs, Loggly \
             and LogDNA, each destination at its own pace from its own saved journal cursor.",
    after_help = AFTER_HELP
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Where lines come from: the journal, or JSON lines {"group","stream","event"} on stdin.
    #[arg(
        long,
        env = "JOURNAL_FANOUT_SRC",
        value_enum,
        default_value = "journald"
    )]
    pub src: SourceKind,

    /// Comma-separated destinations: stdout, cloudwatchlogs, loggly, logdna.
    #[arg(long, env = "JOURNAL_FANOUT_DST", default_value = "stdout")]
    pub dst: String,

    /// Read the journal files in this directory instead of the system journal.
    #[arg(
        long,
        env = "JOURNAL_FANOUT_JOURNAL_DIR",
        conflicts_with = "journal_namespace"
    )]
    pub journal_dir: Option<PathBuf>,

    /// Read this journald namespace (systemd-journald@NS) instead of the system journal.
    #[arg(long, env = "JOURNAL_FANOUT_JOURNAL_NAMESPACE")]
    pub journal_namespace: Option<String>,

    /// Where each destination's journal cursor is kept.
    #[arg(
        long,
        env = "JOURNAL_FANOUT_STATE_DIR",
        default_value = "/var/lib/journal-fanout"
    )]
    pub state_dir: PathBuf,

    /// Where to begin when a destination has no saved cursor yet.
    #[arg(long, env = "JOURNAL_FANOUT_FROM", value_enum, default_value = "tail")]
    pub from: StartAt,

    /// Journal field naming the log group; entries without it are not container lines.
    #[arg(
        long,
        env = "JOURNAL_FANOUT_GROUP_FIELD",
        default_value = "CONTAINER_TAG"
    )]
    pub group_field: String,

    /// Journal field naming the log stream [default: CONTAINER_NAME, or ecs-logs'
    /// JOURNALD_STREAM_NAME when set].
    #[arg(long, env = "JOURNAL_FANOUT_STREAM_FIELD")]
    pub stream_field: Option<String>,

    /// Host name put into events [default: the entry's _HOSTNAME, else this machine's name].
    #[arg(long, env = "JOURNAL_FANOUT_HOSTNAME")]
    pub hostname: Option<String>,

    /// Most bytes (of messages) in one batch handed to a destination.
    #[arg(
        long,
        env = "JOURNAL_FANOUT_MAX_BATCH_BYTES",
        default_value_t = 1_000_000
    )]
    pub max_batch_bytes: usize,

    /// Most events in one batch handed to a destination.
    #[arg(long, env = "JOURNAL_FANOUT_MAX_BATCH_SIZE", default_value_t = 10_000)]
    pub max_batch_size: usize,

    /// Longest a line waits in a partial batch before it is sent.
    #[arg(long, env = "JOURNAL_FANOUT_FLUSH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub flush_timeout: Duration,

    /// On SIGTERM, how long to keep trying to deliver what is batched before exiting anyway
    /// (the cursor is then not advanced, so nothing is lost: it is resent on the next start).
    #[arg(long, env = "JOURNAL_FANOUT_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Serve OpenMetrics at http://ADDR/metrics, health at /healthz (503 names a stalled part) and /readyz.
    #[arg(long, env = "JOURNAL_FANOUT_METRICS_ADDRESS")]
    pub metrics_address: Option<SocketAddr>,

    /// Retention (days) set on CloudWatch log groups that journal-fanout creates.
    #[arg(long, env = "JOURNAL_FANOUT_CLOUDWATCH_RETENTION_DAYS")]
    pub cloudwatch_retention_days: Option<i32>,

    /// PEM file of extra CA certificates to trust for https:// and tls:// destinations
    /// (certificates are always verified; this adds private CAs to the system's).
    #[arg(long, env = "JOURNAL_FANOUT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

const AFTER_HELP: &str = "\
EXIT STATUS:
  0  stopped on SIGTERM or SIGINT (SIGHUP never stops it)
  1  a runtime failure (a reader or destination failed for good, a thread panicked): worth a
     restart, which resumes from the saved cursors
  2  a configuration error (bad flag or value, missing AWS region or credentials, missing
     LOGGLY_TOKEN or LOGDNA_KEY, unwritable --state-dir, unreadable journal): fix the
     configuration; the unit does not restart on it
  journal-fanout check: 0 when nothing FAILs, 1 otherwise

ENVIRONMENT:
  AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_ENDPOINT_URL
                       the standard AWS settings, for --dst cloudwatchlogs
  LOGGLY_TOKEN (or LOGGLY_TOKEN_FILE), LOGGLY_URL, LOGGLY_TAGS
                       for --dst loggly (docs/journal-fanout-destinations.md)
  LOGDNA_TOKEN (or LOGDNA_TOKEN_FILE), LOGDNA_URL
                       for --dst logdna
  JOURNALD_STREAM_NAME ecs-logs' stream field, when --stream-field is not given
  RUST_LOG             diagnostics level on stderr (error, warn, info, debug; default info)

SIGNALS:
  SIGTERM, SIGINT      deliver what is batched, save cursors, exit 0
  SIGHUP               never stops it: \"reload requested; nothing to reload\"";

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check this host and the configuration for what stops shipping (state directory,
    /// journal access, journald storage, destinations' tokens and region): one line each with
    /// OK, WARN or FAIL and the fix.
    Check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    Journald,
    Stdin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartAt {
    Tail,
    Head,
}

/// A destination named in `--dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    Stdout,
    CloudWatchLogs,
    Loggly,
    Logdna,
}

impl Destination {
    pub fn name(self) -> &'static str {
        match self {
            Destination::Stdout => "stdout",
            Destination::CloudWatchLogs => "cloudwatchlogs",
            Destination::Loggly => "loggly",
            Destination::Logdna => "logdna",
        }
    }
}

/// Which journal to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalLocation {
    System,
    Directory(PathBuf),
    Namespace(String),
}

/// How entries become records.
#[derive(Debug, Clone)]
pub struct EventRules {
    pub group_field: String,
    pub stream_field: String,
    /// `--hostname` when given: wins over the entry's `_HOSTNAME`.
    pub hostname_override: Option<String>,
    /// This machine's name: used when an entry has no `_HOSTNAME`.
    pub hostname_default: String,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub flush_timeout: Duration,
}

/// Everything checked and ready to use.
#[derive(Debug, Clone)]
pub struct Config {
    pub src: SourceKind,
    pub destinations: Vec<Destination>,
    pub journal: JournalLocation,
    pub state_dir: PathBuf,
    pub from: StartAt,
    pub rules: EventRules,
    pub limits: BatchLimits,
    pub shutdown_timeout: Duration,
    pub metrics_address: Option<SocketAddr>,
    pub cloudwatch_retention_days: Option<i32>,
    pub ca_file: Option<PathBuf>,
}

/// Parse a `--dst` list. Unknown names are an error, never a silent skip.
pub fn parse_destinations(list: &str) -> anyhow::Result<Vec<Destination>> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let d = match name.to_ascii_lowercase().as_str() {
            "stdout" => Destination::Stdout,
            "cloudwatchlogs" | "cloudwatch" => Destination::CloudWatchLogs,
            "loggly" => Destination::Loggly,
            "logdna" => Destination::Logdna,
            _ => bail!("--dst: unknown destination {name:?} (supported: stdout, cloudwatchlogs, loggly, logdna)"),
        };
        if !out.contains(&d) {
            out.push(d);
        }
    }
    if out.is_empty() {
        bail!("--dst is empty: name at least one destination (stdout, cloudwatchlogs, loggly, logdna)");
    }
    Ok(out)
}

impl Config {
    pub fn from_args(a: Args) -> anyhow::Result<Config> {
        let destinations = parse_destinations(&a.dst)?;
        let journal = match (a.journal_dir, a.journal_namespace) {
            (Some(d), _) => JournalLocation::Directory(d),
            (None, Some(ns)) if !ns.is_empty() => JournalLocation::Namespace(ns),
            _ => JournalLocation::System,
        };
        if a.max_batch_size == 0 {
            bail!("--max-batch-size must be at least 1");
        }
        if a.max_batch_bytes == 0 {
            bail!("--max-batch-bytes must be at least 1");
        }
        if let Some(days) = a.cloudwatch_retention_days {
            // The values CloudWatch's PutRetentionPolicy accepts.
            const VALID: [i32; 22] = [
                1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                2557, 2922, 3288, 3653,
            ];
            if !VALID.contains(&days) {
                bail!("--cloudwatch-retention-days {days}: CloudWatch accepts only {VALID:?}");
            }
        }
        let stream_field = a
            .stream_field
            .or_else(|| std::env::var("JOURNALD_STREAM_NAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "CONTAINER_NAME".to_string());
        for (flag, f) in [
            ("--group-field", &a.group_field),
            ("--stream-field", &stream_field),
        ] {
            if f.is_empty() || f.contains('=') {
                bail!("{flag} {f:?} is not a journal field name (e.g. CONTAINER_TAG)");
            }
        }
        Ok(Config {
            src: a.src,
            destinations,
            journal,
            state_dir: a.state_dir,
            from: a.from,
            rules: EventRules {
                group_field: a.group_field,
                stream_field,
                hostname_override: a.hostname.filter(|h| !h.is_empty()),
                hostname_default: system_hostname(),
            },
            limits: BatchLimits {
                max_events: a.max_batch_size,
                max_bytes: a.max_batch_bytes,
                flush_timeout: a.flush_timeout,
            },
            shutdown_timeout: a.shutdown_timeout,
            metrics_address: a.metrics_address,
            cloudwatch_retention_days: a.cloudwatch_retention_days,
            ca_file: a.ca_file,
        })
    }
}

fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its whole length; gethostname NUL-terminates within it.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_reject_unknown() {
        assert_eq!(
            parse_destinations("stdout, cloudwatchlogs,stdout").unwrap(),
            vec![Destination::Stdout, Destination::CloudWatchLogs]
        );
        let e = parse_destinations("stdout,kinesis")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown destination \"kinesis\""), "{e}");
        assert_eq!(
            parse_destinations("loggly,logdna").unwrap(),
            vec![Destination::Loggly, Destination::Logdna]
        );
        assert!(parse_destinations(" , ").is_err());
    }
}
