//! Binary upgrade (`USR2`, `host ctl upgrade`): replacing the master itself
//! without closing the listening sockets.
//!
//! The old master forks and executes the configured `host` binary (the path
//! it was started from, with its original arguments: [`Relaunch`]) with
//! every listener handed over ([`crate::os::handover`]). The new master is
//! its child; it probes the app and starts its workers, which accept on the
//! same sockets as the old workers meanwhile. Once its first generation is
//! complete it says so on the take-over link (`R`); the old master answers
//! `G`, logs one line and stops gracefully (as on TERM): its workers finish
//! their requests while the new ones take every new connection. Only on `G`
//! does the new master take over what the old one owned: the pid file, the
//! Unix socket files, the service manager (`MAINPID=` and `READY=1`). The
//! two steps mean an old master that gave up on its successor (its deadline
//! passed a moment before `R` arrived) never has a successor that also took
//! over; a new master whose link closes without `G` (the old master died)
//! takes over anyway: somebody has to.
//!
//! The new master fails if it exits, closes the link, or is not ready
//! within [`take_over_deadline`] (two boot timeouts, for its probe and its
//! workers, plus [`START_ALLOWANCE`]). Then the old master logs one line,
//! keeps serving with its listeners and workers untouched, and stops what
//! is left of the new one: TERM at once (it has taken nothing over, so its
//! stop removes nothing of the old master's), KILL after its graceful
//! timeout and [`KILL_AFTER_TERM`] more.

use std::{
    borrow::Cow,
    io::{Read, Write},
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::net::UnixStream,
    },
    time::{Duration, Instant},
};

use nix::{
    sys::{
        signal::{kill, Signal},
        wait::WaitStatus,
    },
    unistd::Pid,
};

use crate::{
    master::{changes::Ticket, settings, Io, Master},
    os::handover::{self, Relaunch, METRICS_FD_NAME},
    os::process::PidFile,
};

/// Time for the new master to start up (exec, settings, snapshot), on top of
/// two boot timeouts (its probe, then its workers).
pub const START_ALLOWANCE: Duration = Duration::from_secs(10);
/// How long after TERM (and its graceful timeout) a failed new master is
/// killed if it has not exited.
pub const KILL_AFTER_TERM: Duration = Duration::from_secs(5);
/// How long after the link closes the old master waits for the new one's
/// exit status, to say how it failed ("exited with status 1").
pub const CLOSED_LINK_GRACE: Duration = Duration::from_secs(1);
/// What the new master says on the link once its first generation is complete.
const READY: u8 = b'R';
/// What the old master answers: take over, I am stopping.
const GO: u8 = b'G';

/// How long a new master may take to be ready: its probe and its workers
/// each get `--boot-timeout`, and start-up [`START_ALLOWANCE`].
pub(super) fn take_over_deadline(boot_timeout: Duration) -> Duration {
    boot_timeout * 2 + START_ALLOWANCE
}

/// What the take-over link said so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkSays {
    /// Nothing yet.
    Nothing,
    /// The new master is ready.
    Ready,
    /// Closed (the new master is gone, or closed it) before saying it was ready.
    Closed,
}

/// Where an upgrade in progress stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not decided yet.
    Wait,
    /// The new master is ready: hand over.
    Ready,
    /// The new master failed: why.
    Failed(String),
}

/// The verdict on a new master, from what its link said (`closed_for`: how
/// long ago it closed, if it did), how it exited (`exited`: if it did), and
/// whether its deadline (`limit`) has passed. An exit always fails it, even
/// after it said it was ready: a dead master takes nothing over. A closed
/// link fails it once [`CLOSED_LINK_GRACE`] passed without its exit status.
pub(super) fn judge(
    link: LinkSays,
    exited: Option<&str>,
    closed_for: Duration,
    past_deadline: bool,
    limit: Duration,
) -> Verdict {
    match (link, exited) {
        (_, Some(how)) => Verdict::Failed(format!("{how} before it took over")),
        (LinkSays::Ready, None) => Verdict::Ready,
        (LinkSays::Closed, None) if closed_for < CLOSED_LINK_GRACE => Verdict::Wait,
        (LinkSays::Closed, None) => {
            Verdict::Failed("closed the take-over link before it was ready".into())
        }
        (LinkSays::Nothing, None) if past_deadline => Verdict::Failed(format!(
            "was not ready within {} s (twice --boot-timeout, plus {} s)",
            limit.as_secs(),
            START_ALLOWANCE.as_secs()
        )),
        (LinkSays::Nothing, None) => Verdict::Wait,
    }
}

