//! log-proxy against a real journald with hand-sent syslog: unknown containers, Docker down,
//! bad input, binary data, large lines, stream transports, journald outages, shutdown.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{n_dropped, Proxy, NOTICE_ID};
use testkit::{field, field_bytes, unique_name, wait_until, Journald};

const NO_DOCKER: &[&str] = &["--docker-host", "unix:///nonexistent/docker.sock"];

fn rfc5424(tag: &str, msg: &[u8]) -> Vec<u8> {
    let mut d = format!("<30>1 2026-11-22T13:32:28.396128Z vm {tag} 3076 {tag} - ").into_bytes();
    d.extend_from_slice(msg);
    d.push(b'\n');
    d
}

fn random_id() -> String {
    let n = unique_name("");
    let mut h: u64 = 1469598103934665603;
    for b in n.bytes() {
        h = (h ^ b as u64).wrapping_mul(1099511628211);
    }
    format!("{h:016x}")[..12].to_string()
}

#[test]
fn unknown_container_with_docker_down_still_arrives_with_tag_fields() {
    let jd = Journald::start();
    let proxy = Proxy::start(jd.socket(), NO_DOCKER);
    let id = random_id();
    for i in 0..10 {
        proxy.send(&rfc5424(&id, format!("line {i}").as_bytes()));
    }
    let e = jd.wait_for_count(
        &[&format!("CONTAINER_ID={id}")],
        10,
        Duration::from_secs(20),
    );
    for (i, e) in e.iter().enumerate() {
        assert_eq!(field(e, "MESSAGE").unwrap(), format!("line {i}"));
        assert_eq!(field(e, "CONTAINER_TAG").unwrap(), id);
        assert_eq!(field(e, "SYSLOG_IDENTIFIER").unwrap(), id);
        assert_eq!(field(e, "PRIORITY").unwrap(), "6");
    }
    assert!(proxy.metric("log_proxy_docker_lookup_failures_total") >= 1);
    assert!(proxy
        .stderr()
        .contains("forwarding without Docker metadata"));
}

#[test]
fn unknown_container_with_docker_running_still_arrives() {
    testkit::docker();
    let jd = Journald::start();
    let proxy = Proxy::start(jd.socket(), &[]);
    let id = random_id();
    proxy.send(&rfc5424(&id, b"from nowhere"));
    let e = jd.wait_for_count(
        &[&format!("CONTAINER_TAG={id}")],
        1,
        Duration::from_secs(20),
    );
    assert_eq!(field(&e[0], "MESSAGE").unwrap(), "from nowhere");
    wait_until(Duration::from_secs(10), "lookup failure counted", || {
        (proxy.metric("log_proxy_docker_lookup_failures_total") >= 1).then_some(())
    });
}

#[test]
fn bad_input_is_forwarded_as_text_and_counted_never_wedges() {
    let jd = Journald::start();
    let proxy = Proxy::start(jd.socket(), NO_DOCKER);
    let garbage: Vec<&[u8]> = vec![
        b"this is not syslog",
        b"",
        b"\x00\x01\x02\xff\xfe binary",
        b"<1999>1 bad pri",
    ];
    for g in &garbage {
        proxy.send(g);
    }
    // The biggest datagram the kernel lets a unix datagram sender send.
    let big = vec![b'z'; 200_000];
    proxy.send(&big);
    // Not Docker's forms, but syslog as journald reads it: untagged local lines.
    proxy.send(b"<999>1 bad pri");
    proxy.send(b"<30>1 truncated header");
    let id = random_id();
    proxy.send(&rfc5424(&id, b"still alive"));
    jd.wait_for_count(
        &[&format!("CONTAINER_TAG={id}")],
        1,
        Duration::from_secs(20),
    );
    let raw = jd.wait_for_count(
        &["SYSLOG_IDENTIFIER=log-proxy", "LOG_PROXY_UNPARSABLE=1"],
        5,
        Duration::from_secs(20),
    );
    let msgs: Vec<Vec<u8>> = raw
        .iter()
        .map(|e| field_bytes(e, "MESSAGE").unwrap_or_default())
        .collect();
    assert!(msgs.contains(&b"this is not syslog".to_vec()), "{msgs:?}");
    // As text: the NUL shown as U+FFFD, never written.
    let mut binary = "\u{FFFD}".as_bytes().to_vec();
    binary.extend_from_slice(b"\x01\x02\xff\xfe binary");
    assert!(msgs.contains(&binary), "{msgs:?}");
    assert!(msgs.contains(&b"<1999>1 bad pri".to_vec()));
    assert!(msgs.iter().any(|m| m.len() == 200_000));
    assert_eq!(proxy.metric("log_proxy_unparsable_lines_total"), 5);
    let local = jd.wait_for_count(&["MESSAGE=1 bad pri"], 1, Duration::from_secs(20));
    assert_eq!(field(&local[0], "PRIORITY").as_deref(), Some("7"));
    assert_eq!(field(&local[0], "SYSLOG_FACILITY").as_deref(), Some("124"));
    jd.wait_for_count(&["MESSAGE=1 truncated header"], 1, Duration::from_secs(20));
}

