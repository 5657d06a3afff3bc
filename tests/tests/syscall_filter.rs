//! The units' system call filters fit the daemons.
//!
//! `systemd/log-proxy.service` and `systemd/journal-fanout.service` restrict the daemons with
//! `SystemCallFilter=`. A call outside the filter kills the daemon with SIGSYS (or fails with
//! the errno of `SystemCallErrorNumber=`) — in production only, on whatever code path first
//! makes it. systemd is not PID 1 here, so each daemon runs a real workload under
//! `strace -f`, and every call it made is checked against the filter read from its unit file,
//! with the groups as `systemd-analyze syscall-filter` defines them on this machine. A change
//! to a unit is therefore what gets tested.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use testkit::{
    docker, field, field_bytes, free_port, unique_name, wait_until, workspace_bin, Journald, Moto,
    BUSYBOX_IMAGE,
};

/// The unit files, relative to the workspace root.
fn unit(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../systemd")
        .join(name)
}

/// A unit's `SystemCallFilter=` lines and how systemd combines them.
mod filter {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;
    use std::process::Command;

    /// One `SystemCallFilter=` line: its items (groups `@name` or call names) and whether a
    /// `~` made it a deny list.
    struct Rule {
        deny: bool,
        items: Vec<String>,
        line: String,
    }

    /// The filter of one unit. systemd.exec(5): the first line decides the default (an
    /// allow list kills everything else, a deny list allows everything else); later lines
    /// add to or remove from the set, so for each call the last line naming it decides.
    pub struct Filter {
        rules: Vec<Rule>,
        /// `SystemCallErrorNumber=`: what a forbidden call gets instead of SIGSYS.
        pub errno: Option<String>,
        groups: Groups,
    }

    /// Why a call is forbidden.
    pub struct Forbidden {
        pub call: String,
        pub reason: String,
    }

    impl Filter {
        pub fn from_unit(unit: &Path) -> Filter {
            let text = std::fs::read_to_string(unit)
                .unwrap_or_else(|e| panic!("cannot read the unit {}: {e}", unit.display()));
            let mut rules = Vec::new();
            let mut errno = None;
            for line in text.lines().map(str::trim) {
                if let Some(v) = line.strip_prefix("SystemCallErrorNumber=") {
                    errno = Some(v.trim().to_string()).filter(|v| !v.is_empty());
                }
                let Some(v) = line.strip_prefix("SystemCallFilter=") else {
                    continue;
                };
                let v = v.trim();
                if v.is_empty() {
                    // An empty assignment resets the filter.
                    rules.clear();
                    continue;
                }
                let (deny, list) = match v.strip_prefix('~') {
                    Some(rest) => (true, rest),
                    None => (false, v),
                };
                let items = list
                    .split_whitespace()
                    // A deny item may carry its own action: `name:EPERM`.
                    .map(|i| i.split(':').next().unwrap_or(i).to_string())
                    .collect();
                rules.push(Rule {
                    deny,
                    items,
                    line: line.to_string(),
                });
            }
            assert!(
                !rules.is_empty(),
                "{} has no SystemCallFilter= line, so this test has nothing to check: \
                 restore the filter, or remove this test if dropping it was deliberate",
                unit.display()
            );
            // "execve(), exit(), ... and the system calls for querying time and sleeping are
            // implicitly allow-listed": systemd seeds an allow list with @default.
            if !rules[0].deny {
                rules.insert(
                    0,
                    Rule {
                        deny: false,
                        items: vec!["@default".into()],
                        line: "(implicit in every allow list) @default".into(),
                    },
                );
            }
            let mut groups = Groups::default();
            for item in rules.iter().flat_map(|r| &r.items) {
                groups.expand(item);
            }
            Filter {
                rules,
                errno,
                groups,
            }
        }

