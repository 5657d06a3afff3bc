//! Real services for the suite's tests — never mocks.
//!
//! * [`Journald`]: a private `systemd-journald` in a fresh namespace, rate limit off,
//!   read back with `journalctl --namespace=NS -o json`.
//! * [`docker()`]: a running Docker engine (started on demand with the vfs driver and no
//!   networking) and the `busybox:local` image imported from `busybox-static`.
//! * [`Dockerd`]: a Docker engine of a test's own, removed with all it stored (for image
//!   builds, and for daemon settings under test).
//! * [`Moto`]: the CloudWatch Logs emulator (`moto_server`) on a free loopback port.
//!
//! Every start waits on the real readiness signal (socket exists, HTTP answers) and a
//! missing service is a failure that says what to install — never a silent skip.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

mod live_tail;
pub use live_tail::{LiveEvent, LiveTailServer};

/// One journal entry as `journalctl -o json` prints it.
pub type Entry = Map<String, Value>;

/// Poll `f` until it returns `Some`, or panic after `timeout` naming `what`.
/// Polling is the readiness check itself (the condition is re-read each time), not a sleep
/// standing in for one.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A free TCP port on 127.0.0.1, for a server the test starts.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`, 32768–60999 by default):
/// a port from that range, free when asked, can be taken by any test's outgoing connection
/// before the server binds it (seen: a log-proxy exiting "Address already in use" on its
/// metrics port). Ports are handed out in turn from an offset per process, each checked free.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN)
}

/// A unique name for this process and call: `prefix` + pid + counter.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}{}x{}x{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos & 0xffff
    )
}

