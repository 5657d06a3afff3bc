//! Receiving syslog messages: `unixgram://`, `udp://` (one message per datagram, read in bulk
//! with `recvmmsg`) and `unix://`, `tcp://` streams (newline or RFC 6587 octet-counting
//! framing, detected per frame). Every transport hands the processor [`Messages`] batches.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use crossbeam_channel::Sender;

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
    pub received: AtomicU64,
    pub truncated: AtomicU64,
}

/// A bound listener, ready before `serve` (so readiness can be signalled truthfully).
/// A path is the socket file log-proxy created and removes when it stops; inherited
/// sockets ([`crate::activation`]) have none.
pub enum Listener {
    Dgram(Box<dyn AsRawFd + Send>, Option<PathBuf>),
    UnixStream(UnixListener, Option<PathBuf>),
    Tcp(TcpListener),
}

/// Bind `addr`. A stale socket file from a previous run is replaced; `mode` sets the file's
/// permissions.
pub fn bind(addr: &Address, mode: Option<u32>) -> anyhow::Result<Listener> {
    let prepare = |p: &Path| -> anyhow::Result<()> {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        match std::fs::remove_file(p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove stale socket {}", p.display())),
        }
    };
    let chmod = |p: &Path| -> anyhow::Result<()> {
        if let Some(m) = mode {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m))
                .with_context(|| format!("cannot set mode {m:o} on {}", p.display()))?;
        }
        Ok(())
    };
    Ok(match addr {
        Address::Unixgram(p) => {
            prepare(p)?;
            let s = UnixDatagram::bind(p)
                .with_context(|| format!("cannot listen on unixgram://{}", p.display()))?;
            set_rcvbuf(s.as_raw_fd());
            chmod(p)?;
            Listener::Dgram(Box::new(s), Some(p.clone()))
        }
        Address::Udp(a) => {
            let s = UdpSocket::bind(a).with_context(|| format!("cannot listen on udp://{a}"))?;
            set_rcvbuf(s.as_raw_fd());
            Listener::Dgram(Box::new(s), None)
        }
        Address::Unix(p) => {
            prepare(p)?;
            let l = UnixListener::bind(p)
                .with_context(|| format!("cannot listen on unix://{}", p.display()))?;
            chmod(p)?;
            Listener::UnixStream(l, Some(p.clone()))
        }
        Address::Tcp(a) => Listener::Tcp(
            TcpListener::bind(a).with_context(|| format!("cannot listen on tcp://{a}"))?,
        ),
    })
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

/// Receive until `stop` is set, then remove the socket file. Blocks the calling thread.
pub fn serve(
    listener: Listener,
    out: Sender<Messages>,
    stop: Arc<AtomicBool>,
    stats: Arc<IntakeStats>,
) -> anyhow::Result<()> {
    match listener {
        Listener::Dgram(sock, path) => {
            // Drained at stop only when the socket is ours (a file we created).
            let r = serve_dgram(sock.as_raw_fd(), &out, &stop, &stats, path.is_some());
            if let Some(p) = path {
                let _ = std::fs::remove_file(p);
            }
            r
        }
        Listener::UnixStream(l, path) => {
            l.set_nonblocking(true)?;
            let r = serve_stream(|| accepted(l.accept()), &out, &stop, &stats);
            if let Some(p) = path {
                let _ = std::fs::remove_file(p);
            }
            r
        }
        Listener::Tcp(l) => {
            l.set_nonblocking(true)?;
            serve_stream(|| accepted(l.accept()), &out, &stop, &stats)
        }
    }
}

/// A non-blocking accept's result: a connection, or `None` when none is waiting.
fn accepted<S: StreamConn + 'static, A>(
    r: io::Result<(S, A)>,
) -> io::Result<Option<Box<dyn StreamConn>>> {
    match r {
        Ok((s, _)) => Ok(Some(Box::new(s))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Datagrams, read `SLOTS` at a time with `recvmmsg`, on a dedicated thread.
fn serve_dgram(
    fd: i32,
    out: &Sender<Messages>,
    stop: &AtomicBool,
    stats: &IntakeStats,
    drain: bool,
) -> anyhow::Result<()> {
    let mut rx = DgramReceiver::new(fd);
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
    // `hdrs` point into `iovs`, which point into `slots`: heap buffers that never move.
    slots: Vec<u8>,
    _iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
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
        }
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
        };
        for (i, h) in self.hdrs.iter_mut().take(n).enumerate() {
            let len = h.msg_len as usize;
            let m = &self.slots[i * MAX_MESSAGE..i * MAX_MESSAGE + len.min(MAX_MESSAGE)];
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
trait StreamConn: Read + Send {
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
    mut accept: impl FnMut() -> io::Result<Option<Box<dyn StreamConn>>>,
    out: &Sender<Messages>,
    stop: &Arc<AtomicBool>,
    stats: &Arc<IntakeStats>,
) -> anyhow::Result<()> {
    let mut conns = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match accept()? {
            Some(conn) => {
                let (out, stop, stats) = (out.clone(), stop.clone(), stats.clone());
                conns.push(std::thread::spawn(move || {
                    read_stream(conn, out, stop, stats)
                }));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
        conns.retain(|h| !h.is_finished());
    }
    for c in conns {
        let _ = c.join();
    }
    Ok(())
}

fn read_stream(
    mut conn: Box<dyn StreamConn>,
    out: Sender<Messages>,
    stop: Arc<AtomicBool>,
    stats: Arc<IntakeStats>,
) {
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
            if out.send(batch).is_err() {
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
        let _ = out.send(batch);
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
            bail!("the syslog socket path is empty");
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
