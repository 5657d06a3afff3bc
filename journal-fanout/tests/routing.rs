//! Routing, naming, reload and the shared journal read, end to end: a private journald
//! namespace → journal-fanout with a configuration file → moto (CloudWatch Logs, behind the
//! checking pass-through) and the Loggly and LogDNA contract receivers.

mod common;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{all_messages, moto_events, write_entries, CheckingProxy, Fanout};
use support::receivers::{Api, Receiver};
use testkit::{wait_until, Journald, Moto};

const WAIT: Duration = Duration::from_secs(180);

/// A line of service `tag`, container `name`, at syslog priority `prio`, marked `n=<i>`.
fn line(tag: &str, name: &str, prio: u8, i: usize) -> Vec<(String, String)> {
    let mut e = common::container_line(tag, name, &format!("n={i:06} from {tag}"));
    e.retain(|(k, _)| k != "PRIORITY");
    e.push(("PRIORITY".into(), prio.to_string()));
    e
}

fn marker(m: &str) -> Option<usize> {
    m.strip_prefix("n=")?.get(..6)?.parse().ok()
}

fn markers(rx: &Receiver) -> Vec<usize> {
    rx.events()
        .iter()
        .filter_map(|e| marker(&e.message()))
        .collect()
}

fn moto_markers(moto: &Moto) -> Vec<usize> {
    all_messages(&moto_events(&moto.endpoint()))
        .iter()
        .filter_map(|m| marker(m))
        .collect()
}

fn set(v: &[usize]) -> HashSet<usize> {
    v.iter().copied().collect()
}

struct Setup {
    j: Journald,
    dir: tempfile::TempDir,
    moto: Moto,
    proxy: CheckingProxy,
    lg: Receiver,
    dna: Receiver,
}

impl Setup {
    fn new() -> Setup {
        let moto = Moto::start();
        let proxy = CheckingProxy::start(moto.port());
        Setup {
            j: Journald::start(),
            dir: tempfile::tempdir().unwrap(),
            moto,
            proxy,
            lg: Receiver::start(Api::LogglyBulk {
                token: "lgtoken".into(),
            }),
            dna: Receiver::start(Api::LogdnaIngest {
                key: "dnakey".into(),
            }),
        }
    }

    fn config(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("config.toml");
        // Replaced by rename, as configuration managers do.
        let tmp = self.dir.path().join(".config.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn fanout(&self, dst: &str, metrics: &str) -> Fanout {
        let mut env = self.proxy.env();
        env.extend([
            ("LOGGLY_TOKEN", "lgtoken".to_string()),
            ("LOGGLY_URL", self.lg.url()),
            ("LOGDNA_TOKEN", "dnakey".to_string()),
            ("LOGDNA_URL", self.dna.url()),
        ]);
        Fanout::start(
            &[
                "--journal-namespace",
                self.j.namespace(),
                "--config",
                self.dir.path().join("config.toml").to_str().unwrap(),
                "--dst",
                dst,
                "--from",
                "head",
                "--state-dir",
                self.state().to_str().unwrap(),
                "--flush-timeout",
                "300ms",
                "--metrics-address",
                metrics,
            ],
            &env,
        )
    }
}

fn scrape(addr: &str) -> String {
    common::metrics(addr.rsplit(':').next().unwrap().parse().unwrap()).unwrap_or_default()
}

fn metric_of(addr: &str, series: &str) -> Option<u64> {
    common::metric(&scrape(addr), series)
}

/// Waits until `got()` holds every marker of `want`, failing with journal-fanout's stderr.
fn wait_for(f: &mut Fanout, what: &str, want: &HashSet<usize>, got: impl Fn() -> Vec<usize>) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(WAIT, what, || {
            let have = set(&got());
            want.is_subset(&have).then_some(())
        })
    }));
    if let Err(e) = r {
        let have = set(&got());
        panic!(
            "{what}: {} of {} arrived ({e:?})\njournal-fanout stderr:\n{}",
            want.intersection(&have).count(),
            want.len(),
            f.stderr_text()
        );
    }
}

const ROUTES: &str = r#"
[naming]
group = "{{ecs_family | default(CONTAINER_TAG)}}"
stream = "{{CONTAINER_NAME}}"

