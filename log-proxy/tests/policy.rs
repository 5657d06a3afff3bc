//! The rate-limit policy file against real Docker containers and a real journald: budgets by
//! image, name and label, byte budgets, reloads under load, and `check-config`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{n_dropped, run_container_with, Proxy, NOTICE_ID};
use testkit::{docker, field, unique_name, wait_until, Entry, Journald, BUSYBOX_IMAGE};

const BIN: &str = env!("CARGO_BIN_EXE_log-proxy");
const NO_DOCKER: &[&str] = &["--docker-host", "unix:///nonexistent/docker.sock"];

fn write_policy(text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("policy"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Replace the file the way an editor does: write beside it, rename over it.
fn rewrite(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A container's lines in journald: (delivered messages, N_DROPPED sum, N_DROPPED_BYTES sum).
fn accounting(jd: &Journald, name: &str) -> (Vec<Entry>, u64, u64) {
    let e = jd.entries_matching(&[&format!("CONTAINER_NAME={name}")]);
    let notices: Vec<&Entry> = e
        .iter()
        .filter(|e| field(e, "MESSAGE_ID").as_deref() == Some(NOTICE_ID))
        .collect();
    let dropped = notices.iter().map(|e| n_dropped(e)).sum();
    let dropped_bytes = notices
        .iter()
        .filter_map(|e| field(e, "N_DROPPED_BYTES")?.parse::<u64>().ok())
        .sum();
    let lines = e
        .iter()
        .filter(|e| field(e, "MESSAGE_ID").is_none())
        .cloned()
        .collect();
    (lines, dropped, dropped_bytes)
}

/// Wait until the container's delivered lines plus its notices' N_DROPPED make `total`.
fn settled(jd: &Journald, name: &str, total: u64) -> (Vec<Entry>, u64) {
    let mut seen = (0, 0);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(
            Duration::from_secs(60),
            "delivered + dropped to add up",
            || {
                let (lines, dropped, _) = accounting(jd, name);
                seen = (lines.len() as u64, dropped);
                (lines.len() as u64 + dropped == total).then_some((lines, dropped))
            },
        )
    }));
    r.unwrap_or_else(|_| {
        panic!(
            "{name}: {} delivered + {} reported dropped != {total}",
            seen.0, seen.1
        )
    })
}

