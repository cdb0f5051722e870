//! Socket I/O on borrowed descriptors: one read, one gathered write, a
//! write of what the socket takes now, a write of everything with a
//! deadline, `sendfile` of what the socket takes now, and a wait for
//! readiness.
//!
//! The worker's event loop reads and writes connections without blocking;
//! only while the app is being called for a request does I/O on that
//! request's connection block, through [`wait_for`] with a deadline, so a
//! stalled client holds a worker for a bounded time at most. A complete
//! response the socket will not take at once is not waited for: it is
//! written with [`write_ready`] or [`send_file_ready`], and what is left is
//! handed to the event loop (see [`crate::worker::held`]). The helpers
//! take [`BorrowedFd`]: the caller's `OwnedFd` keeps the descriptor open for
//! the call, so none of them can touch a number that was closed and reused.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    time::{Duration, Instant},
};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Reads once into the spare room of `buf` (growing it by at least `room`).
///
/// `recv`, not `read`: on a socket it skips the file-system layer `read`
/// goes through (a measurable part of a keep-alive request's kernel time).
/// Any other descriptor (a benchmark's file) is read with `read`.
pub fn read_into(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, room: usize) -> io::Result<usize> {
    buf.reserve(room);
    let spare = buf.spare_capacity_mut();
    let (ptr, len) = (spare.as_mut_ptr().cast(), spare.len());
    // SAFETY: reading into the vector's spare capacity of `len` bytes; its
    // length is set below to what the kernel wrote.
    let mut n = unsafe { libc::recv(fd.as_raw_fd(), ptr, len, 0) };
    if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOTSOCK) {
        // SAFETY: as above.
        n = unsafe { libc::read(fd.as_raw_fd(), ptr, len) };
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
pub fn write_some(fd: BorrowedFd<'_>, parts: &[&[u8]]) -> io::Result<usize> {
    let mut slices = [io::IoSlice::new(&[]); 4];
    let count = parts.len().min(slices.len());
    for (slot, part) in slices.iter_mut().zip(parts) {
        *slot = io::IoSlice::new(part);
    }
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

/// Writes as much of `parts` (at most four) as the socket takes without
/// waiting; returns the bytes written (all of them, or fewer when the
/// socket is full).
pub fn write_ready(fd: BorrowedFd<'_>, parts: &[&[u8]]) -> io::Result<usize> {
    let mut held: [&[u8]; 4] = [&[]; 4];
    let mut count = 0;
    for part in parts.iter().filter(|p| !p.is_empty()).take(held.len()) {
        held[count] = part;
        count += 1;
    }
    let mut first = 0;
    let mut written = 0;
    while first < count {
        match write_some(fd, &held[first..count]) {
            Ok(mut n) => {
                written += n;
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
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Sends bytes `*offset..end` of `file` to the socket `fd` with `sendfile`,
/// as far as the socket takes them without waiting, advancing `*offset`.
/// `Ok(true)` once all are sent; `Ok(false)` when the socket is full; an
/// `UnexpectedEof` error if the file ends before `end` (the response's
/// announced length can then no longer be met).
pub fn send_file_ready(
    fd: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    offset: &mut u64,
    end: u64,
) -> io::Result<bool> {
    while *offset < end {
        let want = (end - *offset).min(1 << 30) as usize;
        let mut off = *offset as libc::off_t;
        // SAFETY: both descriptors are borrowed, so open for the call; `off`
        // is a local the kernel updates.
        let n = unsafe { libc::sendfile(fd.as_raw_fd(), file.as_raw_fd(), &mut off, want) };
        if n > 0 {
            *offset += n as u64;
            continue;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended before the announced length",
            ));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(false),
            _ => return Err(e),
        }
    }
    Ok(true)
}

/// Writes all of `parts` (at most four), waiting for the socket when it is
/// full; fails if it makes no progress for `timeout`.
pub fn write_all(fd: BorrowedFd<'_>, parts: &[&[u8]], timeout: Duration) -> io::Result<()> {
    let mut rest: [&[u8]; 4] = [&[]; 4];
    for (slot, part) in rest.iter_mut().zip(parts.iter().filter(|p| !p.is_empty())) {
        *slot = part;
    }
    loop {
        let mut n = write_ready(fd, &rest)?;
        // Drop what was written; what is left waits for the socket.
        for part in rest.iter_mut() {
            let taken = n.min(part.len());
            *part = &part[taken..];
            n -= taken;
        }
        if rest.iter().all(|p| p.is_empty()) {
            return Ok(());
        }
        wait_for(fd, PollFlags::POLLOUT, Instant::now() + timeout)?;
    }
}

/// Waits until `fd` is ready for `flags`, or fails with `TimedOut` at `deadline`.
pub fn wait_for(fd: BorrowedFd<'_>, flags: PollFlags, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stalled",
            ));
        }
        let mut fds = [PollFd::new(fd, flags)];
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
    use super::*;
    use std::{io::Read, os::fd::AsFd, os::unix::net::UnixStream};

    /// Four parts far larger than a socket buffer arrive whole and in order,
    /// through partial writes and waits; empty parts are skipped.
    #[test]
    fn write_all_writes_every_part_in_order_through_a_full_socket() {
        let (a, mut b) = UnixStream::pair().expect("a socket pair");
        a.set_nonblocking(true).expect("non-blocking");
        let parts: Vec<Vec<u8>> = (0u8..4).map(|i| vec![b'a' + i; 300_000]).collect();
        let expected: Vec<u8> = parts.concat();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).expect("read");
            got
        });
        let slices: [&[u8]; 5] = [&parts[0], &[], &parts[1], &parts[2], &parts[3]];
        write_all(a.as_fd(), &slices, Duration::from_secs(30)).expect("written");
        drop(a);
        assert!(reader.join().expect("reader") == expected);
    }

    /// Without a reader, `write_ready` writes what fits and says how much.
    #[test]
    fn write_ready_stops_when_the_socket_is_full() {
        let (a, _b) = UnixStream::pair().expect("a socket pair");
        a.set_nonblocking(true).expect("non-blocking");
        let big = vec![7u8; 8 << 20];
        let n = write_ready(a.as_fd(), &[b"head", &big]).expect("a partial write");
        assert!(n > 4 && n < big.len() + 4, "{n}");
    }
}
