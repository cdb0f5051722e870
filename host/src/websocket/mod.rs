//! WebSocket connections run by the host (RFC 6455).
//!
//! A handshake is checked before the app sees it ([`handshake`]); the app
//! accepts it in its ordinary `handle` call, and the exchange answers
//! `101`. The connection then stays in the event loop that accepted it,
//! which frames its messages ([`session`]) and calls the app for each event
//! (open, message, close), one call at a time per loop like any request, so
//! no thread waits on an idle connection. What the app sends during a call
//! is queued ([`outbox`]) and delivered when the call returns. Ids name a
//! connection across the loops of a worker ([`ids`]).

pub mod handshake;
pub mod ids;
pub mod outbox;
pub mod port;
pub mod session;
pub mod settings;
