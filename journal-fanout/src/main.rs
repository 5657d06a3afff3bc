//! journal-fanout: tails journald and ships every container line to its destinations
//! (stdout, CloudWatch Logs), each destination at its own pace from its own saved journal
//! cursor, so nothing is lost across crashes, restarts or outages: journald is the buffer.
//!
//! Data flows one way: `source` (the journal, read once for all destinations, or stdin) →
//! `event` + `naming` (entry → ecs event, group and stream) → `routes` (which destinations) →
//! `pipeline` (batches, one bounded channel per destination) → `sinks` (deliver) →
//! `checkpoint` (save that destination's cursor). `config_file` holds naming and routes,
//! reloaded on SIGHUP or when the file changes.

mod check;
mod checkpoint;
mod config;
mod config_file;
mod event;
mod metrics;
mod naming;
mod pipeline;
mod routes;
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
    if let Some(config::Command::CheckConfig { file }) = &command {
        return check::config_file(&args, file.as_deref());
    }
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("journal-fanout: {e:#}");
            return ExitCode::from(2);
        }
    };
    // One worker: the destinations' tasks wait on the network far more than they compute,
    // and the journal is read on a thread of its own. A second worker mostly woke to steal
    // work and parked again (measured: 10-35 % fewer context switches and 0.02-0.07 s less
    // CPU per 100,000 entries per destination, docs/BENCHMARKS.md).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("journal-fanout: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Some(config::Command::Check) => {
            return ExitCode::from(runtime.block_on(check::run(&config)))
        }
        Some(config::Command::CheckConfig { .. }) => unreachable!("handled before"),
        None => {}
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
    /// One of the components `run` waits for (a destination's own catch-up reader is not:
    /// it comes and goes).
    counted: bool,
}

/// Read the configuration file again and apply it: naming and routes from the next entry
/// read, retention for groups created from now on. A bad file changes nothing.
fn reload(
    config: &Config,
    rules: &pipeline::RulesCell,
    retention: &sinks::cloudwatch::config::Retention,
    why: &str,
) {
    let Some(path) = &config.config_file else {
        tracing::info!(
            "{why}: reload requested; nothing to reload (no configuration file, see --config)"
        );
        return;
    };
    let built = config_file::load(path).and_then(|file| {
        let r = config::build_rules(&file, &config.overrides, &config.destinations)?;
        Ok((r, config::retention(&file, &config.overrides)?))
    });
    match built {
        Ok((new, days)) => {
            let routes = new.routes.routes.len();
            let (group, stream) = (
                new.group.source().to_string(),
                new.stream.source().to_string(),
            );
            rules.replace(new);
            retention.set(days);
            tracing::info!(
                file = %path.display(), routes, group, stream,
                "{why}: configuration reloaded; it applies from the next journal entry read"
            );
        }
        Err(e) => tracing::error!(
            "{why}: {e:#}; the configuration was not reloaded and the running one stays (fix \
             the file; it is read again when it changes or on SIGHUP)"
        ),
    }
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
    let retention = sinks::cloudwatch::config::Retention::new(config.cloudwatch_retention_days);
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
                        retention_days: retention.clone(),
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
    // Reading side: the journal once for every destination, or stdin.
    let rules = pipeline::RulesCell::new(config.rules.clone());
    let lanes: Vec<pipeline::Lane> = outputs
        .iter()
        .enumerate()
        .map(|(i, (_, tx, m, _))| pipeline::Lane {
            bit: 1 << i,
            tx: tx.clone(),
            m: m.clone(),
        })
        .collect();
    let rt = tokio::runtime::Handle::current();
    match config.src {
        SourceKind::Journald => {
            #[cfg(feature = "journald")]
            {
                let mut starts = Vec::new();
                for (dst, _, _, checkpoint) in &outputs {
                    let cursor = checkpoint.as_ref().map(|c| c.load()).transpose()?.flatten();
                    tracing::info!(
                        destination = dst.name(),
                        cursor_file = %checkpoint.as_ref().map(|c| c.path().display().to_string()).unwrap_or_default(),
                        resume = cursor.is_some(),
                        "reading the journal"
                    );
                    starts.push(cursor);
                }
                let files_at_start = journal_access
                    .is_some_and(|o| o.verdict != source::journal_access::Verdict::NoFiles);
                let own = Arc::new(OwnReaders {
                    location: config.journal.clone(),
                    limits: config.limits,
                    rules: rules.clone(),
                    stop: stop.clone(),
                    liveness: liveness.clone(),
                    done: done_tx.clone(),
                    reads: metrics.journal_reads.clone(),
                });
                spawn_journal_reader(
                    &config,
                    lanes,
                    starts,
                    files_at_start,
                    SharedParts {
                        rules: rules.clone(),
                        hits: metrics.routes.clone(),
                        reads: metrics.journal_reads.clone(),
                        own,
                        rt,
                    },
                    liveness.part("journal reader"),
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
                        pipeline::read_loop(
                            &mut src, limits, lanes, None, None, None, &rt, &stop, &alive,
                        )
                    });
                    let _ = done.send(Finished {
                        what: "stdin reader".into(),
                        result,
                        counted: true,
                    });
                })
                .context("cannot start the stdin reader thread")?;
            running += 1;
        }
    }
    // The readers hold the only senders now: a destination's task ends once they are done.
    drop(outputs);
    // Reloads: on SIGHUP and when the file changes.
    let mut watch = match &config.config_file {
        Some(path) => match daemon_kit::watch::FileWatch::new(path) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    file = %path.display(), error = %e,
                    "cannot watch the configuration file for changes; reload it with SIGHUP"
                );
                None
            }
        },
        None => None,
    };
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
                // Never a reason to stop.
                daemon_kit::Signal::Reload => reload(&config, &rules, &retention, "SIGHUP"),
            },
            _ = async { watch.as_mut().unwrap().changed().await }, if watch.is_some() => {
                reload(&config, &rules, &retention, "the configuration file changed");
            }
            Some(f) = done_rx.recv() => {
                if f.counted {
                    running -= 1;
                }
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
        let _ = done.send(Finished {
            what,
            result,
            counted: true,
        });
    });
}

