//! WebSocket connections run by the host, and the app's side of them.
//!
//! The host speaks the protocol: it checks the handshake, frames and
//! unmasks messages, answers pings, enforces the size limits and closes
//! idle or misbehaving clients. The app sees three things:
//!
//! - the handshake, as an ordinary request in [`App::handle`](crate::App::handle):
//!   [`Request::websocket`](crate::Request::websocket) says whether it is
//!   one (and which subprotocols it offers), and
//!   [`Response::accept_websocket`](crate::Response::accept_websocket)
//!   accepts it, returning the connection's [`WsId`] (any other answer
//!   refuses it);
//! - the connection's events, as calls like `handle`, on the worker's
//!   threads: [`App::on_open`](crate::App::on_open),
//!   [`App::on_message`](crate::App::on_message) and
//!   [`App::on_close`](crate::App::on_close) (always called once for a
//!   connection that opened, whatever ended it). No thread is held
//!   between events;
//! - a [`Sender`], to send to any WebSocket connection of the worker by id
//!   from any of those calls, so a broadcast within a worker is one call
//!   ([`Sender::broadcast`]). Messages go out when the call returns.
//!
//! ```
//! use std::{collections::BTreeSet, sync::Mutex};
//! use app_sdk::{export_app, App, Message, Request, Response, WebSocket, WsId};
//!
//! /// Relays every message to every client of the worker.
//! #[derive(Default)]
//! struct Relay {
//!     clients: Mutex<BTreeSet<WsId>>,
//! }
//!
//! impl App for Relay {
//!     fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
//!         if req.websocket().is_some() {
//!             resp.accept_websocket(None)?;
//!         } else {
//!             resp.status(404).body("not here\n")?;
//!         }
//!         Ok(())
//!     }
//!
//!     fn on_open(&self, ws: &WebSocket<'_>) -> app_sdk::Result {
//!         self.clients.lock().unwrap().insert(ws.id());
//!         Ok(())
//!     }
//!
//!     fn on_message(&self, ws: &WebSocket<'_>, msg: Message<'_>) -> app_sdk::Result {
//!         let clients: Vec<WsId> = self.clients.lock().unwrap().iter().copied().collect();
//!         ws.broadcast(&clients, msg)?;
//!         Ok(())
//!     }
//!
//!     fn on_close(&self, ws: &WebSocket<'_>, _close: app_sdk::Close<'_>) {
//!         self.clients.lock().unwrap().remove(&ws.id());
//!     }
//! }
//!
//! // `#[websocket]`: a host without WebSocket support refuses to load it
//! // (naming what is missing) instead of failing each handshake.
//! export_app!(#[websocket] app = Relay::default());
//! ```
//!
//! Ids are the worker's: a connection served by another worker process
//! cannot be reached (for that, use a shared broker such as Redis).

use std::io;

use crate::abi::{EventIo, HostIo, IoResult, WS_BINARY, WS_CLOSE, WS_TEXT};

/// A WebSocket connection's id, unique within its worker process for the
/// life of the worker (ids are not reused while it runs).
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WsId(u64);

impl WsId {
    /// The id as the host gave it.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// An id from its number (as [`WsId::get`] returned it).
    pub const fn from_raw(id: u64) -> WsId {
        WsId(id)
    }
}

impl std::fmt::Display for WsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// One message: text (UTF-8, which the host checked) or binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The message's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// The text, for a text message.
    pub fn as_text(&self) -> Option<&'a str> {
        match self {
            Message::Text(t) => Some(t),
            Message::Binary(_) => None,
        }
    }

    fn kind(&self) -> u32 {
        match self {
            Message::Text(_) => WS_TEXT,
            Message::Binary(_) => WS_BINARY,
        }
    }
}

impl<'a> From<&'a str> for Message<'a> {
    fn from(text: &'a str) -> Message<'a> {
        Message::Text(text)
    }
}

impl<'a> From<&'a [u8]> for Message<'a> {
    fn from(bytes: &'a [u8]) -> Message<'a> {
        Message::Binary(bytes)
    }
}

/// How a connection closed, as [`App::on_close`](crate::App::on_close) learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close<'a> {
    /// The close code: the client's (`1000` normal, `1001` going away…),
    /// the host's when it closed the connection (`1001` when the worker
    /// stops, `1002` a protocol error, `1007` text that is not UTF-8,
    /// `1009` a message too large, `1011` the app failed), `1005` when the
    /// client's close frame had none, `1006` when the connection ended
    /// without a close frame (a timeout, a client that stopped reading).
    pub code: u16,
    /// The reason given with the code (may be empty).
    pub reason: &'a str,
}

/// The most bytes of reason a close frame carries (its payload is at most
/// 125 bytes, two of them the code).
pub const MAX_CLOSE_REASON: usize = 123;