#[test]
fn messages_are_binary_safe_and_large_ones_arrive_whole() {
    let jd = Journald::start();
    let sock = std::env::temp_dir().join(format!("{}.sock", unique_name("lps")));
    let proxy = Proxy::start_at(
        &format!("unix://{}", sock.display()),
        Some(sock.clone()),
        jd.socket(),
        NO_DOCKER,
    );
    let id = random_id();
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    // Octet counting carries an embedded newline; invalid UTF-8 passes byte for byte.
    let m1 = rfc5424(&id, b"first\nsecond \xff\xfe\x00end");
    write!(s, "{} ", m1.len()).unwrap();
    s.write_all(&m1).unwrap();
    // 300 KB: more than one journald datagram where net.core.wmem_max is the kernel's default
    // (it then goes through a memfd; journal-native's tests force that path), one datagram here.
    let big: Vec<u8> = (0..300_000).map(|i| b'a' + (i % 26) as u8).collect();
    s.write_all(&rfc5424(&id, &big)).unwrap();
    s.write_all(&rfc5424(&id, b"plain newline framing"))
        .unwrap();
    drop(s);
    let e = jd.wait_for_count(
        &[&format!("CONTAINER_TAG={id}")],
        3,
        Duration::from_secs(20),
    );
    assert_eq!(
        field_bytes(&e[0], "MESSAGE").unwrap(),
        b"first\nsecond \xff\xfe\x00end"
    );
    assert_eq!(field_bytes(&e[1], "MESSAGE").unwrap(), big);
    assert_eq!(field(&e[2], "MESSAGE").unwrap(), "plain newline framing");
    drop(proxy);
}

#[test]
fn tcp_transport_with_both_framings() {
    let jd = Journald::start();
    let port = testkit::free_port();
    let proxy = Proxy::start_at(
        &format!("tcp://127.0.0.1:{port}"),
        None,
        jd.socket(),
        NO_DOCKER,
    );
    let id = random_id();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    for i in 0..100 {
        s.write_all(&rfc5424(&id, format!("tcp {i}").as_bytes()))
            .unwrap();
    }
    let framed = rfc5424(&id, b"counted");
    write!(s, "{} ", framed.len()).unwrap();
    s.write_all(&framed).unwrap();
    drop(s);
    let e = jd.wait_for_count(
        &[&format!("CONTAINER_TAG={id}")],
        101,
        Duration::from_secs(20),
    );
    assert_eq!(field(&e[99], "MESSAGE").unwrap(), "tcp 99");
    assert_eq!(field(&e[100], "MESSAGE").unwrap(), "counted");
    drop(proxy);
}

#[test]
fn a_container_that_goes_quiet_still_gets_its_last_drop_notice() {
    let jd = Journald::start();
    let proxy = Proxy::start(
        jd.socket(),
        &[
            "--burst",
            "10",
            "--interval",
            "1s",
            NO_DOCKER[0],
            NO_DOCKER[1],
        ],
    );
    let id = random_id();
    for i in 0..100 {
        proxy.send(&rfc5424(&id, format!("{i}").as_bytes()));
    }
    // Then silence: the last notice must come from the clock, not from a next line.
    let filter = format!("CONTAINER_TAG={id}");
    wait_until(
        Duration::from_secs(15),
        "drop notices to account for every line",
        || {
            let e = jd.entries_matching(&[&filter]);
            let lines = e
                .iter()
                .filter(|e| field(e, "MESSAGE_ID").is_none())
                .count() as u64;
            let dropped: u64 = e
                .iter()
                .filter(|e| field(e, "MESSAGE_ID").as_deref() == Some(NOTICE_ID))
                .map(n_dropped)
                .sum();
            (lines + dropped == 100).then_some(())
        },
    );
}

