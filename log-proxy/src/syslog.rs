//! Parsing syslog messages as they reach log-proxy's socket.
//!
//! Two families, detected per message:
//! * Docker's own forms, which journald's `/dev/log` does not parse: RFC 5424 (`rfc5424`,
//!   `rfc5424micro`, also util-linux `logger --rfc5424`) and RFC 3164 *with a hostname*
//!   (`rfc3164`, rsyslog's forwarding format). Read as before: tag and message, bytes kept.
//! * Every other `<PRI>…` datagram is a local form (`<PRI>MSG`, `<PRI>TAG: MSG`,
//!   `<PRI>TAG[PID]: MSG`, each optionally with `Mmm dd hh:mm:ss ` after the PRI — glibc's
//!   `syslog(3)`, Python's `SysLogHandler`, Perl's `Sys::Syslog`, Docker's default format)
//!   and is read by exactly the rules of journald's syslog socket (systemd 252,
//!   `journald-syslog.c`: `server_process_syslog_message`, `syslog_parse_priority`,
//!   `syslog_skip_timestamp`, `syslog_parse_identifier`), so log-proxy writes the same
//!   MESSAGE, PRIORITY, SYSLOG_FACILITY, SYSLOG_IDENTIFIER and SYSLOG_PID journald would.
//!   The differential test (`tests/local_syslog.rs`) holds it to that.
//!
//! A message that could be both is read as Docker's: after an RFC 3164 timestamp, a first
//! word that is a host name followed by a word ending in `:` (`HOST TAG: MSG`, what
//! `rfc3164` sends); journald would keep `HOST TAG: MSG` whole as the message.
//!
//! Hand-written rather than `syslog_loose` for two measured reasons (docs/BENCHMARKS.md):
//! it works on bytes, so a line with non-UTF-8 bytes (Docker cuts long lines at 16 KiB, even
//! inside a UTF-8 sequence) is forwarded byte for byte instead of being rejected or mangled,
//! and it only finds what the proxy needs, which makes it several times faster on the hot path.

/// Which syslog dialect a message was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 5424 (Docker's `rfc5424`/`rfc5424micro`).
    Rfc5424,
    /// RFC 3164 with a hostname (Docker's `rfc3164`).
    Rfc3164,
    /// A local form, read as journald's `/dev/log` reads it.
    Local,
}

/// The parts of a syslog message the proxy uses. Borrowed from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub format: Format,
    /// 0 (emerg) ..= 7 (debug). Docker: stdout is 6 (info), stderr 3 (err).
    pub severity: u8,
    /// The PRI's facility: 0 ..= 23 for Docker's forms; a local form's PRI may be up to 999
    /// as journald reads it, so up to 124.
    pub facility: u8,
    /// APP-NAME (RFC 5424), TAG (RFC 3164) or the identifier of a local form: what Docker's
    /// `tag` log-opt rendered. Empty when there is none (see `tagged`).
    pub tag: &'a [u8],
    /// A local form named an identifier (possibly empty: `<13>: msg`); journald then writes
    /// SYSLOG_IDENTIFIER. Docker's forms: the tag is not empty.
    pub tagged: bool,
    /// The `[PID]` of a local form's `TAG[PID]:` (any text, as journald 252 keeps it).
    pub pid: Option<&'a [u8]>,
    /// The line: without the trailing newline Docker appends; for a local form exactly
    /// journald's MESSAGE (trailing whitespace and NULs stripped, cut at an inner NUL).
    pub msg: &'a [u8],
}

impl Message<'_> {
    /// The tag with Docker's optional `docker/` prefix removed: the container reference.
    pub fn container_ref(&self) -> &[u8] {
        self.tag.strip_prefix(b"docker/").unwrap_or(self.tag)
    }
}

/// Parse one syslog message (one datagram or one stream frame). `None` means "not syslog"
/// (no `<PRI>` journald would read): the caller writes it as text and counts it.
pub fn parse(input: &[u8]) -> Option<Message<'_>> {
    // Docker's forms, strictly: `<PRI>1 TIMESTAMP …` with an RFC 3339 (or nil) timestamp, or
    // `<PRI>TIMESTAMP HOST TAG: …`; anything else is a local form.
    if let Some((pri, rest)) = parse_pri(trim_trailer(input)) {
        let (facility, severity) = ((pri >> 3) as u8, (pri & 7) as u8);
        if rest.len() >= 3 && rest[0] == b'1' && rest[1] == b' ' && is_5424_timestamp(&rest[2..]) {
            if let m @ Some(_) = parse_5424(rest, facility, severity) {
                return m;
            }
        } else if let m @ Some(_) = parse_3164_host(rest, facility, severity) {
            return m;
        }
    }
    parse_local(input)
}

