//! The pool of workers: forking them, reaping them, their deadlines, and the
//! pool's size (the target, TTIN/TTOU, the adaptive pool's glue).
//!
//! A worker's life as the master sees it: forked on the current build
//! ([`Master::spawn_worker`]), ready once it says so in the scoreboard, told
//! to retire when its build is replaced, the pool shrinks or it asks to be
//! replaced, stopped once the pool can spare it, killed past a deadline
//! ([`overdue`]), reaped with its cause logged ([`exit_category`]). A worker
//! that exits before it was ready is a boot failure, and one that dies
//! within [`EARLY_DEATH`] of becoming ready an early death: both are
//! failures, and the next spawn waits a growing pause ([`boot_backoff`],
//! one mechanism for both) until a minute passes without one
//! ([`HEALTHY_RESET`]). A crash loop is logged with a count at 1, 2, 4, 8,
//! ... failures ([`worth_logging`]), not once per death.
//!
//! The forked child never returns here: it closes the master-only
//! descriptors, runs the worker under [`crate::os::process::leave_child`],
//! and leaves with the worker's exit code (or
//! [`crate::exit_code::CHILD_PANICKED`]).

use std::{
    collections::BTreeMap,
    os::fd::BorrowedFd,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::{
        signal::{kill, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{fork, ForkResult, Pid},
};

use crate::{
    config::ReloadStrategy,
    exit_code,
    master::{
        autoscale::{Autoscaler, Decision, Load},
        settings, Master,
    },
    os::process,
    os::signals as os_signals,
    report::logging,
    report::metrics::WorkerView,
    scoreboard::{self, RetireReason, Scoreboard, State},
    worker::{self, WorkerArgs},
};

/// First delay before respawning after a worker failed to boot.
const BOOT_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest delay between boot attempts.
const BOOT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A worker that dies (unasked) within this long of becoming ready died
/// early: a failure like a boot failure, so its slot is restarted only after
/// the back-off. Five seconds catches an app that crashes right after boot
/// (or on its first requests) without counting workers that served a while.
pub(super) const EARLY_DEATH: Duration = Duration::from_secs(5);
/// A minute without a boot failure or an early death ends a crash loop:
/// the back-off starts again from [`BOOT_BACKOFF_BASE`].
pub(super) const HEALTHY_RESET: Duration = Duration::from_secs(60);
/// How long a timed-out worker gets to answer 504 and exit before SIGKILL.
const TIMEOUT_KILL_GRACE: Duration = Duration::from_secs(2);

/// Why a worker is on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retire {
    /// Its generation is no longer current.
    Outdated,
    /// The pool shrank (TTOU, or the adaptive pool).
    Shrink,
    /// Its generation was abandoned (its build does not boot).
    Abandoned,
    /// It asked to be replaced.
    Asked(RetireReason),
}

impl Retire {
    fn describe(self) -> &'static str {
        match self {
            Retire::Outdated => "its build was replaced",
            Retire::Shrink => "the pool shrank (TTOU)",
            Retire::Abandoned => "its build was abandoned",
            Retire::Asked(r) => r.describe(),
        }
    }
}

/// A worker the master forked.
pub(super) struct WorkerRec {
    pub id: u32,
    pub slot: usize,
    pub generation: u32,
    pub spawned: Instant,
    pub ready: bool,
    /// When the master saw it ready.
    pub ready_at: Option<Instant>,
    /// Set when the worker should go once the pool can spare it.
    pub retire: Option<Retire>,
    /// When it was told to stop (TERM or the timeout signal).
    pub signalled: Option<Instant>,
    /// It was sent SIGKILL.
    pub killed: bool,
    /// It was stopped for running past --timeout.
    pub timed_out: bool,
    /// Its stdout and stderr, which the master logs line by line.
    pub output: Vec<logging::OutputPipe>,
}

impl WorkerRec {
    /// It serves `generation` and is not on its way out.
    pub fn serves(&self, generation: u32) -> bool {
        self.retire.is_none() && self.generation == generation
    }

    /// How the log names it.
    fn tag(&self, pid: Pid) -> String {
        format!("worker {} (pid {pid})", self.id)
    }
}

/// The workers, the pool's size, and the scoreboard they report in.
pub(super) struct Pool {
    pub workers: BTreeMap<Pid, WorkerRec>,
    /// Workers take turns at the listeners (while a canary runs; see
    /// `Slot::set_take_turns`); new workers get it from here.
    pub take_turns: bool,
    /// How many workers should serve the current build.
    pub target: usize,
    /// Failures in a row on the current build: boot failures and early
    /// deaths ([`EARLY_DEATH`]); the back-off's count. Reset by a new
    /// generation or a minute without one ([`HEALTHY_RESET`]).
    pub failures: u32,
    /// When the last failure was.
    pub last_failure: Option<Instant>,
    /// A worker of the current generation has been ready (it boots).
    pub current_booted: bool,
    /// No spawn before this (boot backoff).
    pub next_spawn: Instant,
    /// A worker has been ready at least once since start-up.
    pub ever_ready: bool,
    pub scoreboard: Scoreboard,
    /// The adaptive pool (`--workers-max`).
    pub autoscaler: Option<Autoscaler>,
}

