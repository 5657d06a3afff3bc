//! Receiving syslog messages: `unixgram://`, `udp://` (one message per datagram, read in bulk
//! with `recvmmsg`) and `unix://`, `tcp://` streams (newline or RFC 6587 octet-counting
//! framing, detected per frame). Every transport hands the processor [`Messages`] batches.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crossbeam_channel::Sender;

use crate::trust::AllowUids;

/// Largest datagram accepted whole (more than a unix or UDP sender can send by default);
/// longer ones are cut, marked and counted. Docker never sends more than 16 KiB of line.
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Largest stream frame accepted whole.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Appended to a cut message so the reader sees the cut, not only the operator's metrics.
pub const CUT_MARKER: &[u8] = b" [log-proxy: message cut, too long]";
const SLOTS: usize = 32;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unixgram(PathBuf),
    Unix(PathBuf),
    Udp(SocketAddr),
    Tcp(SocketAddr),
}

impl FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Address, String> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            format!("syslog address {s:?} has no scheme: use unixgram:///path, unix:///path, udp://host:port or tcp://host:port")
        })?;
        let net = |r: &str| {
            r.parse::<SocketAddr>().map_err(|e| {
                format!("syslog address {s:?}: {r:?} is not HOST:PORT with a numeric host ({e})")
            })
        };
        match scheme {
            "unixgram" => Ok(Address::Unixgram(PathBuf::from(rest))),
            "unix" => Ok(Address::Unix(PathBuf::from(rest))),
            "udp" => net(rest).map(Address::Udp),
            "tcp" => net(rest).map(Address::Tcp),
            other => Err(format!(
                "syslog address {s:?}: unsupported scheme {other:?} (use unixgram, unix, udp or tcp)"
            )),
        }
    }
}

/// A batch of received messages, back to back.
#[derive(Default, Debug)]
pub struct Messages {
    pub buf: Vec<u8>,
    pub ends: Vec<usize>,
    /// Messages cut at [`MAX_MESSAGE`].
    pub truncated: u64,
    /// Each message's sender pid, where the kernel told it (`SO_PASSCRED` on a unix
    /// datagram socket; 0: not known). Empty when no credentials are asked for.
    pub pids: Vec<u32>,
}

impl Messages {
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&e| {
            let s = &self.buf[start..e];
            start = e;
            s
        })
    }

    pub fn push(&mut self, m: &[u8]) {
        self.buf.extend_from_slice(m);
        self.ends.push(self.buf.len());
    }

    /// The sender pid of message `i`, when known.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.pids.get(i).copied().filter(|&p| p != 0)
    }

    /// Push a message that was cut, with the visible marker (before a trailing newline).
    fn push_marked(&mut self, m: &[u8]) {
        self.buf
            .extend_from_slice(m.strip_suffix(b"\n").unwrap_or(m));
        self.buf.extend_from_slice(CUT_MARKER);
        self.ends.push(self.buf.len());
    }
}

/// Counters the intake keeps.
#[derive(Default)]
pub struct IntakeStats {
    /// Every message received, refused ones included.
    pub received: AtomicU64,
    pub truncated: AtomicU64,
    /// Messages from senders not allowed (`--allow-uid`), not written as container lines.
    pub refused: crate::trust::Refusals,
}

/// A bound listener, ready before `serve` (so readiness can be signalled truthfully).
/// A [`SocketFile`] is the socket file log-proxy created, removed when the listener is
/// dropped; inherited sockets ([`crate::activation`]) have none.
pub enum Listener {
    Dgram(Box<dyn AsRawFd + Send>, Option<SocketFile>),
    UnixStream(UnixListener, Option<SocketFile>),
    Tcp(TcpListener),
}

/// The socket file this process bound. Dropping it unlinks the path — only while the path
/// is still that same file (device and inode): a socket someone else bound there since
/// (another instance after ours was declared stale, an operator's replacement) is never
/// removed by us. Held by whatever owns the socket, so a start that fails after binding
/// removes what it bound.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    fn created(path: &Path) -> io::Result<SocketFile> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            id: (m.dev(), m.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Why a socket path cannot be bound; all are the operator's to fix (exit 2).
fn in_use(addr: &str, path: &Path) -> anyhow::Error {
    let pid = serving_pid(path)
        .map(|p| format!(" (pid {p})"))
        .unwrap_or_default();
    daemon_kit::config_error(format!(
        "{addr} is being served by another process{pid}; stop it first or choose another \
         --syslog-address"
    ))
}

