//! Local syslog clients through log-proxy, held to what journald's own syslog socket
//! (`/dev/log`) makes of the same bytes — the reference every Linux user trusts:
//!
//! * a seeded generator's 10,000 datagrams in the local forms go both to a private journald's
//!   `/run/systemd/journal.NS/dev-log` and through log-proxy into a second namespace, and the
//!   five fields journald derives (MESSAGE, PRIORITY, SYSLOG_FACILITY, SYSLOG_IDENTIFIER,
//!   SYSLOG_PID) must be equal for every one;
//! * real clients — util-linux `logger`, Python's `SysLogHandler`, Perl's `Sys::Syslog`,
//!   rsyslog relaying through `omuxsock` — arrive with exact MESSAGE, PRIORITY, identifier;
//! * untagged lines get a budget per sending process, never a raw write; what is not syslog
//!   is written as text.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Proxy;
use testkit::{field, field_bytes, require_binary, unique_name, wait_until, Entry, Journald};

/// The fields journald's syslog socket derives from a datagram.
const FIELDS: [&str; 5] = [
    "MESSAGE",
    "PRIORITY",
    "SYSLOG_FACILITY",
    "SYSLOG_IDENTIFIER",
    "SYSLOG_PID",
];
const DATAGRAMS: usize = 10_000;
const SEED: u64 = 0x005e_ed16;

/// splitmix64: seeded, fixed forever (a failure names its datagram by index and seed).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True `pct` percent of the time.
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len() as u64) as usize]
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A tag: ASCII name characters, dots, dashes, slashes, UTF-8; now and then `:` or brackets
/// inside, or 300 bytes long. Never whitespace or NUL (those end a tag).
fn tag(g: &mut Gen) -> Vec<u8> {
    if g.chance(2) {
        return vec![b'L'; *g.pick(&[255usize, 256, 300])];
    }
    let pieces: [&str; 14] = [
        "a", "z", "Q", "7", ".", "-", "_", "/", "ü", "日本", "é", "app", "sshd", "x",
    ];
    let rare = [":", "[", "]", "<", ">"];
    let mut t = Vec::new();
    for _ in 0..=g.below(8) {
        let p = if g.chance(4) {
            g.pick(&rare)
        } else {
            g.pick(&pieces)
        };
        t.extend_from_slice(p.as_bytes());
    }
    t
}

/// A message: words of letters, digits, punctuation and UTF-8; sometimes empty, long,
/// with leading spaces, invalid UTF-8, an inner newline or NUL.
fn message(g: &mut Gen) -> Vec<u8> {
    let mut m = Vec::new();
    match g.below(100) {
        0..=4 => return m,
        5..=9 => {
            let len = 1_000 + g.below(40_000) as usize;
            while m.len() < len {
                m.push(b"abcdefghijklmnopqrstuvwxyz0123456789 .:-"[g.below(40) as usize]);
            }
        }
        _ => {
            let words: [&str; 16] = [
                "hello",
                "GET",
                "/api/v1",
                "200",
                "ms=4",
                "error:",
                "[warn]",
                "<3>",
                "ünïcødé",
                "日本語",
                "a:b",
                "x",
                "--",
                "%s",
                "{\"k\":1}",
                "tag[12]:",
            ];
            for i in 0..=g.below(10) {
                if i > 0 {
                    m.extend_from_slice(g.pick(&[" ", " ", " ", "  ", "\t"]).as_bytes());
                }
                m.extend_from_slice(g.pick(&words).as_bytes());
            }
        }
    }
    if g.chance(5) {
        m.splice(0..0, g.pick(&[&b"  "[..], b" ", b"\t"]).iter().copied());
    }
    if g.chance(5) {
        let at = g.below(m.len() as u64 + 1) as usize;
        m.splice(
            at..at,
            g.pick(&[&b"\xff"[..], b"\xc3", b"\xe2\x82", b"\xfe\xfe"])
                .iter()
                .copied(),
        );
    }
    if g.chance(2) {
        let at = g.below(m.len() as u64 + 1) as usize;
        m.splice(
            at..at,
            g.pick(&[&b"\n"[..], b"\0", b"\0rest"]).iter().copied(),
        );
    }
    m
}

