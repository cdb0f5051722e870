//! Builds and generations: watching the library file, taking a snapshot on a
//! reload, probing it, starting a generation, and retiring the old workers
//! one for one as new ones are ready.
//!
//! One probe runs at a time, alongside the loop (a reload never stalls it).
//! A build that fails its probe is refused and the running generation keeps
//! serving; a build that passes becomes current and every older worker is
//! marked to retire, but only stopped once a ready worker of the current
//! build can take its place ([`retire_now`]).
//!
//! A build can pass its probe yet not boot in workers (its `init` depends on
//! the worker, or on the moment). A new build never shrinks the pool: the
//! previous generation's build is held until the new one completes its
//! rollout; an old worker that dies meanwhile is replaced on it while no
//! worker of the new build has booted; and the new generation is abandoned
//! ([`should_abandon`]) after [`ABANDON_AFTER_FAILURES`] failures, at once
//! if none of its workers ever booted. Abandoning logs one line (build,
//! generation, why), retires its workers, makes the previous generation
//! current again (its workers stay; missing ones are respawned on it), and
//! marks the build bad: a later reload of the same unchanged file (same
//! [`FileStamp`]) is refused; a changed (or touched) file is tried.

use std::{collections::BTreeMap, io, os::fd::BorrowedFd, time::Instant};

use crate::{
    app::builds::{Build, FileStamp, Snapshots},
    app::probe::{Probe, ProbeAs},
    config::{Config, ReloadStrategy},
    master::{canary::Canary, changes::Ticket, pool::Retire, settings, Master},
};

/// How long the library file must stay unchanged before `--reload` takes it
/// (cargo replaces it in steps).
const RELOAD_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(500);

/// What a HUP names as the cause of its reload (it always restarts workers).
pub(super) const HUP_CAUSE: &str = "SIGHUP";

/// Failures in a row (boot failures, early deaths) of a new generation,
/// during its rollout, after which it is abandoned for the previous one.
pub(super) const ABANDON_AFTER_FAILURES: u32 = 3;

/// Generations whose build hash is remembered for per-generation metrics.
const BUILD_NAMES_KEPT: usize = 16;

/// Abandoned builds remembered (for /status and to refuse them again); the
/// oldest is forgotten first.
const ABANDONED_KEPT: usize = 8;

/// Whether a rollout with `failures` failures in a row gives up, given
/// whether a worker of its build ever `booted`: a build none of whose
/// workers ever booted is abandoned at its first failure; one that boots
/// but keeps failing, after [`ABANDON_AFTER_FAILURES`].
pub(super) fn should_abandon(failures: u32, booted: bool) -> bool {
    failures >= ABANDON_AFTER_FAILURES || (!booted && failures > 0)
}

/// A generation given up on, as /status shows it.
#[derive(Debug, Clone)]
pub(super) struct Abandoned {
    /// Its build hash.
    pub hash: String,
    /// Its generation number.
    pub generation: u32,
    /// Why (the last failure of one of its workers).
    pub why: String,
    /// The library file's stamp when it was taken: the same stamp again is refused.
    pub stamp: FileStamp,
    /// Whether the build itself is bad (not the same bytes as the build fallen back to).
    pub bad: bool,
    /// When.
    pub at: Instant,
}

/// A reload asked for: why, and the tickets waiting on its outcome.
#[derive(Debug, Default)]
pub(super) struct ReloadRequest {
    /// What asked for it (`SIGHUP`, `file changed`, ...).
    pub cause: &'static str,
    /// Who waits on it (`host ctl reload --wait`); several asks fold into one reload.
    pub tickets: Vec<Ticket>,
    /// The deploy's own rollout strategy (`host ctl deploy --canary`), over `--rollout`.
    pub strategy: Option<ReloadStrategy>,
}

/// A probe of a candidate build.
pub(super) struct PendingProbe {
    probe: Probe,
    build: Build,
    request: ReloadRequest,
}

