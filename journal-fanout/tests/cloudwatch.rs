//! journald namespace → journal-fanout → validating pass-through → moto_server.
//! Every PutLogEvents request is checked against the CloudWatch limits (moto checks none).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{all_messages, container_line, moto_events, write_entries, CheckingProxy, Fanout};
use testkit::{wait_until, Journald, Moto};

fn fanout_cloudwatch(j: &Journald, state: &std::path::Path, proxy: &CheckingProxy) -> Fanout {
    fanout_to(j, state, proxy, "cloudwatchlogs")
}

fn fanout_to(j: &Journald, state: &std::path::Path, proxy: &CheckingProxy, dst: &str) -> Fanout {
    Fanout::start(
        &[
            "--journal-namespace",
            j.namespace(),
            "--dst",
            dst,
            "--from",
            "head",
            "--state-dir",
            state.to_str().unwrap(),
            "--flush-timeout",
            "500ms",
        ],
        &proxy.env(),
    )
}

/// `n` lines spread over 3 groups × 10 streams; message `m-<i>` (i global, increasing).
fn spread(
    prefix: &str,
    range: std::ops::Range<usize>,
) -> impl Iterator<Item = Vec<(String, String)>> + '_ {
    range.map(move |i| {
        container_line(
            &format!("{prefix}-group-{}", i % 3),
            &format!("stream:{}", i % 10),
            &format!("m-{i}"),
        )
    })
}

fn marker(m: &str) -> Option<usize> {
    m.strip_prefix("m-")?.parse().ok()
}

/// Wait until moto holds at least `n` distinct markers; returns its events.
fn wait_markers(
    moto: &Moto,
    n: usize,
    f: &mut Fanout,
    timeout: Duration,
) -> BTreeMap<(String, String), Vec<serde_json::Value>> {
    let mut last = 0;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(timeout, "events in moto", || {
            assert!(f.is_running(), "journal-fanout exited: {}", f.stderr_text());
            let ev = moto_events(&moto.endpoint());
            let distinct: HashSet<usize> =
                all_messages(&ev).iter().filter_map(|m| marker(m)).collect();
            last = distinct.len();
            (distinct.len() >= n).then_some(ev)
        })
    }));
    match r {
        Ok(ev) => ev,
        Err(e) => panic!(
            "moto has {last} of {n} markers: {e:?}\njournal-fanout stderr:\n{}",
            f.stderr_text()
        ),
    }
}

#[test]
fn fifty_thousand_lines_arrive_in_order_per_stream() {
    let j = Journald::start();
    let moto = Moto::start();
    let proxy = CheckingProxy::start(moto.port());
    let state = tempfile::tempdir().unwrap();
    let prefix = testkit::unique_name("big");
    let mut f = fanout_cloudwatch(&j, state.path(), &proxy);
    write_entries(j.socket(), spread(&prefix, 0..50_000));
    let events = wait_markers(&moto, 50_000, &mut f, Duration::from_secs(180));
    assert!(f.terminate().success(), "clean exit on SIGTERM");

    assert_eq!(
        events.len(),
        30,
        "3 groups x 10 streams: {:?}",
        events.keys()
    );
    let mut total = 0;
    for ((group, stream), evs) in &events {
        assert!(group.starts_with(&prefix), "{group}");
        assert!(stream.starts_with("stream/"), "':' made valid: {stream}");
        let seq: Vec<usize> = evs
            .iter()
            .map(|e| marker(e["message"].as_str().unwrap()).unwrap())
            .collect();
        assert!(
            seq.windows(2).all(|w| w[0] < w[1]),
            "{group}/{stream}: out of order or duplicated"
        );
        for e in evs {
            assert_eq!(e["level"], "INFO");
            assert!(e["time"].is_string());
        }
        total += seq.len();
    }
    assert_eq!(total, 50_000, "every line exactly once");
    proxy.assert_no_violations();
}

