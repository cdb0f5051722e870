//! The master ("arbiter"): binds, forks workers, watches them, rolls builds, stops.
//!
//! One thread, one loop. Each turn it
//! 1. waits for a signal (read from a signalfd), a probe's report, a worker's
//!    output or a status client, or a tick;
//! 2. answers status clients and passes the workers' output on to the log;
//! 3. handles the signals in order ([`signals`] is the table);
//! 4. reaps exited children and settles a probe of a new build;
//! 5. while stopping: waits for the workers to go, then exits;
//! 6. otherwise watches the library file, starts a reload, reads the
//!    scoreboard (readiness, deadlines), and brings the pool to its target on
//!    the current build (spawning, retiring, autoscaling).
//!
//! It never loads app code: a probe child checks each build before a worker
//! uses it. The parts live next to this file: `startup` (process set-up,
//! first build, binding), `pool` (spawn, reap, deadlines, pool size),
//! `rollout` (builds, generations, probes), `settings` (HUP's re-read of
//! the settings, rebinding, log files), `upgrade` (USR2: a new master on
//! the same sockets), [`autoscale`] (the adaptive pool's policy). Policy is
//! in plain functions with unit tests at the bottom of those files; this
//! one holds the state and the loop.
//!
//! Builds and generations: each accepted build starts a generation. Workers of
//! older generations are retired one for one as new ones report ready, so the
//! pool never shrinks below its target during a reload, and a build that fails
//! its probe is refused while the running generation keeps serving.
//!
//! Forked children (workers, probes) never come back into this code: they
//! close the master-only descriptors (`Io::close_master_only`) and leave
//! through [`crate::os::process::leave_child`].

pub mod autoscale;
pub(crate) mod canary;
pub(crate) mod changes;
mod commands;
mod drain;
#[cfg(debug_assertions)]
pub(crate) mod fault;
mod figures;
mod pool;
mod rollout;
mod settings;
pub mod signals;
mod startup;
mod upgrade;

pub use startup::{check, run};

use std::{
    collections::BTreeMap,
    os::fd::AsFd,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::{signal::Signal, signalfd::SignalFd, wait::waitpid},
    unistd::Pid,
};

use crate::{
    config::MAX_WORKERS,
    control::server::ControlServer,
    exit_code,
    master::{pool::Pool, rollout::Rollout, settings::Settings, signals::MasterAction},
    os::listener::{InheritedFds, Listeners},
    os::process::PidFile,
    os::signals as os_signals,
    os::systemd::Notifier,
    report::access_log::AccessLogTarget,
    report::metrics::{AbandonedView, Backlog, CertificateView, Snapshot},
    report::status_server::StatusServer,
    scoreboard,
};

/// The longest the master sleeps between turns of its loop.
const TICK: Duration = Duration::from_secs(1);
/// The tick while `--reload` watches the library file or `--workers-max` sizes the pool.
const WATCH_TICK: Duration = Duration::from_millis(250);
/// How long a quick stop waits for workers before it kills them.
const QUICK_STOP_GRACE: Duration = Duration::from_secs(2);
/// Boot failures in a row, with no worker ever ready, after which start-up is abandoned.
const STARTUP_BOOT_ATTEMPTS: u32 = 5;

/// What the master holds open, and which of it is the master's alone.
struct Io {
    /// The listeners workers share (their socket files removed on drop).
    listeners: Listeners,
    /// Descriptors handed over with `fd://N` (master-only: listeners hold duplicates).
    inherited: InheritedFds,
    /// Where workers write access-log lines.
    access_log: Option<AccessLogTarget>,
    /// The master's signals (master-only; `None` only in a forked child).
    sigfd: Option<SignalFd>,
    /// The /metrics and /status endpoint, if asked for (master-only).
    status: Option<StatusServer>,
    /// The control socket `host ctl` talks to (master-only).
    control: Option<ControlServer>,
    /// The service manager (systemd), if it listens (master-only).
    notifier: Notifier,
    /// Binary upgrades: how to start again, and the take-over links (master-only).
    upgrade: upgrade::Upgrade,
}

