//! The WebSocket options a worker serves with, and their defaults.

use std::time::Duration;

use crate::websocket::session::Limits;

/// `--websocket-max-message` by default: 1 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 1024 * 1024;
/// `--websocket-ping-interval` by default, in seconds.
pub const DEFAULT_PING_INTERVAL: u64 = 20;
/// `--websocket-ping-timeout` by default, in seconds.
pub const DEFAULT_PING_TIMEOUT: u64 = 20;
/// `--websocket-drain` by default, in seconds.
pub const DEFAULT_DRAIN: u64 = 5;
/// The least a connection may hold unsent before it is closed, whatever
/// the largest message.
pub const MIN_PENDING: usize = 1024 * 1024;
/// How long a client has to answer the host's close frame before the
/// socket is closed anyway.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Messages read from one connection per wake-up, at most: a client that
/// sends without pause cannot keep its loop from the others. The rest is
/// read on the loop's next turn.
pub const MESSAGES_PER_TURN: usize = 64;

/// How a worker runs WebSocket connections.
#[derive(Debug, Clone, Copy)]
pub struct WsOptions {
    /// The largest message a client may send (`--websocket-max-message`).
    pub max_message: usize,
    /// How long a client may stay silent before it is pinged; `None`: never.
    pub ping_interval: Option<Duration>,
    /// How long a pinged client has to answer.
    pub ping_timeout: Duration,
    /// How long a stopping worker keeps its connections before `1001`.
    pub drain: Duration,
}

impl WsOptions {
    /// The limits of each connection's session: unsent output is bounded
    /// at twice the largest message, and at least [`MIN_PENDING`].
    pub fn limits(&self) -> Limits {
        Limits {
            max_message: self.max_message,
            max_pending: (2 * self.max_message).max(MIN_PENDING),
        }
    }
}

impl Default for WsOptions {
    fn default() -> WsOptions {
        WsOptions {
            max_message: DEFAULT_MAX_MESSAGE,
            ping_interval: Some(Duration::from_secs(DEFAULT_PING_INTERVAL)),
            ping_timeout: Duration::from_secs(DEFAULT_PING_TIMEOUT),
            drain: Duration::from_secs(DEFAULT_DRAIN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsent_output_is_bounded_at_twice_the_largest_message_and_at_least_1_mib() {
        let limits = |max_message| {
            WsOptions {
                max_message,
                ..WsOptions::default()
            }
            .limits()
        };
        // The default: 2 MiB.
        assert_eq!(
            WsOptions::default().limits().max_pending,
            2 * DEFAULT_MAX_MESSAGE
        );
        // Small messages: the floor.
        assert_eq!(limits(1000).max_pending, MIN_PENDING);
        assert_eq!(limits(1000).max_message, 1000);
        assert_eq!(limits(MIN_PENDING / 2).max_pending, MIN_PENDING);
        // Large ones: twice.
        assert_eq!(limits(16 << 20).max_pending, 32 << 20);
    }
}
