//! cwlogs end to end against a real moto_server, seeded through the CloudWatch Logs API.

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

const TASK: &str = "0f5c3b2a-1d2e-4f60-8a9b-0c1d2e3f4a5b";
const WEB: &str = "web-1";

/// Group `api`: a task-UUID stream and a named one, plain lines and ecs-logs JSON events
/// at several levels with nested data and errors. Returns the base timestamp.
fn seed_api(cw: &Cw) -> i64 {
    let b = base();
    cw.group("api");
    cw.stream("api", TASK);
    cw.stream("api", WEB);
    cw.put(
        "api",
        WEB,
        &[
            (b + 1000, "GET /health 200".into()),
            (
                b + 3000,
                r#"{"level":"WARN","time":"2017-05-21T15:00:01Z","data":{"retry":2},"message":"slow upstream"}"#.into(),
            ),
        ],
    );
    cw.put(
        "api",
        TASK,
        &[
            (
                b + 2000,
                r#"{"level":"INFO","time":"2017-05-21T15:00:00Z","info":{"host":"ip-10-0-0-1"},"data":{"user":{"id":7}},"message":"user logged in"}"#.into(),
            ),
            (
                b + 4000,
                r#"{"level":"ERROR","time":"2017-05-21T15:00:02Z","info":{"errors":[{"error":"boom","type":"E"}]},"data":{},"message":"request failed"}"#.into(),
            ),
        ],
    );
    b
}

#[test]
fn fetch_default_format_interleaves_streams_in_time_order() {
    let cw = Cw::start();
    let b = seed_api(&cw);
    let out = cw.run(&["fetch", "api", "--since", "all"]);
    assert_eq!(
        out.ok(),
        format!(
            "[ web-1 ] {} INFO - GET /health 200\n\
             [ 0f5c3b2a ] 05-21 15:00:00 INFO - user logged in\n\
             [ web-1 ] 05-21 15:00:01 WARN - slow upstream\n\
             [ 0f5c3b2a ] 05-21 15:00:02 ERROR - request failed\n",
            short(b + 1000)
        )
    );
}

#[test]
fn fetch_verbose_adds_data_and_errors() {
    let cw = Cw::start();
    let b = seed_api(&cw);
    let out = cw.run(&["fetch", "api", "--since", "all", "--verbose"]);
    assert_eq!(
        out.ok(),
        format!(
            "[ web-1 ] {} +00:00 INFO - GET /health 200\n\
             [ 0f5c3b2a ] 05-21 15:00:00 +00:00 INFO user.id=7 - user logged in\n\
             [ web-1 ] 05-21 15:00:01 +00:00 WARN retry=2 - slow upstream\n\
             [ 0f5c3b2a ] 05-21 15:00:02 +00:00 ERROR errors=[{{\"error\":\"boom\",\"type\":\"E\"}}] - request failed\n",
            short(b + 1000)
        )
    );
}

#[test]
fn fetch_json_and_raw_print_the_event_record() {
    let cw = Cw::start();
    let b = seed_api(&cw);
    let json = cw.run(&["fetch", "api", "--since", "all", "--json"]);
    let records: Vec<Value> = json
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(records.len(), 4);
    let ids: HashSet<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "event ids are unique");
    let first = &records[0];
    assert_eq!(first["group"], "api");
    assert_eq!(first["stream"], WEB);
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["message"], "GET /health 200");
    assert_eq!(first["creation_time"], rfc_micros(b + 1000));
    assert_eq!(
        first["time"],
        rfc_micros(b + 1000),
        "plain lines take CloudWatch's time"
    );
    let last = &records[3];
    assert_eq!(last["stream"], TASK);
    assert_eq!(last["level"], "ERROR");
    assert_eq!(last["time"], "2017-05-21T15:00:02.000000Z");
    assert_eq!(last["info"]["errors"][0]["error"], "boom");
    assert_eq!(records[1]["data"]["user"]["id"], 7);

    let raw = cw.run(&["fetch", "api", "--since", "all", "--raw"]);
    let want = format!(
        "{{\n  \"group\": \"api\",\n  \"stream\": \"web-1\",\n  \"id\": \"{}\",\n  \"ingest_time\": \"{}\",\n  \
         \"creation_time\": \"{}\",\n  \"level\": \"INFO\",\n  \"time\": \"{}\",\n  \"info\": {{}},\n  \
         \"data\": {{}},\n  \"message\": \"GET /health 200\"\n}}\n",
        first["id"].as_str().unwrap(),
        first["ingest_time"].as_str().unwrap(),
        rfc_micros(b + 1000),
        rfc_micros(b + 1000)
    );
    assert!(raw.ok().starts_with(&want), "raw output:\n{}", raw.stdout);
    assert_eq!(raw.stdout.matches("\n}\n").count(), 4);
}

