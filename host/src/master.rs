//! The master ("arbiter"): binds, forks workers, watches them, stops them.
//!
//! One thread, one loop. Each turn it waits for a signal (read from a
//! signalfd) or a one-second tick, handles the signals in order, reaps exited
//! children, and brings the pool back to its target size. It never loads app
//! code: a probe child checks the app before the first worker starts. Workers
//! that die before they are ready are respawned with exponential backoff, so a
//! broken app never turns into a fork storm.

use std::{
    collections::BTreeMap,
    os::fd::AsFd,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::{
        signal::{kill, Signal},
        signalfd::SignalFd,
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{fork, ForkResult, Pid},
};

use crate::{
    config::{Config, MAX_WORKERS},
    exit_code,
    listener::Listener,
    logging::AccessLogTarget,
    probe,
    scoreboard::{self, Scoreboard},
    signals::{self, MasterAction},
    worker::{self, WorkerArgs},
};

/// The longest the master sleeps between turns of its loop.
const TICK: Duration = Duration::from_secs(1);
/// First delay before respawning after a worker failed to boot.
const BOOT_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest delay between boot attempts.
const BOOT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a quick stop waits for workers before it kills them.
const QUICK_STOP_GRACE: Duration = Duration::from_secs(2);

/// A worker the master forked.
struct WorkerRec {
    id: u32,
    slot: usize,
    ready: bool,
    /// Asked to stop (pool shrinking); does not count towards the target.
    retiring: bool,
}

/// A stop in progress.
struct Stop {
    deadline: Instant,
    quick: bool,
    killed: bool,
}

struct Master {
    config: Config,
    listeners: Vec<Listener>,
    access_log: Option<AccessLogTarget>,
    scoreboard: Scoreboard,
    sigfd: SignalFd,
    workers: BTreeMap<Pid, WorkerRec>,
    target: usize,
    boot_failures: u32,
    next_spawn: Instant,
    stop: Option<Stop>,
    pid: Pid,
}

/// Runs the server until it stops; returns the process exit code.
pub fn run(config: Config) -> i32 {
    // Block the signals first: a child exiting before the loop starts must not be missed.
    let sigfd = match signals::signalfd_for(&signals::MASTER_SIGNALS) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("error: cannot set up signal handling: {e}");
            return exit_code::STARTUP;
        }
    };
    if let Err(message) = probe::check(&config.app) {
        eprintln!("error: cannot load {}: {message}", config.app);
        return exit_code::APP_LOAD;
    }
    let mut listeners = Vec::new();
    for addr in &config.binds {
        match Listener::bind(addr, config.backlog) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                listeners.iter().for_each(Listener::cleanup);
                return exit_code::BIND;
            }
        }
    }
    let access_log = match config.access_logfile.as_deref().map(AccessLogTarget::open) {
        None => None,
        Some(Ok(target)) => Some(target),
        Some(Err(e)) => {
            eprintln!("error: cannot open the access log: {e}");
            return exit_code::STARTUP;
        }
    };
    let scoreboard = match Scoreboard::new(MAX_WORKERS) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot map the scoreboard: {e}");
            return exit_code::STARTUP;
        }
    };
    log::info!(
        "host {} serving {} with {} worker(s)",
        env!("CARGO_PKG_VERSION"),
        config.app,
        config.workers
    );
    for l in &listeners {
        log::info!("listening on {}", l.url());
    }
    let mut master = Master {
        target: config.workers as usize,
        config,
        listeners,
        access_log,
        scoreboard,
        sigfd,
        workers: BTreeMap::new(),
        boot_failures: 0,
        next_spawn: Instant::now(),
        stop: None,
        pid: nix::unistd::getpid(),
    };
    master.run_loop();
    master.listeners.iter().for_each(Listener::cleanup);
    log::info!("shutdown complete");
    exit_code::OK
}

impl Master {
    fn run_loop(&mut self) {
        loop {
            self.wait();
            for signal in signals::drain(&mut self.sigfd) {
                self.handle_signal(signal);
            }
            self.reap_workers();
            if let Some(stop) = &mut self.stop {
                if self.workers.is_empty() {
                    return;
                }
                if Instant::now() >= stop.deadline && !stop.killed {
                    stop.killed = true;
                    log::warn!(
                        "{} worker(s) still running after the {} stop timeout; killing them",
                        self.workers.len(),
                        if stop.quick { "quick" } else { "graceful" }
                    );
                    self.signal_all(Signal::SIGKILL);
                }
            } else {
                self.manage_workers();
            }
        }
    }