/// `--reload`'s view of the library file.
pub(super) struct Watch {
    /// A changed stamp seen, and since when it has been stable.
    candidate: Option<(FileStamp, Instant)>,
}

/// Builds, generations and the probe in flight.
pub(super) struct Rollout {
    /// The private copies of the library workers load.
    pub snapshots: Snapshots,
    /// The current generation's number.
    pub generation: u32,
    /// The current generation's build.
    pub build: Build,
    /// Builds of older generations that still have workers.
    pub old_builds: BTreeMap<u32, Build>,
    /// The stamp of the last version of the file considered (accepted or refused).
    pub seen_stamp: Option<FileStamp>,
    /// A reload asked for, and why.
    pub reload_requested: Option<ReloadRequest>,
    /// Who waits on the current generation's rollout (until it completes
    /// or is abandoned).
    pub tickets: Vec<Ticket>,
    /// The probe of a candidate build.
    pub probe: Option<PendingProbe>,
    /// `--reload`'s watch of the file.
    pub watch: Option<Watch>,
    /// When the current generation's rollout began, until it completes.
    pub started: Option<Instant>,
    /// During a rollout: the generation to fall back to (its build is held
    /// in `old_builds` until the rollout completes).
    pub previous: Option<u32>,
    /// The highest generation number given so far (an abandoned one is never reused).
    pub last_generation: u32,
    /// Generations abandoned, oldest first (at most [`ABANDONED_KEPT`]).
    pub abandoned: Vec<Abandoned>,
    /// The canary in progress (`--rollout canary`).
    pub canary: Option<Canary>,
    /// The last `--keep-builds` builds that completed a rollout, oldest
    /// first: their snapshots stay, for a rollback.
    pub kept: Vec<Build>,
    /// The build hash of recent generations (for per-generation metrics).
    pub build_names: BTreeMap<u32, String>,
}

impl Rollout {
    /// Generation 1 on `build`, its rollout beginning now.
    pub fn new(snapshots: Snapshots, build: Build, watch: bool) -> Rollout {
        let build_names = BTreeMap::from([(1, build.hash.clone())]);
        Rollout {
            build_names,
            snapshots,
            generation: 1,
            seen_stamp: Some(build.stamp),
            build,
            old_builds: BTreeMap::new(),
            reload_requested: None,
            tickets: Vec::new(),
            probe: None,
            watch: watch.then_some(Watch { candidate: None }),
            started: Some(Instant::now()),
            previous: None,
            last_generation: 1,
            abandoned: Vec::new(),
            canary: None,
            kept: Vec::new(),
        }
    }