        /// The calls in `calls` this filter forbids, each with the line and group that
        /// forbid it.
        pub fn forbidden(&mut self, calls: &BTreeSet<String>) -> Vec<Forbidden> {
            let allow_list = !self.rules[0].deny;
            let mut out = Vec::new();
            for call in calls {
                // The last line naming the call decides; none: the default.
                let mut decided: Option<(&Rule, &String)> = None;
                for rule in &self.rules {
                    for item in &rule.items {
                        if self.groups.expand(item).contains(call) {
                            decided = Some((rule, item));
                        }
                    }
                }
                let reason = match decided {
                    Some((rule, _)) if !rule.deny => continue,
                    None if !allow_list => continue,
                    Some((rule, item)) => format!(
                        "denied by {} in `{}`",
                        self.groups.path(item, call).join(" > "),
                        rule.line
                    ),
                    None => {
                        let allowed: Vec<&str> = self
                            .rules
                            .iter()
                            .filter(|r| !r.deny)
                            .flat_map(|r| r.items.iter().map(String::as_str))
                            .collect();
                        let homes = self.groups.all_holding(call);
                        format!(
                            "in none of the allowed {}; systemd groups holding it: {}",
                            allowed.join(" "),
                            if homes.is_empty() {
                                "none (unknown to this systemd)".to_string()
                            } else {
                                homes.join(" ")
                            }
                        )
                    }
                };
                out.push(Forbidden {
                    call: call.clone(),
                    reason,
                });
            }
            out
        }

        /// What happens to a forbidden call under this unit.
        pub fn consequence(&self) -> String {
            match &self.errno {
                Some(e) => format!("fails with {e} (SystemCallErrorNumber={e})"),
                None => "kills the daemon with SIGSYS".into(),
            }
        }
    }

    /// Group members as `systemd-analyze syscall-filter @group` prints them, cached.
    #[derive(Default)]
    struct Groups {
        /// Direct members: call names and nested `@group`s.
        members: BTreeMap<String, Vec<String>>,
    }

    impl Groups {
        /// Every call an item stands for, nested groups expanded.
        fn expand(&mut self, item: &str) -> BTreeSet<String> {
            if !item.starts_with('@') {
                return BTreeSet::from([item.to_string()]);
            }
            let members = self.members(item);
            members.iter().flat_map(|m| self.expand(m)).collect()
        }

        fn members(&mut self, group: &str) -> Vec<String> {
            if let Some(m) = self.members.get(group) {
                return m.clone();
            }
            let out = Command::new("systemd-analyze")
                .args(["syscall-filter", group])
                .output()
                .expect("systemd-analyze is missing: apt-get install -y systemd");
            assert!(
                out.status.success(),
                "`systemd-analyze syscall-filter {group}` failed: {} (is {group} a group this systemd knows?)",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            // The first line names the group; `#` lines are comments.
            let m: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .skip(1)
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            self.members.insert(group.to_string(), m.clone());
            m
        }

        /// How `item` reaches `call`: `@privileged > @chown > chown`.
        fn path(&mut self, item: &str, call: &str) -> Vec<String> {
            if item == call {
                return vec![call.to_string()];
            }
            if item.starts_with('@') {
                for m in self.members(item) {
                    if self.expand(&m).contains(call) {
                        let mut p = vec![item.to_string()];
                        p.extend(self.path(&m, call));
                        return p;
                    }
                }
            }
            vec![item.to_string()]
        }

        /// Every group this systemd defines that holds `call` (for the advice on failure).
        fn all_holding(&mut self, call: &str) -> Vec<String> {
            let out = Command::new("systemd-analyze")
                .arg("syscall-filter")
                .output()
                .expect("systemd-analyze is missing: apt-get install -y systemd");
            let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with('@'))
                .map(|l| l.trim().to_string())
                .collect();
            names
                .into_iter()
                .filter(|g| g != "@known" && self.expand(g).contains(call))
                .collect()
        }
    }
}

/// A daemon run under `strace -f`, and the calls read back from its trace.
mod trace {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::time::Duration;

    use testkit::wait_until;

    pub struct Traced {
        strace: Child,
        pub trace: PathBuf,
        pub stderr: PathBuf,
    }

