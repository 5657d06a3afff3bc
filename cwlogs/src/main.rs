//! cwlogs: list, fetch and follow a service's CloudWatch logs from a terminal.
//!
//! A service is a log group, its tasks or containers are log streams, and events are
//! usually ecs-logs JSON (crate `ecs-event`). Commands and flags keep those of Segment's
//! Go `cwlogs`. Nothing touches the AWS configuration until a command needs it, so
//! `--help` stays instant.

mod budget;
mod cli;
mod client;
mod event;
mod fetch;
mod filter;
mod format;
mod groups;
mod list;
mod live;
mod output;
mod streams;
mod suggest;
mod task;
mod time;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, ColorChoice, Command};

fn main() -> ExitCode {
    cli_gen::generate_if_asked(cli::command);
    // `COMPLETE=bash cwlogs` prints the registration of the dynamic completion (group names
    // from the cache); the shell then asks us on every Tab. The installed completions
    // (`--generate`, static) know commands and flags only.
    clap_complete::CompleteEnv::with_factory(cli::command).complete();
    let cli = Cli::parse();
    let color = match cli.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let (follow, cmd) = match cli.command {
        Command::External(args) => return not_a_command(&args),
        Command::Fetch(ref f) => (f.follow, cli.command),
        other => (false, other),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cwlogs: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let aws = cli.aws;
    budget::init(cli.max_rps);
    let result = rt.block_on(async move {
        // Installed before the work starts, and read once more when it ends: a Ctrl-C that
        // arrives as the work completes must still end us by SIGINT, or a calling shell takes
        // the normal exit for "handled" and its script goes on (the demo's interrupt test
        // caught exactly that race).
        let mut interrupt =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
                Ok(s) => s,
                Err(e) => return Some(Err(anyhow::anyhow!("cannot handle SIGINT: {e}"))),
            };
        let work = async {
            match cmd {
                Command::List(a) => list::run(a, &aws).await,
                Command::Fetch(a) => fetch::run(a, &aws, color).await,
                Command::Groups { prefix } => groups::run(prefix, &aws).await,
                Command::External(_) => unreachable!("handled above"),
            }
        };
        let r = tokio::select! {
            r = work => r,
            _ = interrupt.recv() => return None,
        };
        use futures::FutureExt;
        match interrupt.recv().now_or_never() {
            Some(_) => None,
            None => Some(r),
        }
    });
    // Don't wait for in-flight requests on the way out.
    output::erase_progress();
    let code = match result {
        Some(Ok(())) => 0,
        Some(Err(e)) if output::is_closed(&e) => 0,
        // 2 when it is the configuration's to fix. (Not folded to one line: "did you mean"
        // lists its candidates a line each.)
        Some(Err(e)) => {
            eprintln!("cwlogs: {e:#}");
            // The caller's to fix (a bad flag value, no region, no or rejected credentials):
            // 2, like clap's own usage errors.
            if daemon_kit::exit::is_config(&e) || e.downcast_ref::<cli::ConfigError>().is_some() {
                2
            } else {
                1
            }
        }
        // Ctrl-C is how --follow ends, so that is success; elsewhere it is an interruption.
        None => {
            if follow {
                0
            } else {
                die_of_sigint()
            }
        }
    };
    std::process::exit(code)
}

/// End an interrupted command by SIGINT itself, not by a plain exit status: a calling shell
/// tells the two apart, and takes a normal exit for "the program handled Ctrl-C" — its loop or
/// script then goes on (the demo did: a `cwlogs fetch` in a wait loop swallowed the Ctrl-C).
/// The shell's `$?` is 130 either way.
fn die_of_sigint() -> i32 {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: restoring the default action and raising a signal on ourselves.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::raise(libc::SIGINT);
    }
    130 // not reached: the default action of SIGINT ends the process
}

/// Subcommands and the words other tools use for them, each with the command it means.
const COMMAND_WORDS: &[(&str, &str)] = &[
    ("list", "list"),
    ("ls", "list"),
    ("fetch", "fetch"),
    ("tail", "fetch"),
    ("get", "fetch"),
    ("watch", "fetch"),
    ("groups", "groups"),
    ("help", "help"),
];

/// The command `word` most likely meant: another tool's word for it, or a typo of one
/// (edit distance at most 1 for short words, 2 for longer ones).
fn command_for(word: &str) -> Option<&'static str> {
    let w = word.to_ascii_lowercase();
    let max = if w.len() <= 4 { 1 } else { 2 };
    COMMAND_WORDS
        .iter()
        .map(|(alias, cmd)| (strsim::damerau_levenshtein(&w, alias), *cmd))
        .filter(|(d, _)| *d <= max && w.len() >= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, cmd)| cmd)
}

/// `cwlogs SERVICE`: the old habit, answered with the command to type (or, for a typo of
/// a command or another tool's word for one, with the command).
fn not_a_command(args: &[String]) -> ExitCode {
    let word = args.first().map(String::as_str).unwrap_or_default();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match command_for(word) {
        Some(c) => {
            let tail = if rest.is_empty() {
                String::new()
            } else {
                format!(" {}", rest.join(" "))
            };
            eprintln!("cwlogs: {word:?} is not a command; did you mean 'cwlogs {c}{tail}'?")
        }
        None => eprintln!("cwlogs: {word:?} is not a command; did you mean 'cwlogs fetch {word}'?"),
    }
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::command_for;

    #[test]
    fn typos_and_other_tools_words_name_the_command() {
        for (typed, want) in [
            ("lsit", Some("list")),
            ("ls", Some("list")),
            ("tail", Some("fetch")),
            ("get", Some("fetch")),
            ("watch", Some("fetch")),
            ("fecth", Some("fetch")),
            ("gruops", Some("groups")),
            ("checkout-api", None),
            ("payments", None),
        ] {
            assert_eq!(command_for(typed), want, "{typed}");
        }
    }
}