/// What the shared journal reader works with besides the configuration.
#[cfg(feature = "journald")]
struct SharedParts {
    rules: Arc<pipeline::RulesCell>,
    hits: Arc<metrics::RouteHits>,
    reads: Arc<metrics::JournalReads>,
    own: Arc<OwnReaders>,
    rt: tokio::runtime::Handle,
}

/// The journal reader shared by every destination. It starts at the cursor most destinations
/// saved; a destination that saved another one starts on a reader of its own and joins once
/// it has caught up.
#[cfg(feature = "journald")]
#[allow(clippy::too_many_arguments)]
fn spawn_journal_reader(
    config: &Config,
    lanes: Vec<pipeline::Lane>,
    starts: Vec<Option<String>>,
    files_at_start: bool,
    parts: SharedParts,
    alive: daemon_kit::Part,
    stop: &Arc<AtomicBool>,
    done: &mpsc::UnboundedSender<Finished>,
) -> anyhow::Result<()> {
    let (location, from, limits) = (config.journal.clone(), config.from, config.limits);
    let stop = stop.clone();
    let done = done.clone();
    // The cursor most destinations share (ties: the first destination's).
    let shared_start = starts
        .iter()
        .max_by_key(|c| {
            (
                starts.iter().filter(|o| o == c).count(),
                std::cmp::Reverse(starts.iter().position(|o| o == *c)),
            )
        })
        .cloned()
        .flatten();
    let attached: Vec<bool> = starts.iter().map(|c| *c == shared_start).collect();
    // The journal handle is not Send: it is opened and used on this thread only.
    std::thread::Builder::new()
        .name("journal".into())
        .spawn(move || {
            // A journal without files at the start is opened once they appear, and every
            // entry in it is new. `None`: asked to stop while waiting.
            let from = if files_at_start {
                Some(from)
            } else {
                alive.idle(); // waiting for journald, for as long as it takes
                source::journal_access::wait_for_files(&location, &stop).then(|| {
                    tracing::info!(
                        "journal files appeared; reading them from their first entry (or after \
                         the saved cursors)"
                    );
                    config::StartAt::Head
                })
            };
            let result = unless_panicked(|| {
                let Some(from) = from else { return Ok(()) };
                let mut src = source::journald::JournaldSource::open(
                    &location,
                    parts.rules.current(),
                    shared_start.as_deref(),
                    from,
                )?
                .counting_reads(parts.reads.clone());
                let (joins_tx, joins_rx) = std::sync::mpsc::channel();
                for ((lane, cursor), attached) in lanes.iter().zip(starts).zip(&attached) {
                    if !attached {
                        lane.m.shared_read.store(false, Ordering::Relaxed);
                        parts
                            .own
                            .start(lane.clone(), cursor, from, joins_tx.clone())?;
                    }
                }
                pipeline::read_loop(
                    &mut src,
                    limits,
                    pipeline::Lanes {
                        lanes,
                        on_their_own: attached.iter().map(|a| !a).collect(),
                        joins: (joins_tx, joins_rx),
                    },
                    Some(pipeline::RulesView::new(parts.rules.clone())),
                    Some(parts.hits.clone()),
                    Some(&*parts.own),
                    &parts.rt,
                    &stop,
                    &alive,
                )
            });
            let _ = done.send(Finished {
                what: "journal reader".into(),
                result,
                counted: true,
            });
        })
        .context("cannot start the journal reader thread")?;
    Ok(())
}