    /// The probe's pipes, to poll for its report and its output.
    pub fn probe_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.probe.iter().flat_map(|p| p.probe.fds())
    }

    /// Reads what the probe reported and printed so far.
    pub fn read_probe(&mut self) {
        if let Some(p) = &mut self.probe {
            p.probe.read_ready();
        }
    }

    /// Kills the probe in flight, if any (it is reaped with the workers).
    pub fn kill_probe(&self) {
        if let Some(p) = &self.probe {
            p.probe.kill();
        }
    }

    /// Records the exit of `pid` if it is the probe; false if it is not.
    pub fn probe_exited(&mut self, status: nix::sys::wait::WaitStatus) -> bool {
        match &mut self.probe {
            Some(p) if Some(p.probe.pid) == status.pid() => {
                p.probe.exited(status);
                true
            }
            _ => false,
        }
    }

    /// The abandoned build taken from the file as it is at `stamp`, if it
    /// was marked bad.
    fn bad_build(&self, stamp: FileStamp) -> Option<&Abandoned> {
        self.abandoned
            .iter()
            .rev()
            .find(|a| a.bad && a.stamp == stamp)
    }

    /// Deletes `build`'s snapshot unless the current build or an older
    /// generation still runs the same bytes.
    fn drop_snapshot(&self, build: &Build) {
        let in_use = build.snapshot == self.build.snapshot
            || self
                .old_builds
                .values()
                .chain(&self.kept)
                .any(|b| b.snapshot == build.snapshot);
        if !in_use {
            self.snapshots.remove(build);
        }
    }

    /// In a forked worker: closes the probe's pipe (master-only) by taking
    /// it, and the descriptors of every build but `loads` (the current one,
    /// or the previous one a worker is spawned on while a new build has not
    /// proved itself).
    pub fn close_master_only(&mut self, loads: &Build) {
        drop(self.probe.take());
        self.snapshots.close_except(loads);
    }

    /// Remembers `build` (of `generation`) as bad for `why`: a reload of
    /// the file unchanged since it was taken is refused.
    pub fn mark_bad(&mut self, build: &Build, generation: u32, why: &str) {
        if self.abandoned.len() >= ABANDONED_KEPT {
            self.abandoned.remove(0);
        }
        self.abandoned.push(Abandoned {
            hash: build.hash.clone(),
            generation,
            why: why.to_owned(),
            stamp: build.stamp,
            bad: true,
            at: Instant::now(),
        });
    }

    /// Keeps the current build (it completed a rollout) among the last
    /// `keep` builds; deletes the snapshot of one that falls out, unless in use.
    pub fn keep_current(&mut self, keep: usize) {
        let current = self.build.clone();
        self.kept.retain(|b| b.hash != current.hash);
        self.kept.push(current);
        while self.kept.len() > keep.max(1) {
            let dropped = self.kept.remove(0);
            self.drop_snapshot(&dropped);
        }
    }
}

/// Snapshots the configured library, as a one-line error.
pub(super) fn take_snapshot(snapshots: &Snapshots, config: &Config) -> Result<Build, String> {
    snapshots
        .take(&config.app.path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => "no such file".to_owned(),
            _ => e.to_string(),
        })
}

/// A probe's message with the snapshot's path (and the descriptor path it
/// was loaded by) replaced by the operator's.
pub(super) fn unsnapshot(message: &str, build: &Build, config: &Config) -> String {
    let operator = config.app.path.display().to_string();
    message
        .replace(&build.snapshot.display().to_string(), &operator)
        .replace(&build.fd_path.display().to_string(), &operator)
}

/// Which of the workers on their way out (`leaving`: when each was spawned,
/// and its id) to stop now: the pool keeps `target` workers serving, so as
/// many leaving workers as the current build lacks ready ones may stay (the
/// newest); the rest are stopped, oldest first.
pub(super) fn retire_now<K: Copy>(
    target: usize,
    ready_current: usize,
    mut leaving: Vec<(Instant, K)>,
) -> Vec<K> {
    let may_stay = target.saturating_sub(ready_current);
    leaving.sort_by_key(|(spawned, _)| *spawned);
    let stop_count = leaving.len().saturating_sub(may_stay);
    leaving
        .into_iter()
        .take(stop_count)
        .map(|(_, k)| k)
        .collect()
}

/// What `--reload`'s watch does with the file's stamp now (`None`: missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WatchStep {
    /// Nothing new: forget any candidate.
    Forget,
    /// A new version: remember it, from now.
    Candidate,
    /// The candidate is still changing or too fresh: wait.
    Wait,
    /// The candidate has been stable long enough: reload.
    Reload,
}

/// The watch's step for the file's `stamp` (`None`: missing, normal
/// mid-build), given the stamp last considered and the candidate so far.
fn watch_step(
    stamp: Option<FileStamp>,
    seen: Option<FileStamp>,
    candidate: Option<(FileStamp, Instant)>,
    now: Instant,
) -> WatchStep {
    let Some(stamp) = stamp.filter(|s| Some(*s) != seen) else {
        return WatchStep::Forget;
    };
    match candidate {
        Some((same, since)) if same == stamp => {
            if now.duration_since(since) >= RELOAD_DEBOUNCE {
                WatchStep::Reload
            } else {
                WatchStep::Wait
            }
        }
        _ => WatchStep::Candidate,
    }
}

