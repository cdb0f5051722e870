//! # app-sdk: write apps for the `host` application server
//!
//! An app is a type implementing [`App`], built as a `cdylib` and exported
//! with [`export_app!`]. The `host` binary loads the library in each of its
//! worker processes and calls [`App::handle`] for each request: one at a time
//! per worker by default, from up to T threads at once with `--threads T`.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use app_sdk::{export_app, App, Request, Response, Worker};
//!
//! /// Counts requests per worker and echoes request bodies.
//! #[derive(Default)]
//! struct Counter {
//!     served: AtomicU64,
//! }
//!
//! impl App for Counter {
//!     fn init(&mut self, worker: &Worker<'_>) -> app_sdk::Result {
//!         eprintln!("counter starting in worker {}", worker.id);
//!         Ok(())
//!     }
//!
//!     fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
//!         let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
//!         if req.method() == "POST" {
//!             // `?`: an unreadable body, or one over 64 KiB, is logged and answered 500.
//!             let body = req.body_bytes(64 * 1024)?;
//!             resp.header("Content-Type", "application/octet-stream").body(body)?;
//!         } else {
//!             resp.header("Content-Type", "text/plain")
//!                 .body(format!("request {n} to {}\n", req.path()))?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! // Serve it with: host target/release/libcounter.so:app
//! export_app!(app = Counter::default());
//! ```
//!
//! In `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! app-sdk = "0.2"
//! ```
//!
//! ## What the host guarantees
//! - `handle` is called for complete, valid requests only: the head was parsed
//!   and checked before the call. The body is streamed on demand.
//! - A panic in `handle` is caught inside the library: the client gets a `500`
//!   (if nothing was sent yet) and the host logs the panic message with where
//!   it happened (or, for `resume_unwind`, its payload). The worker is then
//!   replaced gracefully (it finishes the requests it holds), since a panic
//!   may leave the app's state broken, unless the host runs with
//!   `--panic-policy serve`. A panic outside a
//!   call from the host (a thread the app started) is printed by Rust's own
//!   hook, and the host logs the worker's stderr.
//! - The response follows the host's rules (see [`Response`]): what the host
//!   refuses (a status outside 200-999, `Transfer-Encoding`, a body that does
//!   not match the app's `Content-Length`...) comes back to the handler as an
//!   error, and the host logs it.
//! - Each worker process builds its own app value; `init` runs once per worker
//!   (with `&mut self`, before any thread calls `handle`), `exit` once when it
//!   stops gracefully, after every handler thread has returned.
//!
//! ## What the app guarantees
//! - [`App`] is `Send + Sync`: with `--threads T` a worker calls `handle` on
//!   the same value from T threads at once, so shared state goes behind
//!   atomics or locks (as `served` above). With `--threads 1` (the default)
//!   calls never overlap, but the bound stays, so one build serves both ways.
//! - `handle` returns. A call that runs past `--timeout` is answered `504` by
//!   the host; with one thread the worker then exits at once, with several it
//!   shuts that request's connection, lets the other threads finish, and exits
//!   without calling `exit` (the stuck thread is still inside the app).
//!
//! The types that cross the library boundary live in [`abi`]. Compatibility
//! (the rule [`abi`] explains and CI checks): an app built against any 0.2.x
//! SDK loads in any later 0.2.x host; an app built against a newer 0.2.y runs
//! on an older host unless it needs something that host lacks, and then the
//! host refuses it and names what is missing. `host --version` names the
//! SDK and ABI it serves. Apps built against app-sdk 0.1 must be rebuilt.
//!
//! ## Logging
//! An app logs through the host: its records reach the host's error log as
//! the host's own lines do, with one timestamp, the host's `--log-level`
//! filter, the worker's number (or `probe`), the record's target and the id
//! of the request being handled on that thread:
//!
//! ```text
//! [2026-11-24 20:22:38 +0000] [4242] [ERROR] worker 3: app my_app::db: connection refused (request 5f2c…)
//! ```
//!
//! - [`log()`] writes one record from text; it needs no feature.
//! - Feature `log`: the app's [`log`](https://docs.rs/log) macros
//!   (`log::error!` …) go to the host. At the first `init` in the worker
//!   (after the value given to [`export_app!`] is built, before
//!   [`App::init`] runs) the SDK sets its logger and `log::set_max_level`
//!   to the host's level, unless a logger is set already.
//! - Feature `tracing`: the app's [`tracing`](https://docs.rs/tracing)
//!   events go to the host, the message followed by the fields as
//!   `key=value` (`checked out user=alice n=3`), through a global default
//!   subscriber the SDK sets at the same moment, unless one is set already.
//!   Spans are not forwarded (and cost nothing).
//!
//! ```toml
//! [dependencies]
//! app-sdk = { version = "0.2", features = ["log", "tracing"] }
//! ```
//!
//! A record made on a thread the app started carries no request id. The
//! host escapes control characters (a record is one line) and cuts very
//! long messages. Without the features nothing is installed and nothing is
//! pulled in; what an app prints to stdout or stderr still reaches the
//! error log, as `worker 3 (pid …) stderr: …` lines. To keep your own
//! logger, leave the features off (or set it in the expression given to
//! [`export_app!`]).
//!
//! ## TLS
//! When the host terminates TLS (`--bind tls://…`), [`Request::scheme`] is
//! `https` and [`Request::tls`] gives the session's facts ([`TlsInfo`]: the
//! version, cipher suite, SNI name, ALPN protocol, and the client
//! certificate's subject); `None` on a plain connection, behind a
//! TLS-terminating proxy, and on a host older than app-sdk 0.2.1.
//!
//! ## WebSocket
//! The host runs WebSocket connections in its event loop and hands the app
//! their events ([`App::on_open`], [`App::on_message`], [`App::on_close`])
//! as calls like `handle`; the app accepts a handshake in `handle` with
//! [`Response::accept_websocket`] and sends to any connection of its worker
//! by [`WsId`]. See the [`websocket`] module. For other protocols,
//! [`Response::upgrade`] answers `101` and hands the handler the raw,
//! blocking byte stream for as long as it keeps it (holding its thread).
//!
//! ## Testing an app
//! With the `testing` feature (for dev-dependencies), `app_sdk::testing` calls an
//! app in-process through this same ABI, as the host would, and returns
//! what it answered: `testing::call(App, TestRequest::get("/"))`.
//!
//! ```toml
//! [dev-dependencies]
//! app-sdk = { version = "0.2", features = ["testing"] }
//! ```
//!
//! ## The Rust web ecosystem (optional features)
//! - `http`: `Request::http_parts` gives the request as `http` crate
//!   types and `Response::send_http` sends an `http::Response` with any
//!   `http_body::Body` (see the `http` module).
//! - `tower`: serve any `tower::Service`, such as an axum `Router`, as an
//!   app in one line (see the `tower` module):
//!   `export_app!(app = app_sdk::tower::TowerApp::new(router));`
//!
//! ## Building
//! - Minimum Rust: 1.85 (the crate's `rust-version`, which cargo enforces).
//! - The crate stands alone (no workspace-inherited settings): vendor it, or
//!   depend on it by path or git; `cargo package -p app-sdk` passes in CI.

