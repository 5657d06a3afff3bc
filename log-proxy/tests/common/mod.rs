//! A running log-proxy for tests: spawned with arguments, ready when its socket exists.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::{unique_name, wait_until, Entry};

pub struct Proxy {
    pub child: Child,
    pub socket: PathBuf,
    pub metrics_port: u16,
    pub stderr_path: PathBuf,
}

impl Proxy {
    /// Start on a fresh unixgram socket, writing to `journal_socket`.
    pub fn start(journal_socket: &std::path::Path, extra: &[&str]) -> Proxy {
        Proxy::start_env(journal_socket, extra, &[])
    }

    /// [`Proxy::start`] with extra environment.
    pub fn start_env(
        journal_socket: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Proxy {
        let socket = std::env::temp_dir().join(format!("{}.sock", unique_name("lp")));
        Proxy::start_at_env(
            &format!("unixgram://{}", socket.display()),
            Some(socket),
            journal_socket,
            extra,
            env,
        )
    }

    pub fn start_at(
        address: &str,
        socket: Option<PathBuf>,
        journal_socket: &std::path::Path,
        extra: &[&str],
    ) -> Proxy {
        Proxy::start_at_env(address, socket, journal_socket, extra, &[])
    }

    /// [`Proxy::start_at`] with extra environment (e.g. `RUST_LOG`).
    pub fn start_at_env(
        address: &str,
        socket: Option<PathBuf>,
        journal_socket: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Proxy {
        let metrics_port = testkit::free_port();
        let stderr_path = std::env::temp_dir().join(format!("{}.stderr", unique_name("lp")));
        let child = Command::new(env!("CARGO_BIN_EXE_log-proxy"))
            .arg("--syslog-address")
            .arg(address)
            .arg("--journal-socket")
            .arg(journal_socket)
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn log-proxy");
        let p = Proxy {
            child,
            socket: socket.clone().unwrap_or_default(),
            metrics_port,
            stderr_path,
        };
        // Ready = the listening socket exists and the metrics endpoint answers.
        wait_until(Duration::from_secs(20), "log-proxy to listen", || {
            let sock_ok = socket.as_ref().map(|s| s.exists()).unwrap_or(true);
            (sock_ok && p.try_metrics().is_some()).then_some(())
        });
        p
    }

    fn try_metrics(&self) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    }

    pub fn metrics(&self) -> String {
        self.try_metrics().expect("metrics endpoint answers")
    }

    /// A counter's value from /metrics.
    pub fn metric(&self, name: &str) -> u64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    pub fn send(&self, datagram: &[u8]) {
        let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
        s.send_to(datagram, &self.socket)
            .expect("send to log-proxy");
    }

    /// SIGTERM, then wait for exit; returns the exit code.
    pub fn terminate(&mut self) -> i32 {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        status.code().unwrap_or(-1)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// `docker run` a busybox container logging through `proxy` with Docker's syslog driver
/// (`format`: rfc5424micro, rfc3164...), `extra` flags before the image (labels...).
pub fn run_container_with(
    proxy: &Proxy,
    format: &str,
    name: &str,
    extra: &[&str],
    image: &str,
    script: &str,
) -> std::process::Child {
    Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--name", name])
        .args(["--log-driver", "syslog"])
        .arg("--log-opt")
        .arg(format!(
            "syslog-address=unixgram://{}",
            proxy.socket.display()
        ))
        .arg("--log-opt")
        .arg(format!("syslog-format={format}"))
        .args(["--log-opt", "tag={{.ID}}"])
        .args(extra)
        .args([image, "sh", "-c", script])
        .stdout(Stdio::null())
        .spawn()
        .expect("docker run")
}

pub fn run_container(proxy: &Proxy, format: &str, name: &str, script: &str) -> std::process::Child {
    run_container_with(proxy, format, name, &[], testkit::BUSYBOX_IMAGE, script)
}

pub fn n_dropped(e: &Entry) -> u64 {
    testkit::field(e, "N_DROPPED")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub const NOTICE_ID: &str = "5c0d9a8a3f1e4b6c9d2e7f10a1b2c3d4";