/// A new master this one started, not judged yet.
pub(super) struct Pending {
    pid: Pid,
    link: UnixStream,
    said: LinkSays,
    /// When the link closed (without a word).
    closed_at: Option<Instant>,
    exited: Option<String>,
    started: Instant,
    limit: Duration,
    tickets: Vec<Ticket>,
}

/// A new master this one is done with.
#[derive(Debug, Clone, Copy)]
enum Leftover {
    /// Took over: reaped quietly if it exits while this master still runs.
    TookOver,
    /// Failed and told to stop; killed if still running at this time.
    Failed { kill_at: Instant, killed: bool },
}

/// This master, started by an upgrade, on its way to taking over.
pub(super) enum TakingOver {
    /// Its first generation is not complete yet.
    Booting { link: UnixStream, from: Pid },
    /// It said it is ready and waits for the old master's answer.
    Announced { link: UnixStream, from: Pid },
}

/// The binary upgrade's state, in both roles.
pub(super) struct Upgrade {
    /// How to start this server again.
    pub relaunch: Relaunch,
    /// A new master being started by this one.
    pending: Option<Pending>,
    /// A new master this one is done with, until it is reaped.
    leftover: Option<(Pid, Leftover)>,
    /// Started by an upgrade, not taken over yet.
    taking_over: Option<TakingOver>,
}

impl Upgrade {
    /// No upgrade under way; `link` is the take-over link when this master
    /// was started by one (from the old master, its parent).
    pub fn new(relaunch: Relaunch, link: Option<OwnedFd>) -> Upgrade {
        let from = nix::unistd::getppid();
        Upgrade {
            relaunch,
            pending: None,
            leftover: None,
            taking_over: link.map(|link| TakingOver::Booting {
                link: UnixStream::from(link),
                from,
            }),
        }
    }

    /// The link to poll for the other master's word, if one is awaited.
    pub fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        match (&self.pending, &self.taking_over) {
            (Some(p), _) if p.said == LinkSays::Nothing => Some(p.link.as_fd()),
            (_, Some(TakingOver::Announced { link, .. })) => Some(link.as_fd()),
            _ => None,
        }
    }

    /// In a forked child (a worker, a probe): closes the links (master-only).
    pub fn close_links(&mut self) {
        drop(self.pending.take());
        drop(self.taking_over.take());
    }
}

impl Io {
    /// Every listening socket a new master needs, each with the name it is
    /// handed over under: the app listeners (`host-bind-ADDRESS`, or the name
    /// systemd gave a socket it passed), the status endpoint's
    /// ([`METRICS_FD_NAME`]), and the control socket's
    /// ([`handover::CONTROL_FD_NAME`]).
    pub(super) fn handover_fds(&self) -> Vec<(Cow<'static, str>, BorrowedFd<'_>)> {
        let mut fds: Vec<(Cow<'static, str>, BorrowedFd<'_>)> = self
            .listeners
            .iter()
            .map(|l| {
                let name = match &l.fd_name {
                    Some(name) => Cow::Owned(name.clone()),
                    None => Cow::Owned(handover::bind_name(&l.addr)),
                };
                (name, l.as_fd())
            })
            .collect();
        if let Some(status) = &self.status {
            fds.push((METRICS_FD_NAME.into(), status.listener_fd()));
        }
        if let Some(control) = &self.control {
            fds.push((handover::CONTROL_FD_NAME.into(), control.listener_fd()));
        }
        fds
    }
}