#[test]
fn containers_get_the_budget_of_the_rule_that_matches_them() {
    docker();
    let jd = Journald::start();
    let batch_image = format!("registry.example.com/batch/{}:1", unique_name("etl"));
    assert!(Command::new("docker")
        .args(["tag", BUSYBOX_IMAGE, &batch_image])
        .status()
        .unwrap()
        .success());
    let policy = write_policy(
        r#"
[defaults]
lines = 500
interval = "5s"

[[rule]]
name = "batch-jobs"
match.image = "registry.example.com/batch/*"
lines = 1000

[[rule]]
name = "payments"
match.label."com.amazonaws.ecs.task-definition-family" = "payments-*"
lines = 2000

[[rule]]
name = "debug-sidecars"
match.name = "*-debug"
lines = 300
"#,
    );
    let proxy = Proxy::start(jd.socket(), &["--policy", policy.to_str().unwrap()]);
    const LINES: u64 = 20_000;
    let flood = format!("seq 1 {LINES}");
    let by_image = unique_name("batch");
    let by_label = unique_name("pay");
    let by_name = format!("{}-debug", unique_name("side"));
    let nothing = unique_name("plain");
    let family = "com.amazonaws.ecs.task-definition-family=payments-api";
    let mut children = vec![
        run_container_with(&proxy, "rfc5424micro", &by_image, &[], &batch_image, &flood),
        run_container_with(
            &proxy,
            "rfc5424micro",
            &by_label,
            &["--label", family],
            BUSYBOX_IMAGE,
            &flood,
        ),
        run_container_with(&proxy, "rfc5424micro", &by_name, &[], BUSYBOX_IMAGE, &flood),
        run_container_with(&proxy, "rfc5424micro", &nothing, &[], BUSYBOX_IMAGE, &flood),
    ];
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }
    for (name, rule, budget) in [
        (&by_image, "batch-jobs", 1000u64),
        (&by_label, "payments", 2000),
        (&by_name, "debug-sidecars", 300),
        (&nothing, "default", 500),
    ] {
        let (lines, dropped) = settled(&jd, name, LINES);
        let delivered = lines.len() as u64;
        // The flood takes well under an interval: the budget, plus at most one interval's refill.
        assert!(
            delivered >= budget && delivered <= 2 * budget,
            "{name} ({rule}): {delivered} delivered, budget {budget} per 5s"
        );
        assert_eq!(delivered + dropped, LINES);
        let notices = jd.entries_matching(&[
            &format!("CONTAINER_NAME={name}"),
            &format!("MESSAGE_ID={NOTICE_ID}"),
        ]);
        assert!(
            notices
                .iter()
                .all(|n| field(n, "LOG_PROXY_RULE").as_deref() == Some(rule)),
            "{name}: {notices:?}"
        );
        let text = field(&notices[0], "MESSAGE").unwrap();
        let suffix = if rule == "default" {
            String::new()
        } else {
            format!(" (rule {rule})")
        };
        assert_eq!(
            text,
            format!("log-proxy: beginning to drop log lines, the container is over its limit of {budget} lines per 5s{suffix}")
        );
    }
    let m = proxy.metrics();
    assert!(
        m.contains("log_proxy_rule_dropped_lines_total{rule=\"debug-sidecars\"}"),
        "{m}"
    );
    let _ = Command::new("docker").args(["rmi", &batch_image]).status();
}

#[test]
fn a_byte_budget_cuts_large_lines_and_the_dropped_bytes_add_up() {
    let jd = Journald::start();
    let policy = write_policy("[defaults]\nlines = 0\nbytes = \"1MiB\"\ninterval = \"5s\"\n");
    let proxy = Proxy::start(
        jd.socket(),
        &[
            NO_DOCKER[0],
            NO_DOCKER[1],
            "--policy",
            policy.to_str().unwrap(),
        ],
    );
    let tag = "abcdef012345";
    let body = "x".repeat(64 * 1024);
    let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
    for i in 0..1000 {
        let msg = format!("{i:05} {}", &body[6..]);
        assert_eq!(msg.len(), 64 * 1024);
        let d = format!("<30>1 2026-11-22T13:32:28.396128Z vm {tag} 1 {tag} - {msg}");
        s.send_to(d.as_bytes(), &proxy.socket).unwrap();
    }
    let total_bytes = 1000 * 64 * 1024u64;
    let filter = format!("CONTAINER_TAG={tag}");
    let (lines, dropped, dropped_bytes) = wait_until(
        Duration::from_secs(60),
        "the byte accounting to add up",
        || {
            let e = jd.entries_matching(&[&filter]);
            let notices: Vec<&Entry> = e
                .iter()
                .filter(|e| field(e, "MESSAGE_ID").as_deref() == Some(NOTICE_ID))
                .collect();
            let dropped: u64 = notices.iter().map(|e| n_dropped(e)).sum();
            let bytes: u64 = notices
                .iter()
                .filter_map(|e| field(e, "N_DROPPED_BYTES")?.parse::<u64>().ok())
                .sum();
            let lines = e.len() as u64 - notices.len() as u64;
            (lines + dropped == 1000).then_some((lines, dropped, bytes))
        },
    );
    let delivered_bytes = lines * 64 * 1024;
    // 1 MiB is 16 lines of 64 KiB; the sends take well under an interval.
    assert!(
        (16..=32).contains(&lines),
        "{lines} lines delivered under a 1 MiB budget"
    );
    assert!(dropped > 900);
    assert_eq!(
        delivered_bytes + dropped_bytes,
        total_bytes,
        "N_DROPPED_BYTES adds up exactly"
    );
    let notice = jd.entries_matching(&[&filter, "N_DROPPED_BYTES=0"]);
    assert_eq!(
        field(&notice[0], "MESSAGE").unwrap(),
        "log-proxy: beginning to drop log lines, the container is over its limit of 1 MiB per 5s"
    );
    assert!(proxy.metrics().contains(&format!(
        "log_proxy_rule_dropped_bytes_total{{rule=\"default\"}} {dropped_bytes}"
    )));
}