#[test]
fn errors_get_through_while_an_info_flood_is_cut() {
    let jd = Journald::start();
    let proxy = Proxy::start(
        jd.socket(),
        &[
            "--burst",
            "20",
            "--interval",
            "1m",
            NO_DOCKER[0],
            NO_DOCKER[1],
        ],
    );
    let id = random_id();
    for i in 0..500 {
        proxy.send(&rfc5424(&id, format!("info {i}").as_bytes()));
    }
    let err = format!("<27>1 2026-11-22T13:32:28Z vm {id} 1 {id} - the error that matters\n");
    proxy.send(err.as_bytes());
    let e = jd.wait_for_count(
        &[&format!("CONTAINER_TAG={id}"), "PRIORITY=3"],
        1,
        Duration::from_secs(20),
    );
    assert_eq!(field(&e[0], "MESSAGE").unwrap(), "the error that matters");
}

#[test]
fn journald_outage_holds_lines_and_delivers_them_when_back() {
    let mut jd = Journald::start();
    let proxy = Proxy::start(jd.socket(), NO_DOCKER);
    let id = random_id();
    proxy.send(&rfc5424(&id, b"before"));
    jd.wait_for_count(
        &[&format!("CONTAINER_TAG={id}")],
        1,
        Duration::from_secs(20),
    );
    jd.stop();
    for i in 0..200 {
        proxy.send(&rfc5424(&id, format!("during {i}").as_bytes()));
    }
    wait_until(
        Duration::from_secs(20),
        "the proxy to notice journald is gone",
        || (proxy.metric("log_proxy_journal_retries_total") > 0).then_some(()),
    );
    jd.restart();
    let e = jd.wait_for_count(
        &[&format!("CONTAINER_TAG={id}")],
        201,
        Duration::from_secs(30),
    );
    let msgs: Vec<String> = e.iter().map(|e| field(e, "MESSAGE").unwrap()).collect();
    for i in 0..200 {
        assert!(
            msgs.contains(&format!("during {i}")),
            "line {i} lost in the outage"
        );
    }
    assert_eq!(proxy.metric("log_proxy_journal_lost_lines_total"), 0);
}

#[test]
fn sigterm_drains_flushes_and_removes_the_socket() {
    let jd = Journald::start();
    let mut proxy = Proxy::start(
        jd.socket(),
        &[
            "--burst",
            "5",
            "--interval",
            "1h",
            NO_DOCKER[0],
            NO_DOCKER[1],
        ],
    );
    let id = random_id();
    for i in 0..50 {
        proxy.send(&rfc5424(&id, format!("{i}").as_bytes()));
    }
    // Wait until all 50 were received, then stop: the final drop notice must be written.
    wait_until(Duration::from_secs(10), "lines received", || {
        (proxy.metric("log_proxy_received_lines_total") >= 50).then_some(())
    });
    // The counters add up: every received line was forwarded or dropped, bytes likewise
    // (messages "0".."49": the 5 admitted are 1 byte each, the 45 dropped 5 + 40 * 2).
    wait_until(
        Duration::from_secs(10),
        "every line forwarded or dropped",
        || {
            (proxy.metric("log_proxy_forwarded_lines_total")
                + proxy.metric("log_proxy_dropped_lines_total")
                == 50)
                .then_some(())
        },
    );
    assert_eq!(proxy.metric("log_proxy_received_lines_total"), 50);
    assert_eq!(proxy.metric("log_proxy_forwarded_lines_total"), 5);
    assert_eq!(proxy.metric("log_proxy_forwarded_bytes_total"), 5);
    assert_eq!(proxy.metric("log_proxy_dropped_bytes_total"), 85);
    assert_eq!(
        proxy.terminate(),
        0,
        "exit code after SIGTERM; stderr:\n{}",
        proxy.stderr()
    );
    assert!(!proxy.socket.exists(), "socket file left behind");
    let e = jd.wait_for_count(
        &[&format!("CONTAINER_TAG={id}")],
        5,
        Duration::from_secs(10),
    );
    let lines = e
        .iter()
        .filter(|e| field(e, "MESSAGE_ID").is_none())
        .count() as u64;
    let dropped: u64 = e.iter().map(n_dropped).sum();
    assert_eq!(lines + dropped, 50, "{e:?}");
}

