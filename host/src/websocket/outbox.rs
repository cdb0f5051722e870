//! Messages an app sends to WebSocket connections during a call, held
//! until the call returns.
//!
//! The app may send to any connection of its worker, in `handle` or in an
//! event, while the loop is inside the call and holds none of the
//! connections: a send only queues here ([`Outbox::queue`]), and the loop
//! delivers the queue, in order, as soon as the call returns. A message to
//! many connections (a broadcast) is copied once. What one call may queue
//! is bounded ([`MAX_QUEUED`]).

use std::sync::Arc;

use app_sdk::abi::{WS_BINARY, WS_CLOSE, WS_TEXT};

/// The most payload bytes one call may queue (each message counted once,
/// however many connections it goes to): past it a send is refused, so an
/// app's loop cannot grow the worker without bound before it returns.
pub const MAX_QUEUED: usize = 64 * 1024 * 1024;

/// What is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A text message (checked UTF-8).
    Text,
    /// A binary message.
    Binary,
    /// Close the connection: the payload is the code (2 bytes) and reason.
    Close,
}

/// One message for one connection.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The connection's id.
    pub to: u64,
    /// What it is.
    pub kind: Kind,
    /// Its payload, shared by every connection it goes to.
    pub payload: Arc<[u8]>,
}

/// A loop's queue of messages sent during the current call.
#[derive(Debug, Default)]
pub struct Outbox {
    entries: Vec<Outgoing>,
    bytes: usize,
}

impl Outbox {
    /// Queues `data` of ABI kind `kind` for each of `ids`: how many ids.
    /// Refused for an unknown kind, text that is not UTF-8, a close whose
    /// code or reason is invalid, a message over `max_message` (no
    /// connection could hold it), or past [`MAX_QUEUED`].
    pub fn queue(
        &mut self,
        ids: &[u64],
        kind: u32,
        data: &[u8],
        max_message: usize,
    ) -> Result<usize, String> {
        let kind = match kind {
            WS_TEXT => {
                if std::str::from_utf8(data).is_err() {
                    return Err("a text message that is not UTF-8".into());
                }
                Kind::Text
            }
            WS_BINARY => Kind::Binary,
            WS_CLOSE => {
                check_close(data)?;
                Kind::Close
            }
            other => return Err(format!("unknown WebSocket message kind {other}")),
        };
        if data.len() > max_message {
            return Err(format!(
                "a message of {} bytes: larger than a connection may hold unsent ({max_message})",
                data.len()
            ));
        }
        if self.bytes + data.len() > MAX_QUEUED {
            return Err(format!(
                "more than {} MiB queued in one call: send less before returning",
                MAX_QUEUED >> 20
            ));
        }
        if ids.is_empty() {
            return Ok(0);
        }
        self.bytes += data.len();
        let payload: Arc<[u8]> = Arc::from(data);
        self.entries.extend(ids.iter().map(|&to| Outgoing {
            to,
            kind,
            payload: payload.clone(),
        }));
        Ok(ids.len())
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes what is queued, in order, leaving the outbox empty.
    pub fn take(&mut self) -> Vec<Outgoing> {
        self.bytes = 0;
        std::mem::take(&mut self.entries)
    }
}

/// Checks a close the app asks for: a code it may send (1000, 1001,
/// 1002-1003, 1007-1014, or 3000-4999) and a reason of at most 123 bytes
/// of UTF-8.
fn check_close(data: &[u8]) -> Result<(), String> {
    let Some((code, reason)) = data.split_first_chunk::<2>() else {
        return Err("a close without its code".into());
    };
    let code = u16::from_be_bytes(*code);
    let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if !allowed {
        return Err(format!("close code {code} may not be sent"));
    }
    if reason.len() > 123 || std::str::from_utf8(reason).is_err() {
        return Err("a close reason must be at most 123 bytes of UTF-8".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_is_copied_once_and_bad_sends_are_refused() {
        let mut outbox = Outbox::default();
        assert_eq!(outbox.queue(&[1, 2, 3], WS_TEXT, b"hi", 100), Ok(3));
        let taken = outbox.take();
        assert_eq!(taken.len(), 3);
        assert!(Arc::ptr_eq(&taken[0].payload, &taken[2].payload));
        assert!(outbox.is_empty());
        assert!(outbox.queue(&[1], WS_TEXT, b"\xff", 100).is_err());
        assert!(outbox.queue(&[1], 99, b"", 100).is_err());
        assert!(outbox.queue(&[1], WS_BINARY, &[0; 101], 100).is_err());
        assert!(outbox
            .queue(&[1], WS_CLOSE, &1005u16.to_be_bytes(), 100)
            .is_err());
        assert_eq!(outbox.queue(&[1], WS_CLOSE, b"\x03\xe8bye", 100), Ok(1));
    }
}
