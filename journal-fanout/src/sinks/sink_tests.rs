//! The Loggly and LogDNA sinks driven through `Sink::deliver` against the contract receivers
//! (journal-fanout/tests/support/receivers.rs): wire format, limits, retries, isolation of
//! refused events, TLS verification and token hygiene.

#[path = "../../tests/support/receivers.rs"]
mod receivers;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use ecs_event::{Event, Level};
use receivers::{until, Api, Receiver, TestCa};
use serde_json::json;

use super::isolate::CONCURRENT_KEYS;
use super::logdna::{Logdna, LogdnaConfig};
use super::loggly::{Loggly, LogglyConfig};
use super::tls::TlsOptions;
use super::{Outcome, Record, Sink};
use crate::metrics::Destination;

const WAIT: Duration = Duration::from_secs(120);
const GROUPS: [&str; 4] = ["svc/api", "svc-worker", "svc.cron", "_internal"];
const STREAMS: usize = 5;

/// Everything the sinks log during a test, to look for tokens in.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures this thread's tracing output (tests run on a current-thread runtime).
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let l = logs.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || l.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(sub))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn assert_clean(&self, token: &str) {
        let t = self.text();
        assert!(!t.contains(token), "the token appears in the logs:\n{t}");
    }
}

fn token(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), rand::random::<u32>())
}

/// `n` events across GROUPS x STREAMS, marked `n=000123`; some multi-line, all with data.
fn records(n: usize) -> Vec<Arc<Record>> {
    plain_records(n).into_iter().map(Arc::new).collect()
}

fn plain_records(n: usize) -> Vec<Record> {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap();
    (0..n)
        .map(|i| {
            let group = GROUPS[i % GROUPS.len()];
            let stream = format!("task:{}", i % STREAMS);
            let msg = if i % 7 == 0 {
                format!("n={i:06} panic: boom\n\tat main.rs:1\n\tat lib.rs:2")
            } else {
                format!("n={i:06} GET /health 200")
            };
            let mut e = Event::new(
                Level::from_priority((i % 8) as u8),
                t0 + chrono::Duration::milliseconds(i as i64),
                msg,
            );
            e.info.host = "vm1".into();
            e.info.pid = 100 + (i % 3) as i64;
            e.data.insert("n".into(), json!(i));
            e.data.insert("path".into(), json!("/health"));
            Record {
                group: group.into(),
                stream,
                event: e,
            }
        })
        .collect()
}

fn marker(msg: &str) -> Option<usize> {
    let i = msg.find("n=")?;
    msg.get(i + 2..i + 8)?.parse().ok()
}

async fn deliver_all(sink: &mut impl Sink, recs: &[Arc<Record>], batch: usize) -> Outcome {
    let mut all = Outcome::default();
    for chunk in recs.chunks(batch) {
        let o = sink.deliver(chunk.to_vec()).await.expect("deliver");
        all.rejected.extend(o.rejected);
    }
    all
}

fn loggly(env: &[(&str, String)], tls: &TlsOptions) -> Loggly {
    loggly_counted(env, tls, Arc::new(Destination::new("loggly")))
}

fn loggly_counted(env: &[(&str, String)], tls: &TlsOptions, m: Arc<Destination>) -> Loggly {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let cfg = LogglyConfig::from_env(&|k: &str| env.get(k).cloned()).expect("loggly config");
    Loggly::new(cfg, tls, "fanout-host", m).expect("loggly sink")
}

fn logdna(env: &[(&str, String)], tls: &TlsOptions) -> Logdna {
    logdna_counted(env, tls, Arc::new(Destination::new("logdna")))
}

fn logdna_counted(env: &[(&str, String)], tls: &TlsOptions, m: Arc<Destination>) -> Logdna {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let cfg = LogdnaConfig::from_env(&|k: &str| env.get(k).cloned()).expect("logdna config");
    Logdna::new(cfg, tls, "fanout-host", m).expect("logdna sink")
}

