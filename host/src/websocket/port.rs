//! What a call of the app reaches of its loop's WebSocket side: the
//! outbox its sends go to, the ids accepted connections get, and whether
//! the app handles WebSocket events at all.

use crate::websocket::{ids::IdMaker, outbox::Outbox};

/// A loop's WebSocket side, as a call of the app sees it.
#[derive(Debug)]
pub struct Port {
    /// Messages sent during the current call.
    pub outbox: Outbox,
    /// The ids of the connections this loop accepts.
    pub ids: IdMaker,
    /// The largest message a send may carry (what a connection may hold unsent).
    pub max_send: usize,
    /// The app exports an event handler (`on_websocket`): it may accept.
    pub enabled: bool,
}

impl Port {
    /// The port of loop `loop_index`, for an app with (`enabled`) or
    /// without an event handler.
    pub fn new(loop_index: usize, max_send: usize, enabled: bool) -> Port {
        Port {
            outbox: Outbox::default(),
            ids: IdMaker::new(loop_index),
            max_send,
            enabled,
        }
    }

    /// Queues a send (see [`Outbox::queue`]).
    pub fn send(&mut self, ids: &[u64], kind: u32, data: &[u8]) -> Result<usize, String> {
        self.outbox.queue(ids, kind, data, self.max_send)
    }
}