fn rfc_micros(ms: i64) -> String {
    use chrono::TimeZone;
    chrono::Utc
        .timestamp_millis_opt(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[test]
fn template_fields_and_every_helper() {
    let cw = Cw::start();
    let b = seed_api(&cw);
    let tpl = "{{group}}|{{stream}}|{{level}}|{{time}}|{{creation_time}}|{{info.host}}|{{data.user.id}}|\
               {{#each data_flat}}{{@key}}={{this}};{{/each}}|{{task_short}}|{{time_short}}|{{message}}";
    let out = cw.run(&[
        "fetch", "api", "--since", "all", "--task", "0f5c", "-o", tpl,
    ]);
    assert_eq!(
        out.ok(),
        format!(
            "api|{TASK}|INFO|2017-05-21T15:00:00.000000Z|{}|ip-10-0-0-1|7|user.id=7;|0f5c3b2a|05-21 15:00:00|user logged in\n\
             api|{TASK}|ERROR|2017-05-21T15:00:02.000000Z|{}||||0f5c3b2a|05-21 15:00:02|request failed\n",
            rfc_micros(b + 2000),
            rfc_micros(b + 4000)
        )
    );

    let helpers = "{{red \"r\"}}{{green \"g\"}}{{yellow \"y\"}}{{blue \"b\"}}{{magenta \"m\"}}{{cyan \"c\"}}{{white \"w\"}} \
                   {{colorlevel level}} {{uniquecolor stream}}";
    let colored = cw.run(&[
        "--color", "always", "fetch", "api", "--since", "all", "-o", helpers,
    ]);
    let lines: Vec<&str> = colored.ok().lines().collect();
    let fixed = "\x1b[31mr\x1b[0m\x1b[32mg\x1b[0m\x1b[33my\x1b[0m\x1b[34mb\x1b[0m\x1b[35mm\x1b[0m\x1b[36mc\x1b[0m\x1b[37mw\x1b[0m ";
    assert!(lines.iter().all(|l| l.starts_with(fixed)), "{lines:#?}");
    let levels: Vec<&str> = lines
        .iter()
        .map(|l| l[fixed.len()..].split(' ').next().unwrap())
        .collect();
    assert_eq!(
        levels,
        [
            "INFO",
            "INFO",
            "\x1b[33mWARN\x1b[0m",
            "\x1b[31mERROR\x1b[0m"
        ]
    );
    // uniquecolor: one colour per stream, the same on every line.
    let unique: Vec<&str> = lines
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert!(
        unique[0].starts_with("\x1b[") && unique[0].ends_with("mweb-1\x1b[0m"),
        "{unique:?}"
    );
    assert_eq!(unique[0], unique[2]);
    assert_eq!(unique[1], unique[3]);
    assert!(unique[1].ends_with(&format!("m{TASK}\x1b[0m")));

    let plain = cw.run(&[
        "--color", "never", "fetch", "api", "--since", "all", "-o", helpers,
    ]);
    assert_eq!(
        plain.ok(),
        format!(
            "rgybmcw INFO web-1\nrgybmcw INFO {TASK}\nrgybmcw WARN web-1\nrgybmcw ERROR {TASK}\n"
        )
    );
}

#[test]
fn bad_input_errors_say_what_is_accepted() {
    let cw = Cw::start();
    seed_api(&cw);
    // Configuration errors: exit 2, one line each.
    let err = cw
        .run(&["fetch", "api", "-o", "{{#if level}} unclosed"])
        .fails(2)
        .to_string();
    assert!(err.contains("does not parse at line 1, column"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let err = cw
        .run(&["fetch", "api", "--since", "tomorrow"])
        .fails(2)
        .to_string();
    assert!(
        err.contains("invalid time \"tomorrow\"")
            && err.contains("1h30m")
            && err.contains("yesterday")
            && err.contains("RFC 3339"),
        "{err}"
    );
    let err = cw
        .run(&["fetch", "api", "--follow", "--until", "now"])
        .fails(2)
        .to_string();
    assert!(err.contains("--until") && err.contains("--follow"), "{err}");
    let err = cw
        .run(&["fetch", "api", "--since", "1h", "--until", "2h"])
        .fails(2)
        .to_string();
    assert!(err.contains("is after --until"), "{err}");
    // yesterday, today and -1h are times.
    assert!(cw
        .run(&["fetch", "api", "--since", "-1h"])
        .fails(1)
        .starts_with("cwlogs: no events in api"));
    assert_eq!(
        cw.run(&["fetch", "api", "--since", "yesterday", "-o", "{{message}}"])
            .ok()
            .lines()
            .count(),
        4
    );
    let today = cw.run(&["fetch", "api", "--since", "today"]);
    assert!(
        today.code != 2 && !today.stderr.contains("invalid time"),
        "{}",
        today.stderr
    );
}

#[test]
fn unknown_template_fields_and_go_syntax_fail_at_start() {
    let cw = Cw::start();
    seed_api(&cw);
    assert_eq!(
        cw.run(&["fetch", "api", "--since", "all", "-o", "{{mesage}}"]).fails(2),
        "cwlogs: the --format template names an unknown field \"mesage\": did you mean `{{message}}`?\n"
    );
    let err = cw
        .run(&[
            "fetch",
            "api",
            "--since",
            "all",
            "-o",
            "{{.TaskShort}} {{.Message}}",
        ])
        .fails(2)
        .to_string();
    assert!(
        err.starts_with(
            "cwlogs: the --format template uses Go syntax {{.TaskShort}}: write `{{task_short}}`"
        ),
        "{err}"
    );
    assert_eq!(
        cw.run(&[
            "fetch",
            "api",
            "--since",
            "all",
            "-o",
            "{{info.host}}|{{message}}"
        ])
        .ok(),
        "|GET /health 200\nip-10-0-0-1|user logged in\n|slow upstream\n|request failed\n"
    );
}

#[test]
fn commands_typos_and_other_tools_words_suggest_the_command() {
    let cw = Cw::start();
    for (typed, want) in [
        (
            "lsit",
            "cwlogs: \"lsit\" is not a command; did you mean 'cwlogs list x'?\n",
        ),
        (
            "ls",
            "cwlogs: \"ls\" is not a command; did you mean 'cwlogs list x'?\n",
        ),
        (
            "tail",
            "cwlogs: \"tail\" is not a command; did you mean 'cwlogs fetch x'?\n",
        ),
        (
            "get",
            "cwlogs: \"get\" is not a command; did you mean 'cwlogs fetch x'?\n",
        ),
        (
            "watch",
            "cwlogs: \"watch\" is not a command; did you mean 'cwlogs fetch x'?\n",
        ),
        (
            "checkout",
            "cwlogs: \"checkout\" is not a command; did you mean 'cwlogs fetch checkout'?\n",
        ),
    ] {
        assert_eq!(cw.run(&[typed, "x"]).fails(2), want, "{typed}");
    }
}

#[test]
fn grep_v_and_level_filter_on_the_client() {
    let cw = Cw::start();
    seed_api(&cw);
    assert_eq!(
        cw.run(&[
            "fetch",
            "api",
            "--since",
            "all",
            "-o",
            "{{level}} {{message}}",
            "--level",
            "warn"
        ])
        .ok(),
        "WARN slow upstream\nERROR request failed\n"
    );
    assert_eq!(
        cw.run(&[
            "fetch",
            "api",
            "--since",
            "all",
            "-o",
            "{{message}}",
            "--grep-v",
            "health",
            "--grep-v",
            "^slow",
        ])
        .ok(),
        "user logged in\nrequest failed\n"
    );
    let err = cw
        .run(&["fetch", "api", "--level", "loud"])
        .fails(2)
        .to_string();
    assert!(err.starts_with("cwlogs: invalid --level \"loud\""), "{err}");
    let err = cw
        .run(&["fetch", "api", "--grep-v", "("])
        .fails(2)
        .to_string();
    assert!(
        err.starts_with("cwlogs: invalid --grep-v regex \"(\""),
        "{err}"
    );
}

#[test]
fn utc_shows_times_in_utc_whatever_the_local_zone() {
    let cw = Cw::start();
    let b = seed_api(&cw);
    let mut cmd = cw.cmd(&[
        "fetch",
        "api",
        "--since",
        "all",
        "--utc",
        "-o",
        "{{time_short}} {{message}}",
    ]);
    cmd.env("TZ", "Asia/Tokyo");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "{} GET /health 200\n05-21 15:00:00 user logged in\n05-21 15:00:01 slow upstream\n05-21 15:00:02 request failed\n",
            short(b + 1000)
        )
    );
    // --verbose names the zone.
    let mut cmd = cw.cmd(&[
        "fetch", "api", "--since", "all", "--utc", "-v", "-t", "0f5c",
    ]);
    cmd.env("TZ", "Asia/Tokyo");
    let out = cmd.output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().next(),
        Some("[ 0f5c3b2a ] 05-21 15:00:00 UTC INFO user.id=7 - user logged in")
    );
}

#[test]
fn time_window_bounds_are_inclusive() {
    let cw = Cw::start();
    let b = base();
    cw.group("edges");
    cw.stream("edges", "s");
    let (t1, t2) = (b + 10_000, b + 200_000);
    cw.put(
        "edges",
        "s",
        &[
            (t1 - 1, "before".into()),
            (t1, "at-start".into()),
            (t1 + 100_000, "middle".into()),
            (t2, "at-end".into()),
            (t2 + 1, "after".into()),
        ],
    );
    let (since, until) = (rfc(t1), rfc(t2));
    for parallel in ["1", "4"] {
        let out = cw.run(&[
            "fetch",
            "edges",
            "-s",
            &since,
            "-u",
            &until,
            "-o",
            "{{message}}",
            "--parallel",
            parallel,
        ]);
        assert_eq!(
            out.ok(),
            "at-start\nmiddle\nat-end\n",
            "--parallel {parallel}"
        );
    }
    // Unix seconds and local (here UTC) times are the same instants.
    let secs = ((t1 - 1) / 1000).to_string();
    let out = cw.run(&[
        "fetch",
        "edges",
        "-s",
        &secs,
        "-u",
        &until,
        "-o",
        "{{message}}",
    ]);
    assert_eq!(out.ok(), "before\nat-start\nmiddle\nat-end\n");
    // Nothing in the window: an error that suggests widening it.
    let err = cw
        .run(&["fetch", "edges", "-s", &rfc(t2 + 2), "-u", &rfc(t2 + 5000)])
        .fails(1)
        .to_string();
    assert!(
        err.contains("no events in edges") && err.contains("--since"),
        "{err}"
    );
}

#[test]
fn task_prefix_selects_streams_and_bad_prefix_suggests_recent_ones() {
    let cw = Cw::start();
    seed_api(&cw);
    let out = cw.run(&[
        "fetch",
        "api",
        "--since",
        "all",
        "-t",
        "web",
        "-o",
        "{{stream}} {{message}}",
    ]);
    assert_eq!(out.ok(), "web-1 GET /health 200\nweb-1 slow upstream\n");
    let out = cw.run(&[
        "fetch",
        "api",
        "--since",
        "all",
        "--task",
        TASK,
        "-o",
        "{{message}}",
    ]);
    assert_eq!(out.ok(), "user logged in\nrequest failed\n");

    let err = cw
        .run(&["fetch", "api", "--since", "all", "-t", "zzz"])
        .fails(1)
        .to_string();
    assert!(
        err.contains("no stream of log group \"api\" starts with \"zzz\""),
        "{err}"
    );
    assert!(err.contains("most recently active streams"), "{err}");
    let web = err.find("\n  web-1").expect("web-1 suggested");
    let task = err
        .find(&format!("\n  {TASK}"))
        .expect("task stream suggested");
    assert!(task < web, "most recent first: {err}");
}

#[test]
fn several_services_are_interleaved_in_time_order() {
    let cw = Cw::start();
    let b = base();
    for g in ["billing", "checkout"] {
        cw.group(g);
        cw.stream(g, "s");
    }
    let evens: Vec<(i64, String)> = (0..10)
        .step_by(2)
        .map(|i| (b + i * 60_000, format!("billing {i}")))
        .collect();
    let odds: Vec<(i64, String)> = (1..10)
        .step_by(2)
        .map(|i| (b + i * 60_000, format!("checkout {i}")))
        .collect();
    cw.put("billing", "s", &evens);
    cw.put("checkout", "s", &odds);
    // The default format names the service before the stream.
    let out = cw.run(&["fetch", "billing", "checkout", "--since", "all"]);
    let want: String = (0..10)
        .map(|i| {
            let g = if i % 2 == 0 { "billing" } else { "checkout" };
            format!("[ {g} s ] {} INFO - {g} {i}\n", short(b + i * 60_000))
        })
        .collect();
    assert_eq!(out.ok(), want);
    let out = cw.run(&[
        "fetch",
        "billing",
        "checkout",
        "--since",
        "all",
        "-o",
        "{{group}} {{message}}",
    ]);
    let want: String = (0..10)
        .map(|i| {
            let g = if i % 2 == 0 { "billing" } else { "checkout" };
            format!("{g} {g} {i}\n")
        })
        .collect();
    assert_eq!(out.ok(), want);
}

#[test]
fn parallel_slices_merge_every_event_once_in_order() {
    let cw = Cw::start();
    let b = base();
    cw.group("busy");
    let mut all = Vec::new();
    for (k, s) in ["a", "b", "c"].iter().enumerate() {
        cw.stream("busy", s);
        // Spread over 50 minutes, some exactly on minute boundaries, some sharing a timestamp.
        let evs: Vec<(i64, String)> = (0..200)
            .map(|i| {
                (
                    b + i * 15_000 + (k as i64 % 2) * (i % 3),
                    format!("{s}-{i}"),
                )
            })
            .collect();
        all.extend(evs.iter().cloned());
        cw.put("busy", s, &evs);
    }
    let out = cw.run(&[
        "fetch",
        "busy",
        "-s",
        &rfc(b),
        "-u",
        &rfc(b + 3_600_000),
        "--parallel",
        "8",
        "--json",
    ]);
    let recs: Vec<Value> = out
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), all.len());
    let ids: HashSet<String> = recs
        .iter()
        .map(|r| format!("{}/{}", r["stream"], r["id"]))
        .collect();
    assert_eq!(ids.len(), all.len(), "no event twice");
    let msgs: HashSet<&str> = recs
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert!(
        all.iter().all(|(_, m)| msgs.contains(m.as_str())),
        "every event once"
    );
    let times: Vec<&str> = recs
        .iter()
        .map(|r| r["creation_time"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
}

#[test]
fn list_shows_active_streams_most_recent_first() {
    let cw = Cw::start();
    let b = base();
    let now = now_ms();
    cw.group("svc");
    for s in ["old-task", "recent-task", "newest-task", "ninety-min-task"] {
        cw.stream("svc", s);
    }
    cw.put("svc", "old-task", &[(b, "old".into())]);
    cw.put(
        "svc",
        "ninety-min-task",
        &[(now - 90 * 60_000, "a while ago".into())],
    );
    cw.put(
        "svc",
        "recent-task",
        &[(now - 20 * 60_000, "recent".into())],
    );
    cw.put("svc", "newest-task", &[(now - 5 * 60_000, "newest".into())]);
    let described = cw.describe_streams("svc");
    let row = |name: &str| {
        let (_, created, last) = described.iter().find(|d| d.0 == name).unwrap();
        (long(last.unwrap()), long(*created))
    };
    let (n_last, n_created) = row("newest-task");
    let (r_last, r_created) = row("recent-task");
    let out = cw.run(&["list", "svc"]);
    assert_eq!(
        out.ok(),
        format!(
            "STREAM       LAST EVENT           CREATED\n\
             newest-task  {n_last}  {n_created}\n\
             recent-task  {r_last}  {r_created}\n"
        )
    );
    // Wider window, task prefix, max streams.
    let out = cw.run(&["list", "svc", "--since", "4h", "-m", "3"]);
    let names: Vec<&str> = out
        .ok()
        .lines()
        .skip(1)
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(names, ["newest-task", "recent-task", "ninety-min-task"]);
    let out = cw.run(&["list", "svc", "--since", "4h", "--task", "old"]);
    let names: Vec<&str> = out
        .ok()
        .lines()
        .skip(1)
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(names, ["old-task"]);
    let err = cw
        .run(&["list", "svc", "-s", &rfc(b + 1000), "-u", &rfc(b + 2000)])
        .fails(1)
        .to_string();
    assert!(
        err.contains("no stream of log group \"svc\" has events between"),
        "{err}"
    );
}

#[test]
fn typo_in_a_service_name_suggests_the_closest_groups() {
    let cw = Cw::start();
    for g in [
        "checkout",
        "/ecs/checkout-canary",
        "billing-worker",
        "api-gateway",
        "web",
    ] {
        cw.group(g);
    }
    let err = cw.run(&["fetch", "chekout"]).fails(1).to_string();
    assert!(err.starts_with("cwlogs: no log group named \"chekout\". Did you mean:\n  checkout\n  /ecs/checkout-canary\n"), "{err}");
    assert!(!err.contains("web"), "{err}");
    let err = cw.run(&["list", "billing-wroker"]).fails(1).to_string();
    assert!(err.contains("Did you mean:\n  billing-worker"), "{err}");
    let err = cw.run(&["fetch", "gateway"]).fails(1).to_string();
    assert!(err.contains("Did you mean:\n  api-gateway"), "{err}");

    // `cwlogs SERVICE` is the old habit: point at the command.
    let err = cw.run(&["checkout"]).fails(2).to_string();
    assert!(
        err.contains("did you mean 'cwlogs fetch checkout'?"),
        "{err}"
    );

    let out = cw.run(&["groups"]);
    assert_eq!(
        out.ok(),
        "/ecs/checkout-canary\napi-gateway\nbilling-worker\ncheckout\nweb\n"
    );
    let out = cw.run(&["groups", "che"]);
    assert_eq!(out.ok(), "checkout\n");
}

#[test]
fn follow_prints_new_events_once_and_ctrl_c_exits_cleanly() {
    let cw = Cw::start();
    cw.group("live");
    cw.stream("live", "task-a");
    cw.stream("live", "task-b");
    let t = now_ms();
    cw.put(
        "live",
        "task-a",
        &[(t - 2000, "first-1".into()), (t - 1000, "first-2".into())],
    );
    let mut child = cw
        .cmd(&[
            "fetch",
            "live",
            "--follow",
            "--since",
            "5m",
            "-o",
            "{{message}}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::new(child.stdout.take().unwrap());
    // A second follower, of one task only.
    let mut task_b = cw
        .cmd(&["fetch", "live", "-f", "-t", "task-b", "-o", "{{message}}"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines_b = Lines::new(task_b.stdout.take().unwrap());
    lines.wait_for("first-2", Duration::from_secs(30));

    let t = now_ms();
    cw.put("live", "task-b", &[(t, "second-1".into())]);
    cw.put("live", "task-a", &[(t + 1, "second-2".into())]);
    lines.wait_for("second-2", Duration::from_secs(30));
    // One more round: every poll re-reads the lookback (30s), so by the time this shows up
    // the earlier events have been offered again — and must not print again.
    cw.put("live", "task-b", &[(now_ms(), "third".into())]);
    lines.wait_for("third", Duration::from_secs(30));
    lines_b.wait_for("third", Duration::from_secs(30));

    assert!(interrupt(&mut task_b).success());
    lines_b.drain();
    assert_eq!(lines_b.seen, ["second-1", "third"]);

    let status = interrupt(&mut child);
    lines.drain();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.success(),
        "Ctrl-C in follow mode exits 0, got {status}; stderr: {stderr}"
    );
    assert_eq!(stderr, "");
    assert_eq!(
        lines.seen,
        ["first-1", "first-2", "second-1", "second-2", "third"]
    );
}

#[test]
fn closed_pipe_ends_quietly_with_status_zero() {
    let cw = Cw::start();
    cw.group("chatty");
    cw.stream("chatty", "s");
    let b = base();
    let filler = "x".repeat(100);
    let evs: Vec<(i64, String)> = (0..5000)
        .map(|i| (b + i, format!("line {i} {filler}")))
        .collect();
    cw.put("chatty", "s", &evs);
    // `cwlogs fetch … | head -1`: read one line, then close the pipe.
    let mut child = cw
        .cmd(&["fetch", "chatty", "--since", "all", "-o", "{{message}}"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("line 0 "));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "no broken-pipe noise"
    );

    // And through a real shell pipeline.
    let cmd = cw.cmd(&[]);
    let sh = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{BIN}' fetch chatty --since all | head -1 >/dev/null"
        ))
        .envs(
            cmd.get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        )
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        sh.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sh.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&sh.stderr), "");
}

