//! The README's first command, `scripts/demo.sh`, run as a newcomer runs it — except that it
//! uses the workspace's debug binaries (`LOGSUITE_BIN`) instead of building a release: with
//! real Docker containers, with its built-in generator (`LOGSUITE_DEMO_DOCKER=0`), failing,
//! and interrupted like Ctrl-C. Every run must leave nothing behind: no process, container,
//! journald namespace file or work directory.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use testkit::{docker, workspace_bin};

/// Longest a demo may take here; it needs ~15 s alone (the slow part waits one rate-limit
/// interval, 5 s, for the last drop notice).
const DEMO_TIMEOUT: Duration = Duration::from_secs(150);

struct Demo {
    status: ExitStatus,
    /// stdout and stderr, interleaved as written.
    output: String,
}

struct Setup {
    docker: bool,
    env: Vec<(&'static str, String)>,
    /// Send SIGINT to the script's process group once a line containing this appears.
    interrupt_at: Option<&'static str>,
}

impl Setup {
    fn with_docker(docker: bool) -> Setup {
        Setup {
            docker,
            env: Vec::new(),
            interrupt_at: None,
        }
    }
}

fn run_demo(setup: Setup) -> Demo {
    if setup.docker {
        docker(); // the engine and busybox:local, or a failure saying what to install
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bin = workspace_bin("log-proxy").parent().unwrap().to_path_buf();
    for b in ["journal-fanout", "cwlogs"] {
        workspace_bin(b); // panics with the build command when missing
    }

    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut cmd = Command::new("env");
    // As in a terminal: SIGINT handled by default even if this test runs with it ignored
    // (a background job of a script ignores it), so the script's Ctrl-C trap works.
    cmd.arg("--default-signal=INT")
        .arg(root.join("scripts/demo.sh"))
        .current_dir(root)
        .env("LOGSUITE_BIN", &bin)
        .env("LOGSUITE_DEMO_DOCKER", if setup.docker { "1" } else { "0" })
        .envs(setup.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        // Its own process group, so the interrupt reaches the script and what runs in its
        // foreground, as a terminal's Ctrl-C does, and nothing of this test.
        .process_group(0);
    let mut child = cmd.spawn().expect("run scripts/demo.sh");
    drop(cmd); // close our copies of the pipe's write end

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let start = Instant::now();
    let mut output = String::new();
    let mut interrupted = false;
    let signal = |name: &str, pid: u32| {
        let _ = Command::new("kill")
            .args([name, "--", &format!("-{pid}")])
            .status();
    };
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(at) = setup.interrupt_at {
                    if !interrupted && line.contains(at) {
                        signal("-INT", child.id());
                        interrupted = true;
                    }
                }
                output.push_str(&line);
                output.push('\n');
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEMO_TIMEOUT {
            // Interrupt it so it cleans up, then report what it printed.
            signal("-INT", child.id());
            let _ = child.wait();
            output.extend(rx.try_iter().map(|l| l + "\n"));
            panic!("scripts/demo.sh did not finish within {DEMO_TIMEOUT:?}; it printed:\n{output}");
        }
    };
    // What it printed last, after its exit (the reader may lag a little behind).
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
        output.push_str(&line);
        output.push('\n');
    }
    if let Some(at) = setup.interrupt_at {
        assert!(interrupted, "the demo never printed {at:?}:\n{output}");
    }
    Demo { status, output }
}

/// What the demo said it created, read from its output.
struct Created {
    namespace: String,
    work: PathBuf,
    moto_port: Option<String>,
    pids: Vec<(String, u32)>,
}

fn created(d: &Demo) -> Created {
    let ns_line = d
        .output
        .lines()
        .find_map(|l| l.trim().strip_prefix("namespace "))
        .unwrap_or_else(|| panic!("the demo names no namespace:\n{}", d.output));
    let (ns, work) = ns_line
        .split_once(", work directory ")
        .unwrap_or_else(|| panic!("unexpected line {ns_line:?}"));
    let moto_port = d
        .output
        .lines()
        .find_map(|l| l.trim().strip_prefix("AWS_ENDPOINT_URL=http://127.0.0.1:"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string);
    // "started NAME (pid N, log ...)"
    let pids = d
        .output
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("started ")?;
            let (name, rest) = rest.split_once(" (pid ")?;
            let pid = rest.split(',').next()?.parse().ok()?;
            Some((name.to_string(), pid))
        })
        .collect();
    Created {
        namespace: ns.to_string(),
        work: PathBuf::from(work),
        moto_port,
        pids,
    }
}

