//! journal-fanout: tails journald and ships every container line to its destinations
//! (stdout, CloudWatch Logs), each destination at its own pace from its own saved journal
//! cursor, so nothing is lost across crashes, restarts or outages: journald is the buffer.
//!
//! Data flows one way: `source` (journal or stdin, on a thread) → `event` (entry → ecs event)
//! → `pipeline` (batches, bounded channel) → `sinks` (deliver) → `checkpoint` (save cursor).

mod check;
mod checkpoint;
mod config;
mod event;
mod metrics;
mod pipeline;
// Destinations land here while they are being wired up (see `sinks`).
#[allow(dead_code)]
mod sinks;
mod source;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use tokio::sync::mpsc;

use crate::checkpoint::Checkpoint;
use crate::config::{Config, Destination, JournalLocation, SourceKind};
use crate::metrics::Metrics;
use crate::pipeline::Batch;
use crate::sinks::Sink;

fn main() -> ExitCode {
    cli_gen::generate_if_asked(config::Args::command);
    // Fewer malloc arenas: the reader thread and the runtime's threads would otherwise each
    // grow their own, multiplying resident memory for no throughput gain here.
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    let mut args = config::Args::parse();
    daemon_kit::init_tracing();
    let command = args.command.take();
    if command.is_some() {
        // `journal-fanout check | head` ends quietly, as other tools do.
        // SAFETY: restoring a default signal action before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("journal-fanout: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("journal-fanout: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(config::Command::Check) = command {
        return ExitCode::from(runtime.block_on(check::run(&config)));
    }
    let code = match runtime.block_on(run(config)) {
        Ok(code) => code,
        // Once, on one line; 2 when it is the configuration's to fix.
        Err(e) => daemon_kit::exit::report("journal-fanout", &e),
    };
    // Threads still blocked on a destination that never came back must not keep us alive.
    runtime.shutdown_background();
    code
}

/// A component that ended, and how.
struct Finished {
    what: String,
    result: anyhow::Result<()>,
}