/// Make `p` free to bind: its directory must exist (it is not created: a typo must not
/// create directories), and a socket file there must be stale. A socket something still
/// serves is never taken over — that would cut every container on the host off from the
/// running proxy, which would go on listening on a file nobody can reach.
fn claim(addr: &str, p: &Path, stream: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(daemon_kit::config_error(format!(
            "cannot listen on {addr}: the directory {} does not exist; create it (or choose \
             another --syslog-address)",
            dir.display()
        )));
    }
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(daemon_kit::config(e).context(format!("cannot look at {}", p.display())))
        }
    };
    if !meta.file_type().is_socket() {
        return Err(daemon_kit::config_error(format!(
            "cannot listen on {addr}: {} exists and is not a socket; remove it or choose \
             another --syslog-address",
            p.display()
        )));
    }
    // Probe: a server answers a connect (a datagram socket accepts a zero-length connect);
    // a stale file refuses it.
    let answer = if stream {
        std::os::unix::net::UnixStream::connect(p).map(drop)
    } else {
        UnixDatagram::unbound().and_then(|s| s.connect(p))
    };
    match answer {
        Ok(()) => Err(in_use(addr, p)),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            tracing::info!(socket = %p.display(), "replacing a stale socket file (nothing serves it)");
            std::fs::remove_file(p)
                .map_err(daemon_kit::config)
                .with_context(|| format!("cannot remove the stale socket {}", p.display()))
        }
        // A datagram socket of the other type, or a stream one probed as datagram: in use.
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => Err(in_use(addr, p)),
        Err(e) => Err(daemon_kit::config(e))
            .with_context(|| format!("cannot tell whether {} is still being served", p.display())),
    }
}

/// The pid of a process holding the unix socket bound at `path`, from /proc (best effort:
/// another user's process is only visible to root).
fn serving_pid(path: &Path) -> Option<u32> {
    let want = path.as_os_str().as_encoded_bytes();
    let table = std::fs::read("/proc/net/unix").ok()?;
    // "Num RefCount Protocol Flags Type St Inode Path": a listening socket with our path.
    let inodes: Vec<String> = table
        .split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&[u8]> = line
                .split(|&b| b == b' ')
                .filter(|c| !c.is_empty())
                .collect();
            (cols.len() >= 8 && cols[7] == want)
                .then(|| String::from_utf8_lossy(cols[6]).into_owned())
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let me = std::process::id();
    for proc_dir in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_dir
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if inodes.iter().any(|i| t == format!("socket:[{i}]")) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Bind `addr`. A stale socket file from a previous run is replaced, a served one refused;
/// `mode` sets the file's permissions.
pub fn bind(addr: &Address, mode: Option<u32>) -> anyhow::Result<Listener> {
    let chmod = |p: &Path| -> anyhow::Result<()> {
        if let Some(m) = mode {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m))
                .map_err(daemon_kit::config)
                .with_context(|| format!("cannot set mode {m:o} on {}", p.display()))?;
        }
        Ok(())
    };
    Ok(match addr {
        Address::Unixgram(p) => {
            let shown = format!("unixgram://{}", p.display());
            claim(&shown, p, false)?;
            let s = UnixDatagram::bind(p)
                .map_err(daemon_kit::config)
                .with_context(|| format!("cannot listen on {shown}"))?;
            let file = SocketFile::created(p)?;
            set_rcvbuf(s.as_raw_fd());
            chmod(p)?;
            Listener::Dgram(Box::new(s), Some(file))
        }
        Address::Udp(a) => {
            let s = UdpSocket::bind(a)
                .map_err(daemon_kit::config)
                .with_context(|| format!("cannot listen on udp://{a}"))?;
            set_rcvbuf(s.as_raw_fd());
            Listener::Dgram(Box::new(s), None)
        }
        Address::Unix(p) => {
            let shown = format!("unix://{}", p.display());
            claim(&shown, p, true)?;
            let l = UnixListener::bind(p)
                .map_err(daemon_kit::config)
                .with_context(|| format!("cannot listen on {shown}"))?;
            let file = SocketFile::created(p)?;
            chmod(p)?;
            Listener::UnixStream(l, Some(file))
        }
        Address::Tcp(a) => Listener::Tcp(
            TcpListener::bind(a)
                .map_err(daemon_kit::config)
                .with_context(|| format!("cannot listen on tcp://{a}"))?,
        ),
    })
}