impl Pool {
    /// Counts a failure (a boot failure or an early death) and puts the next
    /// spawn off by the back-off; returns the failures in a row.
    pub fn note_failure(&mut self) -> u32 {
        self.failures = self.failures.saturating_add(1);
        let now = Instant::now();
        self.last_failure = Some(now);
        self.next_spawn = now + boot_backoff(self.failures);
        self.failures
    }

    /// Ends a crash loop once a minute passed without a failure.
    pub fn forget_old_failures(&mut self) {
        if self
            .last_failure
            .is_some_and(|at| at.elapsed() >= HEALTHY_RESET)
        {
            if self.failures > 1 {
                log::info!(
                    "no worker failed for {} s: the back-off starts again from {} ms (after {} failures in a row)",
                    HEALTHY_RESET.as_secs(),
                    BOOT_BACKOFF_BASE.as_millis(),
                    self.failures
                );
            }
            self.failures = 0;
            self.last_failure = None;
        }
    }

    /// Workers of `generation` not on their way out.
    pub fn serving(&self, generation: u32) -> impl Iterator<Item = &WorkerRec> {
        self.workers.values().filter(move |w| w.serves(generation))
    }

    /// How many workers serve `generation`.
    pub fn serving_count(&self, generation: u32) -> usize {
        self.serving(generation).count()
    }

    /// Workers marked to retire and not told yet: (spawned, pid).
    pub fn leaving(&self) -> Vec<(Instant, Pid)> {
        self.workers
            .iter()
            .filter(|(_, w)| w.retire.is_some() && w.signalled.is_none())
            .map(|(pid, w)| (w.spawned, *pid))
            .collect()
    }

    /// Marks every worker not yet leaving to retire for `why`.
    pub fn retire_all(&mut self, why: Retire) {
        for rec in self.workers.values_mut() {
            rec.retire.get_or_insert(why);
        }
    }

    /// Marks the highest-numbered worker of `generation` to retire (TTOU).
    pub fn shrink(&mut self, generation: u32) {
        if let Some(rec) = self
            .workers
            .values_mut()
            .filter(|w| w.serves(generation))
            .max_by_key(|w| w.id)
        {
            rec.retire = Some(Retire::Shrink);
        }
    }

    /// Tells `pid` to finish its requests and exit.
    pub fn stop_gracefully(&mut self, pid: Pid) {
        let Some(rec) = self.workers.get_mut(&pid) else {
            return;
        };
        let reason = rec.retire.map(Retire::describe).unwrap_or("");
        log::info!("retiring {}: {reason}", rec.tag(pid));
        if let Some(slot) = self.scoreboard.slot(rec.slot) {
            slot.request_stop();
        }
        let _ = kill(pid, os_signals::WORKER_GRACEFUL);
        rec.signalled = Some(Instant::now());
    }

    /// Sends `signal` to every worker (the server stops: with a graceful
    /// stop's flag in the scoreboard, which has each worker take its
    /// listeners' accept queues before it closes them).
    pub fn signal_all(&self, signal: Signal) {
        for (pid, rec) in &self.workers {
            if signal == os_signals::WORKER_GRACEFUL {
                if let Some(slot) = self.scoreboard.slot(rec.slot) {
                    slot.request_server_stop();
                }
            }
            let _ = kill(*pid, signal);
        }
    }

    /// Passes what the workers printed on to the log (`last`: all of it).
    pub fn drain_output(&mut self, last: bool) {
        for (pid, rec) in self.workers.iter_mut() {
            let tag = rec.tag(*pid);
            for pipe in &mut rec.output {
                pipe.drain(&tag, last);
            }
        }
    }

