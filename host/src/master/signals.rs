//! The master's signal table: what each signal asks of the master.
//!
//! The master blocks these and reads them from a `signalfd` (see
//! [`crate::os::signals`]), so no handler runs at all: signals become readable
//! events in its single loop, with nothing async-signal-unsafe anywhere.

use nix::sys::signal::Signal;

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
    /// USR2: binary upgrade: start a new master from the configured binary
    /// on the same sockets; stop gracefully once it is ready.
    Upgrade,
    /// CHLD: a worker (or the probe) exited; reap it.
    ChildExited,
    /// Anything else in the set (e.g. WINCH, which a terminal sends): ignore.
    Ignore,
}

/// The signals the master handles, all read through its signalfd.
pub const MASTER_SIGNALS: [Signal; 11] = [
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
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
        Signal::SIGUSR2 => MasterAction::Upgrade,
        Signal::SIGURG => MasterAction::WorkerNudge,
        Signal::SIGTERM => MasterAction::GracefulStop,
        Signal::SIGINT | Signal::SIGQUIT => MasterAction::QuickStop,
        Signal::SIGTTIN => MasterAction::AddWorker,
        Signal::SIGTTOU => MasterAction::RemoveWorker,
        Signal::SIGCHLD => MasterAction::ChildExited,
        _ => MasterAction::Ignore,
    }
}