/// What follows `1 ` in RFC 5424: `-` (nil) or a full date `YYYY-MM-DD…`.
fn is_5424_timestamp(b: &[u8]) -> bool {
    b.starts_with(b"- ")
        || (b.len() > 10 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[7] == b'-')
}

/// Strip one trailing `\n` (Docker always appends one), then a `\r` or `\0` before it.
fn trim_trailer(mut b: &[u8]) -> &[u8] {
    if let Some(x) = b.strip_suffix(b"\n") {
        b = x;
    }
    while let Some(x) = b.strip_suffix(b"\r").or_else(|| b.strip_suffix(b"\0")) {
        b = x;
    }
    b
}

fn parse_pri(b: &[u8]) -> Option<(u16, &[u8])> {
    let b = b.strip_prefix(b"<")?;
    let end = b.iter().take(4).position(|&c| c == b'>')?;
    if end == 0 {
        return None;
    }
    let mut pri: u16 = 0;
    for &c in &b[..end] {
        if !c.is_ascii_digit() {
            return None;
        }
        pri = pri * 10 + (c - b'0') as u16;
    }
    if pri > 191 {
        return None;
    }
    Some((pri, &b[end + 1..]))
}

/// Split off the next space-delimited token.
fn token(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let sp = b.iter().position(|&c| c == b' ')?;
    Some((&b[..sp], &b[sp + 1..]))
}

#[inline(always)]
fn parse_5424(b: &[u8], facility: u8, severity: u8) -> Option<Message<'_>> {
    // VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
    let (_version, b) = token(b)?;
    let (_ts, b) = token(b)?;
    let (_host, b) = token(b)?;
    let (app, b) = token(b)?;
    let (_procid, b) = token(b)?;
    // A message that ends right after MSGID/SD (empty line) has no trailing space.
    let (_msgid, b) = token(b).unwrap_or((b, &[]));
    let msg = skip_structured_data(b);
    let msg = msg.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(msg);
    let tag: &[u8] = if app == b"-" { &[] } else { app };
    Some(Message {
        format: Format::Rfc5424,
        severity,
        facility,
        tag,
        tagged: !tag.is_empty(),
        pid: None,
        msg,
    })
}

/// Skip `-` or a run of `[...]` elements (honouring `\]` escapes) and the space after.
fn skip_structured_data(b: &[u8]) -> &[u8] {
    if let Some(rest) = b.strip_prefix(b"-") {
        return rest.strip_prefix(b" ").unwrap_or(rest);
    }
    let mut i = 0;
    while i < b.len() && b[i] == b'[' {
        let mut esc = false;
        i += 1;
        while i < b.len() {
            match b[i] {
                b'\\' if !esc => esc = true,
                b']' if !esc => break,
                _ => esc = false,
            }
            i += 1;
        }
        i += 1; // past ']'
    }
    let rest = &b[i.min(b.len())..];
    rest.strip_prefix(b" ").unwrap_or(rest)
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `TIMESTAMP HOST TAG: MSG` (Docker's `rfc3164`; TAG usually `TAG[PID]`). The timestamp is
/// `Mmm dd hh:mm:ss` or RFC 3339 (rsyslog's forwarding format).
#[inline(always)]
fn parse_3164_host(b: &[u8], facility: u8, severity: u8) -> Option<Message<'_>> {
    let b = if b.len() >= 16 && MONTHS.iter().any(|m| &b[..3] == *m) && b[15] == b' ' {
        &b[16..]
    } else if b.len() > 20 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' {
        token(b)?.1
    } else {
        return None;
    };
    // One pass: the host ends at a space; any other byte a host cannot hold ends the try
    // early (a local `TAG[PID]:` fails at its `[`).
    let end = b.iter().position(|&c| !is_host_char(c))?;
    if end == 0 || b[end] != b' ' {
        return None;
    }
    let after_host = &b[end + 1..];
    // `TAG[PID]:` in one pass: up to where the tag ends (`[` or `:`), then on to the space.
    let end = after_host
        .iter()
        .position(|&c| matches!(c, b'[' | b':' | b' '))
        .unwrap_or(after_host.len());
    let word_end = after_host[end..]
        .iter()
        .position(|&c| c == b' ')
        .map_or(after_host.len(), |i| end + i);
    let tag_field = &after_host[..word_end];
    let msg = after_host.get(word_end + 1..).unwrap_or_default();
    if !tag_field.ends_with(b":") || end == 0 {
        return None;
    }
    Some(Message {
        format: Format::Rfc3164,
        severity,
        facility,
        tag: &tag_field[..end],
        tagged: true,
        pid: None,
        msg,
    })
}

