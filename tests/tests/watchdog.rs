//! The systemd watchdog as the units set it up (`Type=notify`, `WatchdogSec=`), with a real
//! notification socket standing in for systemd: each daemon says READY=1 and keeps pinging
//! WATCHDOG=1 through an outage longer than its stall limit — waiting on journald or on a
//! destination is not a wedge, and a restart then would only add to the outage.
//! (That a stalled part stops the pings is daemon-kit's own test; here it is shown on a real
//! log-proxy whose journald writer thread is stopped: `/healthz` answers 503 naming it, the
//! pings stop, and both recover when the thread runs again.)

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{field, free_port, unique_name, wait_until, workspace_bin, Journald};

/// The watchdog interval the tests give: a ping every 0.5 s; a loop stalls after 5 s
/// (daemon-kit's MIN_STALL), so the outages below last longer than that.
const WATCHDOG_USEC: &str = "1000000";
const OUTAGE: Duration = Duration::from_secs(8);

/// A notification socket, as systemd's `NOTIFY_SOCKET`.
struct Notify {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Notify {
    fn bind() -> Notify {
        let path = std::env::temp_dir().join(unique_name("notify"));
        let sock = UnixDatagram::bind(&path).unwrap();
        Notify { sock, path }
    }

    /// Every notification within `within`.
    fn collect(&self, within: Duration) -> Vec<String> {
        let end = Instant::now() + within;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return got;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.sock.recv(&mut buf) {
                Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => return got,
            }
        }
    }

