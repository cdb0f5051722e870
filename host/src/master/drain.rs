//! Draining before a stop (`--drain-delay`), for load balancers and
//! Kubernetes.
//!
//! A load balancer learns that a server is going from its health check, not
//! from the TERM: until it has looked again (and Kubernetes has taken the
//! pod out of its endpoints), it keeps sending connections. A server that
//! closes its listeners at the TERM refuses them. So with `--drain-delay
//! SECS`, TERM first *drains*: `/ready` answers 503 at once, while the
//! workers go on serving as before (listeners open, new connections
//! accepted, keep-alive answered normally); after the delay the graceful
//! stop begins, as a TERM without a delay begins it at once. The drain
//! replaces the `preStop: sleep` a Kubernetes deployment would otherwise
//! need, and tells the load balancer through `/ready` as well.
//!
//! Signals during the drain ([`on_term`] is the policy): a second TERM ends
//! the delay at once (an operator who asks twice means it); INT or QUIT stop
//! quickly, as always; HUP, TTIN and TTOU are ignored, as during a stop. The
//! pool is kept as it is (a worker that dies is replaced) but no reload
//! starts.
//!
//! The workers' part of a graceful stop, serving what waits in the accept
//! queue before letting go of the listeners, is in
//! [`crate::worker::event_loop`]: the master closes its listener copies
//! first, then marks every worker's slot (a server stop, not a retirement)
//! and signals it; each worker takes every queued connection, closes its
//! copies, then serves what it took. Whatever the kernel queues while any
//! worker still holds a copy is taken by that worker. What remains is a
//! connection that completes its handshake between the last worker's empty
//! `accept` and its `close` (a few instructions apart), or one still in its
//! handshake (with `TCP_DEFER_ACCEPT`: one whose first bytes have not
//! arrived) when the last copy closes: the kernel resets those. With
//! `--reuse-port` and `net.ipv4.tcp_migrate_req = 1` (Linux 5.14+), the
//! kernel moves such connections to a successor's socket instead.

use std::time::{Duration, Instant};

use crate::master::Master;

/// A drain in progress: the graceful stop begins at `until`.
pub(super) struct Drain {
    /// When the delay ends.
    pub until: Instant,
    /// The delay, as asked for (for the log).
    pub delay: Duration,
}

/// Where the server is in stopping, as far as a TERM is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Serving: no stop asked for.
    Serving,
    /// In the drain delay.
    Draining,
    /// Stopping (gracefully or quickly): listeners closed, workers told.
    Stopping,
}

/// What a TERM (or `host ctl drain`) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TermAction {
    /// Begin the drain delay.
    Drain,
    /// Begin the graceful stop now (no delay is set).
    Stop,
    /// A TERM during the delay: end it now, and stop.
    EndDrain,
    /// Already stopping: nothing more to do.
    Nothing,
}

/// What a TERM does in `phase`, with `--drain-delay` set to `delay`.
pub(super) fn on_term(phase: Phase, delay: Duration) -> TermAction {
    match phase {
        Phase::Serving if delay.is_zero() => TermAction::Stop,
        Phase::Serving => TermAction::Drain,
        Phase::Draining => TermAction::EndDrain,
        Phase::Stopping => TermAction::Nothing,
    }
}

/// The log line of a drain for `delay` asked for by `cause`, before a
/// graceful stop of up to `graceful`.
pub(super) fn drain_line(cause: &str, delay: Duration, graceful: Duration) -> String {
    format!(
        "{cause}: draining for {} s (/ready answers 503), then stopping (graceful, up to {} s)",
        delay.as_secs(),
        graceful.as_secs()
    )
}

impl Master {
    /// Where the server is in stopping.
    pub(super) fn phase(&self) -> Phase {
        if self.stop.is_some() {
            Phase::Stopping
        } else if self.drain.is_some() {
            Phase::Draining
        } else {
            Phase::Serving
        }
    }

