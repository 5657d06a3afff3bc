//! Load generator for log-proxy's benchmark (`log-proxy/bench/run.sh`).
//!
//! * `send`: Docker-syslog-shaped datagrams (what Docker's syslog driver writes with
//!   `syslog-format=rfc5424micro` or `rfc3164`, `tag={{.ID}}`, ~124 bytes) into a unixgram
//!   socket, round robin over N container IDs, as fast as possible or at a given rate.
//! * `journal`: journald native entries, byte for byte what the proxy writes for the same
//!   line, straight into a journald socket: journald's own ingestion rate, the baseline.
//! * `sink`: a bare unixgram receiver that counts datagrams (recvmmsg, or recv per datagram)
//!   and prints one result line per burst of traffic.
//!
//! Results are single `key=value` lines on stdout, for the script to pick up.
//!
//! ```text
//! cargo run --release -p log-proxy --example loadgen -- send --socket /tmp/p.sock --containers 100 --duration 5
//! cargo run --release -p log-proxy --example loadgen -- sink --socket /tmp/sink.sock
//! ```

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(about = "Load generator and sink for the log-proxy benchmark")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Send syslog datagrams like Docker's syslog driver.
    Send(SendArgs),
    /// Send journald native entries (what the proxy would write) straight to journald.
    Journal(SendArgs),
    /// Receive and count datagrams; one result line per burst.
    Sink(SinkArgs),
}

#[derive(Args, Clone)]
struct SendArgs {
    /// Unix datagram socket to send to.
    #[arg(long)]
    socket: PathBuf,
    /// Distinct container IDs, used round robin.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    containers: u32,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Stop after this many lines.
    #[arg(long)]
    count: Option<u64>,
    /// Number the containers from this index (a fresh set of IDs for a fresh limiter state).
    #[arg(long, default_value_t = 0)]
    first_container: u32,
    /// Send this many lines of one container before moving to the next (one process
    /// relaying several containers one after another, like dockerd).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    block: u64,
    /// `journal` mode: entries per `sendmmsg` (1: one `send` each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    batch: u64,
    /// Lines per second (default: as fast as the receiver takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// Docker's syslog-format.
    #[arg(long, value_enum, default_value_t = Format::Rfc5424micro)]
    format: Format,
    /// After sending, wait until the Prometheus counter NAME at URL (http://host:port/metrics)
    /// has grown by the lines sent, and report the end-to-end rate. NAME may be `A,B`: the
    /// sum of both (e.g. written plus counted as lost).
    #[arg(long, value_names = ["URL", "NAME"], num_args = 2)]
    until_metric: Option<Vec<String>>,
    /// After sending, wait until FILE has grown by as many lines as were sent.
    #[arg(long)]
    until_file_lines: Option<PathBuf>,
    /// After sending, wait until process PID has used no CPU for 300 ms (end = its last tick).
    #[arg(long)]
    until_idle_pid: Option<u32>,
    /// Report the CPU seconds (utime+stime) process PID used from start to end.
    #[arg(long)]
    watch_pid: Option<u32>,
}

#[derive(Args)]
struct SinkArgs {
    #[arg(long)]
    socket: PathBuf,
    /// A pause this long ends a burst (its result line is printed).
    #[arg(long, default_value_t = 0.5)]
    gap: f64,
    /// Read one datagram per recv() instead of recvmmsg.
    #[arg(long)]
    recv: bool,
    /// Also count entries per value of this journald field (e.g. CONTAINER_TAG).
    #[arg(long)]
    by_field: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Rfc5424micro,
    Rfc3164,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    match Cli::parse().mode {
        Mode::Send(a) => send(&a, false),
        Mode::Journal(a) => send(&a, true),
        Mode::Sink(a) => sink(&a),
    }
}

/// A 12-hex-digit container ID, distinct per index and stable across runs.
fn container_id(i: u32) -> String {
    let x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{:012x}", x >> 16)
}

/// One line as Docker's syslog driver sends it (~124 bytes for rfc5424micro).
fn syslog_line(id: &str, format: Format) -> Vec<u8> {
    let payload = "GET /api/v1/items?page=2 200 0.004s ua=curl/7.88 req=5f2c9a1e";
    match format {
        Format::Rfc5424micro => {
            format!("<30>1 2026-11-22T13:32:28.396128Z vm {id} 3076 {id} - {payload}\n")
        }
        Format::Rfc3164 => format!("<30>Nov 22 13:32:28 vm {id}[3076]: {payload}\n"),
    }
    .into_bytes()
}