    fn wait_ready(&self, daemon: &mut Child, stderr: &Path) {
        wait_until(Duration::from_secs(30), "READY=1", || {
            if let Ok(Some(status)) = daemon.try_wait() {
                panic!("exited with {status}: {}", read(stderr));
            }
            self.collect(Duration::from_millis(100))
                .iter()
                .any(|m| m.contains("READY=1"))
                .then_some(())
        });
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn pings(messages: &[String]) -> usize {
    messages.iter().filter(|m| m.contains("WATCHDOG=1")).count()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Start `program` as systemd would under `WatchdogSec=`: `WATCHDOG_PID` is its own pid,
/// which only the process itself knows before exec — hence the shell.
fn start_watched(
    program: &str,
    args: &[&str],
    env: &[(&str, String)],
    notify: &Notify,
) -> (Daemon, PathBuf) {
    let stderr = std::env::temp_dir().join(unique_name(program));
    let child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(workspace_bin(program))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", WATCHDOG_USEC)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    (Daemon(child), stderr)
}

/// A started daemon, killed on drop if a failed assertion left it running.
struct Daemon(Child);

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// SIGTERM, and wait for it to exit.
fn stop(mut daemon: Daemon) {
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}

/// Pings all through `OUTAGE`, including its last two seconds (past the stall limit).
fn assert_pinged_through_outage(notify: &Notify, during: impl FnMut(), stderr: &Path) {
    let mut during = during;
    let start = Instant::now();
    let mut early = Vec::new();
    while start.elapsed() < OUTAGE - Duration::from_secs(2) {
        during();
        early.extend(notify.collect(Duration::from_millis(200)));
    }
    let mut late = Vec::new();
    while start.elapsed() < OUTAGE {
        during();
        late.extend(notify.collect(Duration::from_millis(200)));
    }
    assert!(
        pings(&early) >= 5 && pings(&late) >= 2,
        "watchdog pings during the outage: {} in its first 6 s, {} in its last 2 s (expected one \
         every 0.5 s)\n{}",
        pings(&early),
        pings(&late),
        read(stderr)
    );
    assert!(
        !read(stderr).contains("no progress"),
        "a part was reported stalled: {}",
        read(stderr)
    );
}

/// log-proxy under a watchdog, on a socket of its own, writing into a journald; lines are
/// Docker-shaped datagrams for one container, numbered from 1.
struct WatchedProxy {
    daemon: Daemon,
    stderr: PathBuf,
    notify: Notify,
    /// Where `/healthz` answers.
    metrics_port: u16,
    dir: PathBuf,
    socket: PathBuf,
    sender: UnixDatagram,
    tag: &'static str,
    sent: std::cell::Cell<usize>,
}

impl WatchedProxy {
    /// Started and READY=1.
    fn start(jd: &Journald, tag: &'static str) -> WatchedProxy {
        let dir = std::env::temp_dir().join(unique_name("wd-proxy"));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("proxy.sock");
        let notify = Notify::bind();
        let metrics_port = free_port();
        let (mut daemon, stderr) = start_watched(
            "log-proxy",
            &[
                "--metrics-address",
                &format!("127.0.0.1:{metrics_port}"),
                "--syslog-address",
                &format!("unixgram://{}", socket.display()),
                "--journal-socket",
                jd.socket().to_str().unwrap(),
                // No Docker here: lookups fail fast and lines keep their tag fields.
                "--docker-host",
                &format!("unix://{}", dir.join("no-docker.sock").display()),
            ],
            &[],
            &notify,
        );
        notify.wait_ready(&mut daemon, &stderr);
        WatchedProxy {
            daemon,
            stderr,
            notify,
            metrics_port,
            dir,
            socket,
            sender: UnixDatagram::unbound().unwrap(),
            tag,
            sent: std::cell::Cell::new(0),
        }
    }

    /// Send the next line, "`text` N"; returns N.
    fn send(&self, text: &str) -> usize {
        let n = self.sent.get() + 1;
        self.sent.set(n);
        let line = format!(
            "<14>1 2026-11-22T00:00:00.000000Z host {} 1 - - {text} {n}",
            self.tag
        );
        self.sender.send_to(line.as_bytes(), &self.socket).unwrap();
        n
    }

    /// `GET /healthz`: status code and body.
    fn healthz(&self) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .expect("connect to /healthz");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        let code = answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"));
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    /// Wait until journald holds every line sent; the first one must come first.
    fn assert_all_arrived(&self, jd: &Journald, text: &str) {
        let entries = jd.wait_for_count(
            &[&format!("CONTAINER_TAG={}", self.tag)],
            self.sent.get(),
            Duration::from_secs(30),
        );
        assert_eq!(
            field(&entries[0], "MESSAGE").as_deref(),
            Some(format!("{text} 1").as_str()),
            "held lines arrive in order"
        );
    }
}

impl Drop for WatchedProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn log_proxy_keeps_pinging_its_watchdog_while_journald_is_down() {
    let mut jd = Journald::start();
    let proxy = WatchedProxy::start(&jd, "0123456789ab");
    jd.stop();
    assert_pinged_through_outage(
        &proxy.notify,
        || {
            proxy.send("held");
        },
        &proxy.stderr,
    );

    // And nothing was lost by waiting: the held lines arrive once journald is back.
    jd.restart();
    proxy.assert_all_arrived(&jd, "held");
}

/// A journald that stops reading (frozen: its socket stays and fills, as when it hangs or
/// restarts under systemd) is waited for, not a stall; and SIGTERM still ends log-proxy within
/// its drain limit, counting what it could not write.
#[test]
fn log_proxy_keeps_pinging_while_journald_is_frozen_and_still_stops_in_time() {
    let jd = Journald::start();
    let mut proxy = WatchedProxy::start(&jd, "0123456789ac");
    jd.freeze();
    // More than journald's socket queues (net.unix.max_dgram_qlen): the writer waits at once.
    for _ in 0..20 {
        proxy.send("frozen");
    }
    assert_pinged_through_outage(
        &proxy.notify,
        || {
            proxy.send("frozen");
        },
        &proxy.stderr,
    );
    jd.thaw();
    proxy.send("frozen");
    proxy.assert_all_arrived(&jd, "frozen");

    // Frozen again, with lines held: SIGTERM ends it within the drain limit (10 s).
    jd.freeze();
    for _ in 0..50 {
        proxy.send("frozen");
    }
    let stderr = proxy.stderr.clone();
    wait_until(
        Duration::from_secs(30),
        "the writer to wait for journald",
        || {
            read(&stderr)
                .matches("journald has not read its socket")
                .nth(1)
                .map(|_| ())
        },
    );
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(proxy.daemon.id() as i32, libc::SIGTERM) };
    let status = wait_until(
        Duration::from_secs(30),
        "log-proxy to exit after SIGTERM while journald is frozen",
        || proxy.daemon.try_wait().unwrap(),
    );
    jd.thaw();
    assert!(status.success(), "exit {status}: {}", read(&stderr));
    assert!(
        read(&stderr).contains("log lines it was holding are lost"),
        "the lines it could not write must be counted: {}",
        read(&stderr)
    );
}

#[test]
fn journal_fanout_keeps_pinging_its_watchdog_while_cloudwatch_is_down() {
    let jd = Journald::start();
    let journal = journal_native::Journal::new(jd.socket()).unwrap();
    // A container line as log-proxy writes it (the fields journal-fanout ships by).
    let write = |message: &str| {
        let fields: [(&str, &[u8]); 4] = [
            ("MESSAGE", message.as_bytes()),
            ("CONTAINER_TAG", b"0123456789ab"),
            ("CONTAINER_NAME", b"web"),
            ("CONTAINER_ID", b"0123456789ab"),
        ];
        journal.send(&fields).unwrap();
    };
    write("waiting for CloudWatch");
    jd.wait_for_count(&["CONTAINER_NAME=web"], 1, Duration::from_secs(10));

    let state = std::env::temp_dir().join(unique_name("wd-fanout"));
    let notify = Notify::bind();
    // Nothing listens on this loopback port: every attempt is refused and retried.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let (mut fanout, stderr) = start_watched(
        "journal-fanout",
        &[
            "--journal-namespace",
            jd.namespace(),
            "--dst",
            "cloudwatch",
            "--from",
            "head",
            "--state-dir",
            state.to_str().unwrap(),
            "--flush-timeout",
            "200ms",
        ],
        &testkit::aws_env(endpoint),
        &notify,
    );
    notify.wait_ready(&mut fanout, &stderr);
    wait_until(
        Duration::from_secs(30),
        "a refused attempt to be retried",
        || read(&stderr).contains("retrying").then_some(()),
    );
    // Entries keep coming: batches fill the destination's queue and the reader waits on it.
    let mut written = 0;
    assert_pinged_through_outage(
        &notify,
        || {
            written += 1;
            write(&format!("waiting {written}"));
        },
        &stderr,
    );
    stop(fanout);
    let _ = std::fs::remove_dir_all(&state);
}

/// A thread of another process, stopped on its own (ptrace: `PTRACE_SEIZE` and
/// `PTRACE_INTERRUPT` stop only that thread; SIGSTOP would stop the whole process, and with
/// it the `/healthz` server). Resumed on drop.
struct StoppedThread(libc::pid_t);

impl StoppedThread {
    fn stop(tid: libc::pid_t) -> StoppedThread {
        // SAFETY: ptrace(2) on a thread of our own child; waitpid on that tracee.
        unsafe {
            assert_eq!(
                libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0),
                0,
                "PTRACE_SEIZE {tid}: {} (the test needs CAP_SYS_PTRACE: run as root)",
                std::io::Error::last_os_error()
            );
            assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
            let mut status = 0;
            assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
            assert!(
                libc::WIFSTOPPED(status),
                "thread {tid} did not stop: {status:#x}"
            );
        }
        StoppedThread(tid)
    }
}