[[route]]
match.group = "payments-*"
to = ["cloudwatchlogs"]

[[route]]
match.priority = "debug"
to = []

[[route]]
match.field.CONTAINER_NAME = "*-canary"
to = ["loggly", "logdna"]
"#;

/// Three services through one fanout: each destination gets exactly its routed set, the
/// debug lines go nowhere and are counted as routed away, nothing else is missing.
#[test]
fn each_destination_gets_exactly_its_routed_set() {
    let s = Setup::new();
    s.config(ROUTES);
    let metrics = format!("127.0.0.1:{}", testkit::free_port());
    // (service, container, priority) by marker; what each destination must get.
    let mut entries = Vec::new();
    let (mut cw, mut lg, mut dna, mut debug) = (HashSet::new(), HashSet::new(), HashSet::new(), 0);
    for i in 0..3_000 {
        let (tag, name, prio) = match i % 6 {
            0 => ("payments-api", "payments-1", 6),
            1 => ("payments-api", "payments-1", 7), // route 1 wins over the debug rule
            2 => ("web", "web-1", 7),
            3 => ("web", "web-canary", 6),
            4 => ("web", "web-1", 3),
            _ => ("worker", "worker-canary", 7), // debug first: nowhere
        };
        entries.push(line(tag, name, prio, i));
        match (tag, name, prio) {
            ("payments-api", _, _) => {
                cw.insert(i);
            }
            (_, _, 7) => debug += 1,
            (_, "web-canary", _) => {
                lg.insert(i);
                dna.insert(i);
            }
            _ => {
                cw.insert(i);
                lg.insert(i);
                dna.insert(i);
            }
        }
    }
    let mut f = s.fanout("cloudwatchlogs,loggly,logdna", &metrics);
    write_entries(s.j.socket(), entries);
    wait_for(&mut f, "loggly's set", &lg, || markers(&s.lg));
    wait_for(&mut f, "logdna's set", &dna, || markers(&s.dna));
    wait_for(&mut f, "cloudwatch's set", &cw, || moto_markers(&s.moto));
    // Every destination has passed the last entry: the counters are final.
    wait_until(WAIT, "every destination at the journal's end", || {
        let t = scrape(&metrics);
        let get = |d: &str, what: &str| {
            common::metric(&t, &format!("{what}{{destination=\"{d}\"}}")).unwrap_or(0)
        };
        ["cloudwatchlogs", "loggly", "logdna"]
            .iter()
            .all(|d| {
                get(d, "events_delivered_total") + get(d, "entries_routed_away_total") >= 3_000
            })
            .then_some(())
    });
    let t = scrape(&metrics);
    assert!(f.terminate().success(), "{}", f.stderr_text());
    // Exactly their sets: nothing more, nothing twice.
    let (got_lg, got_dna, got_cw) = (markers(&s.lg), markers(&s.dna), moto_markers(&s.moto));
    assert_eq!(set(&got_lg), lg, "loggly");
    assert_eq!(set(&got_dna), dna, "logdna");
    assert_eq!(set(&got_cw), cw, "cloudwatch");
    assert_eq!(got_lg.len(), lg.len(), "loggly got duplicates");
    assert_eq!(got_dna.len(), dna.len(), "logdna got duplicates");
    assert_eq!(got_cw.len(), cw.len(), "cloudwatch got duplicates");
    s.proxy.assert_no_violations();
    s.lg.assert_no_violations();
    s.dna.assert_no_violations();
    // Routed away: everything a destination did not get, the debug lines among it.
    assert_eq!(
        common::metric(&t, "route_entries_total{route=\"2\"}"),
        Some(debug),
        "{t}"
    );
    for (d, got) in [("cloudwatchlogs", &cw), ("loggly", &lg), ("logdna", &dna)] {
        assert_eq!(
            common::metric(
                &t,
                &format!("entries_routed_away_total{{destination=\"{d}\"}}")
            ),
            Some(3_000 - got.len() as u64),
            "{d}: {t}"
        );
        assert_eq!(
            common::metric(&t, &format!("entries_lost_total{{destination=\"{d}\"}}")),
            Some(0)
        );
    }
}

