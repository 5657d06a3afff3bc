//! Trusted senders: on a unix socket the kernel tells each line's sender (`SO_PASSCRED` for
//! datagrams, `SO_PEERCRED` for streams). Docker's daemon writes as root (or, rootless, as
//! the owner of its API socket); any other local user who can reach the socket could write
//! lines into any container's stream. Lines from a uid not allowed (`--allow-uid`) are not
//! written as container lines: they are counted per uid and reported once a minute in
//! journald under `SYSLOG_IDENTIFIER=log-proxy`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which uids may write container lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowUids {
    /// `--allow-uid any`: no check (and no credentials asked of the kernel).
    Any,
    Only(Vec<u32>),
}

impl AllowUids {
    pub fn allows(&self, uid: u32) -> bool {
        match self {
            AllowUids::Any => true,
            AllowUids::Only(u) => u.contains(&uid),
        }
    }

    /// The default: root and the owner of Docker's API socket (rootless Docker runs as a user).
    pub fn default_for(docker_host: &str) -> AllowUids {
        use std::os::unix::fs::MetadataExt;
        let mut uids = vec![0];
        if let Some(path) = docker_host.strip_prefix("unix://") {
            if let Ok(m) = std::fs::metadata(path) {
                if m.uid() != 0 {
                    uids.push(m.uid());
                }
            }
        }
        AllowUids::Only(uids)
    }
}

impl FromStr for AllowUids {
    type Err = String;
    fn from_str(s: &str) -> Result<AllowUids, String> {
        if s.trim() == "any" {
            return Ok(AllowUids::Any);
        }
        let mut uids = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let uid = match part.parse::<u32>() {
                Ok(u) => u,
                Err(_) => user_uid(part).ok_or_else(|| {
                    format!("--allow-uid: {part:?} is neither a uid nor a known user name (give uids like 0,1000, or 'any')")
                })?,
            };
            uids.push(uid);
        }
        if uids.is_empty() {
            return Err("--allow-uid is empty: give uids like 0,1000, or 'any'".into());
        }
        Ok(AllowUids::Only(uids))
    }
}

impl fmt::Display for AllowUids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowUids::Any => f.write_str("any"),
            AllowUids::Only(u) => {
                let s: Vec<String> = u.iter().map(u32::to_string).collect();
                f.write_str(&s.join(","))
            }
        }
    }
}

/// A user name's uid, from the passwd database.
fn user_uid(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam with a NUL-terminated name; the result is read before any other call.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    (!pw.is_null()).then(|| unsafe { (*pw).pw_uid })
}

/// A sender the kernel vouched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    pub uid: u32,
    pub pid: i32,
}

/// Ask the kernel to attach each datagram's sender (`SO_PASSCRED`).
pub fn pass_credentials(fd: std::os::fd::BorrowedFd<'_>) -> nix::Result<()> {
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::PassCred, &true)
}

/// The peer of a connected unix stream (`SO_PEERCRED`).
pub fn peer(fd: std::os::fd::BorrowedFd<'_>) -> Option<Sender> {
    let c = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    Some(Sender {
        uid: c.uid(),
        pid: c.pid(),
    })
}

/// Room for one `SCM_CREDENTIALS` control message.
pub fn control_len() -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::ucred>() as u32) as usize }
}

/// The sender in a received message's control data, if the kernel attached one.
///
/// # Safety
/// `hdr` must be a message header filled by `recvmsg`/`recvmmsg`, its control buffer alive.
pub unsafe fn sender_of(hdr: &libc::msghdr) -> Option<Sender> {
    let mut c = libc::CMSG_FIRSTHDR(hdr);
    while !c.is_null() {
        if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
            let cred = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::ucred);
            return Some(Sender {
                uid: cred.uid,
                pid: cred.pid,
            });
        }
        c = libc::CMSG_NXTHDR(hdr, c);
    }
    None
}

/// Lines refused from senders not allowed: counted per uid (for the metric), and the
/// report due once a minute.
#[derive(Default)]
pub struct Refusals {
    inner: Mutex<RefusalState>,
}

#[derive(Default)]
struct RefusalState {
    /// Every refusal since start, per uid (`log_proxy_untrusted_lines_total{uid}`).
    total: BTreeMap<u32, u64>,
    /// Since the last report: per uid, the lines and the last pid seen.
    pending: BTreeMap<u32, (u64, i32)>,
    last_report: Option<Instant>,
}

/// How often the refusals are reported in journald at most.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

impl Refusals {
    /// Count `n` lines refused from `sender`. Rare (never in normal operation): a lock is fine.
    pub fn note(&self, sender: Sender, n: u64) {
        let mut s = self.inner.lock().unwrap();
        *s.total.entry(sender.uid).or_default() += n;
        let p = s.pending.entry(sender.uid).or_default();
        p.0 += n;
        p.1 = sender.pid;
    }

    /// Every refusal since start, per uid.
    pub fn totals(&self) -> Vec<(u32, u64)> {
        let s = self.inner.lock().unwrap();
        s.total.iter().map(|(u, n)| (*u, *n)).collect()
    }

    /// The warning to write now, if refusals are pending and the last report is a minute
    /// old (the first one is written at once).
    pub fn due(&self, now: Instant) -> Option<String> {
        let mut s = self.inner.lock().unwrap();
        if s.pending.is_empty() || s.last_report.is_some_and(|t| now < t + REPORT_EVERY) {
            return None;
        }
        s.last_report = Some(now);
        let parts: Vec<String> = std::mem::take(&mut s.pending)
            .into_iter()
            .map(|(uid, (n, pid))| format!("{n} from uid {uid} (pid {pid})"))
            .collect();
        Some(format!(
            "log-proxy: refused syslog lines from senders that are not allowed to write container logs: {}; \
             they were not written (allow a uid with --allow-uid)",
            parts.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uids_names_and_any() {
        assert_eq!("0,1000".parse(), Ok(AllowUids::Only(vec![0, 1000])));
        assert_eq!("root".parse(), Ok(AllowUids::Only(vec![0])));
        assert_eq!("any".parse(), Ok(AllowUids::Any));
        assert!("nosuchuser-xyz".parse::<AllowUids>().is_err());
        assert!("".parse::<AllowUids>().is_err());
    }

    #[test]
    fn reports_once_a_minute_with_counts() {
        let r = Refusals::default();
        let t0 = Instant::now();
        r.note(Sender { uid: 65534, pid: 7 }, 3);
        let first = r.due(t0).unwrap();
        assert!(first.contains("3 from uid 65534 (pid 7)"), "{first}");
        r.note(Sender { uid: 65534, pid: 8 }, 2);
        assert_eq!(r.due(t0 + Duration::from_secs(30)), None);
        let second = r.due(t0 + REPORT_EVERY).unwrap();
        assert!(second.contains("2 from uid 65534 (pid 8)"), "{second}");
        assert_eq!(r.totals(), vec![(65534, 5)]);
    }
}