impl Master {
    /// Starts a binary upgrade: a new master from the configured binary,
    /// with every listener handed over. `ticket` is finished when the new
    /// master is ready (ok, before this one stops) or has failed. `Err`
    /// (one line) when it cannot start: one is already under way, this
    /// master is stopping or is itself still taking over, the fork
    /// failed, or the last failed one has not exited yet; the ticket is then
    /// left to the caller, who answers with it.
    pub(super) fn begin_upgrade(&mut self, ticket: Option<Ticket>) -> Result<String, String> {
        if self.stop.is_some() {
            return Err("upgrade refused: the server is stopping".into());
        }
        if let Some(p) = &self.io.upgrade.pending {
            return Err(format!(
                "upgrade refused: one is under way (new master pid {}, started {:.0} s ago)",
                p.pid,
                p.started.elapsed().as_secs_f64()
            ));
        }
        if let Some((pid, Leftover::Failed { .. })) = &self.io.upgrade.leftover {
            return Err(format!(
                "upgrade refused: the last failed new master (pid {pid}) is still stopping"
            ));
        }
        if let Some(TakingOver::Booting { from, .. } | TakingOver::Announced { from, .. }) =
            &self.io.upgrade.taking_over
        {
            return Err(format!(
                "upgrade refused: this master is still taking over from pid {from}"
            ));
        }
        let limit = take_over_deadline(settings::boot_timeout(&self.settings.config));
        let relaunch = &self.io.upgrade.relaunch;
        let fds = self.io.handover_fds();
        let notify = self.io.notifier.original_socket().map(|s| s.as_os_str());
        let count = fds.len();
        let (pid, link) =
            handover::start_successor(relaunch, &fds, notify, &self.settings.ticket_secret)
                .map_err(|e| format!("upgrade failed: {e}; this master keeps serving"))?;
        let line = format!(
            "upgrade: started a new master (pid {pid}) from {} with {count} listening socket(s); it has {} s to be ready",
            relaunch.exe.display(),
            limit.as_secs()
        );
        log::info!("{line}");
        self.io.upgrade.pending = Some(Pending {
            pid,
            link: UnixStream::from(link),
            said: LinkSays::Nothing,
            closed_at: None,
            exited: None,
            started: Instant::now(),
            limit,
            tickets: ticket.into_iter().collect(),
        });
        Ok(line)
    }

