//! WebSocket in the recording host: the connections an app accepted, the
//! events [`TestSocket`] hands it, and what it sends, recorded.
//!
//! The real host runs each connection in its event loop; here a test plays
//! the client: [`TestClient::websocket`] sends the handshake and opens the
//! connection, [`TestSocket::send`] delivers a message (`on_message`),
//! [`TestSocket::close`] closes it (`on_close`), and what the app sent
//! lands in each open connection's mailbox ([`TestSocket::received`]) and
//! in the client's log of sends ([`TestClient::websocket_sent`]). The
//! host's rules an app can observe are kept: sends are checked with the
//! host's words, a send to a closed connection is dropped without error,
//! an open or message event that fails closes its connection with `1011`,
//! and every connection that opened gets exactly one `on_close`, after the
//! call that closed it has returned.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{Mutex, MutexGuard, PoisonError},
};

use super::{Outcome, TestClient, TestResponse};
use crate::{
    abi::{WS_BINARY, WS_CLOSE, WS_TEXT},
    Message, WsId,
};

/// The `Sec-WebSocket-Key` a handshake gets when the test gives none (RFC
/// 6455's example).
pub(super) const TEST_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The event kind of `on_close` (the ABI's close kind).
pub(super) const WS_CLOSE_EVENT: u32 = WS_CLOSE;

/// The close code the host sends when an app's event call fails.
const APP_FAILED: u16 = 1011;
/// The close code of a connection that ended without a close frame (a
/// [`TestSocket`] dropped while open).
const ABNORMAL: u16 = 1006;

/// A message the app sent, as the client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A close frame: the code and reason the app (or, after a failed
    /// event, the host) closed the connection with.
    Close {
        /// The close code.
        code: u16,
        /// The reason (may be empty).
        reason: String,
    },
}

impl Frame {
    /// The frame of a send of ABI kind `kind`, checked as the host checks
    /// it (`host/src/websocket/outbox.rs`), with its words.
    pub(super) fn of(kind: u32, data: &[u8]) -> Result<Frame, String> {
        match kind {
            WS_TEXT => match std::str::from_utf8(data) {
                Ok(text) => Ok(Frame::Text(text.to_owned())),
                Err(_) => Err("a text message that is not UTF-8".into()),
            },
            WS_BINARY => Ok(Frame::Binary(data.to_vec())),
            WS_CLOSE => {
                let Some((code, reason)) = data.split_first_chunk::<2>() else {
                    return Err("a close without its code".into());
                };
                let code = u16::from_be_bytes(*code);
                if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                    return Err(format!("close code {code} may not be sent"));
                }
                match std::str::from_utf8(reason) {
                    Ok(reason) if reason.len() <= 123 => Ok(Frame::Close {
                        code,
                        reason: reason.to_owned(),
                    }),
                    _ => Err("a close reason must be at most 123 bytes of UTF-8".into()),
                }
            }
            other => Err(format!("unknown WebSocket message kind {other}")),
        }
    }

    /// The text of a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Frame::Text(text) => Some(text),
            _ => None,
        }
    }
}

/// One send the app made ([`Sender::send`](crate::Sender::send),
/// [`broadcast`](crate::Sender::broadcast), [`close`](crate::Sender::close)):
/// the ids it named (open or not) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The ids the send named, in its order.
    pub to: Vec<WsId>,
    /// What it sent.
    pub frame: Frame,
}

/// The recording host's WebSocket side, shared by a client's calls.
#[derive(Debug, Default)]
pub(super) struct Sockets {
    /// The last id given.
    last_id: u64,
    /// The subprotocol each accepted connection was given.
    protocols: BTreeMap<WsId, String>,
    /// The connections open: what the app sends them is delivered.
    open: BTreeSet<WsId>,
    /// What each connection that opened has received and not yet read.
    mailboxes: BTreeMap<WsId, Vec<Frame>>,
    /// How each connection that closed closed (code, reason).
    closed: BTreeMap<WsId, (u16, String)>,
    /// The `on_close` calls owed, in order.
    pub(super) owed: VecDeque<(WsId, (u16, String))>,
    /// Every send, in order, until [`TestClient::websocket_sent`] takes them.
    pub(super) sent: Vec<Sent>,
}

