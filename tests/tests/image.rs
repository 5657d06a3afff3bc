//! The container image (the repository's `Dockerfile`) without an image registry: its runtime
//! stage is built offline on a Debian base made here (debootstrap + `docker import`), holding
//! the workspace's own binaries (`--build-arg BINARIES=prebuilt`), and each program runs in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use testkit::{docker, docker_cmd, unique_name, workspace_bin};

/// The runtime base the test builds on. Made once and kept: a later run that finds an image
/// with this tag reuses it (delete it to rebuild, e.g. after changing [`BASE_PACKAGES`]).
const BASE_IMAGE: &str = "logsuite-base:test";
/// What the Dockerfile's runtime stage would otherwise install with apt (it needs network then).
const BASE_PACKAGES: &str = "libsystemd0,ca-certificates";
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
const PROGRAMS: [&str; 3] = ["log-proxy", "journal-fanout", "cwlogs"];
/// The user the Dockerfile creates.
const IMAGE_UID: &str = "10001";

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
            out.starts_with(&format!("{program} ")) && out.contains(version),
            "`{program} --version` in the image printed {out:?}, expected \"{program} {version}…\""
        );
    }

    let entrypoint = docker_cmd(&[
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

/// The runtime image built for one test; its tag is removed on drop (the base stays cached).
struct Image {
    tag: String,
}

impl Image {
    fn build() -> Image {
        docker();
        let client = buildkit_client();
        ensure_base_image();
        let context = build_context();
        let image = Image {
            tag: format!("logsuite-test:{}", unique_name("img")),
        };
        let out = Command::new(&client)
            .env("DOCKER_BUILDKIT", "1")
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
        docker_cmd(&self.run_argv(options, args))
    }

    /// Whether `docker run` of the image exits 0.
    fn succeeds(&self, options: &[&str], args: &[&str]) -> bool {
        Command::new("docker")
            .args(self.run_argv(options, args))
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

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", &self.tag])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
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

/// Make [`BASE_IMAGE`] unless it exists: a minimal Debian bookworm with the runtime
/// libraries, debootstrapped into a folder and imported (takes about a minute, needs
/// deb.debian.org).
fn ensure_base_image() {
    // Both tests of this file may get here at once: one debootstrap is enough.
    static MAKING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let cached = Command::new("docker")
        .args(["image", "inspect", BASE_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if cached {
        return;
    }

    let debootstrap = ["/usr/sbin/debootstrap", "/sbin/debootstrap"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "debootstrap is not installed: run `apt-get install -y debootstrap` \
                 (or ./scripts/install-deps.sh); it makes the image test's base {BASE_IMAGE}"
            )
        });
    let root = std::env::temp_dir().join(unique_name("logsuite-base-root"));
    let started = Instant::now();
    let out = Command::new(debootstrap)
        .args(["--variant=minbase", &format!("--include={BASE_PACKAGES}")])
        .arg("bookworm")
        .arg(&root)
        .arg(DEBIAN_MIRROR)
        .output()
        .expect("run debootstrap");
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&root);
        panic!(
            "debootstrap of Debian bookworm from {DEBIAN_MIRROR} into {} failed (is the mirror \
             reachable?):\n{}{}",
            root.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("debootstrap of {BASE_IMAGE} took {:.0?}", started.elapsed());

    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tar");
    let imported = Command::new("docker")
        .args(["import", "-", BASE_IMAGE])
        .stdin(tar.stdout.take().expect("tar's stdout"))
        .stdout(Stdio::null())
        .status()
        .expect("run docker import");
    let tarred = tar.wait().expect("wait for tar");
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        tarred.success() && imported.success(),
        "importing the debootstrapped base as {BASE_IMAGE} failed (tar: {tarred}, docker import: {imported})"
    );
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