async fn run(config: Config) -> anyhow::Result<ExitCode> {
    // First: SIGHUP's default action would kill us.
    let mut signals = daemon_kit::Signals::install()?;
    // Every counter of this run; each destination's handle goes to its sink and pipeline.
    let metrics = Arc::new(Metrics::new());
    // What the systemd watchdog and /healthz check: each reader beats, or says it waits on a
    // destination.
    let liveness = daemon_kit::Liveness::new();
    if let Some(addr) = config.metrics_address {
        let mut registry = daemon_kit::registry("journal_fanout", env!("LOGSUITE_VERSION"));
        metrics.register(&mut registry);
        daemon_kit::start_metrics(&addr.to_string(), Arc::new(registry), liveness.clone())
            .await
            .map_err(daemon_kit::config)?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics, health at /healthz and /readyz");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
    let mut running = 0usize;

    // Delivery side: one task per destination.
    let mut outputs = Vec::new();
    let tls = sinks::tls::TlsOptions {
        ca_file: config.ca_file.clone(),
    };
    let hostname = config
        .rules
        .hostname_override
        .clone()
        .unwrap_or_else(|| config.rules.hostname_default.clone());
    for &dst in &config.destinations {
        let (tx, rx) = mpsc::channel::<Batch>(pipeline::QUEUED_BATCHES);
        let m = metrics.destination(dst.name());
        let checkpoint = match config.src {
            SourceKind::Journald => {
                let ns = match &config.journal {
                    JournalLocation::Namespace(ns) => Some(ns.as_str()),
                    _ => None,
                };
                let cp = Checkpoint::new(&config.state_dir, dst.name(), ns);
                cp.prepare().map_err(daemon_kit::config)?;
                Some(cp)
            }
            SourceKind::Stdin => None,
        };
        match dst {
            Destination::Stdout => spawn_delivery(
                sinks::stdout::StdoutSink::new(),
                rx,
                checkpoint.clone(),
                m.clone(),
                &done_tx,
            ),
            Destination::CloudWatchLogs => {
                let sink = sinks::cloudwatch::CloudWatchSink::from_env(
                    sinks::cloudwatch::config::CloudWatchConfig {
                        retention_days: config.cloudwatch_retention_days,
                    },
                    m.clone(),
                )
                .await
                .map_err(daemon_kit::config)?;
                spawn_delivery(sink, rx, checkpoint.clone(), m.clone(), &done_tx)
            }
            Destination::Loggly => spawn_delivery(
                sinks::loggly::Loggly::from_env(&tls, &hostname, m.clone())
                    .map_err(daemon_kit::config)?,
                rx,
                checkpoint.clone(),
                m.clone(),
                &done_tx,
            ),
            Destination::Logdna => spawn_delivery(
                sinks::logdna::Logdna::from_env(&tls, &hostname, m.clone())
                    .map_err(daemon_kit::config)?,
                rx,
                checkpoint.clone(),
                m.clone(),
                &done_tx,
            ),
        }
        running += 1;
        outputs.push((dst, tx, m, checkpoint));
    }

    // Files libsystemd cannot open it skips without a word: say so before reading
    // (after the destinations: a configuration error there is the one line to print).
    #[cfg(feature = "journald")]
    let journal_access = match config.src {
        SourceKind::Journald => {
            match source::journal_access::check(&config.journal, &metrics, None) {
                Ok(outcome) => Some(outcome),
                Err(e) => {
                    tracing::error!("{e}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        SourceKind::Stdin => None,
    };
    // Reading side: the journal once per destination (each from its own cursor), or stdin
    // once for all.
    match config.src {
        SourceKind::Journald => {
            #[cfg(feature = "journald")]
            for (dst, tx, m, checkpoint) in outputs {
                let cursor = checkpoint.as_ref().map(|c| c.load()).transpose()?.flatten();
                tracing::info!(
                    destination = dst.name(),
                    cursor_file = %checkpoint.as_ref().map(|c| c.path().display().to_string()).unwrap_or_default(),
                    resume = cursor.is_some(),
                    "reading the journal"
                );
                let files_at_start = journal_access
                    .is_some_and(|o| o.verdict != source::journal_access::Verdict::NoFiles);
                spawn_journal_reader(
                    &config,
                    dst,
                    ReaderStart {
                        cursor,
                        files_at_start,
                    },
                    vec![(tx, m)],
                    liveness.part(format!("journal reader for {}", dst.name())),
                    &stop,
                    &done_tx,
                )?;
                running += 1;
            }
            #[cfg(feature = "journald")]
            if let Some(first) = journal_access {
                spawn_journal_access_watch(&config, first, &metrics, &stop, &done_tx)?;
                running += 1;
            }
            #[cfg(feature = "journald")]
            {
                // Backlog and lag figures: how far each destination is behind the head.
                let (location, metrics, stop) =
                    (config.journal.clone(), metrics.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("journal-head".into())
                    .spawn(move || source::journald::watch_head(&location, &metrics, &stop))
                    .context("cannot start the journal head thread")?;
            }
            #[cfg(not(feature = "journald"))]
            anyhow::bail!(
                "this build has no journald support (feature `journald`); use --src stdin"
            );
        }
        SourceKind::Stdin => {
            let outs: Vec<_> = outputs.into_iter().map(|(_, tx, m, _)| (tx, m)).collect();
            let limits = config.limits;
            let host = config
                .rules
                .hostname_override
                .clone()
                .unwrap_or_else(|| config.rules.hostname_default.clone());
            let stop = stop.clone();
            let done = done_tx.clone();
            let alive = liveness.part("stdin reader");
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name("stdin-reader".into())
                .spawn(move || {
                    let result = unless_panicked(|| {
                        let mut src = source::stdin::StdinSource::start(host, metrics);
                        pipeline::read_loop(&mut src, limits, &outs, &stop, &alive)
                    });
                    let _ = done.send(Finished {
                        what: "stdin reader".into(),
                        result,
                    });
                })
                .context("cannot start the stdin reader thread")?;
            running += 1;
        }
    }
    drop(done_tx);

    // Destinations are not watched themselves: each network step has a timeout (HTTP 60 s,
    // CloudWatch's SDK 60 s per attempt, syslog-TLS 10 s handshake / 60 s write) and their
    // retries are waits. The runtime they run on is watched.
    let runtime_alive = liveness.part("async runtime (destinations)");
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            every.tick().await;
            runtime_alive.beat();
        }
    });
    let watchdog = daemon_kit::notify_ready(liveness);
    tracing::info!(
        destinations = ?config.destinations.iter().map(|d| d.name()).collect::<Vec<_>>(),
        "journal-fanout started"
    );

    let mut failed = false;
    let mut config_error = false;
    let mut deadline: Option<tokio::time::Instant> = None;
    let begin_stop = |deadline: &mut Option<tokio::time::Instant>| {
        if deadline.is_none() {
            stop.store(true, Ordering::Relaxed);
            watchdog.stopping();
            *deadline = Some(tokio::time::Instant::now() + config.shutdown_timeout);
        }
    };
    while running > 0 {
        tokio::select! {
            s = signals.next() => match s {
                daemon_kit::Signal::Stop(name) => {
                    tracing::info!("{name}: flushing batches and saving cursors");
                    begin_stop(&mut deadline);
                }
                // No configuration file to reload yet; never a reason to stop.
                daemon_kit::Signal::Reload => tracing::info!("reload requested; nothing to reload"),
            },
            Some(f) = done_rx.recv() => {
                running -= 1;
                if let Err(e) = f.result {
                    if is_config_error(&e) {
                        // Its message says it all (what, where, as whom, the fix).
                        tracing::error!("{e}");
                        config_error = true;
                    } else {
                        tracing::error!("{} stopped: {e:#}", f.what);
                    }
                    failed = true;
                    begin_stop(&mut deadline);
                }
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => {
                tracing::warn!(
                    timeout = ?config.shutdown_timeout,
                    "shutdown timeout: exiting with batches undelivered; their cursors were \
                     not saved, so they are sent again on the next start"
                );
                break;
            }
        }
    }
    tracing::info!("journal-fanout stopped");
    Ok(if config_error {
        ExitCode::from(2)
    } else if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// An error that a configuration change must fix (exit status 2).
fn is_config_error(e: &anyhow::Error) -> bool {
    #[cfg(feature = "journald")]
    if e.is::<source::journal_access::CannotRead>() {
        return true;
    }
    daemon_kit::exit::is_config(e)
}

/// Run a reader's body; a panic becomes its error, so the process stops and says so (exit 1,
/// restarted by systemd from the saved cursors) instead of running on without that reader.
fn unless_panicked(body: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        Err(anyhow::anyhow!(
            "panicked: {what} — a bug; please report it with this log"
        ))
    })
}

fn spawn_delivery<S: Sink>(
    sink: S,
    rx: mpsc::Receiver<Batch>,
    checkpoint: Option<Checkpoint>,
    m: Arc<metrics::Destination>,
    done: &mpsc::UnboundedSender<Finished>,
) {
    let done = done.clone();
    let what = format!("destination {}", sink.name());
    tokio::spawn(async move {
        let result = pipeline::deliver_loop(sink, rx, checkpoint, m).await;
        let _ = done.send(Finished { what, result });
    });
}

/// Where a journal reader starts: after its saved cursor if any, else where `--from` says.
#[cfg(feature = "journald")]
struct ReaderStart {
    cursor: Option<String>,
    /// The journal had files when journal-fanout started; if not, the reader waits for them.
    files_at_start: bool,
}

#[cfg(feature = "journald")]
fn spawn_journal_reader(
    config: &Config,
    dst: Destination,
    start: ReaderStart,
    outs: Vec<(mpsc::Sender<Batch>, Arc<metrics::Destination>)>,
    alive: daemon_kit::Part,
    stop: &Arc<AtomicBool>,
    done: &mpsc::UnboundedSender<Finished>,
) -> anyhow::Result<()> {
    let (location, rules, from, limits) = (
        config.journal.clone(),
        config.rules.clone(),
        config.from,
        config.limits,
    );
    let ReaderStart {
        cursor,
        files_at_start,
    } = start;
    let stop = stop.clone();
    let done = done.clone();
    let what = format!("journal reader for {}", dst.name());
    // The journal handle is not Send: it is opened and used on this thread only.
    std::thread::Builder::new()
        .name(format!("journal-{}", dst.name()))
        .spawn(move || {
            // A journal without files at the start is opened once they appear, and every
            // entry in it is new. `None`: asked to stop while waiting.
            let from = if files_at_start {
                Some(from)
            } else {
                alive.idle(); // waiting for journald, for as long as it takes
                source::journal_access::wait_for_files(&location, &stop).then(|| {
                    tracing::info!(
                        destination = dst.name(),
                        resume = cursor.is_some(),
                        "journal files appeared; reading them from their first entry (or after \
                         the saved cursor)"
                    );
                    config::StartAt::Head
                })
            };
            let result = unless_panicked(|| match from {
                Some(from) => source::journald::JournaldSource::open(
                    &location,
                    rules,
                    cursor.as_deref(),
                    from,
                )
                .and_then(|mut src| pipeline::read_loop(&mut src, limits, &outs, &stop, &alive)),
                None => Ok(()),
            });
            let _ = done.send(Finished { what, result });
        })
        .context("cannot start a journal reader thread")?;
    Ok(())
}

/// Look at the journal's files again now and then (see `source::journal_access`).
#[cfg(feature = "journald")]
fn spawn_journal_access_watch(
    config: &Config,
    first: source::journal_access::Outcome,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
    done: &mpsc::UnboundedSender<Finished>,
) -> anyhow::Result<()> {
    let (location, metrics, stop, done) = (
        config.journal.clone(),
        metrics.clone(),
        stop.clone(),
        done.clone(),
    );
    std::thread::Builder::new()
        .name("journal-access".into())
        .spawn(move || {
            let result = source::journal_access::watch(&location, &metrics, first, &stop);
            let _ = done.send(Finished {
                what: "journal access check".into(),
                result,
            });
        })
        .context("cannot start the journal access check thread")?;
    Ok(())
}