    impl Traced {
        /// `strace -f -qq -o TRACE PROGRAM ARGS...`; the daemon's stderr to a file, its
        /// stdout to `stdout` (or nowhere).
        pub fn start(
            program: &Path,
            args: &[&str],
            env: &[(&str, String)],
            stdout: Option<&Path>,
            dir: &Path,
        ) -> Traced {
            let trace = dir.join(testkit::unique_name("trace"));
            let stderr = dir.join(testkit::unique_name("stderr"));
            let strace = Command::new("strace")
                .args(["-f", "-qq", "-o"])
                .arg(&trace)
                .arg("--")
                .arg(program)
                .args(args)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(match stdout {
                    Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
                    None => Stdio::null(),
                })
                .stderr(std::fs::File::create(&stderr).unwrap())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run strace ({e}): apt-get install -y strace (or ./.ci/run)")
                });
            Traced {
                strace,
                trace,
                stderr,
            }
        }

        pub fn stderr_text(&self) -> String {
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        }

        /// Fail at once, with the daemon's words, if it (and so strace) already exited.
        pub fn assert_running(&mut self) {
            if let Ok(Some(s)) = self.strace.try_wait() {
                panic!(
                    "the traced daemon exited early ({s}): {}",
                    self.stderr_text()
                );
            }
        }

        /// SIGTERM to the traced daemon (strace's child: signalling strace would detach it),
        /// then its exit status, which strace passes on.
        pub fn terminate(&mut self) -> ExitStatus {
            self.assert_running();
            let strace_pid = self.strace.id();
            let pid = wait_until(Duration::from_secs(10), "strace's traced process", || {
                child_of(strace_pid)
            });
            // SAFETY: kill(2) on the pid of our child's child, which is still running
            // (strace waits for it, so the pid cannot be reused meanwhile).
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            wait_until(Duration::from_secs(60), "the traced daemon to exit", || {
                self.strace.try_wait().unwrap()
            })
        }

        /// The distinct calls made from the successful `execve` of `program` on: what
        /// systemd's filter would see (a launcher before that exec is not the daemon).
        pub fn calls(&self, program: &Path) -> BTreeSet<String> {
            let text = std::fs::read_to_string(&self.trace)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.trace.display()));
            let exec = format!("execve(\"{}\"", program.display());
            let start = text
                .lines()
                .position(|l| l.contains(&exec) && l.trim_end().ends_with("= 0"))
                .unwrap_or_else(|| {
                    panic!(
                        "{} has no successful execve of {}",
                        self.trace.display(),
                        program.display()
                    )
                });
            text.lines()
                .skip(start)
                .filter_map(call_name)
                .map(str::to_string)
                .collect()
        }
    }

    impl Drop for Traced {
        fn drop(&mut self) {
            // Only while strace is unreaped is its pid (and so its child) surely ours. Kill
            // the daemon first: killing strace alone would detach it and leave it running.
            if let Ok(None) = self.strace.try_wait() {
                if let Some(pid) = child_of(self.strace.id()) {
                    // SAFETY: kill(2) on our child's child, as in `terminate`.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
            let _ = self.strace.kill();
            let _ = self.strace.wait();
            let _ = std::fs::remove_file(&self.trace);
            let _ = std::fs::remove_file(&self.stderr);
        }
    }

    /// The process whose parent is `parent` (strace has exactly one child).
    fn child_of(parent: u32) -> Option<u32> {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
    }

    /// The call named by one line of `strace -f` output: `1234  name(...`, or
    /// `1234  <... name resumed>...` for the second half of an interrupted call. Signal
    /// (`---`) and exit (`+++`) lines name none.
    pub fn call_name(line: &str) -> Option<&str> {
        let rest = line.trim_start();
        let rest = rest
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        if let Some(r) = rest.strip_prefix("<... ") {
            return r.split_once(" resumed>").map(|(name, _)| name);
        }
        let end = rest.find('(')?;
        let name = &rest[..end];
        (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then_some(name)
    }
}

/// Check `calls` against the unit's filter. The error names each forbidden call, the line
/// and group that forbid it, and what to change.
fn check(daemon: &str, unit: &Path, calls: &BTreeSet<String>) -> Result<(), String> {
    let mut f = filter::Filter::from_unit(unit);
    let bad = f.forbidden(calls);
    if bad.is_empty() {
        return Ok(());
    }
    let unit = unit.display();
    let list: Vec<String> = bad
        .iter()
        .map(|b| format!("  - {}: {}", b.call, b.reason))
        .collect();
    let names: Vec<&str> = bad.iter().map(|b| b.call.as_str()).collect();
    Err(format!(
        "{daemon} made {} system call(s) that {unit} forbids; under that unit each {}:\n{}\n\
         Either allow them in {unit} (add the line `SystemCallFilter={}` after its other \
         SystemCallFilter= lines: a later line wins; or take the group out of the `~` line), \
         or change {daemon} not to make them.\n({} distinct calls traced: {})",
        bad.len(),
        f.consequence(),
        list.join("\n"),
        names.join(" "),
        calls.len(),
        calls.iter().cloned().collect::<Vec<_>>().join(" "),
    ))
}

fn assert_allowed(daemon: &str, unit_file: &str, calls: &BTreeSet<String>) {
    if let Err(e) = check(daemon, &unit(unit_file), calls) {
        panic!("{e}");
    }
}

fn strace_required() {
    let ok = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "strace is not installed: apt-get install -y strace (or ./.ci/run)"
    );
}

/// GET `path` from a daemon's metrics endpoint; the body of a 200 answer.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.split_whitespace()
        .nth(1)
        .filter(|c| *c == "200")
        .map(|_| body.to_string())
}