/// Locks the sockets (a test that panicked in the app leaves them usable).
pub(super) fn lock(sockets: &Mutex<Sockets>) -> MutexGuard<'_, Sockets> {
    sockets.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sockets {
    /// A new connection's id, accepted with subprotocol `protocol`.
    pub(super) fn accept(&mut self, protocol: &[u8]) -> WsId {
        self.last_id += 1;
        let id = WsId::from_raw(self.last_id);
        self.protocols
            .insert(id, String::from_utf8_lossy(protocol).into_owned());
        id
    }

    /// An accepted handshake that was refused after all (the app failed).
    pub(super) fn forget(&mut self, id: WsId) {
        self.protocols.remove(&id);
    }

    /// The `101` is sent: connection `id` is open.
    pub(super) fn open(&mut self, id: WsId) {
        self.open.insert(id);
        self.mailboxes.insert(id, Vec::new());
    }

    /// Records a send and delivers it to the open connections among `ids`;
    /// a close closes them (their `on_close` is owed, with the app's code).
    /// Returns how many ids were named, as the host does.
    pub(super) fn send(&mut self, ids: &[u64], frame: Frame) -> usize {
        let to: Vec<WsId> = ids.iter().map(|&id| WsId::from_raw(id)).collect();
        for id in &to {
            if !self.open.contains(id) {
                continue;
            }
            if let Some(mailbox) = self.mailboxes.get_mut(id) {
                mailbox.push(frame.clone());
            }
            if let Frame::Close { code, reason } = &frame {
                self.close(*id, *code, reason.clone());
            }
        }
        self.sent.push(Sent { to, frame });
        ids.len()
    }

    /// Connection `id` closes with `code` and `reason`: nothing more reaches
    /// it, and its `on_close` is owed.
    fn close(&mut self, id: WsId, code: u16, reason: String) {
        if self.open.remove(&id) {
            self.closed.insert(id, (code, reason.clone()));
            self.owed.push_back((id, (code, reason)));
        }
    }

    /// An open or message event of `id` failed: the host closes it with
    /// `1011`.
    pub(super) fn app_failed(&mut self, id: WsId) {
        if self.open.contains(&id) {
            let reason = "internal error".to_owned();
            if let Some(mailbox) = self.mailboxes.get_mut(&id) {
                mailbox.push(Frame::Close {
                    code: APP_FAILED,
                    reason: reason.clone(),
                });
            }
            self.close(id, APP_FAILED, reason);
        }
    }
}

/// A WebSocket connection to an app in a [`TestClient`], from
/// [`TestClient::websocket`]: the test is its client.
///
/// Each method that reaches the app calls it at once, on this thread, and
/// runs the `on_close` calls that follow (of this connection or of others
/// the app closed) before it returns. Dropping an open one closes it as a
/// client that vanished would (`on_close` with `1006`).
pub struct TestSocket<'c> {
    client: &'c TestClient,
    /// The app's answer to the handshake: `101` with the connection's id in
    /// [`TestResponse::websocket`] when it accepted, else what it answered.
    pub response: TestResponse,
    /// How `on_open` ended; `None` when the app did not accept.
    pub opened: Option<Outcome>,
}

