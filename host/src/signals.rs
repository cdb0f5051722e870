//! Signals: what each one means to the master and to a worker, and how they arrive.
//!
//! The master blocks its signals and reads them from a `signalfd`, so no handler
//! runs at all: signals become readable events in its single loop, checked in
//! order, with nothing async-signal-unsafe anywhere. A worker reads its graceful
//! stop (TERM) the same way, from its epoll loop, so a stop never interrupts a
//! request; its quick stop (INT, QUIT) is a handler that calls `_exit` at once.

use nix::sys::{
    signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal},
    signalfd::{SfdFlags, SignalFd},
};

/// What a signal asks the master to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterAction {
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
pub const MASTER_SIGNALS: [Signal; 7] = [
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
    for &s in &MASTER_SIGNALS {
        // SAFETY: installing the default disposition runs no code.
        unsafe { sigaction(s, &default) }?;
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

extern "C" fn quick_exit(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

/// Worker set-up: INT and QUIT end the process at once, even mid-request;
/// SIGPIPE is ignored (a closed peer shows up as EPIPE on write).
pub fn install_worker_handlers() -> nix::Result<()> {
    let quick = SigAction::new(
        SigHandler::Handler(quick_exit),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only calls _exit.
    unsafe {
        sigaction(Signal::SIGINT, &quick)?;
        sigaction(Signal::SIGQUIT, &quick)?;
        sigaction(Signal::SIGPIPE, &ignore)?;
    }
    Ok(())
}
