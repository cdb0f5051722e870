//! Signals between the master and its workers, and how a process reads them.
//!
//! Which signal means what between the processes is written here once; the
//! master's own table is [`crate::master::signals`], the worker's handlers
//! [`crate::worker::timeout`]. Both processes read the signals they wait for
//! from a `signalfd` in their loop, so no handler runs for them.

use nix::sys::{
    signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal},
    signalfd::{SfdFlags, SignalFd},
};

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

/// Gives a freshly forked child default dispositions and a mask of exactly
/// `blocked`, so it does not inherit the master's handlers or its blocked
/// set. A worker passes the signals it will read from its signalfd: they
/// stay blocked from the fork on (the master's mask blocks them too), so
/// one that arrives before the worker reads them waits for it instead of
/// killing it by the default action.
pub fn reset_in_child(blocked: &[Signal]) -> nix::Result<()> {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for s in Signal::iterator().filter(|&s| s != Signal::SIGKILL && s != Signal::SIGSTOP) {
        // SAFETY: installing the default disposition runs no code.
        unsafe { sigaction(s, &default) }?;
    }
    let mask: SigSet = blocked.iter().copied().collect();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None)
}