impl Master {
    /// HUP (or `host ctl reload`, as `who`, with `ticket` waiting on the
    /// outcome): re-reads the settings (with a config file) and asks for a
    /// reload of the file as it is now.
    pub(super) fn request_reload(&mut self, who: &str, ticket: Option<Ticket>) {
        log::info!("{who}: reloading");
        self.io.notifier.reloading(&self.status_line());
        self.rollout.started.get_or_insert_with(Instant::now);
        if self.settings.config.config.is_some() {
            self.reread_settings();
        } else {
            self.reload_tls();
        }
        self.ask_reload(HUP_CAUSE, ticket);
        self.rollout.seen_stamp = None; // a HUP always takes the file as it is now
    }

    /// Asks for a reload for `cause`, with `ticket` waiting on its outcome;
    /// folds into a reload already asked for (a HUP's cause wins: it
    /// restarts the workers even on the same build).
    pub(super) fn ask_reload(&mut self, cause: &'static str, ticket: Option<Ticket>) {
        self.ask_deploy(cause, ticket, None);
    }

    /// Like [`Master::ask_reload`], with the deploy's own rollout strategy
    /// (`host ctl deploy --canary`; `None`: `--rollout`). A later ask's
    /// strategy wins over an earlier one folded into the same reload.
    pub(super) fn ask_deploy(
        &mut self,
        cause: &'static str,
        ticket: Option<Ticket>,
        strategy: Option<ReloadStrategy>,
    ) {
        let request = self
            .rollout
            .reload_requested
            .get_or_insert_with(|| ReloadRequest {
                cause,
                tickets: Vec::new(),
                strategy: None,
            });
        if cause == HUP_CAUSE {
            request.cause = cause;
        }
        if strategy.is_some() {
            request.strategy = strategy;
        }
        request.tickets.extend(ticket);
    }

    /// `--reload`: notices a new version of the library once it stops changing.
    pub(super) fn watch_file(&mut self) {
        let rollout = &mut self.rollout;
        let Some(watch) = &mut rollout.watch else {
            return;
        };
        let stamp = FileStamp::of(&self.settings.config.app.path).ok();
        let now = Instant::now();
        match watch_step(stamp, rollout.seen_stamp, watch.candidate, now) {
            WatchStep::Forget => watch.candidate = None,
            WatchStep::Candidate => watch.candidate = stamp.map(|s| (s, now)),
            WatchStep::Wait => {}
            WatchStep::Reload if rollout.reload_requested.is_some() => {}
            WatchStep::Reload => {
                log::info!(
                    "{} changed; reloading",
                    self.settings.config.app.path.display()
                );
                watch.candidate = None;
                self.ask_reload("file changed", None);
            }
        }
    }

    /// A respawn notices a build written since the last reload.
    pub(super) fn notice_file_change(&mut self) {
        let rollout = &mut self.rollout;
        if rollout.reload_requested.is_some() || rollout.probe.is_some() {
            return;
        }
        if let Ok(stamp) = FileStamp::of(&self.settings.config.app.path) {
            if Some(stamp) != rollout.seen_stamp {
                self.ask_reload("file changed before a respawn", None);
            }
        }
    }

