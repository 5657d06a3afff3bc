//! journal-fanout reads entries' fields straight from the journal files
//! (`source::journal_file`), and libsystemd only where that reader declines. What it ships must
//! be exactly what reading every field through libsystemd ships
//! (`JOURNAL_FANOUT_READ_FIELDS=libsystemd`): over rotated files, compressed fields, compact
//! and regular file layouts, and files that grow and rotate while they are read.

mod common;

use std::time::Duration;

use common::{metric, metrics, stdout_from_head, write_entries};
use testkit::{free_port, wait_until, Journald};

const FIRST: usize = 1_500;
const ALL: usize = 3_000;
/// Every this many entries one has a 4 KiB message, which journald stores compressed.
const LONG_EVERY: usize = 100;

/// Entry `i`: a container line, some with a message journald compresses, some with `=`,
/// non-ASCII text, a newline, the fields a record reads besides the message, and a repeated
/// field (the first occurrence counts).
fn entry(i: usize) -> Vec<(String, String)> {
    let message = if i.is_multiple_of(LONG_EVERY) {
        format!("long-{i} {}", "compressible text ".repeat(228))
    } else if i.is_multiple_of(7) {
        format!(
            "line-{i} key=value ünïcødé\nsecond line {}",
            "p".repeat(200)
        )
    } else {
        format!("line-{i} {}", "x".repeat(300))
    };
    let mut e = vec![
        ("MESSAGE".to_string(), message),
        ("CONTAINER_TAG".into(), format!("svc-{}", i % 3)),
        ("CONTAINER_NAME".into(), format!("task-{}", i % 5)),
        ("CONTAINER_ID".into(), "0123456789ab".into()),
        ("PRIORITY".into(), (i % 8).to_string()),
        ("SYSLOG_IDENTIFIER".into(), "file-reader".into()),
    ];
    if i.is_multiple_of(11) {
        e.push(("CODE_FILE".into(), "src/main.rs".into()));
        e.push(("CODE_LINE".into(), i.to_string()));
        e.push((
            "MESSAGE_ID".into(),
            "0123456789abcdef0123456789abcdef".into(),
        ));
        e.push(("CONTAINER_NAME".into(), "a-second-value".into()));
    }
    e
}

/// Ship the namespace from its head to stdout until `n` lines are out; the lines and the
/// final metrics. `more` runs once the first `FIRST` lines are out (to write while reading).
fn ship(
    j: &Journald,
    env: &[(&str, String)],
    n: usize,
    more: impl FnOnce(),
) -> (Vec<String>, String) {
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics_address = format!("127.0.0.1:{port}");
    let mut f = stdout_from_head(
        j,
        state.path(),
        &["--metrics-address", &metrics_address],
        env,
    );
    wait_until(Duration::from_secs(60), "the first lines on stdout", || {
        (f.stdout_lines().len() >= FIRST).then_some(())
    });
    more();
    wait_until(Duration::from_secs(120), "every line on stdout", || {
        (f.stdout_lines().len() >= n).then_some(())
    });
    // The read counters are added when a position is taken, after each batch.
    let text = wait_until(Duration::from_secs(30), "the read counters", || {
        let t = metrics(port)?;
        let read = metric(&t, r#"journal_entries_read_total{reader="file"}"#)?
            + metric(&t, r#"journal_entries_read_total{reader="libsystemd"}"#)?;
        (read >= n as u64).then_some(t)
    });
    assert!(f.terminate().success(), "{}", f.stderr_text());
    (f.stdout_lines(), text)
}

fn journal_files(j: &Journald) -> usize {
    std::fs::read_dir(j.directory())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.ends_with(".journal") || name.ends_with(".journal~")
        })
        .count()
}

fn same_as_libsystemd(j: Journald) {
    write_entries(j.socket(), (0..FIRST).map(entry));
    let (direct, text) = ship(&j, &[], ALL, || {
        // Written while journal-fanout reads: the file grows past its mapping and rotates.
        write_entries(j.socket(), (FIRST..ALL).map(entry));
    });
    assert!(
        journal_files(&j) >= 3,
        "the test needs rotated files: {} files in {}",
        journal_files(&j),
        j.directory().display()
    );
    let by_file = metric(&text, r#"journal_entries_read_total{reader="file"}"#).unwrap();
    let by_libsystemd =
        metric(&text, r#"journal_entries_read_total{reader="libsystemd"}"#).unwrap();
    let compressed = (ALL / LONG_EVERY) as u64;
    eprintln!("read from the files: {by_file}, through libsystemd: {by_libsystemd}");
    let header = std::process::Command::new("journalctl")
        .arg(format!("--namespace={}", j.namespace()))
        .arg("--header")
        .output()
        .unwrap();
    let header = String::from_utf8_lossy(&header.stdout);
    eprintln!(
        "{}",
        header
            .lines()
            .filter(|l| l.contains("Incompatible flags"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    assert!(
        by_libsystemd >= compressed && by_file >= ALL as u64 * 3 / 4,
        "expected most entries read from the files and the {compressed} compressed ones \
         through libsystemd: {by_file} and {by_libsystemd}"
    );

    let (through_libsystemd, text) = ship(
        &j,
        &[("JOURNAL_FANOUT_READ_FIELDS", "libsystemd".into())],
        ALL,
        || {},
    );
    assert_eq!(
        metric(&text, r#"journal_entries_read_total{reader="file"}"#),
        Some(0)
    );
    assert_eq!(direct.len(), ALL);
    for (i, (a, b)) in direct.iter().zip(&through_libsystemd).enumerate() {
        assert_eq!(a, b, "line {i} differs");
    }
    assert_eq!(direct, through_libsystemd);
    let long = direct.iter().filter(|l| l.contains("\"long-")).count();
    assert_eq!(long, ALL / LONG_EVERY);
}

#[test]
fn compact_files_read_directly_ship_what_libsystemd_reads() {
    same_as_libsystemd(Journald::start_with_config(
        "RuntimeMaxFileSize=512K\nRuntimeMaxUse=256M\n",
    ));
}

#[test]
fn regular_layout_files_read_directly_ship_what_libsystemd_reads() {
    same_as_libsystemd(Journald::start_with_env(
        "RuntimeMaxFileSize=512K\nRuntimeMaxUse=256M\n",
        &[("SYSTEMD_JOURNAL_COMPACT", "0")],
    ));
}