fn send(a: &SendArgs, journal: bool) -> anyhow::Result<()> {
    if a.duration.is_none() && a.count.is_none() {
        bail!("give --duration SECONDS or --count LINES");
    }
    let lines: Vec<Vec<u8>> = (a.first_container..a.first_container + a.containers)
        .map(|i| {
            let id = container_id(i);
            let line = syslog_line(&id, a.format);
            if journal {
                // Exactly what the proxy writes for this line when Docker cannot be asked.
                let m = log_proxy::syslog::parse(&line).expect("own line parses");
                let fields = log_proxy::journal::container_fields(&id, None);
                let mut e = Vec::new();
                log_proxy::journal::encode_line(&mut e, &fields, m.severity, m.msg);
                e
            } else {
                line
            }
        })
        .collect();
    if journal && a.batch > 1 {
        return send_journal_batched(a, &lines);
    }
    let sock = UnixDatagram::unbound()?;
    sock.connect(&a.socket)
        .with_context(|| format!("cannot connect to {}", a.socket.display()))?;

    let metric = match &a.until_metric {
        Some(v) => Some((v[0].clone(), v[1].clone(), read_metric(&v[0], &v[1])?)),
        None => None,
    };
    let file_start = match &a.until_file_lines {
        Some(p) => count_lines(p, 0)?.0,
        None => 0,
    };
    let cpu_start = a.watch_pid.map(cpu_seconds).transpose()?;

    let start = Instant::now();
    let deadline = a.duration.map(|d| start + Duration::from_secs_f64(d));
    let limit = a.count.unwrap_or(u64::MAX);
    let mut sent: u64 = 0;
    let mut i = 0usize;
    'send: while sent < limit {
        // Check the clock (and pace) every 64 lines: cheap next to a send.
        for _ in 0..64 {
            if sent >= limit {
                break 'send;
            }
            if let Err(e) = sock.send(&lines[i]) {
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e).with_context(|| {
                    format!("sending to {} after {sent} lines", a.socket.display())
                });
            }
            sent += 1;
            if sent.is_multiple_of(a.block) {
                i += 1;
                if i == lines.len() {
                    i = 0;
                }
            }
        }
        if STOP.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if let Some(rate) = a.rate {
            let due = Duration::from_secs_f64(sent as f64 / rate);
            let el = start.elapsed();
            if due > el {
                std::thread::sleep(due - el);
            }
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    let mut out = format!(
        "sent={sent} send_seconds={send_secs:.3} send_rate={:.0}",
        sent as f64 / send_secs
    );

    let mut end = Instant::now();
    if let Some((url, name, base)) = metric {
        let target = base + sent;
        loop {
            let v = read_metric(&url, &name)?;
            if v >= target {
                end = Instant::now();
                break;
            }
            if end.elapsed() > Duration::from_secs(120) {
                bail!(
                    "{name} at {url} reached {} of {sent} lines in 120 s",
                    v - base
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    if let Some(p) = &a.until_file_lines {
        let (mut n, mut off) = (0u64, 0u64);
        let target = file_start + sent;
        loop {
            let (k, o) = count_lines(p, off)?;
            n += k;
            off = o;
            if n >= target {
                end = Instant::now();
                break;
            }
            if end.elapsed() > Duration::from_secs(120) {
                bail!(
                    "{} has {} of {sent} new lines after 120 s",
                    p.display(),
                    n - file_start
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if let Some(pid) = a.until_idle_pid {
        let mut last = cpu_seconds(pid)?;
        let mut last_change = Instant::now();
        while last_change.elapsed() < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(5));
            let c = cpu_seconds(pid)?;
            if c != last {
                last = c;
                last_change = Instant::now();
            }
        }
        end = last_change;
    }
    if a.until_metric.is_some() || a.until_file_lines.is_some() || a.until_idle_pid.is_some() {
        let secs = end.duration_since(start).as_secs_f64();
        out += &format!(" e2e_seconds={secs:.3} e2e_rate={:.0}", sent as f64 / secs);
    }
    if let (Some(pid), Some(c0)) = (a.watch_pid, cpu_start) {
        let cpu = cpu_seconds(pid)? - c0;
        let secs = end.duration_since(start).as_secs_f64();
        out += &format!(
            " cpu_seconds={cpu:.2} cpu_per_10k_lines_per_s={:.4}",
            cpu / secs / (sent as f64 / secs / 10_000.0)
        );
    }
    println!("{out}");
    Ok(())
}

/// Journal entries with `sendmmsg`, `batch` at a time, the way the proxy's writer sends them.
fn send_journal_batched(a: &SendArgs, entries: &[Vec<u8>]) -> anyhow::Result<()> {
    let journal = journal_native::Journal::new(&a.socket)?;
    let cpu_start = a.watch_pid.map(cpu_seconds).transpose()?;
    let batch: Vec<&[u8]> = entries
        .iter()
        .cycle()
        .take(a.batch as usize)
        .map(|e| &e[..])
        .collect();
    let start = Instant::now();
    let deadline = a.duration.map(|d| start + Duration::from_secs_f64(d));
    let limit = a.count.unwrap_or(u64::MAX);
    let mut sent: u64 = 0;
    while sent < limit
        && !STOP.load(Ordering::Relaxed)
        && deadline.is_none_or(|d| Instant::now() < d)
    {
        let n = (limit - sent).min(batch.len() as u64) as usize;
        let mut i = 0;
        while i < n {
            i += journal.send_many(&batch[i..n]).with_context(|| {
                format!("sending to {} after {sent} entries", a.socket.display())
            })?;
        }
        sent += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut out = format!(
        "sent={sent} send_seconds={secs:.3} send_rate={:.0}",
        sent as f64 / secs
    );
    if let (Some(pid), Some(c0)) = (a.watch_pid, cpu_start) {
        let cpu = cpu_seconds(pid)? - c0;
        out += &format!(
            " cpu_seconds={cpu:.2} cpu_per_10k_lines_per_s={:.4}",
            cpu / (sent as f64 / 10_000.0)
        );
    }
    println!("{out}");
    Ok(())
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let rest = &s[s.rfind(')').context("odd /proc/PID/stat")? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

/// Count newlines in `path` from byte `offset`; returns (count, new offset).
fn count_lines(path: &Path, offset: u64) -> anyhow::Result<(u64, u64)> {
    use std::io::Seek;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut n, mut off) = (0u64, offset);
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += buf[..k].iter().filter(|&&c| c == b'\n').count() as u64;
        off += k as u64;
    }
    Ok((n, off))
}

/// The sum of unlabelled Prometheus counters (`NAME[,NAME...]`) from a plain HTTP GET.
fn read_metric(url: &str, names: &str) -> anyhow::Result<u64> {
    let body = get(url)?;
    names.split(',').try_fold(0, |sum, name| {
        body.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == name).then(|| v.trim().parse::<f64>().ok())?
            })
            .map(|v| sum + v as u64)
            .with_context(|| format!("no counter {name} at {url}"))
    })
}

fn get(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("metrics URL {url:?} must start with http://"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)
        .with_context(|| format!("cannot connect to the metrics endpoint {url}"))?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

fn sink(a: &SinkArgs) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(&a.socket);
    let sock = UnixDatagram::bind(&a.socket)
        .with_context(|| format!("cannot bind {}", a.socket.display()))?;
    let fd = sock.as_raw_fd();
    let size: libc::c_int = 8 * 1024 * 1024;
    // SAFETY: setsockopt on a valid fd with a c_int value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    eprintln!("sink: listening on {}", a.socket.display());

    const SLOTS: usize = 64;
    const SLOT: usize = 64 * 1024;
    let mut bufs = vec![0u8; SLOTS * SLOT];
    let mut iovs: Vec<libc::iovec> = bufs
        .chunks_mut(SLOT)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr() as *mut libc::c_void,
            iov_len: c.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: all-zero is a valid mmsghdr; it points at one iovec.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov as *mut libc::iovec;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();

    let gap = Duration::from_secs_f64(a.gap);
    let mut count: u64 = 0;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut by: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
    let key = a.by_field.as_ref().map(|f| format!("\n{f}=").into_bytes());
    let report = |count: u64,
                  first: Instant,
                  last: Instant,
                  by: &mut std::collections::BTreeMap<Vec<u8>, u64>| {
        let secs = last.duration_since(first).as_secs_f64().max(1e-9);
        let mut line = format!(
            "received={count} seconds={secs:.3} rate={:.0}",
            count as f64 / secs
        );
        for (k, v) in std::mem::take(by) {
            line += &format!(" {}={v}", String::from_utf8_lossy(&k));
        }
        println!("{line}");
        let _ = std::io::stdout().flush();
    };
    while !STOP.load(Ordering::Relaxed) {
        let n = if a.recv {
            // SAFETY: recv into our own buffer of SLOT bytes.
            let r = unsafe { libc::recv(fd, bufs.as_mut_ptr() as *mut libc::c_void, SLOT, 0) };
            if r >= 0 {
                hdrs[0].msg_len = r as u32;
                1
            } else {
                -1
            }
        } else {
            // SAFETY: the headers point at iovecs over `bufs`, alive for the call.
            unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    SLOTS as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            }
        };
        if n <= 0 {
            if let (Some(f), true) = (first, last.elapsed() >= gap) {
                report(count, f, last, &mut by);
                count = 0;
                first = None;
            }
            continue;
        }
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        count += n as u64;
        if let Some(k) = &key {
            for (i, h) in hdrs.iter().take(n as usize).enumerate() {
                let d = &bufs[i * SLOT..i * SLOT + h.msg_len as usize];
                if let Some(p) = d.windows(k.len()).position(|w| w == &k[..]) {
                    let v = &d[p + k.len()..];
                    let v = &v[..v.iter().position(|&c| c == b'\n').unwrap_or(v.len())];
                    *by.entry(v.to_vec()).or_default() += 1;
                }
            }
        }
    }
    if let Some(f) = first {
        report(count, f, last, &mut by);
    }
    let _ = std::fs::remove_file(&a.socket);
    Ok(())
}
