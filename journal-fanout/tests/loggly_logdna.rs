//! journald namespace → journal-fanout (`--dst loggly,logdna`) → local contract receivers that
//! check every request as Loggly's bulk API, LogDNA's ingest API and RFC 5424 over TLS document
//! them (tests/support/receivers.rs). Loggly and LogDNA themselves cannot be reached from here.

mod common;
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{container_line, write_entries, Fanout};
use support::receivers::{Api, Receiver, TestCa};
use testkit::{wait_until, Journald};

const WAIT: Duration = Duration::from_secs(120);

fn token(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), rand::random::<u32>())
}

/// Lines `n=000123 …` over 4 groups × 5 streams.
fn lines(
    prefix: &str,
    range: std::ops::Range<usize>,
) -> impl Iterator<Item = Vec<(String, String)>> + '_ {
    range.map(move |i| {
        container_line(
            &format!("{prefix}-svc-{}", i % 4),
            &format!("task:{}", i % 5),
            &format!("n={i:06} GET /items/{i} 200"),
        )
    })
}

/// A plain HTTP/1.0 GET (for /metrics).
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    write!(c, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    Some(out)
}

fn marker(m: &str) -> Option<usize> {
    m.strip_prefix("n=")?.get(..6)?.parse().ok()
}

fn distinct(rx: &Receiver) -> HashSet<usize> {
    rx.events()
        .iter()
        .filter_map(|e| marker(&e.message()))
        .collect()
}

/// Waits until `rx` holds every marker of `range` (at least once).
fn wait_all(rx: &Receiver, what: &str, range: std::ops::Range<usize>, f: &mut Fanout) {
    let want = range.len();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(WAIT, what, || {
            let got = distinct(rx);
            (range.clone().all(|i| got.contains(&i))).then_some(())
        })
    }));
    if let Err(e) = r {
        panic!(
            "{what}: {} of {want} events arrived ({e:?})\njournal-fanout stderr:\n{}",
            distinct(rx).len(),
            f.stderr_text()
        );
    }
}

struct Setup {
    j: Journald,
    state: tempfile::TempDir,
    loggly_token: String,
    logdna_key: String,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            j: Journald::start(),
            state: tempfile::tempdir().unwrap(),
            loggly_token: token("lg"),
            logdna_key: token("dna"),
        }
    }

    fn fanout(&self, extra: &[&str], env: &[(&str, String)]) -> Fanout {
        self.fanout_to("loggly,logdna", extra, env)
    }

    fn fanout_to(&self, dst: &str, extra: &[&str], env: &[(&str, String)]) -> Fanout {
        let mut args = vec![
            "--journal-namespace",
            self.j.namespace(),
            "--dst",
            dst,
            "--from",
            "head",
            "--state-dir",
            self.state.path().to_str().unwrap(),
            "--flush-timeout",
            "300ms",
            "--hostname",
            "fanout-e2e",
        ];
        args.extend_from_slice(extra);
        Fanout::start(&args, env)
    }

    /// Loggly's token in the environment, LogDNA's key in a file (`LOGDNA_TOKEN_FILE`).
    fn http_env(&self, lg: &Receiver, dna: &Receiver) -> Vec<(&'static str, String)> {
        let key_file = self.state.path().join("logdna.key");
        std::fs::write(&key_file, format!("{}\n", self.logdna_key)).unwrap();
        vec![
            ("LOGGLY_TOKEN", self.loggly_token.clone()),
            ("LOGGLY_URL", lg.url()),
            ("LOGGLY_TAGS", "env:e2e".into()),
            ("LOGDNA_TOKEN_FILE", key_file.to_str().unwrap().to_string()),
            ("LOGDNA_URL", dna.url()),
        ]
    }

    fn receivers(&self) -> (Receiver, Receiver) {
        (
            Receiver::start(Api::LogglyBulk {
                token: self.loggly_token.clone(),
            }),
            Receiver::start(Api::LogdnaIngest {
                key: self.logdna_key.clone(),
            }),
        )
    }

    /// No token anywhere in what the program printed.
    fn assert_no_token(&self, f: &Fanout) {
        let text = f.stderr_text() + &f.stdout_lines().join("\n");
        for t in [&self.loggly_token, &self.logdna_key] {
            assert!(
                !text.contains(t.as_str()),
                "a token appears in journal-fanout's output:\n{text}"
            );
        }
    }
}