/// Whether `fd` is a unix-domain socket (only those carry senders' credentials).
fn is_unix(fd: i32) -> bool {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a c_int of the size given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            &mut domain as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    r == 0 && domain == libc::AF_UNIX
}

fn set_rcvbuf(fd: i32) {
    let size: libc::c_int = 8 * 1024 * 1024;
    // SAFETY: setsockopt on a valid fd with a c_int value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn set_rcvtimeo(fd: i32, d: Duration) {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt on a valid fd with a timeval value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

/// Receive until `stop` is set, then remove the socket file (if ours). Blocks the calling thread.
pub fn serve(
    listener: Listener,
    out: Sender<Messages>,
    stop: Arc<AtomicBool>,
    stats: Arc<IntakeStats>,
    allow: AllowUids,
) -> anyhow::Result<()> {
    match listener {
        Listener::Dgram(sock, file) => {
            // Drained at stop only when the socket is ours (a file we created); the file
            // goes when `file` is dropped, after the last read.
            let rx = DgramReceiver::new(sock.as_raw_fd()).trusting(allow)?;
            serve_dgram(rx, &out, &stop, &stats, file.is_some())
        }
        Listener::UnixStream(l, _file) => {
            l.set_nonblocking(true)?;
            serve_stream(
                || {
                    accepted(l.accept(), |s| {
                        let peer = crate::trust::peer(s.as_fd());
                        let pid = peer.map_or(0, |p| p.pid.max(0) as u32);
                        (peer.filter(|p| !allow.allows(p.uid)), pid)
                    })
                },
                &out,
                &stop,
                &stats,
            )
        }
        Listener::Tcp(l) => {
            l.set_nonblocking(true)?;
            serve_stream(|| accepted(l.accept(), |_| (None, 0)), &out, &stop, &stats)
        }
    }
}

/// A connection, the sender it is refused for (not an allowed uid), and the peer's pid
/// (`SO_PEERCRED` of a unix stream; 0: not known), which keys its untagged lines.
type Accepted = (Box<dyn StreamConn>, Option<crate::trust::Sender>, u32);

/// A non-blocking accept's result: a connection, or `None` when none is waiting.
fn accepted<S: StreamConn + 'static, A>(
    r: io::Result<(S, A)>,
    refused: impl Fn(&S) -> (Option<crate::trust::Sender>, u32),
) -> io::Result<Option<Accepted>> {
    match r {
        Ok((s, _)) => {
            let (refused, pid) = refused(&s);
            Ok(Some((Box::new(s), refused, pid)))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Datagrams, read `SLOTS` at a time with `recvmmsg`, on a dedicated thread.
fn serve_dgram(
    mut rx: DgramReceiver,
    out: &Sender<Messages>,
    stop: &AtomicBool,
    stats: &IntakeStats,
    drain: bool,
) -> anyhow::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        if let Some(batch) = rx.recv(stats)? {
            if out.send(batch).is_err() {
                return Ok(());
            }
        }
    }
    if !drain {
        return Ok(());
    }
    rx.drain(stats, |m| {
        let _ = out.send(m);
    })
}

/// Receives batches of datagrams from a bound socket; the caller owns the loop (the
/// processor runs it itself for datagram listeners, saving a thread hand-off per batch).
pub struct DgramReceiver {
    fd: i32,
    // `hdrs` point into `iovs`, which point into `slots`, and into `control`: heap buffers
    // that never move.
    slots: Vec<u8>,
    _iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    control: Vec<u8>,
    /// Who may write container lines; `Any` asks the kernel for no credentials.
    allow: AllowUids,
}

// SAFETY: the raw pointers only point into the struct's own heap buffers.
unsafe impl Send for DgramReceiver {}

impl DgramReceiver {
    pub fn new(fd: i32) -> DgramReceiver {
        // The timeout lets the loop notice shutdown and run its clock; it costs nothing while
        // lines flow.
        set_rcvtimeo(fd, Duration::from_millis(100));
        let mut slots = vec![0u8; SLOTS * MAX_MESSAGE];
        let mut iovs: Vec<libc::iovec> = slots
            .chunks_mut(MAX_MESSAGE)
            .map(|c| libc::iovec {
                iov_base: c.as_mut_ptr() as *mut libc::c_void,
                iov_len: c.len(),
            })
            .collect();
        let hdrs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero mmsghdr is valid; we point it at one iovec.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov as *mut libc::iovec;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        DgramReceiver {
            fd,
            slots,
            _iovs: iovs,
            hdrs,
            control: Vec::new(),
            allow: AllowUids::Any,
        }
    }

    /// Take only datagrams from senders `allow` names (the kernel attaches each sender with
    /// `SO_PASSCRED`); others are counted in [`IntakeStats::refused`], not handed on.
    /// Meaningless for UDP, which has no credentials: leave it at `Any` there.
    pub fn trusting(mut self, allow: AllowUids) -> anyhow::Result<DgramReceiver> {
        if allow == AllowUids::Any || !is_unix(self.fd) {
            return Ok(self);
        }
        // SAFETY: the receiver's socket stays open for the receiver's life.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        crate::trust::pass_credentials(fd)
            .context("cannot ask the kernel for senders' credentials (SO_PASSCRED)")?;
        let each = crate::trust::control_len();
        self.control = vec![0u8; SLOTS * each];
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_control = self.control[i * each..].as_mut_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_controllen = each as _;
        }
        self.allow = allow;
        Ok(self)
    }

    /// At stop, for a socket log-proxy bound itself: hand `each` batch the kernel still holds
    /// (until the queue is empty; a deadline bounds a sender faster than the reads), then
    /// refuse new datagrams — a unix sender's next send fails with EPIPE, which it sees — so
    /// the time spent flushing before the socket closes accepts nothing that would be dropped
    /// with it. (An inherited socket is not drained: it outlives this process.)
    pub fn drain(
        &mut self,
        stats: &IntakeStats,
        mut each: impl FnMut(Messages),
    ) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_millis(250);
        while std::time::Instant::now() < deadline {
            match self.receive(stats, libc::MSG_DONTWAIT)? {
                Some(m) => each(m),
                None => break,
            }
        }
        // Not before the reads: after SHUT_RD a read of an empty queue returns an empty
        // "datagram" at once, which cannot be told from a real empty one.
        // SAFETY: shutdown(2) on the socket this receiver reads.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RD) };
        Ok(())
    }

    /// Wait (up to the receive timeout) for datagrams; `None` when none came.
    pub fn recv(&mut self, stats: &IntakeStats) -> anyhow::Result<Option<Messages>> {
        self.receive(stats, libc::MSG_WAITFORONE)
    }

    /// `recv` with the first read's `flags`: `MSG_WAITFORONE` waits up to the receive
    /// timeout, `MSG_DONTWAIT` takes only what is queued.
    fn receive(
        &mut self,
        stats: &IntakeStats,
        flags: libc::c_int,
    ) -> anyhow::Result<Option<Messages>> {
        let fd = self.fd;
        // SAFETY: the headers point at iovecs over `slots`, all alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                SLOTS as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(e).context("receiving syslog datagrams"),
            };
        }
        // Take whatever else is queued already without waiting: with a short socket queue
        // (net.unix.max_dgram_qlen is 10 on some hosts) the first call returns few datagrams.
        let mut n = n as usize;
        while n < SLOTS {
            // SAFETY: as above, for the headers from index n on.
            let more = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().add(n),
                    (SLOTS - n) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if more <= 0 {
                break;
            }
            n += more as usize;
        }
        let mut batch = Messages {
            buf: Vec::with_capacity(n * 160),
            ends: Vec::with_capacity(n),
            truncated: 0,
            pids: if self.control.is_empty() {
                Vec::new()
            } else {
                Vec::with_capacity(n)
            },
        };
        let each = crate::trust::control_len();
        for (i, h) in self.hdrs.iter_mut().take(n).enumerate() {
            let len = h.msg_len as usize;
            let m = &self.slots[i * MAX_MESSAGE..i * MAX_MESSAGE + len.min(MAX_MESSAGE)];
            if !self.control.is_empty() {
                // SAFETY: the header was filled by recvmmsg; its control buffer is ours.
                let sender = unsafe { crate::trust::sender_of(&h.msg_hdr) };
                // The kernel resets the length to what it wrote: give the room back.
                h.msg_hdr.msg_controllen = each as _;
                // The kernel attaches a sender at send time once SO_PASSCRED is on; one
                // queued before (an inherited socket's backlog from while log-proxy was
                // stopped, unless the unit sets PassCredentials=) reads as pid 0 with the
                // overflow uid: no sender known, and it reached the socket through its
                // permissions, so it is taken.
                if let Some(sender) = sender.filter(|s| s.pid != 0 && !self.allow.allows(s.uid)) {
                    stats.refused.note(sender, 1);
                    h.msg_hdr.msg_flags = 0;
                    continue;
                }
                // Untagged lines get a budget per sending process (see `proxy`).
                batch.pids.push(sender.map_or(0, |s| s.pid.max(0) as u32));
            }
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                batch.truncated += 1;
                batch.push_marked(m);
            } else {
                batch.push(m);
            }
            h.msg_hdr.msg_flags = 0;
        }
        stats.received.fetch_add(n as u64, Ordering::Relaxed);
        stats
            .truncated
            .fetch_add(batch.truncated, Ordering::Relaxed);
        Ok(Some(batch))
    }
}

