//! Command line and environment (`JOURNAL_FANOUT_<NAME>`), checked once at start.
//!
//! Flag names follow ecs-logs where it had them (`--src`, `--dst`, `--max-batch-bytes`,
//! `--max-batch-size`, `--flush-timeout`), so existing unit files keep working.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, ValueEnum};

use crate::config_file::{self, FileConfig};
use crate::naming::{Fields, Template};
use crate::routes::{self, Route, Routes};

#[derive(Debug, Clone, Parser)]
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

    /// Comma-separated destinations: stdout, cloudwatchlogs, loggly, logdna [default: stdout].
    #[arg(long, env = "JOURNAL_FANOUT_DST", global = true)]
    pub dst: Option<String>,

    /// Read the journal files in this directory instead of the system journal.
    #[arg(
        long,
        env = "JOURNAL_FANOUT_JOURNAL_DIR",
        conflicts_with = "journal_namespace",
        global = true
    )]
    pub journal_dir: Option<PathBuf>,

    /// Read this journald namespace (systemd-journald@NS) instead of the system journal.
    #[arg(long, env = "JOURNAL_FANOUT_JOURNAL_NAMESPACE", global = true)]
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

    /// Configuration file (TOML: naming templates, routes, CloudWatch retention; see the
    /// CONFIGURATION FILE section) [default: /etc/journal-fanout/config.toml if it exists].
    /// Flags and environment variables win over it; SIGHUP reloads it.
    #[arg(long, env = "JOURNAL_FANOUT_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Journal field naming the log group; entries without it are not container lines
    /// [default: the file's naming.group, else CONTAINER_TAG].
    #[arg(long, env = "JOURNAL_FANOUT_GROUP_FIELD")]
    pub group_field: Option<String>,

    /// Journal field naming the log stream [default: the file's naming.stream, else ecs-logs'
    /// JOURNALD_STREAM_NAME when set, else CONTAINER_NAME].
    #[arg(long, env = "JOURNAL_FANOUT_STREAM_FIELD")]
    pub stream_field: Option<String>,

    /// Host name put into events [default: the entry's _HOSTNAME, else this machine's name].
    #[arg(long, env = "JOURNAL_FANOUT_HOSTNAME")]
    pub hostname: Option<String>,

    /// Most bytes (of messages) in one batch handed to a destination. Larger batches mean
    /// fewer requests on a busy host (CloudWatch counts PutLogEvents against a per-account
    /// quota) but more memory: each destination holds a few copies of a batch.
    #[arg(
        long,
        env = "JOURNAL_FANOUT_MAX_BATCH_BYTES",
        default_value_t = 262_144
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

    /// Retention (days) set on CloudWatch log groups that journal-fanout creates; 0 = never
    /// expire [default: the file's destination.cloudwatchlogs.retention_days, else 30].
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
  journal-fanout check-config: 0 when the file is valid, 2 when not (one line saying why)

CONFIGURATION FILE:
  --config FILE (env JOURNAL_FANOUT_CONFIG; default /etc/journal-fanout/config.toml if it
  exists), TOML. Unknown keys are errors. Flags and environment variables win over it.
  [naming]
    group = \"TEMPLATE\"    log group (service) of an entry [default: {{CONTAINER_TAG}};
                          --group-field wins]. An entry whose group has no value is not a
                          container line and is not shipped.
    stream = \"TEMPLATE\"   log stream (container or task) [default: {{CONTAINER_NAME}};
                          --stream-field / JOURNALD_STREAM_NAME win]
    Templates: text and {{ TERM | default(TERM) | ... }}; a TERM is a journal field
    (CONTAINER_TAG), a quoted literal (\"untagged\"), or a derived name: ecs_family (the
    task definition family: CONTAINER_TASK_FAMILY, else from a task-definition ARN in
    CONTAINER_TASK, else from the ECS agent's container name ecs-FAMILY-REV-NAME-HEX when
    CONTAINER_TASK is set) or ecs_task_id (the last part of CONTAINER_TASK's ARN). A missing
    or empty value takes the next default. Names are then made valid for CloudWatch.
  [destination.cloudwatchlogs]
    retention_days = N    retention set on log groups journal-fanout creates [default: 30;
                          0 = never expire; --cloudwatch-retention-days wins]
  [[route]]               evaluated in order; the first that matches decides; an entry no
                          route matches goes to every destination
    match.group = \"GLOB\"          the entry's group name (after naming)
    match.priority = \"PRIORITY\"   this syslog priority and every less severe one (emerg,
                                  alert, crit, err, warning, notice, info, debug or 0-7),
                                  from the line's ecs-logs level or PRIORITY
    match.field.NAME = \"GLOB\"     a journal field of the entry
    to = [\"DESTINATION\", ...]     destinations among --dst; [] drops on purpose (counted
                                  in journal_fanout_entries_routed_away_total, never lost)
  Every match key of a route must hold. SIGHUP or a change to the file reloads it: new
  names and routes apply from the next journal entry read, no cursor moves; a bad file is
  refused with the reason and the running configuration stays.

