//! journal-fanout reads entries' fields straight from the journal files
//! (`source::journal_file`), and libsystemd only where that reader declines. What it ships must
//! be exactly what reading every field through libsystemd ships
//! (`JOURNAL_FANOUT_READ_FIELDS=libsystemd`): over rotated files, compressed fields, compact
//! and regular file layouts, and files that grow and rotate while they are read. Entries are
//! also read ahead of libsystemd (`FieldReader::read_next`), and the position saved must then
//! be a cursor libsystemd itself writes for that entry; files of two journals whose entries
//! interleave must still be read in libsystemd's order.

mod common;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::{metric, metrics, stdout_from_head, write_entries, Fanout};
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
) -> (Vec<String>, String, String) {
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
    (f.stdout_lines(), text, saved_cursor(state.path()))
}

/// The cursor journal-fanout saved in `state` (one destination: one cursor file).
fn saved_cursor(state: &std::path::Path) -> String {
    let files: Vec<_> = std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cursor"))
        .collect();
    assert_eq!(files.len(), 1, "one cursor file in {}", state.display());
    std::fs::read_to_string(&files[0])
        .unwrap()
        .trim()
        .to_string()
}

/// Every entry's cursor as libsystemd writes it (`journalctl -o json`'s `__CURSOR`).
fn cursors(journalctl_args: &[String]) -> Vec<String> {
    let out = std::process::Command::new("journalctl")
        .args(journalctl_args)
        .args(["-o", "json", "--output-fields=__CURSOR"])
        .output()
        .expect("journalctl runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["__CURSOR"].as_str().map(str::to_string))
        .collect()
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
    let (direct, text, cursor) = ship(&j, &[], ALL, || {
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

    // Read ahead of libsystemd or not, the position saved is a cursor libsystemd wrote.
    let all = cursors(&[format!("--namespace={}", j.namespace())]);
    assert!(
        all.contains(&cursor),
        "the saved cursor {cursor:?} is none of the journal's {} cursors",
        all.len()
    );

    let (through_libsystemd, text, _) = ship(
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

/// Two journals (two journald namespaces: two sequences) written in turns, their files in one
/// directory: libsystemd merges their entries by time, and journal-fanout, reading ahead of it
/// where it can, ships them in the same order, each once.
#[test]
fn files_of_two_journals_interleaved_ship_in_libsystemds_order() {
    const EACH: usize = 1_000;
    let (a, b) = (Journald::start(), Journald::start());
    for turn in 0..EACH / 50 {
        for (j, name) in [(&a, "a"), (&b, "b")] {
            write_entries(
                j.socket(),
                (turn * 50..turn * 50 + 50).map(|i| {
                    let mut e = entry(i);
                    e[0].1 = format!("{name}-{i} {}", "y".repeat(100));
                    e
                }),
            );
            // journald stamps entries when it reads them: wait for these before the other's.
            j.wait_for_count(
                &["SYSLOG_IDENTIFIER=file-reader"],
                turn * 50 + 50,
                Duration::from_secs(30),
            );
        }
    }
    a.sync();
    b.sync();
    let dir = tempfile::tempdir().unwrap();
    for (j, name) in [(&a, "a"), (&b, "b")] {
        for e in std::fs::read_dir(j.directory()).unwrap() {
            let from = e.unwrap().path();
            if from.extension().is_some_and(|x| x == "journal") {
                let file = from.file_name().unwrap().to_string_lossy().to_string();
                std::fs::copy(&from, dir.path().join(format!("{name}-{file}"))).unwrap();
            }
        }
    }
    let ship_dir = |env: &[(&str, String)]| -> Vec<String> {
        let state = tempfile::tempdir().unwrap();
        let args = [
            "--journal-dir",
            dir.path().to_str().unwrap(),
            "--dst",
            "stdout",
            "--from",
            "head",
            "--state-dir",
            state.path().to_str().unwrap(),
            "--flush-timeout",
            "100ms",
        ];
        let mut f = Fanout::start(&args, env);
        wait_until(Duration::from_secs(60), "every line on stdout", || {
            (f.stdout_lines().len() >= 2 * EACH).then_some(())
        });
        assert!(f.terminate().success(), "{}", f.stderr_text());
        f.stdout_lines()
    };
    let direct = ship_dir(&[]);
    let through_libsystemd = ship_dir(&[("JOURNAL_FANOUT_READ_FIELDS", "libsystemd".into())]);
    assert_eq!(direct.len(), 2 * EACH);
    let turns = |lines: &[String]| {
        lines
            .windows(2)
            .filter(|w| w[0].contains("\"a-") != w[1].contains("\"a-"))
            .count()
    };
    assert!(
        turns(&through_libsystemd) >= EACH / 50,
        "the two journals' entries should interleave in libsystemd's order"
    );
    for (i, (x, y)) in direct.iter().zip(&through_libsystemd).enumerate() {
        assert_eq!(x, y, "line {i} differs");
    }
    assert_eq!(direct, through_libsystemd);
}

/// Removes a persistent namespace's journal directory when the test ends.
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// With persistent storage journald keeps an unprivileged user's entries in a file of their
/// own (`user-1000.journal`), which systemd 252 gives a sequence ID of its own: libsystemd
/// merges the two files by time, and their entries interleave. Read ahead of libsystemd where
/// that is safe or not, the same lines ship, in the same order, each once.
#[test]
fn system_and_user_files_interleaved_ship_what_libsystemd_reads() {
    const TURNS: usize = 20;
    const EACH: usize = 50;
    let j = Journald::start_with_config("Storage=persistent");
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap();
    let persistent = std::path::PathBuf::from(format!(
        "/var/log/journal/{}.{}",
        machine.trim(),
        j.namespace()
    ));
    let _cleanup = RemoveDir(persistent.clone());
    let line = |who: &str, i: usize| {
        let mut e = entry(i);
        e[0].1 = format!("{who}-{i} {}", "z".repeat(80));
        e.retain(|(k, _)| k != "CODE_FILE" && k != "CODE_LINE" && k != "MESSAGE_ID");
        e
    };
    for turn in 0..TURNS {
        let range = turn * EACH..(turn + 1) * EACH;
        write_entries(j.socket(), range.clone().map(|i| line("root", i)));
        // The same, sent by a process running as uid 1000 (journald files it by sender).
        let datagrams: Vec<String> = range
            .map(|i| {
                line("user", i)
                    .iter()
                    .map(|(k, v)| format!("{k}={}\n", v.replace('\n', " ")))
                    .collect()
            })
            .collect();
        let script = "import json, socket, sys\n\
                      s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                      for d in json.load(sys.stdin):\n    s.sendto(d.encode(), sys.argv[1])\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(j.socket())
            .stdin(std::process::Stdio::piped())
            .uid(1000)
            .gid(1000)
            .spawn()
            .expect("python3 runs (apt-get install -y python3)");
        serde_json::to_writer(child.stdin.take().unwrap(), &datagrams).unwrap();
        assert!(
            child.wait().unwrap().success(),
            "the uid 1000 sender failed"
        );
    }
    j.wait_for_count(
        &["SYSLOG_IDENTIFIER=file-reader"],
        2 * TURNS * EACH,
        Duration::from_secs(60),
    );
    j.sync();
    let files: Vec<String> = std::fs::read_dir(&persistent)
        .unwrap_or_else(|e| panic!("no persistent journal at {}: {e}", persistent.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.starts_with("user-1000")),
        "journald should keep uid 1000's entries in a file of their own: {files:?}"
    );

    let (direct, _, cursor) = ship(&j, &[], 2 * TURNS * EACH, || {});
    let (through_libsystemd, _, _) = ship(
        &j,
        &[("JOURNAL_FANOUT_READ_FIELDS", "libsystemd".into())],
        2 * TURNS * EACH,
        || {},
    );
    let switches = direct
        .windows(2)
        .filter(|w| w[0].contains("\"root-") != w[1].contains("\"root-"))
        .count();
    assert!(
        switches >= TURNS,
        "the two files' entries should interleave ({switches} switches)"
    );
    assert_eq!(direct.len(), 2 * TURNS * EACH);
    for (i, (x, y)) in direct.iter().zip(&through_libsystemd).enumerate() {
        assert_eq!(x, y, "line {i} differs");
    }
    assert_eq!(direct, through_libsystemd);
    let all = cursors(&[format!("--namespace={}", j.namespace())]);
    assert!(
        all.contains(&cursor),
        "the saved cursor {cursor:?} is no entry's cursor"
    );
}