/// Every marker 0..n arrived exactly `once` (or at least once).
fn assert_all_markers(msgs: impl Iterator<Item = String>, n: usize, exactly_once: bool) {
    let mut seen = vec![0usize; n];
    for m in msgs {
        if let Some(i) = marker(&m) {
            seen[i] += 1;
        }
    }
    let missing: Vec<usize> = (0..n).filter(|&i| seen[i] == 0).collect();
    assert!(
        missing.is_empty(),
        "{} events missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    if exactly_once {
        let dup: Vec<usize> = (0..n).filter(|&i| seen[i] > 1).collect();
        assert!(
            dup.is_empty(),
            "{} events duplicated, first {:?}",
            dup.len(),
            &dup[..dup.len().min(10)]
        );
    }
}

#[tokio::test]
async fn loggly_bulk_20000_events_arrive_as_the_api_expects() {
    let (logs, _g) = Logs::capture();
    let tok = token("lg");
    let rx = Receiver::start(Api::LogglyBulk { token: tok.clone() });
    let mut sink = loggly(
        &[
            ("LOGGLY_TOKEN", tok.clone()),
            ("LOGGLY_URL", rx.url()),
            ("LOGGLY_TAGS", "env:prod, team".into()),
        ],
        &TlsOptions::default(),
    );
    let mut recs = records(20_000);
    // One event far over Loggly's 1 MB per-event limit: truncated with a marker, not dropped.
    Arc::make_mut(&mut recs[5]).event.message = format!("n=000005 {}", "x".repeat(1_500_000));
    let out = deliver_all(&mut sink, &recs, 2_000).await;
    assert!(out.rejected.is_empty());
    rx.assert_no_violations();
    let events = rx.events();
    assert_eq!(events.len(), 20_000);
    assert_all_markers(events.iter().map(|e| e.message()), 20_000, true);
    for e in &events {
        let i = marker(&e.message()).unwrap();
        let want_group = super::loggly::tag(&recs[i].group).unwrap();
        let want_stream = super::loggly::tag(&recs[i].stream).unwrap();
        assert_eq!(
            e.tags,
            vec![want_group, want_stream, "env_prod".into(), "team".into()],
            "tags of event {i}"
        );
        let back: Event = serde_json::from_value(e.body.clone()).expect("line is the event JSON");
        if i == 5 {
            assert!(
                back.message.contains("[journal-fanout: truncated"),
                "no truncation marker"
            );
            assert!(back.message.len() < 1_000_000);
        } else {
            assert_eq!(back, recs[i].event, "event {i} changed on the way");
        }
    }
    // Tags of group "svc/api" are made valid, "_internal" loses its leading underscore.
    assert!(events.iter().any(|e| e.tags[0] == "svc_api"));
    assert!(events.iter().any(|e| e.tags[0] == "internal"));
    // Tag sets go in parallel: at most one kept connection per request in flight.
    assert_connections_kept(&rx, CONCURRENT_KEYS);
    logs.assert_clean(&tok);
}

/// Every request went over one kept-alive connection: an answer dropped unread closes it, and
/// each request then pays a new TCP (and, against the real service, TLS) handshake.
fn assert_one_connection(rx: &Receiver) {
    assert_connections_kept(rx, 1);
}

/// Requests went over at most `most` kept-alive connections (one per request in flight).
fn assert_connections_kept(rx: &Receiver, most: usize) {
    let st = rx.state();
    assert!(st.requests > most, "only {} requests", st.requests);
    assert!(
        st.connections <= most,
        "{} requests took {} connections (at most {most} in flight): the client does not keep its connections",
        st.requests,
        st.connections
    );
}

