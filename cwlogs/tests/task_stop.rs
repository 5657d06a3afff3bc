//! `fetch -f` ends when the ECS task it follows stops: against moto's ECS, a task is run,
//! its stream followed, and StopTask ends cwlogs with the reason and status 0.

mod support;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{now_ms, Cw, Lines};

/// How long after StopTask cwlogs must have ended: one 10 s DescribeTasks period, the last
/// poll, and room for a loaded machine.
const STOP_WITHIN: Duration = Duration::from_secs(15);

#[test]
fn following_a_task_ends_when_ecs_stops_it() {
    let cw = Cw::start();
    let arn = cw.moto.ecs_run_task("prod");
    let id = arn.rsplit('/').next().unwrap().to_string();
    assert_eq!(id.len(), 36, "moto's task IDs are UUIDs: {arn}");
    let stream = format!("ecs/app/{id}");
    cw.group("checkout");
    cw.stream("checkout", &stream);
    cw.stream("checkout", "ecs/app/other-task");
    cw.put("checkout", &stream, &[(now_ms() - 1000, "serving".into())]);

    let spawn = |args: &[&str]| {
        let mut c = cw.cmd(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    // Automatic: --task names one task (a prefix of its stream) and --cluster is given.
    let prefix = format!("ecs/app/{}", &id[..8]);
    let mut auto = spawn(&[
        "fetch",
        "checkout",
        "-f",
        "-t",
        &prefix,
        "--cluster",
        "prod",
        "-o",
        "{{message}}",
    ]);
    // Asked for, with the cluster found by asking ECS.
    let mut asked = spawn(&[
        "fetch",
        "checkout",
        "-f",
        "--until-task-stops",
        "-t",
        &stream,
        "-o",
        "{{message}}",
    ]);
    let mut auto_out = Lines::new(auto.stdout.take().unwrap());
    let mut asked_out = Lines::new(asked.stdout.take().unwrap());
    auto_out.wait_for("serving", Duration::from_secs(30));
    asked_out.wait_for("serving", Duration::from_secs(30));

    // The task's last words, then the stop.
    cw.put("checkout", &stream, &[(now_ms(), "shutting down".into())]);
    let reason = "Scaling activity initiated by (deployment ecs-svc/123)";
    cw.moto.ecs_stop_task("prod", &arn, reason);
    let stopped = Instant::now();

    for (name, child, out) in [
        ("automatic", &mut auto, &mut auto_out),
        ("--until-task-stops", &mut asked, &mut asked_out),
    ] {
        let status = testkit::wait_until(
            STOP_WITHIN.saturating_sub(stopped.elapsed()),
            &format!("cwlogs ({name}) to exit after StopTask"),
            || child.try_wait().unwrap(),
        );
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        out.drain();
        assert_eq!(
            (status.code(), stderr.as_str()),
            (
                Some(0),
                format!("cwlogs: task {id} stopped ({reason}); exiting\n").as_str()
            ),
            "{name}"
        );
        assert_eq!(out.seen, ["serving", "shutting down"], "{name}");
    }
}

#[test]
fn until_task_stops_needs_a_task_it_can_find() {
    let cw = Cw::start();
    cw.group("checkout");
    cw.stream("checkout", "web-1");
    cw.stream("checkout", "web-2");
    cw.put("checkout", "web-1", &[(now_ms() - 1000, "x".into())]);
    let r = cw.run(&["fetch", "checkout", "-f", "--until-task-stops"]);
    assert!(
        r.fails(2).contains("--until-task-stops needs --task"),
        "{}",
        r.stderr
    );
    let r = cw.run(&["fetch", "checkout", "-f", "--until-task-stops", "-t", "web"]);
    assert!(
        r.fails(2)
            .contains("--task to name one ECS task, but the streams starting with \"web\""),
        "{}",
        r.stderr
    );
    // A task ID no cluster has.
    cw.moto.ecs_run_task("prod");
    let ghost = "0123456789abcdef0123456789abcdef";
    cw.stream("checkout", ghost);
    let r = cw.run(&[
        "fetch",
        "checkout",
        "-f",
        "--until-task-stops",
        "-t",
        ghost,
        "--cluster",
        "prod",
    ]);
    assert!(
        r.fails(2)
            .contains(&format!("ECS task {ghost} is not in cluster \"prod\"")),
        "{}",
        r.stderr
    );
    let r = cw.run(&[
        "fetch",
        "checkout",
        "-f",
        "--until-task-stops",
        "-t",
        ghost,
        "--cluster",
        "nope",
    ]);
    assert!(
        r.fails(2)
            .contains("ECS has no cluster \"nope\" in this account and region"),
        "{}",
        r.stderr
    );
    // Without -f there is nothing to stop.
    let r = cw.run(&["fetch", "checkout", "--until-task-stops", "-t", ghost]);
    assert!(r.fails(2).contains("--follow"), "{}", r.stderr);
}
