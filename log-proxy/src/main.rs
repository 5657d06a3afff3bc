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
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use log_proxy::intake::{self, Address};
use log_proxy::limiter::Limit;
use log_proxy::policy::{self, Overrides, Policy};
use log_proxy::trust::AllowUids;
use log_proxy::{activation, check, docker, journal, metrics, proxy, reload};

/// Per-container rate-limiting syslog proxy: Docker's syslog log driver in, journald out.
#[derive(Parser, Debug)]
#[command(version = env!("LOGSUITE_VERSION"), about, long_about = None,
          after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    opts: Options,
}

const AFTER_HELP: &str = "\
EXIT STATUS:
  0  stopped on SIGTERM or SIGINT after draining (SIGHUP never stops it)
  1  a runtime failure (the listener failed, a thread panicked): worth a restart
  2  a configuration error (bad flag or value, socket path in use or its directory missing,
     unusable --metrics-address): fix the configuration; the units do not restart on it
  log-proxy check: 0 when nothing FAILs, 1 otherwise

ENVIRONMENT:
  DOCKER_HOST        the Docker API address when --docker-host is not given
  LISTEN_FDS, LISTEN_PID
                     set by systemd's log-proxy.socket: serve the socket it passes
  RUST_LOG           diagnostics level on stderr (error, warn, info, debug; default info)

SIGNALS:
  SIGTERM, SIGINT    stop receiving, write what is held and the drop notices, exit 0
  SIGHUP             reload the policy file (a bad one is refused and the running policy
                     stays); never stops it

POLICY FILE:
  TOML (--policy FILE). Every key:
  [defaults]             lines = N (per interval; 0 = unlimited), bytes = \"4MiB\" (message
                         bytes per interval; 0 = unlimited), interval = \"5s\",
                         errors = \"separate\" | \"shared\" | \"exempt\"
  [[rule]]               name = \"...\" (unique; in notices as LOG_PROXY_RULE and in metrics),
                         the same four keys (missing ones from [defaults]), and matchers, all of
                         which must match (globs): match.name, match.image (IMAGE_NAME),
                         match.label.\"KEY\", match.ecs_family (the ECS task family label)
  The first matching rule wins; a container's log-proxy.rate-limit label
  (LINES/INTERVAL[/BYTES]) wins over the file; flags given explicitly win over [defaults].
  Reloaded on SIGHUP and when the file changes; check it with: log-proxy check-config FILE";

#[derive(Subcommand, Debug)]
enum Command {
    /// Check this host for what loses or cuts logs (kernel queue, journald, Docker's
    /// daemon.json, the socket): one line each with OK, WARN or FAIL and the fix.
    Check {
        /// Docker's daemon configuration to check.
        #[arg(long, value_name = "FILE", default_value = "/etc/docker/daemon.json")]
        daemon_json: std::path::PathBuf,
    },
    /// Check a policy file without starting: unknown keys, bad globs or sizes are errors
    /// (exit 2), rules never reached are warnings; then, if Docker answers, which rule each
    /// running container gets.
    CheckConfig {
        /// The policy file [default: --policy, else /etc/log-proxy/policy.toml].
        file: Option<std::path::PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct Options {
    /// Where to receive syslog: unixgram:///path, unix:///path, udp://host:port, tcp://host:port.
    #[arg(
        short = 's',
        long,
        env = "LOG_PROXY_SYSLOG_ADDRESS",
        default_value = "unixgram:///var/run/rate-limiting-log-proxy.sock"
    )]
    syslog_address: Address,

    /// Docker Engine API address [default: $DOCKER_HOST, else unix:///var/run/docker.sock];
    /// `none`: no Docker here (local syslog clients only): tags are not looked up.
    #[arg(short = 'd', long, env = "LOG_PROXY_DOCKER_HOST")]
    docker_host: Option<String>,

    /// Rate-limit policy file (TOML: per-service budgets in lines and bytes; see POLICY FILE).
    /// Without it, /etc/log-proxy/policy.toml is read if it exists, else the flags alone
    /// apply. Reloaded on SIGHUP and when it changes.
    #[arg(long, env = "LOG_PROXY_POLICY", value_name = "FILE")]
    policy: Option<std::path::PathBuf>,

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

    /// While journald is gone, hold up to SIZE of encoded entries (e.g. 64MiB, 512MiB);
    /// lines beyond it are counted per container and reported when journald is back.
    #[arg(long, env = "LOG_PROXY_JOURNAL_BUFFER", default_value = "64MiB",
          value_parser = parse_size, value_name = "SIZE")]
    journal_buffer: u64,

    /// Uids (or user names) allowed to write container lines on a unix socket, comma-separated,
    /// or `any` [default: 0 and the owner of the socket in $DOCKER_HOST or --docker-host]. Lines from other senders are
    /// counted (log_proxy_untrusted_lines_total{uid}) and reported once a minute, not written.
    #[arg(long, env = "LOG_PROXY_ALLOW_UID", value_name = "LIST")]
    allow_uid: Option<AllowUids>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s)
        .map_err(|e| format!("{s:?} is not a size like 64MiB or 512MiB ({e})"))
        .and_then(|n| {
            if n == 0 {
                Err("the journal buffer must be larger than 0".into())
            } else {
                Ok(n)
            }
        })
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("socket mode {s:?} is not an octal permission like 0660"))
}