#[test]
fn kill_9_mid_shipping_then_restart_loses_nothing() {
    let j = Journald::start();
    let moto = Moto::start();
    let proxy = CheckingProxy::start(moto.port());
    let state = tempfile::tempdir().unwrap();
    let prefix = testkit::unique_name("crash");
    write_entries(j.socket(), spread(&prefix, 0..50_000));

    let mut f = fanout_cloudwatch(&j, state.path(), &proxy);
    // Mid-shipping: some, not all, delivered.
    wait_until(
        Duration::from_secs(120),
        "some events accepted by moto",
        || {
            assert!(f.is_running(), "journal-fanout exited: {}", f.stderr_text());
            (proxy.events_accepted.load(Ordering::Relaxed) >= 5_000).then_some(())
        },
    );
    f.kill9();
    let before = proxy.events_accepted.load(Ordering::Relaxed);
    assert!(
        before < 50_000,
        "killed too late to test anything ({before})"
    );

    let mut f = fanout_cloudwatch(&j, state.path(), &proxy);
    let events = wait_markers(&moto, 50_000, &mut f, Duration::from_secs(180));
    assert!(f.terminate().success());
    let distinct: HashSet<usize> = all_messages(&events)
        .iter()
        .filter_map(|m| marker(m))
        .collect();
    assert_eq!(
        distinct,
        (0..50_000).collect::<HashSet<_>>(),
        "every marker present"
    );
    proxy.assert_no_violations();
}