    /// Sleeps until a signal arrives, the next spawn is due, or a tick passes.
    fn wait(&self) {
        let now = Instant::now();
        let mut timeout = TICK;
        if self.stop.is_none() && self.live_count() < self.target {
            timeout = timeout.min(self.next_spawn.saturating_duration_since(now));
        }
        if let Some(stop) = &self.stop {
            timeout = timeout.min(stop.deadline.saturating_duration_since(now));
        }
        let mut fds = [PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN)];
        let millis = timeout.as_millis().min(u16::MAX as u128) as u16;
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => log::error!("master: poll failed: {e}"),
        }
    }

    fn handle_signal(&mut self, signal: Signal) {
        match signals::master_action(signal) {
            MasterAction::GracefulStop => self.begin_stop(false, signal),
            MasterAction::QuickStop => self.begin_stop(true, signal),
            MasterAction::AddWorker if self.stop.is_none() => {
                if self.target < MAX_WORKERS {
                    self.target += 1;
                }
                log::info!("SIGTTIN: workers now {}", self.target);
            }
            MasterAction::RemoveWorker if self.stop.is_none() => {
                self.target = self.target.saturating_sub(1).max(1);
                log::info!("SIGTTOU: workers now {}", self.target);
            }
            MasterAction::AddWorker
            | MasterAction::RemoveWorker
            | MasterAction::ChildExited
            | MasterAction::Ignore => {}
        }
    }

    fn begin_stop(&mut self, quick: bool, signal: Signal) {
        if self.stop.as_ref().is_some_and(|s| s.quick || !quick) {
            return; // already stopping at least this fast
        }
        let (grace, how) = if quick {
            (QUICK_STOP_GRACE, "quick")
        } else {
            (Duration::from_secs(self.config.graceful_timeout), "graceful")
        };
        log::info!(
            "{}: shutting down ({how}, up to {} s)",
            signal.as_str(),
            grace.as_secs()
        );
        self.stop = Some(Stop {
            deadline: Instant::now() + grace,
            quick,
            killed: false,
        });
        self.signal_all(if quick {
            signals::WORKER_QUICK
        } else {
            signals::WORKER_GRACEFUL
        });
    }

    fn signal_all(&self, signal: Signal) {
        for pid in self.workers.keys() {
            let _ = kill(*pid, signal);
        }
    }

    fn live_count(&self) -> usize {
        self.workers.values().filter(|w| !w.retiring).count()
    }

    /// Collects every exited child and says why it exited.
    fn reap_workers(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("master: waitpid failed: {e}");
                    return;
                }
            };
            let (pid, cause, clean) = match status {
                WaitStatus::Exited(pid, 0) => (pid, "with status 0".to_owned(), true),
                WaitStatus::Exited(pid, code) => (pid, format!("with status {code}"), false),
                WaitStatus::Signaled(pid, sig, core) => (
                    pid,
                    format!(
                        "killed by {}{}",
                        sig.as_str(),
                        if core { " (core dumped)" } else { "" }
                    ),
                    false,
                ),
                _ => continue,
            };
            let Some(rec) = self.workers.remove(&pid) else {
                continue;
            };
            let Some(slot) = self.scoreboard.slot(rec.slot) else {
                continue;
            };
            let booted = rec.ready || slot.was_ready();
            let during = slot
                .request_start_ms()
                .map(|start| {
                    format!(
                        " while handling a request (started {} ms before)",
                        scoreboard::now_ms().saturating_sub(start)
                    )
                })
                .unwrap_or_default();
            slot.release();
            let expected = self.stop.is_some() || rec.retiring;
            if expected && clean {
                log::info!("worker {} (pid {pid}) exited {cause}", rec.id);
            } else if !booted && self.stop.is_none() {
                self.boot_failures += 1;
                let delay = BOOT_BACKOFF_BASE
                    .saturating_mul(1 << (self.boot_failures - 1).min(16))
                    .min(BOOT_BACKOFF_MAX);
                self.next_spawn = Instant::now() + delay;
                log::error!(
                    "worker {} (pid {pid}) exited {cause} before it was ready (boot failure {}); next attempt in {:.1} s",
                    rec.id,
                    self.boot_failures,
                    delay.as_secs_f64()
                );
            } else {
                log::error!("worker {} (pid {pid}) exited {cause}{during}", rec.id);
            }
        }
    }

    /// Brings the number of workers to the target.
    fn manage_workers(&mut self) {
        for rec in self.workers.values_mut() {
            if !rec.ready && self.scoreboard.slot(rec.slot).is_some_and(|s| s.was_ready()) {
                rec.ready = true;
                self.boot_failures = 0;
            }
        }
        let live = self.live_count();
        if live > self.target {
            // Retire the highest-numbered workers first, keeping numbers compact.
            let mut excess = live - self.target;
            let victims: Vec<Pid> = self
                .workers
                .iter()
                .filter(|(_, w)| !w.retiring)
                .map(|(pid, w)| (w.id, *pid))
                .collect::<BTreeMap<u32, Pid>>()
                .into_values()
                .rev()
                .take_while(|_| {
                    let more = excess > 0;
                    excess = excess.saturating_sub(1);
                    more
                })
                .collect();
            for pid in victims {
                if let Some(w) = self.workers.get_mut(&pid) {
                    w.retiring = true;
                    log::info!("retiring worker {} (pid {pid})", w.id);
                    let _ = kill(pid, signals::WORKER_GRACEFUL);
                }
            }
        }
        while self.live_count() < self.target && Instant::now() >= self.next_spawn {
            if !self.spawn_worker() || self.boot_failures > 0 {
                break; // after a boot failure, one attempt per backoff period
            }
        }
    }

    /// Forks one worker. Returns false if it could not.
    fn spawn_worker(&mut self) -> bool {
        let Some(index) = self.scoreboard.free_index() else {
            log::error!("no free scoreboard slot for another worker");
            return false;
        };
        let Some(slot) = self.scoreboard.slot(index) else {
            return false;
        };
        slot.claim(0);
        let id = index as u32 + 1;
        let spawned_at = Instant::now();
        // SAFETY: the master is single-threaded, so the child inherits a consistent state.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => worker::run(WorkerArgs {
                id,
                spec: &self.config.app,
                listeners: &self.listeners,
                limits: self.config.limits(),
                keep_alive: self.config.keep_alive(),
                slot,
                access_log: self.access_log.as_ref(),
                spawned_at,
                master_pid: self.pid,
            }),
            Ok(ForkResult::Parent { child }) => {
                slot.set_pid(child.as_raw());
                log::debug!("booting worker {id} (pid {child})");
                self.workers.insert(
                    child,
                    WorkerRec {
                        id,
                        slot: index,
                        ready: false,
                        retiring: false,
                    },
                );
                true
            }
            Err(e) => {
                slot.release();
                log::error!("cannot fork a worker: {e}");
                self.next_spawn = Instant::now() + BOOT_BACKOFF_BASE;
                false
            }
        }
    }
}