#[test]
fn twenty_thousand_lines_reach_loggly_and_logdna_as_their_apis_expect() {
    let s = Setup::new();
    let (lg, dna) = s.receivers();
    let prefix = testkit::unique_name("e2e");
    write_entries(s.j.socket(), lines(&prefix, 0..20_000));
    let metrics = format!("127.0.0.1:{}", testkit::free_port());
    let mut f = s.fanout(&["--metrics-address", &metrics], &s.http_env(&lg, &dna));
    wait_all(&lg, "loggly", 0..20_000, &mut f);
    wait_all(&dna, "logdna", 0..20_000, &mut f);
    let text = wait_until(WAIT, "metrics with both destinations done", || {
        let t = http_get(&metrics, "/metrics")?;
        let done = ["loggly", "logdna"].iter().all(|d| {
            t.contains(&format!(
                "journal_fanout_events_delivered_total{{destination=\"{d}\"}} 20000"
            ))
        });
        done.then_some(t)
    });
    for t in [&s.loggly_token, &s.logdna_key] {
        assert!(!text.contains(t.as_str()), "token in the metrics");
    }
    assert!(f.terminate().success(), "{}", f.stderr_text());
    lg.assert_no_violations();
    dna.assert_no_violations();
    assert_eq!(lg.event_count(), 20_000, "loggly got duplicates");
    assert_eq!(dna.event_count(), 20_000, "logdna got duplicates");
    for e in lg.events() {
        let i = marker(&e.message()).unwrap();
        let want = vec![
            format!("{prefix}-svc-{}", i % 4),
            format!("task_{}", i % 5),
            "env_e2e".into(),
        ];
        assert_eq!(e.tags, want, "loggly tags of n={i}");
        assert_eq!(e.body["level"], "INFO");
    }
    for e in dna.events() {
        let i = marker(&e.message()).unwrap();
        assert_eq!(e.host, "fanout-e2e");
        assert_eq!(e.app, format!("{prefix}-svc-{}", i % 4));
        // The pipeline makes stream names valid for CloudWatch (`:` becomes `/`) for every
        // destination.
        assert_eq!(e.body["meta"]["stream"], format!("task/{}", i % 5));
        assert_eq!(e.body["level"], "INFO");
    }
    s.assert_no_token(&f);
}

