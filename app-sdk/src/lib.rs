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
//!             // `?`: an unreadable body is logged and answered 500.
//!             let body = req.body_bytes()?;
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
//!   it happened (or, for `resume_unwind`, its payload). A panic outside a
//!   call from the host (a thread the app started) is printed by Rust's own
//!   hook, and the host logs the worker's stderr.
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
mod request;
mod response;
#[cfg(feature = "tower")]
pub mod tower;

#[doc(hidden)]
pub use export::__private;
pub use request::{Body, Header, Request, Version};
pub use response::{BodyWriter, Response};

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
    /// has started) and logged with the request id.
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> Result;

    /// Runs once when the worker stops gracefully, after its handler threads
    /// have returned.
    fn exit(&self) {}
}