/// Where a [`Sender`] sends through: the call it was made for.
#[derive(Clone, Copy)]
enum Port<'a> {
    /// A `handle` call.
    Request(HostIo<'a>),
    /// An event call.
    Event(EventIo<'a>),
}

/// Sends to the WebSocket connections of this worker, by id. Valid for the
/// call it was made in; what it sends goes out when that call returns, in
/// the order sent.
///
/// A message to a connection that has closed is dropped without error
/// (its [`App::on_close`](crate::App::on_close) has run or is about to).
#[derive(Clone, Copy)]
pub struct Sender<'a> {
    port: Port<'a>,
}

impl<'a> Sender<'a> {
    pub(crate) fn for_request(io: HostIo<'a>) -> Sender<'a> {
        Sender {
            port: Port::Request(io),
        }
    }

    pub(crate) fn for_event(io: EventIo<'a>) -> Sender<'a> {
        Sender {
            port: Port::Event(io),
        }
    }

    fn raw(&self, ids: &[WsId], kind: u32, data: &[u8]) -> io::Result<usize> {
        // SAFETY: `WsId` is `repr(transparent)` over `u64`, so a slice of
        // them is a slice of `u64` of the same length.
        let ids: &[u64] = unsafe { std::slice::from_raw_parts(ids.as_ptr().cast(), ids.len()) };
        let result = match self.port {
            Port::Request(io) => io.websocket_send(ids, kind, data),
            Port::Event(io) => io.websocket_send(ids, kind, data),
        };
        to_io(result)
    }

    /// Sends `msg` to connection `to`.
    pub fn send<'m>(&self, to: WsId, msg: impl Into<Message<'m>>) -> io::Result<()> {
        let msg = msg.into();
        self.raw(&[to], msg.kind(), msg.as_bytes()).map(drop)
    }

    /// Sends `msg` to every connection in `to` (the message is copied once
    /// into the host, then framed for each): how many were still open.
    pub fn broadcast<'m>(&self, to: &[WsId], msg: impl Into<Message<'m>>) -> io::Result<usize> {
        let msg = msg.into();
        self.raw(to, msg.kind(), msg.as_bytes())
    }

    /// Closes connection `to` with `code` (1000 normal, or 3000-4999 for the
    /// app's own meanings) and `reason` (cut to [`MAX_CLOSE_REASON`] bytes,
    /// at a character boundary). Its [`App::on_close`](crate::App::on_close)
    /// follows once the client answers (or a few seconds pass).
    pub fn close(&self, to: WsId, code: u16, reason: &str) -> io::Result<()> {
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut data = Vec::with_capacity(2 + end);
        data.extend_from_slice(&code.to_be_bytes());
        data.extend_from_slice(&reason.as_bytes()[..end]);
        self.raw(&[to], WS_CLOSE, &data).map(drop)
    }
}

/// The connection an event is for, and a [`Sender`] (through `Deref`) to
/// reach the worker's other connections.
pub struct WebSocket<'a> {
    id: WsId,
    sender: Sender<'a>,
}

impl<'a> WebSocket<'a> {
    pub(crate) fn new(id: WsId, io: EventIo<'a>) -> WebSocket<'a> {
        WebSocket {
            id,
            sender: Sender::for_event(io),
        }
    }

    /// This connection's id.
    pub fn id(&self) -> WsId {
        self.id
    }

    /// Sends `msg` on this connection.
    pub fn reply<'m>(&self, msg: impl Into<Message<'m>>) -> io::Result<()> {
        self.sender.send(self.id, msg)
    }

    /// Closes this connection (see [`Sender::close`]).
    pub fn close_with(&self, code: u16, reason: &str) -> io::Result<()> {
        self.sender.close(self.id, code, reason)
    }

    /// The sender of this call, to keep past the borrow of `self`.
    pub fn sender(&self) -> Sender<'a> {
        self.sender
    }
}

impl<'a> std::ops::Deref for WebSocket<'a> {
    type Target = Sender<'a>;

    fn deref(&self) -> &Sender<'a> {
        &self.sender
    }
}

/// What a WebSocket handshake request offers, from
/// [`Request::websocket`](crate::Request::websocket). The host has checked
/// the rest of the handshake (version 13, a valid key) before the app sees it.
#[derive(Debug, Clone, Copy)]
pub struct WebSocketRequest<'a> {
    pub(crate) protocols: &'a str,
}

impl<'a> WebSocketRequest<'a> {
    /// The subprotocols the client offers (`Sec-WebSocket-Protocol`), in its order.
    pub fn protocols(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.protocols
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
    }
}

/// What a host older than app-sdk 0.2.2 answers: it runs no WebSocket.
pub(crate) const NO_WEBSOCKET: &str =
    "this host does not run WebSocket connections (it is older than app-sdk 0.2.2)";

pub(crate) fn to_io(result: Option<IoResult>) -> io::Result<usize> {
    match result {
        None => Err(io::Error::new(io::ErrorKind::Unsupported, NO_WEBSOCKET)),
        Some(r) => r
            .into_result()
            .map_err(|e| io::Error::other(e.into_string())),
    }
}