/// A connected stream.
trait StreamConn: Read + Send + AsRawFd {
    fn set_timeout(&self, d: Duration) -> io::Result<()>;
}
impl StreamConn for std::os::unix::net::UnixStream {
    fn set_timeout(&self, d: Duration) -> io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(Some(d))
    }
}
impl StreamConn for std::net::TcpStream {
    fn set_timeout(&self, d: Duration) -> io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(Some(d))
    }
}

/// Streams: one thread per connection (Docker holds one connection per container).
fn serve_stream(
    mut accept: impl FnMut() -> io::Result<Option<Accepted>>,
    out: &Sender<Messages>,
    stop: &Arc<AtomicBool>,
    stats: &Arc<IntakeStats>,
) -> anyhow::Result<()> {
    let mut conns = Vec::new();
    let spawn = |(conn, refused, pid): Accepted| {
        let (out, stop, stats) = (out.clone(), stop.clone(), stats.clone());
        std::thread::spawn(move || read_stream(conn, refused, pid, out, stop, stats))
    };
    while !stop.load(Ordering::Relaxed) {
        match accept()? {
            Some(a) => conns.push(spawn(a)),
            None => std::thread::sleep(Duration::from_millis(20)),
        }
        conns.retain(|h| !h.is_finished());
    }
    // Connections still waiting in the listen queue at stop hold lines their senders
    // consider sent: read them too (each reader takes what is buffered, to EOF or until the
    // stream goes quiet).
    while let Some(a) = accept()? {
        conns.push(spawn(a));
    }
    for c in conns {
        let _ = c.join();
    }
    Ok(())
}

