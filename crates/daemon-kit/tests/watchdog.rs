//! `notify_ready` against a real notification socket, as systemd sets it up (`NOTIFY_SOCKET`,
//! `WATCHDOG_USEC`): READY=1, then WATCHDOG=1 while every part beats, and none once a part
//! stalls — which is what makes systemd restart a wedged daemon — then STOPPING=1.
//!
//! One test in this file: it sets the process's environment before any other thread runs.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use daemon_kit::{Liveness, MIN_STALL};

/// The notifications that arrive within `within`.
fn received(sock: &UnixDatagram, within: Duration) -> Vec<String> {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }
    got
}

fn pings(messages: &[String]) -> usize {
    messages.iter().filter(|m| m.contains("WATCHDOG=1")).count()
}

#[test]
fn pings_while_every_part_beats_or_waits_and_stops_when_one_stalls() {
    let dir = std::env::temp_dir().join(format!("daemon-kit-watchdog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    // A 1 s watchdog: a ping every 0.5 s; a part stalls after MIN_STALL (5 s).
    std::env::set_var("NOTIFY_SOCKET", &path);
    std::env::set_var("WATCHDOG_USEC", "1000000");
    // systemd names the process the watchdog is for; without it sd_notify ignores the rest.
    std::env::set_var("WATCHDOG_PID", std::process::id().to_string());

    let liveness = Liveness::new();
    let worker = liveness.part("worker");
    let waiter = liveness.part("waiter");
    waiter.idle();
    let watchdog = daemon_kit::notify_ready(liveness);

    let first = received(&sock, Duration::from_millis(100));
    assert_eq!(
        first.first().map(|m| m.trim_end()),
        Some("READY=1"),
        "{first:?}"
    );

    // Beating for longer than the stall limit: pinged all along (the idle part never stalls).
    let beating_until = Instant::now() + MIN_STALL + Duration::from_secs(1);
    let mut while_beating = Vec::new();
    while Instant::now() < beating_until {
        worker.beat();
        while_beating.extend(received(&sock, Duration::from_millis(250)));
    }
    assert!(
        pings(&while_beating) >= 6,
        "expected a ping every 0.5 s while the worker beats, got {while_beating:?}"
    );

    // The worker stops: pings go on until it has been silent for MIN_STALL, then stop.
    let stalled = received(&sock, MIN_STALL + Duration::from_secs(1));
    assert!(pings(&stalled) >= 4, "pings before the stall: {stalled:?}");
    let after = received(&sock, Duration::from_secs(2));
    assert_eq!(
        pings(&after),
        0,
        "pinged while a part was stalled: {after:?}"
    );

    // It beats again: the pings come back.
    worker.beat();
    let back = received(&sock, Duration::from_millis(1200));
    assert!(pings(&back) >= 1, "no ping after the worker recovered");

    // Stopping: STOPPING=1, and no more judging (the loops wind down now; systemd no longer
    // watches), so no pings and no false "no progress" either.
    watchdog.stopping();
    let stopping = received(&sock, Duration::from_millis(1500));
    assert!(
        stopping.iter().any(|m| m.contains("STOPPING=1")),
        "{stopping:?}"
    );
    assert!(
        pings(&stopping) <= 1,
        "pinged after STOPPING=1: {stopping:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
