//! Canary rollouts (`--rollout canary`): a new build first serves on a few
//! workers beside the old ones, then on growing shares of the pool, judged
//! all along against fixed limits and against the old build; a build that
//! fails a check is rolled back by itself, within a turn of the loop.
//!
//! The policy is plain data in, a verdict out: [`judge`] takes the
//! [`Figures`] of the new and the old generations over the sliding window
//! and the [`Limits`], and answers [`Verdict::Pass`], [`Verdict::Wait`]
//! (the new build has not served enough requests to judge its shares) or
//! [`Verdict::Fail`] naming the check and its figures. [`plan`] turns the
//! settings into worker counts per step. Both have table-driven tests below.
//!
//! Each check has an absolute limit (`--canary-max-*`) and a relative one:
//! the new build may not be much worse than the old one (twice its share
//! plus a margin, or [`Limits::p99_ratio`] times its p99 plus
//! [`P99_FLOOR`]). Counts below a noise floor never fail a check, so one
//! unlucky 500 among twenty requests does not roll a good build back.
//! Crashes and timeouts are judged as soon as they pass their floor, without
//! waiting for `--canary-min-requests`: each one already cost a request.
//!
//! The driving (`impl Master` below) runs every turn of the master's loop:
//! it samples the scoreboard into per-generation totals
//! ([`super::figures`]), judges, and either rolls back through the existing
//! abandon path, waits, or steps to the next share of the pool. At the last
//! step the canary ends and the rollout completes as an `all` rollout does.

use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, Instant},
};

use crate::{
    config::ReloadStrategy,
    master::{changes::Ticket, figures::Figures, pool::Retire, rollout::ReloadRequest, Master},
    report::metrics::{CanaryView, GenerationView},
    scoreboard::RequestTotals,
};

/// Default `--canary-max-5xx`, in percent of the new build's requests.
pub const DEFAULT_MAX_5XX_PERCENT: f64 = 5.0;
/// Default `--canary-max-crashes`, in percent of the new build's requests.
pub const DEFAULT_MAX_CRASH_PERCENT: f64 = 0.1;
/// Default `--canary-max-panics`, in percent of the new build's requests.
pub const DEFAULT_MAX_PANIC_PERCENT: f64 = 1.0;
/// Default `--canary-max-timeouts`, in percent of the new build's requests.
pub const DEFAULT_MAX_TIMEOUT_PERCENT: f64 = 0.1;
/// Default `--canary-max-p99-ratio`: the new p99 may be this many times the old one.
pub const DEFAULT_MAX_P99_RATIO: f64 = 1.5;

/// Relative checks on shares: the new build fails when its share passes
/// this many times the old build's share, plus the check's margin.
pub const SHARE_RATIO: f64 = 2.0;
/// The margin of the relative 5xx check (one percentage point).
pub const MARGIN_5XX: f64 = 0.01;
/// The margin of the relative panic check.
pub const MARGIN_PANICS: f64 = 0.005;
/// The margin of the relative crash and timeout checks.
pub const MARGIN_EVENTS: f64 = 0.001;
/// Fewer 5xx responses than this in the window never fail a check.
pub const FLOOR_5XX: u64 = 5;
/// Fewer caught panics than this in the window never fail a check.
pub const FLOOR_PANICS: u64 = 3;
/// Fewer crashes (or timeouts) than this in the window never fail a check:
/// one worker killed by the kernel's OOM killer is not a verdict on a build.
pub const FLOOR_EVENTS: u64 = 2;
/// The new p99 fails the relative check only when it is also this much
/// above the old one: sub-millisecond apps jitter by more than 1.5x, and on
/// a busy machine a worker that sleeps (waits on I/O) waits for a CPU again
/// when it wakes, a few milliseconds at the p99 of a small window.
pub const P99_FLOOR: Duration = Duration::from_millis(20);
/// The master's tick while a canary runs (its checks run every turn).
pub const CANARY_TICK: Duration = Duration::from_millis(100);

/// What the canary checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests the new build must have served in the window before its
    /// shares and latency are judged.
    pub min_requests: u64,
    /// Most 5xx responses, as a share of requests (0.05: 5%).
    pub max_5xx: Share,
    /// Most worker crashes, as a share of requests.
    pub max_crashes: Share,
    /// Most caught panics, as a share of requests.
    pub max_panics: Share,
    /// Most requests past `--timeout`, as a share of requests.
    pub max_timeouts: Share,
    /// Highest p99 latency, if limited.
    pub max_p99: Option<Duration>,
    /// The most the new p99 may be, as a multiple of the old one.
    pub p99_ratio: Share,
}