/// A host runs hundreds of containers, and Loggly's bulk tags hold per request, so a batch
/// is one request per container. Those go several at a time (each tag set's in order), not
/// one round trip after the other; an outage meanwhile is reported once per retry, not once
/// per request in flight; nothing is lost or doubled.
#[tokio::test]
async fn loggly_tag_sets_go_in_parallel_each_in_order() {
    let (logs, _g) = Logs::capture();
    let tok = token("lg");
    let rx = Receiver::start(Api::LogglyBulk { token: tok.clone() });
    // A distant service: every answer takes 50 ms.
    rx.set(|b| b.delay = Some(Duration::from_millis(50)));
    let mut sink = loggly(
        &[("LOGGLY_TOKEN", tok.clone()), ("LOGGLY_URL", rx.url())],
        &TlsOptions::default(),
    );
    // 40 containers (tag sets), 1,000 events in one batch.
    let recs: Vec<Arc<Record>> = plain_records(1_000)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.group = "svc".into();
            r.stream = format!("task-{}", i % 40);
            Arc::new(r)
        })
        .collect();
    assert!(sink
        .deliver(recs.clone())
        .await
        .unwrap()
        .rejected
        .is_empty());
    {
        let st = rx.state();
        assert_eq!(st.requests, 40, "one request per tag set");
        assert!(
            st.max_in_flight > 1 && st.max_in_flight <= CONCURRENT_KEYS,
            "{} requests in flight at most (expected 2..={CONCURRENT_KEYS})",
            st.max_in_flight
        );
    }
    assert_connections_kept(&rx, CONCURRENT_KEYS);

    // The same again through an outage: every request in flight is refused for a while.
    rx.set(|b| b.fail_with = Some(503));
    let again = async {
        let mut later = recs.clone();
        for (i, r) in later.iter_mut().enumerate() {
            let r = Arc::make_mut(r);
            r.event.message = format!("n={:06}{}", 1_000 + i, &r.event.message[8..]);
        }
        sink.deliver(later).await.unwrap()
    };
    let heal = async {
        until(WAIT, "the requests in flight refused three times", || {
            (rx.state().failed >= 3 * CONCURRENT_KEYS).then_some(())
        })
        .await;
        rx.set(|b| b.fail_with = None);
    };
    let (out, ()) = tokio::join!(again, heal);
    assert!(out.rejected.is_empty());
    rx.assert_no_violations();
    // Each tag set's events arrive in journal order; every event exactly once.
    let events = rx.events();
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for e in &events {
        let n = marker(&e.message()).unwrap();
        let stream = e.tags[1].clone();
        if let Some(&before) = last.get(&stream) {
            assert!(n > before, "{stream}: event {n} arrived after {before}");
        }
        last.insert(stream, n);
    }
    assert_eq!(events.len(), 2_000);
    let text = logs.text();
    let warnings = text.matches("retrying in").count();
    let failed = rx.state().failed;
    assert!(
        warnings >= 1 && warnings * 4 <= failed,
        "{warnings} retry warnings for {failed} refused requests: concurrent requests each warned"
    );
    assert!(
        text.contains("accepts again"),
        "recovery not logged:\n{text}"
    );
    logs.assert_clean(&tok);
}

#[tokio::test]
async fn logdna_ingest_20000_events_arrive_as_the_api_expects() {
    let (logs, _g) = Logs::capture();
    let key = token("dna");
    let rx = Receiver::start(Api::LogdnaIngest { key: key.clone() });
    let mut sink = logdna(
        &[("LOGDNA_TOKEN", key.clone()), ("LOGDNA_URL", rx.url())],
        &TlsOptions::default(),
    );
    let recs = records(20_000);
    let out = deliver_all(&mut sink, &recs, 2_000).await;
    assert!(out.rejected.is_empty());
    rx.assert_no_violations();
    let events = rx.events();
    assert_eq!(events.len(), 20_000);
    assert_all_markers(events.iter().map(|e| e.message()), 20_000, true);
    for e in &events {
        let i = marker(&e.message()).unwrap();
        let r = &recs[i];
        assert_eq!(e.host, "fanout-host");
        assert_eq!(e.app, r.group);
        assert_eq!(e.body["line"], r.event.message);
        assert_eq!(e.body["timestamp"], r.event.time.timestamp_millis());
        assert_eq!(e.body["level"], r.event.level.as_str());
        assert_eq!(e.body["meta"]["stream"], r.stream);
        assert_eq!(e.body["meta"]["data"]["n"], i);
        assert_eq!(e.body["meta"]["info"]["pid"], r.event.info.pid);
    }
    assert_one_connection(&rx);
    logs.assert_clean(&key);
}