/// One datagram in a local form: `<PRI>[TIMESTAMP ][TAG[[PID]]: ]MSG[trailer]`.
fn datagram(g: &mut Gen) -> Vec<u8> {
    let mut d = Vec::new();
    if g.chance(2) {
        d.extend_from_slice(g.pick(&[" ", "\t", "\n "]).as_bytes());
    }
    let pri = g.below(192);
    if pri < 100 && g.chance(5) {
        d.extend_from_slice(format!("<{pri:03}>").as_bytes());
    } else {
        d.extend_from_slice(format!("<{pri}>").as_bytes());
    }
    if g.chance(50) {
        d.extend_from_slice(
            format!(
                "{} {:>2} {:02}:{:02}:{:02} ",
                g.pick(&MONTHS),
                1 + g.below(31),
                g.below(24),
                g.below(60),
                g.below(60)
            )
            .as_bytes(),
        );
    }
    if g.chance(70) {
        d.extend_from_slice(&tag(g));
        if g.chance(50) {
            let pid = if g.chance(90) {
                (1 + g.below(4_194_304)).to_string()
            } else {
                g.pick(&["", "x1", "12a", "-1", "007"]).to_string()
            };
            d.extend_from_slice(format!("[{pid}]").as_bytes());
        }
        d.push(b':');
        d.extend_from_slice(g.pick(&[" ", " ", " ", " ", "", "\t", "  "]).as_bytes());
    }
    d.extend_from_slice(&message(g));
    d.extend_from_slice(
        g.pick(&["", "", "", "\n", "\0", "\r\n", " ", "\n\0", "\t\n"])
            .as_bytes(),
    );
    d
}

/// The shapes log-proxy reads as Docker's forms rather than journald's (documented in
/// `syslog.rs` and docs/log-proxy.md, tested on their own): after the PRI, `1 ` and an RFC 5424
/// timestamp; or an RFC 3164 timestamp, then a host name and a word ending in `:`.
fn docker_shaped(d: &[u8]) -> bool {
    let Some(gt) = d.iter().position(|&c| c == b'>') else {
        return false;
    };
    let rest = &d[gt + 1..];
    if rest.starts_with(b"1 ") {
        let ts = &rest[2..];
        if ts.starts_with(b"- ") || (ts.len() > 10 && ts[..4].iter().all(u8::is_ascii_digit)) {
            return true;
        }
    }
    let stamped = rest.len() >= 16 && MONTHS.iter().any(|m| rest.starts_with(m.as_bytes()));
    if !stamped {
        // An RFC 3339 timestamp reads as rsyslog's forwarding format.
        return rest.len() > 20 && rest[..4].iter().all(u8::is_ascii_digit) && rest[4] == b'-';
    }
    let after_ts = &rest[16..];
    let mut words = after_ts.split(|&c| c == b' ');
    let host = words.next().unwrap_or_default();
    let tag = words.next().unwrap_or_default();
    !host.is_empty()
        && host
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
        && tag.len() >= 2
        && tag.ends_with(b":")
        && tag[0] != b'['
        && tag[0] != b':'
}

fn generate(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut g = Gen(seed);
    (0..n)
        .map(|_| loop {
            let d = datagram(&mut g);
            if !docker_shaped(&d) {
                break d;
            }
        })
        .collect()
}

fn show(b: Option<&[u8]>) -> String {
    match b {
        None => "(absent)".into(),
        Some(b) if b.len() > 120 => format!("\"{}\"… ({} bytes)", b[..120].escape_ascii(), b.len()),
        Some(b) => format!("\"{}\"", b.escape_ascii()),
    }
}