/// A share or ratio with the equality tests want (never NaN here).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Share(pub f64);

impl Eq for Share {}

impl Limits {
    /// The limits the settings ask for.
    pub fn from_config(config: &crate::config::Config) -> Limits {
        Limits {
            min_requests: config.canary_min_requests,
            max_5xx: Share(config.canary_max_5xx / 100.0),
            max_crashes: Share(config.canary_max_crashes / 100.0),
            max_panics: Share(config.canary_max_panics / 100.0),
            max_timeouts: Share(config.canary_max_timeouts / 100.0),
            max_p99: (config.canary_max_p99_ms > 0)
                .then(|| Duration::from_millis(config.canary_max_p99_ms)),
            p99_ratio: Share(config.canary_max_p99_ratio),
        }
    }
}

/// One of the canary's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The share of 5xx responses.
    FiveXx,
    /// Workers that crashed (died of a signal the master did not send).
    Crashes,
    /// Requests in which the app panicked (answered 500).
    Panics,
    /// Requests that ran past `--timeout`.
    Timeouts,
    /// The p99 request latency.
    P99,
    /// The app's own health report (reserved: see [`Figures::health`]).
    Health,
}

impl Check {
    /// Its label in `/metrics` (`host_rollbacks_total{check="5xx"}`).
    pub fn label(self) -> &'static str {
        match self {
            Check::FiveXx => "5xx",
            Check::Crashes => "crash",
            Check::Panics => "panic",
            Check::Timeouts => "timeout",
            Check::P99 => "p99",
            Check::Health => "health",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Check::FiveXx => "5xx share",
            Check::Crashes => "worker crashes",
            Check::Panics => "app panics",
            Check::Timeouts => "request timeouts",
            Check::P99 => "p99 latency",
            Check::Health => "app health",
        })
    }
}

/// The canary's verdict on the figures of one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every check passes.
    Pass,
    /// Nothing failed, but the new build served too few requests to judge
    /// its shares and latency: (served, needed).
    Wait(u64, u64),
    /// A check failed: which, and a line with the figures.
    Fail {
        /// The check that failed.
        check: Check,
        /// What failed, with the figures (`5xx share 31.2% (412 of 1320) over 10.0 s, limit 5% ...`).
        line: String,
    },
}

