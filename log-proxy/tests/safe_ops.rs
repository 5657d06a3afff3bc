//! Operator slips and host events that must never cut or lose logs uncounted: a second proxy
//! on the live socket, SIGHUP, journald killed under load, configuration errors, senders
//! that are not allowed, and the host self-check — against a real journald.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Proxy;
use testkit::{field, unique_name, wait_until, Journald};

const BIN: &str = env!("CARGO_BIN_EXE_log-proxy");
const NO_DOCKER: &[&str] = &["--docker-host", "unix:///nonexistent/docker.sock"];

fn line(tag: &str, msg: &str) -> Vec<u8> {
    format!("<30>1 2026-11-22T13:32:28.396128Z vm {tag} 1 {tag} - {msg}\n").into_bytes()
}

fn temp_socket() -> PathBuf {
    std::env::temp_dir().join(format!("{}.sock", unique_name("lps")))
}

/// Run log-proxy to completion with `args` (it is expected to exit at once).
fn run_to_exit(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run log-proxy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A configuration error: exit 2, exactly one line on stderr, saying `want`, no backtrace.
fn assert_config_error(args: &[&str], want: &str) {
    let (code, stderr) = run_to_exit(args);
    assert_eq!(
        code, 2,
        "log-proxy {args:?} should exit 2; stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "log-proxy {args:?}: one line expected, got:\n{stderr}"
    );
    assert!(
        lines[0].contains(want),
        "log-proxy {args:?}: {want:?} not in {stderr:?}"
    );
    assert!(
        !stderr.contains("backtrace") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// Lines of `tag` in the journal whose MESSAGE is one of ours (`line N`), by number.
fn journal_lines(jd: &Journald, tag: &str) -> Vec<u64> {
    jd.sync();
    let out = Command::new("journalctl")
        .arg(format!("--namespace={}", jd.namespace()))
        .args(["-o", "cat", "--output-fields=MESSAGE", "--no-pager"])
        .arg(format!("CONTAINER_TAG={tag}"))
        .output()
        .expect("journalctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("line ").and_then(|n| n.parse().ok()))
        .collect()
}

#[test]
fn a_second_proxy_on_a_served_socket_exits_2_and_the_first_keeps_serving() {
    let jd = Journald::start();
    let first = Proxy::start(jd.socket(), NO_DOCKER);
    let path = first.socket.display().to_string();
    let address = format!("unixgram://{path}");
    let journal = jd.socket().to_str().unwrap().to_string();
    let (code, stderr) = run_to_exit(&[
        "--syslog-address",
        &address,
        "--journal-socket",
        &journal,
        NO_DOCKER[0],
        NO_DOCKER[1],
    ]);
    assert_eq!(code, 2, "{stderr}");
    let want = format!(
        "log-proxy: {address} is being served by another process (pid {}); stop it first or \
         choose another --syslog-address",
        first.child.id()
    );
    assert_eq!(stderr.trim_end(), want);
    // The live socket is untouched: the first proxy still gets lines.
    assert!(
        first.socket.exists(),
        "the refused start removed the live socket"
    );
    first.send(&line("aaaaaaaaaaaa", "after the refused start"));
    let e = jd.wait_for_count(&["CONTAINER_TAG=aaaaaaaaaaaa"], 1, Duration::from_secs(20));
    assert_eq!(field(&e[0], "MESSAGE").unwrap(), "after the refused start");

    // Same for a stream socket.
    let stream_path = temp_socket();
    let stream_addr = format!("unix://{}", stream_path.display());
    let _stream = Proxy::start_at(
        &stream_addr,
        Some(stream_path.clone()),
        jd.socket(),
        NO_DOCKER,
    );
    let (code, stderr) = run_to_exit(&[
        "--syslog-address",
        &stream_addr,
        "--journal-socket",
        &journal,
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("is being served by another process (pid "),
        "{stderr}"
    );
    assert!(stream_path.exists());
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let jd = Journald::start();
    let path = temp_socket();
    // A socket file nobody serves: what a crashed proxy leaves behind.
    drop(std::os::unix::net::UnixDatagram::bind(&path).unwrap());
    assert!(path.exists());
    let proxy = Proxy::start_at(
        &format!("unixgram://{}", path.display()),
        Some(path.clone()),
        jd.socket(),
        NO_DOCKER,
    );
    proxy.send(&line("bbbbbbbbbbbb", "through the replaced socket"));
    jd.wait_for_count(&["CONTAINER_TAG=bbbbbbbbbbbb"], 1, Duration::from_secs(20));
    assert!(proxy.stderr().contains("replacing a stale socket file"));
}

#[test]
fn a_socket_someone_else_bound_meanwhile_is_not_removed_at_exit() {
    let jd = Journald::start();
    let mut proxy = Proxy::start(jd.socket(), NO_DOCKER);
    // An operator moves the proxy's file away and something else binds the path.
    let moved = proxy.socket.with_extension("moved");
    std::fs::rename(&proxy.socket, &moved).unwrap();
    let other = std::os::unix::net::UnixDatagram::bind(&proxy.socket).unwrap();
    assert_eq!(proxy.terminate(), 0);
    assert!(
        proxy.socket.exists(),
        "log-proxy removed a socket it did not create"
    );
    drop(other);
    let _ = std::fs::remove_file(&moved);
}

#[test]
fn configuration_errors_exit_2_on_one_line() {
    let jd = Journald::start();
    let journal = jd.socket().to_str().unwrap().to_string();
    let sock = temp_socket();
    let addr = format!("unixgram://{}", sock.display());
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["--syslog-address", &addr, "--journal-socket", &journal]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let check = |extra: &[&str], want: &str| {
        let args = base(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_config_error(&args, want);
    };
    assert_config_error(
        &[
            "--syslog-address",
            "unixgram:///nonexistent/dir/x.sock",
            "--journal-socket",
            &journal,
        ],
        "the directory /nonexistent/dir does not exist; create it",
    );
    assert!(
        !Path::new("/nonexistent/dir").exists(),
        "a directory was created"
    );
    // clap's own errors: exit 2 with the usage after the one-line error.
    for (extra, want) in [
        (
            &["--journal-buffer", "lots"][..],
            "is not a size like 64MiB",
        ),
        (
            &["--no-such-flag"][..],
            "unexpected argument '--no-such-flag'",
        ),
        (
            &["--allow-uid", "nosuchuser-xyz"][..],
            "neither a uid nor a known user name",
        ),
    ] {
        let args = base(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = run_to_exit(&args);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.lines().next().unwrap().contains(want), "{stderr}");
    }
    check(&["--interval", "0s"], "--interval must be longer than 0");
    // Fails after binding: what it bound is removed.
    check(
        &["--metrics-address", "not-an-address"],
        "--metrics-address \"not-an-address\" is not HOST:PORT",
    );
    assert!(!sock.exists(), "a failed start left its socket file behind");
    // A path that is not a socket is not deleted.
    std::fs::write(&sock, b"precious").unwrap();
    check(
        &[],
        "exists and is not a socket; remove it or choose another",
    );
    assert_eq!(std::fs::read(&sock).unwrap(), b"precious");
    std::fs::remove_file(&sock).unwrap();
}

/// Sends `line N` (N counting up) as fast as the proxy takes them, until stopped.
struct Sender {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sender {
    /// `per_second`: pace to this rate; `None`: full speed.
    fn start(socket: &Path, tag: &str, per_second: Option<u64>) -> Sender {
        let (stop, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, n, socket, tag) = (
            stop.clone(),
            sent.clone(),
            socket.to_path_buf(),
            tag.to_string(),
        );
        let handle = std::thread::spawn(move || {
            let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
            sock.connect(&socket).unwrap();
            let start = Instant::now();
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                if let Some(rate) = per_second {
                    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                // Blocking send: a full socket queue holds the sender, as it holds Docker.
                sock.send(&line(&tag, &format!("line {i}")))
                    .expect("send to log-proxy");
                i += 1;
                n.store(i, Ordering::Relaxed);
            }
        });
        Sender {
            stop,
            sent,
            handle: Some(handle),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        self.sent()
    }
}

/// Wait until everything received is accounted for: written, counted lost, or dropped.
fn wait_settled(proxy: &Proxy) {
    wait_until(
        Duration::from_secs(120),
        "log-proxy to write what it holds",
        || {
            let held = proxy.metric("log_proxy_buffer_bytes");
            (held == 0).then_some(())
        },
    );
}

#[test]
fn sighup_under_load_keeps_running_and_loses_no_line() {
    let jd = Journald::start();
    let mut proxy = Proxy::start(jd.socket(), &[NO_DOCKER[0], NO_DOCKER[1], "--burst", "0"]);
    let tag = "cccccccccccc";
    let sender = Sender::start(&proxy.socket, tag, Some(20_000));
    for _ in 0..5 {
        wait_until(Duration::from_secs(10), "lines to flow", || {
            (sender.sent() > 1000).then_some(())
        });
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(proxy.child.id() as i32, libc::SIGHUP) };
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            proxy.child.try_wait().unwrap().is_none(),
            "SIGHUP stopped log-proxy"
        );
    }
    let sent = sender.finish();
    wait_settled(&proxy);
    let got = wait_until(Duration::from_secs(60), "every line in journald", || {
        let got = journal_lines(&jd, tag);
        (got.len() as u64 >= sent).then_some(got)
    });
    assert_eq!(got.len() as u64, sent);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "lines reordered");
    assert!(proxy
        .stderr()
        .contains("reload requested; nothing to reload"));
    assert_eq!(proxy.terminate(), 0);
}

/// Entries a killed journald takes with it: its socket queue holds one datagram more than
/// `net.unix.max_dgram_qlen` (the kernel calls a queue full only when it holds *more* than
/// the limit), and one more may be read but not yet stored.
fn journald_own_loss() -> u64 {
    dgram_qlen() + 2
}

/// `net.unix.max_dgram_qlen`.
fn dgram_qlen() -> u64 {
    std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Kill journald (-9) for 3 s, `kills` times, under `sender`; returns (sent, in journal, lost).
fn outages(
    jd: &mut Journald,
    proxy: &Proxy,
    sender: Sender,
    tag: &str,
    kills: usize,
) -> (u64, u64, u64) {
    for _ in 0..kills {
        let before = sender.sent();
        wait_until(Duration::from_secs(20), "lines to flow", || {
            (sender.sent() > before + 1000).then_some(())
        });
        let retries = proxy.metric("log_proxy_journal_retries_total");
        jd.stop(); // SIGKILL
        wait_until(
            Duration::from_secs(10),
            "log-proxy to notice journald is gone",
            || (proxy.metric("log_proxy_journal_retries_total") > retries).then_some(()),
        );
        std::thread::sleep(Duration::from_secs(3)); // the outage itself
        jd.restart();
        wait_until(
            Duration::from_secs(60),
            "log-proxy to notice journald is back",
            || (proxy.metric("log_proxy_journal_up") == 1).then_some(()),
        );
    }
    let sent = sender.finish();
    wait_settled(proxy);
    let lost = proxy.metric("log_proxy_journal_lost_lines_total");
    // Settled: what journald has is final once the proxy holds nothing.
    let journal = wait_until(
        Duration::from_secs(60),
        "journald to store what it took",
        || {
            let a = journal_lines(jd, tag).len() as u64;
            std::thread::sleep(Duration::from_millis(500));
            let b = journal_lines(jd, tag).len() as u64;
            (a == b).then_some(b)
        },
    );
    (sent, journal, lost)
}

#[test]
fn journald_killed_under_full_speed_load_loses_only_what_its_own_queue_held() {
    let mut jd = Journald::start();
    // A small buffer, so the full-speed sender overflows it in every outage: the loss must
    // then be counted, line for line.
    let proxy = Proxy::start(
        jd.socket(),
        &[
            NO_DOCKER[0],
            NO_DOCKER[1],
            "--burst",
            "0",
            "--journal-buffer",
            "4MiB",
        ],
    );
    let tag = "dddddddddddd";
    let sender = Sender::start(&proxy.socket, tag, None);
    let kills = 3;
    let (sent, journal, lost) = outages(&mut jd, &proxy, sender, tag, kills);
    let missing = sent - journal - lost;
    eprintln!("sent {sent}, in journald {journal}, counted lost {lost}, unaccounted {missing}");
    assert!(
        journal + lost <= sent,
        "more lines than sent: {journal} + {lost} > {sent}"
    );
    assert!(
        missing <= kills as u64 * journald_own_loss(),
        "{missing} lines neither in journald nor counted lost; a killed journald takes at most \
         {} with it ({kills} kills)",
        journald_own_loss()
    );
    assert!(
        lost > 0,
        "the 4MiB buffer cannot hold 3 s at full speed; loss must show"
    );
    // And the loss is reported in the container's own log.
    let notices = jd.entries_matching(&[
        &format!("CONTAINER_TAG={tag}"),
        &format!("MESSAGE_ID={}", common::NOTICE_ID),
    ]);
    let reported: u64 = notices.iter().map(common::n_dropped).sum();
    assert_eq!(reported, lost, "lost lines reported in the container's log");
}

#[test]
fn a_3s_journald_outage_at_20000_lines_per_second_loses_nothing_with_the_default_buffer() {
    let mut jd = Journald::start();
    let proxy = Proxy::start(jd.socket(), &[NO_DOCKER[0], NO_DOCKER[1], "--burst", "0"]);
    let tag = "eeeeeeeeeeee";
    let sender = Sender::start(&proxy.socket, tag, Some(20_000));
    let (sent, journal, lost) = outages(&mut jd, &proxy, sender, tag, 1);
    assert_eq!(
        lost, 0,
        "the default 64MiB buffer holds a 3 s outage at 20,000 lines/s"
    );
    let missing = sent - journal;
    assert!(
        missing <= journald_own_loss(),
        "sent {sent}, journald has {journal}: {missing} missing, more than journald's own queue"
    );
}

#[test]
fn lines_from_a_uid_not_allowed_are_refused_counted_and_reported() {
    let jd = Journald::start();
    let proxy = Proxy::start(
        jd.socket(),
        &[NO_DOCKER[0], NO_DOCKER[1], "--socket-mode", "0666"],
    );
    let sock = proxy.socket.to_str().unwrap();
    let status = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args([
            "logger",
            "-d",
            "-u",
            sock,
            "-t",
            "ffffffffffff",
            "forged line",
        ])
        .status()
        .expect("setpriv and logger are missing: apt-get install -y util-linux bsdutils");
    assert!(status.success());
    // A root sender on the same socket still gets through.
    proxy.send(&line("ffffffffffff", "from root"));
    jd.wait_for_count(&["CONTAINER_TAG=ffffffffffff"], 1, Duration::from_secs(20));
    let report = jd.wait_for_count(
        &["SYSLOG_IDENTIFIER=log-proxy", "LOG_PROXY_REFUSED=1"],
        1,
        Duration::from_secs(20),
    );
    let text = field(&report[0], "MESSAGE").unwrap();
    assert!(text.contains("1 from uid 65534 (pid "), "{text}");
    assert_eq!(field(&report[0], "PRIORITY").unwrap(), "4");
    let all = jd.entries_matching(&["CONTAINER_TAG=ffffffffffff"]);
    assert!(
        all.iter()
            .all(|e| field(e, "MESSAGE").as_deref() != Some("forged line")),
        "a line from uid 65534 was written as a container line"
    );
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("log_proxy_untrusted_lines_total{uid=\"65534\"} 1"),
        "{metrics}"
    );

    // A stream connection's peer is checked the same way (SO_PEERCRED).
    let stream_path = temp_socket();
    let stream_addr = format!("unix://{}", stream_path.display());
    let stream = Proxy::start_at(
        &stream_addr,
        Some(stream_path.clone()),
        jd.socket(),
        &[NO_DOCKER[0], NO_DOCKER[1], "--socket-mode", "0666"],
    );
    let script = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); \
         s.sendall(b'<30>1 2026-11-22T13:32:28Z vm 999999999999 1 999999999999 - forged 1\\n<30>1 2026-11-22T13:32:28Z vm 999999999999 1 999999999999 - forged 2\\n')",
        stream_path.to_str().unwrap()
    );
    let status = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until(
        Duration::from_secs(20),
        "the stream lines to be refused",
        || {
            stream
                .metrics()
                .contains("log_proxy_untrusted_lines_total{uid=\"65534\"} 2")
                .then_some(())
        },
    );
    assert!(jd
        .entries_matching(&["CONTAINER_TAG=999999999999"])
        .is_empty());
}

#[test]
fn check_names_each_problem_of_a_wrongly_set_up_host() {
    let jd = Journald::start_with_config("Storage=volatile");
    let dir = std::env::temp_dir().join(unique_name("lpcheck"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("missing.sock");
    let addr = format!("unixgram://{}", sock.display());
    let run = |daemon_json: &Path| {
        let out = Command::new(BIN)
            .args([
                "--syslog-address",
                &addr,
                "--journal-socket",
                jd.socket().to_str().unwrap(),
            ])
            .args(["--docker-host", "unix:///nonexistent/docker.sock"])
            .args(["check", "--daemon-json", daemon_json.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(Path::new("/nonexistent/daemon.json"));
    assert_eq!(code, Some(1), "a FAIL exits 1:\n{out}");
    let has = |prefix: &str| out.lines().any(|l| l.starts_with(prefix));
    if dgram_qlen() < 512 {
        assert!(
            has(&format!("WARN net.unix.max_dgram_qlen: {}: ", dgram_qlen())),
            "{out}"
        );
    } else {
        assert!(has("OK   net.unix.max_dgram_qlen"), "{out}");
    }
    assert!(has("OK   journald socket: "), "{out}");
    assert!(
        has("WARN journald storage: Storage=volatile: the journal is in memory only"),
        "{out}"
    );
    assert!(
        has("WARN syslog socket: ") && out.contains("does not exist"),
        "{out}"
    );
    assert!(
        has("FAIL Docker daemon.json: /nonexistent/daemon.json: "),
        "{out}"
    );
    assert!(
        has("WARN Docker API: /nonexistent/docker.sock does not answer"),
        "{out}"
    );

    // A daemon.json without the tag: named; with everything right: OK and exit 0 (once
    // nothing else FAILs).
    let dj = dir.join("daemon.json");
    std::fs::write(
        &dj,
        format!(r#"{{"log-driver":"syslog","log-opts":{{"syslog-address":"{addr}"}}}}"#),
    )
    .unwrap();
    let (_, out) = run(&dj);
    assert!(
        out.contains("FAIL Docker daemon.json: ") && out.contains("tag is \"(unset)\""),
        "{out}"
    );
    std::fs::write(&dj, format!(r#"{{"log-driver":"syslog","log-opts":{{"syslog-address":"{addr}","tag":"{{{{.ID}}}}"}}}}"#)).unwrap();
    let (code, out) = run(&dj);
    assert!(out.contains("OK   Docker daemon.json: "), "{out}");
    assert_eq!(code, Some(0), "nothing FAILs:\n{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