/// A host name or address as senders put it there (a `:` ends a tag, never a host, except
/// in IPv6 addresses, which carry no other `:`-ended shape here).
fn is_host_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_')
}

/// journald's `WHITESPACE`.
fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// A local form, by journald's rules (systemd 252, `server_process_syslog_message`):
/// 1. trailing whitespace and NULs go (journald's `strchr(WHITESPACE, c)` also matches the
///    NUL terminator), then leading whitespace; the rest is a C string: an inner NUL ends it;
/// 2. `<` 1–3 digits `>` is the priority, any value up to 999 (PRIORITY = value & 7,
///    SYSLOG_FACILITY = value >> 3 when not 0); without it, this is not syslog (`None`);
/// 3. a 16-byte `Mmm dd hh:mm:ss ` is skipped (letters, digits or spaces, colons);
/// 4. a first word ending in `:` is the identifier, less a final `[…]` (the pid); one
///    whitespace after it is skipped; the rest is MESSAGE.
// Out of line, and Docker's two parsers always inline: measured, that layout makes
// Docker's forms faster than before this parser read local forms (parsebench).
#[inline(never)]
fn parse_local(input: &[u8]) -> Option<Message<'_>> {
    let end = input
        .iter()
        .rposition(|&c| !is_ws(c) && c != 0)
        .map_or(0, |i| i + 1);
    let b = &input[..end];
    let start = b.iter().position(|&c| !is_ws(c)).unwrap_or(b.len());
    let b = &b[start..];
    // The whole line is scanned for a NUL: SIMD (memchr), the bulk of this path's time.
    let b = match memchr::memchr(0, b) {
        Some(nul) => &b[..nul],
        None => b,
    };
    let (pri, rest) = journald_pri(b)?;
    let rest = skip_timestamp(rest);
    let (tag, pid, msg) = identifier(rest);
    Some(Message {
        format: Format::Local,
        severity: (pri & 7) as u8,
        facility: ((pri & 0x3f8) >> 3) as u8,
        tag: tag.unwrap_or_default(),
        tagged: tag.is_some(),
        pid,
        msg,
    })
}

/// `syslog_parse_priority(…, with_facility = true)`: `<` then 1–3 decimal digits up to the
/// first `>`; no range check.
#[inline(always)]
fn journald_pri(b: &[u8]) -> Option<(u16, &[u8])> {
    if b.first() != Some(&b'<') {
        return None;
    }
    // journald takes the first `>` anywhere; only one at 2..=4 can make a PRI.
    let k = b.iter().take(5).position(|&c| c == b'>')?;
    if k < 2 {
        return None;
    }
    let mut pri: u16 = 0;
    for &c in &b[1..k] {
        if !c.is_ascii_digit() {
            return None;
        }
        pri = pri * 10 + (c - b'0') as u16;
    }
    Some((pri, &b[k + 1..]))
}

/// `syslog_skip_timestamp`: skip `Mmm dd hh:mm:ss ` when all 16 bytes have its shape:
/// letters, a space, then space-or-digit + digit pairs separated by space, `:`, `:`, and a
/// space.
#[inline(always)]
fn skip_timestamp(b: &[u8]) -> &[u8] {
    let Some(t) = b.get(..16) else { return b };
    let pair = |i: usize| (t[i] == b' ' || t[i].is_ascii_digit()) && t[i + 1].is_ascii_digit();
    let fits = t[..3].iter().all(u8::is_ascii_alphabetic)
        && t[3] == b' '
        && pair(4)
        && t[6] == b' '
        && pair(7)
        && t[9] == b':'
        && pair(10)
        && t[12] == b':'
        && pair(13)
        && t[15] == b' ';
    if fits {
        &b[16..]
    } else {
        b
    }
}

