//! When nothing can be shipped because of where journal-fanout reads: no journal files there
//! (a warning naming the place; it keeps waiting and reads files that appear later), or files
//! it may not open (libsystemd skips those silently; journal-fanout says who it runs as and
//! how to fix it, and exits with status 2). Permissions are tested for real: journal files
//! copied from a private journald namespace, read as user `nobody` through `setpriv`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{container_line, metric, metrics, write_entries, Fanout};
use serde_json::Value;
use testkit::{free_port, wait_until, Journald};

/// A private namespace holding `n` container lines, synced to its files.
fn journal_with_lines(n: usize) -> Journald {
    let j = Journald::start();
    write_entries(
        j.socket(),
        (0..n).map(|i| container_line("acc", "c", &format!("line-{i}"))),
    );
    j.wait_for_count(&["CONTAINER_NAME=c"], n, Duration::from_secs(30));
    j.sync();
    j
}

/// A directory anyone may enter, owned by root.
fn open_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Copy the namespace's journal files into `dir` as `owner:group`, mode 0640 — how journald
/// leaves them. Each lands under a temporary name, then is renamed into place, so a reader
/// watching `dir` never sees half a file.
fn copy_journal_files(j: &Journald, dir: &Path, group: u32) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(j.directory()).unwrap() {
        let from = e.unwrap().path();
        if from.extension().is_none_or(|x| x != "journal") {
            continue;
        }
        let to = dir.join(from.file_name().unwrap());
        let tmp = dir.join(".copying");
        std::fs::copy(&from, &tmp).unwrap();
        std::os::unix::fs::chown(&tmp, Some(0), Some(group)).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::rename(&tmp, &to).unwrap();
        out.push(to);
    }
    assert!(!out.is_empty(), "no journal files in {:?}", j.directory());
    out
}

/// A state directory the unprivileged user may write.
fn state_dir_for_nobody() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(d.path(), Some(uid_of("nobody")), None).unwrap();
    d
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no user {user} on this machine"))
}

fn gid_of(group: &str) -> u32 {
    let out = Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!("no group {group} on this machine: apt-get install -y systemd (creates systemd-journal)")
        })
}

/// Run as `nobody` (group `nogroup`) with exactly the supplementary groups given.
fn setpriv(groups: &[u32]) -> Vec<String> {
    assert!(
        Path::new("/usr/bin/setpriv").exists(),
        "setpriv is missing: apt-get install -y util-linux"
    );
    let mut w = vec![
        "setpriv".to_string(),
        "--reuid=nobody".into(),
        "--regid=nogroup".into(),
    ];
    if groups.is_empty() {
        w.push("--clear-groups".into());
    } else {
        let g: Vec<String> = groups.iter().map(u32::to_string).collect();
        w.push(format!("--groups={}", g.join(",")));
    }
    w
}

fn args<'a>(dir: &'a Path, state: &'a Path, metrics_port: u16) -> Vec<String> {
    vec![
        "--journal-dir".into(),
        dir.to_str().unwrap().into(),
        "--dst".into(),
        "stdout".into(),
        "--from".into(),
        "head".into(),
        "--state-dir".into(),
        state.to_str().unwrap().into(),
        "--flush-timeout".into(),
        "200ms".into(),
        "--metrics-address".into(),
        format!("127.0.0.1:{metrics_port}"),
    ]
}

fn start(wrapper: &[String], args: &[String]) -> Fanout {
    let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Fanout::start_under(&w, &a, &[])
}

/// Waits for `n` lines on stdout: `line-0` .. `line-{n-1}`, in order.
fn assert_lines_shipped(f: &Fanout, n: usize) {
    let got = wait_until(Duration::from_secs(30), "the lines on stdout", || {
        let m = messages(f);
        (m.len() >= n).then_some(m)
    });
    assert_eq!(got, (0..n).map(|i| format!("line-{i}")).collect::<Vec<_>>());
}