/// Fail (never skip) when `path` (absolute, or a name on PATH) is missing, saying how to
/// install it.
pub fn require_binary(path: &str, install: &str) {
    if !Path::new(path).exists() && which(path).is_none() {
        panic!("{path} is not installed: run `{install}` (or ./.ci/run, which installs everything the tests need)");
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn is_socket(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

/// A private journald in its own namespace; stopped and its storage removed on drop.
pub struct Journald {
    namespace: String,
    /// journald's environment (kept for restarts).
    env: Vec<(String, String)>,
    child: Child,
    socket: PathBuf,
    conf: PathBuf,
    /// A namespaced journald exits after ~30 s without clients; an open stdout stream
    /// counts as one, so a test may idle as long as it needs.
    keepalive: Option<std::os::unix::net::UnixStream>,
}

impl Journald {
    /// Start a fresh namespace with rate limiting off and volatile storage.
    pub fn start() -> Journald {
        Journald::start_with_config("")
    }

    /// Like [`Journald::start`], with extra lines for the `[Journal]` section
    /// (e.g. `RuntimeMaxFileSize=1M` to force rotation).
    pub fn start_with_config(extra: &str) -> Journald {
        Journald::start_with_env(extra, &[])
    }

    /// Like [`Journald::start_with_config`], with environment variables for journald (e.g.
    /// `SYSTEMD_JOURNAL_COMPACT=0` for journal files in the regular, not compact, layout).
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Journald {
        require_binary(
            "/lib/systemd/systemd-journald",
            "apt-get install -y systemd",
        );
        let namespace = unique_name("t");
        let conf = PathBuf::from(format!("/etc/systemd/journald@{namespace}.conf"));
        fs::create_dir_all("/etc/systemd").expect("create /etc/systemd");
        fs::write(
            &conf,
            format!(
                "[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nRateLimitBurst=0\n{extra}\n"
            ),
        )
        .unwrap_or_else(|e| panic!("cannot write {} (tests run as root): {e}", conf.display()));
        let socket = PathBuf::from(format!("/run/systemd/journal.{namespace}/socket"));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = spawn_journald(&namespace, &env);
        let mut j = Journald {
            namespace,
            env,
            child,
            socket,
            conf,
            keepalive: None,
        };
        j.wait_ready();
        j.keep_alive();
        j
    }

    /// Hold a stdout stream open (with the stream protocol's header, sending nothing), so
    /// journald's idle exit never ends a test that waits longer than 30 s without writing.
    fn keep_alive(&mut self) {
        use std::io::Write;
        let path = self.socket.with_file_name("stdout");
        let mut s = std::os::unix::net::UnixStream::connect(&path)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", path.display()));
        // identifier, unit id, priority, level prefix, forward to syslog/kmsg/console.
        s.write_all(b"testkit-keepalive\n\n6\n0\n0\n0\n0\n")
            .expect("write the stdout stream header");
        self.keepalive = Some(s);
    }

    fn wait_ready(&mut self) {
        let sock = self.socket.clone();
        let child = &mut self.child;
        wait_until(
            Duration::from_secs(20),
            "journald's socket to appear",
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("systemd-journald exited early with {status}");
                }
                is_socket(&sock).then_some(())
            },
        );
    }

    /// Stop journald (its socket goes away; stored entries stay), to test outages.
    pub fn stop(&mut self) {
        self.keepalive = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.socket);
    }

    /// Freeze journald (SIGSTOP): its socket stays, but nothing reads it, so it fills — what
    /// a busy, hung or restarting journald looks like to a client. [`Journald::thaw`] ends it.
    pub fn freeze(&self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    /// Let a [`Journald::freeze`]d journald run again.
    pub fn thaw(&self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    /// Start the same namespace again after [`Journald::stop`].
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_journald(&self.namespace, &self.env);
        self.wait_ready();
        self.keep_alive();
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The native-protocol socket: `/run/systemd/journal.NS/socket`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The directory holding this namespace's journal files.
    pub fn directory(&self) -> PathBuf {
        let mid = fs::read_to_string("/etc/machine-id").unwrap_or_default();
        PathBuf::from(format!(
            "/run/log/journal/{}.{}",
            mid.trim(),
            self.namespace
        ))
    }

    /// Ask journald to write everything it has received to the journal files.
    pub fn sync(&self) {
        let _ = Command::new("journalctl")
            .arg(format!("--namespace={}", self.namespace))
            .arg("--sync")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// All entries of the namespace, oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries_matching(&[])
    }

    /// Entries matching journalctl match arguments such as `CONTAINER_NAME=web`.
    pub fn entries_matching(&self, matches: &[&str]) -> Vec<Entry> {
        let out = Command::new("journalctl")
            .arg(format!("--namespace={}", self.namespace))
            .args(["-o", "json", "--no-pager", "--all", "--output-fields="])
            .args(matches)
            .output()
            .expect("journalctl is missing: apt-get install -y systemd");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Wait until at least `n` entries match `matches`; returns them.
    pub fn wait_for_count(&self, matches: &[&str], n: usize, timeout: Duration) -> Vec<Entry> {
        let mut last = 0;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(timeout, "journal entries", || {
                let e = self.entries_matching(matches);
                last = e.len();
                (e.len() >= n).then_some(e)
            })
        }));
        match r {
            Ok(v) => v,
            Err(_) => panic!(
                "journald namespace {} has {last} entries matching {matches:?}, expected at least {n} within {timeout:?}",
                self.namespace
            ),
        }
    }
}

fn spawn_journald(namespace: &str, env: &[(String, String)]) -> Child {
    Command::new("/lib/systemd/systemd-journald")
        .arg(namespace)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start systemd-journald: {e}"))
}

/// A field of a journal entry as bytes: journalctl prints non-UTF-8 or binary values as
/// arrays of numbers, and repeated fields as arrays of those.
pub fn field_bytes(e: &Entry, key: &str) -> Option<Vec<u8>> {
    match e.get(key)? {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Array(a) if a.iter().all(|v| v.is_u64()) => {
            Some(a.iter().map(|v| v.as_u64().unwrap() as u8).collect())
        }
        Value::Array(a) => a.first().and_then(|v| match v {
            Value::String(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        }),
        _ => None,
    }
}

/// A field of a journal entry as text (lossy for non-UTF-8).
pub fn field(e: &Entry, key: &str) -> Option<String> {
    field_bytes(e, key).map(|b| String::from_utf8_lossy(&b).into_owned())
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.conf);
        let _ = fs::remove_dir_all(self.directory());
        let _ = fs::remove_dir_all(format!("/run/systemd/journal.{}", self.namespace));
    }
}

/// The name of the image `docker()` provides.
pub const BUSYBOX_IMAGE: &str = "busybox:local";

