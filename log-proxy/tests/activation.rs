//! Socket activation: log-proxy serves the socket systemd passes it (`LISTEN_FDS`), and lines
//! sent while it is stopped wait in that socket and arrive once it is started again.
//!
//! systemd itself cannot run here (no systemd as PID 1), so the socket is passed the two ways
//! that follow `sd_listen_fds(3)` exactly: systemd's own `systemd-socket-activate`, and this
//! test holding the socket across two log-proxy processes, as `log-proxy.socket` does.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use testkit::{field, unique_name, wait_until, Journald};

const NO_DOCKER: &str = "unix:///nonexistent/docker.sock";

fn line(tag: &str, msg: &str) -> Vec<u8> {
    format!("<30>1 2026-11-22T13:32:28.396128Z vm {tag} 1 {tag} - {msg}\n").into_bytes()
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(unique_name(name))
}

/// A log-proxy started with `fds` as its descriptors 3, 4, ... and `LISTEN_FDS`/`LISTEN_PID`
/// set for it, as systemd starts a socket-activated service.
struct Activated {
    child: Child,
    metrics_port: u16,
    stderr: PathBuf,
}

impl Activated {
    fn start(fds: &[RawFd], journal: &Path) -> Activated {
        let metrics_port = testkit::free_port();
        let stderr = temp("lp-act-stderr");
        let fds = fds.to_vec();
        let mut cmd = Command::new("sh");
        // LISTEN_PID must be the pid of the process that reads it: `exec` keeps sh's pid.
        cmd.arg("-c")
            .arg(r#"export LISTEN_PID=$$; exec "$@""#)
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_log-proxy"))
            .arg("--journal-socket")
            .arg(journal)
            .args(["--docker-host", NO_DOCKER])
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .env("LISTEN_FDS", fds.len().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        // SAFETY: only dup2 between fork and exec (async-signal-safe).
        unsafe {
            cmd.pre_exec(move || {
                for (i, fd) in fds.iter().enumerate() {
                    let target = 3 + i as RawFd;
                    // dup2 clears close-on-exec on a new descriptor, but does nothing when the
                    // socket already is `target`: clear it then by hand.
                    let r = if *fd == target {
                        libc::fcntl(target, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(*fd, target)
                    };
                    if r < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn log-proxy");
        Activated {
            child,
            metrics_port,
            stderr,
        }
    }

    /// Ready = its metrics endpoint answers (served once the inherited socket is taken).
    fn wait_ready(&mut self) {
        wait_until(Duration::from_secs(20), "log-proxy to start", || {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("log-proxy exited ({s}): {}", self.stderr());
            }
            std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
                .ok()
                .map(|_| ())
        });
    }

    fn terminate(&mut self) -> i32 {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap().code().unwrap_or(-1)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr);
    }
}

fn messages(jd: &Journald, tag: &str, n: usize) -> Vec<String> {
    jd.wait_for_count(
        &[&format!("CONTAINER_TAG={tag}")],
        n,
        Duration::from_secs(30),
    )
    .iter()
    .map(|e| field(e, "MESSAGE").unwrap())
    .collect()
}

#[test]
fn lines_sent_while_stopped_arrive_after_restart_on_the_inherited_socket() {
    let jd = Journald::start();
    let path = temp("lp-act").with_extension("sock");
    // This test is systemd here: it owns the socket across both log-proxy processes.
    let socket = UnixDatagram::bind(&path).unwrap();
    let tag = unique_name("act");
    let sender = UnixDatagram::unbound().unwrap();
    // A send that blocks means nobody reads the socket: fail instead of hanging.
    sender
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let mut first = Activated::start(&[socket.as_raw_fd()], jd.socket());
    first.wait_ready();
    for i in 0..20 {
        sender
            .send_to(&line(&tag, &format!("before {i}")), &path)
            .unwrap();
    }
    messages(&jd, &tag, 20);
    assert_eq!(first.terminate(), 0, "log-proxy: {}", first.stderr());
    assert!(
        first.stderr().contains("the socket systemd passed"),
        "log-proxy should say it serves the inherited socket: {}",
        first.stderr()
    );
    assert!(
        path.exists(),
        "log-proxy removed the socket file systemd owns"
    );

    // No log-proxy runs now. A blocking sender, like Docker's syslog driver: the kernel queues
    // what fits in the socket and blocks the rest; nothing is refused or lost.
    // More than the kernel queues (net.unix.max_dgram_qlen: 10 here, 512 where systemd booted
    // the host), so the sender must block until the next log-proxy reads.
    let during = max_dgram_qlen() + 200;
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (sent, path, tag) = (sent.clone(), path.clone(), tag.clone());
        std::thread::spawn(move || {
            let s = UnixDatagram::unbound().unwrap();
            s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
            for i in 0..during {
                s.send_to(&line(&tag, &format!("during {i}")), &path)
                    .expect("send while log-proxy is stopped");
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    wait_until(
        Duration::from_secs(10),
        "lines queued in the socket while log-proxy is stopped",
        || (sent.load(Ordering::SeqCst) >= 5).then_some(()),
    );
    let queued_while_stopped = sent.load(Ordering::SeqCst);
    assert!(
        queued_while_stopped < during,
        "the kernel queue should have filled and blocked the sender"
    );

    let mut second = Activated::start(&[socket.as_raw_fd()], jd.socket());
    second.wait_ready();
    writer.join().unwrap();
    let got = messages(&jd, &tag, 20 + during);
    let want: Vec<String> = (0..20)
        .map(|i| format!("before {i}"))
        .chain((0..during).map(|i| format!("during {i}")))
        .collect();
    assert_eq!(got, want, "every line once, in order");
    assert_eq!(second.terminate(), 0, "log-proxy: {}", second.stderr());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn started_by_systemd_socket_activate_on_the_first_datagram() {
    let jd = Journald::start();
    let path = temp("lp-sa").with_extension("sock");
    let tag = unique_name("sa");
    let metrics_port = testkit::free_port();
    let stderr = temp("lp-sa-stderr");
    let mut child = Command::new("systemd-socket-activate")
        .arg("--datagram")
        .arg("--listen")
        .arg(&path)
        .arg(env!("CARGO_BIN_EXE_log-proxy"))
        .arg("--journal-socket")
        .arg(jd.socket())
        .args(["--docker-host", NO_DOCKER])
        .arg("--metrics-address")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("systemd-socket-activate is part of the systemd package: apt-get install systemd");
    wait_until(
        Duration::from_secs(10),
        "systemd-socket-activate's socket",
        || path.exists().then_some(()),
    );
    // The first datagram starts log-proxy; it and the next ones are all served.
    let sender = UnixDatagram::unbound().unwrap();
    for i in 0..5 {
        sender
            .send_to(&line(&tag, &format!("line {i}")), &path)
            .unwrap();
    }
    let got = messages(&jd, &tag, 5);
    assert_eq!(got, (0..5).map(|i| format!("line {i}")).collect::<Vec<_>>());
    // SAFETY: kill(2) on our child (log-proxy, exec'd in place of systemd-socket-activate).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "log-proxy: {log}");
    assert!(log.contains("the socket systemd passed"), "{log}");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&stderr);
}

#[test]
fn more_than_one_inherited_socket_is_refused_with_the_setting_to_change() {
    let jd = Journald::start();
    let (a, b) = UnixDatagram::pair().unwrap();
    let mut p = Activated::start(&[a.as_raw_fd(), b.as_raw_fd()], jd.socket());
    let status = p.child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let err = p.stderr();
    assert!(
        err.contains("LISTEN_FDS=2") && err.contains("single ListenDatagram="),
        "{err}"
    );
}

#[test]
fn an_inherited_socket_systemd_did_not_create_is_refused() {
    let jd = Journald::start();
    // An unbound client socket, as a stray descriptor 3 would be.
    let stray = UnixDatagram::unbound().unwrap();
    let mut p = Activated::start(&[stray.as_raw_fd()], jd.socket());
    let status = p.child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let err = p.stderr();
    assert!(err.contains("unbound unix socket"), "{err}");
}

/// How many datagrams a unix socket's queue holds before senders block.
fn max_dgram_qlen() -> usize {
    let text = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .expect("read /proc/sys/net/unix/max_dgram_qlen");
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("max_dgram_qlen {text:?}: {e}"))
}
