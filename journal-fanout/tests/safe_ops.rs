//! Operator slips that must never stop shipping uncounted: SIGHUP under load, and
//! configuration errors that must exit 2 on one line (so systemd leaves the unit failed
//! instead of restarting it forever); and `journal-fanout check`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{container_line, write_entries, BIN};
use testkit::{wait_until, Journald};

/// Run journal-fanout with `args` and `env` (AWS and token variables cleared first), expecting
/// it to exit at once; returns (status, stdout, stderr).
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    for var in [
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "LOGGLY_TOKEN",
        "LOGDNA_TOKEN",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .args(args)
        // No credentials or region from a profile; and instance metadata (169.254.169.254) is
        // never contacted from a test: only loopback traffic.
        .env("HOME", home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run journal-fanout");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn configuration_errors_exit_2_on_one_line() {
    let jd = Journald::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap().to_string();
    let ns = jd.namespace().to_string();
    let base = ["--journal-namespace", &ns, "--state-dir", &state_dir];
    let creds = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let unwritable = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        unwritable.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o555),
    )
    .unwrap();
    let nested = unwritable.path().join("state");
    // (flags, environment, how stderr starts, what else it says)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            vec!["--dst", "cloudwatchlogs"],
            creds.to_vec(),
            "journal-fanout: --dst cloudwatchlogs: no AWS region configured; set AWS_REGION",
            vec![],
        ),
        (
            vec!["--dst", "cloudwatchlogs"],
            vec![("AWS_REGION", "us-east-1")],
            "journal-fanout: --dst cloudwatchlogs: no AWS credentials found; set AWS_ACCESS_KEY_ID",
            vec![],
        ),
        (
            vec!["--dst", "loggly"],
            vec![],
            "journal-fanout: the loggly destination needs a customer token: set LOGGLY_TOKEN",
            vec![],
        ),
        (
            vec!["--dst", "logdna"],
            vec![],
            "journal-fanout: ",
            vec!["LOGDNA_TOKEN"],
        ),
        (
            // Not an address of this host: binding fails (nothing is sent).
            vec!["--dst", "stdout", "--metrics-address", "192.0.2.1:9102"],
            vec![],
            "journal-fanout: cannot listen for metrics on 192.0.2.1:9102",
            vec![],
        ),
    ];
    for (args, env, want, also) in cases {
        let mut all: Vec<&str> = base.to_vec();
        all.extend(&args);
        let (code, _, stderr) = run_to_exit(&all, &env);
        assert_eq!(code, 2, "journal-fanout {all:?} should exit 2:\n{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "journal-fanout {all:?}: one line expected:\n{stderr}"
        );
        assert!(
            lines[0].starts_with(want),
            "{want:?} not at the start of {stderr:?}"
        );
        for a in also {
            assert!(lines[0].contains(a), "{a:?} not in {stderr:?}");
        }
        assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
    }
    // Unwritable state directory, as an unprivileged user (root may write anywhere).
    let nested = nested.to_str().unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            BIN,
        ])
        .args([
            "--dst",
            "stdout",
            "--state-dir",
            nested,
            "--journal-namespace",
            &ns,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv is part of util-linux");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "journal-fanout: cannot create the state directory {nested}"
        )),
        "{stderr}"
    );
}

#[test]
fn sighup_under_load_keeps_running_and_loses_no_entry() {
    let jd = Journald::start();
    let state = tempfile::tempdir().unwrap();
    let mut f = common::stdout_from_head(&jd, state.path(), &[], &[]);
    let total = 20_000;
    let socket = jd.socket().to_path_buf();
    let writer = std::thread::spawn(move || {
        for chunk in 0..20 {
            write_entries(
                &socket,
                (0..1000)
                    .map(|i| container_line("hup", "web", &format!("line {}", chunk * 1000 + i))),
            );
        }
    });
    for _ in 0..10 {
        wait_until(Duration::from_secs(30), "entries to be shipped", || {
            (!f.stdout_lines().is_empty()).then_some(())
        });
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(f.child.id() as i32, libc::SIGHUP) };
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            f.is_running(),
            "SIGHUP stopped journal-fanout:\n{}",
            f.stderr_text()
        );
    }
    writer.join().unwrap();
    let lines = wait_until(Duration::from_secs(120), "every entry on stdout", || {
        let l = f.stdout_lines();
        (l.len() >= total).then_some(l)
    });
    let mut seen: Vec<u64> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v.pointer("/event/message")
                .and_then(|m| m.as_str())
                .and_then(|m| m.strip_prefix("line "))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    assert_eq!(seen.len(), total, "each entry once");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), total, "no entry twice");
    assert!(f
        .stderr_text()
        .contains("reload requested; nothing to reload"));
    assert!(f.terminate().success());
}

#[test]
fn check_names_what_would_stop_shipping() {
    let jd = Journald::start_with_config("Storage=volatile");
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("cursors");
    let (code, stdout, stderr) = run_to_exit(
        &[
            "--journal-namespace",
            jd.namespace(),
            "--state-dir",
            state_dir.to_str().unwrap(),
            "--dst",
            "stdout,loggly,cloudwatchlogs",
            "check",
        ],
        &[("AWS_REGION", "us-east-1")],
    );
    assert_eq!(code, 1, "a FAIL exits 1:\n{stdout}{stderr}");
    let has = |prefix: &str| stdout.lines().any(|l| l.starts_with(prefix));
    assert!(has("OK   state directory: "), "{stdout}");
    assert!(
        has("OK   journal access: ") || has("WARN journal access: no journal files yet"),
        "{stdout}"
    );
    assert!(has("WARN journald storage: Storage=volatile"), "{stdout}");
    assert!(has("OK   destination stdout"), "{stdout}");
    assert!(
        has("FAIL destination loggly: the loggly destination needs a customer token"),
        "{stdout}"
    );
    assert!(
        has("FAIL destination cloudwatchlogs: --dst cloudwatchlogs: no AWS credentials found"),
        "{stdout}"
    );
    // Nothing was created by looking.
    assert!(!state_dir.exists());

    let (code, stdout, _) = run_to_exit(
        &[
            "--journal-namespace",
            jd.namespace(),
            "--state-dir",
            state_dir.to_str().unwrap(),
            "--dst",
            "stdout,loggly",
            "check",
        ],
        &[("LOGGLY_TOKEN", "abc-123")],
    );
    assert!(
        stdout.contains("OK   destination loggly: token set"),
        "{stdout}"
    );
    assert_eq!(code, 0, "nothing FAILs:\n{stdout}");
}
