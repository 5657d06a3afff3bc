//! Writes entries into journald — any namespace — with journald's native protocol.
//!
//! libsystemd's `sd_journal_send` (and so the `systemd` crate) only reaches the default
//! socket and reports success when journald is not running; the suite needs namespaces (tests,
//! per-tenant journals) and needs to *know* when an entry did not go out. This crate speaks the
//! protocol directly: one datagram per entry, `KEY=VALUE\n` fields, the length-prefixed binary
//! form for values holding a newline, and the sealed-memfd path for entries too large for one
//! datagram.

use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The default journald native socket.
pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";

/// journald's rule for field names: 1..=64 bytes of `A-Z0-9_`, not starting with a digit or
/// `_` (client fields starting with `_` are trusted fields and dropped). journald drops an
/// invalid name *silently*, so check before sending.
pub fn valid_field_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && !b[0].is_ascii_digit()
        && b[0] != b'_'
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// Append one field to an entry being serialized.
///
/// Values without a newline use `KEY=VALUE\n`; values with one (or any binary value) use
/// `KEY\n<u64 LE length><bytes>\n`, which journald stores byte for byte.
pub fn encode_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    debug_assert!(
        valid_field_name(name),
        "invalid journal field name {name:?}"
    );
    out.extend_from_slice(name.as_bytes());
    if memchr_newline(value) {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn memchr_newline(v: &[u8]) -> bool {
    v.contains(&b'\n')
}

/// Serialize a whole entry.
pub fn encode<'a>(fields: impl IntoIterator<Item = (&'a str, &'a [u8])>, out: &mut Vec<u8>) {
    for (k, v) in fields {
        encode_field(out, k, v);
    }
}

/// Why an entry did not reach journald.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Nothing listens on the socket (journald stopped, or the namespace is not running).
    #[error("journald is not running at {path}: {source} (start it, or point --journal-socket at the running instance)")]
    NotRunning { path: PathBuf, source: io::Error },
    /// The socket's queue is full (only with a non-blocking socket).
    #[error("journald at {path} is not keeping up (its socket queue is full)")]
    WouldBlock { path: PathBuf },
    #[error("cannot write to journald at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl SendError {
    fn from_io(path: &Path, e: io::Error) -> SendError {
        let path = path.to_path_buf();
        match e.raw_os_error() {
            // ENOTCONN/EDESTADDRREQ: our connection to a journald that has since gone.
            Some(libc::ENOENT)
            | Some(libc::ECONNREFUSED)
            | Some(libc::ENOTDIR)
            | Some(libc::ENOTCONN)
            | Some(libc::EDESTADDRREQ) => SendError::NotRunning { path, source: e },
            Some(libc::EAGAIN) => SendError::WouldBlock { path },
            _ => SendError::Io { path, source: e },
        }
    }

    /// True when journald is absent (as opposed to slow or refusing one entry).
    pub fn is_not_running(&self) -> bool {
        matches!(self, SendError::NotRunning { .. })
    }
}

/// A client of one journald socket.
pub struct Journal {
    sock: UnixDatagram,
    path: PathBuf,
    /// Connected sockets skip the kernel's path lookup on every datagram; journald
    /// restarting breaks the connection, and the next send connects again.
    connected: AtomicBool,
    /// Whether the last send went over a connection (so a failure may be a stale one).
    was_connected: AtomicBool,
}

impl Journal {
    /// A client for the socket at `path` (nothing is sent yet, so this succeeds even when
    /// journald is down; sends report it).
    pub fn new(path: impl AsRef<Path>) -> io::Result<Journal> {
        let sock = UnixDatagram::unbound()?;
        let j = Journal {
            sock,
            path: path.as_ref().to_path_buf(),
            connected: AtomicBool::new(false),
            was_connected: AtomicBool::new(false),
        };
        // Like libsystemd: a large send buffer lets big entries go as one datagram. The kernel
        // caps it at net.core.wmem_max (doubled); larger entries go through a memfd.
        let _ = j.set_send_buffer(8 * 1024 * 1024);
        Ok(j)
    }