/// Percent of a share, for lines.
fn pct(share: f64) -> String {
    let p = share * 100.0;
    if p != 0.0 && p < 0.1 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

/// A count as a share of `requests` (a count over no requests is 100%).
fn share_of(count: u64, requests: u64) -> f64 {
    match (count, requests) {
        (0, _) => 0.0,
        (_, 0) => 1.0,
        (c, r) => (c as f64 / r as f64).min(1.0),
    }
}

/// Judges a share check: `count` of the new build's `requests` against the
/// absolute `limit` and against the old build's share.
#[allow(clippy::too_many_arguments)]
fn share_check(
    check: Check,
    count: u64,
    requests: u64,
    old: (u64, u64),
    limit: f64,
    margin: f64,
    floor: u64,
    seconds: f64,
) -> Option<Verdict> {
    if count < floor {
        return None;
    }
    let new = share_of(count, requests);
    let old_share = share_of(old.0, old.1);
    let relative = SHARE_RATIO * old_share + margin;
    let figures = format!(
        "{check} {} ({count} of {requests} requests) over {seconds:.1} s",
        pct(new)
    );
    let line = if new > limit {
        format!(
            "{figures}, limit {} (old generation {})",
            pct(limit),
            pct(old_share)
        )
    } else if old.1 > 0 && new > relative {
        format!(
            "{figures}, above {SHARE_RATIO}x the old generation's {} + {} ({} limit {})",
            pct(old_share),
            pct(margin),
            check,
            pct(limit)
        )
    } else {
        return None;
    };
    Some(Verdict::Fail { check, line })
}

/// The new and old builds' figures over the window, judged.
pub fn judge(new: &Figures, old: &Figures, limits: &Limits, seconds: f64) -> Verdict {
    let requests = new.requests();
    let old_requests = old.requests();
    // Events first: each one cost a request already.
    let events = [
        (
            Check::Crashes,
            new.crashes,
            old.crashes,
            limits.max_crashes.0,
        ),
        (
            Check::Timeouts,
            new.timeouts,
            old.timeouts,
            limits.max_timeouts.0,
        ),
    ];
    for (check, count, old_count, limit) in events {
        let failed = share_check(
            check,
            count,
            requests,
            (old_count, old_requests),
            limit,
            MARGIN_EVENTS,
            FLOOR_EVENTS,
            seconds,
        );
        if let Some(fail) = failed {
            return fail;
        }
    }
    if let Some(health) = &new.health {
        if health.failed > 0 {
            return Verdict::Fail {
                check: Check::Health,
                line: format!(
                    "app health: {} of {} checks failed over {seconds:.1} s",
                    health.failed, health.checks
                ),
            };
        }
    }
    if requests < limits.min_requests {
        return Verdict::Wait(requests, limits.min_requests);
    }
    let shares = [
        (
            Check::FiveXx,
            new.statuses[4],
            old.statuses[4],
            limits.max_5xx.0,
            MARGIN_5XX,
            FLOOR_5XX,
        ),
        (
            Check::Panics,
            new.panics,
            old.panics,
            limits.max_panics.0,
            MARGIN_PANICS,
            FLOOR_PANICS,
        ),
    ];
    for (check, count, old_count, limit, margin, floor) in shares {
        let failed = share_check(
            check,
            count,
            requests,
            (old_count, old_requests),
            limit,
            margin,
            floor,
            seconds,
        );
        if let Some(fail) = failed {
            return fail;
        }
    }
    if let Some(p99) = new.p99() {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let old_p99 = (old_requests >= limits.min_requests)
            .then(|| old.p99())
            .flatten();
        let old_text = old_p99.map_or("no figure".to_owned(), |o| format!("{:.1} ms", ms(o)));
        let figures = format!(
            "p99 latency {:.1} ms over {seconds:.1} s ({requests} requests)",
            ms(p99)
        );
        if let Some(limit) = limits.max_p99.filter(|limit| p99 > *limit) {
            return Verdict::Fail {
                check: Check::P99,
                line: format!(
                    "{figures}, limit {:.0} ms (old generation {old_text})",
                    ms(limit)
                ),
            };
        }
        if let Some(old_p99) = old_p99 {
            let allowed = old_p99.mul_f64(limits.p99_ratio.0).max(old_p99 + P99_FLOOR);
            if p99 > allowed {
                return Verdict::Fail {
                    check: Check::P99,
                    line: format!(
                        "{figures}, above {}x the old generation's {old_text} (and more than {} ms above it)",
                        limits.p99_ratio.0,
                        P99_FLOOR.as_millis()
                    ),
                };
            }
        }
    }
    Verdict::Pass
}

/// The figures of one window in a line: `5xx 0.1% (old 0.0%), p99 12 ms (old 11 ms), ...`.
pub fn summary(new: &Figures, old: &Figures, seconds: f64) -> String {
    let ms = |f: &Figures| {
        f.p99().map_or("-".to_owned(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1000.0)
        })
    };
    format!(
        "5xx {} (old {}), p99 {} (old {}), crashes {} (old {}), panics {} (old {}), timeouts {} (old {}), {} requests (old {}) over {seconds:.1} s",
        pct(share_of(new.statuses[4], new.requests())),
        pct(share_of(old.statuses[4], old.requests())),
        ms(new),
        ms(old),
        new.crashes,
        old.crashes,
        new.panics,
        old.panics,
        new.timeouts,
        old.timeouts,
        new.requests(),
        old.requests(),
    )
}

/// The canary's worker counts, step by step, for a pool of `target`: the
/// first `first` workers, then each share of the pool rounded up (a share
/// that adds no worker is skipped), ending on the whole pool.
pub fn plan(target: usize, first: usize, shares: &[f64]) -> Vec<usize> {
    let target = target.max(1);
    let mut steps = vec![first.clamp(1, target)];
    for share in shares {
        let n = ((share * target as f64).ceil() as usize).clamp(1, target);
        if steps.last().is_some_and(|last| n > *last) {
            steps.push(n);
        }
    }
    if steps.last() != Some(&target) {
        steps.push(target);
    }
    steps
}

/// Whether the canary moves to its next step now: its interval on this step
/// is over, every worker of the step is ready, and the checks pass.
pub fn step_due(
    on_step: Duration,
    interval: Duration,
    step_ready: bool,
    verdict: &Verdict,
) -> bool {
    on_step >= interval && step_ready && *verdict == Verdict::Pass
}

