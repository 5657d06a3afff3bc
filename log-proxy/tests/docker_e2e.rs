//! End to end with a real Docker engine and a real journald: containers log through Docker's
//! syslog driver into log-proxy, which limits the noisy one and leaves the quiet one alone.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{n_dropped, run_container, Proxy, NOTICE_ID};
use testkit::{docker, docker_cmd, field, unique_name, Journald, BUSYBOX_IMAGE};

const NOISY_LINES: u64 = 20_000;
const QUIET_LINES: usize = 200;

fn quiet_and_noisy(format: &str) {
    docker();
    let jd = Journald::start();
    let proxy = Proxy::start(jd.socket(), &["--burst", "500", "--interval", "5s"]);
    let quiet = unique_name("quiet");
    let noisy = unique_name("noisy");
    let mut q = run_container(
        &proxy,
        format,
        &quiet,
        &format!(
            "for i in $(seq 1 {QUIET_LINES}); do echo quiet line $i; done; echo quiet error >&2"
        ),
    );
    let mut n = run_container(&proxy, format, &noisy, &format!("seq 1 {NOISY_LINES}"));
    assert!(q.wait().unwrap().success(), "quiet container failed");
    assert!(n.wait().unwrap().success(), "noisy container failed");

    // Quiet: every line, with the fields Docker's journald driver writes.
    let quiet_entries = jd.wait_for_count(
        &[&format!("CONTAINER_NAME={quiet}")],
        QUIET_LINES + 1,
        Duration::from_secs(30),
    );
    let id_full = docker_id_of(&quiet_entries);
    for (i, e) in quiet_entries
        .iter()
        .filter(|e| field(e, "PRIORITY").as_deref() == Some("6"))
        .enumerate()
    {
        assert_eq!(
            field(e, "MESSAGE").unwrap(),
            format!("quiet line {}", i + 1)
        );
        assert_eq!(field(e, "CONTAINER_ID").unwrap(), id_full[..12]);
        assert_eq!(field(e, "CONTAINER_ID_FULL").unwrap(), id_full);
        assert_eq!(field(e, "CONTAINER_TAG").unwrap(), id_full[..12]);
        assert_eq!(field(e, "SYSLOG_IDENTIFIER").unwrap(), id_full[..12]);
        assert_eq!(field(e, "IMAGE_NAME").unwrap(), BUSYBOX_IMAGE);
        assert!(
            field(e, "MESSAGE_ID").is_none(),
            "quiet container got a notice: {e:?}"
        );
    }
    let err = quiet_entries
        .iter()
        .find(|e| field(e, "MESSAGE").as_deref() == Some("quiet error"))
        .expect("stderr line of the quiet container");
    assert_eq!(field(err, "PRIORITY").as_deref(), Some("3"));

    // Noisy: delivered lines plus the notices' N_DROPPED add up exactly to what it wrote,
    // including the last notice written after the container exited.
    let filter = format!("CONTAINER_NAME={noisy}");
    let mut seen = (0, 0);
    let entries = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        testkit::wait_until(Duration::from_secs(40), "noisy accounting to add up", || {
            let e = jd.entries_matching(&[&filter]);
            let lines = e.iter().filter(|e| field(e, "MESSAGE_ID").is_none()).count() as u64;
            let dropped: u64 = e
                .iter()
                .filter(|e| field(e, "MESSAGE_ID").as_deref() == Some(NOTICE_ID))
                .map(n_dropped)
                .sum();
            seen = (lines, dropped);
            (lines + dropped == NOISY_LINES).then_some(e)
        })
    }))
    .unwrap_or_else(|_| {
        panic!(
            "noisy container: {} lines delivered + {} reported dropped != {NOISY_LINES}; proxy metrics:\n{}\nproxy stderr:\n{}",
            seen.0,
            seen.1,
            proxy.metrics(),
            proxy.stderr()
        )
    });
    let notices: Vec<_> = entries
        .iter()
        .filter(|e| field(e, "MESSAGE_ID").as_deref() == Some(NOTICE_ID))
        .collect();
    let begin = notices
        .iter()
        .find(|e| {
            field(e, "MESSAGE")
                .unwrap()
                .starts_with("log-proxy: beginning to drop log lines")
        })
        .expect("a 'beginning to drop' notice");
    assert_eq!(
        field(begin, "MESSAGE").unwrap(),
        "log-proxy: beginning to drop log lines, the container is over its limit of 500 lines per 5s"
    );
    assert_eq!(field(begin, "PRIORITY").as_deref(), Some("4"));
    assert_eq!(field(begin, "CONTAINER_NAME").unwrap(), noisy);
    let dropped = notices
        .iter()
        .find(|e| {
            field(e, "MESSAGE")
                .unwrap()
                .starts_with("log-proxy: dropped ")
        })
        .expect("a 'dropped N' notice");
    let n = n_dropped(dropped);
    let bytes: u64 = field(dropped, "N_DROPPED_BYTES").unwrap().parse().unwrap();
    assert_eq!(
        field(dropped, "MESSAGE").unwrap(),
        format!(
            "log-proxy: dropped {n} log lines ({}), the container is over its limit of 500 lines per 5s",
            log_proxy::limiter::show_bytes(bytes)
        )
    );
    assert_eq!(field(dropped, "LOG_PROXY_RULE").unwrap(), "default");
    let delivered = entries.len() - notices.len();
    assert!(
        delivered >= 500 && delivered < NOISY_LINES as usize / 2,
        "delivered {delivered}"
    );
    // Delivered lines are in order.
    let nums: Vec<u64> = entries
        .iter()
        .filter(|e| field(e, "MESSAGE_ID").is_none())
        .map(|e| field(e, "MESSAGE").unwrap().parse().unwrap())
        .collect();
    assert!(
        nums.windows(2).all(|w| w[0] < w[1]),
        "noisy lines out of order"
    );
    assert!(proxy.metric("log_proxy_dropped_lines_total") > 0);
    assert!(proxy
        .metrics()
        .contains(&format!("container_name=\"{noisy}\"")));
}

