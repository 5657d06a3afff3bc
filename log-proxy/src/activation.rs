//! systemd socket activation: the listening socket inherited through `LISTEN_FDS`
//! (`sd_listen_fds(3)`) instead of bound by log-proxy.
//!
//! Why: when systemd owns the datagram socket (`log-proxy.socket`), it outlives the process.
//! Lines Docker sends while log-proxy restarts or is upgraded wait in the kernel's socket
//! queue and are read by the next process; with a socket of its own, the file would be
//! unlinked and recreated and Docker's sends in between would fail.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use anyhow::bail;

use crate::intake::Listener;

/// First inherited descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// The socket systemd passed to this process, if it was started that way. Call it before
/// any thread starts: it removes `LISTEN_*` from the environment.
///
/// `Ok(None)` when `LISTEN_PID`/`LISTEN_FDS` are absent or meant for another process (then
/// log-proxy binds its own socket). An error when the inherited socket cannot be served —
/// several sockets, or a kind log-proxy does not speak — naming the unit setting to change.
pub fn inherited() -> anyhow::Result<Option<Listener>> {
    let vars = (
        std::env::var("LISTEN_PID").ok(),
        std::env::var("LISTEN_FDS").ok(),
    );
    // As sd_listen_fds(3) does with unset_environment: the variables describe this process
    // only, and no program log-proxy might start should take fd 3 for a socket. Called from
    // main before any thread exists, so changing the environment races with nothing.
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let Some(n) = fds_for_us(vars.0.as_deref(), vars.1.as_deref(), std::process::id())? else {
        return Ok(None);
    };
    if n != 1 {
        bail!(
            "systemd passed {n} sockets (LISTEN_FDS={n}); log-proxy serves exactly one: \
             keep a single ListenDatagram= (or ListenStream=) line in log-proxy.socket"
        );
    }
    listener(FIRST_FD).map(Some)
}

/// How many descriptors systemd passed to process `pid`, following `sd_listen_fds(3)`: none
/// unless `LISTEN_PID` names this process (the variables may be inherited by mistake).
fn fds_for_us(pid: Option<&str>, fds: Option<&str>, me: u32) -> anyhow::Result<Option<u32>> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(me) {
        return Ok(None);
    }
    match fds.trim().parse::<u32>() {
        Ok(0) => Ok(None),
        Ok(n) => Ok(Some(n)),
        Err(_) => bail!("LISTEN_FDS={fds:?} is not a number of sockets; it is set by systemd socket activation and should not be set by hand"),
    }
}

/// Wrap inherited descriptor `fd` as a listener of the kind it is.
fn listener(fd: RawFd) -> anyhow::Result<Listener> {
    let ty = sockopt(fd, libc::SO_TYPE).map_err(|e| {
        anyhow::anyhow!("LISTEN_FDS says fd {fd} was passed, but it is not a socket ({e})")
    })?;
    let domain = sockopt(fd, libc::SO_DOMAIN)?;
    if domain == libc::AF_UNIX && unix_name(fd)?.is_none() {
        bail!(
            "fd {fd}, passed as a listening socket (LISTEN_FDS), is an unbound unix socket: \
             not one systemd created; start log-proxy from log-proxy.socket or without LISTEN_FDS"
        );
    }
    // SAFETY: `fd` is ours from here on: systemd passed it to this process (LISTEN_PID
    // matched) and nothing else in the process uses descriptor 3 by number.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_cloexec(fd);
    // The socket file (if any) belongs to systemd: `None` paths so log-proxy never unlinks it.
    match (domain, ty) {
        (libc::AF_UNIX | libc::AF_INET | libc::AF_INET6, libc::SOCK_DGRAM) => {
            Ok(Listener::Dgram(Box::new(owned), None))
        }
        (libc::AF_UNIX, libc::SOCK_STREAM) if sockopt(fd, libc::SO_ACCEPTCONN)? == 1 => {
            Ok(Listener::UnixStream(UnixListener::from(owned), None))
        }
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM)
            if sockopt(fd, libc::SO_ACCEPTCONN)? == 1 =>
        {
            Ok(Listener::Tcp(std::net::TcpListener::from(owned)))
        }
        _ => bail!(
            "the socket systemd passed (fd {fd}, domain {domain}, type {ty}) is neither a datagram \
             socket nor a listening stream socket: use ListenDatagram= or ListenStream= with \
             Accept=no in log-proxy.socket"
        ),
    }
}

/// The path (or abstract name) a unix socket is bound to; `None` when unbound.
fn unix_name(fd: RawFd) -> anyhow::Result<Option<String>> {
    // SAFETY: an all-zero sockaddr_un is valid; getsockname writes at most `len` bytes.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let r = unsafe { libc::getsockname(fd, &mut addr as *mut _ as *mut libc::sockaddr, &mut len) };
    if r < 0 {
        bail!(
            "cannot read the address of inherited fd {fd}: {}",
            std::io::Error::last_os_error()
        );
    }
    let n = (len as usize).saturating_sub(std::mem::size_of::<libc::sa_family_t>());
    if n == 0 {
        return Ok(None);
    }
    let bytes: Vec<u8> = addr.sun_path[..n.min(addr.sun_path.len())]
        .iter()
        .map(|c| *c as u8)
        .take_while(|b| *b != 0)
        .collect();
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

fn sockopt(fd: RawFd, opt: libc::c_int) -> std::io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &mut v as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}

/// Inherited descriptors arrive without close-on-exec; log-proxy starts no programs, but
/// a socket must not leak into one if it ever does.
fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_for_this_process() {
        assert_eq!(fds_for_us(None, None, 7).unwrap(), None);
        assert_eq!(fds_for_us(Some("7"), None, 7).unwrap(), None);
        assert_eq!(fds_for_us(Some("8"), Some("1"), 7).unwrap(), None);
        assert_eq!(fds_for_us(Some("7"), Some("0"), 7).unwrap(), None);
        assert_eq!(fds_for_us(Some("7"), Some("1"), 7).unwrap(), Some(1));
        assert_eq!(fds_for_us(Some("7"), Some("2"), 7).unwrap(), Some(2));
        let e = fds_for_us(Some("7"), Some("x"), 7).unwrap_err().to_string();
        assert!(e.contains("LISTEN_FDS=\"x\""), "{e}");
    }
}
