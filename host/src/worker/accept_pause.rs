//! Pacing `accept` when it fails for want of resources: a short, growing
//! pause, and a log line per episode rather than per failure.
//!
//! When `accept` fails with `EMFILE` (the process is out of descriptors),
//! `ENFILE` (the system is), `ENOBUFS` or `ENOMEM`, the connection stays in
//! the listen queue and the listener stays readable: a loop that polls it
//! again at once fails again at once, spinning a core and writing a log line
//! each time (122 MB of log in 3 s was measured). So, as nginx does, the
//! event loop stops polling its listeners for a pause that starts at
//! [`FIRST_PAUSE`] and doubles up to [`MAX_PAUSE`] while accepting keeps
//! failing, and goes back to [`FIRST_PAUSE`] after the next successful
//! accept. Connections already open are served meanwhile, and serving new
//! ones resumes by itself when descriptors free up.
//!
//! An episode (from the first failure to the next success) is logged when it
//! starts, at most once per [`LOG_EVERY`] while it lasts, and when it ends,
//! each line with a count. This is the policy only; the event loop
//! ([`crate::worker::event_loop`]) applies it.

use std::time::{Duration, Instant};

/// The first pause after `accept` fails for want of resources.
pub const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause: how late, at worst, a worker notices that
/// descriptors freed up.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);
/// How often an episode that goes on is logged again (with a count).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// What the event loop should log about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Nothing: the episode was logged recently.
    Quiet,
    /// The episode starts.
    Started,
    /// The episode goes on: `failures` since the last line, over `over`.
    Continues {
        /// Failures since the last line.
        failures: u64,
        /// Time since the last line.
        over: Duration,
    },
}

/// One event loop's accept pacing.
#[derive(Debug, Clone)]
pub struct AcceptPause {
    /// Accepting is paused until then.
    until: Option<Instant>,
    /// The next pause's length.
    next: Duration,
    /// When the episode started (None: accepting works).
    started: Option<Instant>,
    /// Failures in the episode.
    failures: u64,
    /// When the episode was last logged, and the failures counted then.
    logged: Option<(Instant, u64)>,
}

impl Default for AcceptPause {
    fn default() -> Self {
        AcceptPause {
            until: None,
            next: FIRST_PAUSE,
            started: None,
            failures: 0,
            logged: None,
        }
    }
}

impl AcceptPause {
    /// Whether `accept` failing with `errno` should pause accepting (any
    /// error but the transient ones a retry gets past: a would-block, an
    /// interrupted call, a connection aborted before it was taken).
    pub fn pauses_for(errno: i32) -> bool {
        !matches!(
            errno,
            libc::EAGAIN | libc::EINTR | libc::ECONNABORTED | libc::EPROTO
        )
    }

    /// `accept` failed at `now`: starts a pause. Returns its length and what to log.
    pub fn failed(&mut self, now: Instant) -> (Duration, Report) {
        let pause = self.next;
        self.until = Some(now + pause);
        self.next = (self.next * 2).min(MAX_PAUSE);
        self.failures += 1;
        let report = match self.logged {
            None => {
                self.started = Some(now);
                self.logged = Some((now, self.failures));
                Report::Started
            }
            Some((at, counted)) if now.saturating_duration_since(at) >= LOG_EVERY => {
                self.logged = Some((now, self.failures));
                Report::Continues {
                    failures: self.failures - counted,
                    over: now.saturating_duration_since(at),
                }
            }
            _ => Report::Quiet,
        };
        (pause, report)
    }

    /// Whether `accept` has failed since it last succeeded (so the clock
    /// need not be read for the other questions while it has not).
    pub fn in_episode(&self) -> bool {
        self.started.is_some()
    }

    /// Whether accepting is paused at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// How long the pause goes on after `now`, if one does.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.until
            .filter(|&until| now < until)
            .map(|until| until - now)
    }

    /// `accept` succeeded at `now`: the next failure starts over with
    /// [`FIRST_PAUSE`]. Returns the episode that ended, if one did: its
    /// failures and how long it lasted.
    pub fn succeeded(&mut self, now: Instant) -> Option<(u64, Duration)> {
        let started = self.started?;
        let ended = (self.failures, now.saturating_duration_since(started));
        *self = AcceptPause::default();
        Some(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_up_to_the_most_and_starts_over_after_a_success() {
        let mut p = AcceptPause::default();
        let t = Instant::now();
        let pauses: Vec<u64> = (0..10).map(|_| p.failed(t).0.as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert!(p.in_episode());
        assert!(p.holds(t));
        assert!(!p.holds(t + MAX_PAUSE));
        assert_eq!(p.remaining(t + MAX_PAUSE), None);
        assert_eq!(p.succeeded(t + LOG_EVERY), Some((10, LOG_EVERY)));
        assert!(!p.in_episode());
        assert_eq!(p.failed(t).0, FIRST_PAUSE);
        assert_eq!(AcceptPause::default().succeeded(t), None);
    }

    #[test]
    fn an_episode_is_logged_when_it_starts_and_then_now_and_then_with_a_count() {
        let mut p = AcceptPause::default();
        let t = Instant::now();
        assert_eq!(p.failed(t).1, Report::Started);
        let mut at = t;
        let mut reports = Vec::new();
        for _ in 0..30 {
            at += MAX_PAUSE;
            reports.push(p.failed(at).1);
        }
        let lines: Vec<&Report> = reports.iter().filter(|r| **r != Report::Quiet).collect();
        assert_eq!(
            lines,
            [
                &Report::Continues {
                    failures: 10,
                    over: LOG_EVERY
                },
                &Report::Continues {
                    failures: 10,
                    over: LOG_EVERY
                },
                &Report::Continues {
                    failures: 10,
                    over: LOG_EVERY
                },
            ]
        );
        assert_eq!(p.succeeded(at), Some((31, at - t)));
    }

    #[test]
    fn transient_errors_do_not_pause() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(AcceptPause::pauses_for(errno));
        }
        for errno in [libc::EAGAIN, libc::EINTR, libc::ECONNABORTED, libc::EPROTO] {
            assert!(!AcceptPause::pauses_for(errno));
        }
    }
}
