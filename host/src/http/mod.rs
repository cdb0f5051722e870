//! HTTP/1.1 (RFC 9112): parsing request heads, decoding bodies, writing responses.
//!
//! Pure functions over byte buffers, with no sockets: the worker's event loop
//! owns the I/O and calls in here for every framing decision.

pub mod body;
pub mod date;
pub mod forwarded;
pub mod io;
pub mod parse;
pub mod proxy_protocol;
pub mod response;
pub mod token;
pub mod upgrade;