    /// Ask for a send buffer of `bytes`, which bounds the largest entry sent as one datagram;
    /// anything larger is sent through a sealed memfd. (Tests lower it to exercise that path
    /// on hosts whose `wmem_max` lets even multi-megabyte datagrams through.)
    pub fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        let size = bytes.min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: setsockopt with a valid fd and a pointer to a c_int of the right length.
        let r = unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Blocking (default) sends wait while journald's queue is full; non-blocking sends
    /// return [`SendError::WouldBlock`] instead.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.sock.set_nonblocking(nonblocking)
    }

    /// After a non-blocking send found journald's queue full: wait up to `timeout` for room
    /// (the socket is connected then, so this waits on journald's queue). Whether there is.
    pub fn wait_for_room(&self, timeout: std::time::Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
        r > 0
    }

    /// Send one entry given as fields.
    pub fn send(&self, fields: &[(&str, &[u8])]) -> Result<(), SendError> {
        let mut buf = Vec::with_capacity(256);
        encode(fields.iter().copied(), &mut buf);
        self.send_encoded(&buf)
    }

    /// Send one serialized entry, through a sealed memfd when it is too large for a datagram.
    pub fn send_encoded(&self, payload: &[u8]) -> Result<(), SendError> {
        match self.sock.send_to(payload, &self.path) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMSGSIZE) | Some(libc::ENOBUFS)) => {
                self.send_via_memfd(payload)
            }
            Err(e) => Err(SendError::from_io(&self.path, e)),
        }
    }

    /// Send several serialized entries with as few system calls as possible (`sendmmsg`).
    /// Returns how many were sent from the front of `payloads`; stops early at the first
    /// entry that fails (the error is returned when it is the first one).
    pub fn send_many(&self, payloads: &[&[u8]]) -> Result<usize, SendError> {
        match self.send_many_once(payloads) {
            // A connection to a journald that restarted: connect to the new one and retry
            // at once, rather than report an outage that is already over.
            Err(e) if e.is_not_running() && self.was_connected.swap(false, Ordering::Relaxed) => {
                self.send_many_once(payloads)
            }
            r => r,
        }
    }

    fn send_many_once(&self, payloads: &[&[u8]]) -> Result<usize, SendError> {
        if payloads.is_empty() {
            return Ok(0);
        }
        let connected = self.connected.load(Ordering::Relaxed)
            || (self.sock.connect(&self.path).is_ok() && {
                self.connected.store(true, Ordering::Relaxed);
                true
            });
        self.was_connected.store(connected, Ordering::Relaxed);
        let addr = sockaddr_un(&self.path).map_err(|e| SendError::from_io(&self.path, e))?;
        let mut iovs: Vec<libc::iovec> = payloads
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero mmsghdr is a valid empty header.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                if !connected {
                    h.msg_hdr.msg_name = &addr.0 as *const _ as *mut libc::c_void;
                    h.msg_hdr.msg_namelen = addr.1;
                }
                h.msg_hdr.msg_iov = iov as *mut libc::iovec;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: hdrs points to valid headers whose iovecs and address outlive the call.
        let n = unsafe {
            libc::sendmmsg(
                self.sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                hdrs.len() as libc::c_uint,
                0,
            )
        };
        if n > 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EMSGSIZE) | Some(libc::ENOBUFS)) {
            self.send_via_memfd(payloads[0])?;
            return Ok(1);
        }
        let err = SendError::from_io(&self.path, e);
        if err.is_not_running() {
            self.connected.store(false, Ordering::Relaxed);
        }
        Err(err)
    }

    /// journald's large-entry path: the entry in a sealed memfd, passed with SCM_RIGHTS
    /// in an otherwise empty datagram.
    fn send_via_memfd(&self, payload: &[u8]) -> Result<(), SendError> {
        let err = |e: io::Error| SendError::from_io(&self.path, e);
        // SAFETY: memfd_create with a NUL-terminated name; we own the returned fd.
        let fd = unsafe {
            libc::memfd_create(
                c"journal-native".as_ptr(),
                libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh, valid descriptor owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut file = std::fs::File::from(owned);
        file.write_all(payload).map_err(err)?;
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on our own valid fd.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        let addr = sockaddr_un(&self.path).map_err(err)?;
        let fds = [file.as_raw_fd()];
        let cmsg_space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(&fds) as u32) } as usize;
        let mut cbuf = vec![0u8; cmsg_space];
        let iov = [IoSlice::new(&[])];
        // SAFETY: a zeroed msghdr filled with pointers to buffers that outlive sendmsg; the
        // control message is built with the CMSG_* macros over a buffer of CMSG_SPACE bytes.
        let r = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = &addr.0 as *const _ as *mut libc::c_void;
            msg.msg_namelen = addr.1;
            msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = 0;
            msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = cmsg_space as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(&fds) as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr() as *const u8,
                libc::CMSG_DATA(c),
                std::mem::size_of_val(&fds),
            );
            libc::sendmsg(self.sock.as_raw_fd(), &msg, 0)
        };
        if r < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        Ok(())
    }
}

fn sockaddr_un(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path too long: {}", path.display()),
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names() {
        assert!(valid_field_name("MESSAGE"));
        assert!(valid_field_name("CONTAINER_ID_FULL"));
        assert!(!valid_field_name("message"));
        assert!(!valid_field_name("_PID"));
        assert!(!valid_field_name("1ABC"));
        assert!(!valid_field_name(&"A".repeat(65)));
    }

    #[test]
    fn encodes_text_and_binary_forms() {
        let mut out = Vec::new();
        encode_field(&mut out, "A", b"plain");
        encode_field(&mut out, "B", b"two\nlines");
        let mut want = b"A=plain\nB\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(out, want);
    }
}
