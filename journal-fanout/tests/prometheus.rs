//! The shipped alert rules (deploy/prometheus/alerts.yml) under promtool, and a real Prometheus
//! server (Debian's `prometheus`) on loopback scraping journal-fanout and log-proxy through a
//! Loggly outage: backlog and lag are checked against the known situation, and the lag alert
//! goes pending, firing, and resolves after recovery.
//!
//! The lag alert's threshold in the shipped rules is 5 minutes; the server here loads a test
//! copy of the rules with the threshold at 20 s and `for: 5s`, so the outage (90 s) exceeds it.

mod common;
mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{container_line, write_entries, Fanout};
use serde_json::Value;
use support::receivers::{Api, Receiver};
use testkit::{free_port, wait_until, Journald};

const WAIT: Duration = Duration::from_secs(120);
const OUTAGE: Duration = Duration::from_secs(90);

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn require(tool: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{tool} is not installed: install the Debian package `prometheus` (scripts/install-deps.sh)"
    );
}

#[test]
fn shipped_alert_rules_pass_promtool_and_every_alert_has_a_unit_test() {
    require("promtool");
    let rules = repo_file("deploy/prometheus/alerts.yml");
    let tests = repo_file("deploy/prometheus/alerts.test.yml");
    for args in [
        vec!["check", "rules", rules.to_str().unwrap()],
        vec!["test", "rules", tests.to_str().unwrap()],
    ] {
        let out = Command::new("promtool").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert named in the rules is tested, both firing and not.
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let tests_text = std::fs::read_to_string(&tests).unwrap();
    for name in rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        let mut cases = tests_text
            .split("alertname: ")
            .skip(1)
            .filter(|c| c.starts_with(&format!("{name}\n")));
        let (mut fires, mut silent) = (false, false);
        for c in cases.by_ref() {
            let body = c.split("eval_time").next().unwrap_or(c);
            if body.contains("exp_alerts: []") {
                silent = true;
            } else if body.contains("exp_labels") {
                fires = true;
            }
        }
        assert!(
            fires && silent,
            "alert {name}: needs a test where it fires and one where it does not"
        );
    }
}

