//! A request past `--timeout`: how the worker answers it.
//!
//! The master finds a request past `--timeout` in the scoreboard, names its
//! lane there and sends the timeout signal. What happens next depends on
//! where the worker's threads are:
//!
//! - **One thread** (`--threads 1`): the loop's only thread is inside the app
//!   for that very request, so nothing can read a signalfd. The signal runs a
//!   handler ([`install_worker_handlers`]) that answers 504 if nothing was
//!   sent yet, logs where the worker was and `_exit`s. It is sound because it
//!   can only run on that thread: the worker blocks the signal before loading
//!   the app (so threads the app starts inherit the block) and unblocks it in
//!   its own thread only ([`unblock_in_this_thread`]); the handler and the
//!   exchange it interrupts share one thread, so they cannot write at once,
//!   and the descriptor it writes to is the lane's while the app runs.
//! - **Several threads** (`--threads` > 1): the signal stays blocked in every
//!   thread and the worker's main thread, which never calls the app, reads it
//!   from its signalfd ([`crate::worker::supervisor`]). It acts through the
//!   lane's [`LaneWatch`]: under its lock, the lane's thread can neither
//!   start writing nor close the connection, so the 504 never meets the
//!   app's bytes and the `shutdown` never meets a descriptor number that was
//!   closed and reused for another client.
//!
//! Also here: the quick stop (INT, QUIT: `_exit` at once). Handlers run
//! inside a signal, so they only use async-signal-safe calls and log through
//! a line built on the stack.

use std::{
    os::fd::{AsRawFd, BorrowedFd, RawFd},
    sync::{
        atomic::{AtomicPtr, AtomicU32, Ordering},
        Mutex, PoisonError,
    },
};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

use crate::{
    exit_code,
    http::io::write_some,
    os::signals,
    scoreboard::{Lane, Slot, REQUEST_LINE_WORDS},
};

/// What a timed-out request gets when nothing was sent yet.
pub const GATEWAY_TIMEOUT: &[u8] = b"HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\nConnection: close\r\n\r\nGateway Timeout\n";

extern "C" fn quick_exit(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

/// The worker's number, for the timeout handler's log line.
static WORKER_ID: AtomicU32 = AtomicU32::new(0);
/// The single-threaded worker's lane, for the timeout handler.
static WORKER_LANE: AtomicPtr<Lane> = AtomicPtr::new(std::ptr::null_mut());

/// The timeout signal's handler, for a single-threaded worker (see the
/// module's documentation for why it only runs on the worker's own thread):
/// answers 504 if nothing was sent yet, logs, and exits at once: its only
/// request is the stuck one.
extern "C" fn timed_out(_: libc::c_int) {
    let lane = WORKER_LANE.load(Ordering::Relaxed);
    // SAFETY: the lane lives in the scoreboard mapping, which is never
    // unmapped, for the process's life (or it is null).
    let lane = unsafe { lane.as_ref() };
    let fd = lane.map_or(-1, Lane::answer_fd);
    let answered = fd >= 0
        // SAFETY: write is async-signal-safe; the descriptor is the lane's
        // connection, open while the app runs (this thread is in it); a
        // failed write changes nothing.
        && unsafe { libc::write(fd, GATEWAY_TIMEOUT.as_ptr().cast(), GATEWAY_TIMEOUT.len()) }
            == GATEWAY_TIMEOUT.len() as isize;
    // Say where the worker was, without allocating or locking.
    let mut line = StackLine::new();
    line.timestamp_prefix("ERROR");
    line.push(b"worker ");
    line.push_num(u64::from(WORKER_ID.load(Ordering::Relaxed)));
    line.push(b" timed out handling \"");
    if let Some(lane) = lane {
        let mut request = [0u8; REQUEST_LINE_WORDS * 8];
        let n = lane.request_line_into(&mut request);
        line.push(&request[..n]);
    }
    line.push(if answered {
        b"\"; answered 504"
    } else {
        b"\"; the response had started, closing the connection"
    });
    line.push(b" and exiting\n");
    line.write_to(libc::STDERR_FILENO);
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(exit_code::WORKER_TIMED_OUT) }
}

/// Tells the timeout handler which worker this is and where its (only) lane is.
pub fn set_worker_identity(id: u32, lane: Option<&Lane>) {
    WORKER_ID.store(id, Ordering::Relaxed);
    WORKER_LANE.store(
        lane.map_or(std::ptr::null_mut(), |l| l as *const Lane as *mut Lane),
        Ordering::Relaxed,
    );
}

/// Lets the timeout signal run its handler on the calling thread (a
/// single-threaded worker's, once its app is initialised).
pub fn unblock_in_this_thread() -> nix::Result<()> {
    let mut set = SigSet::empty();
    set.add(signals::WORKER_TIMED_OUT);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None)
}

/// How the request in one lane stands against a timeout, seen by the
/// exchange: it claims the response before writing its first byte.
#[derive(Clone, Copy)]
pub enum Watch<'a> {
    /// A single-threaded worker: the signal handler answers on the lane's
    /// answer descriptor until the exchange clears it.
    Signal(&'a Lane),
    /// A threaded worker: its supervisor acts through the lane's watch.
    Loop(&'a LaneWatch),
}

impl Watch<'_> {
    /// Claims the response for the app: from now on a timeout cannot answer
    /// 504. False if the timeout answered it already (nothing more may be written).
    pub fn claim(&self) -> bool {
        match self {
            Watch::Signal(lane) => {
                lane.set_answer_fd(-1);
                true
            }
            Watch::Loop(watch) => watch.claim(),
        }
    }
}