fn docker_id_of(entries: &[testkit::Entry]) -> String {
    let id = field(&entries[0], "CONTAINER_ID_FULL").expect("CONTAINER_ID_FULL");
    assert_eq!(id.len(), 64);
    id
}

#[test]
fn quiet_and_noisy_containers_rfc5424micro() {
    quiet_and_noisy("rfc5424micro");
}

#[test]
fn quiet_and_noisy_containers_rfc3164() {
    quiet_and_noisy("rfc3164");
}

#[test]
fn labels_set_the_limit_the_tag_and_ecs_task_fields() {
    docker();
    let jd = Journald::start();
    let proxy = Proxy::start(jd.socket(), &["--burst", "5", "--interval", "1m"]);
    let name = unique_name("labelled");
    let status = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--name", &name])
        .args(["--label", "log-proxy.rate-limit=0"])
        .args(["--label", "tag={{.Name}}/{{.ImageName}}"])
        .args([
            "--label",
            "com.amazonaws.ecs.task-arn=arn:aws:ecs:us-east-1:123:task/prod/0f1e2d3c",
        ])
        .args(["--log-driver", "syslog", "--log-opt"])
        .arg(format!(
            "syslog-address=unixgram://{}",
            proxy.socket.display()
        ))
        .args([
            "--log-opt",
            "syslog-format=rfc5424micro",
            "--log-opt",
            "tag={{.ID}}",
        ])
        .args([BUSYBOX_IMAGE, "seq", "1", "300"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // Unlimited by label, although the default would allow only 5.
    let e = jd.wait_for_count(
        &[&format!("CONTAINER_NAME={name}")],
        300,
        Duration::from_secs(30),
    );
    assert_eq!(e.len(), 300);
    assert_eq!(
        field(&e[0], "CONTAINER_TAG").unwrap(),
        format!("{name}/{BUSYBOX_IMAGE}")
    );
    assert_eq!(
        field(&e[0], "SYSLOG_IDENTIFIER").unwrap(),
        format!("{name}/{BUSYBOX_IMAGE}")
    );
    assert_eq!(
        field(&e[0], "CONTAINER_TASK").unwrap(),
        "arn:aws:ecs:us-east-1:123:task/prod/0f1e2d3c"
    );
    assert_eq!(field(&e[0], "CONTAINER_TASK_UUID").unwrap(), "0f1e2d3c");
    let _ = docker_cmd(&["info", "--format", "{{.ServerVersion}}"]);
}