ENVIRONMENT:
  AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_ENDPOINT_URL
                       the standard AWS settings, for --dst cloudwatchlogs
  LOGGLY_TOKEN (or LOGGLY_TOKEN_FILE), LOGGLY_URL, LOGGLY_TAGS
                       for --dst loggly (docs/journal-fanout-destinations.md)
  LOGDNA_TOKEN (or LOGDNA_TOKEN_FILE), LOGDNA_URL
                       for --dst logdna
  JOURNALD_STREAM_NAME ecs-logs' stream field, when --stream-field is not given
  JOURNAL_FANOUT_READ_FIELDS=libsystemd
                       read every entry's fields through libsystemd instead of straight
                       from the journal files (=file, the default; libsystemd is slower:
                       for comparison, or should a file ever be read wrongly)
  RUST_LOG             diagnostics level on stderr (error, warn, info, debug; default info)

SIGNALS:
  SIGTERM, SIGINT      deliver what is batched, save cursors, exit 0
  SIGHUP               reload the configuration file (never stops it)";

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Check this host and the configuration for what stops shipping (state directory,
    /// journal access, journald storage, destinations' tokens and region): one line each with
    /// OK, WARN or FAIL and the fix.
    Check,
    /// Validate a configuration file without starting (exit 0 when valid, 2 with the reason
    /// when not). With --journal-namespace or --journal-dir, also show where the last 1,000
    /// container entries would go: per destination, and under which group and stream names.
    CheckConfig {
        /// The file to check [default: --config, else /etc/journal-fanout/config.toml].
        file: Option<PathBuf>,
    },
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

/// How entries become records and where they go; replaced whole on reload.
#[derive(Debug, Clone)]
pub struct EventRules {
    /// The journal fields the templates and routes read.
    pub fields: Fields,
    pub group: Template,
    pub stream: Template,
    pub routes: Routes,
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
    /// The configuration file in use, if any (reloaded on SIGHUP and when it changes).
    pub config_file: Option<PathBuf>,
    /// What flags and the environment said, which win over the file on every reload.
    pub overrides: Overrides,
}

/// Settings given by flag or environment variable: they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub group_field: Option<String>,
    pub stream_field: Option<String>,
    pub retention_days: Option<i32>,
    pub hostname: Option<String>,
}

/// The retention CloudWatch log groups get when nothing says otherwise.
pub const DEFAULT_RETENTION_DAYS: i32 = 30;

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

/// Whether journal entries' fields are read straight from the journal files (the default) or
/// all through libsystemd: `JOURNAL_FANOUT_READ_FIELDS` = `file` or `libsystemd`.
pub fn read_fields_from_files() -> anyhow::Result<bool> {
    parse_read_fields(std::env::var("JOURNAL_FANOUT_READ_FIELDS").ok().as_deref())
}

fn parse_read_fields(v: Option<&str>) -> anyhow::Result<bool> {
    match v {
        None | Some("") | Some("file") => Ok(true),
        Some("libsystemd") => Ok(false),
        Some(v) => bail!(
            "JOURNAL_FANOUT_READ_FIELDS={v:?} is not a field reader: set it to file (the \
             default) or libsystemd, or unset it"
        ),
    }
}

impl Config {
    pub fn from_args(a: Args) -> anyhow::Result<Config> {
        let destinations = parse_destinations(a.dst.as_deref().unwrap_or("stdout"))?;
        read_fields_from_files()?;
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
            check_retention("--cloudwatch-retention-days", days)?;
        }
        let stream_field = a
            .stream_field
            .or_else(|| std::env::var("JOURNALD_STREAM_NAME").ok())
            .filter(|s| !s.is_empty());
        for (flag, f) in [
            ("--group-field", &a.group_field),
            ("--stream-field", &stream_field),
        ] {
            if let Some(f) = f {
                if f.is_empty() || f.contains('=') {
                    bail!("{flag} {f:?} is not a journal field name (e.g. CONTAINER_TAG)");
                }
            }
        }
        let overrides = Overrides {
            group_field: a.group_field,
            stream_field,
            retention_days: a.cloudwatch_retention_days,
            hostname: a.hostname.filter(|h| !h.is_empty()),
        };
        let config_file = config_file::locate(a.config.as_deref());
        let file = match &config_file {
            Some(p) => config_file::load(p)?,
            None => FileConfig::default(),
        };
        let rules = build_rules(&file, &overrides, &destinations)?;
        Ok(Config {
            src: a.src,
            cloudwatch_retention_days: retention(&file, &overrides)?,
            destinations,
            journal,
            state_dir: a.state_dir,
            from: a.from,
            rules,
            limits: BatchLimits {
                max_events: a.max_batch_size,
                max_bytes: a.max_batch_bytes,
                flush_timeout: a.flush_timeout,
            },
            shutdown_timeout: a.shutdown_timeout,
            metrics_address: a.metrics_address,
            ca_file: a.ca_file,
            config_file,
            overrides,
        })
    }
}

