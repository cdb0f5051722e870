//! One client connection in a worker: its buffers, its phase, and its socket I/O.
//!
//! The event loop reads and writes connections without blocking. Only while
//! the app is being called for a request (and so the worker is busy anyway)
//! does I/O on that request's connection block, through [`wait_for`] with a
//! deadline, so a stalled client can hold a worker for a bounded time at most.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Bytes read from a socket at a time (and the least spare room kept in the input buffer).
pub const READ_CHUNK: usize = 16 * 1024;

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No request in progress: waiting up to the keep-alive timeout.
    Idle,
    /// Part of a request has arrived: waiting up to the read timeout.
    Reading,
    /// Close once the pending output is written.
    Closing,
}

/// A connection's buffers, kept from a closed connection for the next one
/// (a worker under `Connection: close` load would allocate them anew for
/// every request).
#[derive(Debug)]
pub struct Buffers {
    /// See [`Conn::inbuf`].
    pub inbuf: Vec<u8>,
    /// See [`Conn::out`].
    pub out: Vec<u8>,
    /// See [`Conn::peer`] (filled in by the caller).
    pub peer: String,
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers {
            inbuf: Vec::with_capacity(READ_CHUNK),
            out: Vec::new(),
            peer: String::new(),
        }
    }
}

/// A client connection owned by one worker.
pub struct Conn {
    /// The socket (non-blocking).
    pub fd: OwnedFd,
    /// Received bytes; the unconsumed ones start at `start`.
    pub inbuf: Vec<u8>,
    /// Offset of the first unconsumed byte of `inbuf`.
    pub start: usize,
    /// Response bytes not yet written, from `out_pos`.
    pub out: Vec<u8>,
    /// Offset of the first unwritten byte of `out`.
    pub out_pos: usize,
    /// The peer as `ip:port` or `[ip6]:port` (empty for Unix sockets).
    pub peer: String,
    /// Index of the listener it arrived on.
    pub listener: usize,
    /// When the connection is closed if nothing happens.
    pub deadline: Instant,
    /// See [`Phase`].
    pub phase: Phase,
    /// The peer closed its sending side.
    pub eof: bool,
    /// `100 Continue` was sent for the request in progress.
    pub continue_sent: bool,
    /// Registered for writability (output is pending).
    pub want_write: bool,
    /// In the event loop's epoll set.
    pub registered: bool,
    /// The peer is a trusted proxy (`--forwarded-allow-ips`).
    pub trusted_proxy: bool,
    /// In a threaded worker, a new connection holds a handler thread's place
    /// until its first request is lent or this instant passes.
    pub first_request_by: Option<Instant>,
}

impl Conn {
    /// A new idle connection.
    pub fn new(fd: OwnedFd, buffers: Buffers, listener: usize, deadline: Instant) -> Conn {
        Conn {
            fd,
            inbuf: buffers.inbuf,
            start: 0,
            out: buffers.out,
            out_pos: 0,
            peer: buffers.peer,
            listener,
            deadline,
            phase: Phase::Idle,
            eof: false,
            continue_sent: false,
            want_write: false,
            registered: false,
            trusted_proxy: false,
            first_request_by: None,
        }
    }

    /// Closes the socket and keeps the buffers for another connection.
    pub fn recycle(self) -> Buffers {
        let mut buffers = Buffers {
            inbuf: self.inbuf,
            out: self.out,
            peer: self.peer,
        };
        buffers.inbuf.clear();
        buffers.out.clear();
        buffers.peer.clear();
        buffers
    }

    /// The peer's address without the port (and an IPv6 one without brackets).
    pub fn peer_ip(&self) -> &str {
        peer_ip(&self.peer)
    }

    /// The unconsumed input.
    pub fn pending_input(&self) -> &[u8] {
        &self.inbuf[self.start..]
    }

    /// Marks `n` input bytes consumed, compacting the buffer when it empties.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.inbuf.len());
        if self.start == self.inbuf.len() {
            self.inbuf.clear();
            self.start = 0;
        }
    }

    /// Reads what the socket has, without blocking. `Ok(0)` means end of stream;
    /// `WouldBlock` means nothing is there.
    pub fn read_available(&mut self) -> io::Result<usize> {
        if self.start > 0 && self.start * 2 >= self.inbuf.len() {
            self.inbuf.drain(..self.start);
            self.start = 0;
        }
        read_into(self.fd.as_raw_fd(), &mut self.inbuf, READ_CHUNK)
    }

    /// Writes pending output without blocking. `Ok(true)` when all of it is out.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.out_pos < self.out.len() {
            match write_some(self.fd.as_raw_fd(), &[&self.out[self.out_pos..]]) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(true)
    }
}

