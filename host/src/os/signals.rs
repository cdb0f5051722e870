//! Signals: what each one means to the master and to a worker, and how they arrive.
//!
//! The master blocks its signals and reads them from a `signalfd`, so no handler
//! runs at all: signals become readable events in its single loop, checked in
//! order, with nothing async-signal-unsafe anywhere. A worker reads its graceful
//! stop (TERM) the same way, from its epoll loop, so a stop never interrupts a
//! request; its quick stop (INT, QUIT) is a handler that calls `_exit` at once.

use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use crate::scoreboard::{Lane, RetireReason, Slot, REQUEST_LINE_WORDS};

use nix::sys::{
    signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal},
    signalfd::{SfdFlags, SignalFd},
};

/// What a signal asks the master to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterAction {
    /// HUP: snapshot the library, probe it, roll the workers onto it.
    Reload,
    /// USR1: reopen log files (after logrotate moved them).
    ReopenLogs,
    /// URG: a worker wrote to the scoreboard (ready, or asks to be replaced); look now.
    WorkerNudge,
    /// TERM: stop accepting, let workers finish their requests, exit.
    GracefulStop,
    /// INT, QUIT: stop workers at once and exit.
    QuickStop,
    /// TTIN: one more worker.
    AddWorker,
    /// TTOU: one worker fewer.
    RemoveWorker,
    /// CHLD: a worker (or the probe) exited; reap it.
    ChildExited,
    /// Anything else in the set (e.g. WINCH, which a terminal sends): ignore.
    Ignore,
}

/// The signals the master handles, all read through its signalfd.
pub const MASTER_SIGNALS: [Signal; 10] = [
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGURG,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGCHLD,
    Signal::SIGWINCH,
];

/// The master's meaning of `signal`.
pub fn master_action(signal: Signal) -> MasterAction {
    match signal {
        Signal::SIGHUP => MasterAction::Reload,
        Signal::SIGUSR1 => MasterAction::ReopenLogs,
        Signal::SIGURG => MasterAction::WorkerNudge,
        Signal::SIGTERM => MasterAction::GracefulStop,
        Signal::SIGINT | Signal::SIGQUIT => MasterAction::QuickStop,
        Signal::SIGTTIN => MasterAction::AddWorker,
        Signal::SIGTTOU => MasterAction::RemoveWorker,
        Signal::SIGCHLD => MasterAction::ChildExited,
        _ => MasterAction::Ignore,
    }
}

/// The signal the master sends a worker to stop it gracefully.
pub const WORKER_GRACEFUL: Signal = Signal::SIGTERM;
/// The signal the master sends a worker to stop it at once.
pub const WORKER_QUICK: Signal = Signal::SIGQUIT;
/// The signal the master sends a worker whose request ran past `--timeout`:
/// the worker answers 504 if it can and exits at once.
pub const WORKER_TIMED_OUT: Signal = Signal::SIGUSR2;
/// The signal the master forwards to workers to reopen their log files.
pub const WORKER_REOPEN_LOGS: Signal = Signal::SIGUSR1;
/// The signal a worker sends the master when it is ready or asks to be replaced.
pub const MASTER_NUDGE: Signal = Signal::SIGURG;
/// The signal a worker gets when the master dies (so no worker is orphaned).
pub const WORKER_PARENT_DIED: Signal = Signal::SIGTERM;

/// Blocks `signals` and returns a non-blocking signalfd that reports them.
pub fn signalfd_for(signals: &[Signal]) -> nix::Result<SignalFd> {
    let mut set = SigSet::empty();
    for &s in signals {
        set.add(s);
    }
    set.thread_block()?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// Reads every pending signal from `fd`.
pub fn drain(fd: &mut SignalFd) -> Vec<Signal> {
    let mut out = Vec::new();
    while let Ok(Some(info)) = fd.read_signal() {
        if let Ok(s) = Signal::try_from(info.ssi_signo as i32) {
            out.push(s);
        }
    }
    out
}

/// Gives a freshly forked child default dispositions and an empty mask, so it
/// does not inherit the master's blocked set.
pub fn reset_in_child() -> nix::Result<()> {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for &s in MASTER_SIGNALS
        .iter()
        .chain(&[Signal::SIGUSR2, Signal::SIGPIPE])
    {
        // SAFETY: installing the default disposition runs no code.
        unsafe { sigaction(s, &default) }?;
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

/// Exit status of a worker stopped for running past `--timeout`.
pub const EXIT_TIMED_OUT: i32 = 124;

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
        unsafe { libc::_exit(EXIT_TIMED_OUT) }
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
        unsafe { libc::_exit(EXIT_TIMED_OUT) }
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
        sigaction(WORKER_TIMED_OUT, &action(timed_out))?;
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