/// Run on a pseudo-terminal as stdout; returns what the terminal received.
fn on_tty(mut cmd: Command) -> String {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two fds we then own.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty failed");
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    cmd.stdout(Stdio::from(slave)).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    drop(cmd); // closes our copy of the slave, so reads end when the child exits
    let mut f = std::fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break, // EIO once the child closed the terminal
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    assert!(child.wait().unwrap().success());
    String::from_utf8_lossy(&out).replace("\r\n", "\n")
}

#[test]
fn colour_rules() {
    let cw = Cw::start();
    seed_api(&cw);
    let args = [
        "fetch",
        "api",
        "--since",
        "all",
        "-t",
        TASK,
        "-o",
        "{{colorlevel level}}",
    ];
    let red = "\x1b[31mERROR\x1b[0m";

    // Not a terminal: auto means no colour.
    assert_eq!(cw.run(&args).ok(), "INFO\nERROR\n");
    // --color always wins, even over NO_COLOR.
    let mut c = cw.cmd(&[&["--color", "always"], &args[..]].concat());
    c.env("NO_COLOR", "1");
    assert_eq!(
        support::Run::from(c.output().unwrap()).ok(),
        format!("INFO\n{red}\n")
    );
    // A terminal: colour, unless NO_COLOR is set or --color never.
    assert_eq!(on_tty(cw.cmd(&args)), format!("INFO\n{red}\n"));
    let mut c = cw.cmd(&args);
    c.env("NO_COLOR", "1");
    assert_eq!(on_tty(c), "INFO\nERROR\n");
    assert_eq!(
        on_tty(cw.cmd(&[&["-c", "never"], &args[..]].concat())),
        "INFO\nERROR\n"
    );
}