    /// Snapshots the library and starts its probe, if a reload is pending.
    pub(super) fn start_reload(&mut self) {
        if self.rollout.probe.is_some() {
            return; // one probe at a time; the request waits
        }
        let Some(cause) = self.rollout.reload_requested.as_ref().map(|r| r.cause) else {
            return;
        };
        let config = &self.settings.config;
        let stamp = FileStamp::of(&config.app.path).ok();
        if let Some(bad) = stamp.and_then(|s| self.rollout.bad_build(s)) {
            let line = format!(
                "reload ({cause}) refused: {} is still build {}, abandoned in generation {} ({}); replace or touch the file to try it again; generation {} (build {}) keeps serving",
                config.app.path.display(),
                bad.hash,
                bad.generation,
                bad.why,
                self.rollout.generation,
                self.rollout.build.hash
            );
            log::error!("{line}");
            self.rollout.seen_stamp = stamp;
            let request = self.rollout.reload_requested.take().unwrap_or_default();
            self.changes.finish(&request.tickets, false, &line);
            return;
        }
        let build = match self.rollout.snapshots.take(&config.app.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return, // still being written
            Err(e) => {
                self.counters.refused_builds += 1;
                let line = format!(
                    "reload ({cause}) refused: cannot read {}: {e}; generation {} (build {}) keeps serving",
                    config.app.path.display(),
                    self.rollout.generation,
                    self.rollout.build.hash
                );
                log::error!("{line}");
                let request = self.rollout.reload_requested.take().unwrap_or_default();
                self.changes.finish(&request.tickets, false, &line);
                return;
            }
        };
        let request = self.rollout.reload_requested.take().unwrap_or_default();
        self.rollout.seen_stamp = Some(build.stamp);
        if build.hash == self.rollout.build.hash {
            if cause == HUP_CAUSE {
                // Same build on HUP: already probed; restart the workers on it.
                self.begin_generation(build, request);
            } else {
                let line = format!(
                    "build {} is the one serving (generation {}): nothing to do",
                    build.hash, self.rollout.generation
                );
                log::info!("{line}");
                self.changes.finish(&request.tickets, true, &line);
            }
            return; // same bytes: nothing else to do
        }
        let spec = build.spec(&config.app);
        let (io, pool, snapshots) = (&mut self.io, &mut self.pool, &self.rollout.snapshots);
        let probe_as = ProbeAs {
            threads: config.threads,
            generation: self.rollout.last_generation + 1,
        };
        let started = Probe::start(&spec, probe_as, self.settings.identity.as_ref(), || {
            io.close_master_only();
            pool.close_output_pipes();
            snapshots.close_except(&build);
        });
        match started {
            Ok(probe) => {
                log::info!("probing build {} ({cause})", build.hash);
                self.rollout.probe = Some(PendingProbe {
                    probe,
                    build,
                    request,
                });
            }
            Err(e) => {
                let line = format!("cannot probe build {}: {e}", build.hash);
                log::error!("{line}");
                self.changes.finish(&request.tickets, false, &line);
            }
        }
    }

    /// Takes a probe's verdict once it has one; kills a probe past the boot timeout.
    pub(super) fn settle_probe(&mut self) {
        let Some(pending) = &self.rollout.probe else {
            return;
        };
        let Some(outcome) = pending.probe.outcome() else {
            if pending.probe.started.elapsed() > settings::boot_timeout(&self.settings.config) {
                pending.probe.kill(); // reaped next turn
            }
            return;
        };
        let Some(PendingProbe { build, request, .. }) = self.rollout.probe.take() else {
            return;
        };
        let message = match outcome {
            Ok(()) => return self.begin_generation(build, request),
            Err(message) => message,
        };
        self.counters.refused_builds += 1;
        let rollout = &self.rollout;
        let line = format!(
            "build {} refused ({}): {}; generation {} (build {}) keeps serving [{} refused so far]",
            build.hash,
            request.cause,
            unsnapshot(&message, &build, &self.settings.config),
            rollout.generation,
            rollout.build.hash,
            self.counters.refused_builds
        );
        log::error!("{line}");
        self.changes.finish(&request.tickets, false, &line);
        self.rollout.drop_snapshot(&build);
    }

