//! Signals: what each one means to the master and to a worker, and how they arrive.
//!
//! The master blocks its signals and reads them from a `signalfd`, so no handler
//! runs at all: signals become readable events in its single loop, checked in
//! order, with nothing async-signal-unsafe anywhere. A worker reads its graceful
//! stop (TERM) the same way, from its epoll loop, so a stop never interrupts a
//! request; its quick stop (INT, QUIT) is a handler that calls `_exit` at once.

use std::sync::atomic::{AtomicI32, Ordering};

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

/// The socket of the request in hand while nothing of its response has been
/// written yet (-1 otherwise): where the timeout handler may still answer 504.
pub static TIMEOUT_ANSWER_FD: AtomicI32 = AtomicI32::new(-1);

/// What a timed-out request gets when nothing was sent yet.
const GATEWAY_TIMEOUT: &[u8] = b"HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\nConnection: close\r\n\r\nGateway Timeout\n";

extern "C" fn quick_exit(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

extern "C" fn timed_out(_: libc::c_int) {
    let fd = TIMEOUT_ANSWER_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write and _exit are async-signal-safe; a failed write changes nothing.
        unsafe {
            libc::write(fd, GATEWAY_TIMEOUT.as_ptr().cast(), GATEWAY_TIMEOUT.len());
        }
    }
    // SAFETY: as above.
    unsafe { libc::_exit(EXIT_TIMED_OUT) }
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