#![deny(missing_docs)]

pub mod abi;
mod export;
#[cfg(feature = "http")]
pub mod http;
mod logging;
mod request;
mod response;
#[cfg(test)]
mod test_host;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
#[cfg(feature = "tower")]
pub mod tower;
pub mod upgrade;
pub mod websocket;

#[doc(hidden)]
pub use export::__private;
pub use logging::{log, log_enabled, Level};
pub use request::{Body, BodyError, DecodeError, Header, Request, Version, BODY_PREALLOCATE_MAX};
pub use response::{BodyWriter, Response};
pub use tls::{OwnedTlsInfo, TlsInfo};
pub use websocket::{Close, Message, Sender, WebSocket, WebSocketRequest, WsId};

/// The oldest Rust that builds this SDK, and so an app using it: the crate's
/// `rust-version` (cargo enforces it). `host new` writes it into the crates it
/// makes.
pub const MIN_RUST_VERSION: &str = env!("CARGO_PKG_RUST_VERSION");

/// The error an app's `init` or `handle` may return: any error type, so `?`
/// works on I/O, parsing and database errors alike. The host answers a
/// request whose handler failed with `500` (if nothing was sent yet) and logs
/// the error, with its sources, and the request id.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result<T, app_sdk::Error>`: what [`App::handle`] and [`App::init`] return.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// What a worker tells the app about itself when it starts it.
#[derive(Debug, Clone, Copy)]
pub struct Worker<'a> {
    /// The worker's number in the pool: 1-based, and a worker that replaces
    /// another (after a crash, a recycle or a reload) gets a new number, so
    /// numbers grow past `-w`. `0` in the probe.
    pub id: u32,
    /// The worker's process id.
    pub pid: u32,
    /// How many threads call `handle` at once in this worker (`--threads`).
    pub threads: u32,
    /// The pool generation the worker belongs to: each reload starts a new one.
    pub generation: u32,
    /// Whether this is the host's probe: before workers start a new build,
    /// the host starts it once in a child process (`init`, then `exit`,
    /// no requests) to check that it boots. Skip costly warm-up here.
    pub probe: bool,
    /// The name the app was exported under.
    pub app_name: &'a str,
}

/// An application: handles one request at a time.
///
/// `Send + Sync` because a worker run with `--threads T` calls `handle` from
/// T threads at once.
pub trait App: Send + Sync + 'static {
    /// Runs once in each worker before it serves (before its handler threads
    /// start), and once in the probe; an error stops the worker's boot and is
    /// logged by the host.
    fn init(&mut self, worker: &Worker<'_>) -> Result {
        let _ = worker;
        Ok(())
    }

    /// Handles one request. An `Err` is answered `500` (unless the response
    /// has started) and logged with the request id, except a client's
    /// mistake returned as it came: a [`BodyError::TooLarge`] from
    /// [`Request::body_bytes`] is answered `413` and a [`DecodeError`] from
    /// [`Request::path_decoded`] `400`, not logged as the app's error.
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> Result;

    /// Runs once when the worker stops gracefully, after its handler threads
    /// have returned.
    fn exit(&self) {}

    /// A WebSocket connection the app accepted in `handle`
    /// ([`Response::accept_websocket`]) is open: the `101` is sent. Runs
    /// before any message of it. An error (or a panic) closes the
    /// connection with `1011`, and is logged. See [`websocket`].
    fn on_open(&self, ws: &WebSocket<'_>) -> Result {
        let _ = ws;
        Ok(())
    }

    /// A message arrived on a WebSocket connection. An error (or a panic)
    /// closes the connection with `1011`, and is logged.
    fn on_message(&self, ws: &WebSocket<'_>, msg: Message<'_>) -> Result {
        let _ = (ws, msg);
        Ok(())
    }

    /// A WebSocket connection closed, for whatever reason: the last event
    /// of every connection that opened. Sending to it no longer reaches it.
    fn on_close(&self, ws: &WebSocket<'_>, close: Close<'_>) {
        let _ = (ws, close);
    }
}
