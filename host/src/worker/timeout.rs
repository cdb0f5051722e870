//! The worker's own signal handlers: the timeout signal (answer 504 if it
//! still can, log where the worker was, leave or give up on the request) and
//! the quick stop (INT, QUIT: `_exit` at once).
//!
//! These run inside a signal handler, so they only use async-signal-safe
//! calls and log through a line built on the stack.

use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::{
    exit_code,
    os::signals,
    scoreboard::{Lane, RetireReason, Slot, REQUEST_LINE_WORDS},
};

/// What a timed-out request gets when nothing was sent yet.
const GATEWAY_TIMEOUT: &[u8] = b"HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\nConnection: close\r\n\r\nGateway Timeout\n";

extern "C" fn quick_exit(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

/// The worker's number, for the timeout handler's log line.
static WORKER_ID: AtomicU32 = AtomicU32::new(0);
/// The worker's scoreboard slot, for the timeout handler.
static WORKER_SLOT: AtomicPtr<Slot> = AtomicPtr::new(std::ptr::null_mut());
/// The worker's scoreboard lanes (one per handler thread), and how many.
static WORKER_LANES: AtomicPtr<Lane> = AtomicPtr::new(std::ptr::null_mut());
static WORKER_LANE_COUNT: AtomicUsize = AtomicUsize::new(0);
/// A threaded worker's wake-up eventfd (-1: none): the timeout handler
/// writes to it so the event loop sees the timeout at once.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// Requests a threaded worker gave up on after `--timeout` (their threads
/// may never return).
static ABANDONED: AtomicUsize = AtomicUsize::new(0);

/// The timeout signal's handler. A single-threaded worker answers 504 (if
/// nothing was sent yet) and exits at once: its only request is the stuck
/// one. A threaded worker answers the stuck request the same way, shuts its
/// socket (so whatever its thread writes later goes nowhere), gives up on it,
/// and asks to be replaced; its other threads finish their requests first.
extern "C" fn timed_out(_: libc::c_int) {
    let slot = WORKER_SLOT.load(Ordering::Relaxed);
    let lanes = WORKER_LANES.load(Ordering::Relaxed);
    if slot.is_null() || lanes.is_null() {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(exit_code::WORKER_TIMED_OUT) }
    }
    // SAFETY: the slot and lanes live in the scoreboard mapping for the process's life.
    let (slot, lanes) = unsafe {
        (
            &*slot,
            std::slice::from_raw_parts(lanes, WORKER_LANE_COUNT.load(Ordering::Relaxed)),
        )
    };
    let threaded = lanes.len() > 1;
    let lane = slot
        .timed_out_lane()
        .and_then(|i| lanes.get(i))
        .or(lanes.first());
    let fd = lane.map_or(-1, Lane::answer_fd);
    let answered = fd >= 0
        // SAFETY: write is async-signal-safe; a failed write changes nothing.
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
    if !threaded {
        line.push(b" and exiting\n");
        line.write_to(libc::STDERR_FILENO);
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(exit_code::WORKER_TIMED_OUT) }
    }
    line.push(b"; finishing the other threads' requests, then exiting\n");
    line.write_to(libc::STDERR_FILENO);
    // The request may have ended since the master looked: then nothing is stuck.
    if let Some(lane) = lane.filter(|l| l.request_start_ms().is_some()) {
        lane.set_answer_fd(-1);
        // SAFETY: shutdown is async-signal-safe; the fd stays open (no reuse)
        // until the stuck thread lets go of its connection.
        unsafe { libc::shutdown(lane.conn_fd(), libc::SHUT_RDWR) };
        slot.abandon_request(lane);
        ABANDONED.fetch_add(1, Ordering::Relaxed);
    }
    slot.request_retire(RetireReason::TimedOut);
    let wake = WAKE_FD.load(Ordering::Relaxed);
    if wake >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write is async-signal-safe.
        unsafe { libc::write(wake, one.as_ptr().cast(), one.len()) };
    }
}

/// Tells the timeout handler which worker this is and where its lanes are.
pub fn set_worker_identity(id: u32, slot: &Slot, lanes: &[Lane]) {
    WORKER_ID.store(id, Ordering::Relaxed);
    WORKER_SLOT.store(slot as *const Slot as *mut Slot, Ordering::Relaxed);
    WORKER_LANE_COUNT.store(lanes.len(), Ordering::Relaxed);
    WORKER_LANES.store(lanes.as_ptr() as *mut Lane, Ordering::Relaxed);
}

/// Tells the timeout handler how to wake a threaded worker's event loop.
pub fn set_wake_fd(fd: i32) {
    WAKE_FD.store(fd, Ordering::Relaxed);
}

/// How many requests this worker gave up on after `--timeout`.
pub fn abandoned() -> usize {
    ABANDONED.load(Ordering::Relaxed)
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
/// the timeout signal answers 504 (when it still can) and ends it; SIGPIPE is
/// ignored (a closed peer shows up as EPIPE on write).
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
