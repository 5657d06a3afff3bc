//! `log-proxy` binary: options, wiring, signals. The stages live in the library.
//!
//! A syslog server for Docker's syslog log driver that rate-limits each
//! container on its own, adds the container's Docker metadata, and writes every accepted line
//! into journald with the fields Docker's journald driver uses — and says so, in the
//! container's own log, when it drops lines and how many.
//!
//! Data flows one way:
//! `intake` (socket) → `proxy` (syslog parse, `docker` metadata, `limiter`) → `journal` (writer).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};

use log_proxy::intake::{self, Address};
use log_proxy::limiter::Limit;
use log_proxy::{activation, docker, journal, metrics, proxy};

/// Per-container rate-limiting syslog proxy: Docker's syslog log driver in, journald out.
#[derive(Parser, Debug)]
#[command(version = env!("LOGSUITE_VERSION"), about, long_about = None)]
struct Options {
    /// Where to receive syslog: unixgram:///path, unix:///path, udp://host:port, tcp://host:port.
    #[arg(
        short = 's',
        long,
        env = "LOG_PROXY_SYSLOG_ADDRESS",
        default_value = "unixgram:///var/run/rate-limiting-log-proxy.sock"
    )]
    syslog_address: Address,

    /// Docker Engine API address [default: $DOCKER_HOST, else unix:///var/run/docker.sock].
    #[arg(short = 'd', long, env = "LOG_PROXY_DOCKER_HOST")]
    docker_host: Option<String>,

    /// Rate-limit window: each container may log BURST lines per INTERVAL.
    #[arg(short = 'i', long, env = "LOG_PROXY_INTERVAL", default_value = "5s",
          value_parser = humantime::parse_duration)]
    interval: Duration,

    /// Lines per interval per container (errors have a budget of their own of the same size);
    /// 0 turns limiting off.
    #[arg(short = 'b', long, env = "LOG_PROXY_BURST", default_value_t = 500)]
    burst: u32,

    /// journald's native socket (a namespace NS listens on /run/systemd/journal.NS/socket).
    #[arg(long, env = "LOG_PROXY_JOURNAL_SOCKET", default_value = journal_native::DEFAULT_SOCKET)]
    journal_socket: std::path::PathBuf,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9102).
    #[arg(long, env = "LOG_PROXY_METRICS_ADDRESS")]
    metrics_address: Option<String>,

    /// Permissions of a created unix socket, in octal (e.g. 0660).
    #[arg(long, env = "LOG_PROXY_SOCKET_MODE", value_parser = parse_mode)]
    socket_mode: Option<u32>,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("socket mode {s:?} is not an octal permission like 0660"))
}

fn main() {
    cli_gen::generate_if_asked(Options::command);
    // One malloc arena: the stages hand buffers across threads, and per-thread arenas
    // measurably inflated peak RSS (see docs/BENCHMARKS.md) for no throughput gain.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    daemon_kit::init_tracing();
    if let Err(e) = run(Options::parse()) {
        tracing::error!("{e:#}");
        eprintln!("log-proxy: {e:#}");
        std::process::exit(1);
    }
}