    /// Makes `build` current and marks every older worker for retirement;
    /// `request`'s tickets wait on its rollout (a rollout still under way is
    /// superseded).
    pub(super) fn begin_generation(&mut self, build: Build, request: ReloadRequest) {
        self.counters.reloads += 1;
        let ReloadRequest {
            cause,
            tickets,
            strategy: asked,
        } = request;
        let superseded = std::mem::replace(&mut self.rollout.tickets, tickets);
        if !superseded.is_empty() {
            let line = format!(
                "generation {} (build {}) superseded by build {} ({cause}) before its rollout completed",
                self.rollout.generation, self.rollout.build.hash, build.hash
            );
            self.changes.finish(&superseded, false, &line);
        }
        let rollout = &mut self.rollout;
        let old = std::mem::replace(&mut rollout.build, build);
        rollout.old_builds.insert(rollout.generation, old);
        // Fall back to the last generation that completed its rollout (a
        // generation superseded mid-rollout is not proven).
        rollout.previous.get_or_insert(rollout.generation);
        rollout.last_generation += 1;
        rollout.generation = rollout.last_generation;
        rollout
            .build_names
            .insert(rollout.generation, rollout.build.hash.clone());
        while rollout.build_names.len() > BUILD_NAMES_KEPT {
            rollout.build_names.pop_first();
        }
        rollout.started = Some(Instant::now());
        self.pool.failures = 0;
        self.pool.last_failure = None;
        self.pool.current_booted = false;
        self.pool.next_spawn = Instant::now();
        let strategy = match asked.unwrap_or(self.settings.config.reload_strategy) {
            ReloadStrategy::All => "all at once",
            ReloadStrategy::Chain => "one at a time",
            ReloadStrategy::Canary => "as a canary",
        };
        log::info!(
            "generation {}: build {} ({cause}); rolling {} worker(s) {strategy}",
            rollout.generation,
            rollout.build.hash,
            self.pool.target
        );
        self.pool.retire_all(Retire::Outdated);
        self.begin_canary(asked);
    }

    /// Deletes snapshots of generations that have no workers left.
    pub(super) fn forget_unused_builds(&mut self) {
        let rollout = &mut self.rollout;
        let unused: Vec<u32> = rollout
            .old_builds
            .keys()
            .copied()
            .filter(|g| Some(*g) != rollout.previous)
            .filter(|g| !self.pool.workers.values().any(|w| w.generation == *g))
            .collect();
        for g in unused {
            if let Some(build) = rollout.old_builds.remove(&g) {
                rollout.drop_snapshot(&build);
            }
        }
    }

    /// After a failure (`why`) of a worker of the current generation:
    /// abandons the generation if it is a rollout that cannot succeed.
    pub(super) fn judge_rollout(&mut self, why: &str) {
        let Some(previous) = self.rollout.previous else {
            return; // nothing to fall back to: the boot back-off paces it
        };
        let generation = self.rollout.generation;
        let pool = &self.pool;
        let booted = pool.current_booted
            || pool.workers.values().any(|w| {
                w.generation == generation
                    && (w.ready || pool.scoreboard.slot(w.slot).is_some_and(|s| s.was_ready()))
            });
        if should_abandon(pool.failures, booted) {
            self.abandon_generation(previous, booted, why);
        }
    }

