//! Test helpers: run journal-fanout, write journal entries, and a validating pass-through in
//! front of moto_server that checks every PutLogEvents request against the CloudWatch limits
//! moto does not enforce (protocols.md §5.6). (Kept here rather than in testkit: the check is
//! specific to what journal-fanout sends.)

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_journal-fanout");

/// Write entries to a journald namespace with the native protocol.
pub fn write_entries(socket: &Path, entries: impl IntoIterator<Item = Vec<(String, String)>>) {
    let j = journal_native::Journal::new(socket).expect("open the journald socket");
    for e in entries {
        let fields: Vec<(&str, &[u8])> =
            e.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
        j.send(&fields).expect("send a journal entry");
    }
}

/// A container line as log-proxy writes it.
pub fn container_line(tag: &str, name: &str, message: &str) -> Vec<(String, String)> {
    vec![
        ("MESSAGE".into(), message.into()),
        ("CONTAINER_TAG".into(), tag.into()),
        ("CONTAINER_NAME".into(), name.into()),
        ("CONTAINER_ID".into(), "0123456789ab".into()),
        ("IMAGE_NAME".into(), "busybox:local".into()),
        ("PRIORITY".into(), "6".into()),
        ("SYSLOG_IDENTIFIER".into(), tag.into()),
    ]
}

