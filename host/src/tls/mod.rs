//! TLS termination: rustls sessions driven by the worker's event loop.

pub mod facts;

pub mod tickets;
