//! TLS termination: rustls sessions driven by the worker's event loop.
//!
//! - [`settings`]: the TLS flags, and the rustls configuration built from
//!   them (certificates chosen by SNI, client certificates, versions, ALPN).
//! - [`certs`]: reading and checking certificate and key files (in the
//!   master, before workers drop privileges).
//! - [`session`]: one connection's session, read and written without
//!   waiting, so a handshake runs in the loop like any other I/O.
//! - [`facts`]: what the app learns of a request's TLS session.

pub mod certs;
pub mod facts;
pub mod session;
pub mod settings;
