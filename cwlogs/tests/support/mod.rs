//! A real moto_server per test, seeded through the CloudWatch Logs API, and the built
//! `cwlogs` binary pointed at it.

#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_cloudwatchlogs::config::{Credentials, Region};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use aws_sdk_cloudwatchlogs::Client;
use chrono::{TimeZone, Utc};
use testkit::Moto;

pub const BIN: &str = env!("CARGO_BIN_EXE_cwlogs");

pub struct Cw {
    pub moto: Moto,
    rt: tokio::runtime::Runtime,
    pub client: Client,
    /// This test's own XDG_RUNTIME_DIR: its cwlogs processes share a request budget with
    /// each other, not with the other tests running at the same time.
    pub runtime_dir: std::path::PathBuf,
}

impl Cw {
    pub fn start() -> Cw {
        let moto = Moto::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conf = rt.block_on(
            aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .endpoint_url(moto.endpoint())
                .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
                .load(),
        );
        let client = Client::new(&conf);
        let runtime_dir = std::env::temp_dir().join(testkit::unique_name("cwlogs-run"));
        std::fs::create_dir_all(&runtime_dir).unwrap();
        Cw {
            moto,
            rt,
            client,
            runtime_dir,
        }
    }

    pub fn group(&self, name: &str) {
        self.rt
            .block_on(self.client.create_log_group().log_group_name(name).send())
            .unwrap_or_else(|e| panic!("create group {name}: {e:?}"));
    }

    pub fn stream(&self, group: &str, name: &str) {
        self.rt
            .block_on(
                self.client
                    .create_log_stream()
                    .log_group_name(group)
                    .log_stream_name(name)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("create stream {group}/{name}: {e:?}"));
    }

    /// Put events (ms timestamp, message) in one call, sorted as the API requires.
    pub fn put(&self, group: &str, stream: &str, events: &[(i64, String)]) {
        let mut evs: Vec<_> = events.to_vec();
        evs.sort_by_key(|e| e.0);
        for chunk in evs.chunks(10_000) {
            let input: Vec<InputLogEvent> = chunk
                .iter()
                .map(|(ts, m)| {
                    InputLogEvent::builder()
                        .timestamp(*ts)
                        .message(m)
                        .build()
                        .unwrap()
                })
                .collect();
            let out = self
                .rt
                .block_on(
                    self.client
                        .put_log_events()
                        .log_group_name(group)
                        .log_stream_name(stream)
                        .set_log_events(Some(input))
                        .send(),
                )
                .unwrap_or_else(|e| panic!("put into {group}/{stream}: {e:?}"));
            assert!(
                out.rejected_log_events_info().is_none(),
                "moto rejected events: {:?}",
                out.rejected_log_events_info()
            );
        }
    }

    /// The group's ARN for StartLiveTail (without the `:*` of DescribeLogGroups' `arn`).
    pub fn group_arn(&self, group: &str) -> String {
        let out = self
            .rt
            .block_on(
                self.client
                    .describe_log_groups()
                    .log_group_name_prefix(group)
                    .send(),
            )
            .unwrap();
        let g = &out.log_groups()[0];
        g.log_group_arn()
            .map(str::to_string)
            .unwrap_or_else(|| g.arn().unwrap().trim_end_matches(":*").to_string())
    }

    /// (name, creation time, last event) of every stream of a group, as the API reports them.
    pub fn describe_streams(&self, group: &str) -> Vec<(String, i64, Option<i64>)> {
        let out = self
            .rt
            .block_on(
                self.client
                    .describe_log_streams()
                    .log_group_name(group)
                    .send(),
            )
            .unwrap();
        out.log_streams()
            .iter()
            .map(|s| {
                (
                    s.log_stream_name().unwrap().to_string(),
                    s.creation_time().unwrap(),
                    s.last_event_timestamp(),
                )
            })
            .collect()
    }

    /// `cwlogs` with this emulator's environment, local zone UTC, no NO_COLOR, this test's
    /// own request budget, and a rate moto can take (the budget's own tests set it back).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env_remove("NO_COLOR")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS")
            .env("TZ", "UTC")
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .env("CWLOGS_MAX_RPS", "200")
            .stdin(Stdio::null());
        for (k, v) in self.moto.env() {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.cmd(args).output().expect("run cwlogs");
        Run::from(out)
    }
}

impl Drop for Cw {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Succeeded with nothing on stderr.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "cwlogs failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert_eq!(self.stderr, "", "unexpected stderr");
        &self.stdout
    }

    /// Failed with `code`; returns stderr.
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(
            self.code, code,
            "expected exit {code}:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stderr
    }
}

/// A whole hour, three hours ago: recent enough for the emulator's 14-day limit, old
/// enough to stay out of the default one-hour window.
pub fn base() -> i64 {
    (Utc::now().timestamp_millis() / 3_600_000 - 3) * 3_600_000
}

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `time_short` under TZ=UTC.
pub fn short(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .unwrap()
        .format("%m-%d %H:%M:%S")
        .to_string()
}

/// RFC 3339 with milliseconds, as `--since` / `--until` accept.
pub fn rfc(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// `YYYY-MM-DD HH:MM:SS` under TZ=UTC (list's columns).
pub fn long(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Lines of a child's stdout as they arrive, read on a thread.
pub struct Lines {
    rx: mpsc::Receiver<(std::time::Instant, String)>,
    pub seen: Vec<String>,
    /// When each line of `seen` was read from the pipe.
    pub arrived: Vec<std::time::Instant>,
}

impl Lines {
    pub fn new(mut out: ChildStdout) -> Lines {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                let n = match out.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    let s = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                    if tx.send((std::time::Instant::now(), s)).is_err() {
                        return;
                    }
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
            arrived: Vec::new(),
        }
    }

    /// Wait until a line containing `needle` has arrived (lines are kept in `seen`).
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.seen.iter().any(|l| l.contains(needle)) {
                return;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((t, l)) => {
                    self.seen.push(l);
                    self.arrived.push(t);
                }
                Err(_) => panic!(
                    "no line containing {needle:?} within {timeout:?}; got {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Everything else the child printed before it exited.
    pub fn drain(&mut self) {
        while let Ok((t, l)) = self.rx.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(l);
            self.arrived.push(t);
        }
    }
}

/// Send SIGINT (Ctrl-C) to a child and wait for it.
pub fn interrupt(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait().expect("wait for cwlogs")
}
