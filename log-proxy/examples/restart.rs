//! Benchmark: what a log-proxy restart costs a steadily logging container, with the socket held
//! by systemd (socket activation, `log-proxy.socket`) and without it (log-proxy binds its own).
//!
//!   cargo build --release -p log-proxy --bins --examples
//!   target/release/examples/restart target/release/log-proxy [RUNS] [RATE]
//!
//! Each run: a private journald namespace; log-proxy started; a sender thread sends RATE lines/s
//! for 3 s with blocking sends, like Docker's syslog driver; after 1 s log-proxy gets SIGTERM and
//! a new one is started at once (what `systemctl restart` does). Reported per mode, median over
//! RUNS: lines lost (sent but never in journald, or refused by the kernel), the longest single
//! send (how long the sender was blocked), and stop / start-to-`READY=1` times of the restart
//! (log-proxy reports readiness over `NOTIFY_SOCKET`, as it does to systemd).
//! Needs root (journald namespace). Results: docs/bench/log-proxy.md.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::{unique_name, Journald};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// The socket belongs to this process (systemd's role); each log-proxy inherits it.
    Activated,
    /// Each log-proxy binds (and on exit removes) the socket itself.
    OwnSocket,
    /// Control: socket activation, no restart (what the load alone costs).
    NoRestart,
}

struct Run {
    lost: u64,
    refused: u64,
    longest_send: Duration,
    stop: Duration,
    start_to_ready: Duration,
}

/// The sd_notify socket a log-proxy reports `READY=1` on, as it would to systemd.
struct Notify {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Notify {
    fn new() -> Notify {
        let path = std::env::temp_dir().join(format!("{}.notify", unique_name("restart")));
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Notify { sock, path }
    }