/// `GET /metrics` from journal-fanout's endpoint on `port` (`None` until it answers).
pub fn metrics(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A series' value in a `/metrics` text: its name after `journal_fanout_`, with its labels if
/// it has any, e.g. `journal_files_readable` or `entries_lost_total{destination="stdout"}`.
pub fn metric(text: &str, series: &str) -> Option<u64> {
    let prefix = format!("journal_fanout_{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// journal-fanout shipping namespace `j` from its head to stdout, cursors in `state`, with
/// `extra` flags (e.g. `--metrics-address`) and environment.
pub fn stdout_from_head(
    j: &testkit::Journald,
    state: &Path,
    extra: &[&str],
    env: &[(&str, String)],
) -> Fanout {
    let mut args = vec![
        "--journal-namespace",
        j.namespace(),
        "--dst",
        "stdout",
        "--from",
        "head",
        "--state-dir",
        state.to_str().unwrap(),
        "--flush-timeout",
        "100ms",
    ];
    args.extend_from_slice(extra);
    Fanout::start(&args, env)
}

/// A running journal-fanout with its stdout and stderr captured to files.
pub struct Fanout {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fanout {
    pub fn start(args: &[&str], env: &[(&str, String)]) -> Fanout {
        Fanout::start_under(&[], args, env)
    }

    /// Start it through a wrapper command, e.g. `setpriv --reuid=nobody ...`.
    pub fn start_under(wrapper: &[&str], args: &[&str], env: &[(&str, String)]) -> Fanout {
        let dir = tempfile::tempdir().unwrap();
        let stdout = dir.path().join("stdout");
        let stderr = dir.path().join("stderr");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start journal-fanout");
        Fanout {
            child,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        testkit::wait_until(Duration::from_secs(60), "journal-fanout to exit", || {
            self.child.try_wait().unwrap()
        })
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pass-through HTTP proxy in front of moto that checks every PutLogEvents request.
pub struct CheckingProxy {
    pub port: u16,
    pub violations: Arc<Mutex<Vec<String>>>,
    pub puts: Arc<AtomicUsize>,
    /// Events carried by PutLogEvents requests that moto answered with 200.
    pub events_accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl CheckingProxy {
    pub fn start(upstream_port: u16) -> CheckingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let violations = Arc::new(Mutex::new(Vec::new()));
        let puts = Arc::new(AtomicUsize::new(0));
        let events_accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (v, p, a, s) = (
            violations.clone(),
            puts.clone(),
            events_accepted.clone(),
            stop.clone(),
        );
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (v, p, a) = (v.clone(), p.clone(), a.clone());
                thread::spawn(move || serve(conn, upstream_port, &v, &p, &a));
            }
        });
        CheckingProxy {
            port,
            violations,
            puts,
            events_accepted,
            stop,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// AWS environment pointing at this proxy with dummy credentials.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        testkit::aws_env(self.endpoint())
    }

    pub fn assert_no_violations(&self) {
        let v = self.violations.lock().unwrap();
        assert!(
            v.is_empty(),
            "PutLogEvents requests broke CloudWatch limits:\n{}",
            v.join("\n")
        );
        assert!(
            self.puts.load(Ordering::Relaxed) > 0,
            "no PutLogEvents was sent"
        );
    }
}

impl Drop for CheckingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Request line, headers, body.
type Request = (String, Vec<(String, String)>, Vec<u8>);

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let request_line = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert!(
        header("transfer-encoding").is_none(),
        "the proxy expects Content-Length bodies"
    );
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((request_line, headers, body))
}

fn serve(
    conn: TcpStream,
    upstream: u16,
    violations: &Mutex<Vec<String>>,
    puts: &AtomicUsize,
    accepted: &AtomicUsize,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut client = conn;
    // One request per connection: moto is asked to close after each answer.
    if let Some((request_line, headers, body)) = read_request(&mut reader) {
        let target = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let is_put = target.ends_with(".PutLogEvents");
        let mut n_events = 0;
        if is_put {
            puts.fetch_add(1, Ordering::Relaxed);
            match check_put(&body) {
                Ok(n) => n_events = n,
                Err(why) => violations.lock().unwrap().push(why),
            }
        }
        // Forward with a fresh connection; moto going away looks like a network failure.
        let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
            return; // drop the client connection
        };
        let mut out = format!("{request_line}\r\n");
        for (k, v) in &headers {
            if !k.eq_ignore_ascii_case("connection") {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut req = out.into_bytes();
        req.extend_from_slice(&body);
        if up.write_all(&req).is_err() {
            return;
        }
        let mut resp = Vec::new();
        if up.read_to_end(&mut resp).is_err() || resp.is_empty() {
            return;
        }
        if is_put && (resp.starts_with(b"HTTP/1.1 200") || resp.starts_with(b"HTTP/1.0 200")) {
            accepted.fetch_add(n_events, Ordering::Relaxed);
        }
        let _ = client.write_all(&resp);
    }
}

/// Check one PutLogEvents body against the service limits; returns the event count.
pub fn check_put(body: &[u8]) -> Result<usize, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let group = v["logGroupName"].as_str().unwrap_or("");
    let stream = v["logStreamName"].as_str().unwrap_or("");
    let events = v["logEvents"]
        .as_array()
        .ok_or_else(|| format!("{group}/{stream}: no logEvents"))?;
    let ctx = format!("{group}/{stream} ({} events)", events.len());
    if group.is_empty()
        || group.len() > 512
        || !group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/#".contains(c))
    {
        return Err(format!("{ctx}: invalid group name"));
    }
    if stream.is_empty() || stream.len() > 512 || stream.contains(':') || stream.contains('*') {
        return Err(format!("{ctx}: invalid stream name"));
    }
    if events.is_empty() || events.len() > 10_000 {
        return Err(format!("{ctx}: event count out of 1..=10000"));
    }
    let mut bytes = 0usize;
    let mut prev = i64::MIN;
    let mut first = None;
    for e in events {
        let ts = e["timestamp"]
            .as_i64()
            .ok_or_else(|| format!("{ctx}: event without timestamp"))?;
        let msg = e["message"]
            .as_str()
            .ok_or_else(|| format!("{ctx}: event without message"))?;
        if msg.is_empty() {
            return Err(format!("{ctx}: empty message"));
        }
        if ts < prev {
            return Err(format!(
                "{ctx}: events not in time order ({prev} then {ts})"
            ));
        }
        prev = ts;
        let f = *first.get_or_insert(ts);
        if ts - f >= 24 * 3600 * 1000 {
            return Err(format!("{ctx}: events span 24 hours or more"));
        }
        bytes += msg.len() + 26;
    }
    if bytes > 1_048_576 {
        return Err(format!(
            "{ctx}: {bytes} bytes (with 26 per event) > 1048576"
        ));
    }
    Ok(events.len())
}

/// A CloudWatch Logs client for moto at `endpoint`, with dummy credentials.
pub fn moto_client(endpoint: &str) -> aws_sdk_cloudwatchlogs::Client {
    let conf = aws_sdk_cloudwatchlogs::Config::builder()
        .behavior_version(aws_sdk_cloudwatchlogs::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatchlogs::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    aws_sdk_cloudwatchlogs::Client::from_conf(conf)
}

/// Every event in moto, per (group, stream), in stored order: messages parsed as events.
pub fn moto_events(endpoint: &str) -> BTreeMap<(String, String), Vec<Value>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = moto_client(endpoint);
        let mut out = BTreeMap::new();
        let Ok(groups) = client
            .describe_log_groups()
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
        else {
            return out;
        };
        for g in groups {
            let gname = g.log_group_name().unwrap_or_default().to_string();
            let streams = client
                .describe_log_streams()
                .log_group_name(&gname)
                .into_paginator()
                .items()
                .send()
                .collect::<Result<Vec<_>, _>>()
                .await
                .unwrap_or_default();
            for s in streams {
                let sname = s.log_stream_name().unwrap_or_default().to_string();
                let mut events = Vec::new();
                let mut token: Option<String> = None;
                loop {
                    let Ok(page) = client
                        .get_log_events()
                        .log_group_name(&gname)
                        .log_stream_name(&sname)
                        .start_from_head(true)
                        .set_next_token(token.clone())
                        .send()
                        .await
                    else {
                        break;
                    };
                    for e in page.events() {
                        let m = e.message().unwrap_or_default();
                        events
                            .push(serde_json::from_str(m).unwrap_or(Value::String(m.to_string())));
                    }
                    let next = page.next_forward_token().map(str::to_string);
                    if next.is_none() || next == token {
                        break;
                    }
                    token = next;
                }
                out.insert((gname.clone(), sname), events);
            }
        }
        out
    })
}

/// Every log group in moto with its retention in days (`None`: never expires).
pub fn moto_retention(endpoint: &str) -> BTreeMap<String, Option<i32>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = moto_client(endpoint);
        let groups = client
            .describe_log_groups()
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .expect("describe-log-groups on moto");
        groups
            .into_iter()
            .map(|g| {
                (
                    g.log_group_name().unwrap_or_default().to_string(),
                    g.retention_in_days(),
                )
            })
            .collect()
    })
}

/// The `message` of every stored event, across all streams.
pub fn all_messages(events: &BTreeMap<(String, String), Vec<Value>>) -> Vec<String> {
    events
        .values()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}