    /// The workers' output pipes, to poll.
    pub fn output_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.workers
            .values()
            .flat_map(|rec| rec.output.iter().filter_map(|p| p.fd()))
    }

    /// In a forked child: closes the master's ends of every worker's output
    /// pipes (master-only) by taking them.
    pub fn close_output_pipes(&mut self) {
        take_output_pipes(&mut self.workers);
    }

    /// The request a worker has had in hand longest: its lane, request line,
    /// and how long it has run.
    fn current_request(&self, slot: usize) -> Option<(usize, String, Duration)> {
        let (lane, start) = self.scoreboard.oldest_request(slot)?;
        let line = self.scoreboard.lane(slot, lane)?.request_line();
        let ran = scoreboard::now_ms().saturating_sub(start);
        Some((lane, line, Duration::from_millis(ran)))
    }

    /// The workers as /status shows them, and the request totals (those of
    /// workers gone, `retired`, plus the live ones).
    pub fn views(
        &self,
        retired: &scoreboard::RequestTotals,
    ) -> (Vec<WorkerView>, scoreboard::RequestTotals) {
        let mut totals = retired.clone();
        let mut views: Vec<WorkerView> = self
            .workers
            .iter()
            .filter_map(|(pid, rec)| {
                let slot = self.scoreboard.slot(rec.slot)?;
                totals.add(slot);
                totals.pending_output += slot.pending_output();
                Some(WorkerView {
                    id: rec.id,
                    pid: pid.as_raw(),
                    state: match slot.state() {
                        State::Booting => "booting",
                        State::Idle => "idle",
                        State::Busy => "busy",
                        State::Stopping | State::Free => "stopping",
                    },
                    generation: rec.generation,
                    requests: slot.requests(),
                    current: self
                        .current_request(rec.slot)
                        .map(|(_, line, ran)| (line, ran.as_millis() as u64)),
                    rss_kib: slot.rss_kib(),
                    websockets: slot.websockets(),
                })
            })
            .collect();
        views.sort_by_key(|w| w.id);
        (views, totals)
    }
}

/// Closes the master's ends of the output pipes of `workers` by taking them.
fn take_output_pipes(workers: &mut BTreeMap<Pid, WorkerRec>) {
    for rec in workers.values_mut() {
        drop(std::mem::take(&mut rec.output));
    }
}

/// Whether the `n`th failure in a row is logged: the 1st, 2nd, 4th, 8th, ...
/// (a crash loop costs a few lines an hour, never one per death).
pub(super) fn worth_logging(n: u32) -> bool {
    n.is_power_of_two()
}

/// How long to wait before the next spawn after `failures` failures in a row.
pub(super) fn boot_backoff(failures: u32) -> Duration {
    BOOT_BACKOFF_BASE
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(BOOT_BACKOFF_MAX)
}

/// The pool as the spawn decision sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct PoolCounts {
    /// Workers wanted on the current build.
    pub target: usize,
    /// Workers on the current build not on their way out.
    pub serving: usize,
    /// Of those, not ready yet.
    pub booting: usize,
    /// Workers of older builds are still there (a rollout is under way).
    pub rolling: bool,
}

/// How many workers to fork now: up to the target; during a chain reload
/// one at a time (none while one boots); after a boot failure one attempt
/// per backoff period.
pub(super) fn spawns_wanted(p: PoolCounts, chain: bool, after_failure: bool) -> usize {
    let missing = p.target.saturating_sub(p.serving);
    if chain && p.rolling {
        return if p.booting > 0 { 0 } else { missing.min(1) };
    }
    if after_failure {
        return missing.min(1);
    }
    missing
}

/// What a deadline check needs to know about one worker, as plain data.
#[derive(Debug, Clone, Copy)]
pub(super) struct WorkerClock {
    pub ready: bool,
    pub spawned: Instant,
    pub timed_out: bool,
    pub signalled: Option<Instant>,
    /// Its longest-running request: (lane, start in scoreboard ms).
    pub oldest: Option<(usize, u64)>,
    /// Its threads.
    pub threads: u32,
    pub state: State,
    /// When its event loop last looked up (scoreboard ms).
    pub heartbeat_ms: u64,
    /// Why it asked to be replaced, if it did.
    pub retire_requested: Option<RetireReason>,
}

/// The limits a deadline check applies.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadlines {
    pub boot_timeout: Duration,
    pub timeout: Option<Duration>,
    pub graceful: Duration,
}

/// A deadline a worker has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overdue {
    /// Not ready within --boot-timeout.
    Boot,
    /// The request of this lane has run this long, past --timeout.
    Request(usize, Duration),
    /// Idle, yet its event loop gave no sign of life for this long (past --timeout).
    Stuck(Duration),
    /// Told to stop this grace period ago, and still there.
    Stop(Duration),
}

/// Which deadline, if any, the worker `w` has passed at `now` (`now_ms` on
/// the scoreboard's clock).
pub(super) fn overdue(
    w: &WorkerClock,
    now: Instant,
    now_ms: u64,
    d: &Deadlines,
) -> Option<Overdue> {
    if !w.ready && now.duration_since(w.spawned) > d.boot_timeout {
        return Some(Overdue::Boot);
    }
    if let Some(limit) = d.timeout.filter(|_| !w.timed_out) {
        if let Some((lane, start)) = w.oldest {
            let ran = Duration::from_millis(now_ms.saturating_sub(start));
            if ran > limit {
                return Some(Overdue::Request(lane, ran));
            }
        }
        // A worker's event loop looks up between requests; a threaded one's
        // never stops looking up.
        let looking_up = w.oldest.is_none() || w.threads > 1;
        if w.ready && looking_up && matches!(w.state, State::Idle | State::Busy) {
            let silent = Duration::from_millis(now_ms.saturating_sub(w.heartbeat_ms));
            if silent > limit {
                return Some(Overdue::Stuck(silent));
            }
        }
    }
    // A threaded worker that timed out serves its other requests to the end,
    // as in any graceful stop.
    let grace = if w.timed_out && w.retire_requested != Some(RetireReason::TimedOut) {
        TIMEOUT_KILL_GRACE
    } else {
        d.graceful
    };
    w.signalled
        .filter(|at| now.duration_since(*at) > grace)
        .map(|_| Overdue::Stop(grace))
}

