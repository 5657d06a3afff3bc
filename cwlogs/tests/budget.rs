//! One request budget for every cwlogs process: two followers and a big fetch, through a
//! request-counting proxy in front of moto, never go above the default 4 requests in any
//! second — throttling injected by the proxy included, which they outlast with every event
//! printed.

mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{base, now_ms, Cw, Lines};
use testkit::CountingProxy;

/// A cwlogs command through `proxy`, with the default budget (the support code raises it
/// for the other tests), sharing `cw`'s budget file.
fn via(cw: &Cw, proxy: &CountingProxy, args: &[&str]) -> Command {
    let mut c = cw.cmd(args);
    c.env_remove("CWLOGS_MAX_RPS")
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

#[test]
fn followers_and_a_big_fetch_share_one_budget_and_outlast_throttling() {
    let cw = Cw::start();
    let proxy = CountingProxy::start(cw.moto.port());
    // The big fetch: 3,000 events over 20 minutes, asked for in 16 slices.
    cw.group("big");
    cw.stream("big", "s");
    let b = base();
    let events: Vec<(i64, String)> = (0..3000)
        .map(|i| (b + i * 400, format!("big-{i}")))
        .collect();
    cw.put("big", "s", &events);
    cw.group("live");
    cw.stream("live", "s");
    cw.put("live", "s", &[(now_ms() - 1000, "before".into())]);

    let follow = ["fetch", "live", "-f", "--poll", "-o", "{{message}}"];
    let mut f1 = via(&cw, &proxy, &follow).spawn().unwrap();
    let mut f2 = via(&cw, &proxy, &follow).spawn().unwrap();
    let mut out1 = Lines::new(f1.stdout.take().unwrap());
    let mut out2 = Lines::new(f2.stdout.take().unwrap());
    out1.wait_for("before", Duration::from_secs(30));
    out2.wait_for("before", Duration::from_secs(30));

    // A throttling spell as the big fetch starts, while the followers poll.
    proxy.throttle_for(Duration::from_secs(5));
    let (since, until) = (support::rfc(b), support::rfc(b + 3000 * 400));
    let big = via(
        &cw,
        &proxy,
        &[
            "fetch",
            "big",
            "--since",
            &since,
            "--until",
            &until,
            "--parallel",
            "8",
            "-o",
            "{{message}}",
        ],
    )
    .spawn()
    .unwrap();
    cw.put("live", "s", &[(now_ms(), "during".into())]);
    let big = big.wait_with_output().unwrap();
    let big_err = String::from_utf8_lossy(&big.stderr).into_owned();
    assert_eq!(big.status.code(), Some(0), "big fetch: {big_err}");
    let got: Vec<String> = String::from_utf8_lossy(&big.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = events.iter().map(|e| e.1.clone()).collect();
    assert!(
        got == want,
        "the big fetch printed {} of {} events",
        got.len(),
        want.len()
    );

    cw.put("live", "s", &[(now_ms(), "after".into())]);
    out1.wait_for("after", Duration::from_secs(60));
    out2.wait_for("after", Duration::from_secs(60));
    for (f, out) in [(&mut f1, &mut out1), (&mut f2, &mut out2)] {
        assert!(support::interrupt(f).success());
        out.drain();
        assert_eq!(out.seen, ["before", "during", "after"]);
    }

    let reqs = proxy.requests();
    let throttled = reqs.iter().filter(|r| r.2).count();
    assert!(throttled > 0, "the proxy throttled nothing: {reqs:?}");
    let (most, at) = proxy.busiest(Duration::from_secs(1));
    assert!(
        most <= 4,
        "{most} requests in the second from {at:?} (budget 4/s): {reqs:#?}"
    );
    // Waiting is said once per process, and nothing else is said.
    let note = "cwlogs: CloudWatch Logs is throttling requests";
    let errs = [stderr_of(&mut f1), stderr_of(&mut f2), big_err];
    for e in &errs {
        assert!(
            e.is_empty() || (e.lines().count() == 1 && e.starts_with(note)),
            "{e}"
        );
    }
    assert!(errs.iter().any(|e| e.starts_with(note)), "{errs:?}");
}

#[test]
fn throttling_that_does_not_end_fails_after_the_wait() {
    // Shortened: the same path as the 2 minutes, checked through its note and error.
    let cw = Cw::start();
    let proxy = CountingProxy::start(cw.moto.port());
    cw.group("svc");
    proxy.throttle_for(Duration::from_secs(3600));
    let mut c = via(&cw, &proxy, &["fetch", "svc"]);
    c.env("CWLOGS_THROTTLE_PATIENCE", "6s");
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(
            "cwlogs: CloudWatch Logs is throttling requests (while listing log groups); waiting"
        ),
        "{err}"
    );
    assert!(
        lines[1].starts_with("cwlogs: CloudWatch Logs kept throttling while listing log groups"),
        "{err}"
    );
}