/// Everything the demo created is gone once it has exited.
fn assert_nothing_left(d: &Demo, c: &Created, containers: &[String]) {
    let ns = &c.namespace;
    let machine_id = std::fs::read_to_string("/etc/machine-id").unwrap();
    for path in [
        format!("/etc/systemd/journald@{ns}.conf"),
        format!("/run/systemd/journal.{ns}"),
        format!("/run/log/journal/{}.{ns}", machine_id.trim()),
        c.work.display().to_string(),
    ] {
        assert!(
            !Path::new(&path).exists(),
            "{path} is left after the demo:\n{}",
            d.output
        );
    }

    // No process that mentions the namespace, the work directory or the emulator's port: the
    // recorded daemons (log-proxy, systemd-journald, moto_server, journal-fanout) and
    // anything they started.
    let mut markers = vec![ns.clone(), c.work.display().to_string()];
    if let Some(port) = &c.moto_port {
        markers.push(format!("-p\0{port}"));
    }
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
        if markers.iter().any(|m| cmdline.contains(m.as_str())) {
            left.push(format!("{pid}: {}", cmdline.replace('\0', " ")));
        }
    }
    assert!(
        left.is_empty(),
        "processes of the demo still run: {left:#?} (it started {:?})\n{}",
        c.pids,
        d.output
    );

    if !containers.is_empty() {
        let names = docker_names();
        for name in containers {
            assert!(
                !names.contains(name),
                "container {name} is left after the demo:\n{}",
                d.output
            );
        }
    }
}

fn docker_names() -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .expect("docker ps");
    assert!(out.status.success(), "docker ps -a failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The lines printed under a `$ cwlogs ...` heading, up to the next heading.
fn section<'a>(output: &'a str, heading: &str) -> Vec<&'a str> {
    output
        .lines()
        .skip_while(|l| !l.trim().starts_with(heading))
        .skip(1)
        .take_while(|l| {
            !l.trim().starts_with('$') && !l.starts_with("==>") && !l.trim().starts_with('(')
        })
        .map(str::trim)
        .collect()
}

fn assert_shows_the_pipeline(d: &Demo, quiet_stream: &str) {
    let out = &d.output;
    assert!(d.status.success(), "the demo failed ({}):\n{out}", d.status);

    // The noisy source is cut, and told so in its own log, with an exact account.
    assert!(
        out.contains(
            "log-proxy: beginning to drop log lines, the container is over its limit of 100 lines per 5s"
        ),
        "no first drop notice:\n{out}"
    );
    assert!(
        out.contains("WARN - log-proxy: dropped "),
        "the last drop notice did not reach CloudWatch:\n{out}"
    );
    assert!(
        out.contains("of 5000 sent: none lost silently"),
        "the noisy source's lines are not all accounted for:\n{out}"
    );
    assert!(
        out.contains("'web' kept all its 12 lines"),
        "the quiet source lost lines:\n{out}"
    );

    let list = section(out, "$ cwlogs list demo-web");
    assert!(
        list.first().is_some_and(|h| h.starts_with("STREAM")),
        "cwlogs list printed no table: {list:?}\n{out}"
    );
    assert!(
        list.iter()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some(quiet_stream)),
        "cwlogs list demo-web shows no stream {quiet_stream}: {list:?}\n{out}"
    );

    let fetch = section(out, "$ cwlogs fetch demo-web");
    let expect = |text: &str| {
        assert!(
            fetch
                .iter()
                .any(|l| l.contains(&format!("[ {quiet_stream} ]")) && l.contains(text)),
            "cwlogs fetch demo-web does not show {text:?} in stream {quiet_stream}: {fetch:#?}\n{out}"
        );
    };
    expect("INFO - GET /item/1 200");
    expect("WARN - slow request");
    expect("ERROR - database connection reset");
    assert_eq!(
        fetch.len(),
        12,
        "cwlogs fetch demo-web: every line of 'web' once: {fetch:#?}"
    );

    let groups = section(out, "$ cwlogs groups demo");
    assert_eq!(groups, ["demo-batch", "demo-web"], "{out}");
}