/// The journal file gauges on the metrics endpoint at `port`.
fn assert_file_gauges(port: u16, readable: u64, unreadable: u64) {
    let text = wait_until(Duration::from_secs(10), "metrics", || metrics(port));
    assert_eq!(
        metric(&text, "journal_files_readable"),
        Some(readable),
        "{text}"
    );
    assert_eq!(
        metric(&text, "journal_files_unreadable"),
        Some(unreadable),
        "{text}"
    );
}

fn messages(f: &Fanout) -> Vec<String> {
    f.stdout_lines()
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["event"]["message"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn empty_journal_dir_warns_where_it_looked_then_reads_files_that_appear() {
    let dir = open_dir();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut f = start(&[], &args(dir.path(), state.path(), port));
    let want = format!(
        "no journal files to read: looked in {} (has no journal files)",
        dir.path().display()
    );
    let line = wait_until(Duration::from_secs(30), "the warning on stderr", || {
        f.stderr_text()
            .lines()
            .find(|l| l.contains(&want))
            .map(str::to_string)
    });
    assert!(line.contains(" WARN "), "{line}");
    assert!(
        line.contains("keeps waiting and reads the files when they appear"),
        "{line}"
    );
    assert_file_gauges(port, 0, 0);
    assert!(f.is_running(), "{}", f.stderr_text());

    // The journal arrives later (rotated or mounted into place): it is read.
    let j = journal_with_lines(20);
    copy_journal_files(&j, dir.path(), 0);
    assert_lines_shipped(&f, 20);
    assert!(f.terminate().success());
}

#[test]
fn files_appearing_in_an_empty_journal_dir_are_read_from_their_first_line_with_from_tail() {
    // libsystemd watching the directory would pick the files up itself, from where `--from
    // tail` left it: past their lines.
    let dir = open_dir();
    let state = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), state.path(), free_port());
    let from = a.iter().position(|x| x == "--from").unwrap();
    a[from + 1] = "tail".into();
    let mut f = start(&[], &a);
    wait_until(Duration::from_secs(30), "the warning on stderr", || {
        f.stderr_text()
            .contains("no journal files to read")
            .then_some(())
    });
    let j = journal_with_lines(20);
    copy_journal_files(&j, dir.path(), 0);
    assert_lines_shipped(&f, 20);
    assert!(f.terminate().success());
}

#[test]
fn missing_journal_dir_warns_and_waits_for_it() {
    let parent = open_dir();
    let dir = parent.path().join("journal");
    let state = tempfile::tempdir().unwrap();
    let mut f = start(&[], &args(&dir, state.path(), free_port()));
    let want = format!("looked in {} (does not exist)", dir.display());
    wait_until(Duration::from_secs(30), "the warning on stderr", || {
        f.stderr_text().contains(&want).then_some(())
    });
    let j = journal_with_lines(5);
    std::fs::create_dir(&dir).unwrap();
    copy_journal_files(&j, &dir, 0);
    assert_lines_shipped(&f, 5);
    assert!(f.terminate().success());
}

#[test]
fn namespace_created_after_the_start_is_read_from_its_first_line() {
    // The namespace's journald is not running and its directory does not exist yet.
    let mut j = Journald::start();
    j.stop();
    // (journald may not have created it yet)
    let _ = std::fs::remove_dir_all(j.directory());
    assert!(!j.directory().exists());
    let state = tempfile::tempdir().unwrap();
    // `--from tail` (the default): lines of a journal that did not exist at the start are new.
    let mut f = Fanout::start(
        &[
            "--journal-namespace",
            j.namespace(),
            "--dst",
            "stdout",
            "--state-dir",
            state.path().to_str().unwrap(),
            "--flush-timeout",
            "200ms",
        ],
        &[],
    );
    let want = format!("looked in /var/log/journal/{}", {
        let d = j.directory();
        d.file_name().unwrap().to_string_lossy().into_owned()
    });
    let line = wait_until(Duration::from_secs(30), "the warning on stderr", || {
        f.stderr_text()
            .lines()
            .find(|l| l.contains(&want))
            .map(str::to_string)
    });
    assert!(
        line.contains(&format!("{} (does not exist)", j.directory().display()))
            && line.contains(&format!(
                "systemd-journald@{} creates one of them when it first starts",
                j.namespace()
            )),
        "{line}"
    );
    j.restart();
    write_entries(
        j.socket(),
        (0..10).map(|i| container_line("acc", "c", &format!("line-{i}"))),
    );
    assert_lines_shipped(&f, 10);
    assert!(f.terminate().success());
}