/// A canary in progress.
#[derive(Debug, Clone)]
pub struct Canary {
    /// The generation on trial.
    pub generation: u32,
    /// Its worker count at each step (the last is the whole pool).
    pub plan: Vec<usize>,
    /// The step it is on (an index into `plan`).
    pub step: usize,
    /// When it began.
    pub started: Instant,
    /// When the current step began.
    pub step_started: Instant,
    /// Cumulative figures by generation when it began (the requests each
    /// generation served since are the shares it reports).
    pub baseline: BTreeMap<u32, Figures>,
    /// The wait for requests on this step was logged.
    pub wait_logged: bool,
    /// The last verdict and its figures, for /status.json.
    pub last: Option<(Verdict, String)>,
}

impl Canary {
    /// The workers its current step runs on the new build.
    pub fn workers(&self) -> usize {
        self.plan.get(self.step).copied().unwrap_or(0)
    }
}

impl Master {
    /// The rollout strategy for a new generation: the deploy's own, else `--rollout`.
    fn strategy_for(&self, asked: Option<ReloadStrategy>) -> ReloadStrategy {
        asked.unwrap_or(self.settings.config.reload_strategy)
    }

    /// Called as a generation begins: starts a canary if its strategy asks
    /// for one and there are old workers to judge it against.
    pub(super) fn begin_canary(&mut self, asked: Option<ReloadStrategy>) {
        self.rollout.canary = None;
        if self.strategy_for(asked) != ReloadStrategy::Canary || self.rollout.previous.is_none() {
            return;
        }
        self.sample_generations(true);
        let config = &self.settings.config;
        let target = self.pool.target;
        let steps = plan(
            target,
            config.canary_workers as usize,
            &config.canary_steps.0,
        );
        if steps.len() < 2 {
            log::info!(
                "canary: a pool of {target} worker(s) leaves no room for a canary (--canary-workers {}); rolling all at once",
                config.canary_workers
            );
            return;
        }
        let generation = self.rollout.generation;
        let now = Instant::now();
        log::info!(
            "canary: generation {generation} (build {}) on {} of {target} workers; then {} every {} s while its checks pass ({})",
            self.rollout.build.hash,
            steps[0],
            steps[1..]
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            config.canary_interval,
            self.window_text(),
        );
        self.rollout.canary = Some(Canary {
            generation,
            plan: steps,
            step: 0,
            started: now,
            step_started: now,
            baseline: self.counters.generations.cumulative().clone(),
            wait_logged: false,
            last: None,
        });
    }

    /// The window and limits in words, for the log.
    fn window_text(&self) -> String {
        let c = &self.settings.config;
        format!(
            "window {} s, judged after {} requests; limits: 5xx {}%, crashes {}%, panics {}%, timeouts {}%, p99 {}{}x the old",
            self.canary_window().as_secs(),
            c.canary_min_requests,
            c.canary_max_5xx,
            c.canary_max_crashes,
            c.canary_max_panics,
            c.canary_max_timeouts,
            if c.canary_max_p99_ms > 0 {
                format!("{} ms and ", c.canary_max_p99_ms)
            } else {
                String::new()
            },
            c.canary_max_p99_ratio
        )
    }

    /// `--canary-window`, else `--canary-interval`.
    fn canary_window(&self) -> Duration {
        let c = &self.settings.config;
        Duration::from_secs(c.canary_window.unwrap_or(c.canary_interval))
    }

    /// The workers the current generation should run now: the canary's
    /// step, or the whole pool.
    pub(super) fn current_target(&self) -> usize {
        match &self.rollout.canary {
            Some(c) if c.generation == self.rollout.generation => c.workers(),
            _ => self.pool.target,
        }
    }

    /// Whether a canary is in progress (the master ticks faster then).
    pub(super) fn canary_running(&self) -> bool {
        self.rollout.canary.is_some()
    }

