//! Command line: the Go `cwlogs` commands and flags, plus `groups`, several services,
//! `--json` and the AWS connection options.

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum, ValueHint};
use clap_complete::engine::ArgValueCompleter;

/// The command line as shells complete it and the man page shows it: every flag that
/// takes a value other than a path says so (`ValueHint::Other`), so no shell offers file
/// names after `--since` or `--format`.
pub fn command() -> clap::Command {
    fn no_files(cmd: clap::Command) -> clap::Command {
        let cmd = cmd.mut_args(|a| {
            if a.get_action().takes_values() && a.get_value_hint() == ValueHint::Unknown {
                a.value_hint(ValueHint::Other)
            } else {
                a
            }
        });
        let subs: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        subs.into_iter()
            .fold(cmd, |cmd, name| cmd.mut_subcommand(name, no_files))
    }
    no_files(Cli::command())
}

/// A configuration error (bad flag value, missing region): exit status 2, not 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Mark any error as a configuration error, its context chain on one line.
pub fn config(e: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(ConfigError(format!("{e:#}")))
}

#[derive(Parser, Debug)]
#[command(
    name = "cwlogs",
    version = env!("LOGSUITE_VERSION"),
    about = "List, fetch and follow a service's logs in CloudWatch Logs",
    long_about = "List, fetch and follow a service's logs in CloudWatch Logs.\n\n\
A service is a log group; its tasks or containers are log streams. Credentials, region and \
profile come from the usual AWS places (environment, ~/.aws/config, instance roles).",
    arg_required_else_help = true,
    allow_external_subcommands = true,
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Colour output: auto = only on a terminal and never when NO_COLOR is set
    #[arg(short = 'c', long, value_enum, default_value_t = ColorChoice::Auto, global = true, help_heading = "Global options")]
    pub color: ColorChoice,

    #[command(flatten)]
    pub aws: AwsArgs,

    /// Most CloudWatch Logs requests per second, shared by every cwlogs process of this user
    /// on this machine (the account's quota is shared by everyone); halved for all of them
    /// while CloudWatch throttles
    #[arg(long, global = true, value_name = "N", env = "CWLOGS_MAX_RPS", default_value_t = crate::budget::DEFAULT_RPS, value_parser = parse_rps, help_heading = "Global options")]
    pub max_rps: f64,

    #[command(subcommand)]
    pub command: Command,
}

const AFTER_HELP: &str = "\
EXIT STATUS:
  0  done (also: --follow ended with Ctrl-C or because the followed ECS task stopped, or the
     output was closed)
  1  a runtime failure (CloudWatch Logs unreachable, throttling that lasted 2 minutes, a
     request that failed)
  2  a configuration or usage error (bad flag or value, unknown command, no AWS region, no
     AWS credentials or credentials AWS rejected, access denied)
  130  interrupted by Ctrl-C (without --follow)

ENVIRONMENT:
  AWS_REGION, AWS_DEFAULT_REGION, AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
  AWS_SESSION_TOKEN, AWS_ENDPOINT_URL
               the standard AWS settings (flags --region, --profile, --endpoint-url win)
  NO_COLOR     set and not empty: no colour with --color auto
  CWLOGS_MAX_RPS
               the default of --max-rps
  XDG_CACHE_HOME
               where the group names for shell completion are cached (cwlogs/groups;
               else ~/.cache/cwlogs/groups; rewritten by `cwlogs groups`)
  COMPLETE     COMPLETE=bash cwlogs (or zsh, fish) prints the shell completion to source
  XDG_RUNTIME_DIR
               where the shared request budget lives (cwlogs-budget; else
               /tmp/cwlogs-budget-UID)";

fn parse_rps(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(n) if n.is_finite() && (0.1..=1000.0).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a request rate: give requests per second from 0.1 to 1000, e.g. 4"
        )),
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct AwsArgs {
    /// AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the profile's)
    #[arg(long, global = true, help_heading = "Global options")]
    pub region: Option<String>,
    /// Named profile from ~/.aws/config (default: AWS_PROFILE or "default")
    #[arg(long, global = true, help_heading = "Global options")]
    pub profile: Option<String>,
    /// Endpoint URL, e.g. a local emulator (default: AWS_ENDPOINT_URL)
    #[arg(
        long,
        global = true,
        value_name = "URL",
        help_heading = "Global options"
    )]
    pub endpoint_url: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List a service's log streams with activity in a time window, most recent first
    List(ListArgs),
    /// Fetch (and follow) the events of one or more services, interleaved in time order
    #[command(after_help = FETCH_HELP)]
    Fetch(FetchArgs),
    /// List log groups (services), optionally those starting with PREFIX
    Groups {
        /// Only groups whose name starts with this
        #[arg(add = ArgValueCompleter::new(crate::groups::complete))]
        prefix: Option<String>,
    },
    /// `cwlogs SERVICE` is not a command: answered with a hint.
    #[command(external_subcommand)]
    External(Vec<String>),
}

const FETCH_HELP: &str = "\
Template fields: group stream id ingest_time creation_time level time info.host (and the rest
of info) message data data_flat task_short time_short zone
Helpers: red green yellow blue magenta cyan white uniquecolor colorlevel json
Default: [ {{uniquecolor task_short}} ] {{time_short}} {{colorlevel level}} - {{message}}
  with several services: [ {{uniquecolor group}} {{uniquecolor task_short}} ] ...