impl<'c> TestSocket<'c> {
    pub(super) fn new(
        client: &'c TestClient,
        response: TestResponse,
        opened: Option<Outcome>,
    ) -> TestSocket<'c> {
        TestSocket {
            client,
            response,
            opened,
        }
    }

    /// The connection's id, when the app accepted the handshake.
    pub fn id(&self) -> Option<WsId> {
        self.response.websocket
    }

    /// Whether the app accepted the handshake.
    pub fn accepted(&self) -> bool {
        self.response.websocket.is_some()
    }

    /// The subprotocol the app chose (`Sec-WebSocket-Protocol`), if any.
    pub fn protocol(&self) -> Option<String> {
        let id = self.response.websocket?;
        let sockets = lock(&self.client.sockets);
        sockets
            .protocols
            .get(&id)
            .filter(|p| !p.is_empty())
            .cloned()
    }

    /// Whether the connection is open: accepted and not closed (by either side).
    pub fn is_open(&self) -> bool {
        self.response
            .websocket
            .is_some_and(|id| lock(&self.client.sockets).open.contains(&id))
    }

    /// How the connection closed (code, reason), once it has.
    pub fn closed(&self) -> Option<(u16, String)> {
        let id = self.response.websocket?;
        lock(&self.client.sockets).closed.get(&id).cloned()
    }

    /// The id of an open connection.
    ///
    /// # Panics
    /// If the app did not accept the handshake, or the connection closed.
    fn open_id(&self, what: &str) -> WsId {
        let Some(id) = self.response.websocket else {
            panic!("{what}: the app did not accept the WebSocket handshake");
        };
        assert!(self.is_open(), "{what}: the WebSocket connection is closed");
        id
    }

    /// Sends a message to the app (`on_message`); returns how the call
    /// ended (an error or a panic also closes the connection with `1011`).
    ///
    /// # Panics
    /// If the connection is not open.
    pub fn send<'m>(&self, msg: impl Into<Message<'m>>) -> Outcome {
        let id = self.open_id("send");
        let msg = msg.into();
        let kind = match msg {
            Message::Text(_) => WS_TEXT,
            Message::Binary(_) => WS_BINARY,
        };
        let outcome = self.client.event(kind, id, msg.as_bytes(), 0);
        self.client.settle();
        outcome
    }

    /// Sends a text message (see [`send`](Self::send)).
    pub fn send_text(&self, text: &str) -> Outcome {
        self.send(text)
    }

    /// Sends a binary message (see [`send`](Self::send)).
    pub fn send_binary(&self, data: &[u8]) -> Outcome {
        self.send(data)
    }

    /// Closes the connection as a client does, with `code` and `reason`:
    /// the app's `on_close` gets them. How that call ended.
    ///
    /// # Panics
    /// If the connection is not open.
    pub fn close(&self, code: u16, reason: &str) -> Outcome {
        let id = self.open_id("close");
        lock(&self.client.sockets).close(id, code, reason.to_owned());
        // The on_close calls owed, in order: this one's among them.
        let mut outcome = Outcome::Done;
        loop {
            let next = lock(&self.client.sockets).owed.pop_front();
            let Some((owed, (code, reason))) = next else {
                break;
            };
            let ended = self
                .client
                .event(WS_CLOSE_EVENT, owed, reason.as_bytes(), code);
            if owed == id {
                outcome = ended;
            }
        }
        outcome
    }

    /// Takes what the app sent this connection since the last time, in
    /// order (a close frame last, if it closed it).
    pub fn received(&self) -> Vec<Frame> {
        let Some(id) = self.response.websocket else {
            return Vec::new();
        };
        lock(&self.client.sockets)
            .mailboxes
            .get_mut(&id)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// [`received`](Self::received), the text messages only.
    pub fn received_texts(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .filter_map(|f| match f {
                Frame::Text(text) => Some(text),
                _ => None,
            })
            .collect()
    }
}

impl Drop for TestSocket<'_> {
    fn drop(&mut self) {
        if self.is_open() {
            if let Some(id) = self.response.websocket {
                lock(&self.client.sockets).close(id, ABNORMAL, String::new());
                self.client.settle();
            }
        }
    }
}

impl std::fmt::Debug for TestSocket<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSocket")
            .field("id", &self.id())
            .field("open", &self.is_open())
            .field("closed", &self.closed())
            .finish()
    }
}