impl Io {
    /// In a forked child: closes what only the master may hold (its signalfd,
    /// the status and control listeners and clients, the inherited originals, the
    /// service-manager socket), by taking them; nothing else of the master
    /// is dropped.
    fn close_master_only(&mut self) {
        drop(self.sigfd.take());
        drop(self.status.take());
        drop(self.control.take());
        crate::report::logging::tap(false);
        drop(std::mem::take(&mut self.inherited));
        self.notifier.close();
        self.upgrade.close_links();
    }
}

/// What the master counts for /metrics and /status.
#[derive(Default)]
struct Counters {
    /// Workers forked.
    spawns: u64,
    /// Workers gone, by cause.
    exits: BTreeMap<&'static str, u64>,
    /// Reloads that started a generation.
    reloads: u64,
    /// Builds refused (unreadable, or failed their probe).
    refused_builds: u64,
    /// Generations abandoned (their build passed the probe but not in workers).
    abandoned_builds: u64,
    /// Workers that died within `pool::EARLY_DEATH` of becoming ready.
    early_deaths: u64,
    /// Requests counted by workers that are gone.
    retired_totals: scoreboard::RequestTotals,
    /// Request figures per generation, and their recent history (the canary's).
    generations: figures::GenerationBook,
    /// Rollouts rolled back, by the check that failed (or `operator`).
    rollbacks: BTreeMap<&'static str, u64>,
}

/// A stop in progress.
struct Stop {
    deadline: Instant,
    quick: bool,
    killed: bool,
}

/// The master's state, in named parts.
struct Master {
    /// The settings in effect, and where they came from.
    settings: Settings,
    /// What it holds open.
    io: Io,
    /// The workers, the pool's target and the scoreboard.
    pool: Pool,
    /// Builds, generations, the probe and the file watch.
    rollout: Rollout,
    /// For /metrics.
    counters: Counters,
    /// Changes asked for (reloads, deploys, upgrades) and how they ended.
    changes: changes::Changes,
    /// A stop in progress.
    stop: Option<Stop>,
    /// A drain before the stop (`--drain-delay`) in progress.
    drain: Option<drain::Drain>,
    /// This process.
    pid: Pid,
    /// When the master started.
    started: Instant,
    /// Removed when the master is dropped.
    _pid_file: Option<PidFile>,
}

impl Master {
    /// Runs until the server stops; returns the exit code.
    fn run_loop(&mut self) -> i32 {
        loop {
            self.answer_control();
            self.wait();
            self.serve_status();
            self.serve_control();
            self.pool.drain_output(false);
            self.handle_signals();
            self.end_drain_when_due();
            self.rollout.read_probe();
            self.reap_children();
            self.settle_probe();
            if let Some(code) = self.abandon_start_up() {
                return code;
            }
            if self.stop.is_some() {
                match self.finish_stop() {
                    Some(code) => return code,
                    None => continue,
                }
            }
            // Draining: the pool is kept as it is; no new build starts.
            if self.drain.is_none() {
                self.watch_file();
                self.start_reload();
            }
            self.check_workers();
            self.autoscale();
            self.drive_canary();
            self.share_listeners();
            self.manage_workers();
            self.upgrade_turn();
        }
    }