#[test]
fn demo_with_docker_containers_shows_every_program_and_cleans_up() {
    let d = run_demo(Setup::with_docker(true));
    let c = created(&d);
    let web = format!("web-{}", c.namespace);
    let batch = format!("batch-{}", c.namespace);
    assert!(
        d.output
            .contains(&format!("started containers {web} and {batch}")),
        "{}",
        d.output
    );
    assert!(
        d.output.contains(&format!("CONTAINER_NAME={web}")),
        "journald shows no Docker metadata for 'web':\n{}",
        d.output
    );
    assert_shows_the_pipeline(&d, &web);
    assert_nothing_left(&d, &c, &[web, batch]);
}

#[test]
fn demo_without_docker_uses_its_generator_and_cleans_up() {
    let d = run_demo(Setup::with_docker(false));
    let c = created(&d);
    assert!(
        d.output.contains("generator (no Docker)"),
        "LOGSUITE_DEMO_DOCKER=0 did not use the generator:\n{}",
        d.output
    );
    assert!(!d.output.contains("started containers"), "{}", d.output);
    // Without Docker there is no container name: journal-fanout's stream is `unknown`.
    assert_shows_the_pipeline(&d, "unknown");
    assert_nothing_left(&d, &c, &[]);
}

/// An engine that answers `docker info` but cannot run a container (no cgroups, a broken
/// storage driver): in its default mode the demo notices with one probe container and carries
/// on with its generator instead of failing half-way. The engine here works, so a `docker`
/// first on PATH refuses just the probe and hands every other command to the real client.
#[test]
fn demo_in_auto_mode_falls_back_to_its_generator_when_docker_cannot_run_a_container() {
    let shim = std::env::temp_dir().join(testkit::unique_name("docker-shim"));
    std::fs::create_dir_all(&shim).unwrap();
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v docker"])
            .output()
            .expect("sh")
            .stdout,
    )
    .unwrap();
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in *\" probe-\"*) echo 'shim: this engine cannot run containers' >&2; exit 125 ;; esac\nexec {} \"$@\"\n",
        real.trim()
    );
    let docker_shim = shim.join("docker");
    std::fs::write(&docker_shim, script).unwrap();
    std::fs::set_permissions(
        &docker_shim,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        shim.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let d = run_demo(Setup {
        env: vec![("LOGSUITE_DEMO_DOCKER", "auto".into()), ("PATH", path)],
        ..Setup::with_docker(true)
    });
    let _ = std::fs::remove_dir_all(&shim);
    let c = created(&d);
    assert!(
        d.output.contains("cannot run a container here")
            && d.output.contains("generator (no Docker)"),
        "the demo did not fall back to its generator:\n{}",
        d.output
    );
    assert!(!d.output.contains("started containers"), "{}", d.output);
    assert_shows_the_pipeline(&d, "unknown");
    assert_nothing_left(&d, &c, &[format!("probe-{}", c.namespace)]);
}

#[test]
fn interrupted_demo_removes_its_containers_processes_and_files() {
    let d = run_demo(Setup {
        interrupt_at: Some("started journal-fanout"),
        ..Setup::with_docker(true)
    });
    let c = created(&d);
    assert_eq!(
        d.status.code(),
        Some(130),
        "exit status after Ctrl-C:\n{}",
        d.output
    );
    assert!(
        d.output.contains("interrupted: cleaning up"),
        "{}",
        d.output
    );
    assert!(
        c.pids.iter().any(|(name, _)| name == "journal-fanout"),
        "interrupted before every program ran: {:?}\n{}",
        c.pids,
        d.output
    );
    let ns = &c.namespace;
    assert_nothing_left(&d, &c, &[format!("web-{ns}"), format!("batch-{ns}")]);
}

#[test]
fn failing_demo_names_the_step_and_shows_the_programs_log() {
    // A real start failure of journal-fanout: its environment sets an invalid batch size.
    let d = run_demo(Setup {
        env: vec![("JOURNAL_FANOUT_MAX_BATCH_SIZE", "0".into())],
        ..Setup::with_docker(false)
    });
    let c = created(&d);
    let out = &d.output;
    assert_eq!(d.status.code(), Some(1), "{out}");
    assert!(
        out.contains("demo FAILED in step \"journal-fanout: journald"),
        "the failure does not name the step:\n{out}"
    );
    assert!(out.contains("journal-fanout exited (status 2)"), "{out}");
    assert!(
        out.contains("fanout.log:") && out.contains("--max-batch-size must be at least 1"),
        "the failure does not show journal-fanout's log:\n{out}"
    );
    assert_nothing_left(&d, &c, &[]);
}