/// One destination answering 429 then 500 for a while neither loses events nor holds up the
/// other: the healthy one completes while the failing one is still refused.
#[tokio::test]
async fn throttled_loggly_recovers_and_does_not_slow_logdna() {
    let (logs, _g) = Logs::capture();
    let (tok, key) = (token("lg"), token("dna"));
    let lg_rx = Receiver::start(Api::LogglyBulk { token: tok.clone() });
    let dna_rx = Receiver::start(Api::LogdnaIngest { key: key.clone() });
    lg_rx.set(|b| {
        b.fail_with = Some(429);
        b.retry_after = Some(1);
    });
    let mut lg = loggly(
        &[("LOGGLY_TOKEN", tok.clone()), ("LOGGLY_URL", lg_rx.url())],
        &TlsOptions::default(),
    );
    let mut dna = logdna(
        &[("LOGDNA_TOKEN", key.clone()), ("LOGDNA_URL", dna_rx.url())],
        &TlsOptions::default(),
    );
    let recs = records(5_000);
    let lg_recs = recs.clone();
    let lg_task = async {
        deliver_all(&mut lg, &lg_recs, 1_000).await;
    };
    let dna_task = async {
        deliver_all(&mut dna, &recs, 1_000).await;
        // LogDNA is done while Loggly is still being refused.
        assert_eq!(dna_rx.event_count(), 5_000);
        assert_eq!(
            lg_rx.event_count(),
            0,
            "loggly accepted while it was failing"
        );
        until(WAIT, "a few refused loggly attempts", || {
            (lg_rx.state().failed >= 2).then_some(())
        })
        .await;
        lg_rx.set(|b| {
            b.fail_with = Some(500);
            b.retry_after = None;
        });
        let seen = lg_rx.state().failed;
        until(WAIT, "loggly retrying through 500s", || {
            (lg_rx.state().failed >= seen + 2).then_some(())
        })
        .await;
        lg_rx.set(|b| b.fail_with = None);
    };
    tokio::join!(lg_task, dna_task);
    lg_rx.assert_no_violations();
    dna_rx.assert_no_violations();
    assert_all_markers(lg_rx.events().iter().map(|e| e.message()), 5_000, true);
    let text = logs.text();
    assert!(
        text.contains("HTTP 429") && text.contains("HTTP 500"),
        "retries not logged:\n{text}"
    );
    logs.assert_clean(&tok);
    logs.assert_clean(&key);
}

#[tokio::test]
async fn throttled_logdna_recovers_and_does_not_slow_loggly() {
    let (logs, _g) = Logs::capture();
    let (tok, key) = (token("lg"), token("dna"));
    let lg_rx = Receiver::start(Api::LogglyBulk { token: tok.clone() });
    let dna_rx = Receiver::start(Api::LogdnaIngest { key: key.clone() });
    dna_rx.set(|b| b.fail_with = Some(503));
    let mut lg = loggly(
        &[("LOGGLY_TOKEN", tok.clone()), ("LOGGLY_URL", lg_rx.url())],
        &TlsOptions::default(),
    );
    let mut dna = logdna(
        &[("LOGDNA_TOKEN", key.clone()), ("LOGDNA_URL", dna_rx.url())],
        &TlsOptions::default(),
    );
    let recs = records(5_000);
    let dna_recs = recs.clone();
    let dna_task = async {
        deliver_all(&mut dna, &dna_recs, 1_000).await;
    };
    let lg_task = async {
        deliver_all(&mut lg, &recs, 1_000).await;
        assert_eq!(lg_rx.event_count(), 5_000);
        assert_eq!(dna_rx.event_count(), 0);
        until(WAIT, "refused logdna attempts", || {
            (dna_rx.state().failed >= 3).then_some(())
        })
        .await;
        dna_rx.set(|b| b.fail_with = None);
    };
    tokio::join!(lg_task, dna_task);
    dna_rx.assert_no_violations();
    assert_all_markers(dna_rx.events().iter().map(|e| e.message()), 5_000, true);
    logs.assert_clean(&key);
}

/// The receiver goes away (connections cut, then the port closed) and comes back: nothing lost.
#[tokio::test]
async fn receiver_away_and_back_loses_nothing() {
    let (logs, _g) = Logs::capture();
    let tok = token("lg");
    let rx = Receiver::start(Api::LogglyBulk { token: tok.clone() });
    let mut sink = loggly(
        &[("LOGGLY_TOKEN", tok.clone()), ("LOGGLY_URL", rx.url())],
        &TlsOptions::default(),
    );
    let recs = records(3_000);
    let send = async {
        deliver_all(&mut sink, &recs, 500).await;
    };
    let outage = async {
        until(WAIT, "first events", || {
            (rx.event_count() >= 500).then_some(())
        })
        .await;
        rx.set(|b| b.accept_and_drop = true);
        until(WAIT, "dropped connections", || {
            (rx.state().dropped >= 2).then_some(())
        })
        .await;
        rx.stop();
        let logs = logs.clone();
        until(WAIT, "retries against the closed port", || {
            (logs.text().matches("unreachable").count() >= 4).then_some(())
        })
        .await;
        rx.set(|b| b.accept_and_drop = false);
        rx.resume();
    };
    tokio::join!(send, outage);
    rx.assert_no_violations();
    assert_all_markers(rx.events().iter().map(|e| e.message()), 3_000, false);
    logs.assert_clean(&tok);
}