/// How a worker ended, as /metrics counts it.
pub(super) fn exit_category(
    status: WaitStatus,
    timed_out: bool,
    booted: bool,
    killed: bool,
) -> &'static str {
    match status {
        _ if timed_out => "timeout",
        _ if !booted => "boot_failure",
        WaitStatus::Exited(_, exit_code::OK) => "exit",
        WaitStatus::Signaled(_, Signal::SIGKILL, _) if killed => "killed",
        WaitStatus::Signaled(..) => "crash",
        _ => "error",
    }
}

/// One ready worker of the current build, as the adaptive pool sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Activity<K> {
    pub id: K,
    pub state: State,
    pub idle_ms: u64,
}

/// The load for the adaptive pool, and the idlest idle worker (its idle
/// time and id), from the ready workers of the current build.
pub(super) fn load_of<K: Copy>(
    ready: &[Activity<K>],
    queued: u32,
    target: usize,
) -> (Load, Option<(u64, K)>) {
    let busy = ready.iter().filter(|w| w.state == State::Busy).count();
    let idlest =
        ready
            .iter()
            .filter(|w| w.state == State::Idle)
            .fold(None, |most: Option<(u64, K)>, w| match most {
                Some((idle, _)) if idle >= w.idle_ms => most,
                _ => Some((w.idle_ms, w.id)),
            });
    let load = Load {
        ready: ready.len(),
        busy,
        queued,
        target,
    };
    (load, idlest)
}