#[test]
fn differential_against_journalds_own_syslog_socket() {
    let reference = Journald::start();
    let through = Journald::start();
    let dev_log = PathBuf::from(format!(
        "/run/systemd/journal.{}/dev-log",
        reference.namespace()
    ));
    assert!(
        dev_log.exists(),
        "journald did not create {}",
        dev_log.display()
    );
    // No limit (every datagram must arrive) and no Docker lookups (no line waits for an
    // answer, so the order is the order sent: entries pair up by position).
    let proxy = Proxy::start(through.socket(), &["--burst", "0", "--docker-host", "none"]);
    let datagrams = generate(SEED, DATAGRAMS);
    let sock = UnixDatagram::unbound().unwrap();
    for d in &datagrams {
        // Blocking sends: a full queue waits for the reader, nothing is lost.
        sock.send_to(d, &dev_log)
            .expect("send to journald's dev-log");
        sock.send_to(d, &proxy.socket).expect("send to log-proxy");
    }
    let want =
        reference.wait_for_count(&["_TRANSPORT=syslog"], DATAGRAMS, Duration::from_secs(300));
    let got = through.wait_for_count(&["_TRANSPORT=journal"], DATAGRAMS, Duration::from_secs(300));
    assert_eq!(
        want.len(),
        DATAGRAMS,
        "journald stored more syslog entries than were sent"
    );
    assert_eq!(
        got.len(),
        DATAGRAMS,
        "log-proxy wrote more entries than were sent: {}",
        proxy.stderr()
    );

    let mut diffs = Vec::new();
    let mut n_diff = 0;
    for (i, (a, b)) in want.iter().zip(&got).enumerate() {
        let differing: Vec<String> = FIELDS
            .iter()
            .filter_map(|f| {
                let (x, y) = (field_bytes(a, f), field_bytes(b, f));
                (x != y).then(|| {
                    format!(
                        "    {f}: journald {} / log-proxy {}",
                        show(x.as_deref()),
                        show(y.as_deref())
                    )
                })
            })
            .collect();
        if !differing.is_empty() {
            n_diff += 1;
            if diffs.len() < 10 {
                diffs.push(format!(
                    "  datagram {i} {}:\n{}",
                    show(Some(&datagrams[i])),
                    differing.join("\n")
                ));
            }
        }
    }
    assert!(
        n_diff == 0,
        "{n_diff} of {DATAGRAMS} datagrams (seed {SEED:#x}) differ from journald's reading; the first {}:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    assert_eq!(proxy.metric("log_proxy_unparsable_lines_total"), 0);
}

/// The generator covers what the issue lists, so a green differential run means something.
#[test]
fn the_generator_covers_the_local_forms() {
    let ds = generate(SEED, DATAGRAMS);
    let count = |f: &dyn Fn(&[u8]) -> bool| ds.iter().filter(|d| f(d)).count();
    let has = |d: &[u8], s: &[u8]| d.windows(s.len()).any(|w| w == s);
    let checks: [(&str, usize); 9] = [
        (
            "with a timestamp",
            count(&|d| MONTHS.iter().any(|m| has(d, format!(">{m} ").as_bytes()))),
        ),
        ("with [pid]", count(&|d| has(d, b"]:"))),
        ("with a trailing NUL", count(&|d| d.ends_with(b"\0"))),
        ("with a trailing newline", count(&|d| d.ends_with(b"\n"))),
        ("longer than 8 KiB", count(&|d| d.len() > 8192)),
        (
            "with invalid UTF-8",
            count(&|d| std::str::from_utf8(d).is_err()),
        ),
        (
            "with UTF-8 tags",
            count(&|d| has(d, "日本".as_bytes()) || has(d, "ü".as_bytes())),
        ),
        ("with slashes", count(&|d| has(d, b"/"))),
        (
            "with an empty message",
            count(&|d| d.ends_with(b">") || d.ends_with(b": ")),
        ),
    ];
    for (what, n) in checks {
        assert!(n >= 20, "only {n} datagrams {what}");
    }
    let pris: std::collections::BTreeSet<String> = ds
        .iter()
        .filter_map(|d| {
            let s = d.iter().position(|&c| c == b'<')?;
            let e = d.iter().position(|&c| c == b'>')?;
            std::str::from_utf8(&d[s + 1..e])
                .ok()?
                .parse::<u32>()
                .ok()
                .map(|p| p.to_string())
        })
        .collect();
    assert_eq!(pris.len(), 192, "every PRI 0-191 is sent");
}

// ---------------------------------------------------------------------------------------
// Real clients.

const NO_DOCKER: &[&str] = &["--docker-host", "unix:///nonexistent/docker.sock"];

/// Wait for exactly one entry matching `matches`; returns it.
fn one(jd: &Journald, matches: &[&str]) -> Entry {
    let e = jd.wait_for_count(matches, 1, Duration::from_secs(30));
    assert_eq!(e.len(), 1, "one entry matching {matches:?}: {e:?}");
    e.into_iter().next().unwrap()
}

fn assert_fields(e: &Entry, want: &[(&str, Option<&str>)]) {
    for (f, v) in want {
        assert_eq!(field(e, f).as_deref(), *v, "{f} of {e:?}");
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn python() -> &'static str {
    // Debian's own (the `python3` on PATH may be a per-user shim).
    require_binary("/usr/bin/python3", "apt-get install -y python3");
    "/usr/bin/python3"
}

#[test]
fn util_linux_logger_rfc3164_rfc5424_and_local() {
    require_binary("logger", "apt-get install -y bsdutils");
    let jd = Journald::start();
    let proxy = Proxy::start(jd.socket(), NO_DOCKER);
    let sock = proxy.socket.to_str().unwrap();
    run(Command::new("logger").args([
        "-u",
        sock,
        "--rfc3164",
        "-t",
        "lgr3164",
        "-p",
        "local3.warning",
        "--",
        "rfc3164 line",
    ]));
    run(Command::new("logger").args([
        "-u",
        sock,
        "--rfc5424",
        "--sd-id",
        "zoo@123",
        "--sd-param",
        "tiger=\"hungry\"",
        "--msgid",
        "ID47",
        "-t",
        "lgr5424",
        "-p",
        "user.err",
        "--",
        "rfc5424 line",
    ]));
    run(Command::new("logger").args([
        "-u",
        sock,
        "-t",
        "lgrlocal",
        "--id=4242",
        "-p",
        "daemon.notice",
        "--",
        "local line",
    ]));
    let e = one(&jd, &["SYSLOG_IDENTIFIER=lgr3164"]);
    assert_fields(
        &e,
        &[("MESSAGE", Some("rfc3164 line")), ("PRIORITY", Some("4"))],
    );
    let e = one(&jd, &["SYSLOG_IDENTIFIER=lgr5424"]);
    assert_fields(
        &e,
        &[("MESSAGE", Some("rfc5424 line")), ("PRIORITY", Some("3"))],
    );
    let e = one(&jd, &["SYSLOG_IDENTIFIER=lgrlocal"]);
    assert_fields(
        &e,
        &[
            ("MESSAGE", Some("local line")),
            ("PRIORITY", Some("5")),
            ("SYSLOG_FACILITY", Some("3")),
            ("SYSLOG_PID", Some("4242")),
        ],
    );
    assert_eq!(proxy.metric("log_proxy_unparsable_lines_total"), 0);
}

#[test]
fn python_sysloghandler_with_and_without_ident() {
    let py = python();
    let jd = Journald::start();
    let proxy = Proxy::start(jd.socket(), NO_DOCKER);
    let script = r#"
import logging, logging.handlers, sys
h = logging.handlers.SysLogHandler(address=sys.argv[1], facility=logging.handlers.SysLogHandler.LOG_LOCAL1)
if len(sys.argv) > 2:
    h.ident = sys.argv[2]
log = logging.getLogger("t")
log.addHandler(h)
log.warning(sys.argv[3] if len(sys.argv) > 3 else "python without ident")
"#;
    run(Command::new(py).args([
        "-c",
        script,
        proxy.socket.to_str().unwrap(),
        "pyapp: ",
        "python with ident",
    ]));
    run(Command::new(py).args(["-c", script, proxy.socket.to_str().unwrap()]));
    let e = one(&jd, &["SYSLOG_IDENTIFIER=pyapp"]);
    assert_fields(
        &e,
        &[
            ("MESSAGE", Some("python with ident")),
            ("PRIORITY", Some("4")),
            ("SYSLOG_FACILITY", Some("17")),
        ],
    );
    // No ident: `<140>python without ident\0` — no identifier (as journald), no NUL, no PRI.
    let e = one(&jd, &["MESSAGE=python without ident"]);
    assert_fields(
        &e,
        &[
            ("PRIORITY", Some("4")),
            ("SYSLOG_FACILITY", Some("17")),
            ("SYSLOG_IDENTIFIER", None),
        ],
    );
    assert_eq!(proxy.metric("log_proxy_unparsable_lines_total"), 0);
}

#[test]
fn perl_sys_syslog_over_a_unix_socket() {
    require_binary("perl", "apt-get install -y perl");
    let ok = Command::new("perl")
        .args(["-MSys::Syslog", "-e1"])
        .status()
        .map(|s| s.success());
    assert!(
        matches!(ok, Ok(true)),
        "perl's Sys::Syslog is missing: apt-get install -y perl (libperl5.36)"
    );
    let jd = Journald::start();
    let proxy = Proxy::start(jd.socket(), NO_DOCKER);
    let pid = run(Command::new("perl").args([
        "-MSys::Syslog=:standard,setlogsock",
        "-e",
        r#"setlogsock({type => "unix", path => $ARGV[0]}) or die "setlogsock: $!";
           openlog("perlapp", "pid", "local2"); syslog("info", "perl line"); closelog(); print $$;"#,
        proxy.socket.to_str().unwrap(),
    ]));
    let e = one(&jd, &["SYSLOG_IDENTIFIER=perlapp"]);
    assert_fields(
        &e,
        &[
            ("MESSAGE", Some("perl line")),
            ("PRIORITY", Some("6")),
            ("SYSLOG_FACILITY", Some("18")),
            ("SYSLOG_PID", Some(pid.trim())),
        ],
    );
}

/// A private rsyslogd (never the host's `/dev/log`): imuxsock on its own socket in,
/// omuxsock to log-proxy out.
struct Rsyslog {
    child: std::process::Child,
    dir: PathBuf,
    input: PathBuf,
}

impl Rsyslog {
    fn start(to: &Path) -> Rsyslog {
        require_binary("/usr/sbin/rsyslogd", "apt-get install -y rsyslog");
        let dir = std::env::temp_dir().join(unique_name("rsyslog"));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.sock");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{d}\")\n\
                 module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
                 input(type=\"imuxsock\" Socket=\"{i}\")\n\
                 module(load=\"omuxsock\")\n\
                 $OMUxSockSocket {o}\n\
                 *.* :omuxsock:\n",
                d = dir.display(),
                i = input.display(),
                o = to.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("/usr/sbin/rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .expect("start rsyslogd");
        wait_until(Duration::from_secs(20), "rsyslogd's input socket", || {
            if let Ok(Some(s)) = child.try_wait() {
                panic!(
                    "rsyslogd exited with {s}: {}",
                    std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
                );
            }
            input.exists().then_some(())
        });
        Rsyslog { child, dir, input }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn rsyslog_relaying_through_omuxsock() {
    require_binary("logger", "apt-get install -y bsdutils");
    let jd = Journald::start();
    let proxy = Proxy::start(jd.socket(), NO_DOCKER);
    let rsyslog = Rsyslog::start(&proxy.socket);
    run(Command::new("logger").args([
        "-u",
        rsyslog.input.to_str().unwrap(),
        "-t",
        "relayed",
        "-p",
        "local4.err",
        "--",
        "relayed line",
    ]));
    let e = one(&jd, &["SYSLOG_IDENTIFIER=relayed"]);
    assert_fields(
        &e,
        &[("MESSAGE", Some("relayed line")), ("PRIORITY", Some("3"))],
    );
}

// ---------------------------------------------------------------------------------------
// Untagged lines and what is not syslog.

/// Python's SysLogHandler without ident from its own process: `n` untagged lines. On a
/// stream socket (`unix://`), newline-framed `<12>TEXT I` lines from one connection instead
/// (SysLogHandler ends stream messages with a NUL only, which no stream framing reads).
fn python_untagged(socket: &Path, text: &str, n: usize) {
    let script = r#"
import logging, logging.handlers, socket, stat, os, sys
path, text, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(path)
except OSError:
    log = logging.getLogger("t")
    log.addHandler(logging.handlers.SysLogHandler(address=path))
    for i in range(n):
        log.warning("%s %d", text, i)
    sys.exit(0)
s.sendall(b"".join(b"<12>%s %d\n" % (text.encode(), i) for i in range(n)))
s.close()
"#;
    run(Command::new(python()).args([
        "-c",
        script,
        socket.to_str().unwrap(),
        text,
        &n.to_string(),
    ]));
}

fn untagged_delivered(jd: &Journald, text: &str) -> usize {
    jd.entries()
        .iter()
        .filter(|e| field(e, "MESSAGE").is_some_and(|m| m.starts_with(&format!("{text} "))))
        .inspect(|e| assert_eq!(field(e, "SYSLOG_IDENTIFIER"), None, "{e:?}"))
        .count()
}

/// Each sending process has a budget of its own (the kernel names it, `SO_PASSCRED`); without
/// credentials (`--allow-uid any`) all untagged lines share one. Drops are reported, with the
/// counts adding up.
#[test]
fn untagged_lines_get_a_budget_per_sender_or_one_shared() {
    for (stream, flags, shared) in [
        (false, &[][..], false),
        (false, &["--allow-uid", "any"][..], true),
        // A unix stream peer is named by SO_PEERCRED, per connection.
        (true, &[][..], false),
    ] {
        let jd = Journald::start();
        let mut args = vec!["--burst", "5", "--interval", "1h"];
        args.extend_from_slice(NO_DOCKER);
        args.extend_from_slice(flags);
        let mut proxy = if stream {
            let sock = std::env::temp_dir().join(format!("{}.sock", unique_name("lps")));
            Proxy::start_at(
                &format!("unix://{}", sock.display()),
                Some(sock),
                jd.socket(),
                &args,
            )
        } else {
            Proxy::start(jd.socket(), &args)
        };
        python_untagged(&proxy.socket, "first sender", 20);
        python_untagged(&proxy.socket, "second sender", 20);
        // SIGTERM writes the open drop episodes' notices; wait until journald has them all.
        assert_eq!(proxy.terminate(), 0, "{}", proxy.stderr());
        let (a, b, dropped, notices) = wait_until(
            Duration::from_secs(30),
            "every line delivered or counted",
            || {
                let notices = jd.entries_matching(&[&format!("MESSAGE_ID={}", common::NOTICE_ID)]);
                let dropped: u64 = notices.iter().map(common::n_dropped).sum();
                let (a, b) = (
                    untagged_delivered(&jd, "first sender"),
                    untagged_delivered(&jd, "second sender"),
                );
                eprintln!("stream {stream} {flags:?}: delivered {a} + {b}, N_DROPPED {dropped}");
                (a as u64 + b as u64 + dropped == 40).then_some((a, b, dropped, notices))
            },
        );
        if shared {
            assert_eq!((a, b), (5, 0), "one shared budget of 5");
        } else {
            assert_eq!((a, b), (5, 5), "a budget of 5 per sender");
        }
        assert_eq!(
            a as u64 + b as u64 + dropped,
            40,
            "delivered + N_DROPPED = sent; notices {notices:?}"
        );
    }
}

#[test]
fn what_is_not_syslog_is_written_as_text() {
    let jd = Journald::start();
    let proxy = Proxy::start(jd.socket(), NO_DOCKER);
    proxy.send(b"plain text, no PRI\0\n");
    proxy.send(b"\x00\x01 binary\0\0");
    proxy.send(b"<1234>not a PRI journald reads\n");
    let e = jd.wait_for_count(&["LOG_PROXY_UNPARSABLE=1"], 3, Duration::from_secs(20));
    let msgs: Vec<Vec<u8>> = e
        .iter()
        .map(|e| field_bytes(e, "MESSAGE").unwrap())
        .collect();
    assert_eq!(
        msgs,
        vec![
            b"plain text, no PRI".to_vec(),
            "\u{FFFD}\x01 binary".as_bytes().to_vec(),
            b"<1234>not a PRI journald reads".to_vec(),
        ]
    );
    // Text: journalctl prints it as a string, not as a byte array (the control byte of the
    // second keeps that one an array; it has no NUL).
    assert!(
        e[0]["MESSAGE"].is_string() && e[2]["MESSAGE"].is_string(),
        "{e:?}"
    );
    assert_eq!(proxy.metric("log_proxy_unparsable_lines_total"), 3);
}

/// "Docker unavailable" once when it begins, repeats only at debug level, and once when it
/// ends with the count — against a real Docker engine that appears at the configured path.
#[test]
fn docker_unavailable_is_logged_once_per_episode_with_a_count() {
    testkit::docker();
    let jd = Journald::start();
    let dir = std::env::temp_dir().join(unique_name("lp-dh"));
    std::fs::create_dir_all(&dir).unwrap();
    let docker_sock = dir.join("docker.sock");
    let host = format!("unix://{}", docker_sock.display());
    let proxy = Proxy::start_env(
        jd.socket(),
        &["--docker-host", &host],
        &[("RUST_LOG", "info,log_proxy::docker=debug")],
    );
    wait_until(
        Duration::from_secs(30),
        "three failed connection attempts",
        || (proxy.stderr().matches("Docker still unavailable").count() >= 3).then_some(()),
    );
    assert_eq!(
        proxy.stderr().matches("Docker unavailable").count(),
        1,
        "{}",
        proxy.stderr()
    );
    std::os::unix::fs::symlink("/var/run/docker.sock", &docker_sock).unwrap();
    let line = wait_until(Duration::from_secs(60), "Docker available again", || {
        proxy
            .stderr()
            .lines()
            .find(|l| l.contains("Docker available again"))
            .map(str::to_string)
    });
    assert!(
        line.contains("unavailable seen ") && line.contains(" times over "),
        "{line}"
    );
    assert_eq!(
        proxy.stderr().matches("Docker unavailable").count(),
        1,
        "{}",
        proxy.stderr()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--docker-host none` (a host without Docker): the self-check does not judge Docker's
/// settings.
#[test]
fn check_without_docker_does_not_judge_dockers_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_log-proxy"))
        .args([
            "--docker-host",
            "none",
            "check",
            "--daemon-json",
            "/nonexistent/daemon.json",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("OK   Docker daemon.json: not used (--docker-host none)"),
        "{text}"
    );
    assert!(
        text.contains("OK   Docker API: not used (--docker-host none)"),
        "{text}"
    );
}