#[test]
fn a_reload_under_load_moves_containers_and_a_bad_file_keeps_the_running_policy() {
    docker();
    let jd = Journald::start();
    let a = unique_name("ra");
    let b = unique_name("rb");
    let policy_text = |la: u32, lb: u32| {
        format!(
            "[defaults]\ninterval = \"5s\"\n[[rule]]\nname = \"a\"\nmatch.name = \"{a}\"\nlines = {la}\n[[rule]]\nname = \"b\"\nmatch.name = \"{b}\"\nlines = {lb}\n"
        )
    };
    let policy = write_policy(&policy_text(500, 500));
    let mut proxy = Proxy::start(jd.socket(), &["--policy", policy.to_str().unwrap()]);
    // 1,000 lines every 0.5 s for 15 s each: 30,000 lines, 2,000 lines/s.
    const LINES: u64 = 30_000;
    let script = "for s in $(seq 0 29); do seq $((s*1000+1)) $((s*1000+1000)); sleep 0.5; done";
    let mut ca = run_container_with(&proxy, "rfc5424micro", &a, &[], BUSYBOX_IMAGE, script);
    let mut cb = run_container_with(&proxy, "rfc5424micro", &b, &[], BUSYBOX_IMAGE, script);
    wait_until(Duration::from_secs(30), "both containers to log", || {
        (!accounting(&jd, &a).0.is_empty() && !accounting(&jd, &b).0.is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2)); // both are over their budgets by now
    rewrite(&policy, &policy_text(5000, 100));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(proxy.child.id() as i32, libc::SIGHUP) };
    let reloaded = Instant::now();
    let reloaded_at = std::time::SystemTime::now();
    wait_until(Duration::from_secs(10), "the reload to be logged", || {
        proxy
            .stderr()
            .contains("policy reloaded: 2 rules;")
            .then_some(())
    });
    // Watch a whole interval from one interval after the reload.
    std::thread::sleep(Duration::from_secs(11).saturating_sub(reloaded.elapsed()));
    std::fs::write(&policy, "[defaults]\nlines = \"many\"\n").unwrap();
    unsafe { libc::kill(proxy.child.id() as i32, libc::SIGHUP) };
    wait_until(
        Duration::from_secs(10),
        "the bad file to be refused",
        || {
            proxy
                .stderr()
                .contains("the policy was not reloaded and the running one stays")
                .then_some(())
        },
    );
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "a bad file stopped log-proxy"
    );
    let err = proxy.stderr();
    let refusal = err
        .lines()
        .find(|l| l.contains(&format!("SIGHUP: policy {}: ", policy.display())))
        .unwrap_or_else(|| panic!("no refusal after SIGHUP:\n{err}"));
    assert!(
        refusal.contains("was not reloaded and the running one stays"),
        "{refusal}"
    );
    assert!(
        refusal.contains("line 2, column 9: invalid type: string \"many\", expected u32"),
        "the reason says where and what: {refusal}"
    );
    assert!(ca.wait().unwrap().success() && cb.wait().unwrap().success());

    let window = |lines: &[Entry]| {
        let from = reloaded_at + Duration::from_secs(5);
        let to = from + Duration::from_secs(5);
        lines
            .iter()
            .filter(|e| {
                let us: u64 = field(e, "__REALTIME_TIMESTAMP").unwrap().parse().unwrap();
                let t = std::time::UNIX_EPOCH + Duration::from_micros(us);
                t >= from && t < to
            })
            .count() as u64
    };
    for (name, new_budget) in [(&a, 5000u64), (&b, 100)] {
        let (lines, _) = settled(&jd, name, LINES);
        let in_window = window(&lines);
        // 10,000 offered per 5 s: the new budget holds, give or take one refill.
        assert!(
            in_window >= new_budget.min(9000) * 8 / 10 && in_window <= 2 * new_budget,
            "{name}: {in_window} lines in the interval after the reload, new budget {new_budget} per 5s"
        );
        let numbers: BTreeSet<u64> = lines
            .iter()
            .filter_map(|e| field(e, "MESSAGE")?.parse().ok())
            .collect();
        assert_eq!(numbers.len(), lines.len(), "{name}: a line delivered twice");
    }
    assert_eq!(proxy.terminate(), 0);
}

