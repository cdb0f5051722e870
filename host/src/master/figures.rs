//! Request figures per build generation: cumulative totals (live workers'
//! scoreboard slots plus the workers of that generation already reaped),
//! and a short history of samples, so the figures over the last N seconds
//! are differences of cumulative counters.
//!
//! The canary ([`super::canary`]) judges a new generation by its figures
//! over a sliding window against the old generation's; /metrics shows the
//! cumulative ones per generation. Counters only grow: a worker's counts
//! move from its slot to its generation's retired totals when it is reaped,
//! in the same turn of the loop, so no sample sees them twice or not at all.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use crate::scoreboard::{RequestTotals, LATENCY_BUCKETS};

/// The closest two samples may be (the loop may turn much more often).
pub const SAMPLE_SPACING_MIN: Duration = Duration::from_millis(100);
/// Samples kept per window at most: the spacing grows with the window, so
/// an hour's window costs no more memory than a ten seconds' one.
pub const SAMPLES_PER_WINDOW: u32 = 100;
/// Generations whose totals are kept once they have no worker left (for
/// /metrics); the oldest is forgotten first.
pub const GENERATIONS_KEPT: usize = 8;

/// The app's own health figures, once the SDK has a health hook.
///
/// Reserved: the SDK has no health hook yet, so this is always `None`.
/// When it grows one (a `fn health(&self) -> Result` the worker calls now
/// and then, counting in its scoreboard slot), the master fills this in
/// from the slots like the other counters, and [`super::canary::judge`]
/// already fails a canary whose health checks fail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Health checks run.
    pub checks: u64,
    /// Of those, failed.
    pub failed: u64,
}

/// What one generation (or several added up) served: cumulative, or over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// Responses by status class, 1xx to 5xx.
    pub statuses: [u64; 5],
    /// Requests in which the app panicked.
    pub panics: u64,
    /// Workers that crashed (killed by a signal the master did not send).
    pub crashes: u64,
    /// Requests that ran past `--timeout` (their workers were stopped).
    pub timeouts: u64,
    /// Request durations per bucket of [`LATENCY_BUCKETS`] (the last is +Inf).
    pub latency: [u64; LATENCY_BUCKETS.len() + 1],
    /// The app's own health report (reserved: see [`Health`]).
    pub health: Option<Health>,
}

impl Figures {
    /// Responses counted.
    pub fn requests(&self) -> u64 {
        self.statuses.iter().sum()
    }

    /// Adds request counts (statuses, panics, latency) from scoreboard totals.
    pub fn add_totals(&mut self, t: &RequestTotals) {
        for (a, b) in self.statuses.iter_mut().zip(&t.statuses) {
            *a += b;
        }
        for (a, b) in self.latency.iter_mut().zip(&t.latency) {
            *a += b;
        }
        self.panics += t.app_panics;
    }

    /// Adds `other`.
    pub fn add(&mut self, other: &Figures) {
        for (a, b) in self.statuses.iter_mut().zip(&other.statuses) {
            *a += b;
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
        self.panics += other.panics;
        self.crashes += other.crashes;
        self.timeouts += other.timeouts;
    }

    /// What happened since `earlier` (counters only grow; saturating).
    pub fn since(&self, earlier: &Figures) -> Figures {
        let mut out = self.clone();
        for (a, b) in out.statuses.iter_mut().zip(&earlier.statuses) {
            *a = a.saturating_sub(*b);
        }
        for (a, b) in out.latency.iter_mut().zip(&earlier.latency) {
            *a = a.saturating_sub(*b);
        }
        out.panics = out.panics.saturating_sub(earlier.panics);
        out.crashes = out.crashes.saturating_sub(earlier.crashes);
        out.timeouts = out.timeouts.saturating_sub(earlier.timeouts);
        out
    }

    /// The 99th percentile of the durations (`None`: no request).
    pub fn p99(&self) -> Option<Duration> {
        quantile(&self.latency, 0.99)
    }
}

/// The `q` quantile of a histogram over [`LATENCY_BUCKETS`], interpolated
/// linearly within its bucket (the +Inf bucket counts as its lower bound).
pub fn quantile(latency: &[u64], q: f64) -> Option<Duration> {
    let total: u64 = latency.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in latency.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
            let Some(&upper) = LATENCY_BUCKETS.get(i) else {
                return Some(Duration::from_secs_f64(lower));
            };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some(Duration::from_secs_f64(lower + (upper - lower) * within));
        }
        below += n;
    }
    LATENCY_BUCKETS.last().map(|b| Duration::from_secs_f64(*b))
}

/// Per-generation totals and their recent history.
#[derive(Debug, Default)]
pub struct GenerationBook {
    /// Totals of workers gone, by generation (crashes and timeouts too).
    retired: BTreeMap<u32, Figures>,
    /// The latest cumulative figures, by generation.
    latest: BTreeMap<u32, Figures>,
    /// Samples of the cumulative figures, oldest first.
    history: VecDeque<(Instant, BTreeMap<u32, Figures>)>,
}