    /// Each turn: samples the figures, judges the canary, rolls it back or
    /// steps it on.
    pub(super) fn drive_canary(&mut self) {
        let canary_configured = self.settings.config.reload_strategy == ReloadStrategy::Canary;
        if !canary_configured && self.rollout.canary.is_none() {
            return; // `all` and `chain` behave as they always did
        }
        self.sample_generations(false);
        let Some(canary) = &self.rollout.canary else {
            return;
        };
        if canary.generation != self.rollout.generation || self.rollout.previous.is_none() {
            self.rollout.canary = None; // superseded or abandoned
            return;
        }
        let generation = canary.generation;
        let window = self.canary_window();
        let (figures, seconds) = self.counters.generations.window(window);
        let new = figures.get(&generation).cloned().unwrap_or_default();
        let old = figures.iter().filter(|(g, _)| **g != generation).fold(
            Figures::default(),
            |mut sum, (_, f)| {
                sum.add(f);
                sum
            },
        );
        let limits = Limits::from_config(&self.settings.config);
        let verdict = judge(&new, &old, &limits, seconds);
        let line = summary(&new, &old, seconds);
        if let Verdict::Fail { check, line: why } = &verdict {
            let (check, why) = (*check, why.clone());
            self.fail_canary(check, &why);
            return;
        }
        let interval = Duration::from_secs(self.settings.config.canary_interval);
        let ready = self.pool.serving(generation).filter(|w| w.ready).count();
        let target = self.pool.target;
        let Some(canary) = &mut self.rollout.canary else {
            return;
        };
        let step_ready = ready >= canary.workers();
        let on_step = canary.step_started.elapsed();
        canary.last = Some((verdict.clone(), line.clone()));
        if let Verdict::Wait(served, needed) = verdict {
            if on_step >= interval && step_ready && !canary.wait_logged {
                canary.wait_logged = true;
                log::info!(
                    "canary: generation {generation} waits for {needed} requests in the last {} s before its next step ({served} so far)",
                    window.as_secs()
                );
            }
        }
        if !step_due(on_step, interval, step_ready, &verdict) {
            return;
        }
        canary.step += 1;
        canary.step_started = Instant::now();
        canary.wait_logged = false;
        let to = canary.workers();
        let last = canary.step + 1 >= canary.plan.len();
        log::info!("canary: step to {to} of {target} workers: {line}");
        if last {
            let served = self.served_text();
            log::info!(
                "canary: generation {generation} passed every step; rolling it onto the whole pool ({served})"
            );
            self.rollout.canary = None;
        }
    }

    /// The requests each generation served since the canary began, in words.
    fn served_text(&self) -> String {
        let Some(canary) = &self.rollout.canary else {
            return String::new();
        };
        let served = self.served_since(canary);
        let total: u64 = served.values().sum();
        let new = served.get(&canary.generation).copied().unwrap_or(0);
        let old = total - new;
        format!(
            "during the canary's {:.1} s generation {} served {} of requests ({new}), older generations {} ({old})",
            canary.started.elapsed().as_secs_f64(),
            canary.generation,
            pct(share_of(new, total)),
            pct(share_of(old, total))
        )
    }

    /// Requests each generation served since `canary` began.
    fn served_since(&self, canary: &Canary) -> BTreeMap<u32, u64> {
        self.counters
            .generations
            .cumulative()
            .iter()
            .map(|(g, f)| {
                let before = canary.baseline.get(g).map_or(0, Figures::requests);
                (*g, f.requests().saturating_sub(before))
            })
            .collect()
    }

    /// A check failed: rolls the canary back through the abandon path and
    /// stops its workers at once (a failing build serves no longer than it
    /// must; the old generation's missing workers start right away).
    fn fail_canary(&mut self, check: Check, why: &str) {
        let served = self.served_text();
        *self.counters.rollbacks.entry(check.label()).or_insert(0) += 1;
        let line = format!("canary failed its {check} check: {why}");
        log::error!(
            "canary: generation {}: {line}; {served}",
            self.rollout.generation
        );
        self.abandon_now(&line);
    }

    /// Abandons the current generation for the previous one with `why`, and
    /// stops its workers now; false if there is nothing to fall back to.
    fn abandon_now(&mut self, why: &str) -> bool {
        let Some(previous) = self.rollout.previous else {
            return false;
        };
        let bad = self.rollout.generation;
        self.rollout.canary = None;
        self.abandon_generation(previous, true, why);
        let pids: Vec<_> = self
            .pool
            .workers
            .iter()
            .filter(|(_, w)| w.generation == bad && w.signalled.is_none())
            .map(|(pid, _)| *pid)
            .collect();
        for pid in pids {
            self.pool.stop_gracefully(pid);
        }
        true
    }