/// Entries of an ECS task land in the group named for its family, created with 30 days of
/// retention; entries without a task fall back as the template says.
#[test]
fn ecs_tasks_are_named_by_family_with_retention() {
    let s = Setup::new();
    s.config(
        r#"
[naming]
group = "{{ecs_family | default(CONTAINER_TAG)}}"
stream = "{{ecs_task_id | default(CONTAINER_NAME)}}"
"#,
    );
    let metrics = format!("127.0.0.1:{}", testkit::free_port());
    let task = "arn:aws:ecs:us-east-1:123456789012:task/prod/0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let mut with_task = common::container_line(
        "0123456789ab",
        "ecs-checkout-api-12-web-e0a1b2c3d4e5f6",
        "n=000001 in a task",
    );
    with_task.push(("CONTAINER_TASK".into(), task.into()));
    let mut labelled = common::container_line("fedcba987654", "whatever", "n=000002 labelled");
    labelled.push(("CONTAINER_TASK".into(), task.into()));
    labelled.push(("CONTAINER_TASK_FAMILY".into(), "billing".into()));
    let plain = common::container_line("a1b2c3d4e5f6", "sidecar", "n=000003 no task");
    let mut f = s.fanout("cloudwatchlogs", &metrics);
    write_entries(s.j.socket(), [with_task, labelled, plain]);
    wait_for(&mut f, "three lines", &set(&[1, 2, 3]), || {
        moto_markers(&s.moto)
    });
    assert!(f.terminate().success(), "{}", f.stderr_text());
    let events = moto_events(&s.moto.endpoint());
    let place = |n: usize| {
        events
            .iter()
            .find(|(_, evs)| {
                evs.iter()
                    .any(|e| e["message"].as_str().and_then(marker) == Some(n))
            })
            .map(|(k, _)| k.clone())
            .unwrap()
    };
    let id = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    assert_eq!(place(1), ("checkout-api".into(), id.into()));
    assert_eq!(place(2), ("billing".into(), id.into()));
    assert_eq!(place(3), ("a1b2c3d4e5f6".into(), "sidecar".into()));
    let retention = common::moto_retention(&s.moto.endpoint());
    for g in ["checkout-api", "billing", "a1b2c3d4e5f6"] {
        assert_eq!(retention.get(g), Some(&Some(30)), "{g}: {retention:?}");
    }
}

/// The sequence number (`i=`) of the cursor saved in `file`.
fn saved_seqnum(file: &Path) -> Option<u64> {
    let c = std::fs::read_to_string(file).ok()?;
    c.trim()
        .split(';')
        .find_map(|p| p.strip_prefix("i="))
        .and_then(|v| u64::from_str_radix(v, 16).ok())
}