/// Through the pipeline's delivery loop (which counts the refused events and writes the
/// notice): all other events arrive and exactly one notice names the loss.
async fn poisoned_case(dest: &'static str) {
    let (logs, _g) = Logs::capture();
    let tok = token(dest);
    let recs = {
        let mut r = records(2_000);
        Arc::make_mut(&mut r[1234]).event.message = "n=001234 POISON here".into();
        r
    };
    let api = if dest == "loggly" {
        Api::LogglyBulk { token: tok.clone() }
    } else {
        Api::LogdnaIngest { key: tok.clone() }
    };
    let rx = Receiver::start(api);
    rx.set(|b| b.poison = Some("POISON".into()));
    let m = Arc::new(Destination::new(dest));
    let rejected_before = m.events_rejected.load(std::sync::atomic::Ordering::Relaxed);
    let (tx, batches) = tokio::sync::mpsc::channel(4);
    let feed = async move {
        for chunk in recs.chunks(1_000) {
            let batch = crate::pipeline::Batch {
                records: chunk.to_vec(),
                cursor: None,
                routed_away: 0,
            };
            tx.send(batch).await.unwrap();
        }
    };
    let run = async {
        if dest == "loggly" {
            let sink = loggly_counted(
                &[("LOGGLY_TOKEN", tok.clone()), ("LOGGLY_URL", rx.url())],
                &TlsOptions::default(),
                m.clone(),
            );
            crate::pipeline::deliver_loop(sink, batches, None, m.clone()).await
        } else {
            let sink = logdna_counted(
                &[("LOGDNA_TOKEN", tok.clone()), ("LOGDNA_URL", rx.url())],
                &TlsOptions::default(),
                m.clone(),
            );
            crate::pipeline::deliver_loop(sink, batches, None, m.clone()).await
        }
    };
    let ((), result) = tokio::join!(feed, run);
    result.expect("delivery loop");
    let recs = {
        let mut r = records(2_000);
        Arc::make_mut(&mut r[1234]).event.message = "n=001234 POISON here".into();
        r
    };
    rx.assert_no_violations();
    assert!(rx.state().poisoned >= 1);
    assert_eq!(
        m.events_rejected.load(std::sync::atomic::Ordering::Relaxed) - rejected_before,
        1
    );
    let events = rx.events();
    let notices: Vec<_> = events
        .iter()
        .filter(|e| e.message().starts_with("journal-fanout:"))
        .collect();
    assert_eq!(notices.len(), 1, "exactly one notice expected");
    let t = ecs_event::format_time(&recs[1234].event.time);
    let text = notices[0].message();
    assert!(
        text.starts_with("journal-fanout: 1 events")
            && text.contains(&format!("between {t} and {t}"))
            && text.contains("could not be delivered")
            && text.contains("HTTP 400"),
        "notice {text:?}"
    );
    let others: Vec<String> = events
        .iter()
        .map(|e| e.message())
        .filter(|m| !m.starts_with("journal-fanout:"))
        .collect();
    assert_eq!(others.len(), 1_999);
    assert!(!others.iter().any(|m| m.contains("POISON")));
    let mut all = others.clone();
    all.push("n=001234".into());
    assert_all_markers(all.into_iter(), 2_000, true);
    // The notice is in the poisoned event's group and stream.
    if dest == "loggly" {
        let sibling = events
            .iter()
            .find(|e| marker(&e.message()) == Some(1214))
            .unwrap();
        assert_eq!(notices[0].tags, sibling.tags);
    } else {
        assert_eq!(notices[0].app, recs[1234].group);
        assert_eq!(notices[0].body["meta"]["stream"], recs[1234].stream);
    }
    logs.assert_clean(&tok);
}