    /// Gives up on the current generation: logs it, retires its workers and
    /// makes `previous` current again; marks the build bad.
    pub(super) fn abandon_generation(&mut self, previous: u32, booted: bool, why: &str) {
        let rollout = &mut self.rollout;
        rollout.canary = None;
        let Some(fallback) = rollout.old_builds.remove(&previous) else {
            rollout.previous = None;
            return;
        };
        let bad_generation = rollout.generation;
        let bad_build = std::mem::replace(&mut rollout.build, fallback);
        rollout.generation = previous;
        rollout.previous = None;
        rollout.started = Some(Instant::now());
        let bad = bad_build.hash != rollout.build.hash;
        let failures = self.pool.failures;
        self.counters.abandoned_builds += 1;
        let line = format!(
            "generation {bad_generation} (build {}) abandoned{}{}: {why}; back to generation {previous} (build {}) on every worker{}",
            bad_build.hash,
            if failures > 0 {
                format!(" after {failures} failure(s)")
            } else {
                String::new()
            },
            if booted { "" } else { ", none of its workers ever booted" },
            rollout.build.hash,
            if bad {
                "; the build is marked bad: a reload of the unchanged file is refused"
            } else {
                " (the same bytes: not marked bad)"
            }
        );
        log::error!("{line}");
        let tickets = std::mem::take(&mut rollout.tickets);
        self.changes.finish(&tickets, false, &line);
        let rollout = &mut self.rollout;
        if rollout.abandoned.len() >= ABANDONED_KEPT {
            rollout.abandoned.remove(0);
        }
        rollout.abandoned.push(Abandoned {
            hash: bad_build.hash.clone(),
            generation: bad_generation,
            why: why.to_owned(),
            stamp: bad_build.stamp,
            bad,
            at: Instant::now(),
        });
        // Held until its workers are gone (then `forget_unused_builds`).
        rollout.old_builds.insert(bad_generation, bad_build);
        let pool = &mut self.pool;
        let mut booting = Vec::new();
        for (pid, rec) in pool.workers.iter_mut() {
            if rec.generation == bad_generation {
                rec.retire.get_or_insert(Retire::Abandoned);
                if !rec.ready && rec.signalled.is_none() {
                    booting.push(*pid);
                }
            } else if rec.generation == previous
                && rec.retire == Some(Retire::Outdated)
                && rec.signalled.is_none()
            {
                rec.retire = None; // serves on
            }
        }
        // A worker of the abandoned build still booting serves nobody: stop
        // it now (a ready one goes once a worker of the fallback replaces it).
        for pid in booting {
            pool.stop_gracefully(pid);
        }
        pool.failures = 0;
        pool.last_failure = None;
        pool.current_booted = true;
        pool.next_spawn = Instant::now();
    }

    /// During a rollout whose build has not booted yet: replaces old workers
    /// that died (a crash, an OOM kill, `--max-requests`) on the previous
    /// build, so the pool never shrinks while the new build is unproven.
    pub(super) fn keep_previous_pool(&mut self) {
        let Some(previous) = self.rollout.previous else {
            return;
        };
        // During a canary, the old build keeps the rest of the pool all along.
        let canary = self.rollout.canary.as_ref().map(Canary::workers);
        if (self.pool.current_booted && canary.is_none()) || Instant::now() < self.pool.next_spawn {
            return;
        }
        let generation = self.rollout.generation;
        // Old workers still serving (none is stopped before a new one is ready).
        let old = self
            .pool
            .workers
            .values()
            .filter(|w| w.generation != generation && w.signalled.is_none())
            .count();
        for _ in old..self.pool.target.saturating_sub(canary.unwrap_or(0)) {
            match self.spawn_on(previous) {
                Some(pid) => {
                    if let Some(rec) = self.pool.workers.get_mut(&pid) {
                        rec.retire = Some(Retire::Outdated);
                    }
                }
                None => break,
            }
        }
    }

    /// Stops the workers on their way out that the pool can spare now.
    pub(super) fn retire_spare(&mut self) {
        let generation = self.rollout.generation;
        let ready_current = self.pool.serving(generation).filter(|w| w.ready).count();
        let leaving = self.pool.leaving();
        for pid in retire_now(self.pool.target, ready_current, leaving) {
            self.pool.stop_gracefully(pid);
        }
    }

