//! The `tower` feature: any [`tower_service::Service`] over `http` types,
//! an axum `Router` among them, served as an app.
//!
//! ```
//! fn router() -> axum::Router {
//!     axum::Router::new().route("/", axum::routing::get(|| async { "hello" }))
//! }
//!
//! app_sdk::export_app!(app = app_sdk::tower::TowerApp::new(router));
//! ```
//!
//! Why it is built the way it is:
//!
//! - **State is per worker.** [`TowerApp`] builds the service in
//!   [`App::init`], in each worker process (and in the probe); the handler
//!   threads of one worker share it by cloning it per request, the tower
//!   convention (an axum `Router` clone is a reference-count increment).
//!   Nothing is shared between workers: a counter in the service's state
//!   counts one worker's requests.
//! - **Futures run on the handler thread.** Each handler thread owns a
//!   tokio current-thread runtime (made at its first request, kept for the
//!   thread's life), so handlers can use tokio's timers, I/O and `spawn`
//!   without threads contending for one runtime, and everything a request
//!   touches stays on the thread the host called. A spawned task advances
//!   only while a request on that thread is waiting: an app that needs
//!   background work owns a multi-thread runtime of its own.
//! - **A ready future costs no runtime round trip.** The service's future
//!   is polled once, inside the runtime's context but with a no-op waker;
//!   only if it is pending is it handed to `block_on`. Most handlers are
//!   ready at once (they never await I/O), so most requests never enter the
//!   scheduler.
//! - **The body is pulled from the host when polled.** [`RequestBody`] is
//!   `Send + 'static`, as axum requires, yet reading it calls the host, which
//!   only the handler thread may do during its call. It holds no host
//!   pointer: it carries a token naming its request, and a poll reads from
//!   the host the handler thread registered for that token, so a body polled
//!   on the handler thread (the handler, an extractor, a task spawned on the
//!   thread's runtime) streams on demand, in pieces of at most
//!   [`BODY_CHUNK`] bytes, never buffered whole; a body polled anywhere else,
//!   or after its request ended, yields an error instead.
//! - **TLS facts ride in the extensions.** A request that arrived over TLS
//!   the host terminated carries an [`OwnedTlsInfo`](crate::OwnedTlsInfo)
//!   in its extensions ([`Request::http_parts`](crate::Request::http_parts)
//!   puts it there): an axum handler takes it as
//!   `Option<Extension<OwnedTlsInfo>>` (`None` on a plain connection).

use std::{
    cell::{Cell, OnceCell},
    future::Future,
    io,
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::runtime::{Builder, Runtime};
use tower_service::Service;

use crate::{
    abi::HostIo,
    http::{poll_now, Drive},
    App, Error, Request, Response, Worker,
};

/// The most bytes one poll of a [`RequestBody`] reads from the host.
pub const BODY_CHUNK: usize = 16 * 1024;

/// Builds the service in each worker.
type Make<S> = Box<dyn FnOnce(&Worker<'_>) -> S + Send>;

/// An app that serves a [`Service`] of `http::Request<RequestBody>`:
/// export it with [`export_app!`](crate::export_app).
///
/// The service must be `Clone` (each request calls a clone, as tower
/// services expect) and `Send + Sync` (a worker's handler threads share it).
/// Its response body may be any [`http_body::Body`]; it is sent as
/// [`Response::send_http`] describes.
pub struct TowerApp<S> {
    make: Mutex<Option<Make<S>>>,
    service: Option<S>,
}

impl<S> TowerApp<S> {
    /// An app whose service `make` builds once in each worker (in `init`).
    pub fn new(make: impl FnOnce() -> S + Send + 'static) -> Self {
        Self::with_worker(move |_| make())
    }

    /// Like [`new`](Self::new), with the worker's details for `make`
    /// (its id, its thread count, whether it is the probe).
    pub fn with_worker(make: impl FnOnce(&Worker<'_>) -> S + Send + 'static) -> Self {
        TowerApp {
            make: Mutex::new(Some(Box::new(make))),
            service: None,
        }
    }
}

/// An app serving `service`, already built: `export_app!` evaluates its
/// expression in each worker, so this is per worker too.
pub fn serve<S: Send + 'static>(service: S) -> TowerApp<S> {
    TowerApp::new(move || service)
}

impl<S, B> App for TowerApp<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<Error>,
    B: HttpBody,
    B::Error: Into<Error>,
{
    fn init(&mut self, worker: &Worker<'_>) -> crate::Result {
        let make = self
            .make
            .get_mut()
            .map_err(|_| "the service maker panicked in an earlier init")?
            .take()
            .ok_or("init ran twice")?;
        self.service = Some(make(worker));
        Ok(())
    }

    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> crate::Result {
        let mut service = self
            .service
            .as_ref()
            .ok_or("the service was not built (init did not run)")?
            .clone();
        let parts = req.http_parts()?;
        let token = TOKENS.fetch_add(1, Ordering::Relaxed);
        let request = http::Request::from_parts(parts, RequestBody::new(token, req));
        let io = req.io();
        RUNTIME.with(|cell| {
            let mut driver = OnRuntime(runtime(cell)?);
            with_body_source(&io, token, || {
                let response = driver.drive(pin!(async move {
                    std::future::poll_fn(|cx| service.poll_ready(cx))
                        .await
                        .map_err(Into::into)?;
                    service.call(request).await.map_err(Into::<Error>::into)
                }))?;
                resp.write_http(response, &mut driver)
            })
        })
    }
}

thread_local! {
    /// This handler thread's runtime, made at its first request.
    static RUNTIME: OnceCell<Runtime> = const { OnceCell::new() };
    /// The request whose body this thread may read now, while its call runs.
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
}

/// Numbers requests across all threads, so a body names exactly one.
static TOKENS: AtomicU64 = AtomicU64::new(1);

/// The thread's runtime, made on first use.
fn runtime(cell: &OnceCell<Runtime>) -> io::Result<&Runtime> {
    if cell.get().is_none() {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        // Only this thread touches the cell, and it was empty.
        let _ = cell.set(runtime);
    }
    cell.get()
        .ok_or_else(|| io::Error::other("the handler thread's runtime is missing"))
}

/// Drives futures on the thread's runtime: a first poll with a no-op
/// waker inside the runtime's context (so tokio's timers and `spawn` work),
/// and `block_on` only if that poll was pending.
struct OnRuntime<'r>(&'r Runtime);

impl Drive for OnRuntime<'_> {
    fn drive<F: Future>(&mut self, mut fut: Pin<&mut F>) -> F::Output {
        {
            let _context = self.0.enter();
            if let Poll::Ready(out) = poll_now(fut.as_mut()) {
                return out;
            }
        }
        self.0.block_on(fut)
    }
}