/// GET `path` on 127.0.0.1:`port`: (status code, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// A series' value in OpenMetrics text, e.g. `journal_fanout_backlog_entries{destination="loggly"}`.
fn value(text: &str, series: &str) -> Option<f64> {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(rules: &str, jobs: &[(&str, u16)]) -> Prometheus {
        require("prometheus");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
        let mut conf = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\nscrape_configs:\n",
        );
        for (job, port) in jobs {
            conf += &format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            );
        }
        std::fs::write(dir.path().join("prometheus.yml"), conf).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        wait_until(WAIT, "Prometheus to be ready (/-/ready)", || {
            (get(port, "/-/ready")?.0 == 200).then_some(())
        });
        p
    }

    fn api(&self, path: &str) -> Option<Value> {
        let (code, body) = get(self.port, path)?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// The state (`pending`, `firing`) of alert `name`, None when it is not active.
    fn alert(&self, name: &str) -> Option<String> {
        let v = self.api("/api/v1/alerts")?;
        v["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == name)
            .and_then(|a| a["state"].as_str().map(str::to_string))
    }

    /// The values of an instant query (`expr` already URL-safe).
    fn query(&self, expr: &str) -> Vec<f64> {
        let Some(v) = self.api(&format!("/api/v1/query?query={expr}")) else {
            return Vec::new();
        };
        v["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// log-proxy, only to be scraped (its socket receives nothing here).
struct LogProxy {
    child: Child,
    metrics_port: u16,
    _dir: tempfile::TempDir,
}

impl LogProxy {
    fn start(journal_socket: &Path) -> LogProxy {
        let dir = tempfile::tempdir().unwrap();
        let metrics_port = free_port();
        let child = Command::new(testkit::workspace_bin("log-proxy"))
            .arg("--syslog-address")
            .arg(format!(
                "unixgram://{}",
                dir.path().join("proxy.sock").display()
            ))
            .arg("--journal-socket")
            .arg(journal_socket)
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            // A small limit, so some lines are dropped and the drop figures move.
            .args(["--burst", "20", "--interval", "1h"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start log-proxy");
        LogProxy {
            child,
            metrics_port,
            _dir: dir,
        }
    }
}

impl LogProxy {
    /// `n` syslog lines from container `tag`, as Docker's syslog driver sends them.
    fn send(&self, tag: &str, n: usize) {
        let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
        for i in 0..n {
            let d = format!("<30>1 2026-11-22T13:32:28.396128Z vm {tag} 3076 {tag} - line {i}\n");
            s.send_to(d.as_bytes(), self._dir.path().join("proxy.sock"))
                .expect("send to log-proxy");
        }
    }
}

impl Drop for LogProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(port: u16, what: &str) {
    wait_until(WAIT, what, || {
        (get(port, "/readyz")?.0 == 200).then_some(())
    });
}

#[test]
fn outage_backlog_and_lag_are_measured_and_prometheus_fires_then_resolves_the_lag_alert() {
    const N: usize = 25;
    let j = Journald::start();
    let state = tempfile::tempdir().unwrap();
    let token = format!("lg{}x{}", std::process::id(), rand::random::<u32>());
    let lg = Receiver::start(Api::LogglyBulk {
        token: token.clone(),
    });
    let fanout_port = free_port();
    let metrics_addr = format!("127.0.0.1:{fanout_port}");
    let mut f = Fanout::start(
        &[
            "--journal-namespace",
            j.namespace(),
            "--dst",
            "loggly",
            "--from",
            "head",
            "--state-dir",
            state.path().to_str().unwrap(),
            "--flush-timeout",
            "300ms",
            "--metrics-address",
            &metrics_addr,
        ],
        &[("LOGGLY_TOKEN", token.clone()), ("LOGGLY_URL", lg.url())],
    );
    let proxy = LogProxy::start(j.socket());
    wait_ready(fanout_port, "journal-fanout /readyz 200");
    wait_ready(proxy.metrics_port, "log-proxy /readyz 200");
    assert_eq!(get(fanout_port, "/healthz").unwrap().0, 200);

    let rules = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).unwrap();
    let shipped = "expr: journal_fanout_lag_seconds > 300\n        for: 2m";
    assert!(
        rules.contains(shipped),
        "the lag rule changed: update this test"
    );
    let rules = rules.replace(
        shipped,
        "expr: journal_fanout_lag_seconds > 20\n        for: 5s",
    );
    let prom = Prometheus::start(
        &rules,
        &[
            ("journal-fanout", fanout_port),
            ("log-proxy", proxy.metrics_port),
        ],
    );

    let scrape = || {
        get(fanout_port, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default()
    };
    let series = |name: &str| format!("journal_fanout_{name}{{destination=\"loggly\"}}");

    let run_start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    wait_until(WAIT, "Prometheus to scrape both daemons", || {
        (prom.query("up%3D%3D1").len() == 2).then_some(())
    });
    // Traffic through log-proxy (some of it over its limit), shipped before the outage.
    proxy.send("0123456789ab", 100);
    wait_until(WAIT, "log-proxy to drop over its limit", || {
        let (_, t) = get(proxy.metrics_port, "/metrics")?;
        (value(&t, "log_proxy_dropped_lines_total")? > 0.0).then_some(())
    });

    // A delivered entry: the position the backlog is counted from.
    write_entries(j.socket(), [container_line("web", "shop", "n=warmup")]);
    wait_until(WAIT, "the warm-up entry at the receiver", || {
        (lg.event_count() >= 1).then_some(())
    });
    wait_until(WAIT, "backlog 0 after the warm-up", || {
        (value(&scrape(), &series("backlog_entries"))? == 0.0).then_some(())
    });
    assert_eq!(
        value(&scrape(), &series("lag_seconds")),
        Some(0.0),
        "caught up: lag 0"
    );

    // The outage: Loggly answers 500; N entries are written meanwhile.
    lg.set(|b| b.fail_with = Some(500));
    let outage = Instant::now();
    write_entries(
        j.socket(),
        (0..N).map(|i| container_line("web", "shop", &format!("n={i:06} during the outage"))),
    );
    wait_until(WAIT, "backlog N while Loggly is down", || {
        (value(&scrape(), &series("backlog_entries"))? == N as f64).then_some(())
    });
    let before = outage.elapsed().as_secs_f64();
    let lag = value(&scrape(), &series("lag_seconds")).unwrap();
    assert!(lag >= before, "lag {lag} s < outage time {before} s");

    let mut seen = Vec::new();
    wait_until(WAIT, "Prometheus to fire JournalFanoutLagHigh", || {
        let s = prom.alert("JournalFanoutLagHigh");
        if let Some(s) = &s {
            if seen.last() != Some(s) {
                seen.push(s.clone());
            }
        }
        (s.as_deref() == Some("firing")).then_some(())
    });
    assert_eq!(
        seen.first().map(String::as_str),
        Some("pending"),
        "{seen:?}"
    );
    // Both daemons are scraped: up, build_info, process figures.
    assert_eq!(prom.query("up%7Bjob%3D%22log-proxy%22%7D"), vec![1.0]);
    assert_eq!(prom.query("up%7Bjob%3D%22journal-fanout%22%7D"), vec![1.0]);
    assert_eq!(prom.query("log_proxy_build_info"), vec![1.0]);
    assert_eq!(prom.query("journal_fanout_build_info"), vec![1.0]);
    assert_eq!(prom.query("process_resident_memory_bytes").len(), 2);
    // The destination failing is seen as failed requests, a healthy (waiting) daemon.
    let text = scrape();
    assert!(
        value(
            &text,
            "journal_fanout_requests_total{destination=\"loggly\",result=\"failed\"}"
        )
        .unwrap()
            > 0.0,
        "{text}"
    );
    assert_eq!(
        get(fanout_port, "/healthz").unwrap().0,
        200,
        "waiting is not a stall"
    );

    // The outage lasts OUTAGE in all (the alert stays firing), then Loggly recovers.
    wait_until(WAIT, "the outage to have lasted 90 s", || {
        assert_eq!(
            prom.alert("JournalFanoutLagHigh").as_deref(),
            Some("firing")
        );
        (outage.elapsed() >= OUTAGE).then_some(())
    });
    lg.set(|b| b.fail_with = None);
    wait_until(WAIT, "every entry at the receiver after recovery", || {
        (lg.events()
            .iter()
            .filter(|e| e.message().contains("during the outage"))
            .count()
            >= N)
            .then_some(())
    });
    let back = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(WAIT, "backlog and lag back to 0", || {
            let t = scrape();
            (value(&t, &series("backlog_entries"))? == 0.0
                && value(&t, &series("lag_seconds"))? == 0.0)
                .then_some(())
        })
    }));
    if back.is_err() {
        panic!(
            "backlog and lag did not go back to 0:\n{}\njournal:\n{:?}",
            scrape(),
            j.entries().iter().rev().take(5).collect::<Vec<_>>()
        );
    }
    wait_until(WAIT, "Prometheus to resolve JournalFanoutLagHigh", || {
        prom.alert("JournalFanoutLagHigh").is_none().then_some(())
    });

    // The dashboard's picture from this run's data (docs/deploy.md), when asked for.
    if let Ok(out) = std::env::var("LOGSUITE_DASHBOARD_PNG") {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Debian's python3, which python3-matplotlib installs into (a pyenv may shadow it).
        let st = Command::new("/usr/bin/python3")
            .arg(repo_file("scripts/render-dashboard.py"))
            .args(["--prometheus", &format!("http://127.0.0.1:{}", prom.port)])
            .args(["--start", &run_start.to_string(), "--end", &end.to_string()])
            .args(["--out", &out])
            .status()
            .expect("run scripts/render-dashboard.py (needs python3-matplotlib)");
        assert!(st.success(), "scripts/render-dashboard.py failed");
    }

    // The counters add up: every entry read was skipped or delivered (no notices here).
    let t = scrape();
    let read = value(&t, &series("entries_read_total")).unwrap();
    let skipped = value(&t, &series("entries_skipped_total")).unwrap();
    let delivered = value(&t, &series("events_delivered_total")).unwrap();
    assert_eq!(read, skipped + delivered, "{t}");
    let bytes = value(&t, &series("delivered_bytes_total")).unwrap();
    let group = value(
        &t,
        "journal_fanout_group_delivered_bytes_total{destination=\"loggly\",group=\"web\"}",
    );
    assert!(bytes > 0.0 && group.is_some(), "{t}");
    assert!(f.is_running(), "journal-fanout: {}", f.stderr_text());
    drop(prom.log());
    f.terminate();
}