#[test]
fn journal_files_it_may_not_open_are_a_clear_error_and_exit_2() {
    let j = journal_with_lines(10);
    let dir = open_dir();
    // root:root 0640: `nobody` without groups may not open them.
    let files = copy_journal_files(&j, dir.path(), 0);
    let state = state_dir_for_nobody();
    let mut f = start(&setpriv(&[]), &args(dir.path(), state.path(), free_port()));
    let status = wait_until(Duration::from_secs(30), "journal-fanout to exit", || {
        f.child.try_wait().unwrap()
    });
    let err = f.stderr_text();
    assert_eq!(status.code(), Some(2), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains(" ERROR "))
        .unwrap_or_else(|| panic!("an error line in: {err}"));
    for want in [
        format!(
            "cannot read the journal: this process may not open the journal files in {}, and there are no others, so nothing would ever be shipped",
            dir.path().display()
        ),
        format!("{}: Permission denied", files[0].display()),
        "owner root:root, mode 0640".to_string(),
        "runs as uid 65534 (nobody), gid 65534 (nogroup), no supplementary groups".into(),
        "add the user to the systemd-journal group".into(),
        "SupplementaryGroups=systemd-journal".into(),
        "docker run --group-add $(getent group systemd-journal | cut -d: -f3)".into(),
    ] {
        assert!(line.contains(&want), "{want:?} not in: {line}");
    }
    assert!(f.stdout_lines().is_empty());
    // It stopped before it started reading.
    assert!(!err.contains("journal-fanout started"), "{err}");
}

#[test]
fn journal_files_readable_through_their_group_are_read() {
    let j = journal_with_lines(10);
    let dir = open_dir();
    // As journald leaves them: root:systemd-journal 0640; the process has that group
    // (SupplementaryGroups=systemd-journal, docker run --group-add).
    let journal_gid = gid_of("systemd-journal");
    copy_journal_files(&j, dir.path(), journal_gid);
    let state = state_dir_for_nobody();
    let port = free_port();
    let mut f = start(
        &setpriv(&[journal_gid]),
        &args(dir.path(), state.path(), port),
    );
    assert_lines_shipped(&f, 10);
    assert_file_gauges(port, 1, 0);
    assert!(f.terminate().success());
    let err = f.stderr_text();
    assert!(!err.contains(" ERROR ") && !err.contains(" WARN "), "{err}");
}

#[test]
fn some_files_unreadable_is_an_error_but_the_rest_is_shipped() {
    let j = journal_with_lines(10);
    let dir = open_dir();
    let journal_gid = gid_of("systemd-journal");
    copy_journal_files(&j, dir.path(), journal_gid);
    // A second file (another copy, as if of another machine) only root may read.
    let hidden = dir.path().join("hidden.journal");
    std::fs::copy(dir.path().join("system.journal"), &hidden).unwrap();
    std::os::unix::fs::chown(&hidden, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o600)).unwrap();
    let state = state_dir_for_nobody();
    let port = free_port();
    let mut f = start(
        &setpriv(&[journal_gid]),
        &args(dir.path(), state.path(), port),
    );
    assert_lines_shipped(&f, 10);
    assert_file_gauges(port, 1, 1);
    let err = f.stderr_text();
    let line = err
        .lines()
        .find(|l| l.contains(" ERROR "))
        .unwrap_or_else(|| panic!("an error line in: {err}"));
    assert!(
        line.contains(&format!(
            "1 of the 2 journal files in {} cannot be opened for reading; lines in them are not shipped",
            dir.path().display()
        )) && line.contains(&format!("{}: Permission denied", hidden.display())),
        "{line}"
    );
    assert!(f.terminate().success());
}
