//! The adaptive pool (`--workers-max`): grow when every worker is busy and
//! connections wait, shrink when a worker has been idle for `--idle-timeout`.
//!
//! The master asks once per turn of its loop, from the scoreboard (busy
//! workers, each worker's last activity) and the listen queues. Growth ramps
//! up (1, 2, 4 … workers per decision, at most one decision a second) so a
//! burst is met quickly without a fork storm; shrinking retires one idle
//! worker at a time. `-w` stays the floor.

use std::time::{Duration, Instant};

/// Most workers added by one decision.
pub const MAX_STEP: usize = 8;
/// Least time between two growth decisions.
pub const GROW_INTERVAL: Duration = Duration::from_secs(1);

/// What the pool looks like now.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Ready workers of the current generation.
    pub ready: usize,
    /// Of those, busy with a request.
    pub busy: usize,
    /// Connections waiting in the listen queues.
    pub queued: u32,
    /// The current target size.
    pub target: usize,
}

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep the size.
    Hold,
    /// Grow to this size.
    Grow(usize),
}

/// The adaptive pool's state.
#[derive(Debug)]
pub struct Autoscaler {
    /// The floor (`-w`).
    pub min: usize,
    /// The ceiling (`--workers-max`).
    pub max: usize,
    /// How long a worker may be idle before it is retired.
    pub idle_timeout: Duration,
    step: usize,
    last_grow: Option<Instant>,
    saturated_since: Option<Instant>,
    /// Growth decisions taken.
    pub grown: u64,
    /// Workers retired for idleness.
    pub shrunk: u64,
}

impl Autoscaler {
    /// An adaptive pool between `min` and `max` workers.
    pub fn new(min: usize, max: usize, idle_timeout: Duration) -> Autoscaler {
        Autoscaler {
            min,
            max: max.max(min),
            idle_timeout,
            step: 1,
            last_grow: None,
            saturated_since: None,
            grown: 0,
            shrunk: 0,
        }
    }

    /// Whether to grow, given the load now: when every worker is busy and
    /// connections wait in the listen queue, or every worker has stayed busy
    /// for [`GROW_INTERVAL`] (requests then wait on keep-alive connections).
    pub fn decide(&mut self, load: Load, now: Instant) -> Decision {
        let saturated = load.ready > 0 && load.busy >= load.ready && load.ready >= load.target;
        if !saturated {
            self.step = 1;
            self.saturated_since = None;
            return Decision::Hold;
        }
        let since = *self.saturated_since.get_or_insert(now);
        let waiting = load.queued > 0 || now.duration_since(since) >= GROW_INTERVAL;
        if !waiting
            || load.target >= self.max
            || self
                .last_grow
                .is_some_and(|t| now.duration_since(t) < GROW_INTERVAL)
        {
            return Decision::Hold;
        }
        let to = (load.target + self.step).min(self.max);
        self.step = (self.step * 2).min(MAX_STEP);
        self.last_grow = Some(now);
        self.grown += 1;
        Decision::Grow(to)
    }

    /// Whether a worker idle for `idle` may be retired from a pool of `target`.
    pub fn may_retire(&self, target: usize, idle: Duration) -> bool {
        target > self.min && idle >= self.idle_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(ready: usize, busy: usize, queued: u32, target: usize) -> Load {
        Load {
            ready,
            busy,
            queued,
            target,
        }
    }

    #[test]
    fn grows_in_ramping_steps_while_saturated() {
        let mut a = Autoscaler::new(1, 10, Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(a.decide(load(1, 0, 0, 1), t0), Decision::Hold);
        assert_eq!(a.decide(load(1, 1, 3, 1), t0), Decision::Grow(2));
        // Busy with nothing queued: grows only once that has lasted a while.
        let mut b = Autoscaler::new(1, 10, Duration::from_secs(5));
        assert_eq!(b.decide(load(1, 1, 0, 1), t0), Decision::Hold);
        assert_eq!(
            b.decide(load(1, 1, 0, 1), t0 + GROW_INTERVAL),
            Decision::Grow(2)
        );
        // Not again within the interval.
        assert_eq!(a.decide(load(2, 2, 3, 2), t0), Decision::Hold);
        let t1 = t0 + GROW_INTERVAL;
        assert_eq!(a.decide(load(2, 2, 3, 2), t1), Decision::Grow(4));
        let t2 = t1 + GROW_INTERVAL;
        assert_eq!(a.decide(load(4, 4, 9, 4), t2), Decision::Grow(8));
        let t3 = t2 + GROW_INTERVAL;
        assert_eq!(
            a.decide(load(8, 8, 9, 8), t3),
            Decision::Grow(10),
            "capped at max"
        );
        let t4 = t3 + GROW_INTERVAL;
        assert_eq!(a.decide(load(10, 10, 9, 10), t4), Decision::Hold);
        // Calm resets the ramp.
        assert_eq!(a.decide(load(10, 3, 0, 10), t4), Decision::Hold);
        assert_eq!(a.step, 1);
    }

    #[test]
    fn waits_for_new_workers_before_growing_again() {
        let mut a = Autoscaler::new(1, 10, Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(a.decide(load(1, 1, 2, 1), t0), Decision::Grow(2));
        // The second worker is not ready yet: no new decision on stale numbers.
        assert_eq!(
            a.decide(load(1, 1, 2, 2), t0 + GROW_INTERVAL * 2),
            Decision::Hold
        );
    }

    #[test]
    fn retires_only_above_the_floor_after_the_idle_timeout() {
        let a = Autoscaler::new(2, 8, Duration::from_secs(30));
        assert!(!a.may_retire(2, Duration::from_secs(100)));
        assert!(!a.may_retire(3, Duration::from_secs(10)));
        assert!(a.may_retire(3, Duration::from_secs(30)));
    }
}
