//! cwlogs: list, fetch and follow a service's CloudWatch logs from a terminal.
//!
//! A service is a log group, its tasks or containers are log streams, and events are
//! usually ecs-logs JSON (crate `ecs-event`). Commands and flags keep those of Segment's
//! Go `cwlogs`. Nothing touches the AWS configuration until a command needs it, so
//! `--help` stays instant.

mod cli;
mod client;
mod event;
mod fetch;
mod format;
mod groups;
mod list;
mod output;
mod streams;
mod suggest;
mod time;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, ColorChoice, Command};

fn main() -> ExitCode {
    cli_gen::generate_if_asked(Cli::command);
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
            daemon_kit::exit::exit_code(&e) as i32
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

/// `cwlogs SERVICE`: the old habit, answered with the command to type (or, for a typo of
/// a command, with the command).
fn not_a_command(args: &[String]) -> ExitCode {
    let word = args.first().map(String::as_str).unwrap_or_default();
    let command = ["list", "fetch", "groups", "help"]
        .into_iter()
        .find(|c| word.len() > 2 && suggest::score(word, c) > 0.85);
    match command {
        Some(c) => eprintln!("cwlogs: {word:?} is not a command; did you mean 'cwlogs {c}'?"),
        None => eprintln!("cwlogs: {word:?} is not a command; did you mean 'cwlogs fetch {word}'?"),
    }
    ExitCode::from(2)
}