/// Read one connection's frames; those of a `refused` sender are counted, not handed on.
/// Every frame carries the peer's `pid` (when known).
fn read_stream(
    mut conn: Box<dyn StreamConn>,
    refused: Option<crate::trust::Sender>,
    pid: u32,
    out: Sender<Messages>,
    stop: Arc<AtomicBool>,
    stats: Arc<IntakeStats>,
) {
    let hand_on = |mut batch: Messages| -> bool {
        if let Some(sender) = refused {
            stats.refused.note(sender, batch.ends.len() as u64);
            return true;
        }
        if pid != 0 {
            batch.pids = vec![pid; batch.ends.len()];
        }
        out.send(batch).is_ok()
    };
    let _ = conn.set_timeout(Duration::from_millis(100));
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        let mut batch = Messages::default();
        framer.feed(&buf[..n], &mut batch);
        if !batch.ends.is_empty() {
            stats
                .received
                .fetch_add(batch.ends.len() as u64, Ordering::Relaxed);
            stats
                .truncated
                .fetch_add(batch.truncated, Ordering::Relaxed);
            if !hand_on(batch) {
                return;
            }
        }
    }
    // A last frame without its newline is still a line.
    let mut batch = Messages::default();
    framer.finish(&mut batch);
    if !batch.ends.is_empty() {
        stats
            .received
            .fetch_add(batch.ends.len() as u64, Ordering::Relaxed);
        hand_on(batch);
    }
}

/// Splits a byte stream into syslog messages: RFC 6587 octet counting (`LEN SP MSG`) when a
/// frame starts with a digit, else newline-terminated — decided per frame, as Docker mixes
/// neither but relays may.
#[derive(Default)]
pub struct Framer {
    pending: Vec<u8>,
    /// Bytes at the start of `pending` already searched for a newline in vain, so a long
    /// line arriving in many reads is scanned once, not once per read.
    scanned: usize,
}

