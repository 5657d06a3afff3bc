//! The whole suite with real parts: a Docker container → Docker's syslog driver → log-proxy
//! → a private journald → journal-fanout → CloudWatch Logs (moto) → read back with cwlogs.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::{docker, unique_name, wait_until, workspace_bin, Journald, Moto, BUSYBOX_IMAGE};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn container_lines_reach_cloudwatch_in_the_group_named_by_their_tag() {
    docker();
    let jd = Journald::start();
    let moto = Moto::start();
    let dir = std::env::temp_dir().join(unique_name("pipeline"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("proxy.sock");

    let _proxy = Killed(
        Command::new(workspace_bin("log-proxy"))
            .arg("--syslog-address")
            .arg(format!("unixgram://{}", sock.display()))
            .arg("--journal-socket")
            .arg(jd.socket())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(20), "log-proxy's socket", || {
        sock.exists().then_some(())
    });

    let _fanout = Killed(
        Command::new(workspace_bin("journal-fanout"))
            .args(["--journal-namespace", jd.namespace(), "--from", "head"])
            .args(["--dst", "cloudwatchlogs", "--flush-timeout", "200ms"])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .envs(moto.env())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let service = unique_name("svc");
    let name = unique_name("web");
    let status = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--name", &name])
        .args(["--label", &format!("tag={service}")])
        .args(["--log-driver", "syslog", "--log-opt"])
        .arg(format!("syslog-address=unixgram://{}", sock.display()))
        .args(["--log-opt", "syslog-format=rfc5424micro", "--log-opt", "tag={{.ID}}"])
        .args([BUSYBOX_IMAGE, "sh", "-c"])
        .arg(r#"for i in $(seq 1 50); do echo "pipeline line $i"; done; echo '{"level":"ERROR","message":"structured","data":{"k":1}}' >&2"#)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    // Read it back the way a developer would: cwlogs, one JSON object per event.
    let events = wait_until(
        Duration::from_secs(60),
        "the container's lines in CloudWatch",
        || {
            let out = Command::new(workspace_bin("cwlogs"))
                .args([
                    "--color", "never", "fetch", &service, "--since", "1h", "--json",
                ])
                .envs(moto.env())
                .output()
                .ok()?;
            let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            (lines.len() >= 51).then_some(lines)
        },
    );
    assert_eq!(events.len(), 51, "every line once: {events:#?}");
    // stdout and stderr are separate pipes in Docker, so the stderr line may come anywhere;
    // the stdout lines keep their order.
    let (structured, plain): (Vec<_>, Vec<_>) =
        events.iter().partition(|e| e["message"] == "structured");
    for (i, e) in plain.iter().enumerate() {
        assert_eq!(e["group"], service.as_str());
        assert_eq!(e["stream"], name.as_str(), "stream = container name");
        assert_eq!(e["message"], format!("pipeline line {}", i + 1));
        assert_eq!(e["level"], "INFO");
    }
    assert_eq!(structured.len(), 1);
    assert_eq!(structured[0]["level"], "ERROR");
    assert_eq!(structured[0]["data"]["k"], 1);
    let _ = std::fs::remove_dir_all(&dir);
}
