//! Output handed to the event loop: the rest of a complete response that
//! its client has not taken yet, and the budgets that bound it.
//!
//! A worker calls the app for one request at a time (per thread). If it then
//! waited for the client to read the response, a client that asks for a
//! large one and reads nothing would hold the worker until the I/O timeout:
//! two of them stall a `-w 2` server, the cheapest denial of service there
//! is. So when the app's response is complete (a whole body, or a file) and
//! the socket will not take all of it, the exchange keeps the rest with the
//! connection and the app's call ends at once: bytes stay in the
//! connection's output buffer, a file as a descriptor (a duplicate of the
//! app's) and an offset, never copied. The event loop writes the rest as the
//! socket takes it (`EPOLLOUT`), serving other connections meanwhile, and
//! closes a connection that took nothing for the I/O timeout. Pipelined
//! requests behind the response wait for it to drain, then go on in order.
//!
//! The budgets: one connection holds at most `--max-pending-output` bytes,
//! one worker at most `--max-worker-pending-output` across its connections
//! and threads (counted in its scoreboard slot, which `/metrics` reads). A
//! held file counts as the bytes of the head before it, not its length. The
//! rule when a response's rest does not fit: it is written as before, the
//! worker waiting on its client (up to the I/O timeout without progress),
//! so memory stays bounded and nothing is dropped.
//!
//! Not held: a streamed response (the app writes it in parts while it
//! runs), whose writes still wait on the client.

use std::{
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
};

use crate::worker::stream::Stream;

/// The budgets of output held for slow readers (from the options).
#[derive(Debug, Clone, Copy)]
pub struct HoldLimits {
    /// Most bytes one connection holds (`--max-pending-output`).
    pub per_conn: usize,
    /// Most bytes one worker holds (`--max-worker-pending-output`).
    pub per_worker: u64,
}

/// The part of a response that is a file, still to send: a descriptor of
/// its own (the app closes its own after the call) and the range left.
#[derive(Debug)]
pub struct HeldFile {
    file: OwnedFd,
    offset: u64,
    end: u64,
}

impl HeldFile {
    /// Holds bytes `offset..end` of `file`, through a duplicate of its descriptor.
    pub fn new(file: BorrowedFd<'_>, offset: u64, end: u64) -> io::Result<HeldFile> {
        Ok(HeldFile {
            file: file.try_clone_to_owned()?,
            offset,
            end,
        })
    }

    /// Sends what the connection's stream takes now. `Ok(true)` once all
    /// is sent; `Ok(false)` when the socket is full (the second value:
    /// whether any byte went).
    pub fn send(&mut self, stream: &mut Stream<'_>) -> io::Result<(bool, bool)> {
        let before = self.offset;
        let done = stream.send_file_ready(self.file.as_fd(), &mut self.offset, self.end)?;
        Ok((done, self.offset != before))
    }
}

/// What one connection holds of a response handed to the event loop,
/// besides the bytes in its output buffer. One pointer while nothing is
/// held (almost always): every connection carries it, and moves it with
/// itself on each accept and close.
#[derive(Debug, Default)]
pub struct Held(Option<Box<Holding>>);

/// What is held, once something is.
#[derive(Debug, Default)]
struct Holding {
    /// Bytes taken from the worker's budget (given back when the output
    /// has drained or the connection closes).
    charged: u64,
    /// The file part, after the buffered bytes.
    file: Option<HeldFile>,
}

impl Held {
    /// Whether a response's rest is held (until [`Held::release`]): the
    /// connection writes it before taking its next request.
    #[inline]
    pub fn active(&self) -> bool {
        self.0.is_some()
    }

    /// Notes `bytes` taken from the worker's budget.
    pub fn charge(&mut self, bytes: u64) {
        self.0.get_or_insert_with(Box::default).charged += bytes;
    }

    /// Holds `file` as the part after the buffered bytes.
    pub fn set_file(&mut self, file: HeldFile) {
        self.0.get_or_insert_with(Box::default).file = Some(file);
    }

    /// The held file part still to send, if any.
    #[inline]
    pub fn file_mut(&mut self) -> Option<&mut HeldFile> {
        self.0.as_mut()?.file.as_mut()
    }

    /// Drops the file part (all sent, or the client gone); the charge
    /// stays until [`Held::release`].
    pub fn drop_file(&mut self) {
        if let Some(holding) = &mut self.0 {
            holding.file = None;
        }
    }

    /// Gives up what is held: returns the bytes to give back to the
    /// worker's budget, and drops the file part.
    pub fn release(&mut self) -> u64 {
        self.0.take().map_or(0, |holding| holding.charged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{io::Write, os::fd::AsFd};

    #[test]
    fn a_held_file_is_sent_from_its_offset_after_the_original_closes() {
        let mut file = tempfile();
        file.write_all(b"0123456789").unwrap();
        let mut held = HeldFile::new(file.as_fd(), 3, 8).unwrap();
        drop(file);
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(
            held.send(&mut Stream::plain(ours.as_fd())).unwrap(),
            (true, true)
        );
        drop(ours);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut &theirs, &mut got).unwrap();
        assert_eq!(got, "34567");
    }

    #[test]
    fn a_file_shorter_than_announced_is_an_error() {
        let mut file = tempfile();
        file.write_all(b"abc").unwrap();
        let mut held = HeldFile::new(file.as_fd(), 0, 10).unwrap();
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = held.send(&mut Stream::plain(ours.as_fd())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn releasing_gives_back_the_charge_once() {
        let mut held = Held::default();
        assert!(!held.active());
        held.charge(5);
        assert!(held.active());
        assert_eq!(held.release(), 5);
        assert_eq!(held.release(), 0);
        assert!(!held.active());
        // A file alone (its head already written) is held too, until released.
        let file = tempfile();
        held.set_file(HeldFile::new(file.as_fd(), 0, 0).unwrap());
        assert!(held.file_mut().is_some());
        held.drop_file();
        assert!(held.active() && held.file_mut().is_none());
        assert_eq!(held.release(), 0);
        assert!(!held.active());
    }

    #[test]
    fn a_connection_pays_one_pointer_for_it() {
        assert_eq!(std::mem::size_of::<Held>(), std::mem::size_of::<usize>());
    }

    /// An unlinked temporary file.
    fn tempfile() -> std::fs::File {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("host-held-test-{}-{n}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }
}