    /// While a canary runs, has every worker take turns at the listeners,
    /// so the canary gets its share of connections under light load too
    /// (otherwise the old workers, waiting longest, take nearly all).
    pub(super) fn share_listeners(&mut self) {
        let want = self.rollout.canary.is_some();
        let pool = &mut self.pool;
        if pool.take_turns == want {
            return;
        }
        pool.take_turns = want;
        for rec in pool.workers.values() {
            if let Some(slot) = pool.scoreboard.slot(rec.slot) {
                slot.set_take_turns(want);
            }
        }
    }

    /// A canary in progress goes to the whole pool at once (`host ctl promote`).
    pub(super) fn promote(&mut self) -> Result<String, String> {
        let Some(canary) = &self.rollout.canary else {
            return Err("no canary in progress: nothing to promote".to_owned());
        };
        let line = format!(
            "canary: generation {} promoted by the operator at step {} of {}: rolling it onto all {} workers ({})",
            canary.generation,
            canary.step + 1,
            canary.plan.len(),
            self.pool.target,
            self.served_text()
        );
        log::info!("{line}");
        self.rollout.canary = None;
        Ok(line)
    }

    /// `host ctl rollback`: during a canary or a rollout, abandons it (its
    /// workers stop now, the previous generation serves on every worker,
    /// the build is marked bad); after a rollout completed, starts a new
    /// generation on the last kept build before the current one, marking
    /// the current build bad (`ticket` finishes when that rollout completes).
    pub(super) fn rollback(&mut self, ticket: Option<Ticket>) -> Result<String, String> {
        if self.rollout.started.is_some() && self.rollout.previous.is_some() {
            let generation = self.rollout.generation;
            let hash = self.rollout.build.hash.clone();
            *self.counters.rollbacks.entry("operator").or_insert(0) += 1;
            if !self.abandon_now("rolled back by the operator") {
                return Err("nothing to roll back to".to_owned());
            }
            let line = format!(
                "generation {generation} (build {hash}) rolled back by the operator: generation {} (build {}) serves on every worker",
                self.rollout.generation, self.rollout.build.hash
            );
            self.changes.finish(&Vec::from_iter(ticket), true, &line);
            return Ok(line);
        }
        let current = self.rollout.build.clone();
        let Some(target) = self
            .rollout
            .kept
            .iter()
            .rev()
            .find(|b| b.hash != current.hash)
            .cloned()
        else {
            return Err(format!(
                "nothing to roll back to: no build before {} is kept (--keep-builds {})",
                current.hash, self.settings.config.keep_builds
            ));
        };
        if self.rollout.probe.is_some() || self.rollout.reload_requested.is_some() {
            return Err("a reload is being prepared: roll back once it is settled".to_owned());
        }
        *self.counters.rollbacks.entry("operator").or_insert(0) += 1;
        let generation = self.rollout.generation;
        let line = format!(
            "rolling back from generation {generation} (build {}) to build {}, which served before; build {} is marked bad: a reload of the unchanged file is refused",
            current.hash, target.hash, current.hash
        );
        log::warn!("{line}");
        self.rollout.kept.retain(|b| b.hash != current.hash);
        self.rollout
            .mark_bad(&current, generation, "rolled back by the operator");
        // A rollback is to a build that already served the whole pool: no
        // probe, no canary; the usual rolling replacement.
        let strategy = match self.settings.config.reload_strategy {
            ReloadStrategy::Chain => ReloadStrategy::Chain,
            _ => ReloadStrategy::All,
        };
        self.begin_generation(
            target,
            ReloadRequest {
                cause: "rollback",
                tickets: ticket.into_iter().collect(),
                strategy: Some(strategy),
            },
        );
        Ok(line)
    }

    /// The live workers' request totals, by generation.
    fn live_totals(&self) -> BTreeMap<u32, RequestTotals> {
        let mut live: BTreeMap<u32, RequestTotals> = BTreeMap::new();
        for w in self.pool.workers.values() {
            if let Some(slot) = self.pool.scoreboard.slot(w.slot) {
                live.entry(w.generation).or_default().add(slot);
            }
        }
        live
    }

    /// Samples the per-generation figures into their history (`force`: even
    /// if the last sample is recent).
    pub(super) fn sample_generations(&mut self, force: bool) {
        let live = self.live_totals();
        let window = self.canary_window();
        self.counters.generations.sample(&live, window, force);
    }

