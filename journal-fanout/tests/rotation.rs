//! A saved cursor whose entry journald vacuumed away: reading resumes at the oldest entry
//! left, the loss is counted (metrics, stderr) and noticed in the stream itself.

mod common;

use std::time::Duration;

use common::{container_line, metric, metrics, stdout_from_head, write_entries, Fanout};
use serde_json::Value;
use testkit::{free_port, wait_until, Journald};

fn fanout(j: &Journald, state: &std::path::Path, metrics_port: u16) -> Fanout {
    let metrics = format!("127.0.0.1:{metrics_port}");
    stdout_from_head(j, state, &["--metrics-address", &metrics], &[])
}

#[test]
fn vacuumed_cursor_resumes_at_oldest_entry_and_notices_the_loss() {
    let j = Journald::start_with_config("RuntimeMaxFileSize=512K\nRuntimeMaxUse=2M\n");
    let state = tempfile::tempdir().unwrap();
    write_entries(
        j.socket(),
        (0..100).map(|i| container_line("rot", "early", &format!("early-{i}"))),
    );
    let port = free_port();
    let mut f = fanout(&j, state.path(), port);
    wait_until(Duration::from_secs(60), "the early lines on stdout", || {
        (f.stdout_lines().len() >= 100).then_some(())
    });
    // Metrics count what was delivered.
    let text = wait_until(Duration::from_secs(10), "metrics", || metrics(port));
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(
        metric(&text, r#"events_delivered_total{destination="stdout"}"#),
        Some(100),
        "{text}"
    );
    assert!(f.terminate().success());

    // While journal-fanout is stopped, journald rotates and vacuums the early entries away.
    let pad = "p".repeat(400);
    let mut next = 0usize;
    wait_until(
        Duration::from_secs(120),
        "journald to vacuum the early entries",
        || {
            write_entries(
                j.socket(),
                (next..next + 2_000)
                    .map(|i| container_line("rot", "filler", &format!("filler-{i} {pad}"))),
            );
            next += 2_000;
            j.sync();
            let gone = j.entries_matching(&["MESSAGE=early-99"]).is_empty();
            // Also make sure the first fillers went with them, so there is a real gap.
            let first_gone = j
                .entries_matching(&["CONTAINER_NAME=filler"])
                .first()
                .is_some_and(|e| {
                    testkit::field(e, "MESSAGE").is_some_and(|m| !m.starts_with("filler-0 "))
                });
            (gone && first_gone).then_some(())
        },
    );
    let remaining = j.entries_matching(&["CONTAINER_NAME=filler"]);
    let oldest = testkit::field(&remaining[0], "MESSAGE").unwrap();

    // A destination that resumes into the gap and crashes before delivering anything must
    // not have moved its cursor past the oldest entry left (it has not shipped it yet).
    let ns = j.namespace();
    let saved = std::fs::read_to_string(state.path().join(format!("stdout@{ns}.cursor"))).unwrap();
    let cw_cursor = state.path().join(format!("cloudwatchlogs@{ns}.cursor"));
    std::fs::write(&cw_cursor, &saved).unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut down = Fanout::start(
        &[
            "--journal-namespace",
            ns,
            "--dst",
            "cloudwatchlogs",
            "--state-dir",
            state.path().to_str().unwrap(),
            "--flush-timeout",
            "200ms",
        ],
        &[
            ("AWS_ENDPOINT_URL", dead),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ],
    );
    wait_until(
        Duration::from_secs(30),
        "the first batch to be retried",
        || down.stderr_text().contains("retrying").then_some(()),
    );
    down.kill9();
    assert_eq!(std::fs::read_to_string(&cw_cursor).unwrap(), saved);

    let port = free_port();
    let mut f = fanout(&j, state.path(), port);
    let lines: Vec<Value> = wait_until(Duration::from_secs(60), "the remaining lines", || {
        let l = f.stdout_lines();
        (l.len() > remaining.len()).then_some(l)
    })
    .iter()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let text = wait_until(Duration::from_secs(10), "metrics", || metrics(port));
    assert!(f.terminate().success());

    let notice = &lines[0];
    let msg = notice["event"]["message"].as_str().unwrap();
    assert_eq!(notice["group"], "rot");
    assert_eq!(notice["stream"], "filler");
    assert_eq!(notice["event"]["data"]["journal_fanout_notice"], true);
    assert!(
        msg.starts_with("journal-fanout: ")
            && msg.contains(" events between ")
            && msg.contains("could not be delivered: the journal rotated or vacuumed them away"),
        "{msg}"
    );
    let n: u64 = msg
        .strip_prefix("journal-fanout: ")
        .and_then(|m| m.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in {msg}"));
    assert!(n > 0);
    // Then the oldest entry left, and everything after it, once and in order.
    assert_eq!(lines[1]["event"]["message"], oldest.as_str());
    let got: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l["event"]["message"].as_str().unwrap())
        .collect();
    let want: Vec<String> = remaining
        .iter()
        .map(|e| testkit::field(e, "MESSAGE").unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        metric(&text, r#"entries_lost_total{destination="stdout"}"#),
        Some(n),
        "{text}"
    );
    assert!(
        f.stderr_text().contains("rotated or vacuumed away"),
        "{}",
        f.stderr_text()
    );
}
