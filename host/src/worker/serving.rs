//! What per-request code sees of its worker: a small view, never the
//! fork-time arguments.
//!
//! [`crate::worker::WorkerArgs`] carries everything a worker is born with
//! (its title, identity, pipes, log paths, the master's pid…). The code that
//! handles one request ([`crate::worker::call`], [`crate::worker::threads`])
//! needs far less: which worker it is, how to serve, where its scoreboard
//! slot and lanes are, the listeners' local addresses and the access log.
//! It gets that, and only that, through a shared [`Serving`].

use std::sync::Arc;

use crate::{
    config::ServeOptions,
    report::access_log::AccessLogTarget,
    scoreboard::{Lane, Slot},
    tls::settings::TlsServer,
};

/// The worker as a request sees it (shared by the worker's loops, one per thread).
pub struct Serving {
    /// The worker's number (1-based).
    pub id: u32,
    /// How to serve connections.
    pub options: ServeOptions,
    /// The worker's scoreboard slot.
    pub slot: &'static Slot,
    /// Its lanes: one per handler thread (one for a single-threaded worker).
    pub lanes: &'static [Lane],
    /// Each listener's address as requests report it (`ip:port` or `unix:/path`), by index.
    pub locals: Vec<String>,
    /// Where access-log lines go, if anywhere (until a reopen after USR1).
    pub access_log: Option<AccessLogTarget>,
    /// What TLS listeners serve with (the master's, when the worker was forked).
    pub tls: Option<Arc<TlsServer>>,
}

impl Serving {
    /// The local address of listener `index` as requests report it.
    pub fn local(&self, index: usize) -> &str {
        self.locals.get(index).map_or("", String::as_str)
    }
}