#[test]
fn lines_still_queued_in_its_own_socket_at_sigterm_are_delivered() {
    let jd = Journald::start();
    let mut proxy = Proxy::start(jd.socket(), NO_DOCKER);
    let id = random_id();
    let pid = proxy.child.id() as i32;
    // Frozen, log-proxy reads nothing: the lines wait in its socket's kernel queue (8 fit in
    // the smallest queue, net.unix.max_dgram_qlen = 10) when SIGTERM arrives.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    for i in 0..8 {
        proxy.send(&rfc5424(&id, format!("queued {i}").as_bytes()));
    }
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        libc::kill(pid, libc::SIGCONT);
    }
    let status = proxy.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proxy.stderr());
    let e = jd.wait_for_count(
        &[&format!("CONTAINER_TAG={id}")],
        8,
        Duration::from_secs(10),
    );
    let got: Vec<String> = e.iter().map(|e| field(e, "MESSAGE").unwrap()).collect();
    assert_eq!(
        got,
        (0..8).map(|i| format!("queued {i}")).collect::<Vec<_>>(),
        "closing its socket must not drop what the kernel had accepted"
    );
}

/// The same for stream connections still waiting in the listen queue at SIGTERM (never
/// accepted before the stop): their senders consider the lines sent.
#[test]
fn stream_connections_not_yet_accepted_at_sigterm_are_read() {
    let jd = Journald::start();
    let sock = std::env::temp_dir().join(format!("{}.sock", unique_name("lps")));
    let mut proxy = Proxy::start_at(
        &format!("unix://{}", sock.display()),
        Some(sock.clone()),
        jd.socket(),
        NO_DOCKER,
    );
    let id = random_id();
    let pid = proxy.child.id() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Frozen: the kernel completes these connections into the listen queue.
    for c in 0..3 {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        for i in 0..5 {
            s.write_all(&rfc5424(&id, format!("conn {c} line {i}").as_bytes()))
                .unwrap();
        }
    }
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        libc::kill(pid, libc::SIGCONT);
    }
    let status = proxy.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proxy.stderr());
    let e = jd.wait_for_count(
        &[&format!("CONTAINER_TAG={id}")],
        15,
        Duration::from_secs(10),
    );
    assert_eq!(e.len(), 15);
}

#[test]
fn an_outage_is_bridged_for_lines_that_arrive_one_at_a_time() {
    let mut jd = Journald::start();
    let proxy = Proxy::start(jd.socket(), NO_DOCKER);
    let id = random_id();
    proxy.send(&rfc5424(&id, b"before"));
    jd.wait_for_count(
        &[&format!("CONTAINER_TAG={id}")],
        1,
        Duration::from_secs(20),
    );
    jd.stop();
    // Each line received on its own before the next is sent, as from a quiet container: the
    // proxy must hold them all, not one small batch per line in a queue of 128 batches.
    for i in 0..300u64 {
        proxy.send(&rfc5424(&id, format!("during {i}").as_bytes()));
        wait_until(Duration::from_secs(10), "the line to be received", || {
            (proxy.metric("log_proxy_received_lines_total") > i + 1).then_some(())
        });
    }
    jd.restart();
    let e = jd.wait_for_count(
        &[&format!("CONTAINER_TAG={id}")],
        301,
        Duration::from_secs(30),
    );
    let msgs: Vec<String> = e.iter().map(|e| field(e, "MESSAGE").unwrap()).collect();
    for i in 0..300 {
        assert!(
            msgs.contains(&format!("during {i}")),
            "line {i} lost in the outage"
        );
    }
    assert_eq!(proxy.metric("log_proxy_journal_lost_lines_total"), 0);
}

#[test]
fn bad_flags_are_clear_errors() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_log-proxy"))
        .args(["--syslog-address", "http://nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported scheme"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_log-proxy"))
        .env("LOG_PROXY_BURST", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--burst"));
}

#[test]
fn sigterm_with_journald_gone_exits_and_reports_what_it_held() {
    let mut jd = Journald::start();
    let mut proxy = Proxy::start(jd.socket(), NO_DOCKER);
    let id = random_id();
    proxy.send(&rfc5424(&id, b"before"));
    jd.wait_for_count(
        &[&format!("CONTAINER_TAG={id}")],
        1,
        Duration::from_secs(20),
    );
    jd.stop();
    for i in 0..100 {
        proxy.send(&rfc5424(&id, format!("held {i}").as_bytes()));
    }
    wait_until(
        Duration::from_secs(20),
        "the proxy to notice journald is gone",
        || (proxy.metric("log_proxy_journal_retries_total") > 0).then_some(()),
    );
    // Never wedges: exits after the drain limit, and says how much it could not write.
    assert_eq!(proxy.terminate(), 0, "stderr:\n{}", proxy.stderr());
    let err = proxy.stderr();
    assert!(err.contains("log lines it was holding are lost"), "{err}");
    assert!(!err.contains("journald refused an entry"), "{err}");
}
