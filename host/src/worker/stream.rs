//! A connection's byte stream as the loop and the app's call see it: the
//! socket itself, or the socket through its TLS session.
//!
//! Every read and write of a connection goes through a [`Stream`], so the
//! rest of the worker (parsing, bodies, held output, streaming, files) is
//! the same code over TLS as over plain TCP. The plain path is the socket
//! helpers of [`crate::http::io`], untouched; the TLS path is
//! [`crate::tls::session::Link`]. Over TLS a write that "took" its bytes
//! may leave records in the session, so a writer asks [`Stream::flush`]
//! before it counts its output as gone.

use std::{
    io,
    os::fd::BorrowedFd,
    time::{Duration, Instant},
};

use nix::poll::PollFlags;

use crate::{
    http::io::{read_into, send_file_ready, wait_for, write_ready},
    tls::session::Link,
};

/// A connection's socket, with its TLS session if it has one.
pub struct Stream<'a> {
    fd: BorrowedFd<'a>,
    tls: Option<&'a mut Link>,
}

impl<'a> Stream<'a> {
    /// The stream of socket `fd`, through `tls` if it is a TLS connection.
    pub fn new(fd: BorrowedFd<'a>, tls: Option<&'a mut Link>) -> Stream<'a> {
        Stream { fd, tls }
    }

    /// A plain socket's stream.
    pub fn plain(fd: BorrowedFd<'a>) -> Stream<'a> {
        Stream { fd, tls: None }
    }

    /// The socket.
    pub fn fd(&self) -> BorrowedFd<'a> {
        self.fd
    }

    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads what is there into `buf` (growing it by at least `room`),
    /// without waiting: `Ok(0)` at the end of the stream, `WouldBlock`
    /// when nothing is there.
    pub fn read_into(&mut self, buf: &mut Vec<u8>, room: usize) -> io::Result<usize> {
        match &mut self.tls {
            None => read_into(self.fd, buf, room),
            Some(link) => link.read_into(self.fd, buf, room),
        }
    }

    /// Writes as much of `parts` (at most four) as the socket takes now;
    /// returns the bytes taken.
    pub fn write_ready(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
        match &mut self.tls {
            None => write_ready(self.fd, parts),
            Some(link) => link.write_ready(self.fd, parts),
        }
    }

    /// Writes some of `bytes` now: the count taken, or `WouldBlock` if none.
    pub fn write_some(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => crate::http::io::write_some(self.fd, &[bytes]),
            Some(link) => match link.write_ready(self.fd, &[bytes])? {
                0 => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            },
        }
    }

    /// Writes what the TLS session still holds: `Ok(true)` when nothing is
    /// left (always, on a plain socket).
    pub fn flush(&mut self) -> io::Result<bool> {
        match &mut self.tls {
            None => Ok(true),
            Some(link) => link.flush(self.fd),
        }
    }

    /// Writes all of `parts` (at most four), waiting for the socket when it
    /// is full; fails if it makes no progress for `timeout`.
    pub fn write_all(&mut self, parts: &[&[u8]], timeout: Duration) -> io::Result<()> {
        if self.tls.is_none() {
            return crate::http::io::write_all(self.fd, parts, timeout);
        }
        let mut rest: [&[u8]; 4] = [&[]; 4];
        for (slot, part) in rest.iter_mut().zip(parts.iter().filter(|p| !p.is_empty())) {
            *slot = part;
        }
        loop {
            let mut n = self.write_ready(&rest)?;
            for part in rest.iter_mut() {
                let taken = n.min(part.len());
                *part = &part[taken..];
                n -= taken;
            }
            if rest.iter().all(|p| p.is_empty()) && self.flush()? {
                return Ok(());
            }
            wait_for(self.fd, PollFlags::POLLOUT, Instant::now() + timeout)?;
        }
    }

    /// Waits until the socket is readable, or fails with `TimedOut` at `deadline`.
    pub fn wait_readable(&self, deadline: Instant) -> io::Result<()> {
        wait_for(self.fd, PollFlags::POLLIN, deadline)
    }

    /// Waits until the socket is writable, or fails with `TimedOut` at `deadline`.
    pub fn wait_writable(&self, deadline: Instant) -> io::Result<()> {
        wait_for(self.fd, PollFlags::POLLOUT, deadline)
    }

    /// Sends bytes `*offset..end` of `file` as far as the socket takes
    /// them, advancing `*offset`: `sendfile` on a plain socket, read and
    /// encrypted over TLS. `Ok(true)` once all of it is sent (over TLS: is
    /// in the session, for [`Stream::flush`]).
    pub fn send_file_ready(
        &mut self,
        file: BorrowedFd<'_>,
        offset: &mut u64,
        end: u64,
    ) -> io::Result<bool> {
        match &mut self.tls {
            None => send_file_ready(self.fd, file, offset, end),
            Some(link) => link.send_file_ready(self.fd, file, offset, end),
        }
    }
}