/// The retention for new CloudWatch groups (`None`: never expire).
pub fn retention(file: &FileConfig, o: &Overrides) -> anyhow::Result<Option<i32>> {
    let days = match (o.retention_days, file.retention_days) {
        (Some(d), _) => d,
        (None, Some(d)) => {
            check_retention("destination.cloudwatchlogs.retention_days", d)?;
            d
        }
        (None, None) => DEFAULT_RETENTION_DAYS,
    };
    Ok((days != 0).then_some(days))
}

fn check_retention(what: &str, days: i32) -> anyhow::Result<()> {
    // The values CloudWatch's PutRetentionPolicy accepts, and 0 for "never expire".
    const VALID: [i32; 23] = [
        0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
        2922, 3288, 3653,
    ];
    if !VALID.contains(&days) {
        bail!("{what} {days}: CloudWatch accepts only {VALID:?} (0 = never expire)");
    }
    Ok(())
}

/// Naming and routes from the file, with the flags' overrides, checked against the running
/// destinations. Used at start and on every reload.
pub fn build_rules(
    file: &FileConfig,
    o: &Overrides,
    destinations: &[Destination],
) -> anyhow::Result<EventRules> {
    let mut fields = Fields::default();
    let template = |flag: &Option<String>,
                    from_file: &Option<String>,
                    key: &str,
                    default: &str,
                    fields: &mut Fields|
     -> anyhow::Result<Template> {
        Ok(match (flag, from_file) {
            (Some(f), _) => Template::field(f, fields),
            (None, Some(t)) => Template::parse(t, fields)
                .map_err(|e| anyhow::anyhow!("{}naming.{key}: {e}", file_prefix(file)))?,
            (None, None) => Template::field(default, fields),
        })
    };
    let group = template(
        &o.group_field,
        &file.naming.group,
        "group",
        "CONTAINER_TAG",
        &mut fields,
    )?;
    let stream = template(
        &o.stream_field,
        &file.naming.stream,
        "stream",
        "CONTAINER_NAME",
        &mut fields,
    )?;
    let names: Vec<&str> = destinations.iter().map(|d| d.name()).collect();
    let routes = file
        .routes
        .iter()
        .enumerate()
        .map(|(i, spec)| Route::build(i + 1, spec, &names, &mut fields))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}{e}", file_prefix(file)))?;
    Ok(EventRules {
        fields,
        group,
        stream,
        routes: Routes {
            routes,
            everywhere: routes::all(destinations.len()),
        },
        hostname_override: o.hostname.clone(),
        hostname_default: system_hostname(),
    })
}

fn file_prefix(file: &FileConfig) -> String {
    file.path
        .as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
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
    fn field_reader_choice() {
        assert!(parse_read_fields(None).unwrap());
        assert!(parse_read_fields(Some("file")).unwrap());
        assert!(!parse_read_fields(Some("libsystemd")).unwrap());
        let e = parse_read_fields(Some("libsytemd"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"libsytemd\" is not a field reader"), "{e}");
    }

    #[test]
    fn the_shipped_example_configuration_is_valid() {
        let file =
            crate::config_file::parse(include_str!("../../deploy/journal-fanout/config.toml"))
                .unwrap();
        let dests = [Destination::CloudWatchLogs, Destination::Loggly];
        let rules = build_rules(&file, &Overrides::default(), &dests).unwrap();
        assert_eq!(
            rules.group.source(),
            "{{ecs_family | default(CONTAINER_TAG)}}"
        );
        assert_eq!(retention(&file, &Overrides::default()).unwrap(), Some(30));
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = crate::config_file::parse(
            "[naming]\ngroup = \"{{A}}\"\n[destination.cloudwatchlogs]\nretention_days = 7\n",
        )
        .unwrap();
        let o = Overrides {
            group_field: Some("B".into()),
            retention_days: Some(0),
            ..Overrides::default()
        };
        let rules = build_rules(&file, &o, &[Destination::Stdout]).unwrap();
        assert_eq!(rules.group.source(), "{{B}}");
        assert_eq!(retention(&file, &o).unwrap(), None);
        assert_eq!(retention(&file, &Overrides::default()).unwrap(), Some(7));
        let bad = crate::config_file::parse("[destination.cloudwatchlogs]\nretention_days = 8\n")
            .unwrap();
        let e = retention(&bad, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("retention_days 8"), "{e}");
    }

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