    /// Records the exit of `status`'s process if it is a new master this
    /// one started; false if it is not.
    pub(super) fn successor_exited(&mut self, status: WaitStatus) -> bool {
        let Some(pid) = status.pid() else {
            return false;
        };
        let how = match status {
            WaitStatus::Exited(_, code) => format!("exited with status {code}"),
            WaitStatus::Signaled(_, sig, _) => format!("was killed by {}", sig.as_str()),
            _ => return false,
        };
        let upgrade = &mut self.io.upgrade;
        if let Some(p) = upgrade.pending.as_mut().filter(|p| p.pid == pid) {
            p.exited = Some(how);
            return true;
        }
        match upgrade.leftover {
            Some((leftover, state)) if leftover == pid => {
                upgrade.leftover = None;
                match state {
                    Leftover::TookOver => log::warn!("upgrade: the new master (pid {pid}) {how}"),
                    Leftover::Failed { .. } => {
                        log::info!("upgrade: the failed new master (pid {pid}) {how}")
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// Each turn: in the old master, reads the new one's word and judges it
    /// (hands over, or gives up on it); kills a failed new master past its
    /// time; in a new master, says when it is ready and takes over on the
    /// answer.
    pub(super) fn upgrade_turn(&mut self) {
        self.judge_successor();
        self.stop_failed_successor();
        self.take_over_turn();
    }

    /// The old master's side.
    fn judge_successor(&mut self) {
        let Some(p) = &mut self.io.upgrade.pending else {
            return;
        };
        if p.said == LinkSays::Nothing {
            p.said = read_word(&p.link, READY);
            if p.said == LinkSays::Closed {
                p.closed_at = Some(Instant::now());
            }
        }
        let past = p.started.elapsed() > p.limit;
        let closed_for = p.closed_at.map_or(Duration::ZERO, |at| at.elapsed());
        let verdict = judge(p.said, p.exited.as_deref(), closed_for, past, p.limit);
        let Some(p) = self
            .io
            .upgrade
            .pending
            .take_if(|_| verdict != Verdict::Wait)
        else {
            return;
        };
        let pid = p.pid;
        let go = match verdict {
            Verdict::Ready => (&p.link)
                .write(&[GO])
                .map_err(|e| format!("could not be told to take over: {e}")),
            Verdict::Failed(why) => Err(why),
            Verdict::Wait => return,
        };
        match go {
            Ok(_) => {
                let line = format!("upgrade: new master (pid {pid}) ready; stopping (graceful)");
                log::info!("{line}");
                self.changes.finish(&p.tickets, true, &line);
                self.io.upgrade.leftover = Some((pid, Leftover::TookOver));
                self.hand_over();
            }
            Err(why) => {
                let line = format!(
                    "upgrade failed: the new master (pid {pid}) {why}; this master (pid {}) keeps serving generation {} (build {})",
                    self.pid, self.rollout.generation, self.rollout.build.hash
                );
                log::error!("{line}");
                self.changes.finish(&p.tickets, false, &line);
                if p.exited.is_none() {
                    let _ = kill(pid, Signal::SIGTERM);
                    let grace = Duration::from_secs(self.settings.config.graceful_timeout);
                    let kill_at = Instant::now() + grace + KILL_AFTER_TERM;
                    self.io.upgrade.leftover = Some((
                        pid,
                        Leftover::Failed {
                            kill_at,
                            killed: false,
                        },
                    ));
                }
            }
        }
    }

    /// The new master is ready and told to take over: this one gives up what
    /// it owns and stops gracefully. Its socket files and pid file stay (the
    /// new master owns them now, and may be writing the pid file already), its status endpoint closes at once (the new
    /// master answers on the same socket), and it says nothing more to the
    /// service manager (the new master speaks for the service).
    fn hand_over(&mut self) {
        self.io.listeners.keep_files();
        if let Some(file) = &mut self._pid_file {
            file.hand_over();
        }
        drop(self.io.status.take());
        if let Some(control) = &mut self.io.control {
            // Its clients are answered until this master exits; the socket
            // file is the new master's.
            control.handed_over();
        }
        self.io.notifier.close();
        self.begin_stop(false, "upgrade");
    }

    /// Kills a failed new master still running past its time.
    fn stop_failed_successor(&mut self) {
        if let Some((pid, Leftover::Failed { kill_at, killed })) = &mut self.io.upgrade.leftover {
            if !*killed && Instant::now() >= *kill_at {
                *killed = true;
                log::warn!(
                    "upgrade: the failed new master (pid {pid}) is still running; killing it"
                );
                let _ = kill(*pid, Signal::SIGKILL);
            }
        }
    }

    /// When this master is stopping with an upgrade under way: gives it up
    /// (the new master is stopped: the server is going away).
    pub(super) fn cancel_upgrade(&mut self, why: &str) {
        if let Some(p) = self.io.upgrade.pending.take() {
            let line = format!(
                "upgrade cancelled: {why}; stopping the new master (pid {})",
                p.pid
            );
            log::warn!("{line}");
            self.changes.finish(&p.tickets, false, &line);
            let _ = kill(p.pid, Signal::SIGTERM);
        }
    }

    /// The new master's side: says it is ready once its first generation is
    /// complete, and takes over on the old master's answer (or when the old
    /// master is gone).
    fn take_over_turn(&mut self) {
        let Some(state) = self.io.upgrade.taking_over.take() else {
            return;
        };
        let next = match state {
            TakingOver::Booting { link, from } => {
                if self.rollout.started.is_some() || !self.pool.ever_ready {
                    Some(TakingOver::Booting { link, from })
                } else if (&link).write(&[READY]).is_ok() {
                    log::info!("upgrade: ready; asking the old master (pid {from}) to hand over");
                    Some(TakingOver::Announced { link, from })
                } else {
                    log::warn!("upgrade: the old master (pid {from}) is gone; taking over");
                    self.take_over(from);
                    None
                }
            }
            TakingOver::Announced { link, from } => match read_word(&link, GO) {
                LinkSays::Nothing => Some(TakingOver::Announced { link, from }),
                LinkSays::Ready => {
                    self.take_over(from);
                    None
                }
                LinkSays::Closed => {
                    log::warn!(
                        "upgrade: the old master (pid {from}) closed the link without an answer; taking over"
                    );
                    self.take_over(from);
                    None
                }
            },
        };
        self.io.upgrade.taking_over = next;
    }

    /// Takes over what the old master (`from`) owned: the Unix socket
    /// files, the pid file, the service manager.
    fn take_over(&mut self, from: Pid) {
        self.io.listeners.claim_files();
        if let Some(control) = &mut self.io.control {
            control.set_accepting(true);
        }
        if let Some(path) = self.settings.config.pid.clone() {
            match PidFile::take_over(&path, from) {
                Ok(file) => self._pid_file = Some(file),
                Err(e) => log::error!("upgrade: {e}"),
            }
        }
        self.io.notifier.took_over();
        self.io.notifier.ready(&self.status_line());
        log::info!("upgrade: took over from the old master (pid {from})");
    }
}

/// Reads the other master's one-byte word from `link` without blocking.
fn read_word(mut link: &UnixStream, word: u8) -> LinkSays {
    let mut buf = [0u8; 16];
    loop {
        return match link.read(&mut buf) {
            Ok(0) => LinkSays::Closed,
            Ok(n) if buf[..n].contains(&word) => LinkSays::Ready,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => LinkSays::Nothing,
            Err(_) => LinkSays::Closed,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_covers_a_probe_and_a_worker_boot() {
        let cases = [(1, 12), (30, 70), (5, 20)];
        for (boot, want) in cases {
            assert_eq!(
                take_over_deadline(Duration::from_secs(boot)),
                Duration::from_secs(want),
                "--boot-timeout {boot}"
            );
        }
    }

    #[test]
    fn a_new_master_is_judged_by_its_word_its_exit_and_the_clock() {
        use LinkSays::*;
        let limit = Duration::from_secs(70);
        let (now, later) = (Duration::ZERO, CLOSED_LINK_GRACE);
        // (what the link said, exited how, closed for, past the deadline, verdict starts with)
        let cases = [
            (Nothing, None, now, false, "wait"),
            (Ready, None, now, false, "ready"),
            (Ready, None, now, true, "ready"),
            (Nothing, None, now, true, "was not ready within 70 s"),
            // A closed link: its exit status is awaited, a moment.
            (Closed, None, now, false, "wait"),
            (Closed, None, later, false, "closed the take-over link"),
            (Closed, None, later, true, "closed the take-over link"),
            (
                Nothing,
                Some("exited with status 4"),
                now,
                false,
                "exited with status 4 before",
            ),
            (
                Ready,
                Some("was killed by SIGKILL"),
                now,
                false,
                "was killed by SIGKILL",
            ),
            (
                Closed,
                Some("exited with status 1"),
                now,
                true,
                "exited with status 1",
            ),
        ];
        for (said, exited, closed_for, past, want) in cases {
            let got = match judge(said, exited, closed_for, past, limit) {
                Verdict::Wait => "wait".to_owned(),
                Verdict::Ready => "ready".to_owned(),
                Verdict::Failed(why) => why,
            };
            assert!(
                got.starts_with(want),
                "{said:?}, {exited:?}, closed for {closed_for:?}, past {past}: {got}"
            );
        }
    }

    #[test]
    fn words_are_read_without_blocking() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        assert_eq!(read_word(&a, READY), LinkSays::Nothing);
        (&b).write_all(&[READY]).unwrap();
        assert_eq!(read_word(&a, READY), LinkSays::Ready);
        drop(b);
        assert_eq!(read_word(&a, READY), LinkSays::Closed);
    }
}