#[test]
fn a_changed_file_is_reloaded_without_a_signal() {
    let jd = Journald::start();
    let policy = write_policy("[defaults]\nlines = 500\n");
    let proxy = Proxy::start(
        jd.socket(),
        &[
            NO_DOCKER[0],
            NO_DOCKER[1],
            "--policy",
            policy.to_str().unwrap(),
        ],
    );
    rewrite(
        &policy,
        "[defaults]\nlines = 7\n[[rule]]\nname = \"x\"\nmatch.name = \"x\"\n",
    );
    wait_until(
        Duration::from_secs(10),
        "the change to be picked up",
        || {
            let e = proxy.stderr();
            (e.contains("the policy file changed: reloading the policy")
                && e.contains("policy reloaded: 1 rules;"))
            .then_some(())
        },
    );
}

fn check_config(file: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(NO_DOCKER)
        .args(["check-config", file.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_good_files_and_names_what_is_wrong() {
    let good = write_policy(
        "[defaults]\nlines = 500\nbytes = \"4MiB\"\n[[rule]]\nname = \"all\"\nmatch.name = \"*\"\nlines = 50\n[[rule]]\nname = \"late\"\nmatch.image = \"x/*\"\n",
    );
    let (code, out, err) = check_config(&good);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "warning: rule \"late\" is never used: rule \"all\" before it matches every container\n\
             {}: OK, 2 rules; defaults 500 lines / 4 MiB per 5s\n  rule all: 50 lines / 4 MiB per 5s\n  rule late: 500 lines / 4 MiB per 5s\n\
             (Docker at unix:///nonexistent/docker.sock did not answer, so no containers are shown: cannot reach Docker at unix:///nonexistent/docker.sock: Socket not found: /nonexistent/docker.sock)\n",
            good.display()
        )
    );
    for (text, want) in [
        (
            "[defaults]\nlins = 3\n",
            "unknown field `lins`, expected one of `lines`, `bytes`, `interval`, `errors`",
        ),
        (
            "[[rule]]\nname = \"a\"\nmatch.name = \"[x\"\n",
            "rule \"a\": match.name = \"[x\" is not a glob",
        ),
        (
            "[defaults]\nbytes = \"4 potatoes\"\n",
            "[defaults]: bytes = \"4 potatoes\" is not a size like \"4MiB\"",
        ),
        ("[[rule]]\nlines = 3\n", "missing field `name`"),
    ] {
        let bad = write_policy(text);
        let (code, out, err) = check_config(&bad);
        assert_eq!(code, 2, "{text}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("log-proxy: policy {}: ", bad.display())),
            "{err}"
        );
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
    let (code, _, err) = check_config(Path::new("/nonexistent/policy.toml"));
    assert_eq!(code, 2);
    assert_eq!(
        err.trim_end(),
        "log-proxy: cannot read the policy /nonexistent/policy.toml: No such file or directory (os error 2)"
    );
}