    /// What `/ready` and `/status.json` say about a stop: `draining`,
    /// `stopping`, or nothing while serving.
    pub(super) fn stop_state(&self) -> Option<&'static str> {
        match self.phase() {
            Phase::Serving => None,
            Phase::Draining => Some("draining"),
            Phase::Stopping => Some("stopping"),
        }
    }

    /// TERM (and `host ctl drain`): drains for `--drain-delay`, then stops
    /// gracefully; with no delay, stops gracefully now. `cause` begins the
    /// log line (`SIGTERM`, `ctl drain`). Returns that line; `Err` (saying
    /// so) when the server is already draining or stopping.
    pub(super) fn begin_drain(&mut self, cause: &str) -> Result<String, String> {
        let delay = Duration::from_secs(self.settings.config.drain_delay);
        match on_term(self.phase(), delay) {
            TermAction::Stop => Ok(self.begin_stop(false, cause)),
            TermAction::Drain => {
                let graceful = Duration::from_secs(self.settings.config.graceful_timeout);
                // Set first: /ready answers 503 from the next turn on.
                self.drain = Some(Drain {
                    until: Instant::now() + delay,
                    delay,
                });
                let line = drain_line(cause, delay, graceful);
                log::info!("{line}");
                self.io
                    .notifier
                    .stopping(&format!("draining for {} s", delay.as_secs()));
                Ok(line)
            }
            TermAction::EndDrain => {
                let left = self.drain.as_ref().map_or(0, |d| {
                    d.until.saturating_duration_since(Instant::now()).as_secs()
                });
                Err(format!("already draining: the stop begins in {left} s"))
            }
            TermAction::Nothing => Err("already stopping".to_owned()),
        }
    }

    /// A TERM signal: [`Master::begin_drain`], and a second one during the
    /// delay ends it at once.
    pub(super) fn on_term_signal(&mut self, cause: &str) {
        let delay = Duration::from_secs(self.settings.config.drain_delay);
        match on_term(self.phase(), delay) {
            TermAction::Drain | TermAction::Stop => {
                let _ = self.begin_drain(cause);
            }
            TermAction::EndDrain => {
                log::info!("{cause} again while draining: ending the drain now");
                // (begin_stop ends the drain.)
                self.begin_stop(false, "drain ended early");
            }
            TermAction::Nothing => {}
        }
    }

    /// When the drain delay is over: begins the graceful stop.
    pub(super) fn end_drain_when_due(&mut self) {
        let Some(drain) = &self.drain else {
            return;
        };
        if Instant::now() < drain.until {
            return;
        }
        log::debug!("the {} s drain delay is over", drain.delay.as_secs());
        // (begin_stop ends the drain.)
        self.begin_stop(false, "drain over");
    }

    /// How long until the drain delay ends, if one runs (the loop's wait is no longer).
    pub(super) fn drain_wake(&self, now: Instant) -> Option<Duration> {
        self.drain
            .as_ref()
            .map(|d| d.until.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_term_drains_first_only_with_a_delay_and_ends_a_drain_when_repeated() {
        let delay = Duration::from_secs(10);
        let table = [
            (Phase::Serving, Duration::ZERO, TermAction::Stop),
            (Phase::Serving, delay, TermAction::Drain),
            (Phase::Draining, delay, TermAction::EndDrain),
            // The delay was set to 0 by a HUP meanwhile: still ends it.
            (Phase::Draining, Duration::ZERO, TermAction::EndDrain),
            (Phase::Stopping, delay, TermAction::Nothing),
            (Phase::Stopping, Duration::ZERO, TermAction::Nothing),
        ];
        for (phase, delay, want) in table {
            assert_eq!(on_term(phase, delay), want, "{phase:?} with {delay:?}");
        }
    }

    #[test]
    fn the_log_line_names_the_delay_and_the_graceful_bound() {
        assert_eq!(
            drain_line("SIGTERM", Duration::from_secs(10), Duration::from_secs(30)),
            "SIGTERM: draining for 10 s (/ready answers 503), then stopping (graceful, up to 30 s)"
        );
    }
}