fn run(opts: Options) -> anyhow::Result<()> {
    let limit = Limit {
        burst: opts.burst,
        interval: opts.interval,
    };
    if opts.interval.is_zero() && opts.burst != 0 {
        anyhow::bail!("--interval must be longer than 0 (or use --burst 0 to turn limiting off)");
    }
    let docker_host = opts
        .docker_host
        .clone()
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());

    // Started by log-proxy.socket: serve systemd's socket, which outlives restarts. Taken
    // before anything else opens a descriptor, while fd 3 can only be the one systemd passed.
    let inherited = activation::inherited()?;
    intake::check(&opts.syslog_address)?;
    let journal = journal_native::Journal::new(&opts.journal_socket)
        .context("cannot create the journald client socket")?;
    if !opts.journal_socket.exists() {
        tracing::warn!(socket = %opts.journal_socket.display(), "journald socket does not exist yet; lines will be held and retried until it appears");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let intake_stats = Arc::new(intake::IntakeStats::default());
    let counters = Arc::new(metrics::Counters::default());
    let writer_state = Arc::new(journal::WriterState::default());
    let metrics = Arc::new(metrics::Metrics {
        counters: counters.clone(),
        intake: intake_stats.clone(),
        writer: writer_state.clone(),
    });

    let (intake_tx, intake_rx) = crossbeam_channel::bounded(64);
    let (answer_tx, answer_rx) = crossbeam_channel::unbounded();
    let (batch_tx, batch_rx) = crossbeam_channel::bounded(128);

    // Async side jobs (Docker API, metrics endpoint, signals) on one small runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (listener, activated) = match inherited {
        Some(l) => (l, true),
        None => (intake::bind(&opts.syslog_address, opts.socket_mode)?, false),
    };
    let lookups = rt.block_on(async { docker::start(docker_host.clone(), answer_tx) });
    // What the systemd watchdog and /healthz check: each loop below beats, or says it waits.
    let liveness = daemon_kit::Liveness::new();
    if let Some(addr) = opts.metrics_address.clone() {
        let mut registry = daemon_kit::registry("log_proxy", env!("LOGSUITE_VERSION"));
        metrics.register(&mut registry);
        rt.block_on(daemon_kit::start_metrics(
            &addr,
            Arc::new(registry),
            liveness.clone(),
        ))?;
    }

    tracing::info!(
        address = %if activated { "the socket systemd passed (LISTEN_FDS)".to_string() } else { format!("{:?}", opts.syslog_address) },
        journal = %opts.journal_socket.display(),
        docker = %docker_host, limit = %limit, "listening"
    );

    let writer = {
        let state = writer_state.clone();
        let alive = liveness.part("journald writer");
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || journal::run_writer(journal, batch_rx, state, alive))?
    };
    let direct = journal_native::Journal::new(&opts.journal_socket).ok();
    let p = proxy::Processor::new(
        limit,
        Some(lookups),
        counters,
        writer_state.clone(),
        batch_tx,
        direct,
    )
    .watched(liveness.part("processor (syslog to journald)"));
    // `intake` is the thread whose end means the listener stopped; for datagrams the
    // processor receives them itself, for streams an intake thread feeds it.
    let (intake, processor) = match listener {
        intake::Listener::Dgram(sock, path) => {
            drop((intake_tx, intake_rx));
            let (stop, stats) = (stop.clone(), intake_stats.clone());
            let h = std::thread::Builder::new()
                .name("proxy".into())
                .spawn(move || {
                    let rx = intake::DgramReceiver::new(std::os::fd::AsRawFd::as_raw_fd(&*sock));
                    // A socket of its own is drained at stop; systemd's keeps its queue for
                    // the next start.
                    let r = p.run_dgram(rx, &stop, answer_rx, &stats, !activated);
                    drop(sock);
                    if let Some(path) = path {
                        let _ = std::fs::remove_file(path);
                    }
                    r
                })?;
            (h, None)
        }
        listener => {
            let processor = std::thread::Builder::new()
                .name("proxy".into())
                .spawn(move || p.run(intake_rx, answer_rx))?;
            let (stop, stats) = (stop.clone(), intake_stats.clone());
            let intake = std::thread::Builder::new()
                .name("intake".into())
                .spawn(move || intake::serve(listener, intake_tx, stop, stats))?;
            (intake, Some(processor))
        }
    };

    // Docker lookups run on the runtime driven by this thread's block_on below: a starved
    // runtime stops this beat.
    let runtime_alive = liveness.part("async runtime (Docker lookups)");
    rt.spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            every.tick().await;
            runtime_alive.beat();
        }
    });
    let watchdog = daemon_kit::notify_ready(liveness);

    rt.block_on(async {
        tokio::select! {
            _ = daemon_kit::shutdown_signal() => tracing::info!("shutting down: draining and flushing"),
            _ = wait_finished(&intake) => tracing::error!("the syslog listener stopped unexpectedly"),
        }
    });
    watchdog.stopping();
    stop.store(true, Ordering::Relaxed);
    writer_state.stopping.store(true, Ordering::Relaxed);
    let intake_result = intake
        .join()
        .map_err(|_| anyhow::anyhow!("intake thread panicked"))?;
    if let Some(processor) = processor {
        processor
            .join()
            .map_err(|_| anyhow::anyhow!("proxy thread panicked"))?;
    }
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("journal writer thread panicked"))?;
    let lost = writer_state.lost_at_shutdown.load(Ordering::Relaxed);
    if lost > 0 {
        tracing::error!(
            lost, socket = %opts.journal_socket.display(),
            "journald stayed unavailable for {:?} after SIGTERM: {lost} log lines it was holding are lost",
            journal::DRAIN_LIMIT
        );
    }
    tracing::info!(metrics = %metrics.render().lines().filter(|l| !l.starts_with('#') && l.starts_with("log_proxy_") && !l.contains('{')).collect::<Vec<_>>().join(", "), "stopped");
    intake_result
}

async fn wait_finished<T>(h: &std::thread::JoinHandle<T>) {
    while !h.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
