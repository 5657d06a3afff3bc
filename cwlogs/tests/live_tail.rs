//! `fetch -f` by StartLiveTail, against testkit's live tail server (moto has no event stream
//! for it; the server forwards everything else to a real moto, where every event is also
//! put, so that polls find them): events arrive within 1.5 s, a sampled update switches to
//! polling with nothing missing or doubled, a session timeout reconnects without a gap, and
//! access denied falls back to polling with one notice.

mod support;

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::{now_ms, Cw, Lines};
use testkit::LiveTailServer;

struct Live {
    cw: Cw,
    server: LiveTailServer,
    arn: String,
}

impl Live {
    fn start(session_timeout: Duration) -> Live {
        let cw = Cw::start();
        cw.group("api");
        cw.stream("api", "s");
        let server = LiveTailServer::start(cw.moto.port(), session_timeout);
        let arn = cw.group_arn("api");
        Live { cw, server, arn }
    }

    /// An event, as CloudWatch would ingest it: stored (for polls) and pushed live.
    fn send(&self, msg: &str) -> Instant {
        let t = now_ms();
        self.cw.put("api", "s", &[(t, msg.to_string())]);
        self.server.ingest(&self.arn, "s", t, msg);
        Instant::now()
    }

    fn follow(&self, extra: &[&str]) -> (Child, Lines) {
        self.follow_with(extra, &[])
    }

    fn follow_with(&self, extra: &[&str], env: &[(&str, &str)]) -> (Child, Lines) {
        let mut args = vec!["fetch", "api", "-f", "-o", "{{message}}"];
        args.extend_from_slice(extra);
        let mut c = self.cw.cmd(&args);
        c.envs(env.iter().copied())
            .env("AWS_ENDPOINT_URL", self.server.endpoint())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let lines = Lines::new(child.stdout.take().unwrap());
        (child, lines)
    }

    fn wait_sessions(&self, n: usize) {
        testkit::wait_until(Duration::from_secs(30), "a live tail session", || {
            (self.server.sessions() >= n).then_some(())
        });
    }
}

fn stop(child: &mut Child, lines: &mut Lines) -> String {
    assert!(support::interrupt(child).success());
    lines.drain();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("ev-{i:03}")).collect()
}

#[test]
fn live_events_print_within_a_second_and_a_half_without_polling() {
    let live = Live::start(Duration::from_secs(3600));
    live.send("before");
    let (mut child, mut lines) = live.follow(&[]);
    lines.wait_for("before", Duration::from_secs(30));
    live.wait_sessions(1);
    // --poll never starts a session.
    let (mut poller, mut polled) = live.follow(&["--poll"]);
    polled.wait_for("before", Duration::from_secs(30));

    // The session's gap poll is done once an event has come by it; after that, nothing
    // but the session brings events.
    let first = live.send("ev-000");
    lines.wait_for("ev-000", Duration::from_secs(10));
    let filters_then = count(&live.server.forwarded(), "FilterLogEvents");
    let mut sent = vec![first];
    for name in &names(1..12) {
        std::thread::sleep(Duration::from_millis(300)); // pacing the sender, not a wait
        sent.push(live.send(name));
    }
    lines.wait_for("ev-011", Duration::from_secs(10));
    let mut latencies: Vec<Duration> = names(0..12)
        .iter()
        .zip(&sent)
        .map(|(name, at)| {
            let i = lines.seen.iter().position(|l| l == name).unwrap();
            lines.arrived[i].saturating_duration_since(*at)
        })
        .collect();
    let polls_meanwhile = count(&live.server.forwarded(), "FilterLogEvents") - filters_then;
    polled.wait_for("ev-011", Duration::from_secs(30));
    let err = stop(&mut child, &mut lines);
    assert_eq!(err, "");
    let mut want = vec!["before".to_string()];
    want.extend(names(0..12));
    assert_eq!(lines.seen, want);
    assert_eq!(stop(&mut poller, &mut polled), "");
    assert_eq!(polled.seen, want);
    assert_eq!(
        live.server.sessions(),
        1,
        "--poll started a live tail session"
    );
    // The poller polled all along; the live follower did not (the poller's polls are the
    // only ones: at most one per 2 s).
    assert!(
        polls_meanwhile <= 5,
        "{polls_meanwhile} FilterLogEvents while live"
    );
    let req = &live.server.requests()[0];
    assert_eq!(req["logGroupIdentifiers"][0], live.arn.as_str());
    latencies.sort();
    eprintln!("live tail latency, sent → printed: {latencies:?}");
    for l in &latencies {
        assert!(
            *l <= Duration::from_millis(1500),
            "an event took {l:?} from being sent to being printed: {latencies:?}"
        );
    }
}

fn count(ops: &[String], op: &str) -> usize {
    ops.iter().filter(|o| *o == op).count()
}