impl GenerationBook {
    /// Counts a reaped worker of `generation`: its slot's totals, and
    /// whether it crashed or was stopped past `--timeout`.
    pub fn retire(&mut self, generation: u32, totals: &RequestTotals, category: &str) {
        let f = self.retired.entry(generation).or_default();
        f.add_totals(totals);
        match category {
            "crash" => f.crashes += 1,
            "timeout" => f.timeouts += 1,
            _ => {}
        }
        // The oldest generations go first (their workers are long gone).
        while self.retired.len() > GENERATIONS_KEPT {
            self.retired.pop_first();
        }
    }

    /// The cumulative figures now, by generation: the retired totals plus
    /// the live workers' (`live`, by generation).
    pub fn now(&self, live: &BTreeMap<u32, RequestTotals>) -> BTreeMap<u32, Figures> {
        let mut figures = self.retired.clone();
        for (g, t) in live {
            figures.entry(*g).or_default().add_totals(t);
        }
        figures
    }

    /// Takes the cumulative figures now from the live workers' totals
    /// (`live`, by generation); records a sample in the history unless the
    /// last one is more recent than the spacing for `window` (or `force`).
    pub fn sample(&mut self, live: &BTreeMap<u32, RequestTotals>, window: Duration, force: bool) {
        self.latest = self.now(live);
        let now = Instant::now();
        let spacing = (window / SAMPLES_PER_WINDOW).max(SAMPLE_SPACING_MIN);
        let due = self
            .history
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= spacing);
        if due || force {
            self.history.push_back((now, self.latest.clone()));
        }
        // Keep one sample at or before the window's start, none older.
        while self
            .history
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= window)
        {
            self.history.pop_front();
        }
    }

    /// The latest cumulative figures, by generation.
    pub fn cumulative(&self) -> &BTreeMap<u32, Figures> {
        &self.latest
    }

    /// The figures over the last `window` (or as much of it as the history
    /// holds), by generation, and the seconds they cover.
    pub fn window(&self, window: Duration) -> (BTreeMap<u32, Figures>, f64) {
        let Some((last_at, _)) = self.history.back() else {
            return (BTreeMap::new(), 0.0);
        };
        let start = last_at.checked_sub(window);
        let base = self
            .history
            .iter()
            .rev()
            .find(|(at, _)| start.is_some_and(|s| *at <= s))
            .or(self.history.front());
        let Some((base_at, base)) = base else {
            return (BTreeMap::new(), 0.0);
        };
        let seconds = Instant::now().duration_since(*base_at).as_secs_f64();
        let figures = self
            .latest
            .iter()
            .map(|(g, f)| {
                let since = match base.get(g) {
                    Some(before) => f.since(before),
                    None => f.clone(),
                };
                (*g, since)
            })
            .collect();
        (figures, seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_interpolated_within_its_bucket() {
        let at = |ms: f64| {
            LATENCY_BUCKETS
                .iter()
                .position(|b| (b * 1000.0 - ms).abs() < 1e-9)
                .unwrap()
        };
        let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3);
        // (buckets filled: (upper bound ms, count), p99 in ms)
        type Case = (&'static [(f64, u64)], Option<f64>);
        let cases: [Case; 4] = [
            (&[], None),
            // All in (10, 15]: 99% of the way through it.
            (&[(15.0, 100)], Some(14.95)),
            // 98 fast, 2 in (25, 35]: the 99th of 100 is half-way into it.
            (&[(1.0, 98), (35.0, 2)], Some(30.0)),
            (&[(0.5, 1000)], Some(0.495)),
        ];
        for (filled, want) in cases {
            let mut latency = [0u64; LATENCY_BUCKETS.len() + 1];
            for (bound, n) in filled {
                latency[at(*bound)] = *n;
            }
            assert_eq!(ms(quantile(&latency, 0.99)), want, "{filled:?}");
        }
        let mut slow = [0u64; LATENCY_BUCKETS.len() + 1];
        slow[LATENCY_BUCKETS.len()] = 5;
        assert_eq!(quantile(&slow, 0.99), Some(Duration::from_secs(5)));
    }

    #[test]
    fn the_window_is_a_difference_of_cumulative_counters() {
        let mut book = GenerationBook::default();
        let totals = |ok: u64, errors: u64| RequestTotals {
            statuses: [0, ok, 0, 0, errors],
            ..RequestTotals::default()
        };
        book.sample(
            &BTreeMap::from([(1, totals(100, 0))]),
            Duration::from_secs(60),
            true,
        );
        // A worker of generation 1 is reaped after 50 more, a crash; generation 2 starts.
        book.retire(1, &totals(150, 0), "crash");
        book.sample(
            &BTreeMap::from([(1, totals(10, 0)), (2, totals(20, 5))]),
            Duration::from_secs(60),
            true,
        );
        let (w, _) = book.window(Duration::from_secs(60));
        assert_eq!(w[&1].requests(), 60);
        assert_eq!(w[&1].crashes, 1);
        assert_eq!(w[&2].requests(), 25);
        assert_eq!(w[&2].statuses[4], 5);
        assert_eq!(book.cumulative()[&1].requests(), 160);
    }
}
