//! The container image (the repository's `Dockerfile`) without an image registry: its runtime
//! stage is built offline on a Debian base debootstrapped by scripts/install-deps.sh and
//! imported here (`docker import`), holding
//! the workspace's own binaries (`--build-arg BINARIES=prebuilt`), and each program runs in it.
//!
//! Each test builds in a Docker engine of its own ([`testkit::Dockerd`]) that is removed with
//! everything it stored: BuildKit under the vfs driver leaks ~0.9 GB of snapshots per build.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::{unique_name, wait_until, workspace_bin, Dockerd, Journald, BUSYBOX_IMAGE};

/// The runtime base the test builds on, imported into each test's engine from [`BASE_CACHE`].
const BASE_IMAGE: &str = "logsuite-base:test";
/// Where `scripts/install-deps.sh` keeps the debootstrapped base as a tarball (delete it to
/// remake it; its name changes with [`BASE_PACKAGES`]).
const BASE_CACHE: &str = "/var/cache/logsuite-tests";
/// What the Dockerfile's runtime stage would otherwise install with apt (it needs network then).
/// The same list as `BASE_PACKAGES` in scripts/install-deps.sh.
const BASE_PACKAGES: &str = "libsystemd0,ca-certificates";
const PROGRAMS: [&str; 3] = ["log-proxy", "journal-fanout", "cwlogs"];
/// The user the Dockerfile creates.
const IMAGE_UID: &str = "10001";
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

#[test]
fn runtime_stage_builds_offline_and_runs_each_program_as_a_non_root_user() {
    let image = Image::build();

    let version = env!("CARGO_PKG_VERSION"); // the workspace version, shared by every program
    for program in PROGRAMS {
        // log-proxy is the entrypoint; the others are chosen with --entrypoint.
        let out = match program {
            "log-proxy" => image.run(&[], &["--version"]),
            _ => image.run(&["--entrypoint", program], &["--version"]),
        };
        assert!(
            out.starts_with(&format!("{program} {version} (rev ")),
            "`{program} --version` in the image printed {out:?}, expected \"{program} {version} (rev …)\""
        );
    }

    let entrypoint = image.engine.run(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}}",
        &image.tag,
    ]);
    assert_eq!(entrypoint, r#"["log-proxy"]"#, "the image's entrypoint");

    let uid = image.run(&["--entrypoint", "id"], &["-u"]);
    assert_eq!(
        uid, IMAGE_UID,
        "the image must run as the non-root user logsuite"
    );
    let user = image.run(&["--entrypoint", "id"], &["-un"]);
    assert_eq!(user, "logsuite");

    // journal-fanout's default --state-dir must be writable by that user (a named volume
    // mounted there starts with this ownership), and TLS needs the system CA bundle.
    assert!(
        image.succeeds(
            &["--entrypoint", "test"],
            &["-w", "/var/lib/journal-fanout"]
        ),
        "/var/lib/journal-fanout is not writable by the image's user"
    );
    assert!(
        image.succeeds(
            &["--entrypoint", "test"],
            &["-s", "/etc/ssl/certs/ca-certificates.crt"]
        ),
        "the image has no CA bundle at /etc/ssl/certs/ca-certificates.crt"
    );
}