fn main() -> std::process::ExitCode {
    cli_gen::generate_if_asked(Cli::command);
    // One malloc arena: the stages hand buffers across threads, and per-thread arenas
    // measurably inflated peak RSS (see docs/BENCHMARKS.md) for no throughput gain.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    daemon_kit::init_tracing();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Flags given on the command line or in the environment win over the policy file.
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let over = Overrides {
        lines: given("burst").then_some(cli.opts.burst),
        interval: given("interval").then_some(cli.opts.interval),
    };
    if cli.command.is_some() {
        // The checks print reports: `log-proxy check | head` ends quietly, as other tools do.
        // SAFETY: restoring a default signal action before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Some(Command::CheckConfig { file }) => {
            let file = file.or_else(|| policy_path(&cli.opts));
            return check_config(file, &cli.opts, over);
        }
        Some(Command::Check { daemon_json }) => {
            return std::process::ExitCode::from(check::run(&check::Settings {
                socket: cli.opts.syslog_address.clone(),
                journal_socket: cli.opts.journal_socket.clone(),
                docker_host: docker_host(&cli.opts),
                daemon_json,
            }))
        }
        None => run(cli.opts, over),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Once, on one line: this is what the operator reads (and journald keeps).
        Err(e) => daemon_kit::exit::report("log-proxy", &e),
    }
}