/// Reloads while lines keep coming: by SIGHUP, by the file changing, and a bad file that
/// keeps the running routes. Every line arrives where the routes in force when it was read
/// say (at least once, none missing); no saved cursor ever moves backwards.
#[test]
fn reload_under_load_applies_new_routes_and_refuses_a_bad_file() {
    let s = Setup::new();
    let route_to = |d: &str| format!("[[route]]\nmatch.group = \"pay-*\"\nto = [\"{d}\"]\n");
    s.config(&route_to("loggly"));
    let metrics = format!("127.0.0.1:{}", testkit::free_port());
    let mut f = s.fanout("loggly,logdna", &metrics);
    let mut next = 0usize;
    let mut last_seq: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let mut write_phase = |f: &mut Fanout, n: usize| -> std::ops::Range<usize> {
        let start = next;
        let batch: Vec<_> = (start..start + n)
            .map(|i| {
                let tag = if i % 2 == 0 { "pay-api" } else { "other" };
                line(tag, "c-1", 6, i)
            })
            .collect();
        // In slices, checking the cursors between them.
        for chunk in batch.chunks(200) {
            write_entries(s.j.socket(), chunk.to_vec());
            for e in std::fs::read_dir(s.state()).into_iter().flatten().flatten() {
                let p = e.path();
                if let Some(seq) = saved_seqnum(&p) {
                    let before = last_seq.insert(p.clone(), seq).unwrap_or(0);
                    assert!(
                        seq >= before,
                        "{} moved back from {before} to {seq}",
                        p.display()
                    );
                }
            }
            assert!(f.is_running(), "journal-fanout exited: {}", f.stderr_text());
        }
        next += n;
        start..start + n
    };
    let pay = |r: std::ops::Range<usize>| -> HashSet<usize> { r.filter(|i| i % 2 == 0).collect() };
    let other =
        |r: std::ops::Range<usize>| -> HashSet<usize> { r.filter(|i| i % 2 == 1).collect() };

    // Phase 1: pay-* to loggly only.
    let p1 = write_phase(&mut f, 2_000);
    wait_for(&mut f, "phase 1 in loggly", &p1.clone().collect(), || {
        markers(&s.lg)
    });
    wait_for(
        &mut f,
        "phase 1 others in logdna",
        &other(p1.clone()),
        || markers(&s.dna),
    );

    // Phase 2: SIGHUP with pay-* to logdna. Lines written once the reload is logged are read
    // after it.
    s.config(&route_to("logdna"));
    unsafe { libc::kill(f.child.id() as i32, libc::SIGHUP) };
    wait_until(WAIT, "the reload to be logged", || {
        f.stderr_text()
            .contains("configuration reloaded")
            .then_some(())
    });
    let p2 = write_phase(&mut f, 2_000);
    wait_for(&mut f, "phase 2 in logdna", &p2.clone().collect(), || {
        markers(&s.dna)
    });
    wait_for(
        &mut f,
        "phase 2 others in loggly",
        &other(p2.clone()),
        || markers(&s.lg),
    );

    // Phase 3: the file changes (no signal) back to loggly.
    let reloads = f.stderr_text().matches("configuration reloaded").count();
    s.config(&route_to("loggly"));
    wait_until(WAIT, "the file change to be applied", || {
        (f.stderr_text().matches("configuration reloaded").count() > reloads).then_some(())
    });
    let p3 = write_phase(&mut f, 2_000);
    wait_for(&mut f, "phase 3 in loggly", &p3.clone().collect(), || {
        markers(&s.lg)
    });

    // Phase 4: a bad file (a destination that is not running), and SIGHUP: refused, said why,
    // and the routes of phase 3 stay.
    s.config(&route_to("kinesis"));
    unsafe { libc::kill(f.child.id() as i32, libc::SIGHUP) };
    wait_until(WAIT, "the refusal to be logged", || {
        let e = f.stderr_text();
        (e.contains("to = \"kinesis\" is not a running destination")
            && e.contains("the running one stays"))
        .then_some(())
    });
    let p4 = write_phase(&mut f, 2_000);
    wait_for(&mut f, "phase 4 in loggly", &p4.clone().collect(), || {
        markers(&s.lg)
    });
    wait_for(
        &mut f,
        "phase 4 others in logdna",
        &other(p4.clone()),
        || markers(&s.dna),
    );
    assert!(f.is_running(), "a bad file stopped it: {}", f.stderr_text());
    assert!(f.terminate().success(), "{}", f.stderr_text());

    // pay-* lines of each phase went only where that phase's routes said, others everywhere.
    let (lg, dna) = (set(&markers(&s.lg)), set(&markers(&s.dna)));
    for (phase, r, to_lg) in [(1, p1, true), (2, p2, false), (3, p3, true), (4, p4, true)] {
        let wrong = if to_lg { &dna } else { &lg };
        let stray: Vec<_> = pay(r.clone()).intersection(wrong).copied().collect();
        assert!(
            stray.is_empty(),
            "phase {phase}: pay-* lines sent to the wrong destination: {stray:?}"
        );
        assert!(
            other(r.clone()).is_subset(&lg) && other(r).is_subset(&dna),
            "phase {phase}"
        );
    }
    // No retries happened (receivers answered 200): nothing delivered twice.
    assert_eq!(markers(&s.lg).len(), lg.len(), "loggly got duplicates");
    assert_eq!(markers(&s.dna).len(), dna.len(), "logdna got duplicates");
}