    /// The build hash of `generation`, if the master still knows it.
    fn build_of(&self, generation: u32) -> Option<&str> {
        let rollout = &self.rollout;
        if generation == rollout.generation {
            return Some(&rollout.build.hash);
        }
        rollout
            .old_builds
            .get(&generation)
            .map(|b| b.hash.as_str())
            .or_else(|| {
                rollout
                    .abandoned
                    .iter()
                    .find(|a| a.generation == generation)
                    .map(|a| a.hash.as_str())
            })
            .or_else(|| rollout.build_names.get(&generation).map(String::as_str))
    }

    /// Figures per generation, for /metrics and /status.json.
    pub(super) fn generation_views(&self) -> Vec<GenerationView> {
        let figures = self.counters.generations.now(&self.live_totals());
        figures
            .iter()
            .map(|(g, f)| GenerationView {
                generation: *g,
                build: self.build_of(*g).unwrap_or_default().to_owned(),
                workers: self
                    .pool
                    .workers
                    .values()
                    .filter(|w| w.generation == *g)
                    .count() as u64,
                statuses: f.statuses,
                panics: f.panics,
                crashes: f.crashes,
                timeouts: f.timeouts,
                p99_ms: f.p99().map(|d| d.as_secs_f64() * 1000.0),
            })
            .collect()
    }