    /// Blocks until a `READY=1` arrives (what systemd waits for before a restart is done).
    fn wait_ready(&self) {
        let mut buf = [0u8; 4096];
        loop {
            let n = self
                .sock
                .recv(&mut buf)
                .expect("log-proxy did not send READY=1 within 20 s");
            if buf[..n].split(|b| *b == b'\n').any(|l| l == b"READY=1") {
                return;
            }
        }
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn spawn(
    proxy: &Path,
    mode: Mode,
    fd: Option<RawFd>,
    path: &Path,
    jd: &Journald,
    notify: &Notify,
) -> Child {
    let mut cmd = Command::new("sh");
    cmd.arg("-c");
    match mode {
        Mode::Activated | Mode::NoRestart if fd.is_some() => {
            cmd.arg(r#"export LISTEN_PID=$$ LISTEN_FDS=1; exec "$@""#)
        }
        _ => cmd.arg(r#"exec "$@""#),
    };
    cmd.arg("sh")
        .arg(proxy)
        .arg("--syslog-address")
        .arg(format!("unixgram://{}", path.display()))
        .arg("--journal-socket")
        .arg(jd.socket())
        .args([
            "--docker-host",
            "unix:///nonexistent/docker.sock",
            "--burst",
            "0",
        ])
        .env("NOTIFY_SOCKET", &notify.path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(fd) = fd {
        // SAFETY: only dup2 between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself would leave close-on-exec set.
                let r = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.spawn().expect("spawn log-proxy")
}

fn one_run(proxy: &Path, mode: Mode, rate: u64) -> Run {
    let jd = Journald::start();
    let path = std::env::temp_dir().join(format!("{}.sock", unique_name("restart")));
    let held = (mode != Mode::OwnSocket).then(|| UnixDatagram::bind(&path).unwrap());
    let fd = held.as_ref().map(|s| s.as_raw_fd());
    let notify = Notify::new();
    let mut proxy_child = spawn(proxy, mode, fd, &path, &jd, &notify);
    notify.wait_ready();

    let tag = unique_name("r");
    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let longest = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (sent, refused, longest, done, path, tag) = (
            sent.clone(),
            refused.clone(),
            longest.clone(),
            done.clone(),
            path.clone(),
            tag.clone(),
        );
        std::thread::spawn(move || {
            let s = UnixDatagram::unbound().unwrap();
            let start = Instant::now();
            let total = rate * 3;
            for i in 0..total {
                // Paced: line i is due at i/rate seconds.
                let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w);
                }
                let line =
                    format!("<30>1 2026-11-22T13:32:28.396128Z vm {tag} 1 {tag} - line {i}\n");
                let t = Instant::now();
                match s.send_to(line.as_bytes(), &path) {
                    Ok(_) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    // Docker's driver gets the same errors while the socket file is gone.
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                longest.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            done.store(true, Ordering::Relaxed);
        })
    };

    std::thread::sleep(Duration::from_secs(1)); // steady state before the restart (load, not readiness)
    if mode == Mode::NoRestart {
        sender.join().unwrap();
        let sent = sent.load(Ordering::Relaxed);
        let arrived = settle(&jd, &tag, sent);
        unsafe { libc::kill(proxy_child.id() as i32, libc::SIGTERM) };
        proxy_child.wait().unwrap();
        let _ = std::fs::remove_file(&path);
        return Run {
            lost: sent.saturating_sub(arrived),
            refused: refused.load(Ordering::Relaxed),
            longest_send: Duration::from_micros(longest.load(Ordering::Relaxed)),
            stop: Duration::ZERO,
            start_to_ready: Duration::ZERO,
        };
    }
    let t0 = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(proxy_child.id() as i32, libc::SIGTERM) };
    proxy_child.wait().unwrap();
    let stop = t0.elapsed();
    let t1 = Instant::now();
    let mut second = spawn(proxy, mode, fd, &path, &jd, &notify);
    notify.wait_ready();
    let start_to_ready = t1.elapsed();

    sender.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    let arrived = settle(&jd, &tag, sent);
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    second.wait().unwrap();
    drop(held);
    let _ = std::fs::remove_file(&path);
    Run {
        lost: sent.saturating_sub(arrived),
        refused: refused.load(Ordering::Relaxed),
        longest_send: Duration::from_micros(longest.load(Ordering::Relaxed)),
        stop,
        start_to_ready,
    }
}

/// Lines of `tag` in journald once all `sent` arrived, or once the count stopped changing for
/// 2 s (the rest is lost).
fn settle(jd: &Journald, tag: &str, sent: u64) -> u64 {
    let m = format!("CONTAINER_TAG={tag}");
    let mut last = (0usize, Instant::now());
    loop {
        let n = jd.entries_matching(&[&m]).len();
        if n as u64 >= sent {
            return n as u64;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            return n as u64;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let proxy = PathBuf::from(
        args.get(1)
            .expect("usage: restart PATH-TO-log-proxy [RUNS] [RATE]"),
    );
    let runs: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(5);
    let rate: u64 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(10_000);
    println!("| mode | lines sent in 3 s | lost (median, max) | refused by the kernel (median) | longest send (median) | stop | start to ready |");
    println!("|---|---|---|---|---|---|---|");
    for mode in [Mode::NoRestart, Mode::Activated, Mode::OwnSocket] {
        let results: Vec<Run> = (0..runs).map(|_| one_run(&proxy, mode, rate)).collect();
        let max_lost = results.iter().map(|r| r.lost + r.refused).max().unwrap();
        println!(
            "| {} | {} | {}, {} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
            match mode {
                Mode::Activated => "restart, socket activation (log-proxy.socket)",
                Mode::OwnSocket => "restart, own socket (started by hand)",
                Mode::NoRestart => "control: no restart",
            },
            rate * 3,
            median(results.iter().map(|r| r.lost + r.refused).collect()),
            max_lost,
            median(results.iter().map(|r| r.refused).collect()),
            median(
                results
                    .iter()
                    .map(|r| r.longest_send.as_secs_f64() * 1e3)
                    .collect()
            ),
            median(results.iter().map(|r| r.stop.as_secs_f64() * 1e3).collect()),
            median(
                results
                    .iter()
                    .map(|r| r.start_to_ready.as_secs_f64() * 1e3)
                    .collect()
            ),
        );
    }
}