/// Readers of their own for destinations that fell behind (see `pipeline`).
#[cfg(feature = "journald")]
struct OwnReaders {
    location: JournalLocation,
    limits: config::BatchLimits,
    rules: Arc<pipeline::RulesCell>,
    stop: Arc<AtomicBool>,
    liveness: daemon_kit::Liveness,
    done: mpsc::UnboundedSender<Finished>,
    reads: Arc<metrics::JournalReads>,
}

#[cfg(feature = "journald")]
impl OwnReaders {
    /// Read for `lane` alone from after `cursor` (none: per `from`).
    fn start(
        &self,
        lane: pipeline::Lane,
        cursor: Option<String>,
        from: config::StartAt,
        joins: std::sync::mpsc::Sender<pipeline::JoinRequest>,
    ) -> anyhow::Result<()> {
        let (location, limits, rules, stop, done, reads) = (
            self.location.clone(),
            self.limits,
            self.rules.clone(),
            self.stop.clone(),
            self.done.clone(),
            self.reads.clone(),
        );
        let name = lane.m.name;
        let alive = self
            .liveness
            .part(format!("journal reader for {name} (catching up)"));
        std::thread::Builder::new()
            .name(format!("journal-{name}"))
            .spawn(move || {
                let result = unless_panicked(|| {
                    let view = pipeline::RulesView::new(rules.clone());
                    let mut src = source::journald::JournaldSource::open(
                        &location,
                        rules.current(),
                        cursor.as_deref(),
                        from,
                    )?
                    .counting_reads(reads);
                    pipeline::own_read(&mut src, limits, lane, cursor, view, joins, &stop, &alive)
                });
                if result.is_err() {
                    let _ = done.send(Finished {
                        what: format!("journal reader for {name}"),
                        result,
                        counted: false,
                    });
                }
            })
            .context("cannot start a journal reader thread")?;
        Ok(())
    }
}

#[cfg(feature = "journald")]
impl pipeline::Detach for OwnReaders {
    fn spawn(
        &self,
        lane: pipeline::Lane,
        cursor: Option<String>,
        joins: std::sync::mpsc::Sender<pipeline::JoinRequest>,
    ) -> anyhow::Result<()> {
        self.start(lane, cursor, config::StartAt::Head, joins)
    }
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
                counted: true,
            });
        })
        .context("cannot start the journal access check thread")?;
    Ok(())
}