/// The run commands of docs/container-image.md, with a private journald namespace standing in
/// for the host's journal: a container's line goes through log-proxy in the image (as its
/// non-root user, the Docker socket reached through `--group-add`) into journald, and
/// journal-fanout in the image (group systemd-journal) reads it back out.
#[test]
fn documented_runs_carry_a_container_line_through_log_proxy_and_journal_fanout_in_the_image() {
    let image = Image::build();
    let jd = Journald::start();
    let ns = jd.namespace().to_string();

    // log-proxy: the proxy's socket directory belongs to the image's user on the host.
    let proxy_dir = std::env::temp_dir().join(unique_name("log-proxy-dir"));
    std::fs::create_dir_all(&proxy_dir).unwrap();
    std::os::unix::fs::chown(&proxy_dir, Some(10001), Some(10001)).unwrap();
    // The engine's socket, mounted where the documented command mounts the host's.
    let engine = &image.engine;
    let docker_gid = std::fs::metadata(engine.socket())
        .unwrap_or_else(|e| panic!("{}: {e}", engine.socket().display()))
        .gid()
        .to_string();
    let proxy = unique_name("log-proxy");
    let proxy_mount = format!("{}:/run/log-proxy", proxy_dir.display());
    let journal_mount = format!("/run/systemd/journal.{ns}:/run/systemd/journal");
    let docker_mount = format!("{}:{DOCKER_SOCKET}", engine.socket().display());
    engine.run(
        &[
            &["run", "-d", "--name", &proxy, "--network", "none"][..],
            &["--group-add", &docker_gid],
            &["-v", &proxy_mount],
            &["-v", &journal_mount],
            &["-v", &docker_mount],
            // No arguments: the image's own default puts the socket in /run/log-proxy.
            &[&image.tag],
        ]
        .concat(),
    );
    let socket = proxy_dir.join("log-proxy.sock");
    wait_until(
        Duration::from_secs(30),
        "log-proxy's socket in the image",
        || {
            if socket.exists() {
                return Some(());
            }
            let running = engine.run(&["inspect", "--format", "{{.State.Running}}", &proxy]);
            assert_eq!(
                running,
                "true",
                "log-proxy in the image exited: {}",
                logs(engine, &proxy)
            );
            None
        },
    );

    let web = unique_name("web");
    let line = format!("line from {web}");
    let address = format!("syslog-address=unixgram://{}", socket.display());
    testkit::import_busybox(Some(&engine.host()));
    engine.run(
        &[
            &["run", "--rm", "--network", "none", "--name", &web][..],
            &["--log-driver", "syslog", "--log-opt", &address],
            &["--log-opt", "syslog-format=rfc5424micro"],
            &["--log-opt", "tag={{.ID}}"],
            &[BUSYBOX_IMAGE, "echo", &line],
        ]
        .concat(),
    );
    // CONTAINER_NAME comes from the Docker API: the socket was reachable as the image's user.
    let entries = jd.wait_for_count(
        &[&format!("CONTAINER_NAME={web}")],
        1,
        Duration::from_secs(30),
    );
    assert_eq!(
        testkit::field(&entries[0], "MESSAGE").as_deref(),
        Some(line.as_str())
    );
    assert_eq!(
        testkit::field(&entries[0], "_UID").as_deref(),
        Some(IMAGE_UID)
    );

    // journal-fanout: on a host booted by systemd, systemd-tmpfiles gives the journal to group
    // systemd-journal (directories setgid, so new files inherit it); do the same here.
    let journal_gid = group_id("systemd-journal");
    let journal_dir = jd.directory();
    for entry in std::fs::read_dir(&journal_dir).unwrap() {
        std::os::unix::fs::chown(entry.unwrap().path(), None, Some(journal_gid)).unwrap();
    }
    std::os::unix::fs::chown(&journal_dir, None, Some(journal_gid)).unwrap();
    std::fs::set_permissions(&journal_dir, std::fs::Permissions::from_mode(0o2750)).unwrap();

    let state = unique_name("fanout-state");
    let fanout = unique_name("journal-fanout");
    let journal_group = journal_gid.to_string();
    let state_mount = format!("{state}:/var/lib/journal-fanout");
    engine.run(
        &[
            &["run", "-d", "--name", &fanout, "--network", "none"][..],
            &["--group-add", &journal_group],
            &["-v", "/run/log/journal:/run/log/journal:ro"],
            &["-v", "/etc/machine-id:/etc/machine-id:ro"],
            &["-v", &state_mount],
            &["--entrypoint", "journal-fanout", &image.tag],
            &["--journal-namespace", &ns, "--from", "head"],
            &["--dst", "stdout", "--flush-timeout", "200ms"],
        ]
        .concat(),
    );
    let event = wait_until(
        Duration::from_secs(30),
        "journal-fanout's event in the image",
        || {
            // Events are JSON lines on stdout; `run` returns the container's stdout only.
            let out = engine.run(&["logs", &fanout]);
            out.lines().find(|l| l.contains(&line)).map(str::to_string)
        },
    );
    let event: serde_json::Value = serde_json::from_str(&event).unwrap();
    assert_eq!(
        event["stream"],
        web.as_str(),
        "the event's stream is the container name"
    );
    assert_eq!(event["event"]["message"], line.as_str());
    let _ = std::fs::remove_dir_all(&proxy_dir);
}

fn logs(engine: &Dockerd, container: &str) -> String {
    engine
        .docker(&["logs", container])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default()
}

fn group_id(name: &str) -> u32 {
    let groups = std::fs::read_to_string("/etc/group").expect("read /etc/group");
    groups
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(2)?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "the host has no group {name}: run `apt-get install -y systemd`, which creates it"
            )
        })
}

/// The runtime image built for one test, in an engine of its own that goes with it on drop.
struct Image {
    tag: String,
    engine: Dockerd,
}