#[tokio::test]
async fn loggly_poisoned_event_is_isolated_and_noticed() {
    poisoned_case("loggly").await;
}

#[tokio::test]
async fn logdna_poisoned_event_is_isolated_and_noticed() {
    poisoned_case("logdna").await;
}

/// Loggly bulk over HTTPS and both syslog-over-TLS transports: a certificate from an unknown CA
/// is refused (an error naming --ca-file, nothing sent); with --ca-file it is accepted.
#[tokio::test]
async fn untrusted_certificates_are_refused_and_ca_file_accepts() {
    let (logs, _g) = Logs::capture();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let with_ca = TlsOptions {
        ca_file: Some(ca.write_ca(dir.path())),
    };
    let recs = records(300);
    let tok = token("lg");

    let https = Receiver::start_with(
        Api::LogglyBulk { token: tok.clone() },
        Some(ca.server_config()),
    );
    let lg_syslog = Receiver::start_with(
        Api::LogglySyslog { token: tok.clone() },
        Some(ca.server_config()),
    );
    let dna_syslog = Receiver::start_with(
        Api::LogdnaSyslog { key: tok.clone() },
        Some(ca.server_config()),
    );
    let lg_tls_url = format!("tls://{tok}@localhost:{}", lg_syslog.port());
    let dna_tls_url = format!("tls://localhost:{}", dna_syslog.port());

    for tls in [TlsOptions::default(), with_ca] {
        let trusted = tls.ca_file.is_some();
        let mut a = loggly(
            &[("LOGGLY_TOKEN", tok.clone()), ("LOGGLY_URL", https.url())],
            &tls,
        );
        let mut b = loggly(&[("LOGGLY_URL", lg_tls_url.clone())], &tls);
        let mut c = logdna(
            &[
                ("LOGDNA_TOKEN", tok.clone()),
                ("LOGDNA_URL", dna_tls_url.clone()),
            ],
            &tls,
        );
        let results = [
            a.deliver(recs.clone()).await,
            b.deliver(recs.clone()).await,
            c.deliver(recs.clone()).await,
        ];
        for (r, rx) in results.into_iter().zip([&https, &lg_syslog, &dna_syslog]) {
            if trusted {
                r.expect("accepted with --ca-file");
                // Syslog has no acknowledgement: wait for the receiver to have read it all.
                until(WAIT, "300 events", || {
                    (rx.event_count() >= 300).then_some(())
                })
                .await;
                rx.assert_no_violations();
                assert_eq!(rx.event_count(), 300);
            } else {
                let e = format!("{:#}", r.expect_err("an unknown CA must be refused"));
                assert!(e.contains("not trusted") && e.contains("--ca-file"), "{e}");
                assert!(!e.contains(&tok), "token in error: {e}");
                assert_eq!(rx.event_count(), 0);
                // The receiver records its side of the failed handshake after the client has
                // seen it fail.
                until(WAIT, "the receiver to record the refused handshake", || {
                    (rx.state().handshake_errors >= 1).then_some(())
                })
                .await;
            }
        }
    }
    logs.assert_clean(&tok);
}