Examples:
  cwlogs fetch api -t 0f5c3b2a -s 2h
  cwlogs fetch api worker -f --grep ERROR
  cwlogs fetch api -f -t ecs/api/0f5c3b2a --cluster prod   # ends when the task stops
  cwlogs fetch api --json | jq .message
  cwlogs fetch api -o '{{time_short}} {{cyan info.host}} {{message}}'";

#[derive(Args, Debug)]
pub struct ListArgs {
    /// The service (log group)
    #[arg(add = ArgValueCompleter::new(crate::groups::complete))]
    pub service: String,
    /// Only streams whose name starts with this task ID or prefix
    #[arg(short = 't', long, value_name = "PREFIX")]
    pub task: Option<String>,
    /// Start of the window (42m, 1h30m, 2d, -1h, now, all, today, yesterday, 2017-05-21, 2017-05-21T15:00, RFC 3339, Unix seconds)
    #[arg(
        short = 's',
        long,
        default_value = "1h",
        value_name = "T",
        allow_hyphen_values = true
    )]
    pub since: String,
    /// End of the window (same forms as --since)
    #[arg(short = 'u', long, default_value = "now", value_name = "T")]
    pub until: String,
    /// At most this many streams
    #[arg(short = 'm', long, default_value_t = 100, value_name = "N")]
    pub max_streams: usize,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// The service(s) (log groups); several are interleaved in time order
    #[arg(required = true, value_name = "SERVICE", add = ArgValueCompleter::new(crate::groups::complete))]
    pub services: Vec<String>,
    /// Only streams whose name starts with this task ID or prefix
    #[arg(short = 't', long, value_name = "PREFIX")]
    pub task: Option<String>,
    /// Keep printing new events until interrupted (Ctrl-C): by CloudWatch live tail while it
    /// is allowed and unsampled, else by polling
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// With --follow: poll FilterLogEvents every 2 s instead of using live tail
    #[arg(long, requires = "follow")]
    pub poll: bool,
    /// Start of the window (42m, 1h30m, 2d, -1h, now, all, today, yesterday, 2017-05-21, 2017-05-21T15:00, RFC 3339, Unix seconds)
    #[arg(
        short = 's',
        long,
        default_value = "1h",
        value_name = "T",
        allow_hyphen_values = true
    )]
    pub since: String,
    /// End of the window (same forms as --since; not with --follow)
    #[arg(short = 'u', long, value_name = "T", conflicts_with = "follow")]
    pub until: Option<String>,
    /// Handlebars template rendered per event (fields and helpers below)
    #[arg(short = 'o', long, value_name = "TEMPLATE", conflicts_with_all = ["raw", "json", "verbose"])]
    pub format: Option<String>,
    /// Add the event's data as key=value pairs and any info.errors
    #[arg(short = 'v', long, conflicts_with_all = ["raw", "json"])]
    pub verbose: bool,
    /// Print each event as pretty JSON
    #[arg(short = 'r', long, conflicts_with = "json")]
    pub raw: bool,
    /// Print one compact JSON object per event (for jq)
    #[arg(long)]
    pub json: bool,
    /// With --task: at most this many streams (most recently active first)
    #[arg(short = 'm', long, default_value_t = 100, value_name = "N")]
    pub max_streams: usize,
    /// CloudWatch filter pattern, e.g. ERROR or '"connection reset"'
    #[arg(
        long = "grep",
        short = 'q',
        visible_alias = "query",
        value_name = "PATTERN"
    )]
    pub grep: Option<String>,
    /// With --follow: how far behind the newest event each poll re-reads, to catch events
    /// that reach CloudWatch late (e.g. 30s, 2m)
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lookback: std::time::Duration,
    /// Drop events matching this regex (client side; repeatable, any match drops)
    #[arg(long = "grep-v", value_name = "REGEX")]
    pub grep_v: Vec<String>,
    /// Only events at this level or more severe (EMERG ALERT CRIT ERROR WARN NOTICE INFO
    /// DEBUG; from the ecs-logs level or journald PRIORITY)
    #[arg(long, value_name = "LEVEL")]
    pub level: Option<String>,
    /// Show times in UTC (default: the local zone)
    #[arg(long, conflicts_with = "local")]
    pub utc: bool,
    /// Show times in the local zone (the default)
    #[arg(long)]
    pub local: bool,
    /// With --follow: stop when the ECS task ends (automatic when --task names one ECS task
    /// whose cluster is given or can be found): print its last events and why it stopped,
    /// and exit 0
    #[arg(long, requires = "follow")]
    pub until_task_stops: bool,
    /// The ECS cluster of the task for --until-task-stops (default: found by asking ECS)
    #[arg(long, value_name = "CLUSTER", requires = "follow")]
    pub cluster: Option<String>,
    /// How often the task's state is asked for (tests shorten it)
    #[arg(long, hide = true, default_value = "10s", value_parser = humantime::parse_duration)]
    pub task_poll_every: std::time::Duration,
    /// Time slices fetched in parallel for a bounded window
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=32))]
    pub parallel: u16,
}