/// Loggly answers 429 (with Retry-After) then 500 for 30 s: everything arrives afterwards, and
/// LogDNA got all of it while Loggly was still refusing.
#[test]
fn loggly_throttled_for_30s_recovers_and_logdna_is_not_held_back() {
    let s = Setup::new();
    let (lg, dna) = s.receivers();
    lg.set(|b| {
        b.fail_with = Some(429);
        b.retry_after = Some(2);
    });
    let outage_start = Instant::now();
    let prefix = testkit::unique_name("thr");
    let mut f = s.fanout(&[], &s.http_env(&lg, &dna));
    write_entries(s.j.socket(), lines(&prefix, 0..5_000));
    wait_all(&dna, "logdna during the loggly outage", 0..5_000, &mut f);
    assert_eq!(lg.event_count(), 0, "loggly accepted while refusing");
    // The outage lasts 30 s (the scenario, not a readiness wait): 429s, then 500s.
    let half = outage_start + Duration::from_secs(15);
    let end = outage_start + Duration::from_secs(30);
    while Instant::now() < end {
        assert!(f.is_running(), "journal-fanout died: {}", f.stderr_text());
        if Instant::now() > half {
            lg.set(|b| {
                b.fail_with = Some(500);
                b.retry_after = None;
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(lg.state().failed >= 3, "loggly was not retried");
    lg.set(|b| b.fail_with = None);
    wait_all(&lg, "loggly after recovery", 0..5_000, &mut f);
    assert!(f.terminate().success());
    lg.assert_no_violations();
    dna.assert_no_violations();
    let err = f.stderr_text();
    assert!(
        err.contains("HTTP 429") && err.contains("HTTP 500"),
        "retries not reported:\n{err}"
    );
    s.assert_no_token(&f);
}

/// Receivers go away, journal-fanout is killed (-9) and restarted while they are away, then
/// they come back: every line arrives (at least once, no gaps).
#[test]
fn receivers_down_fanout_killed_and_restarted_everything_arrives() {
    let s = Setup::new();
    let (lg, dna) = s.receivers();
    let prefix = testkit::unique_name("down");
    let env = s.http_env(&lg, &dna);
    let mut f = s.fanout(&[], &env);
    write_entries(s.j.socket(), lines(&prefix, 0..2_000));
    wait_all(&lg, "loggly before the outage", 0..2_000, &mut f);
    wait_all(&dna, "logdna before the outage", 0..2_000, &mut f);
    lg.stop();
    dna.stop();
    write_entries(s.j.socket(), lines(&prefix, 2_000..5_000));
    wait_until(WAIT, "retries against the closed ports", || {
        let e = f.stderr_text();
        (e.matches("unreachable").count() >= 4).then_some(())
    });
    f.kill9();
    write_entries(s.j.socket(), lines(&prefix, 5_000..6_000));
    let mut f = s.fanout(&[], &env);
    wait_until(WAIT, "the restarted fanout retrying", || {
        f.stderr_text().contains("unreachable").then_some(())
    });
    lg.resume();
    dna.resume();
    wait_all(&lg, "loggly after the outage", 0..6_000, &mut f);
    wait_all(&dna, "logdna after the outage", 0..6_000, &mut f);
    assert!(f.terminate().success());
    lg.assert_no_violations();
    dna.assert_no_violations();
    s.assert_no_token(&f);
}

/// One poisoned line answered 400: all the others arrive, and each destination gets exactly one
/// notice naming the loss in the poisoned line's group and stream.
#[test]
fn a_poisoned_line_is_isolated_and_noticed() {
    let s = Setup::new();
    let (lg, dna) = s.receivers();
    for rx in [&lg, &dna] {
        rx.set(|b| b.poison = Some("POISON".into()));
    }
    let prefix = testkit::unique_name("poison");
    let mut entries: Vec<_> = lines(&prefix, 0..2_000).collect();
    entries[777] = container_line(&format!("{prefix}-svc-1"), "task:2", "n=000777 POISON");
    write_entries(s.j.socket(), entries);
    let mut f = s.fanout(&[], &s.http_env(&lg, &dna));
    for (rx, name) in [(&lg, "loggly"), (&dna, "logdna")] {
        wait_until(WAIT, &format!("{name}: 1,999 lines and a notice"), || {
            let ev = rx.events();
            let notices = ev
                .iter()
                .filter(|e| e.message().starts_with("journal-fanout:"))
                .count();
            (notices >= 1 && distinct(rx).len() >= 1_999).then_some(())
        });
    }
    assert!(f.terminate().success());
    for (rx, name) in [(&lg, "loggly"), (&dna, "logdna")] {
        rx.assert_no_violations();
        let ev = rx.events();
        let notices: Vec<_> = ev
            .iter()
            .filter(|e| e.message().starts_with("journal-fanout:"))
            .collect();
        assert_eq!(notices.len(), 1, "{name}: exactly one notice");
        let text = notices[0].message();
        assert!(
            text.starts_with("journal-fanout: 1 events")
                && text.contains(&format!("could not be delivered to {name} between"))
                && text.contains("HTTP 400"),
            "{name} notice: {text}"
        );
        if name == "loggly" {
            assert_eq!(
                notices[0].tags[..2],
                [format!("{prefix}-svc-1"), "task_2".to_string()]
            );
        } else {
            assert_eq!(notices[0].app, format!("{prefix}-svc-1"));
            assert_eq!(notices[0].body["meta"]["stream"], "task/2");
        }
        let got = distinct(rx);
        for i in (0..2_000).filter(|&i| i != 777) {
            assert!(got.contains(&i), "{name}: n={i} missing");
        }
        assert!(!ev.iter().any(|e| e.message().contains("POISON")));
    }
    let err = f.stderr_text();
    assert!(
        err.contains("refused"),
        "the loss is not in the log:\n{err}"
    );
    s.assert_no_token(&f);
}

/// Loggly over HTTPS and LogDNA over syslog-TLS, both with a certificate from a private CA: refused
/// without --ca-file (nothing sent, the error says what to do), accepted with it.
#[test]
fn untrusted_certificate_is_refused_and_accepted_with_ca_file() {
    let s = Setup::new();
    let ca = TestCa::new();
    let lg = Receiver::start_with(
        Api::LogglyBulk {
            token: s.loggly_token.clone(),
        },
        Some(ca.server_config()),
    );
    let dna = Receiver::start_with(
        Api::LogdnaSyslog {
            key: s.logdna_key.clone(),
        },
        Some(ca.server_config()),
    );
    let env = vec![
        ("LOGGLY_TOKEN", s.loggly_token.clone()),
        ("LOGGLY_URL", lg.url()),
        ("LOGDNA_TOKEN", s.logdna_key.clone()),
        ("LOGDNA_URL", format!("tls://localhost:{}", dna.port())),
    ];
    let prefix = testkit::unique_name("tls");
    write_entries(s.j.socket(), lines(&prefix, 0..1_000));

    // Without --ca-file each destination refuses its server and stops journal-fanout.
    for (dst, rx) in [("loggly", &lg), ("logdna", &dna)] {
        let mut f = s.fanout_to(dst, &[], &env);
        let status = wait_until(
            WAIT,
            "journal-fanout to stop on the untrusted certificate",
            || f.child.try_wait().unwrap(),
        );
        let err = f.stderr_text();
        assert!(!status.success(), "{dst}: {err}");
        assert!(
            err.contains("not trusted") && err.contains("--ca-file"),
            "{dst}: {err}"
        );
        assert_eq!(
            rx.event_count(),
            0,
            "{dst}: data sent to an untrusted server"
        );
        assert!(
            rx.state().handshake_errors >= 1,
            "{dst}: no TLS handshake was tried"
        );
        s.assert_no_token(&f);
    }

    let ca_file = ca.write_ca(s.state.path());
    let mut f = s.fanout(&["--ca-file", ca_file.to_str().unwrap()], &env);
    wait_all(&lg, "loggly over https with --ca-file", 0..1_000, &mut f);
    wait_all(&dna, "logdna over tls with --ca-file", 0..1_000, &mut f);
    assert!(f.terminate().success());
    lg.assert_no_violations();
    dna.assert_no_violations();
    s.assert_no_token(&f);
}

#[test]
fn missing_token_is_a_startup_error_naming_the_variable() {
    let s = Setup::new();
    let mut f = s.fanout(&[], &[("LOGGLY_URL", "http://127.0.0.1:9".into())]);
    let status = wait_until(WAIT, "journal-fanout to exit", || {
        f.child.try_wait().unwrap()
    });
    assert!(!status.success());
    assert!(
        f.stderr_text().contains("LOGGLY_TOKEN"),
        "{}",
        f.stderr_text()
    );
}