impl Framer {
    pub fn feed(&mut self, data: &[u8], out: &mut Messages) {
        self.pending.extend_from_slice(data);
        let mut pos = 0;
        loop {
            let rest = &self.pending[pos..];
            if rest.is_empty() {
                break;
            }
            if rest[0].is_ascii_digit() {
                if let Some(sp) = rest.iter().take(11).position(|&c| c == b' ') {
                    if let Ok(len) = std::str::from_utf8(&rest[..sp])
                        .unwrap_or("x")
                        .parse::<usize>()
                    {
                        if rest.len() < sp + 1 + len {
                            if len > MAX_FRAME {
                                // Absurd length: treat as a plain line instead of waiting forever.
                            } else {
                                break; // wait for the rest of the frame
                            }
                        } else {
                            let m = &rest[sp + 1..sp + 1 + len];
                            push_cut(out, m);
                            pos += sp + 1 + len;
                            self.scanned = 0;
                            continue;
                        }
                    }
                } else if rest.len() < 11 {
                    break; // digits so far, no space yet
                }
            }
            let from = self.scanned.min(rest.len());
            match rest[from..].iter().position(|&c| c == b'\n') {
                Some(nl) => {
                    let nl = from + nl;
                    if nl > 0 {
                        push_cut(out, &rest[..nl]);
                    }
                    pos += nl + 1;
                    self.scanned = 0;
                }
                None if rest.len() > MAX_FRAME => {
                    push_cut(out, rest);
                    pos = self.pending.len();
                    self.scanned = 0;
                }
                None => {
                    self.scanned = rest.len();
                    break;
                }
            }
        }
        self.pending.drain(..pos);
    }

    pub fn finish(&mut self, out: &mut Messages) {
        self.scanned = 0;
        if !self.pending.is_empty() {
            push_cut(out, &std::mem::take(&mut self.pending));
        }
    }
}

fn push_cut(out: &mut Messages, m: &[u8]) {
    if m.len() > MAX_FRAME {
        out.truncated += 1;
        out.push_marked(&m[..MAX_FRAME]);
    } else {
        out.push(m);
    }
}

/// Refuse addresses that cannot work before binding anything.
pub fn check(addr: &Address) -> anyhow::Result<()> {
    if let Address::Unixgram(p) | Address::Unix(p) = addr {
        if p.as_os_str().is_empty() {
            return Err(daemon_kit::config_error(
                "the syslog socket path is empty: give --syslog-address unixgram:///PATH",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut f = Framer::default();
        let mut out = Messages::default();
        for c in chunks {
            f.feed(c, &mut out);
        }
        f.finish(&mut out);
        out.iter().map(|m| m.to_vec()).collect()
    }

    #[test]
    fn newline_framing_across_chunks() {
        assert_eq!(
            frames(&[b"<30>a b\n<30>c", b" d\n<30>e"]),
            vec![b"<30>a b".to_vec(), b"<30>c d".to_vec(), b"<30>e".to_vec()]
        );
    }

    #[test]
    fn a_long_line_in_many_small_reads_is_one_frame() {
        let line: Vec<u8> = (0..100_000).map(|i| b'a' + (i % 26) as u8).collect();
        let mut data = line.clone();
        data.extend_from_slice(b"\n<30>next\n");
        let chunks: Vec<&[u8]> = data.chunks(7).collect();
        assert_eq!(frames(&chunks), vec![line, b"<30>next".to_vec()]);
    }

    #[test]
    fn octet_counting_keeps_embedded_newlines() {
        let m = b"<30>1 - h app 1 app - two\nlines\n";
        let framed = format!("{} ", m.len());
        let mut data = framed.into_bytes();
        data.extend_from_slice(m);
        data.extend_from_slice(b"<30>plain\n");
        let half = data.len() / 2;
        let got = frames(&[&data[..half], &data[half..]]);
        assert_eq!(got, vec![m.to_vec(), b"<30>plain".to_vec()]);
    }

    #[test]
    fn addresses() {
        assert_eq!(
            "unixgram:///run/x.sock".parse::<Address>().unwrap(),
            Address::Unixgram("/run/x.sock".into())
        );
        assert!(matches!(
            "tcp://127.0.0.1:514".parse::<Address>(),
            Ok(Address::Tcp(_))
        ));
        let e = "http://x".parse::<Address>().unwrap_err();
        assert!(e.contains("unsupported scheme"), "{e}");
        assert!("/no/scheme".parse::<Address>().is_err());
    }
}
