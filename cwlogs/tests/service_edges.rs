//! What the emulator cannot show: FilterLogEvents pages that are empty but carry a
//! `nextToken`, throttling, and access denied. A loopback HTTP server speaks the
//! CloudWatch Logs JSON 1.1 wire format (`X-Amz-Target: Logs_20140328.<Operation>`) and
//! records the requests it got.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_cwlogs");

/// One answer: HTTP status and JSON body.
type Reply = (u16, Value);

struct Fake {
    port: u16,
    /// (operation, request body) in arrival order.
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Fake {
    /// Serve with `answer(operation, body, how_many_of_this_operation_so_far)`.
    fn start(answer: impl Fn(&str, &Value, usize) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let s = seen.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (s, answer) = (s.clone(), answer.clone());
                thread::spawn(move || serve(conn, &s, &*answer));
            }
        });
        Fake { port, seen }
    }

    fn ops(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(o, _)| o.clone())
            .collect()
    }

    fn cwlogs(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .args(args)
            .env_remove("NO_COLOR")
            .env_remove("AWS_PROFILE")
            .env("TZ", "UTC")
            // A request budget of this test's own.
            .env(
                "XDG_RUNTIME_DIR",
                std::env::temp_dir().join(format!("cwlogs-edges-{}", self.port)),
            )
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            )
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn serve(
    conn: TcpStream,
    seen: &Mutex<Vec<(String, Value)>>,
    answer: &(dyn Fn(&str, &Value, usize) -> Reply + Send + Sync),
) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        // Request line and headers.
        let mut target = String::new();
        let mut len = 0usize;
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            match k.to_ascii_lowercase().as_str() {
                "x-amz-target" => target = v.trim().to_string(),
                "content-length" => len = v.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        assert!(
            target.starts_with("Logs_20140328."),
            "not the CloudWatch Logs JSON protocol: X-Amz-Target {target:?}"
        );
        let op = target.trim_start_matches("Logs_20140328.").to_string();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let n = {
            let mut s = seen.lock().unwrap();
            let n = s.iter().filter(|(o, _)| *o == op).count();
            s.push((op.clone(), body.clone()));
            n
        };
        let (status, reply) = answer(&op, &body, n);
        let text = reply.to_string();
        let reason = if status == 200 { "OK" } else { "Bad Request" };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-amz-json-1.1\r\n\
             x-amzn-RequestId: 00000000-0000-0000-0000-000000000000\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn groups_reply(body: &Value) -> Reply {
    let prefix = body["logGroupNamePrefix"].as_str().unwrap_or("");
    let groups: Vec<Value> = ["svc"]
        .iter()
        .filter(|g| g.starts_with(prefix))
        .map(|g| json!({"logGroupName": g, "creationTime": 1_700_000_000_000i64}))
        .collect();
    (200, json!({ "logGroups": groups }))
}

fn event(id: &str, ts: i64, msg: &str) -> Value {
    json!({"logStreamName": "s", "timestamp": ts, "ingestionTime": ts, "message": msg, "eventId": id})
}

#[test]
fn empty_pages_with_a_next_token_are_followed_to_the_end() {
    let fake = Fake::start(|op, body, _| match op {
        "DescribeLogGroups" => groups_reply(body),
        "FilterLogEvents" => match body["nextToken"].as_str() {
            None => (
                200,
                json!({"events": [event("1", 1_700_000_000_000, "first")], "nextToken": "t1"}),
            ),
            Some("t1") => (200, json!({"events": [], "nextToken": "t2"})),
            Some("t2") => (200, json!({"events": [], "nextToken": "t3"})),
            Some("t3") => (
                200,
                json!({"events": [event("2", 1_700_000_000_500, "after two empty pages")]}),
            ),
            Some(other) => panic!("unexpected token {other}"),
        },
        other => panic!("unexpected operation {other}"),
    });
    // A one-minute window: one slice, so the token chain is the whole story.
    let (code, out, err) = fake.cwlogs(&[
        "fetch",
        "svc",
        "-s",
        "2023-11-14T22:13:00Z",
        "-u",
        "2023-11-14T22:13:59Z",
        "-o",
        "{{message}}",
    ]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert_eq!(out, "first\nafter two empty pages\n");
    let filters = fake
        .ops()
        .iter()
        .filter(|o| *o == "FilterLogEvents")
        .count();
    assert_eq!(filters, 4);
    let seen = fake.seen.lock().unwrap();
    let first = seen.iter().find(|(o, _)| o == "FilterLogEvents").unwrap();
    assert_eq!(first.1["logGroupName"], "svc");
    assert_eq!(first.1["startTime"], 1_699_999_980_000i64);
    assert_eq!(first.1["endTime"], 1_700_000_039_000i64);
}

#[test]
fn throttling_is_retried() {
    let fake = Fake::start(|op, body, n| match op {
        "DescribeLogGroups" => groups_reply(body),
        "FilterLogEvents" if n < 2 => (
            400,
            json!({"__type": "ThrottlingException", "message": "Rate exceeded"}),
        ),
        "FilterLogEvents" => (
            200,
            json!({"events": [event("1", 1_700_000_000_000, "got through")]}),
        ),
        other => panic!("unexpected operation {other}"),
    });
    let (code, out, err) = fake.cwlogs(&[
        "fetch",
        "svc",
        "-s",
        "2023-11-14T22:13:00Z",
        "-u",
        "2023-11-14T22:13:59Z",
        "-o",
        "{{message}}",
    ]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert_eq!(out, "got through\n");
    assert_eq!(
        fake.ops()
            .iter()
            .filter(|o| *o == "FilterLogEvents")
            .count(),
        3
    );
}

#[test]
fn access_denied_names_the_permissions() {
    let fake = Fake::start(|op, _, _| match op {
        "DescribeLogGroups" => (
            400,
            json!({"__type": "AccessDeniedException", "message": "User: arn:aws:iam::1:user/dev is not authorized to perform: logs:DescribeLogGroups"}),
        ),
        other => panic!("unexpected operation {other}"),
    });
    let (code, out, err) = fake.cwlogs(&["fetch", "svc"]);
    // Permissions are configuration: exit 2.
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("access denied while listing log groups"),
        "{err}"
    );
    assert!(
        err.contains("logs:FilterLogEvents") && err.contains("--profile"),
        "{err}"
    );
    assert!(err.contains("not authorized to perform"), "{err}");
}

/// Ctrl-C during a plain command (here, stuck on an endpoint that never answers) ends cwlogs
/// by SIGINT itself, not by a plain exit status: that is how a calling shell knows its loop
/// or script was interrupted, rather than that cwlogs handled the Ctrl-C and it should go on.
#[test]
fn ctrl_c_during_a_plain_fetch_ends_it_by_sigint() {
    use std::os::unix::process::ExitStatusExt;
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut child = Command::new(BIN)
        .args(["fetch", "web"])
        .env_remove("AWS_PROFILE")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its request arrived: cwlogs is running its command (the Ctrl-C handler is set by then).
    let (_held, _) = silent.accept().unwrap();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGINT),
        "interrupted cwlogs must die of SIGINT, got {status}; stderr: {stderr}"
    );
    assert_eq!(stderr, "", "an interruption prints nothing");
}