#[test]
fn emulator_outage_of_30_seconds_is_ridden_out() {
    let j = Journald::start();
    let mut moto = Moto::start();
    let port = moto.port();
    let proxy = CheckingProxy::start(port);
    let state = tempfile::tempdir().unwrap();
    let prefix = testkit::unique_name("outage");
    // stdout too: a destination that is up must not be held back by one that is down.
    let mut f = fanout_to(&j, state.path(), &proxy, "cloudwatchlogs,stdout");

    write_entries(j.socket(), spread(&prefix, 0..1_000));
    wait_markers(&moto, 1_000, &mut f, Duration::from_secs(60));

    moto.stop();
    // Written during the outage.
    write_entries(j.socket(), spread(&prefix, 1_000..3_000));
    wait_until(
        Duration::from_secs(25),
        "stdout to get the lines written during the CloudWatch outage",
        || {
            let lines = f.stdout_lines();
            (lines.len() >= 3_000 && lines.iter().any(|l| l.contains("\"m-2999\""))).then_some(())
        },
    );
    // The outage itself lasts 30 s (this is the scenario, not a readiness wait); meanwhile
    // journal-fanout must keep running and retrying.
    let outage_end = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < outage_end {
        assert!(
            f.is_running(),
            "journal-fanout died during the outage: {}",
            f.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let moto = Moto::start_on(port);
    // moto lost its state: what was written during the outage must arrive now.
    let events = wait_markers(&moto, 2_000, &mut f, Duration::from_secs(120));
    assert!(f.terminate().success());
    let got: HashSet<usize> = all_messages(&events)
        .iter()
        .filter_map(|m| marker(m))
        .collect();
    for i in 1_000..3_000 {
        assert!(
            got.contains(&i),
            "m-{i}, written during the outage, is missing"
        );
    }
    let stderr = f.stderr_text();
    assert!(
        stderr.contains("retrying"),
        "retries are reported: {stderr}"
    );
    proxy.assert_no_violations();
}

#[test]
fn the_checking_proxy_catches_what_moto_would_let_through() {
    let ok = r#"{"logGroupName":"g","logStreamName":"s","logEvents":[{"timestamp":1,"message":"a"},{"timestamp":1,"message":"b"}]}"#;
    assert_eq!(common::check_put(ok.as_bytes()), Ok(2));
    let unsorted = r#"{"logGroupName":"g","logStreamName":"s","logEvents":[{"timestamp":2,"message":"a"},{"timestamp":1,"message":"b"}]}"#;
    assert!(common::check_put(unsorted.as_bytes()).is_err());
    let day = r#"{"logGroupName":"g","logStreamName":"s","logEvents":[{"timestamp":0,"message":"a"},{"timestamp":86400000,"message":"b"}]}"#;
    assert!(common::check_put(day.as_bytes()).is_err());
    let big = format!(
        r#"{{"logGroupName":"g","logStreamName":"s","logEvents":[{{"timestamp":0,"message":"{}"}}]}}"#,
        "x".repeat(1_048_551)
    );
    assert!(common::check_put(big.as_bytes()).is_err());
    let bad_stream =
        r#"{"logGroupName":"g","logStreamName":"a:b","logEvents":[{"timestamp":0,"message":"a"}]}"#;
    assert!(common::check_put(bad_stream.as_bytes()).is_err());
}

#[test]
fn events_the_service_refuses_are_counted_and_noticed_in_their_stream() {
    let j = Journald::start();
    let moto = Moto::start();
    let proxy = CheckingProxy::start(moto.port());
    let state = tempfile::tempdir().unwrap();
    let group = testkit::unique_name("rejects");
    // Events whose own time is 20 days old: CloudWatch stores none of them.
    let old = chrono::Utc::now() - chrono::Duration::days(20);
    let mut entries: Vec<_> = (0..3)
        .map(|i| {
            let t = ecs_event::format_time(&(old + chrono::Duration::seconds(i)));
            container_line(
                &group,
                "s",
                &format!(r#"{{"time":"{t}","message":"too-old-{i}"}}"#),
            )
        })
        .collect();
    entries.push(container_line(&group, "s", "m-0"));
    write_entries(j.socket(), entries);
    let mut f = fanout_cloudwatch(&j, state.path(), &proxy);
    let events = wait_until(Duration::from_secs(60), "the notice in moto", || {
        assert!(f.is_running(), "journal-fanout exited: {}", f.stderr_text());
        let ev = moto_events(&moto.endpoint());
        let msgs = all_messages(&ev);
        (msgs.iter().any(|m| m == "m-0")
            && msgs.iter().any(|m| m.contains("could not be delivered")))
        .then_some(ev)
    });
    assert!(f.terminate().success());
    let stream = &events[&(group.clone(), "s".to_string())];
    let notice = stream
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .contains("could not be delivered")
        })
        .unwrap();
    let text = notice["message"].as_str().unwrap();
    // moto reports the index of the last refused event where AWS reports the end of the
    // range (protocols.md §5.6), so the count is 2 here and 3 against AWS.
    assert!(
        text.starts_with("journal-fanout: ") && text.contains("refused them as too old"),
        "{text}"
    );
    assert_eq!(notice["level"], "WARN");
    assert_eq!(notice["data"]["journal_fanout_notice"], true);
    assert!(!all_messages(&events)
        .iter()
        .any(|m| m.starts_with("too-old-")));
    assert!(
        f.stderr_text()
            .contains("events refused by the destination"),
        "{}",
        f.stderr_text()
    );
    proxy.assert_no_violations();
}

#[test]
fn sigterm_while_cloudwatch_is_down_exits_and_loses_nothing() {
    let j = Journald::start();
    let port = testkit::free_port();
    // Nothing listens behind the proxy yet: CloudWatch is down from the start.
    let proxy = CheckingProxy::start(port);
    let state = tempfile::tempdir().unwrap();
    let prefix = testkit::unique_name("down");
    write_entries(j.socket(), spread(&prefix, 0..300));
    let args = [
        "--journal-namespace",
        j.namespace(),
        "--dst",
        "cloudwatchlogs",
        "--from",
        "head",
        "--state-dir",
        state.path().to_str().unwrap(),
        "--flush-timeout",
        "200ms",
        "--shutdown-timeout",
        "2s",
    ];
    let mut f = Fanout::start(&args, &proxy.env());
    wait_until(
        Duration::from_secs(30),
        "a failed attempt to be retried",
        || f.stderr_text().contains("retrying").then_some(()),
    );
    let status = f.terminate();
    assert!(status.success(), "exit {status}: {}", f.stderr_text());
    assert!(
        f.stderr_text().contains("shutdown timeout"),
        "{}",
        f.stderr_text()
    );

    // CloudWatch comes back; the next run sends what the stopped one could not.
    let moto = Moto::start_on(port);
    let mut f = Fanout::start(&args, &proxy.env());
    wait_markers(&moto, 300, &mut f, Duration::from_secs(60));
    assert!(f.terminate().success());
    proxy.assert_no_violations();
}