fn docker_host(opts: &Options) -> String {
    opts.docker_host
        .clone()
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

/// `--policy`, else the default file if it exists.
fn policy_path(opts: &Options) -> Option<std::path::PathBuf> {
    opts.policy.clone().or_else(|| {
        let p = std::path::Path::new(policy::DEFAULT_PATH);
        p.exists().then(|| p.to_path_buf())
    })
}

/// `log-proxy check-config [FILE]`.
fn check_config(
    file: Option<std::path::PathBuf>,
    opts: &Options,
    over: Overrides,
) -> std::process::ExitCode {
    let Some(file) = file else {
        eprintln!(
            "log-proxy: no policy file to check: give one (log-proxy check-config FILE) or --policy; {} does not exist",
            policy::DEFAULT_PATH
        );
        return std::process::ExitCode::from(2);
    };
    let flags = Limit::lines(opts.burst, opts.interval);
    let (p, warnings) = match Policy::load(&file, flags, over) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("log-proxy: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    for w in &warnings {
        println!("warning: {w}");
    }
    println!(
        "{}: OK, {} rules; defaults {}",
        file.display(),
        p.rules.len(),
        p.defaults
    );
    for r in &p.rules {
        println!("  rule {}: {}", r.name, r.limit);
    }
    let docker = docker_host(opts);
    if docker == docker::NO_DOCKER {
        return std::process::ExitCode::SUCCESS;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    match rt.block_on(docker::running(&docker)) {
        Ok(containers) => {
            println!("running containers ({}):", containers.len());
            for m in containers {
                let a = p.assign(Some(&m));
                println!(
                    "  {} ({}, {}): {} — {}",
                    m.name,
                    m.id12(),
                    m.image_name,
                    a.rule
                        .as_deref()
                        .map(|r| format!("rule {r}"))
                        .unwrap_or_else(|| "defaults".into()),
                    a.limit
                );
            }
        }
        Err(e) => println!("(Docker at {docker} did not answer, so no containers are shown: {e})"),
    }
    std::process::ExitCode::SUCCESS
}

fn run(opts: Options, over: Overrides) -> anyhow::Result<()> {
    let flags = Limit::lines(opts.burst, opts.interval);
    if opts.interval.is_zero() && opts.burst != 0 {
        return Err(daemon_kit::config_error(
            "--interval must be longer than 0 (or use --burst 0 to turn limiting off)",
        ));
    }
    let source = policy_path(&opts).map(|path| reload::Source { path, flags, over });
    let policy = match &source {
        Some(s) => s.load().map_err(daemon_kit::config_error)?,
        None => Policy::flags_only(flags),
    };
    let limit = policy.defaults;
    let docker_host = docker_host(&opts);
    let allow = opts
        .allow_uid
        .clone()
        .unwrap_or_else(|| AllowUids::default_for(&docker_host));

    // Started by log-proxy.socket: serve systemd's socket, which outlives restarts. Taken
    // before anything else opens a descriptor, while fd 3 can only be the one systemd passed.
    let inherited = activation::inherited()?;
    intake::check(&opts.syslog_address)?;
    let journal = journal_native::Journal::new(&opts.journal_socket)
        .context("cannot create the journald client socket")?;

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
    // Bounded in bytes, not in batches (see `Processor::flush`).
    let (batch_tx, batch_rx) = crossbeam_channel::unbounded();

    // Async side jobs (Docker API, metrics endpoint, signals) on one small runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Before the socket exists: a SIGHUP sent as soon as it appears must find its handler.
    let mut signals = rt.block_on(async { daemon_kit::Signals::install() })?;
    let (listener, activated) = match inherited {
        Some(l) => (l, true),
        None => (intake::bind(&opts.syslog_address, opts.socket_mode)?, false),
    };
    if !opts.journal_socket.exists() {
        tracing::warn!(socket = %opts.journal_socket.display(), "journald socket does not exist yet; lines will be held and retried until it appears");
    }
    // Without Docker the answers channel stays open (and empty): a closed one would be
    // "ready" in the processor's select on every turn.
    let lookups = (docker_host != docker::NO_DOCKER).then(|| {
        let tx = answer_tx.clone();
        rt.block_on(async { docker::start(docker_host.clone(), tx) })
    });
    // What the systemd watchdog and /healthz check: each loop below beats, or says it waits.
    let liveness = daemon_kit::Liveness::new();
    if let Some(addr) = opts.metrics_address.clone() {
        let mut registry = daemon_kit::registry("log_proxy", env!("LOGSUITE_VERSION"));
        metrics.register(&mut registry);
        rt.block_on(daemon_kit::start_metrics(
            &addr,
            Arc::new(registry),
            liveness.clone(),
        ))
        .map_err(daemon_kit::config)?;
    }

    tracing::info!(
        address = %if activated { "the socket systemd passed (LISTEN_FDS)".to_string() } else { format!("{:?}", opts.syslog_address) },
        journal = %opts.journal_socket.display(),
        docker = %docker_host, limit = %limit, rules = policy.rules.len(),
        policy = %source.as_ref().map(|s| s.path.display().to_string()).unwrap_or_else(|| "(flags)".into()),
        allow_uid = %allow,
        journal_buffer = opts.journal_buffer, "listening"
    );

    let writer = {
        let state = writer_state.clone();
        let alive = liveness.part("journald writer");
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || journal::run_writer(journal, batch_rx, state, alive))?
    };
    let direct = journal_native::Journal::new(&opts.journal_socket).ok();
    let (policy_tx, policy_rx) = crossbeam_channel::unbounded();
    if let Some(s) = &source {
        rt.block_on(async { reload::watch(s.clone(), policy_tx.clone()) })
            .with_context(|| format!("cannot watch the policy file {}", s.path.display()))?;
    }
    let p = proxy::Processor::new(
        Arc::new(policy),
        lookups,
        counters,
        writer_state.clone(),
        batch_tx,
        direct,
    )
    .buffer_bytes(opts.journal_buffer)
    .reloading(policy_rx)
    .reporting_refusals(intake_stats.clone())
    .watched(liveness.part("processor (syslog to journald)"));
    // `intake` is the thread whose end means the listener stopped; for datagrams the
    // processor receives them itself, for streams an intake thread feeds it.
    let (intake, processor) = match listener {
        intake::Listener::Dgram(sock, file) => {
            drop((intake_tx, intake_rx));
            let (stop, stats) = (stop.clone(), intake_stats.clone());
            let rx = intake::DgramReceiver::new(std::os::fd::AsRawFd::as_raw_fd(&*sock))
                .trusting(allow.clone())?;
            let h = std::thread::Builder::new()
                .name("proxy".into())
                .spawn(move || {
                    // A socket of its own is drained at stop; systemd's keeps its queue for
                    // the next start.
                    let r = p.run_dgram(rx, &stop, answer_rx, &stats, !activated);
                    drop(sock);
                    drop(file); // the socket file, if ours and still ours
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
                .spawn(move || intake::serve(listener, intake_tx, stop, stats, allow))?;
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
        loop {
            tokio::select! {
                s = signals.next() => match s {
                    daemon_kit::Signal::Stop(name) => {
                        tracing::info!("{name}: shutting down: draining and flushing");
                        break;
                    }
                    // Never a reason to stop.
                    daemon_kit::Signal::Reload => match &source {
                        Some(s) => s.reload("SIGHUP", &policy_tx),
                        None => tracing::info!("reload requested; nothing to reload (no policy file)"),
                    },
                },
                _ = wait_finished(&intake) => {
                    tracing::error!("the syslog listener stopped unexpectedly");
                    break;
                }
            }
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