/// What this kind of machine lets dockerd use: no overlayfs, no iptables, no bridge.
pub const DOCKERD_FLAGS: [&str; 4] = [
    "--storage-driver",
    "vfs",
    "--iptables=false",
    "--bridge=none",
];

/// Make sure a Docker engine answers and the `busybox:local` image exists.
///
/// Starts `dockerd` with [`DOCKERD_FLAGS`] when none runs (it then outlives the test process,
/// so later tests reuse it). Serialized across concurrently running test processes with a
/// lock file.
pub fn docker() {
    require_binary("dockerd", "apt-get install -y docker.io busybox-static");
    require_binary("/bin/busybox", "apt-get install -y busybox-static");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/logsuite-testkit-docker.lock")
        .expect("open docker lock file");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&lock);
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    unsafe { libc::flock(fd, libc::LOCK_EX) };

    if !docker_answers() {
        let log = fs::File::create("/tmp/logsuite-dockerd.log").expect("create dockerd log");
        // dockerd deliberately outlives this test process (later tests reuse it), so its
        // handle is dropped without waiting.
        #[allow(clippy::zombie_processes)]
        Command::new("dockerd")
            .args(DOCKERD_FLAGS)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start dockerd");
        let start = Instant::now();
        while !docker_answers() {
            if start.elapsed() > Duration::from_secs(60) {
                panic!("dockerd did not answer `docker info` within 60s; see /tmp/logsuite-dockerd.log");
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
    let have_image = Command::new("docker")
        .args(["image", "inspect", BUSYBOX_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !have_image {
        import_busybox(None);
    }
}

fn docker_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Import busybox-static as [`BUSYBOX_IMAGE`] into the engine at `host` (`None`: the default).
pub fn import_busybox(host: Option<&str>) {
    require_binary("/bin/busybox", "apt-get install -y busybox-static");
    let root = std::env::temp_dir().join(unique_name("busybox-root"));
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).expect("copy /bin/busybox");
    for applet in [
        "sh", "echo", "sleep", "seq", "cat", "printf", "yes", "head", "dd", "true", "false", "ls",
        "tr", "awk", "xargs", "env",
    ] {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    let imported = docker_import(host, &root, BUSYBOX_IMAGE);
    let _ = fs::remove_dir_all(&root);
    if let Err(e) = imported {
        panic!("{e}");
    }
}

/// `tar -C root -c . | docker [-H host] import - tag`: a folder becomes an image (nothing can
/// be pulled here). `host` is a Docker API address; `None` means the default engine.
pub fn docker_import(host: Option<&str>, root: &Path, tag: &str) -> Result<(), String> {
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let mut docker = Command::new("docker");
    if let Some(h) = host {
        docker.args(["-H", h]);
    }
    let imported = docker
        .args(["import", "-", tag])
        .stdin(tar.stdout.take().expect("tar's stdout"))
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run docker import: {e}"));
    let tarred = tar.wait().map_err(|e| format!("tar: {e}"))?;
    let imported = imported?;
    if !(tarred.success() && imported.success()) {
        return Err(format!(
            "importing {} as image {tag} failed (tar: {tarred}, docker import: {imported})",
            root.display()
        ));
    }
    Ok(())
}

/// Run `docker` with `args`, panicking with its stderr on failure; returns stdout trimmed.
pub fn docker_cmd(args: &[&str]) -> String {
    let mut docker = Command::new("docker");
    docker.args(args);
    stdout_or_panic(docker, &format!("docker {}", args.join(" ")))
}

/// Run `command` (shown as `shown`), panicking with its stderr on failure; stdout trimmed.
fn stdout_or_panic(mut command: Command, shown: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    if !out.status.success() {
        panic!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A Docker engine of the test's own: data root, exec root, pid file and API socket all in
/// one directory, so that nothing it stores outlives the test. Stopped and removed on drop.
///
/// Use it where a test builds images: BuildKit under the vfs storage driver leaks snapshots
/// that no `docker builder prune` frees (about 0.9 GB per build of the suite's image).
pub struct Dockerd {
    child: Child,
    dir: PathBuf,
}

impl Dockerd {
    /// Start `dockerd` with [`DOCKERD_FLAGS`] in `dir` (created if missing), configured by the
    /// daemon.json at `config` if given. Returns at once: see [`Dockerd::wait_ready`].
    pub fn start(dir: &Path, config: Option<&Path>) -> Dockerd {
        require_binary("dockerd", "apt-get install -y docker.io");
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let log = fs::File::create(dir.join("dockerd.log")).expect("create dockerd.log");
        let mut command = Command::new("dockerd");
        if let Some(config) = config {
            command.arg("--config-file").arg(config);
        }
        // Its own containerd namespaces too: should it find a system containerd to share,
        // its containers and images still stay apart from every other engine's.
        let namespace = unique_name("dockerd");
        // If the test process dies without dropping this (SIGKILL, a CI timeout), the engine
        // is told to stop too, rather than run on holding its data root.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command
            .arg("--containerd-namespace")
            .arg(&namespace)
            .arg("--containerd-plugins-namespace")
            .arg(format!("{namespace}-plugins"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            // The machine's constraints, not settings under test.
            .args(DOCKERD_FLAGS)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start dockerd");
        Dockerd {
            child,
            dir: dir.into(),
        }
    }

    /// Start one in a fresh temporary directory and wait until it answers. Directories of
    /// earlier engines whose test process died without removing them go first.
    pub fn start_ready() -> Dockerd {
        sweep_stale_engines();
        let dir = std::env::temp_dir().join(unique_name("dockerd"));
        let mut engine = Dockerd::start(&dir, None);
        engine
            .wait_ready()
            .unwrap_or_else(|| panic!("the private dockerd exited: {}", engine.log()));
        engine
    }

    /// The engine's API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// The engine's API address, for `docker -H` and `--docker-host`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// What dockerd has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// `docker -H <this engine> args…`, not yet run.
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(self.host()).args(args);
        c
    }

    /// Run `docker` against this engine, panicking with its stderr on failure; returns stdout
    /// trimmed.
    pub fn run(&self, args: &[&str]) -> String {
        let shown = format!("docker -H {} {}", self.host(), args.join(" "));
        stdout_or_panic(self.docker(args), &shown)
    }

    /// Ready = `docker info` answers; `None` if dockerd exited first.
    pub fn wait_ready(&mut self) -> Option<()> {
        wait_until(Duration::from_secs(60), "the private dockerd", || {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(None);
            }
            let ok = self
                .docker(&["info"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(Some(()))
        })
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop its containers and containerd and unmount what it mounted;
        // one that does not end in 30 s is killed.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_engine_dir(&self.dir);
    }
}

/// Remove `dockerd*` directories in the temporary directory whose engine is gone: its pid file
/// names no running dockerd, or there is none and its log has not changed for a minute.
fn sweep_stale_engines() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        // Made by `Dockerd::start`, which writes dockerd.log there first.
        let is_engine_dir = entry.file_name().to_string_lossy().starts_with("dockerd")
            && entry.file_type().is_ok_and(|t| t.is_dir())
            && dir.join("dockerd.log").is_file();
        if !is_engine_dir {
            continue;
        }
        // A running engine has its pid file (written within a second of its start, removed
        // when it stops); without one, only a directory that was just made may still get one.
        let running = match fs::read_to_string(dir.join("dockerd.pid")) {
            Ok(pid) => fs::read_to_string(format!("/proc/{}/comm", pid.trim()))
                .is_ok_and(|comm| comm.trim() == "dockerd"),
            Err(_) => fs::metadata(dir.join("dockerd.log"))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60)),
        };
        if running {
            continue;
        }
        remove_engine_dir(&dir);
    }
}

/// Unmount whatever is still mounted below an engine's directory (a killed engine leaves its
/// data root's bind mount, shm and netns mounts), deepest first, then remove the files.
fn remove_engine_dir(dir: &Path) {
    for mount in mounts_under(dir) {
        if let Ok(path) = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2 with a NUL-terminated path.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let _ = fs::remove_dir_all(dir);
}

/// Mount points at or below `dir` (from /proc/self/mountinfo), deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        // The fifth field is the mount point, with spaces and the like octal-escaped.
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    // Deepest first; a path mounted twice is listed (and unmounted) twice.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts
}

/// Where the Python tools (moto_server, awslogs, aws) live.
pub fn venv() -> PathBuf {
    std::env::var_os("LOGSUITE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/logsuite-venv"))
}

/// A running `moto_server` on a free loopback port; killed on drop.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_on(free_port())
    }

    /// Start on a given port (used to restart the emulator on the same address).
    pub fn start_on(port: u16) -> Moto {
        let bin = venv().join("bin/moto_server");
        if !bin.exists() {
            panic!(
                "{} is missing: run `python3 -m venv {v} && {v}/bin/pip install 'moto[server]'` (or ./.ci/run)",
                bin.display(),
                v = venv().display()
            );
        }
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let mut m = Moto { child, port };
        wait_until(Duration::from_secs(60), "moto_server to answer", || {
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("moto_server exited early with {status}");
            }
            http_get_ok(port, "/moto-api/").then_some(())
        });
        m
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment for an AWS client to reach this emulator with dummy credentials.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        aws_env(self.endpoint())
    }

    /// Run a Python script with boto3 against this emulator (`ENDPOINT` is set in its
    /// environment, and the dummy credentials); returns its stdout, trimmed.
    pub fn python(&self, script: &str, args: &[&str]) -> String {
        let mut py = Command::new(venv().join("bin/python"));
        py.arg("-c")
            .arg(script)
            .args(args)
            .env("ENDPOINT", self.endpoint());
        for (k, v) in self.env() {
            py.env(k, v);
        }
        stdout_or_panic(py, "python (boto3 against moto)")
    }

    /// Start an ECS task in `cluster` (made if missing) and return its ARN
    /// (`arn:aws:ecs:…:task/CLUSTER/ID`). moto needs an EC2 instance registered as a
    /// container instance to place it. moto moves a task one step towards STOPPED on every
    /// DescribeTasks by default; here tasks stay RUNNING until [`Moto::ecs_stop_task`].
    pub fn ecs_run_task(&self, cluster: &str) -> String {
        self.python(
            r#"
import boto3, json, os, sys, urllib.request
kw = dict(endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1")
ecs, ec2 = boto3.client("ecs", **kw), boto3.client("ec2", **kw)
req = urllib.request.Request(os.environ["ENDPOINT"] + "/moto-api/state-manager/set-transition",
    data=json.dumps({"model_name": "ecs::task",
                     "transition": {"progression": "manual", "times": 1000000}}).encode(),
    method="POST")
urllib.request.urlopen(req).read()
cluster = sys.argv[1]
ecs.create_cluster(clusterName=cluster)
ami = ec2.describe_images()["Images"][0]["ImageId"]
inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
ecs.register_container_instance(cluster=cluster,
    instanceIdentityDocument=json.dumps({"instanceId": inst}))
ecs.register_task_definition(family="app",
    containerDefinitions=[{"name": "app", "image": "busybox", "memory": 128}])
out = ecs.run_task(cluster=cluster, taskDefinition="app", count=1)
assert not out.get("failures"), out["failures"]
print(out["tasks"][0]["taskArn"])
"#,
            &[cluster],
        )
    }

    /// StopTask with `reason`, as ECS does when a deployment replaces the task.
    pub fn ecs_stop_task(&self, cluster: &str, task: &str, reason: &str) {
        self.python(
            r#"
import boto3, os, sys
ecs = boto3.client("ecs", endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1")
ecs.stop_task(cluster=sys.argv[1], task=sys.argv[2], reason=sys.argv[3])
"#,
            &[cluster, task, reason],
        );
    }

    /// Stop the emulator (its state is lost).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Environment for an AWS client to reach `endpoint` (an emulator, or a proxy in front of
/// one) with dummy credentials and no instance-metadata lookups.
pub fn aws_env(endpoint: String) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

fn http_get_ok(port: u16, path: &str) -> bool {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    buf[..n].starts_with(b"HTTP/1.") && n >= 12 && &buf[9..10] != b"5"
}

/// Path of a binary built from this workspace (`target/<profile>/NAME`), found next to the
/// running test executable. Panics with the build command when it is missing.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/test-xxxx -> target/<profile>/NAME
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test executable lives in target/<profile>/deps");
    let p = dir.join(name);
    if !p.exists() {
        panic!(
            "{} is not built: run `cargo build --workspace --bins` first (the README's test command does)",
            p.display()
        );
    }
    p
}

/// An HTTP/1.1 proxy in front of an AWS JSON endpoint (moto) that records when each request
/// arrived and which operation it was (`X-Amz-Target`), and can answer
/// `ThrottlingException` for a while instead of forwarding — the throttling a shared
/// account quota gives, which moto never does.
pub struct CountingProxy {
    port: u16,
    started: Instant,
    shared: std::sync::Arc<ProxyShared>,
}

#[derive(Default)]
struct ProxyShared {
    /// (arrival since start, operation, answered with throttling).
    requests: std::sync::Mutex<Vec<(Duration, String, bool)>>,
    /// Throttle every request that arrives before this.
    throttle_until: std::sync::Mutex<Option<Instant>>,
}

impl CountingProxy {
    /// Forward to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let shared = std::sync::Arc::new(ProxyShared::default());
        let started = Instant::now();
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let s = s.clone();
                thread::spawn(move || proxy_conn(conn, upstream, started, &s));
            }
        });
        CountingProxy {
            port,
            started,
            shared,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answer every request with ThrottlingException for `d` from now.
    pub fn throttle_for(&self, d: Duration) {
        *self.shared.throttle_until.lock().unwrap() = Some(Instant::now() + d);
    }

    /// (arrival since the proxy started, operation, throttled) of every request so far.
    pub fn requests(&self) -> Vec<(Duration, String, bool)> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Time since the proxy started (the clock of [`CountingProxy::requests`]).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The most requests that arrived within any `window` (half-open: `[t, t + window)`),
    /// and when that window started.
    pub fn busiest(&self, window: Duration) -> (usize, Duration) {
        let mut times: Vec<Duration> = self.requests().iter().map(|r| r.0).collect();
        times.sort();
        let mut best = (0, Duration::ZERO);
        for (i, t) in times.iter().enumerate() {
            let n = times[i..].iter().take_while(|u| **u < *t + window).count();
            if n > best.0 {
                best = (n, *t);
            }
        }
        best
    }
}