#[test]
fn a_sampled_update_switches_to_polling_with_nothing_missing_or_doubled() {
    let live = Live::start(Duration::from_secs(3600));
    let (mut child, mut lines) = live.follow(&[]);
    live.wait_sessions(1);
    for name in &names(0..10) {
        std::thread::sleep(Duration::from_millis(100)); // pacing the sender
        live.send(name);
    }
    lines.wait_for("ev-009", Duration::from_secs(10));
    live.server.sample_next_update();
    for name in &names(10..40) {
        std::thread::sleep(Duration::from_millis(100));
        live.send(name);
    }
    lines.wait_for("ev-039", Duration::from_secs(30));
    let err = stop(&mut child, &mut lines);
    assert_eq!(lines.seen, names(0..40), "every id once, in order");
    assert_eq!(
        err,
        "cwlogs: CloudWatch is sampling this live tail (over 500 events/s); switching to \
         complete polling\n"
    );
    assert_eq!(live.server.sessions(), 1);
}

#[test]
fn an_ended_session_reconnects_without_a_gap() {
    // AWS ends sessions after 3 hours; here after 2 s.
    let live = Live::start(Duration::from_secs(2));
    let (mut child, mut lines) = live.follow(&[]);
    live.wait_sessions(1);
    for name in &names(0..40) {
        std::thread::sleep(Duration::from_millis(200)); // pacing the sender
        live.send(name);
    }
    lines.wait_for("ev-039", Duration::from_secs(30));
    let err = stop(&mut child, &mut lines);
    assert_eq!(err, "");
    assert_eq!(lines.seen, names(0..40), "every id once, in order");
    assert!(
        live.server.sessions() >= 3,
        "{} sessions in 8 s of 2 s sessions",
        live.server.sessions()
    );
}

#[test]
fn access_denied_falls_back_to_polling_with_one_notice() {
    let live = Live::start(Duration::from_secs(3600));
    live.server.deny_live_tail();
    let (mut child, mut lines) = live.follow(&[]);
    testkit::wait_until(Duration::from_secs(30), "a StartLiveTail request", || {
        (!live.server.requests().is_empty()).then_some(())
    });
    live.send("ev-000");
    live.send("ev-001");
    lines.wait_for("ev-001", Duration::from_secs(30));
    let err = stop(&mut child, &mut lines);
    assert_eq!(lines.seen, names(0..2));
    assert_eq!(
        err,
        "cwlogs: live tail is not allowed for these credentials (User: arn:aws:iam::1:user/dev \
         is not authorized to perform: logs:StartLiveTail); polling instead (logs:StartLiveTail \
         grants it)\n"
    );
}

#[test]
fn a_stopped_task_ends_a_live_tail_too() {
    let live = Live::start(Duration::from_secs(3600));
    let arn = live.cw.moto.ecs_run_task("prod");
    let id = arn.rsplit('/').next().unwrap().to_string();
    live.cw.stream("api", &id);
    let (mut child, mut lines) = live.follow(&["-t", &id, "--cluster", "prod"]);
    live.wait_sessions(1);
    let t = now_ms();
    live.cw.put("api", &id, &[(t, "last words".into())]);
    live.server.ingest(&live.arn, &id, t, "last words");
    lines.wait_for("last words", Duration::from_secs(10));
    live.cw
        .moto
        .ecs_stop_task("prod", &arn, "Essential container in task exited");
    let status = testkit::wait_until(
        Duration::from_secs(15),
        "cwlogs to exit after StopTask",
        || child.try_wait().unwrap(),
    );
    lines.drain();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(
        err,
        format!("cwlogs: task {id} stopped (Essential container in task exited); exiting\n")
    );
    assert_eq!(lines.seen, ["last words"]);
    assert_eq!(
        live.server.requests()[0]["logStreamNamePrefixes"][0],
        id.as_str()
    );
}

#[test]
fn after_a_minute_of_polling_live_tail_is_tried_again_and_sampling_said_again() {
    let live = Live::start(Duration::from_secs(3600));
    // "A minute" shortened to 3 s.
    let (mut child, mut lines) = live.follow_with(&[], &[("CWLOGS_SAMPLING_PERIOD", "3s")]);
    live.wait_sessions(1);
    let mut n = 0;
    let mut send = |count: usize| {
        for _ in 0..count {
            std::thread::sleep(Duration::from_millis(100)); // pacing the sender
            live.send(&format!("ev-{n:03}"));
            n += 1;
        }
    };
    send(5);
    live.server.sample_next_update();
    send(10);
    // Polling for 3 s, then a new session.
    live.wait_sessions(2);
    send(5);
    live.server.sample_next_update();
    send(10);
    lines.wait_for("ev-029", Duration::from_secs(30));
    let err = stop(&mut child, &mut lines);
    assert_eq!(lines.seen, names(0..30), "every id once, in order");
    let notice = "cwlogs: CloudWatch is sampling this live tail (over 500 events/s); switching \
                  to complete polling";
    assert_eq!(err, format!("{notice}\n{notice}\n"));
}