/// `syslog_parse_identifier`: (identifier, pid, message).
#[allow(clippy::type_complexity)]
#[inline(always)]
fn identifier(b: &[u8]) -> (Option<&[u8]>, Option<&[u8]>, &[u8]) {
    let p = &b[b.iter().position(|&c| !is_ws(c)).unwrap_or(b.len())..];
    let word = p.iter().position(|&c| is_ws(c)).unwrap_or(p.len());
    if word == 0 || p[word - 1] != b':' {
        return (None, None, b);
    }
    let mut l = word - 1;
    let mut pid = None;
    if l > 0 && p[l - 1] == b']' {
        // The last `[` before the `]`, searching back to the word's start.
        if let Some(k) = p[..l - 1].iter().rposition(|&c| c == b'[') {
            pid = Some(&p[k + 1..l - 1]);
            l = k;
        }
    }
    let mut e = word;
    if e < p.len() && is_ws(p[e]) {
        e += 1;
    }
    (Some(&p[..l]), pid, &p[e..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[u8]) -> Message<'_> {
        parse(s).unwrap_or_else(|| panic!("did not parse {:?}", String::from_utf8_lossy(s)))
    }

    #[test]
    fn docker_rfc5424micro_datagram() {
        let m = p(b"<30>1 2026-11-22T13:32:28.396128Z vm 0414557846fd 3076 0414557846fd - hello\n");
        assert_eq!(m.format, Format::Rfc5424);
        assert_eq!((m.facility, m.severity), (3, 6));
        assert_eq!(m.tag, b"0414557846fd");
        assert_eq!(m.msg, b"hello");
    }

    #[test]
    fn docker_rfc5424_stderr_with_docker_prefix() {
        let m = p(
            b"<27>1 2026-11-22T13:32:28Z vm docker/0414557846fd 3076 docker/0414557846fd - oops\n",
        );
        assert_eq!(m.severity, 3);
        assert_eq!(m.container_ref(), b"0414557846fd");
        assert_eq!(m.msg, b"oops");
    }

    #[test]
    fn docker_rfc3164_with_hostname_and_default_format_without() {
        let m = p(b"<30>Nov  2 13:32:28 vm 0414557846fd[3076]: hello world\n");
        assert_eq!(m.format, Format::Rfc3164);
        assert_eq!(m.tag, b"0414557846fd");
        assert_eq!(m.msg, b"hello world");
        // Docker's default format has no hostname: a local form, read as journald does.
        let m = p(b"<27>Nov 22 13:32:28 0414557846fd[3076]: no host here\n");
        assert_eq!(m.format, Format::Local);
        assert_eq!(m.tag, b"0414557846fd");
        assert_eq!(m.pid, Some(&b"3076"[..]));
        assert_eq!(m.msg, b"no host here");
        assert_eq!(m.severity, 3);
    }

    #[test]
    fn message_bytes_are_kept_exactly() {
        let m = p(b"<30>1 2026-11-22T13:32:28Z vm abc 1 abc -   leading spaces \xff\xfe\n");
        assert_eq!(m.msg, b"  leading spaces \xff\xfe");
        let m = p(b"<30>1 2026-11-22T13:32:28Z vm abc 1 abc - tty line\r\n");
        assert_eq!(m.msg, b"tty line");
    }

    #[test]
    fn structured_data_is_skipped() {
        let m = p(b"<30>1 2026-11-22T13:32:28Z vm app 1 id [a@1 k=\"v\\]x\"][b@2] msg here");
        assert_eq!(m.tag, b"app");
        assert_eq!(m.msg, b"msg here");
    }

    #[test]
    fn empty_message_and_nil_app() {
        let m = p(b"<30>1 2026-11-22T13:32:28Z vm - 1 - -");
        assert_eq!(m.tag, b"");
        assert!(!m.tagged);
        assert_eq!(m.msg, b"");
    }

    /// What journald 252's `/dev/log` stores for each of these bytes (checked against a
    /// real journald by tests/local_syslog.rs; these are the rules spelled out).
    #[test]
    fn local_forms_read_as_journald_reads_them() {
        type Want<'a> = (u8, u8, Option<&'a [u8]>, Option<&'a [u8]>, &'a [u8]);
        let cases: &[(&[u8], Want)] = &[
            // Python's SysLogHandler: no tag, NUL-terminated.
            (b"<12>message\0", (1, 4, None, None, b"message")),
            (
                b"<14>pyapp: message\0",
                (1, 6, Some(b"pyapp"), None, b"message"),
            ),
            // Perl's Sys::Syslog: a trailing newline.
            (
                b"<13>Dec  4 06:00:00 perlapp[42]: hi\n",
                (1, 5, Some(b"perlapp"), Some(b"42"), b"hi"),
            ),
            // The tag ends at the last `[` before `]:`, and a `:` inside stays.
            (b"<13>a:b[x[1]: m", (1, 5, Some(b"a:b[x"), Some(b"1"), b"m")),
            (b"<13>a]: m", (1, 5, Some(b"a]"), None, b"m")),
            (b"<13>[7]: m", (1, 5, Some(b""), Some(b"7"), b"m")),
            (b"<13>: m", (1, 5, Some(b""), None, b"m")),
            // Only one whitespace after the tag is skipped; leading ones of an untagged
            // message after the PRI stay.
            (b"<13>t:   m", (1, 5, Some(b"t"), None, b"  m")),
            (b"<13>  m x", (1, 5, None, None, b"  m x")),
            // No word ending in ':' first: no identifier.
            (b"<13>hello world: x", (1, 5, None, None, b"hello world: x")),
            // Whitespace and NULs at the ends; an inner NUL ends the message.
            (b" \t<13>t: a b \r\n\0\0", (1, 5, Some(b"t"), None, b"a b")),
            (b"<13>t: a\0b", (1, 5, Some(b"t"), None, b"a")),
            (b"<13>", (1, 5, None, None, b"")),
            // Any 1-3 digit PRI; facility 0 (kern) writes no SYSLOG_FACILITY.
            (b"<0>k: m", (0, 0, Some(b"k"), None, b"m")),
            (b"<007>m", (0, 7, None, None, b"m")),
            (b"<999>1 bad pri", (124, 7, None, None, b"1 bad pri")),
            // The timestamp is skipped by shape, not by month name.
            (b"<13>Abc 99 99:99:99 t: m", (1, 5, Some(b"t"), None, b"m")),
            (
                b"<13>Dec  4 06:00:0 t: m",
                (1, 5, None, None, b"Dec  4 06:00:0 t: m"),
            ),
        ];
        for (input, (fac, sev, tag, pid, msg)) in cases {
            let m = p(input);
            let got = (
                m.facility,
                m.severity,
                m.tagged.then_some(m.tag),
                m.pid,
                m.msg,
            );
            assert_eq!(
                got,
                (*fac, *sev, *tag, *pid, *msg),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                m.format,
                Format::Local,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// The one shape read differently from journald: `HOST TAG: MSG` after a timestamp is
    /// Docker's `rfc3164` (and rsyslog's forwarding format), not an untagged message.
    #[test]
    fn hostname_form_wins_over_an_untagged_local_message() {
        let m = p(b"<13>Dec  4 06:00:00 host tag: msg");
        assert_eq!(m.format, Format::Rfc3164);
        assert_eq!((m.tag, m.msg), (&b"tag"[..], &b"msg"[..]));
        // Without a word ending in ':' second, it stays local.
        let m = p(b"<13>Dec  4 06:00:00 hello world");
        assert_eq!(m.format, Format::Local);
        assert_eq!(m.msg, b"hello world");
    }

    #[test]
    fn not_syslog_is_none() {
        for s in [
            &b""[..],
            b"hello",
            b"<>1 x",
            b"<1234>x",
            b"<30",
            b"<3a>x",
            b"  \n\0",
            b"\xff\xff\xff",
            b"\0<13>x",
        ] {
            assert!(parse(s).is_none(), "{:?}", String::from_utf8_lossy(s));
        }
    }

    /// The fuzz target's properties on a million seeded random datagrams built from syslog's
    /// own bytes (so PRIs, timestamps, tags and pids occur), runnable without cargo-fuzz.
    #[test]
    fn random_datagrams_never_panic_and_borrow_from_the_input() {
        let alphabet = b"<>0123456789 :[]-\t\n\r\0aZ.Jan1T";
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut d = Vec::new();
        for _ in 0..1_000_000 {
            d.clear();
            let len = next() % 40;
            for _ in 0..len {
                d.push(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
            if next() % 2 == 0 {
                d.splice(0..0, *b"<13>");
            }
            if let Some(m) = parse(&d) {
                assert!(m.severity <= 7 && m.facility <= 124);
                let range = d.as_ptr_range();
                for part in [m.tag, m.msg, m.pid.unwrap_or_default()] {
                    assert!(part.is_empty() || range.contains(&part.as_ptr()));
                }
                if m.format == Format::Local {
                    assert!(!m.msg.contains(&0), "{:?}", d.escape_ascii().to_string());
                }
            }
        }
    }

    #[test]
    fn never_panics_on_prefixes_of_valid_messages() {
        let full = b"<30>1 2026-11-22T13:32:28.396128Z vm 0414557846fd 3076 0414557846fd [x@1 a=\"b\"] hello\n";
        for i in 0..full.len() {
            let _ = parse(&full[..i]);
        }
        for full in [
            &b"<30>Nov 22 13:32:28 vm 0414557846fd[3076]: hello\n"[..],
            b"<13>Nov 22 13:32:28 app[12]: hello\0",
        ] {
            for i in 0..full.len() {
                let _ = parse(&full[..i]);
            }
        }
    }
}
