//! The host set-up as shipped in `systemd/`: the units pass `systemd-analyze verify` as
//! installed by `scripts/install.sh`, the socket path agrees everywhere it is written, and a
//! Docker engine configured with `systemd/docker-daemon.json` (nothing else) sends every
//! container's lines through a socket-activated log-proxy into journald.
//!
//! systemd is not PID 1 here, so the socket unit's part is played by systemd's own
//! `systemd-socket-activate`, which passes the socket the way `log-proxy.socket` does.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::{field, unique_name, wait_until, workspace_bin, Dockerd, Journald};

/// The path `log-proxy.socket` listens on, as every other file must name it.
const SOCKET: &str = "/run/rate-limiting-log-proxy.sock";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn temp_dir(prefix: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique_name(prefix));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn installed_units_pass_systemd_analyze_verify() {
    // Installed exactly as an operator would (staged), with the man pages their
    // Documentation= names, then verified with the programs' path pointing at the staging dir.
    let dest = temp_dir("units");
    let bin_dir = workspace_bin("log-proxy").parent().unwrap().to_path_buf();
    run(Command::new(repo().join("scripts/install.sh"))
        .arg("--destdir")
        .arg(&dest)
        .arg("--bin-dir")
        .arg(&bin_dir));
    // The default prefix (/usr/local) puts units where systemd reads vendor units.
    let units = dest.join("usr/local/lib/systemd/system");
    let check = temp_dir("units-check");
    let names = [
        "log-proxy.socket",
        "log-proxy.service",
        "journal-fanout.service",
    ];
    for name in names {
        let text = std::fs::read_to_string(units.join(name))
            .unwrap_or_else(|e| panic!("install.sh did not install {name}: {e}"));
        let staged_bin = format!("{}/usr/local/bin/", dest.display());
        std::fs::write(
            check.join(name),
            text.replace("/usr/local/bin/", &staged_bin),
        )
        .unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(names.map(|n| check.join(n)))
        .env("MANPATH", dest.join("usr/local/share/man"))
        .output()
        .expect("systemd-analyze is part of systemd: apt-get install systemd");
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify complained:\n{said}"
    );

    // Hardening, as systemd scores it (0 = fully locked down, 10 = unprotected): both daemons
    // must stay at or below 2.0 ("OK"; 1.5 when written).
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .args(["log-proxy.service", "journal-fanout.service"].map(|n| check.join(n)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "a unit's exposure level rose above 2.0:\n{}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains('✗') || l.contains("Overall"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The check itself bites: a unit whose man page is missing fails it.
    let missing = Command::new("systemd-analyze")
        .arg("verify")
        .arg(check.join("log-proxy.service"))
        .env("MANPATH", dest.join("nowhere"))
        .output()
        .unwrap();
    assert!(
        !missing.status.success(),
        "systemd-analyze verify did not check Documentation=man:"
    );
    let _ = std::fs::remove_dir_all(&dest);
    let _ = std::fs::remove_dir_all(&check);
}

#[test]
fn the_socket_path_and_settings_agree_in_every_shipped_file() {
    let socket_unit = read("systemd/log-proxy.socket");
    assert!(
        socket_unit.contains(&format!("\nListenDatagram={SOCKET}\n")),
        "log-proxy.socket must listen on {SOCKET}"
    );
    let daemon: serde_json::Value = serde_json::from_str(&read("systemd/docker-daemon.json"))
        .expect("systemd/docker-daemon.json is JSON");
    assert_eq!(daemon["log-driver"], "syslog");
    assert_eq!(
        daemon["log-opts"]["syslog-address"],
        format!("unixgram://{SOCKET}")
    );
    assert_eq!(daemon["log-opts"]["syslog-format"], "rfc5424micro");
    assert_eq!(daemon["log-opts"]["tag"], "{{.ID}}");

    let ecs = read("systemd/ecs.config");
    let drivers = ecs
        .lines()
        .find_map(|l| l.strip_prefix("ECS_AVAILABLE_LOGGING_DRIVERS="))
        .expect("ecs.config sets ECS_AVAILABLE_LOGGING_DRIVERS");
    let drivers: Vec<String> =
        serde_json::from_str(drivers).expect("ECS_AVAILABLE_LOGGING_DRIVERS is a JSON array");
    assert!(drivers.iter().any(|d| d == "syslog"), "{drivers:?}");
    assert!(ecs.contains(&format!("unixgram://{SOCKET}")));

    // log-proxy's own default (when started by hand) is the same socket.
    let help = run(Command::new(workspace_bin("log-proxy")).arg("--help")).stdout;
    let help = String::from_utf8_lossy(&help);
    assert!(
        help.contains(&format!("unixgram://{SOCKET}"))
            || help.contains(&format!("unixgram:///var{SOCKET}")),
        "log-proxy's default --syslog-address differs from {SOCKET}:\n{help}"
    );

    let service = read("systemd/log-proxy.service");
    for setting in [
        "Type=notify",
        "WatchdogSec=",
        "LogRateLimitIntervalSec=0",
        "Restart=on-failure",
        "EnvironmentFile=-/etc/default/log-proxy",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "SupplementaryGroups=docker",
        "Requires=log-proxy.socket",
    ] {
        assert!(
            service.contains(setting),
            "log-proxy.service lacks {setting}"
        );
    }
    let fanout = read("systemd/journal-fanout.service");
    for setting in [
        "Type=notify",
        "StateDirectory=journal-fanout",
        "Restart=on-failure",
        "EnvironmentFile=-/etc/default/journal-fanout",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "SupplementaryGroups=systemd-journal",
    ] {
        assert!(
            fanout.contains(setting),
            "journal-fanout.service lacks {setting}"
        );
    }
}

#[test]
fn environment_files_name_every_setting_with_its_default() {
    // systemd/*.env become /etc/default/*: an operator edits them, so a renamed flag must not
    // leave a variable there that the program silently ignores, nor a setting undocumented.
    for (program, file, prefix) in [
        ("log-proxy", "systemd/log-proxy.env", "LOG_PROXY_"),
        (
            "journal-fanout",
            "systemd/journal-fanout.env",
            "JOURNAL_FANOUT_",
        ),
    ] {
        let help = run(Command::new(workspace_bin(program)).arg("--help")).stdout;
        let help = String::from_utf8_lossy(&help);
        // NAME -> the default --help shows, if any (one option's text is one line in --help).
        let mut in_help = std::collections::BTreeMap::new();
        for line in help.lines() {
            let Some((_, rest)) = line.split_once("[env: ") else {
                continue;
            };
            let name = rest.split('=').next().unwrap().to_string();
            let default = line
                .split_once("[default: ")
                .map(|(_, d)| d.split(']').next().unwrap().to_string());
            in_help.insert(name, default);
        }
        assert!(
            !in_help.is_empty(),
            "{program} --help names no variables:\n{help}"
        );

        let text = read(file);
        let mut in_file = std::collections::BTreeMap::new();
        for line in text.lines() {
            let (commented, line) = match line.strip_prefix('#') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            if let Some((name, value)) = line.split_once('=') {
                if name.starts_with(prefix) && !name.contains(' ') {
                    in_file.insert(name.to_string(), (commented, value.to_string()));
                }
            }
        }
        let help_names: Vec<_> = in_help.keys().collect();
        let file_names: Vec<_> = in_file.keys().collect();
        assert_eq!(
            file_names, help_names,
            "{file} must list exactly the variables `{program} --help` reads"
        );
        // The file says a commented line keeps the default it shows: it must be the default.
        // (/var/run is a link to /run: either spelling names the same socket.)
        let same =
            |a: &str, b: &str| a.replace("/var/run/", "/run/") == b.replace("/var/run/", "/run/");
        for (name, default) in &in_help {
            let (commented, value) = &in_file[name];
            // Defaults worked out at run time read like "$DOCKER_HOST, else ...".
            let Some(default) = default.as_deref().filter(|d| !d.contains('$')) else {
                continue;
            };
            if *commented && !value.is_empty() {
                assert!(
                    same(value, default),
                    "{file}: #{name}={value}, but {program}'s default is {default}"
                );
            }
        }
    }
}

#[test]
fn docker_configured_by_daemon_json_logs_every_container_through_log_proxy() {
    let jd = Journald::start();
    let dir = temp_dir("daemon-json");
    let socket = dir.join("proxy.sock");
    // The shipped daemon.json, with only the socket path moved into this test's directory.
    let config = dir.join("daemon.json");
    let shipped = read("systemd/docker-daemon.json");
    assert!(shipped.contains(SOCKET));
    std::fs::write(&config, shipped.replace(SOCKET, socket.to_str().unwrap())).unwrap();

    // Docker refuses to start with this daemon.json while the socket does not exist: the
    // reason log-proxy.socket is ordered Before=docker.service.
    let early_dir = temp_dir("daemon-json-early");
    let mut early = Dockerd::start(&early_dir, Some(&config));
    assert_eq!(
        early.wait_ready(),
        None,
        "dockerd started without the syslog socket"
    );
    assert!(
        early.log().contains(socket.to_str().unwrap()),
        "dockerd should name the missing socket: {}",
        early.log()
    );
    drop(early);

    let data_dir = dir.join("engine");
    std::fs::create_dir_all(&data_dir).unwrap();
    let engine_host = format!("unix://{}", data_dir.join("docker.sock").display());
    // log-proxy.socket: the socket exists now; log-proxy starts on the first datagram.
    let proxy_log = dir.join("log-proxy.log");
    let mut activator = Command::new("systemd-socket-activate")
        .arg("--datagram")
        .arg("--listen")
        .arg(&socket)
        .arg(workspace_bin("log-proxy"))
        .arg("--journal-socket")
        .arg(jd.socket())
        .arg("--docker-host")
        .arg(&engine_host)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&proxy_log).unwrap())
        .spawn()
        .expect("systemd-socket-activate is part of systemd: apt-get install systemd");
    wait_until(Duration::from_secs(10), "the activation socket", || {
        socket.exists().then_some(())
    });

    let mut engine = Dockerd::start(&data_dir, Some(&config));
    engine
        .wait_ready()
        .unwrap_or_else(|| panic!("dockerd exited: {}", engine.log()));
    let info = engine
        .docker(&["info", "--format", "{{.LoggingDriver}}"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&info.stdout).trim(), "syslog");

    // A minimal image for this engine (nothing can be pulled here).
    let root = dir.join("rootfs/bin");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy("/bin/busybox", root.join("busybox"))
        .expect("/bin/busybox is missing: apt-get install busybox-static");
    std::os::unix::fs::symlink("busybox", root.join("sh")).unwrap();
    let image = "daemon-json:local";
    testkit::docker_import(Some(&engine.host()), &dir.join("rootfs"), image)
        .unwrap_or_else(|e| panic!("{e}"));

    // No --log-driver, no --log-opt: the daemon's defaults from daemon.json apply.
    let name = unique_name("dj");
    let out = engine
        .docker(&["run", "--rm", "--network", "none", "--name", &name, image])
        .args(["sh", "-c", "echo first line; echo second line >&2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries = jd.wait_for_count(
        &[&format!("CONTAINER_NAME={name}")],
        2,
        Duration::from_secs(30),
    );
    let mut got: Vec<(String, String)> = entries
        .iter()
        .map(|e| (field(e, "MESSAGE").unwrap(), field(e, "PRIORITY").unwrap()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("first line".to_string(), "6".to_string()),
            ("second line".to_string(), "3".to_string())
        ],
        "stdout at info, stderr at err, with Docker metadata (CONTAINER_NAME)"
    );
    let e = &entries[0];
    assert_eq!(field(e, "IMAGE_NAME").as_deref(), Some(image));
    assert_eq!(field(e, "CONTAINER_ID").map(|s| s.len()), Some(12));

    drop(engine);
    let _ = activator.kill();
    let _ = activator.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