/// What the supervisor of a threaded worker may do to the request a loop
/// thread is handling, under a lock the thread takes at the request's
/// start, its first write and its end.
#[derive(Default)]
pub struct LaneWatch {
    state: Mutex<Watched>,
}

#[derive(Default)]
struct Watched {
    /// The connection's descriptor while the app handles its request: open
    /// until the lane's thread has called [`LaneWatch::leave`] (it closes
    /// connections only between requests).
    fd: Option<RawFd>,
    /// Nothing of the response was written yet: a 504 may still be sent.
    answerable: bool,
    /// The supervisor gave up on the request (answered 504 or shut the socket).
    given_up: bool,
}

/// What the supervisor did to a lane's request past `--timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// Answered 504 and shut the connection.
    Answered,
    /// The response had started: shut the connection.
    Cut,
}

impl LaneWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        // The state stays consistent whatever a panicking holder did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lane's thread is about to call the app on connection `fd`
    /// (`answerable`: nothing of this request's response is buffered ahead).
    pub fn enter(&self, fd: BorrowedFd<'_>, answerable: bool) {
        *self.lock() = Watched {
            fd: Some(fd.as_raw_fd()),
            answerable,
            given_up: false,
        };
    }

    /// See [`Watch::claim`].
    fn claim(&self) -> bool {
        let mut state = self.lock();
        state.answerable = false;
        !state.given_up
    }

    /// The lane's thread is done with the request: from now on the
    /// supervisor leaves its connection alone. Call before the thread may
    /// close the connection.
    pub fn leave(&self) {
        *self.lock() = Watched::default();
    }

    /// Whether the lane's request was given up on and its thread is still
    /// inside the app (it has not called [`LaneWatch::leave`]).
    pub fn stuck(&self) -> bool {
        self.lock().given_up
    }

    /// The supervisor gives up on the lane's request (the master found it
    /// past `--timeout`): answers 504 if nothing was written, shuts the
    /// connection so whatever the thread writes later goes nowhere, and
    /// marks the request abandoned in `slot`. `None` if the lane holds no
    /// request any more (it ended since the master looked).
    pub fn give_up(&self, slot: &Slot, lane: &Lane) -> Option<GaveUp> {
        let mut state = self.lock();
        let fd = state.fd.filter(|_| !state.given_up)?;
        // The request may have ended since the master looked.
        lane.request_start_ms()?;
        // SAFETY: `fd` is the connection the lane's thread is calling the
        // app for: it cannot close it (so its number cannot be reused)
        // without taking this lock first (`leave`).
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let answered = state.answerable
            && matches!(write_some(fd, &[GATEWAY_TIMEOUT]), Ok(n) if n == GATEWAY_TIMEOUT.len());
        let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        state.answerable = false;
        state.given_up = true;
        slot.abandon_request(lane);
        Some(if answered {
            GaveUp::Answered
        } else {
            GaveUp::Cut
        })
    }
}

/// A log line built on the stack: usable inside a signal handler.
struct StackLine {
    buf: [u8; 512],
    len: usize,
}

impl StackLine {
    fn new() -> StackLine {
        StackLine {
            buf: [0; 512],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_num(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn push_two(&mut self, n: u64) {
        self.push(&[b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8]);
    }

    /// `[2026-11-24 20:22:38 +0000] [pid] [LEVEL] `, as the error log writes it.
    fn timestamp_prefix(&mut self, level: &str) {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime is async-signal-safe.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        let secs = ts.tv_sec.max(0) as u64;
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        self.push(b"[");
        self.push_num(year as u64);
        self.push(b"-");
        self.push_two(month);
        self.push(b"-");
        self.push_two(day);
        self.push(b" ");
        self.push_two(rem / 3600);
        self.push(b":");
        self.push_two(rem / 60 % 60);
        self.push(b":");
        self.push_two(rem % 60);
        self.push(b" +0000] [");
        // SAFETY: getpid is async-signal-safe.
        self.push_num(unsafe { libc::getpid() } as u64);
        self.push(b"] [");
        self.push(level.as_bytes());
        self.push(b"] ");
    }

    fn write_to(&self, fd: libc::c_int) {
        // SAFETY: write is async-signal-safe.
        unsafe { libc::write(fd, self.buf.as_ptr().cast(), self.len) };
    }
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Worker set-up: INT and QUIT end the process at once, even mid-request;
/// the timeout signal, where it is unblocked (a single-threaded worker's own
/// thread), answers 504 (when it still can) and ends it; SIGPIPE is ignored
/// (a closed peer shows up as EPIPE on write).
pub fn install_worker_handlers() -> nix::Result<()> {
    let action = |f| SigAction::new(SigHandler::Handler(f), SaFlags::empty(), SigSet::all());
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: the handlers only call async-signal-safe functions.
    unsafe {
        sigaction(Signal::SIGINT, &action(quick_exit))?;
        sigaction(Signal::SIGQUIT, &action(quick_exit))?;
        sigaction(signals::WORKER_TIMED_OUT, &action(timed_out))?;
        sigaction(Signal::SIGPIPE, &ignore)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_416), (2025, 11, 24));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn stack_line_formats_numbers() {
        let mut line = StackLine::new();
        line.push(b"n=");
        line.push_num(0);
        line.push(b",");
        line.push_num(1234567890);
        line.push_two(7);
        assert_eq!(&line.buf[..line.len], b"n=0,123456789007");
    }
}
