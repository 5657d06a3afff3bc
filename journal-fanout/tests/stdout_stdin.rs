//! The stdout destination's format, the stdin source reading it back, and resuming from the
//! saved cursor after a clean stop — against a private journald namespace.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{container_line, write_entries, Fanout, BIN};
use serde_json::Value;
use testkit::{wait_until, Journald};

fn fanout_stdout(j: &Journald, state: &std::path::Path) -> Fanout {
    common::stdout_from_head(j, state, &[], &[])
}

fn wait_lines(f: &Fanout, n: usize) -> Vec<Value> {
    wait_until(
        Duration::from_secs(60),
        "journal-fanout's stdout lines",
        || {
            let lines = f.stdout_lines();
            (lines.len() >= n).then_some(lines)
        },
    )
    .iter()
    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
    .collect()
}

#[test]
fn stdout_writes_one_group_stream_event_line_per_container_line() {
    let j = Journald::start();
    let state = tempfile::tempdir().unwrap();
    let mut entries = vec![
        container_line("web:v1", "web-1", "plain line"),
        container_line(
            "web:v1",
            "web-1",
            r#"{"level":"WARN","info":{"source":"a.go:1:f"},"data":{"k":"v"},"message":"an ecs event"}"#,
        ),
        container_line("api", "api*2", r#"{"msg":"other json","user":7}"#),
        // Not a container line: no CONTAINER_TAG.
        vec![("MESSAGE".to_string(), "system noise".to_string())],
    ];
    for (k, v) in entries[0].iter_mut() {
        if k == "PRIORITY" {
            *v = "3".into();
        }
    }
    write_entries(j.socket(), entries);

    let mut f = fanout_stdout(&j, state.path());
    let lines = wait_lines(&f, 3);
    assert!(f.terminate().success(), "exit status after SIGTERM");
    assert_eq!(lines.len(), 3, "only container lines: {lines:?}");

    let l = &lines[0];
    assert_eq!(l["group"], "web/v1");
    assert_eq!(l["stream"], "web-1");
    assert_eq!(l["event"]["message"], "plain line");
    assert_eq!(l["event"]["level"], "ERROR");
    assert!(l["event"]["info"]["host"]
        .as_str()
        .is_some_and(|h| !h.is_empty()));
    assert!(l["event"]["info"]["pid"].as_i64().is_some_and(|p| p > 0));
    let t = l["event"]["time"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(t).is_ok() && t.contains('.') && t.ends_with('Z'),
        "time {t}"
    );

    let e = &lines[1]["event"];
    assert_eq!(e["level"], "WARN");
    assert_eq!(e["message"], "an ecs event");
    assert_eq!(e["data"]["k"], "v");
    assert_eq!(e["info"]["source"], "a.go:1:f");

    let o = &lines[2];
    assert_eq!(o["stream"], "api/2");
    assert_eq!(o["event"]["message"], "other json");
    assert_eq!(o["event"]["data"]["user"], 7);
}

#[test]
fn stdin_reads_back_what_stdout_writes() {
    let input = [
        r#"{"group":"g1","stream":"s1","event":{"level":"ERROR","time":"2026-11-22T10:00:00.123456Z","info":{"host":"h","pid":3},"data":{"a":[1,2]},"message":"one"}}"#,
        "this is not json",
        r#"{"group":"g:2","stream":"s*2","event":{"time":"2026-11-22T10:00:01Z","message":"two"}}"#,
    ];
    let mut child = Command::new(BIN)
        .args(["--src", "stdin", "--dst", "stdout", "--hostname", "fixed"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for l in input {
            writeln!(stdin, "{l}").unwrap();
        }
    } // EOF: the program delivers and exits.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    // The first line comes back exactly.
    assert_eq!(lines[0], serde_json::from_str::<Value>(input[0]).unwrap());
    assert_eq!(lines[1]["group"], "g/2");
    assert_eq!(lines[1]["stream"], "s/2");
    assert_eq!(lines[1]["event"]["message"], "two");
    assert_eq!(lines[1]["event"]["level"], "INFO");
    assert_eq!(lines[1]["event"]["info"]["host"], "fixed");
    // The bad line is reported with its line number, not silently dropped.
    assert!(
        stderr.contains("line=2") && stderr.contains("not JSON"),
        "stderr: {stderr}"
    );

    // And a second pass is a fixed point.
    let mut again = Command::new(BIN)
        .args(["--src", "stdin", "--dst", "stdout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut stdin = again.stdin.take().unwrap();
        for l in &lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    let out = again.wait_with_output().unwrap();
    let back: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, lines);
}

#[test]
fn resumes_from_saved_cursor_after_sigterm_without_duplicates() {
    let j = Journald::start();
    let state = tempfile::tempdir().unwrap();
    write_entries(
        j.socket(),
        (0..1000).map(|i| container_line("svc", "c1", &format!("first-{i}"))),
    );
    let mut f = fanout_stdout(&j, state.path());
    let first = wait_lines(&f, 1000);
    assert!(f.terminate().success());
    assert_eq!(first.len(), 1000);
    assert!(std::fs::read_dir(state.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".cursor")));

    // Written while journal-fanout is not running.
    write_entries(
        j.socket(),
        (0..500).map(|i| container_line("svc", "c1", &format!("second-{i}"))),
    );
    j.sync();
    let mut f = fanout_stdout(&j, state.path());
    let second = wait_lines(&f, 500);
    assert!(f.terminate().success());
    let msgs: Vec<&str> = second
        .iter()
        .map(|l| l["event"]["message"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..500).map(|i| format!("second-{i}")).collect();
    assert_eq!(
        msgs, expected,
        "exactly the new lines, in order, no duplicates"
    );
}

#[test]
fn from_tail_skips_old_lines_and_keeps_its_place_across_a_crash() {
    let j = Journald::start();
    let state = tempfile::tempdir().unwrap();
    write_entries(
        j.socket(),
        (0..50).map(|i| container_line("svc", "c", &format!("old-{i}"))),
    );
    j.sync();
    // Read through the journal directory this time (--journal-dir).
    let dir = j.directory();
    let args = |from: &'static str| {
        vec![
            "--journal-dir".to_string(),
            dir.to_str().unwrap().to_string(),
            "--dst".into(),
            "stdout".into(),
            "--from".into(),
            from.into(),
            "--state-dir".into(),
            state.path().to_str().unwrap().to_string(),
            "--flush-timeout".into(),
            "200ms".into(),
        ]
    };
    let start = |from| {
        let a = args(from);
        Fanout::start(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    };
    let mut f = start("tail");
    // The tail position is saved before any new line arrives.
    wait_until(
        Duration::from_secs(30),
        "the starting cursor to be saved",
        || {
            std::fs::read_dir(state.path())
                .unwrap()
                .any(|e| {
                    e.unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".cursor")
                })
                .then_some(())
        },
    );
    f.kill9();
    write_entries(
        j.socket(),
        (0..20).map(|i| container_line("svc", "c", &format!("new-{i}"))),
    );
    // Restarted (still --from tail): it resumes at the saved place, so the lines written
    // while it was down are shipped, and none of the old ones.
    let mut f = start("tail");
    let lines = wait_lines(&f, 20);
    assert!(f.terminate().success());
    let msgs: Vec<&str> = lines
        .iter()
        .map(|l| l["event"]["message"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("new-{i}")).collect();
    assert_eq!(msgs, want);
}