impl Image {
    fn build() -> Image {
        let client = buildkit_client();
        let base = base_tarball();
        let engine = Dockerd::start_ready();
        engine.run(&["import", base.to_str().unwrap(), BASE_IMAGE]);
        let context = build_context();
        let image = Image {
            tag: format!("logsuite-test:{}", unique_name("img")),
            engine,
        };
        let out = Command::new(&client)
            .env("DOCKER_BUILDKIT", "1")
            .arg("-H")
            .arg(image.engine.host())
            .args(["build", "--network", "none", "--tag", &image.tag])
            .args(["--build-arg", "BINARIES=prebuilt"])
            .args(["--build-arg", &format!("BASE_IMAGE={BASE_IMAGE}")])
            .arg(&context)
            .output()
            .expect("run docker build");
        let _ = std::fs::remove_dir_all(&context);
        assert!(
            out.status.success(),
            "`{} build` of the runtime stage (BINARIES=prebuilt on {BASE_IMAGE}) failed:\n{}{}",
            client.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        image
    }

    /// `docker run` the image without network; panics on failure, returns stdout trimmed.
    fn run(&self, options: &[&str], args: &[&str]) -> String {
        self.engine.run(&self.run_argv(options, args))
    }

    /// Whether `docker run` of the image exits 0.
    fn succeeds(&self, options: &[&str], args: &[&str]) -> bool {
        self.engine
            .docker(&self.run_argv(options, args))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn run_argv<'a>(&'a self, options: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
        let mut argv = vec!["run", "--rm", "--network", "none"];
        argv.extend_from_slice(options);
        argv.push(&self.tag);
        argv.extend_from_slice(args);
        argv
    }
}

/// A Docker client that builds with BuildKit, which builds only the stages the target needs:
/// the legacy builder would build the Dockerfile's compile stage too and try to pull the Rust
/// image. Docker ≥ 23 needs the buildx plugin for it; 20.10's client has BuildKit built in.
fn buildkit_client() -> PathBuf {
    for client in ["docker", "/usr/bin/docker"] {
        let has_buildx = Command::new(client)
            .args(["buildx", "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let major = Command::new(client)
            .args(["version", "--format", "{{.Client.Version}}"])
            .stderr(Stdio::null())
            .output()
            .ok()
            .and_then(|o| {
                let v = String::from_utf8_lossy(&o.stdout).to_string();
                v.split('.').next()?.trim().parse::<u32>().ok()
            });
        if has_buildx || major.is_some_and(|m| m < 23) {
            return PathBuf::from(client);
        }
    }
    panic!(
        "no Docker client here builds with BuildKit (the image's prebuilt path needs it): \
         install the buildx plugin (`apt-get install docker-buildx`, or docker-buildx-plugin \
         from Docker's repository), or use Debian 12's docker.io, whose 20.10 client has it built in"
    );
}

/// The tarball of [`BASE_IMAGE`] in [`BASE_CACHE`]: a minimal Debian bookworm with the
/// runtime libraries, debootstrapped by `scripts/install-deps.sh` (a download, so not here:
/// the tests' traffic stays on loopback).
fn base_tarball() -> PathBuf {
    let tarball = Path::new(BASE_CACHE).join(format!(
        "debian-bookworm-minbase+{}.tar",
        BASE_PACKAGES.replace(',', "+")
    ));
    if !tarball.is_file() {
        panic!(
            "the image test's base {} is missing: run ./scripts/install-deps.sh, which \
             debootstraps it (Debian bookworm minbase with {BASE_PACKAGES}; needs debootstrap \
             and deb.debian.org)",
            tarball.display()
        );
    }
    tarball
}

/// A build context holding only the Dockerfile and dist/ with the workspace's binaries (the
/// repository itself is gigabytes of target/). Debug info is stripped, as the Dockerfile's
/// compile stage does: it is most of a debug build's size and the image needs none of it.
fn build_context() -> PathBuf {
    let context = std::env::temp_dir().join(unique_name("logsuite-image-context"));
    let dist = context.join("dist");
    std::fs::create_dir_all(&dist).expect("create the build context");
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile");
    std::fs::copy(&dockerfile, context.join("Dockerfile"))
        .unwrap_or_else(|e| panic!("cannot copy {}: {e}", dockerfile.display()));
    for program in PROGRAMS {
        let bin = workspace_bin(program);
        let status = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(dist.join(program))
            .arg(&bin)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run strip ({e}): run `apt-get install -y binutils`")
            });
        assert!(status.success(), "strip {} failed", bin.display());
    }
    context
}