/// Read one HTTP/1.1 message head (through the blank line) and its Content-Length body.
fn read_message(r: &mut impl std::io::BufRead) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut head = Vec::new();
    let mut len = 0usize;
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
        if let Some(v) = text.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((head, body))
}

fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn proxy_conn(conn: std::net::TcpStream, upstream: u16, started: Instant, s: &ProxyShared) {
    use std::io::{BufReader, Write};
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        use std::io::BufRead;
        // Arrival is when the first bytes are there, not when the whole request was read.
        match r.fill_buf() {
            Ok(b) if !b.is_empty() => {}
            _ => return,
        }
        let now = Instant::now();
        let Some((head, body)) = read_message(&mut r) else {
            return;
        };
        let op = header(&head, "x-amz-target").unwrap_or_default();
        let op = op.rsplit('.').next().unwrap_or_default().to_string();
        let throttle = s.throttle_until.lock().unwrap().is_some_and(|u| now < u);
        s.requests
            .lock()
            .unwrap()
            .push((now - started, op, throttle));
        if throttle {
            let text = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
            let resp = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\n\
                 x-amzn-ErrorType: ThrottlingException\r\n\
                 x-amzn-RequestId: 00000000-0000-0000-0000-000000000000\r\n\
                 Content-Length: {}\r\n\r\n{text}",
                text.len()
            );
            if w.write_all(resp.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let Ok(mut up) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
            return;
        };
        if up
            .write_all(&head)
            .and_then(|_| up.write_all(&body))
            .is_err()
        {
            return;
        }
        let mut ur = BufReader::new(up);
        let Some((rhead, rbody)) = read_message(&mut ur) else {
            return;
        };
        if w.write_all(&rhead)
            .and_then(|_| w.write_all(&rbody))
            .is_err()
        {
            return;
        }
        if header(&rhead, "connection").is_some_and(|c| c.eq_ignore_ascii_case("close")) {
            return;
        }
    }
}