/// Writes `addr` as `ip:port` or `[ip6]:port` into `out` (as `Display`
/// does; an IPv4 one with `itoa`, which costs a fraction of the formatting
/// machinery on a path taken for every connection).
pub fn write_peer(out: &mut String, addr: &std::net::SocketAddr) {
    match addr {
        std::net::SocketAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
            out.push(':');
            out.push_str(digits.format(v4.port()));
        }
        v6 => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// The address part of `ip:port` or `[ip6]:port`.
fn peer_ip(peer: &str) -> &str {
    match peer.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => peer.rsplit_once(':').map_or(peer, |(ip, _)| ip),
    }
}

/// Reads once into the spare room of `buf` (growing it by at least `room`).
///
/// `recv`, not `read`: on a socket it skips the file-system layer `read`
/// goes through (a measurable part of a keep-alive request's kernel time).
/// Any other descriptor (a benchmark's file) is read with `read`.
pub fn read_into(fd: RawFd, buf: &mut Vec<u8>, room: usize) -> io::Result<usize> {
    buf.reserve(room);
    let spare = buf.spare_capacity_mut();
    let (ptr, len) = (spare.as_mut_ptr().cast(), spare.len());
    // SAFETY: reading into the vector's spare capacity; len is set to what was written.
    let mut n = unsafe { libc::recv(fd, ptr, len, 0) };
    if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOTSOCK) {
        // SAFETY: as above.
        n = unsafe { libc::read(fd, ptr, len) };
    }
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        return Err(e);
    }
    // SAFETY: the kernel wrote n bytes.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(n as usize)
}

/// One `sendmsg` of the given parts (at most four); returns the bytes written.
///
/// `sendmsg`, not `writev`: on a socket it skips the file-system layer, and
/// `MSG_NOSIGNAL` makes a vanished client an `EPIPE`, never a signal. Any
/// other descriptor (a benchmark's `/dev/null`) is written with `writev`.
pub fn write_some(fd: RawFd, parts: &[&[u8]]) -> io::Result<usize> {
    let mut slices = [io::IoSlice::new(&[]); 4];
    let count = parts.len().min(slices.len());
    for (slot, part) in slices.iter_mut().zip(parts) {
        *slot = io::IoSlice::new(part);
    }
    // SAFETY: fd is an open descriptor borrowed for the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    loop {
        let sent = match nix::sys::socket::sendmsg::<()>(
            fd.as_raw_fd(),
            &slices[..count],
            &[],
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::Error::ENOTSOCK) => nix::sys::uio::writev(fd, &slices[..count]),
            sent => sent,
        };
        match sent {
            Ok(n) => return Ok(n),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes all of `parts` (at most four), waiting for the socket when it is
/// full; fails if it makes no progress for `timeout`.
pub fn write_all(fd: RawFd, parts: &[&[u8]], timeout: Duration) -> io::Result<()> {
    let mut held: [&[u8]; 4] = [&[]; 4];
    let mut count = 0;
    for part in parts.iter().filter(|p| !p.is_empty()).take(held.len()) {
        held[count] = part;
        count += 1;
    }
    let mut first = 0;
    while first < count {
        match write_some(fd, &held[first..count]) {
            Ok(mut n) => {
                while n > 0 && first < count {
                    if n >= held[first].len() {
                        n -= held[first].len();
                        first += 1;
                    } else {
                        held[first] = &held[first][n..];
                        n = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_for(fd, PollFlags::POLLOUT, Instant::now() + timeout)?
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits until `fd` is ready for `flags`, or fails with `TimedOut` at `deadline`.
pub fn wait_for(fd: RawFd, flags: PollFlags, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stalled",
            ));
        }
        // SAFETY: fd is an open socket borrowed for the call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut fds = [PollFd::new(borrowed, flags)];
        let millis = left.as_millis().min(i32::MAX as u128) as i32;
        match poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{peer_ip, write_peer};

    #[test]
    fn peers_are_written_as_display_writes_them() {
        for addr in [
            "127.0.0.1:50000",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:8000",
        ] {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            let mut out = String::new();
            write_peer(&mut out, &addr);
            assert_eq!(out, addr.to_string());
        }
    }

    #[test]
    fn peer_ip_drops_the_port_and_brackets() {
        assert_eq!(peer_ip("127.0.0.1:50000"), "127.0.0.1");
        assert_eq!(peer_ip("[::1]:50000"), "::1");
        assert_eq!(peer_ip("[2001:db8::7]:80"), "2001:db8::7");
        assert_eq!(peer_ip(""), "");
    }
}