    /// Logs, once, that every worker runs the current generation (and
    /// tells the service manager). Not while a reload is asked for or its
    /// build is being probed: the generation that is complete then is the
    /// old one, and the reload is not done.
    pub(super) fn note_rollout_done(&mut self) {
        let Some(started) = self.rollout.started else {
            return;
        };
        if self.rollout.reload_requested.is_some() || self.rollout.probe.is_some() {
            return;
        }
        let generation = self.rollout.generation;
        let ready = self.pool.serving(generation).filter(|w| w.ready).count();
        let old = self
            .pool
            .workers
            .values()
            .any(|w| w.generation != generation);
        if ready >= self.pool.target && !old {
            self.rollout.started = None;
            // Proven: the previous build is no longer needed to fall back to.
            self.rollout.previous = None;
            self.rollout
                .keep_current(self.settings.config.keep_builds as usize);
            let line = format!(
                "generation {generation} complete: {ready} worker(s) on build {}, older ones gone, {:.0} ms after it began",
                self.rollout.build.hash,
                started.elapsed().as_secs_f64() * 1000.0
            );
            log::info!("{line}");
            let tickets = std::mem::take(&mut self.rollout.tickets);
            self.changes.finish(&tickets, true, &line);
            self.io.notifier.ready(&self.status_line());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn old_workers_retire_one_for_one_as_new_ones_are_ready() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // (target, ready on the current build, leaving (spawned ms, id), stopped now)
        type Case = (usize, usize, Vec<(u64, u32)>, Vec<u32>);
        let cases: [Case; 7] = [
            // A reload of 3: nothing new is ready yet: every old worker stays.
            (3, 0, vec![(0, 1), (1, 2), (2, 3)], vec![]),
            // One new worker ready: the oldest old one goes.
            (3, 1, vec![(0, 1), (1, 2), (2, 3)], vec![1]),
            // Two ready: the two oldest go, whatever the order given.
            (3, 2, vec![(2, 3), (0, 1), (1, 2)], vec![1, 2]),
            // All ready: all go.
            (3, 3, vec![(0, 1), (1, 2), (2, 3)], vec![1, 2, 3]),
            // More ready than the target (TTOU shrank it): all go.
            (2, 3, vec![(5, 9)], vec![9]),
            // Nothing leaving.
            (4, 1, vec![], vec![]),
            // A worker asking to be replaced in a full pool stays until its successor is ready.
            (2, 1, vec![(0, 7)], vec![]),
        ];
        for (target, ready, leaving, want) in cases {
            let leaving_at: Vec<(Instant, u32)> =
                leaving.iter().map(|&(ms, id)| (at(ms), id)).collect();
            assert_eq!(
                retire_now(target, ready, leaving_at),
                want,
                "target {target}, ready {ready}, leaving {leaving:?}"
            );
        }
    }

    #[test]
    fn a_rollout_is_abandoned_at_once_if_nothing_booted_else_after_a_few_failures() {
        // (failures in a row, a worker of the build booted, abandon)
        let cases = [
            (0, false, false),
            (1, false, true),
            (1, true, false),
            (ABANDON_AFTER_FAILURES - 1, true, false),
            (ABANDON_AFTER_FAILURES, true, true),
            (ABANDON_AFTER_FAILURES + 4, false, true),
        ];
        for (failures, booted, want) in cases {
            assert_eq!(
                should_abandon(failures, booted),
                want,
                "{failures} failures, booted {booted}"
            );
        }
    }

    #[test]
    fn the_watch_waits_for_the_file_to_settle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib.so");
        std::fs::write(&path, b"one").unwrap();
        let a = FileStamp::of(&path).unwrap();
        std::fs::write(&path, b"three").unwrap();
        let b = FileStamp::of(&path).unwrap();
        let now = Instant::now();
        let fresh = now - Duration::from_millis(10);
        let settled = now - RELOAD_DEBOUNCE - Duration::from_millis(1);
        use WatchStep::*;
        let cases = [
            (None, Some(a), None, Forget),
            (Some(a), Some(a), Some((b, settled)), Forget),
            (Some(b), Some(a), None, Candidate),
            (Some(b), Some(a), Some((a, settled)), Candidate),
            (Some(b), Some(a), Some((b, fresh)), Wait),
            (Some(b), Some(a), Some((b, settled)), Reload),
            (Some(b), None, Some((b, settled)), Reload),
        ];
        for (stamp, seen, candidate, want) in cases {
            assert_eq!(
                watch_step(stamp, seen, candidate, now),
                want,
                "{stamp:?} seen {seen:?} candidate {candidate:?}"
            );
        }
    }
}