    /// What /status.json shows of the canary in progress.
    pub(super) fn canary_view(&self) -> Option<CanaryView> {
        let canary = self.rollout.canary.as_ref()?;
        let mut by_generation = BTreeMap::new();
        for w in self.pool.workers.values() {
            if w.signalled.is_none() && w.retire != Some(Retire::Abandoned) {
                *by_generation.entry(w.generation).or_insert(0) += 1;
            }
        }
        let (verdict, figures) = match &canary.last {
            Some((Verdict::Pass, f)) => ("pass".to_owned(), f.clone()),
            Some((Verdict::Wait(n, of), f)) => (format!("wait ({n} of {of} requests)"), f.clone()),
            Some((Verdict::Fail { line, .. }, f)) => (format!("fail: {line}"), f.clone()),
            None => ("none yet".to_owned(), String::new()),
        };
        Some(CanaryView {
            generation: canary.generation,
            step: (canary.step + 1, canary.plan.len()),
            workers: (canary.workers(), self.pool.target),
            by_generation,
            elapsed_s: canary.started.elapsed().as_secs_f64(),
            verdict,
            figures,
            served: self.served_since(canary),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::LATENCY_BUCKETS;

    fn limits() -> Limits {
        Limits {
            min_requests: 100,
            max_5xx: Share(0.05),
            max_crashes: Share(0.001),
            max_panics: Share(0.01),
            max_timeouts: Share(0.001),
            max_p99: None,
            p99_ratio: Share(1.5),
        }
    }

    /// `requests` answered, `s5` of them 5xx, all within the bucket ending at `ms`.
    fn figures(requests: u64, s5: u64, ms: f64) -> Figures {
        let mut f = Figures::default();
        f.statuses[1] = requests - s5;
        f.statuses[4] = s5;
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| *b * 1000.0 >= ms)
            .unwrap_or(LATENCY_BUCKETS.len());
        f.latency[bucket] = requests;
        f
    }

    fn with(mut f: Figures, edit: impl FnOnce(&mut Figures)) -> Figures {
        edit(&mut f);
        f
    }

    fn check_of(v: &Verdict) -> Option<Check> {
        match v {
            Verdict::Fail { check, .. } => Some(*check),
            _ => None,
        }
    }

    #[test]
    fn each_check_fails_on_its_limit_or_against_the_old_build() {
        let old = figures(3000, 0, 1.0);
        // (what, new figures, old figures, want: None = pass, Some(check))
        let cases: Vec<(&str, Figures, Figures, Option<Check>)> = vec![
            ("healthy", figures(400, 0, 1.0), old.clone(), None),
            (
                "30% 5xx",
                figures(400, 120, 1.0),
                old.clone(),
                Some(Check::FiveXx),
            ),
            // 3% is under the 5% limit, but the old build answers none.
            (
                "3% 5xx vs 0%",
                figures(400, 12, 1.0),
                old.clone(),
                Some(Check::FiveXx),
            ),
            // 3% against an old build at 2%: within 2x + 1 point.
            (
                "3% 5xx vs 2%",
                figures(400, 12, 1.0),
                figures(3000, 60, 1.0),
                None,
            ),
            // Below the noise floor: 4 errors never fail.
            ("4 errors", figures(100, 4, 1.0), old.clone(), None),
            (
                "2 crashes",
                with(figures(400, 0, 1.0), |f| f.crashes = 2),
                old.clone(),
                Some(Check::Crashes),
            ),
            (
                "1 crash",
                with(figures(400, 0, 1.0), |f| f.crashes = 1),
                old.clone(),
                None,
            ),
            (
                "crashes as common as before",
                with(figures(4000, 0, 1.0), |f| f.crashes = 3),
                with(old.clone(), |f| f.crashes = 3),
                None,
            ),
            (
                "timeouts",
                with(figures(400, 0, 1.0), |f| f.timeouts = 2),
                old.clone(),
                Some(Check::Timeouts),
            ),
            (
                "panics",
                with(figures(400, 0, 1.0), |f| f.panics = 8),
                old.clone(),
                Some(Check::Panics),
            ),
            (
                "p99 3x",
                figures(400, 0, 30.0),
                figures(3000, 0, 10.0),
                Some(Check::P99),
            ),
            // 1.3x: within the ratio.
            (
                "p99 1.3x",
                figures(400, 0, 50.0),
                figures(3000, 0, 35.0),
                None,
            ),
            // 4x, but only a few milliseconds: under the floor.
            (
                "p99 tiny",
                figures(400, 0, 2.5),
                figures(3000, 0, 0.5),
                None,
            ),
            // No old figure: the relative check waits, the absolute one has no limit.
            (
                "p99 no old",
                figures(400, 0, 30.0),
                Figures::default(),
                None,
            ),
        ];
        for (what, new, old, want) in cases {
            let got = judge(&new, &old, &limits(), 10.0);
            assert_eq!(check_of(&got), want, "{what}: {got:?}");
            if want.is_none() {
                assert_eq!(got, Verdict::Pass, "{what}");
            }
        }
    }

    #[test]
    fn shares_wait_for_enough_requests_but_crashes_do_not() {
        let old = figures(3000, 0, 1.0);
        let few = figures(40, 20, 1.0);
        assert_eq!(judge(&few, &old, &limits(), 2.0), Verdict::Wait(40, 100));
        let crashing = with(figures(40, 0, 1.0), |f| f.crashes = 2);
        assert_eq!(
            check_of(&judge(&crashing, &old, &limits(), 2.0)),
            Some(Check::Crashes)
        );
        let absolute = Limits {
            max_p99: Some(Duration::from_millis(20)),
            ..limits()
        };
        assert_eq!(
            check_of(&judge(
                &figures(400, 0, 30.0),
                &Figures::default(),
                &absolute,
                2.0
            )),
            Some(Check::P99)
        );
    }

    #[test]
    fn a_failure_names_the_check_with_its_figures() {
        let got = judge(
            &figures(1320, 412, 1.0),
            &figures(3000, 0, 1.0),
            &limits(),
            10.0,
        );
        let Verdict::Fail { check, line } = got else {
            panic!("{got:?}");
        };
        assert_eq!(check.label(), "5xx");
        assert_eq!(
            line,
            "5xx share 31.2% (412 of 1320 requests) over 10.0 s, limit 5.0% (old generation 0.0%)"
        );
    }

    #[test]
    fn the_plan_grows_to_the_whole_pool() {
        let default = [0.25, 0.5, 1.0];
        // (target, first, shares, plan)
        let cases: [(usize, usize, &[f64], &[usize]); 7] = [
            (4, 1, &default, &[1, 2, 4]),
            (10, 1, &default, &[1, 3, 5, 10]),
            (10, 3, &default, &[3, 5, 10]),
            (1, 1, &default, &[1]),
            (2, 5, &default, &[2]),
            // Shares that stop short still end on the pool.
            (8, 1, &[0.5], &[1, 4, 8]),
            (8, 2, &[], &[2, 8]),
        ];
        for (target, first, shares, want) in cases {
            assert_eq!(
                plan(target, first, shares),
                want,
                "{target} {first} {shares:?}"
            );
        }
    }

    #[test]
    fn a_step_waits_for_its_interval_its_workers_and_a_pass() {
        let s = Duration::from_secs;
        let cases = [
            (s(5), s(5), true, Verdict::Pass, true),
            (s(4), s(5), true, Verdict::Pass, false),
            (s(6), s(5), false, Verdict::Pass, false),
            (s(6), s(5), true, Verdict::Wait(3, 100), false),
        ];
        for (on_step, interval, ready, verdict, want) in cases {
            assert_eq!(
                step_due(on_step, interval, ready, &verdict),
                want,
                "{verdict:?}"
            );
        }
    }
}