impl Master {
    /// Collects every exited child and says why it exited.
    pub(super) fn reap_children(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("master: waitpid failed: {e}");
                    break;
                }
            };
            if !self.rollout.probe_exited(status) && !self.successor_exited(status) {
                self.reaped_worker(status);
            }
        }
        self.forget_unused_builds();
    }

    /// Accounts for a worker that exited with `status`.
    fn reaped_worker(&mut self, status: WaitStatus) {
        let (cause, clean) = match status {
            WaitStatus::Exited(_, exit_code::OK) => ("with status 0".to_owned(), true),
            WaitStatus::Exited(_, code) => (format!("with status {code}"), false),
            WaitStatus::Signaled(_, sig, core) => (
                format!(
                    "killed by {}{}",
                    sig.as_str(),
                    if core { " (core dumped)" } else { "" }
                ),
                false,
            ),
            _ => return,
        };
        let Some(pid) = status.pid() else { return };
        let pool = &mut self.pool;
        let Some(mut rec) = pool.workers.remove(&pid) else {
            return;
        };
        let tag = rec.tag(pid);
        for pipe in &mut rec.output {
            pipe.drain(&tag, true);
        }
        let during = pool
            .current_request(rec.slot)
            .map(|(_, line, ran)| {
                format!(" while handling \"{line}\" (for {} ms)", ran.as_millis())
            })
            .unwrap_or_default();
        let Some(slot) = pool.scoreboard.slot(rec.slot) else {
            return;
        };
        let booted = rec.ready || slot.was_ready();
        let boot_error = slot.boot_error();
        let served = slot.requests();
        self.counters.retired_totals.add(slot);
        let category = exit_category(status, rec.timed_out, booted, rec.killed);
        let mut totals = scoreboard::RequestTotals::default();
        totals.add(slot);
        self.counters
            .generations
            .retire(rec.generation, &totals, category);
        *self.counters.exits.entry(category).or_insert(0) += 1;
        slot.release();
        let expected = self.stop.is_some() || rec.retire.is_some();
        let current = self.stop.is_none() && rec.generation == self.rollout.generation;
        let early = rec.ready_at.is_none_or(|at| at.elapsed() < EARLY_DEATH);
        if expected && clean {
            log::info!("{tag} exited {cause} after {served} request(s)");
        } else if rec.timed_out {
            log::warn!("{tag} exited {cause} after its request timed out");
        } else if !booted && current {
            let why = boot_error.map(|e| format!(": {e}")).unwrap_or_default();
            let n = pool.note_failure();
            let delay = boot_backoff(n);
            let line = format!(
                "{tag} exited {cause} before it was ready (boot failure {n}){why}; next attempt in {:.1} s",
                delay.as_secs_f64()
            );
            if worth_logging(n) {
                log::error!("{line}");
            } else {
                log::debug!("{line}");
            }
            self.judge_rollout(&format!("{tag} exited {cause} before it was ready{why}"));
        } else if booted && early && current && !rec.killed && rec.retire.is_none() {
            // It did boot (even if the master had not yet seen it ready).
            pool.current_booted = true;
            let n = pool.note_failure();
            self.counters.early_deaths += 1;
            let delay = boot_backoff(n);
            let age = rec.ready_at.map_or(0.0, |at| at.elapsed().as_secs_f64());
            let death = format!("{tag} exited {cause}{during} {age:.1} s after it was ready");
            let line = if n == 1 {
                format!("{death}; next start in {:.1} s", delay.as_secs_f64())
            } else {
                format!(
                    "workers are crash-looping: {n} failures in a row (deaths within {} s of boot, or boot failures); last: {death}; next start in {:.1} s (logged at 1, 2, 4, 8, ... failures)",
                    EARLY_DEATH.as_secs(),
                    delay.as_secs_f64()
                )
            };
            if worth_logging(n) {
                log::error!("{line}");
            } else {
                log::debug!("{line}");
            }
            self.judge_rollout(&death);
        } else {
            log::error!("{tag} exited {cause}{during}");
        }
    }

    /// Reads the scoreboard: readiness, requests to retire, boot and request timeouts.
    pub(super) fn check_workers(&mut self) {
        let now = Instant::now();
        let now_ms = scoreboard::now_ms();
        let config = &self.settings.config;
        let deadlines = Deadlines {
            boot_timeout: settings::boot_timeout(config),
            timeout: config.timeout(),
            graceful: Duration::from_secs(config.graceful_timeout),
        };
        let generation = self.rollout.generation;
        let pool = &mut self.pool;
        pool.forget_old_failures();
        let pids: Vec<Pid> = pool.workers.keys().copied().collect();
        for pid in pids {
            let Some(rec) = pool.workers.get_mut(&pid) else {
                continue;
            };
            let Some(slot) = pool.scoreboard.slot(rec.slot) else {
                continue;
            };
            if !rec.ready && slot.was_ready() {
                rec.ready = true;
                rec.ready_at = Some(now);
                pool.ever_ready = true;
                if rec.generation == generation {
                    pool.current_booted = true;
                }
            }
            if rec.retire.is_none() {
                if let Some(reason) = slot.retire_requested() {
                    log::info!(
                        "{} asks to be replaced: {} ({} requests, {:.1} MiB)",
                        rec.tag(pid),
                        reason.describe(),
                        slot.requests(),
                        slot.rss_kib() as f64 / 1024.0
                    );
                    rec.retire = Some(Retire::Asked(reason));
                    if reason == RetireReason::TimedOut {
                        // A threaded worker past --timeout finishes its other
                        // requests: it is stopped gracefully once replaced,
                        // like any retiring worker.
                        rec.signalled = None;
                    }
                }
            }
            if rec.killed {
                continue;
            }
            let clock = WorkerClock {
                ready: rec.ready,
                spawned: rec.spawned,
                timed_out: rec.timed_out,
                signalled: rec.signalled,
                oldest: pool.scoreboard.oldest_request(rec.slot),
                threads: slot.threads(),
                state: slot.state(),
                heartbeat_ms: slot.heartbeat_ms(),
                retire_requested: slot.retire_requested(),
            };
            let Some(overdue) = overdue(&clock, now, now_ms, &deadlines) else {
                continue;
            };
            let tag = rec.tag(pid);
            let limit = deadlines.timeout.map_or(0, |t| t.as_secs());
            match overdue {
                Overdue::Boot => log::error!(
                    "{tag} not ready after {} s (--boot-timeout); killing it",
                    deadlines.boot_timeout.as_secs()
                ),
                Overdue::Request(lane, ran) => log::error!(
                    "{tag} timed out: \"{}\" has run {:.1} s (--timeout {limit}); stopping it",
                    pool.scoreboard
                        .lane(rec.slot, lane)
                        .map(|l| l.request_line())
                        .unwrap_or_default(),
                    ran.as_secs_f64(),
                ),
                Overdue::Stuck(silent) => log::error!(
                    "{tag} has not looked up from its event loop for {:.1} s (--timeout {limit}); killing it",
                    silent.as_secs_f64(),
                ),
                Overdue::Stop(grace) => log::warn!(
                    "{tag} still running {} s after it was told to stop; killing it",
                    grace.as_secs()
                ),
            }
            if let Overdue::Request(lane, _) = overdue {
                // A catchable signal first: the worker answers 504 and says
                // where it was (a threaded one then finishes its other requests).
                slot.set_timed_out_lane(lane);
                let _ = kill(pid, os_signals::WORKER_TIMED_OUT);
                rec.timed_out = true;
                rec.signalled = Some(now);
            } else {
                let _ = kill(pid, Signal::SIGKILL);
                rec.killed = true;
            }
        }
    }

    /// `--workers-max`: grows the pool when it is saturated, retires a worker
    /// idle past `--idle-timeout`.
    pub(super) fn autoscale(&mut self) {
        let generation = self.rollout.generation;
        let pool = &mut self.pool;
        if pool.autoscaler.is_none() || pool.workers.values().any(|w| w.generation != generation) {
            return; // not asked for, or a rollout is under way
        }
        let ready: Vec<Activity<Pid>> = pool
            .workers
            .iter()
            .filter(|(_, w)| w.retire.is_none() && w.ready)
            .filter_map(|(pid, w)| {
                let slot = pool.scoreboard.slot(w.slot)?;
                Some(Activity {
                    id: *pid,
                    state: slot.state(),
                    idle_ms: slot.idle_ms(),
                })
            })
            .collect();
        let queued: u32 = self
            .io
            .listeners
            .iter()
            .filter_map(|l| l.queue())
            .map(|(q, _)| q)
            .sum();
        let (load, idlest) = load_of(&ready, queued, pool.target);
        let Some(scaler) = &mut pool.autoscaler else {
            return;
        };
        if let Decision::Grow(to) = scaler.decide(load, Instant::now()) {
            log::info!(
                "all {} worker(s) busy, {queued} connection(s) waiting: growing the pool to {to} (--workers-max {})",
                load.ready,
                scaler.max
            );
            pool.target = to;
            return;
        }
        let Some((idle_ms, pid)) = idlest else {
            return;
        };
        let idle = Duration::from_millis(idle_ms);
        if scaler.may_retire(pool.target, idle) {
            scaler.shrunk += 1;
            pool.target -= 1;
            if let Some(rec) = pool.workers.get_mut(&pid) {
                rec.retire = Some(Retire::Shrink);
                log::info!(
                    "{} idle for {:.0} s: shrinking the pool to {} (--idle-timeout)",
                    rec.tag(pid),
                    idle.as_secs_f64(),
                    pool.target
                );
            }
        }
    }

    /// Brings the pool to the target on the current build, retiring old workers
    /// only as new ones are ready.
    pub(super) fn manage_workers(&mut self) {
        self.retire_spare();
        self.keep_previous_pool();
        let target = self.current_target();
        if self.pool.serving_count(self.rollout.generation) < target {
            self.notice_file_change();
        }
        self.note_rollout_done();
        if Instant::now() < self.pool.next_spawn {
            return;
        }
        let generation = self.rollout.generation;
        let counts = PoolCounts {
            target,
            serving: self.pool.serving_count(generation),
            booting: self.pool.serving(generation).filter(|w| !w.ready).count(),
            rolling: self
                .pool
                .workers
                .values()
                .any(|w| w.generation != generation),
        };
        let chain = self.settings.config.reload_strategy == ReloadStrategy::Chain;
        for _ in 0..spawns_wanted(counts, chain, self.pool.failures > 0) {
            if !self.spawn_worker() {
                break;
            }
        }
    }

    /// Forks one worker on the current build. Returns false if it could not.
    fn spawn_worker(&mut self) -> bool {
        self.spawn_on(self.rollout.generation).is_some()
    }

    /// Forks one worker on the build of `generation` (the current one, or one
    /// still held); returns its pid, or `None` if it could not.
    pub(super) fn spawn_on(&mut self, generation: u32) -> Option<Pid> {
        let build = if generation == self.rollout.generation {
            &self.rollout.build
        } else {
            self.rollout.old_builds.get(&generation)?
        };
        let spec = build.spec(&self.settings.config.app);
        let build = build.clone();
        let config = &self.settings.config;
        let Some(index) = self.pool.scoreboard.free_index() else {
            log::error!("no free scoreboard slot for another worker");
            return None;
        };
        let slot = self
            .pool
            .scoreboard
            .claim(index, generation, config.threads)?;
        slot.set_take_turns(self.pool.take_turns);
        let id = index as u32 + 1;
        let max_requests = match config.max_requests {
            0 => None,
            n => Some(n + jitter(config.max_requests_jitter)),
        };
        let spawned_at = Instant::now();
        let pipes = match (
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC),
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC),
        ) {
            (Ok(out), Ok(err)) => (out, err),
            (Err(e), _) | (_, Err(e)) => {
                slot.release();
                log::error!("cannot create pipes for a worker's output: {e}");
                self.pool.next_spawn = Instant::now() + BOOT_BACKOFF_BASE;
                return None;
            }
        };
        let ((out_r, out_w), (err_r, err_w)) = pipes;
        // SAFETY: the master is single-threaded, so the child inherits a consistent state.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // From here on this is the worker: it never returns into the
                // master's code and runs none of its destructors.
                drop((out_r, err_r));
                self.io.close_master_only();
                self.rollout.close_master_only(&build);
                take_output_pipes(&mut self.pool.workers);
                let config = &self.settings.config;
                process::leave_child(|| -> i32 {
                    #[cfg(debug_assertions)]
                    super::fault::inject(super::fault::WORKER_PANIC);
                    worker::run(WorkerArgs {
                        output: Some((out_w, err_w)),
                        id,
                        generation,
                        spec: spec.clone(),
                        listeners: self.io.listeners.take(),
                        serve: config.serve_options(),
                        slot_index: index,
                        scoreboard: self.pool.scoreboard.clone(),
                        access_log: self.io.access_log.take(),
                        tls: self.settings.tls.clone(),
                        access_log_path: config.access_logfile.clone(),
                        error_log_path: config.error_logfile.clone(),
                        max_requests,
                        max_memory_kib: config.max_worker_memory * 1024,
                        identity: self.settings.identity.clone(),
                        title: format!(
                            "host: worker {id} gen {generation} [{}]",
                            self.settings.app_title()
                        ),
                        spawned_at,
                        master_pid: self.pid,
                    })
                })
            }
            Ok(ForkResult::Parent { child }) => {
                drop((out_w, err_w));
                let output = vec![
                    logging::OutputPipe::new(out_r, "stdout"),
                    logging::OutputPipe::new(err_r, "stderr"),
                ];
                self.counters.spawns += 1;
                slot.set_pid(child.as_raw());
                log::debug!("booting worker {id} (pid {child}) on generation {generation}");
                self.pool.workers.insert(
                    child,
                    WorkerRec {
                        id,
                        slot: index,
                        generation,
                        spawned: spawned_at,
                        ready: false,
                        ready_at: None,
                        retire: None,
                        signalled: None,
                        killed: false,
                        timed_out: false,
                        output,
                    },
                );
                Some(child)
            }
            Err(e) => {
                slot.release();
                log::error!("cannot fork a worker: {e}");
                self.pool.next_spawn = Instant::now() + BOOT_BACKOFF_BASE;
                None
            }
        }
    }
}