/// The request [`RequestBody`]s may read on this thread now.
#[derive(Clone, Copy)]
struct Current {
    token: u64,
    /// Valid while the `with_body_source` call that set it runs.
    io: *const HostIo<'static>,
}

/// Runs `f` with `io` registered as the body source for `token` on this
/// thread; the registration is undone when `f` returns or unwinds.
fn with_body_source<R>(io: &HostIo<'_>, token: u64, f: impl FnOnce() -> R) -> R {
    /// Restores the previous registration on drop.
    struct Restore(Option<Current>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let current = Current {
        token,
        // The lifetime is erased here and honoured by `Restore`: the
        // pointer is only dereferenced while this frame, which borrows
        // `io`, is live.
        io: (io as *const HostIo<'_>).cast(),
    };
    let _restore = Restore(CURRENT.with(|c| c.replace(Some(current))));
    f()
}

/// How much of the body is left to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// This many bytes (`Content-Length`).
    Known(u64),
    /// Unknown until the end (chunked).
    Unknown,
    /// Nothing: the end was reached, or reading failed.
    Done,
}

/// The request body a [`TowerApp`]'s service receives: an
/// [`http_body::Body`] of [`Bytes`] that reads from the host when polled on
/// the handler thread during its request (see the [module docs](self)).
///
/// Its size hint is exact for a `Content-Length` body, so axum's `Bytes`
/// and `Json` extractors allocate once.
#[derive(Debug)]
pub struct RequestBody {
    token: u64,
    left: Left,
}

impl RequestBody {
    fn new(token: u64, req: &Request<'_>) -> RequestBody {
        let left = match req.content_length() {
            Some(0) => Left::Done,
            Some(n) => Left::Known(n),
            None => Left::Unknown,
        };
        RequestBody { token, left }
    }

    /// Reads the next piece from the host, if this thread may.
    fn read(&mut self) -> Option<io::Result<Bytes>> {
        let want = match self.left {
            Left::Done => return None,
            Left::Known(n) => n.min(BODY_CHUNK as u64) as usize,
            Left::Unknown => BODY_CHUNK,
        };
        let current = CURRENT.with(Cell::get).filter(|c| c.token == self.token);
        let Some(current) = current else {
            self.left = Left::Done;
            return Some(Err(io::Error::other(
                "the request body was read off its handler thread or after its request ended",
            )));
        };
        // SAFETY: `current` is this thread's registration for this body's
        // request, so the `with_body_source` frame that made it is live on
        // this thread and `io` points at its `HostIo`, valid for that call.
        let io = unsafe { &*current.io };
        let mut buf = BytesMut::zeroed(want);
        match io.read_body(&mut buf).into_result() {
            Ok(0) => {
                let cut = matches!(self.left, Left::Known(_));
                self.left = Left::Done;
                cut.then(|| Err(io::Error::from(io::ErrorKind::UnexpectedEof)))
            }
            Ok(n) => {
                buf.truncate(n);
                self.left = match self.left {
                    Left::Known(left) if left <= n as u64 => Left::Done,
                    Left::Known(left) => Left::Known(left - n as u64),
                    other => other,
                };
                Some(Ok(buf.freeze()))
            }
            Err(e) => {
                self.left = Left::Done;
                Some(Err(io::Error::other(e.into_string())))
            }
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        // Reading from the host blocks this thread until bytes come (or the
        // request's deadline passes), as every handler's body read does.
        Poll::Ready(self.get_mut().read().map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.left == Left::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Left::Known(n) => SizeHint::with_exact(n),
            Left::Unknown => SizeHint::default(),
            Left::Done => SizeHint::with_exact(0),
        }
    }
}