    /// Sleeps until a signal or a probe report arrives, the next spawn is due, or a tick passes.
    fn wait(&self) {
        let now = Instant::now();
        // Watching the library, or sizing the pool, wants a finer tick.
        let mut timeout = if self.rollout.watch.is_some() || self.pool.autoscaler.is_some() {
            WATCH_TICK
        } else {
            TICK
        };
        if self.canary_running() {
            timeout = timeout.min(canary::CANARY_TICK);
        }
        if self.stop.is_none()
            && self.pool.serving_count(self.rollout.generation) < self.current_target()
        {
            timeout = timeout.min(self.pool.next_spawn.saturating_duration_since(now));
        }
        if let Some(stop) = &self.stop {
            timeout = timeout.min(stop.deadline.saturating_duration_since(now));
        }
        if let Some(left) = self.drain_wake(now) {
            timeout = timeout.min(left);
        }
        if let Some(wake) = self.io.status.as_ref().and_then(|s| s.next_wake(now)) {
            timeout = timeout.min(wake);
        }
        if let Some(wake) = self.io.control.as_ref().and_then(|c| c.next_wake(now)) {
            timeout = timeout.min(wake);
        }
        let millis = timeout.as_millis().min(u16::MAX as u128) as u16;
        let mut fds = Vec::new();
        if let Some(sigfd) = &self.io.sigfd {
            fds.push(PollFd::new(sigfd.as_fd(), PollFlags::POLLIN));
        }
        fds.extend(
            self.rollout
                .probe_fds()
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
        );
        if let Some(link) = self.io.upgrade.poll_fd() {
            fds.push(PollFd::new(link, PollFlags::POLLIN));
        }
        if let Some(status) = &self.io.status {
            fds.extend(
                status
                    .poll_set()
                    .into_iter()
                    .map(|(fd, flags)| PollFd::new(fd, flags)),
            );
        }
        if let Some(control) = &self.io.control {
            fds.extend(
                control
                    .poll_set()
                    .into_iter()
                    .map(|(fd, flags)| PollFd::new(fd, flags)),
            );
        }
        fds.extend(
            self.pool
                .output_fds()
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
        );
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => log::error!("master: poll failed: {e}"),
        }
    }

    /// Answers the status endpoint's clients that are ready.
    fn serve_status(&mut self) {
        if let Some(mut status) = self.io.status.take() {
            status.service(|| self.snapshot());
            self.io.status = Some(status);
        }
    }

    /// Reads the signalfd and acts on each signal in order.
    fn handle_signals(&mut self) {
        let pending = match &mut self.io.sigfd {
            Some(fd) => os_signals::drain(fd),
            None => Vec::new(),
        };
        for signal in pending {
            self.handle_signal(signal);
        }
    }

    fn handle_signal(&mut self, signal: Signal) {
        let stopping = self.phase() != drain::Phase::Serving;
        match signals::master_action(signal) {
            MasterAction::GracefulStop => self.on_term_signal(signal.as_str()),
            MasterAction::QuickStop => {
                self.begin_stop(true, signal.as_str());
            }
            MasterAction::Reload if !stopping => self.request_reload("SIGHUP", None),
            MasterAction::AddWorker if !stopping => {
                if self.pool.target < MAX_WORKERS {
                    self.pool.target += 1;
                }
                log::info!("SIGTTIN: workers now {}", self.pool.target);
                self.io.notifier.status(&self.status_line());
            }
            MasterAction::RemoveWorker if !stopping => {
                if self.pool.target > 1 {
                    self.pool.target -= 1;
                    self.pool.shrink(self.rollout.generation);
                }
                log::info!("SIGTTOU: workers now {}", self.pool.target);
                self.io.notifier.status(&self.status_line());
            }
            MasterAction::ReopenLogs => self.reopen_logs(),
            MasterAction::Upgrade => {
                if let Err(line) = self.begin_upgrade(None) {
                    log::warn!("SIGUSR2: {line}");
                }
            }
            MasterAction::Reload
            | MasterAction::AddWorker
            | MasterAction::RemoveWorker
            | MasterAction::ChildExited
            | MasterAction::WorkerNudge
            | MasterAction::Ignore => {}
        }
    }

    /// Gives up when no worker could ever boot since start-up.
    fn abandon_start_up(&mut self) -> Option<i32> {
        if self.pool.ever_ready || self.pool.failures < STARTUP_BOOT_ATTEMPTS {
            return None;
        }
        log::error!(
            "no worker could boot in {STARTUP_BOOT_ATTEMPTS} attempts since start-up; giving up"
        );
        self.cancel_upgrade("start-up abandoned");
        self.pool.signal_all(Signal::SIGKILL);
        self.rollout.kill_probe();
        while waitpid(None, None).is_ok() {}
        Some(exit_code::WORKER_BOOT)
    }

    /// Stops (`quick`: at once), for `cause` (which begins the log line);
    /// returns that line. Ends a drain in progress.
    fn begin_stop(&mut self, quick: bool, cause: &str) -> String {
        if self.stop.as_ref().is_some_and(|s| s.quick || !quick) {
            return "already stopping".to_owned(); // at least this fast
        }
        self.cancel_upgrade("the server is stopping");
        let (grace, how) = if quick {
            (QUICK_STOP_GRACE, "quick")
        } else {
            (
                Duration::from_secs(self.settings.config.graceful_timeout),
                "graceful",
            )
        };
        let line = format!(
            "{cause}: shutting down ({how}, up to {} s)",
            grace.as_secs()
        );
        log::info!("{line}");
        if self.drain.take().is_some() {
            // STOPPING=1 went at the TERM.
            self.io.notifier.status(&format!("stopping ({how})"));
        } else {
            self.io.notifier.stopping(&format!("stopping ({how})"));
        }
        // Stop taking connections at once: with the workers' copies closed
        // too, connecting fails fast (or reaches a --reuse-port successor).
        self.io.listeners.close_all();
        self.stop = Some(Stop {
            deadline: Instant::now() + grace,
            quick,
            killed: false,
        });
        self.pool.signal_all(if quick {
            os_signals::WORKER_QUICK
        } else {
            os_signals::WORKER_GRACEFUL
        });
        line
    }

    /// While stopping: the exit code once every worker is gone; kills the
    /// workers left at the deadline.
    fn finish_stop(&mut self) -> Option<i32> {
        let stop = self.stop.as_mut()?;
        if self.pool.workers.is_empty() {
            self.rollout.kill_probe();
            return Some(exit_code::OK);
        }
        if Instant::now() >= stop.deadline && !stop.killed {
            stop.killed = true;
            log::warn!(
                "{} worker(s) still running after the {} stop timeout; killing them",
                self.pool.workers.len(),
                if stop.quick { "quick" } else { "graceful" }
            );
            self.pool.signal_all(Signal::SIGKILL);
        }
        None
    }

    /// The server's state for /metrics and /status.
    fn snapshot(&self) -> Snapshot {
        let (workers, totals) = self.pool.views(&self.counters.retired_totals);
        Snapshot {
            app: self.settings.app_title(),
            generation: self.rollout.generation,
            build: self.rollout.build.hash.clone(),
            uptime_s: self.started.elapsed().as_secs(),
            workers,
            totals,
            spawns: self.counters.spawns,
            target: self.pool.target as u64,
            resizes: self
                .pool
                .autoscaler
                .as_ref()
                .map_or((0, 0), |a| (a.grown, a.shrunk)),
            deaths: self.counters.exits.clone(),
            reloads: self.counters.reloads,
            refused_builds: self.counters.refused_builds,
            abandoned_builds: self.counters.abandoned_builds,
            abandoned: self
                .rollout
                .abandoned
                .iter()
                .map(|a| AbandonedView {
                    build: a.hash.clone(),
                    generation: a.generation,
                    reason: a.why.clone(),
                    bad: a.bad,
                    ago_s: a.at.elapsed().as_secs(),
                })
                .collect(),
            early_deaths: self.counters.early_deaths,
            spawn_backoff_ms: self
                .pool
                .next_spawn
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
            backlogs: self
                .io
                .listeners
                .iter()
                .filter_map(|l| {
                    let (queued, max) = l.queue()?;
                    Some(Backlog {
                        url: l.url(),
                        queued,
                        max,
                    })
                })
                .collect(),
            stopping: self.stop_state(),
            certificates: self.settings.tls.as_ref().map_or_else(Vec::new, |tls| {
                tls.certificates
                    .iter()
                    .map(|c| CertificateView {
                        file: c.file.clone(),
                        subject: c.subject.clone(),
                        not_after: c.not_after,
                    })
                    .collect()
            }),
            // The endpoint fills in its own figures.
            status_endpoint: Default::default(),
            generations: self.generation_views(),
            rollbacks: self.counters.rollbacks.clone(),
            canary: self.canary_view(),
        }
    }

    /// One line on the server's state, for the service manager.
    fn status_line(&self) -> String {
        format!(
            "{} worker(s), generation {} (build {})",
            self.pool.workers.len(),
            self.rollout.generation,
            self.rollout.build.hash
        )
    }
}