fn syslog_line(tag: &str, msg: &[u8]) -> Vec<u8> {
    let mut l = format!("<30>1 2026-11-22T13:32:28.396128Z vm {tag} 1 {tag} - ").into_bytes();
    l.extend_from_slice(msg);
    l.push(b'\n');
    l
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let d = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_clean_exit(daemon: &str, status: ExitStatus, stderr: &str) {
    assert_eq!(
        status.code(),
        Some(0),
        "{daemon} should exit 0 on SIGTERM, got {status}: {stderr}"
    );
}

/// log-proxy serving a socket it binds itself: Docker lookups that succeed (a real
/// container) and fail (a tag that is no container), the metrics endpoint, a 200 KB line,
/// SIGTERM.
fn trace_log_proxy_direct(jd: &Journald, dir: &Path) -> BTreeSet<String> {
    let bin = workspace_bin("log-proxy");
    let sock = dir.join("proxy.sock");
    let metrics_port = free_port();
    let mut p = trace::Traced::start(
        &bin,
        &[
            "--syslog-address",
            &format!("unixgram://{}", sock.display()),
            "--journal-socket",
            jd.socket().to_str().unwrap(),
            "--metrics-address",
            &format!("127.0.0.1:{metrics_port}"),
        ],
        &[],
        None,
        dir,
    );
    wait_until(
        Duration::from_secs(30),
        "log-proxy's socket and metrics",
        || {
            p.assert_running();
            (sock.exists() && http_get(metrics_port, "/metrics").is_some()).then_some(())
        },
    );

    // Plain lines whose tag is no container: the lookup fails, the lines go through.
    let tag = unique_name("plain");
    let sender = UnixDatagram::unbound().unwrap();
    for i in 0..10 {
        sender
            .send_to(&syslog_line(&tag, format!("line {i}").as_bytes()), &sock)
            .unwrap();
    }
    // A 200 KB line: about the largest datagram a unix sender can send by default.
    let big_tag = unique_name("big");
    let big: Vec<u8> = (0..200_000).map(|i| b'a' + (i % 26) as u8).collect();
    sender
        .send_to(&syslog_line(&big_tag, &big), &sock)
        .expect("send a 200 KB datagram");

    // A real container through the proxy: its ID is looked up in Docker and found.
    let name = unique_name("sysc");
    let status = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--name", &name])
        .args(["--log-driver", "syslog", "--log-opt"])
        .arg(format!("syslog-address=unixgram://{}", sock.display()))
        .args([
            "--log-opt",
            "syslog-format=rfc5424micro",
            "--log-opt",
            "tag={{.ID}}",
        ])
        .args([
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            "for i in 1 2 3; do echo container line $i; done",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "docker run through log-proxy failed");

    let e = jd.wait_for_count(
        &[&format!("CONTAINER_NAME={name}")],
        3,
        Duration::from_secs(30),
    );
    assert_eq!(field(&e[0], "MESSAGE").unwrap(), "container line 1");
    jd.wait_for_count(
        &[&format!("CONTAINER_TAG={tag}")],
        10,
        Duration::from_secs(30),
    );
    let e = jd.wait_for_count(
        &[&format!("CONTAINER_TAG={big_tag}")],
        1,
        Duration::from_secs(30),
    );
    assert_eq!(
        field_bytes(&e[0], "MESSAGE").unwrap(),
        big,
        "the big line, whole"
    );
    let metrics = http_get(metrics_port, "/metrics").expect("log-proxy's metrics");
    assert!(
        metrics.contains("log_proxy_written_entries_total"),
        "{metrics}"
    );

    let status = p.terminate();
    assert_clean_exit("log-proxy", status, &p.stderr_text());
    p.calls(&bin)
}

/// log-proxy started by `systemd-socket-activate`, serving the datagram socket it passes
/// (as `log-proxy.socket` does), then SIGTERM.
fn trace_log_proxy_activated(jd: &Journald, dir: &Path) -> BTreeSet<String> {
    let bin = workspace_bin("log-proxy");
    let sock = dir.join("activated.sock");
    let launcher = Path::new("/usr/bin/systemd-socket-activate");
    assert!(
        launcher.exists(),
        "systemd-socket-activate is part of the systemd package: apt-get install -y systemd"
    );
    let mut p = trace::Traced::start(
        launcher,
        &[
            "--datagram",
            "--listen",
            sock.to_str().unwrap(),
            bin.to_str().unwrap(),
            "--journal-socket",
            jd.socket().to_str().unwrap(),
        ],
        &[],
        None,
        dir,
    );
    wait_until(
        Duration::from_secs(30),
        "systemd-socket-activate's socket",
        || {
            p.assert_running();
            sock.exists().then_some(())
        },
    );
    let tag = unique_name("act");
    let sender = UnixDatagram::unbound().unwrap();
    for i in 0..5 {
        sender
            .send_to(
                &syslog_line(&tag, format!("activated {i}").as_bytes()),
                &sock,
            )
            .unwrap();
    }
    jd.wait_for_count(
        &[&format!("CONTAINER_TAG={tag}")],
        5,
        Duration::from_secs(30),
    );
    let status = p.terminate();
    let stderr = p.stderr_text();
    assert_clean_exit("log-proxy (socket-activated)", status, &stderr);
    assert!(
        stderr.contains("the socket systemd passed"),
        "log-proxy should serve the inherited socket: {stderr}"
    );
    p.calls(&bin)
}

#[test]
fn log_proxy_makes_only_system_calls_its_unit_allows() {
    strace_required();
    docker();
    let jd = Journald::start();
    let dir = TempDir::new("sysc-lp");
    let mut calls = trace_log_proxy_direct(&jd, &dir.0);
    calls.extend(trace_log_proxy_activated(&jd, &dir.0));
    eprintln!(
        "log-proxy: {} distinct system calls: {calls:?}",
        calls.len()
    );
    assert_allowed("log-proxy", "log-proxy.service", &calls);

    // journal-native's large-entry path (the entry in a sealed memfd, passed with
    // SCM_RIGHTS) runs only when journald's socket refuses a datagram as too big. log-proxy's
    // journal socket asks for an 8 MiB send buffer (the kernel grants 2 × wmem_max), more
    // than the largest line log-proxy accepts (256 KiB datagrams, 4 MiB stream frames), so
    // no workload reaches it on a host like this one. Its calls are checked by name.
    let memfd_path = ["memfd_create", "write", "fcntl", "sendmsg", "close"];
    assert_allowed(
        "log-proxy (its memfd path, not traced)",
        "log-proxy.service",
        &memfd_path.iter().map(|c| c.to_string()).collect(),
    );
}

/// A container line as log-proxy writes it into the journal.
fn write_lines(jd: &Journald, group: &str, range: std::ops::Range<usize>) {
    let j = journal_native::Journal::new(jd.socket()).expect("open the journald socket");
    for i in range {
        let msg = format!("fanout line {i}");
        j.send(&[
            ("MESSAGE", msg.as_bytes()),
            ("CONTAINER_TAG", group.as_bytes()),
            ("CONTAINER_NAME", b"web"),
            ("CONTAINER_ID", b"0123456789ab"),
            ("PRIORITY", b"6"),
        ])
        .expect("send a journal entry");
    }
}

#[test]
fn journal_fanout_makes_only_system_calls_its_unit_allows() {
    strace_required();
    let jd = Journald::start();
    let moto = Moto::start();
    let dir = TempDir::new("sysc-jf");
    let state = dir.0.join("state");
    let group = unique_name("sysc-group");
    let bin = workspace_bin("journal-fanout");
    let metrics_port = free_port();

    // Entries already in the journal (read from the head) and written while it runs (tailed).
    write_lines(&jd, &group, 0..20);
    jd.wait_for_count(
        &[&format!("CONTAINER_TAG={group}")],
        20,
        Duration::from_secs(30),
    );
    let stdout = dir.0.join("stdout");
    let mut p = trace::Traced::start(
        &bin,
        &[
            "--journal-namespace",
            jd.namespace(),
            "--from",
            "head",
            "--dst",
            "stdout,cloudwatchlogs",
            "--flush-timeout",
            "200ms",
            "--state-dir",
            state.to_str().unwrap(),
            "--metrics-address",
            &format!("127.0.0.1:{metrics_port}"),
        ],
        &moto.env(),
        Some(&stdout),
        &dir.0,
    );
    wait_until(
        Duration::from_secs(30),
        "journal-fanout's metrics endpoint",
        || {
            p.assert_running();
            http_get(metrics_port, "/metrics")
        },
    );
    write_lines(&jd, &group, 20..40);

    let events = wait_until(Duration::from_secs(60), "40 events in moto", || {
        p.assert_running();
        let out = Command::new(workspace_bin("cwlogs"))
            .args([
                "--color", "never", "fetch", &group, "--since", "1h", "--json",
            ])
            .envs(moto.env())
            .output()
            .ok()?;
        let n = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("fanout line"))
            .count();
        (n >= 40).then_some(n)
    });
    assert_eq!(events, 40, "every line once in CloudWatch");
    let metrics = http_get(metrics_port, "/metrics").expect("journal-fanout's metrics");
    assert!(
        metrics
            .contains("journal_fanout_events_delivered_total{destination=\"cloudwatchlogs\"} 40"),
        "{metrics}"
    );

    let status = p.terminate();
    assert_clean_exit("journal-fanout", status, &p.stderr_text());
    let printed = std::fs::read_to_string(&stdout).unwrap_or_default();
    assert_eq!(
        printed
            .lines()
            .filter(|l| l.contains("fanout line"))
            .count(),
        40,
        "every line once on stdout: {printed}"
    );
    for dst in ["stdout", "cloudwatchlogs"] {
        let saved = std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .any(|n| n.starts_with(&format!("{dst}@")) && n.ends_with(".cursor"));
        assert!(saved, "no cursor saved for {dst} in {}", state.display());
    }

    let calls = p.calls(&bin);
    eprintln!(
        "journal-fanout: {} distinct system calls: {calls:?}",
        calls.len()
    );
    assert_allowed("journal-fanout", "journal-fanout.service", &calls);
}

#[test]
fn the_check_names_the_line_and_group_that_forbid_a_call() {
    let dir = TempDir::new("sysc-unit");
    let unit = dir.0.join("x.service");
    std::fs::write(
        &unit,
        "[Service]\nSystemCallFilter=@system-service\nSystemCallFilter=~@privileged @resources\n",
    )
    .unwrap();
    let calls: BTreeSet<String> = ["read", "chown", "setpriority", "ptrace"]
        .map(String::from)
        .into();
    let err = check("x", &unit, &calls).expect_err("chown, setpriority, ptrace are forbidden");
    assert!(err.contains("kills the daemon with SIGSYS"), "{err}");
    assert!(
        err.contains("- chown: denied by @privileged > @chown > chown in `SystemCallFilter=~@privileged @resources`"),
        "{err}"
    );
    assert!(
        err.contains("- setpriority: denied by @resources > setpriority"),
        "{err}"
    );
    assert!(
        err.contains("- ptrace: in none of the allowed @default @system-service; systemd groups holding it: @debug"),
        "{err}"
    );
    assert!(
        err.contains("`SystemCallFilter=chown ptrace setpriority`"),
        "{err}"
    );
    assert!(!err.contains("- read:"), "{err}");

    // A later allow line takes a call back; an empty assignment resets the filter.
    std::fs::write(
        &unit,
        "SystemCallFilter=@system-service\nSystemCallFilter=~@privileged @resources\n\
         SystemCallFilter=setpriority\nSystemCallErrorNumber=EPERM\n",
    )
    .unwrap();
    let err = check("x", &unit, &calls).unwrap_err();
    assert!(!err.contains("- setpriority"), "{err}");
    assert!(err.contains("fails with EPERM"), "{err}");
    std::fs::write(
        &unit,
        "SystemCallFilter=read\nSystemCallFilter=\nSystemCallFilter=~@debug\n",
    )
    .unwrap();
    let err = check("x", &unit, &calls).unwrap_err();
    assert!(err.contains("- ptrace: denied by @debug > ptrace"), "{err}");
    assert!(!err.contains("- chown") && !err.contains("- read"), "{err}");
}

#[test]
fn strace_lines_name_their_calls() {
    use trace::call_name;
    assert_eq!(
        call_name("1234  sendmmsg(3, [{msg_hdr=..."),
        Some("sendmmsg")
    );
    assert_eq!(call_name("1234  read(5,  <unfinished ...>"), Some("read"));
    assert_eq!(
        call_name("1234  <... epoll_wait resumed>[], 8, 200) = 0"),
        Some("epoll_wait")
    );
    assert_eq!(call_name("1234  --- SIGTERM {si_signo=SIGTERM} ---"), None);
    assert_eq!(call_name("1234  +++ exited with 0 +++"), None);
    assert_eq!(
        call_name("1234  restart_syscall(<... resuming interrupted read ...>) = 0"),
        Some("restart_syscall")
    );
}