/// Syslog over TLS: the RFC 5424 form each service documents, and a receiver restart between
/// batches is noticed, reconnected and nothing is lost.
#[tokio::test]
async fn syslog_tls_delivers_rfc5424_and_survives_receiver_restart() {
    let (logs, _g) = Logs::capture();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsOptions {
        ca_file: Some(ca.write_ca(dir.path())),
    };
    let tok = token("lg");
    let key = token("dna");
    let lg_rx = Receiver::start_with(
        Api::LogglySyslog { token: tok.clone() },
        Some(ca.server_config()),
    );
    let dna_rx = Receiver::start_with(
        Api::LogdnaSyslog { key: key.clone() },
        Some(ca.server_config()),
    );
    let mut lg = loggly(
        &[
            (
                "LOGGLY_URL",
                format!("tls://{tok}@localhost:{}", lg_rx.port()),
            ),
            ("LOGGLY_TAGS", "env:prod".into()),
        ],
        &tls,
    );
    let mut dna = logdna(
        &[
            ("LOGDNA_TOKEN", key.clone()),
            ("LOGDNA_URL", format!("tls://localhost:{}", dna_rx.port())),
        ],
        &tls,
    );
    let recs = records(5_000);
    for (n, chunk) in recs.chunks(500).enumerate() {
        if n == 4 {
            // Restart both receivers between batches (open connections are cut).
            for rx in [&lg_rx, &dna_rx] {
                rx.stop();
                rx.resume();
            }
        }
        lg.deliver(chunk.to_vec()).await.unwrap();
        dna.deliver(chunk.to_vec()).await.unwrap();
        let want = 500 * (n + 1);
        until(WAIT, "syslog lines", || {
            (lg_rx.event_count() >= want && dna_rx.event_count() >= want).then_some(())
        })
        .await;
    }
    for rx in [&lg_rx, &dna_rx] {
        rx.assert_no_violations();
        assert!(rx.state().requests >= 2, "no reconnect happened");
        assert_all_markers(rx.events().iter().map(|e| e.message()), 5_000, false);
    }
    for e in lg_rx.events() {
        let i = marker(&e.message()).unwrap();
        let r = &recs[i];
        let want = vec![
            super::loggly::tag(&r.group).unwrap(),
            super::loggly::tag(&r.stream).unwrap(),
            "env_prod".to_string(),
        ];
        assert_eq!(e.tags, want);
        assert_eq!(e.host, "vm1");
    }
    logs.assert_clean(&tok);
    logs.assert_clean(&key);
}

#[tokio::test]
async fn wrong_token_is_a_configuration_error_not_a_loss() {
    let (logs, _g) = Logs::capture();
    let tok = token("lg");
    let rx = Receiver::start(Api::LogglyBulk {
        token: "the-right-one".into(),
    });
    let mut sink = loggly(
        &[("LOGGLY_TOKEN", tok.clone()), ("LOGGLY_URL", rx.url())],
        &TlsOptions::default(),
    );
    let e = format!(
        "{:#}",
        sink.deliver(records(10))
            .await
            .expect_err("403 must stop the destination")
    );
    assert!(e.contains("HTTP 403") && e.contains("LOGGLY_TOKEN"), "{e}");
    assert!(!e.contains(&tok), "{e}");
    logs.assert_clean(&tok);
}

/// Big events: requests are split to stay within 5 MB (Loggly) and 10 MB (LogDNA); the
/// receivers refuse anything larger, and every event arrives whole.
#[tokio::test]
async fn requests_stay_within_the_documented_size_limits() {
    let (logs, _g) = Logs::capture();
    let (tok, key) = (token("lg"), token("dna"));
    let lg_rx = Receiver::start(Api::LogglyBulk { token: tok.clone() });
    let dna_rx = Receiver::start(Api::LogdnaIngest { key: key.clone() });
    let mut lg = loggly(
        &[("LOGGLY_TOKEN", tok.clone()), ("LOGGLY_URL", lg_rx.url())],
        &TlsOptions::default(),
    );
    let mut dna = logdna(
        &[("LOGDNA_TOKEN", key.clone()), ("LOGDNA_URL", dna_rx.url())],
        &TlsOptions::default(),
    );
    // One group and stream, so only size splits the requests.
    let recs: Vec<Arc<Record>> = plain_records(25)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.group = "big".into();
            r.stream = "s".into();
            r.event.message = format!("n={i:06} {}", "y".repeat(900_000));
            Arc::new(r)
        })
        .collect();
    assert!(lg.deliver(recs.clone()).await.unwrap().rejected.is_empty());
    assert!(dna.deliver(recs.clone()).await.unwrap().rejected.is_empty());
    for rx in [&lg_rx, &dna_rx] {
        rx.assert_no_violations();
        assert_all_markers(rx.events().iter().map(|e| e.message()), 25, true);
        assert!(rx.events().iter().all(|e| e.message().len() > 900_000));
    }
    // 25 × 0.9 MB: at least 5 Loggly requests of ≤ 5 MB, at least 3 LogDNA ones of ≤ 10 MB.
    assert!(lg_rx.state().requests >= 5, "{}", lg_rx.state().requests);
    assert!(dna_rx.state().requests >= 3, "{}", dna_rx.state().requests);
    logs.assert_clean(&tok);
    logs.assert_clean(&key);
}