/// A number from 0 to `max`, different for each call (spreads worker restarts).
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(0);
    // SplitMix64 finaliser: scrambles the clock into a well-spread value.
    let mut z = nanos.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % (max + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_backoff_doubles_up_to_a_ceiling() {
        let cases = [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (10, 30_000),
            (40, 30_000),
        ];
        for (failures, ms) in cases {
            assert_eq!(
                boot_backoff(failures),
                Duration::from_millis(ms),
                "{failures}"
            );
        }
    }

    #[test]
    fn a_crash_loop_is_logged_at_powers_of_two() {
        let logged: Vec<u32> = (1..=100).filter(|&n| worth_logging(n)).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16, 32, 64]);
    }

    #[test]
    fn how_many_workers_to_spawn() {
        let counts = |target, serving, booting, rolling| PoolCounts {
            target,
            serving,
            booting,
            rolling,
        };
        // (pool, chain reload, after a boot failure, spawns)
        let cases = [
            (counts(4, 0, 0, false), false, false, 4),
            (counts(4, 4, 0, false), false, false, 0),
            (counts(4, 5, 0, false), false, false, 0),
            (counts(4, 1, 1, false), false, false, 3),
            // After a boot failure: one attempt per backoff period.
            (counts(4, 1, 0, false), false, true, 1),
            // A reload all at once: every missing worker at once.
            (counts(3, 0, 0, true), false, false, 3),
            // A chain reload: one at a time, none while one boots.
            (counts(3, 0, 0, true), true, false, 1),
            (counts(3, 1, 1, true), true, false, 0),
            (counts(3, 1, 0, true), true, false, 1),
            (counts(3, 3, 0, true), true, false, 0),
            // Chain only matters during a rollout.
            (counts(3, 0, 0, false), true, false, 3),
        ];
        for (pool, chain, failed, want) in cases {
            assert_eq!(
                spawns_wanted(pool, chain, failed),
                want,
                "{pool:?} chain {chain} after failure {failed}"
            );
        }
    }

    #[test]
    fn deadlines_a_worker_can_pass() {
        let now = Instant::now();
        let now_ms = 100_000;
        let ago = |s: u64| now - Duration::from_secs(s);
        let d = Deadlines {
            boot_timeout: Duration::from_secs(30),
            timeout: Some(Duration::from_secs(10)),
            graceful: Duration::from_secs(5),
        };
        let base = WorkerClock {
            ready: true,
            spawned: ago(100),
            timed_out: false,
            signalled: None,
            oldest: None,
            threads: 1,
            state: State::Idle,
            heartbeat_ms: now_ms - 1_000,
            retire_requested: None,
        };
        let secs = Duration::from_secs;
        let cases: Vec<(&str, WorkerClock, Option<Overdue>)> = vec![
            ("healthy and idle", base, None),
            (
                "booting within the limit",
                WorkerClock {
                    ready: false,
                    spawned: ago(10),
                    state: State::Booting,
                    ..base
                },
                None,
            ),
            (
                "booting too long",
                WorkerClock {
                    ready: false,
                    spawned: ago(31),
                    state: State::Booting,
                    ..base
                },
                Some(Overdue::Boot),
            ),
            (
                "a request within --timeout",
                WorkerClock {
                    oldest: Some((0, now_ms - 9_000)),
                    state: State::Busy,
                    heartbeat_ms: now_ms - 9_000,
                    ..base
                },
                None,
            ),
            (
                "a request past --timeout",
                WorkerClock {
                    oldest: Some((2, now_ms - 11_000)),
                    state: State::Busy,
                    ..base
                },
                Some(Overdue::Request(2, secs(11))),
            ),
            (
                "a single-threaded worker busy long is judged by its request",
                WorkerClock {
                    oldest: Some((0, now_ms - 5_000)),
                    state: State::Busy,
                    heartbeat_ms: now_ms - 20_000,
                    ..base
                },
                None,
            ),
            (
                "an idle loop that stopped looking up",
                WorkerClock {
                    heartbeat_ms: now_ms - 12_000,
                    ..base
                },
                Some(Overdue::Stuck(secs(12))),
            ),
            (
                "a threaded loop that stopped looking up",
                WorkerClock {
                    threads: 4,
                    oldest: Some((1, now_ms - 1_000)),
                    state: State::Busy,
                    heartbeat_ms: now_ms - 12_000,
                    ..base
                },
                Some(Overdue::Stuck(secs(12))),
            ),
            (
                "no --timeout: requests run on",
                WorkerClock {
                    oldest: Some((0, 0)),
                    state: State::Busy,
                    ..base
                },
                None,
            ),
            (
                "told to stop, within the grace",
                WorkerClock {
                    signalled: Some(ago(4)),
                    ..base
                },
                None,
            ),
            (
                "told to stop, past the grace",
                WorkerClock {
                    signalled: Some(ago(6)),
                    ..base
                },
                Some(Overdue::Stop(secs(5))),
            ),
            (
                "timed out: a short grace to answer 504",
                WorkerClock {
                    timed_out: true,
                    signalled: Some(ago(3)),
                    oldest: Some((0, 0)),
                    ..base
                },
                Some(Overdue::Stop(TIMEOUT_KILL_GRACE)),
            ),
            (
                "timed out, threaded, replaced: the graceful grace",
                WorkerClock {
                    timed_out: true,
                    signalled: Some(ago(3)),
                    retire_requested: Some(RetireReason::TimedOut),
                    ..base
                },
                None,
            ),
        ];
        for (what, clock, want) in cases {
            let limits = if what.starts_with("no --timeout") {
                Deadlines { timeout: None, ..d }
            } else {
                d
            };
            assert_eq!(overdue(&clock, now, now_ms, &limits), want, "{what}");
        }
    }

    #[test]
    fn how_a_worker_ended() {
        let pid = Pid::from_raw(42);
        let exited = |code| WaitStatus::Exited(pid, code);
        let signalled = |sig| WaitStatus::Signaled(pid, sig, false);
        // (status, timed out, booted, killed, category)
        let cases = [
            (exited(exit_code::OK), false, true, false, "exit"),
            (
                exited(exit_code::CHILD_PANICKED),
                false,
                true,
                false,
                "error",
            ),
            (
                exited(exit_code::WORKER_BOOT_FAILED),
                false,
                false,
                false,
                "boot_failure",
            ),
            (signalled(Signal::SIGKILL), true, true, true, "timeout"),
            (signalled(Signal::SIGKILL), false, true, true, "killed"),
            (signalled(Signal::SIGKILL), false, true, false, "crash"),
            (signalled(Signal::SIGSEGV), false, true, false, "crash"),
        ];
        for (status, timed_out, booted, killed, want) in cases {
            assert_eq!(
                exit_category(status, timed_out, booted, killed),
                want,
                "{status:?}"
            );
        }
    }

    #[test]
    fn the_adaptive_pool_sees_busy_workers_and_the_idlest() {
        let w = |id: u32, state, idle_ms| Activity { id, state, idle_ms };
        // (ready workers, busy, idlest)
        let cases = [
            (vec![], 0, None),
            (vec![w(1, State::Busy, 0), w(2, State::Busy, 0)], 2, None),
            (
                vec![
                    w(1, State::Idle, 50),
                    w(2, State::Busy, 900),
                    w(3, State::Idle, 70),
                ],
                1,
                Some((70, 3)),
            ),
            (
                vec![w(1, State::Idle, 70), w(2, State::Idle, 70)],
                0,
                Some((70, 1)),
            ),
            (
                vec![w(1, State::Booting, 500), w(2, State::Idle, 1)],
                0,
                Some((1, 2)),
            ),
        ];
        for (ready, busy, idlest) in cases {
            let (load, found) = load_of(&ready, 3, 2);
            assert_eq!(load.ready, ready.len());
            assert_eq!(load.busy, busy, "{ready:?}");
            assert_eq!((load.queued, load.target), (3, 2));
            assert_eq!(found, idlest, "{ready:?}");
        }
    }
}