/// Loggly answers 500 for 60 s: LogDNA and CloudWatch deliver 50,000 lines while it is still
/// refusing (it left the shared read), journal-fanout is killed (-9) while Loggly catches up,
/// and after the restart Loggly gets everything and rejoins the shared read.
#[test]
fn a_failing_destination_leaves_the_shared_read_and_catches_up_after_kill_9() {
    let s = Setup::new();
    s.config("");
    let metrics = format!("127.0.0.1:{}", testkit::free_port());
    s.lg.set(|b| b.fail_with = Some(500));
    let outage = Instant::now();
    let mut f = s.fanout("cloudwatchlogs,loggly,logdna", &metrics);
    let all: HashSet<usize> = (0..50_000).collect();
    write_entries(
        s.j.socket(),
        (0..50_000).map(|i| line(&format!("svc-{}", i % 5), &format!("c-{}", i % 7), 6, i)),
    );
    wait_for(&mut f, "logdna during the loggly outage", &all, || {
        markers(&s.dna)
    });
    wait_for(&mut f, "cloudwatch during the loggly outage", &all, || {
        moto_markers(&s.moto)
    });
    let took = outage.elapsed();
    assert!(
        s.lg.state().failed > 0 && s.lg.event_count() == 0,
        "loggly was not failing throughout"
    );
    assert_eq!(
        metric_of(&metrics, "shared_read{destination=\"loggly\"}"),
        Some(0),
        "loggly did not leave the shared read"
    );
    eprintln!("logdna and cloudwatch delivered 50,000 lines in {took:?} with loggly failing");
    // The rest of the 60 s outage (the scenario, not a readiness wait).
    while outage.elapsed() < Duration::from_secs(60) {
        assert!(f.is_running(), "journal-fanout died: {}", f.stderr_text());
        std::thread::sleep(Duration::from_millis(250));
    }
    s.lg.set(|b| b.fail_with = None);
    wait_until(WAIT, "loggly catching up", || {
        (s.lg.event_count() > 0).then_some(())
    });
    f.kill9();
    let mut f = s.fanout("cloudwatchlogs,loggly,logdna", &metrics);
    wait_for(&mut f, "loggly after the restart", &all, || markers(&s.lg));
    wait_until(WAIT, "loggly back on the shared read", || {
        (metric_of(&metrics, "shared_read{destination=\"loggly\"}") == Some(1)).then_some(())
    });
    // New lines now reach all three through the one reader.
    let more: HashSet<usize> = (50_000..50_100).collect();
    write_entries(
        s.j.socket(),
        (50_000..50_100).map(|i| line("svc-late", "c-late", 6, i)),
    );
    wait_for(&mut f, "late lines in loggly", &more, || markers(&s.lg));
    wait_for(&mut f, "late lines in logdna", &more, || markers(&s.dna));
    wait_for(&mut f, "late lines in cloudwatch", &more, || {
        moto_markers(&s.moto)
    });
    assert!(f.terminate().success(), "{}", f.stderr_text());
    s.lg.assert_no_violations();
    s.dna.assert_no_violations();
    s.proxy.assert_no_violations();
}

/// `check-config` validates without starting: a good file says what it sets and, given a
/// journal, where its last entries would go; a bad one exits 2 naming the problem.
#[test]
fn check_config_validates_and_previews_routes() {
    let s = Setup::new();
    let file = s.config(ROUTES);
    write_entries(
        s.j.socket(),
        (0..10).map(|i| line(if i < 4 { "payments-api" } else { "web" }, "web-1", 6, i)),
    );
    s.j.sync();
    let out = std::process::Command::new(common::BIN)
        .args([
            "check-config",
            file.to_str().unwrap(),
            "--journal-namespace",
            s.j.namespace(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(": OK: group = \"{{ecs_family | default(CONTAINER_TAG)}}\""),
        "{text}"
    );
    assert!(text.contains("10 container line(s)"), "{text}");
    assert!(text.contains("to cloudwatchlogs  10"), "{text}");
    assert!(text.contains("to loggly          6"), "{text}");
    assert!(text.contains("route 1 matched: 4"), "{text}");
    assert!(text.contains("payments-api / web-1 (4)"), "{text}");

    let bad = s.config("[naming]\ngroup = \"{{ecs_famliy}}\"\n");
    let out = std::process::Command::new(common::BIN)
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("naming.group") && err.contains("did you mean ecs_family?"),
        "{err}"
    );
}
