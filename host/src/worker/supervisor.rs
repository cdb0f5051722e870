//! The main thread of a worker run with `--threads T` (T > 1): it never
//! calls the app, so it is the one that reads the worker's signals.
//!
//! Its T loop threads ([`crate::worker::threads`]) may each be inside the
//! app at any moment, so none of them can be relied on to read a signal.
//! The main thread waits on the worker's signalfd and acts on the loops
//! through their [`Team`]: a graceful stop (every loop stops accepting,
//! finishes and closes its connections), a log reopening (the error log
//! here, the access log handed to every loop), a request past `--timeout`
//! (given up on through the lane's own [`crate::worker::timeout::LaneWatch`],
//! so the 504 never meets the app's bytes; then the worker retires). It also
//! beats the worker's heartbeat, measures its memory and notices the
//! master's death, and returns once every loop has ended but for those
//! stuck inside the app after `--timeout`.

use std::{os::fd::AsFd, path::PathBuf, sync::Arc, time::Instant};

use nix::sys::{
    epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags},
    signalfd::SignalFd,
};

use crate::{
    os::signals,
    report::access_log::AccessLogTarget,
    scoreboard::{RetireReason, State},
    worker::{
        event_loop::{STOPPING_WAIT_MS, SWEEP_INTERVAL},
        rss_kib,
        serving::Serving,
        threads::Team,
        timeout::GaveUp,
    },
};

/// epoll token of the signalfd.
const SIGNAL_TOKEN: u64 = 0;
/// epoll token of the eventfd the loops write when they end.
const ENDED_TOKEN: u64 = 1;

/// What the supervisor needs beyond the loops: the master and the logs.
pub struct Duties {
    /// The master's pid, to notice its death and nudge it.
    pub master_pid: nix::unistd::Pid,
    /// The access log's path, to reopen it on USR1.
    pub access_log_path: Option<PathBuf>,
    /// The error log's path (`-`: stderr as inherited), to reopen it on USR1.
    pub error_log_path: PathBuf,
}

/// Serves the worker's signals until every loop of `team` has ended (but
/// for those stuck in the app after `--timeout`).
pub fn supervise(
    serving: &Serving,
    team: &Arc<Team>,
    sigfd: &mut SignalFd,
    duties: &Duties,
) -> nix::Result<()> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(
        sigfd.as_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, SIGNAL_TOKEN),
    )?;
    epoll.add(
        team.ended_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, ENDED_TOKEN),
    )?;
    let mut events = [EpollEvent::empty(); 2];
    let mut next_sweep = Instant::now();
    loop {
        let timeout = if team.stopping() {
            STOPPING_WAIT_MS
        } else {
            SWEEP_INTERVAL.as_millis() as u16
        };
        let n = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(nix::Error::EINTR) => 0,
            Err(e) => return Err(e),
        };
        for ev in &events[..n] {
            if ev.data() == ENDED_TOKEN {
                team.acknowledge_ended();
            } else {
                for signal in signals::drain(sigfd) {
                    if signal == signals::WORKER_REOPEN_LOGS {
                        reopen_logs(serving, team, duties);
                    } else if signal == signals::WORKER_TIMED_OUT {
                        on_timed_out(serving, team, duties);
                    } else {
                        stop(serving, team);
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= next_sweep {
            next_sweep = now + SWEEP_INTERVAL;
            serving.slot.heartbeat();
            if let Some(kib) = rss_kib() {
                serving.slot.set_rss_kib(kib);
            }
            if nix::unistd::getppid() != duties.master_pid && !team.stopping() {
                log::warn!("worker {}: the master is gone; stopping", serving.id);
                stop(serving, team);
            }
        }
        if team.done() {
            return Ok(());
        }
    }
}

/// A graceful stop: every loop stops accepting, finishes and ends.
fn stop(serving: &Serving, team: &Team) {
    if !team.stopping() {
        log::debug!("worker {} stopping gracefully", serving.id);
        serving.slot.set_state(State::Stopping);
        team.stop();
    }
}

fn reopen_logs(serving: &Serving, team: &Team, duties: &Duties) {
    if let Err(e) = crate::report::logging::reopen(&duties.error_log_path) {
        log::error!("worker {}: cannot reopen the error log: {e}", serving.id);
    }
    if let Some(path) = &duties.access_log_path {
        match AccessLogTarget::open(path) {
            Ok(target) => team.set_log(Arc::new(target)),
            Err(e) => log::error!("worker {}: cannot reopen the access log: {e}", serving.id),
        }
    }
}

/// The master found a request past `--timeout`: gives up on the lane it
/// named (answering 504 when nothing was sent yet), asks for a replacement,
/// and every loop accepts nothing more; the others finish their requests.
fn on_timed_out(serving: &Serving, team: &Team, duties: &Duties) {
    let index = serving.slot.timed_out_lane().unwrap_or(0);
    let line = serving
        .lanes
        .get(index)
        .map(|l| l.request_line())
        .unwrap_or_default();
    let what = match team.give_up(serving, index) {
        Some(GaveUp::Answered) => "answered 504",
        Some(GaveUp::Cut) | None => "the response had started, closing the connection",
    };
    log::error!(
        "worker {} timed out handling \"{line}\"; {what}; finishing the other threads' requests, then exiting",
        serving.id
    );
    serving.slot.request_retire(RetireReason::TimedOut);
    if team.retire() {
        let _ = nix::sys::signal::kill(duties.master_pid, signals::MASTER_NUDGE);
    }
}