impl Drop for StoppedThread {
    fn drop(&mut self) {
        // SAFETY: detaching our own tracee lets it run on.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, 0, 0) };
    }
}

/// The thread of `pid` named `name` (`/proc/PID/task/TID/comm`).
fn thread_named(pid: u32, name: &str) -> libc::pid_t {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .and_then(|t| t.file_name().to_str()?.parse().ok())
        .unwrap_or_else(|| panic!("log-proxy (pid {pid}) has no thread named {name:?}"))
}

/// `/healthz` (what the watchdog judges, issue 12): a frozen journald is waited for — the
/// journald writer keeps beating while it waits for room, so `/healthz` stays 200 past the stall
/// limit, because restarting log-proxy would not help. A writer that truly stalls — its thread
/// stopped while it holds lines — turns `/healthz` to 503 naming "journald writer" and stops the
/// watchdog pings; once the thread runs again, 200 and pings again, and no line is lost.
#[test]
fn log_proxy_healthz_is_503_naming_a_stalled_journald_writer_and_200_again() {
    let jd = Journald::start();
    let proxy = WatchedProxy::start(&jd, "0123456789ad");
    assert_eq!(proxy.healthz().0, 200, "healthy at start");

    // journald frozen, lines held: the writer waits, beating; healthy all through.
    jd.freeze();
    for _ in 0..20 {
        proxy.send("held");
    }
    let stderr = proxy.stderr.clone();
    wait_until(
        Duration::from_secs(30),
        "the writer to wait for journald",
        || {
            read(&stderr)
                .contains("journald has not read its socket")
                .then_some(())
        },
    );
    let start = Instant::now();
    while start.elapsed() < OUTAGE {
        let (code, body) = proxy.healthz();
        assert_eq!(
            code, 200,
            "a frozen journald is waited for, not a stall: {body}"
        );
        proxy.notify.collect(Duration::from_millis(250));
    }

    // The writer thread itself stopped while it holds lines: a true stall.
    let writer = StoppedThread::stop(thread_named(proxy.daemon.id(), "journal"));
    let body = wait_until(Duration::from_secs(30), "/healthz to answer 503", || {
        let (code, body) = proxy.healthz();
        (code == 503).then_some(body)
    });
    assert!(
        body.starts_with("stalled: journald writer (no progress for "),
        "names the stalled part: {body:?}"
    );
    // Pings sent before the stall was judged may still be queued: drop them, then listen.
    proxy.notify.collect(Duration::from_millis(100));
    let messages = proxy.notify.collect(Duration::from_secs(2));
    assert_eq!(
        pings(&messages),
        0,
        "no watchdog pings while the writer is stalled: {messages:?}"
    );
    assert!(
        read(&stderr).contains("part=journald writer"),
        "the log names the part that stopped: {}",
        read(&stderr)
    );

    drop(writer);
    wait_until(
        Duration::from_secs(30),
        "/healthz to answer 200 again",
        || (proxy.healthz().0 == 200).then_some(()),
    );
    wait_until(Duration::from_secs(30), "watchdog pings again", || {
        (pings(&proxy.notify.collect(Duration::from_millis(500))) > 0).then_some(())
    });
    jd.thaw();
    proxy.assert_all_arrived(&jd, "held");
    assert_eq!(proxy.healthz().0, 200);
}