#[test]
fn missing_region_or_credentials_say_what_to_do() {
    let cw = Cw::start();
    let home = std::env::temp_dir().join(testkit::unique_name("cwlogs-home"));
    std::fs::create_dir_all(&home).unwrap();
    let base = |c: &mut Command| {
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", cw.moto.endpoint());
    };
    let mut c = Command::new(BIN);
    c.args(["fetch", "api"])
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y");
    base(&mut c);
    c.env_remove("AWS_REGION");
    let r = support::Run::from(c.output().unwrap());
    // Configuration errors exit 2 (runtime failures 1): scripts and units tell them apart.
    assert!(
        r.fails(2)
            .contains("no AWS region is configured: pass --region"),
        "{}",
        r.stderr
    );

    let mut c = Command::new(BIN);
    base(&mut c);
    c.args(["groups", "--region", "us-east-1"]);
    let r = support::Run::from(c.output().unwrap());
    assert!(
        r.fails(2).contains("no AWS credentials found"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("could not reach"), "{}", r.stderr);

    // Nothing answering (a closed loopback port) is a runtime failure: 1.
    let mut c = Command::new(BIN);
    base(&mut c);
    c.args(["groups", "--region", "us-east-1"])
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", testkit::free_port()),
        );
    let r = support::Run::from(c.output().unwrap());
    assert!(
        r.fails(1).contains("could not reach CloudWatch Logs"),
        "{}",
        r.stderr
    );
    let _ = std::fs::remove_dir_all(&home);

    // --help needs no AWS at all.
    let out = Command::new(BIN)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && help.contains("fetch") && help.contains("--endpoint-url"),
        "{help}"
    );
}
