//! Test an app in-process, through the same ABI the host uses (feature `testing`).
//!
//! What Flask's test client or axum's `oneshot` give: build a request, call
//! the app, read what it answered, without starting a server.
//!
//! ```
//! use app_sdk::{testing::{self, TestRequest}, App, Request, Response};
//!
//! struct Hello;
//! impl App for Hello {
//!     fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
//!         resp.header("Content-Type", "text/plain")
//!             .body(format!("hello {}", req.path()))?;
//!         Ok(())
//!     }
//! }
//!
//! let resp = testing::call(Hello, TestRequest::get("/world"));
//! assert_eq!(resp.status, 200);
//! assert_eq!(resp.header("content-type"), Some("text/plain"));
//! assert_eq!(resp.text(), "hello /world");
//! assert!(resp.outcome.is_done());
//! ```
//!
//! # Why through the ABI
//! The app is not called as a Rust value: [`TestClient`] makes the same
//! [`AppRoot`] that [`export_app!`](crate::export_app) exports, and drives
//! it as a worker does (`init` with the worker's facts, `handle` per
//! request, `exit` when dropped), handing it a [`HostFns`] table whose
//! functions record into a Rust value behind the [`HostCtx`]. So a test
//! runs the SDK's real glue: the panic catching, the error text with its
//! sources, the request and response wrappers. [`TestClient::load`] does
//! the same with a built library (`libfoo.so:app`), the very file the host
//! would serve.
//!
//! # The host's rules, mirrored
//! Where an app can observe them, the recording host answers as the real
//! one does (`host/src/worker/exchange.rs`), refusing with the same words:
//! - `set_status` outside `200..=999` (no `1xx`), or once the body has
//!   started, is refused (an error);
//! - a header with an invalid name (not a token) or a control character in
//!   its value is refused, as is any header once the body has started;
//!   values are trimmed;
//! - `Transfer-Encoding` is refused (the host frames the body);
//!   `Connection` may list `close` (recorded in [`TestResponse::closes`])
//!   and `keep-alive` (a no-op), anything else is refused; neither is
//!   listed in [`TestResponse::headers`]; `Date` and `Server` are listed
//!   there, as the app's (they replace the host's);
//! - the app's `Content-Length` is honoured and recorded in
//!   [`TestResponse::content_length`] (not listed in the headers): on
//!   HEAD it is kept with no body, on a `304` it is kept, on a `204` the
//!   body call is refused; a second one, or one that is not a number, is
//!   refused;
//! - a whole body or a file must match the app's `Content-Length` (on
//!   HEAD or a `304` it may also be empty), else it is refused and nothing
//!   is sent (a handler that then returns without a body is answered
//!   `500`, and the refusal listed, unless an empty body fits: HEAD, `304`);
//! - a stream with the app's `Content-Length`
//!   ([`stream_with_length`](crate::Response::stream_with_length)) is not
//!   chunked: a write past the length is refused (nothing of it kept), and
//!   a stream ending short of it is refused and
//!   [`cut_short`](TestResponse::cut_short) (the host closes the
//!   connection);
//! - after the body is sent (whole, a file, or a finished stream) every
//!   further body call is refused;
//! - a HEAD request, and a `204` or `304` response, get no body (the
//!   would-be length is still in [`TestResponse::content_length`], but for
//!   a `204`, and a `304` without the app's);
//! - a handler that fails (an `Err` or a panic) before sending anything is
//!   answered `500` with the host's text body (the app's headers and
//!   `Content-Length` dropped); after, the response is
//!   [`cut_short`](TestResponse::cut_short).
//!
//! Every refusal, each one the host would log as a warning, is also listed,
//! in order, in [`TestResponse::refused`]:
//! [`Response::header`](crate::Response::header) keeps it for the next
//! body call, a test need not.
//!
//! What the recording host does not do: the socket (a file body is read
//! into memory; a streamed body's parts are collected in
//! [`TestResponse::parts`]), `--timeout`, `Expect: 100-continue`, and
//! HTTP/1.0's close-delimited streams, none of which an app sees.
//!
//! # WebSocket
//! [`TestClient::websocket`] sends a handshake (the headers a browser adds
//! are added) and, if the app accepts it, opens the connection
//! (`on_open`); the [`TestSocket`] it returns plays the client: `send`
//! calls `on_message`, `close` calls `on_close`, `received` takes what the
//! app sent that connection. [`TestClient::websocket_sent`] lists every
//! send, to which ids, including those from `handle` (a `POST` that
//! broadcasts). The host's rules are kept: sends are checked as the host
//! checks them (text is UTF-8, a close code the app may send, a reason of
//! at most 123 bytes), a send to a closed connection is dropped, an event
//! that fails closes its connection with `1011`, a connection the app
//! closes is closed at once (the client's answer is taken for granted),
//! and each connection that opened gets one `on_close`, after the call
//! that closed it returned. Not mirrored: framing, pings, the size limits
//! (`--websocket-max-message`) and draining.
//!
//! ```
//! use std::sync::Mutex;
//! use app_sdk::{testing::{Frame, TestClient, TestRequest}, App, Message, Request, Response, WebSocket, WsId};
//!
//! /// Relays each message to everyone; `bye` closes the sender.
//! #[derive(Default)]
//! struct Relay {
//!     clients: Mutex<Vec<WsId>>,
//! }
//!
//! impl App for Relay {
//!     fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
//!         match req.websocket() {
//!             Some(_) => drop(resp.accept_websocket(None)?),
//!             None => resp.status(426).body("WebSocket only\n")?,
//!         }
//!         Ok(())
//!     }
//!     fn on_open(&self, ws: &WebSocket<'_>) -> app_sdk::Result {
//!         self.clients.lock().unwrap().push(ws.id());
//!         Ok(())
//!     }
//!     fn on_message(&self, ws: &WebSocket<'_>, msg: Message<'_>) -> app_sdk::Result {
//!         if msg == Message::Text("bye") {
//!             return Ok(ws.close_with(1000, "see you")?);
//!         }
//!         ws.broadcast(&self.clients.lock().unwrap(), msg)?;
//!         Ok(())
//!     }
//!     fn on_close(&self, ws: &WebSocket<'_>, _close: app_sdk::Close<'_>) {
//!         self.clients.lock().unwrap().retain(|id| *id != ws.id());
//!     }
//! }
//!
//! let client = TestClient::new(Relay::default()).unwrap();
//! let (ann, bob) = (
//!     client.websocket(TestRequest::get("/ws")),
//!     client.websocket(TestRequest::get("/ws")),
//! );
//! assert_eq!(ann.response.status, 101);
//! assert!(ann.send_text("hi").is_done());
//! assert_eq!(bob.received_texts(), ["hi"]);
//! assert_eq!(ann.received_texts(), ["hi"]);
//!
//! bob.send_text("bye");
//! assert_eq!(bob.received(), [Frame::Close { code: 1000, reason: "see you".into() }]);
//! assert_eq!(bob.closed(), Some((1000, "see you".into())));
//! ann.send_text("alone");
//! assert!(bob.received().is_empty(), "bob left the room");
//!
//! // Not a handshake: an ordinary call.
//! assert_eq!(client.call(TestRequest::get("/ws")).status, 426);
//! ```
//!
//! # Raw upgrades
//! [`Response::upgrade`](crate::Response::upgrade) is recorded: the
//! request must offer the protocol (`Connection: upgrade`, `Upgrade:
//! NAME`), the client's bytes are the request's
//! [`raw_input`](TestRequest::raw_input), the status is `101`, the
//! protocol is in [`TestResponse::upgraded`] and what the app wrote is the
//! body (each write a part).

use std::{
    any::Any,
    cell::RefCell,
    ffi::c_void,
    fmt,
    fs::File,
    os::{fd::BorrowedFd, unix::fs::FileExt},
    path::Path,
    sync::{Mutex, OnceLock},
};

use abi_stable::std_types::{RResult, RSlice, RSliceMut, RStr, RString};

use crate::{
    abi::{
        read_table, size_u32, AppHandle, AppRoot, CallOutcome, HeaderSpan, HostCtx, HostFns,
        IoResult, LogRecord, RawRequest, RawTls, RawWsEvent, Span, WorkerInfo, ABI_LINE,
        ABI_REVISION, LOG_RECORD_MIN, OUTCOME_DONE, OUTCOME_PANICKED, PROVIDES, SDK_VERSION,
        WORKER_PROBE, WS_OPEN,
    },
    export::{init_app, root},
    App, OwnedTlsInfo, WsId,
};

mod websocket;

use websocket::Sockets;
pub use websocket::{Frame, Sent, TestSocket};

/// The status the host answers a failed handler with, when nothing was sent.
pub const FAILED_STATUS: u16 = 500;
/// The body the host sends with [`FAILED_STATUS`].
pub const FAILED_BODY: &str = "Internal Server Error\n";
/// Bytes read from a file body at a time.
const FILE_READ_CHUNK: usize = 64 * 1024;
/// The export name used when a library spec has no `:NAME` (as the host's).
pub const DEFAULT_APP_NAME: &str = "app";

// ---------------------------------------------------------------------------
// The worker's facts

/// What the worker tells the app at `init` ([`Worker`](crate::Worker)'s
/// fields); [`Default`] is worker 1 of generation 1, this process's pid,
/// one thread, not the probe, exported as `app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerFacts {
    /// The worker's number (`0` in the probe).
    pub id: u32,
    /// The worker's process id.
    pub pid: u32,
    /// How many threads call `handle` at once.
    pub threads: u32,
    /// The pool generation.
    pub generation: u32,
    /// Whether this is the host's probe (init, exit, no requests).
    pub probe: bool,
    /// The name the app was exported under.
    pub app_name: String,
}

impl Default for WorkerFacts {
    fn default() -> Self {
        WorkerFacts {
            id: 1,
            pid: std::process::id(),
            threads: 1,
            generation: 1,
            probe: false,
            app_name: DEFAULT_APP_NAME.to_owned(),
        }
    }
}

// ---------------------------------------------------------------------------
// The request

/// A request to call an app with: method, target, headers, body, and the
/// connection's facts. Built with chained calls:
///
/// ```
/// use app_sdk::testing::TestRequest;
///
/// let req = TestRequest::post("/todos?x=1")
///     .header("Content-Type", "application/json")
///     .body(r#"{"title":"milk"}"#)
///     .remote_addr("10.0.0.7:4242")
///     .request_id("abc");
/// # let _ = req;
/// ```
///
/// The head the app sees is what a client would have sent: a `Host:
/// localhost` header unless one is given (HTTP/1.1 requires it), and the
/// framing header for the body (`Content-Length`, or `Transfer-Encoding:
/// chunked` after [`chunked`](Self::chunked)) unless one is given.
///
/// The host only calls an app with a valid head, so [`TestClient::call`]
/// panics on a method, target, header name or value the host's parser
/// would refuse, or on a `Content-Length` header that is not the body's.
#[derive(Debug, Clone)]
pub struct TestRequest {
    method: String,
    target: String,
    http10: bool,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    chunked: bool,
    body_error: Option<String>,
    remote_addr: String,
    local_addr: String,
    scheme: String,
    request_id: String,
    tls: Option<OwnedTlsInfo>,
    raw_input: Vec<u8>,
}

impl TestRequest {
    /// A request with `method` for `target` (e.g. `/path?query`), no body.
    pub fn new(method: impl Into<String>, target: impl Into<String>) -> TestRequest {
        TestRequest {
            method: method.into(),
            target: target.into(),
            http10: false,
            headers: Vec::new(),
            body: Vec::new(),
            chunked: false,
            body_error: None,
            remote_addr: "127.0.0.1:40000".to_owned(),
            local_addr: "127.0.0.1:8000".to_owned(),
            scheme: "http".to_owned(),
            request_id: String::new(),
            tls: None,
            raw_input: Vec::new(),
        }
    }

    /// A `GET` of `target`.
    pub fn get(target: impl Into<String>) -> TestRequest {
        TestRequest::new("GET", target)
    }

    /// A `HEAD` of `target`.
    pub fn head(target: impl Into<String>) -> TestRequest {
        TestRequest::new("HEAD", target)
    }

    /// A `POST` to `target`.
    pub fn post(target: impl Into<String>) -> TestRequest {
        TestRequest::new("POST", target)
    }

    /// A `PUT` to `target`.
    pub fn put(target: impl Into<String>) -> TestRequest {
        TestRequest::new("PUT", target)
    }

    /// A `PATCH` of `target`.
    pub fn patch(target: impl Into<String>) -> TestRequest {
        TestRequest::new("PATCH", target)
    }

    /// A `DELETE` of `target`.
    pub fn delete(target: impl Into<String>) -> TestRequest {
        TestRequest::new("DELETE", target)
    }

    /// Adds a header (after those added before: order and case are kept).
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> TestRequest {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body (sent with `Content-Length` unless [`chunked`](Self::chunked)).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> TestRequest {
        self.body = body.into();
        self
    }

    /// Sends the body chunked: the app's `content_length()` is `None`.
    pub fn chunked(mut self) -> TestRequest {
        self.chunked = true;
        self
    }

    /// Makes reading the body fail with `message` once its bytes are read,
    /// as when the client goes away mid-body or sends a malformed chunk.
    pub fn body_error(mut self, message: impl Into<String>) -> TestRequest {
        self.body_error = Some(message.into());
        self
    }

    /// Makes it an HTTP/1.0 request (no `Host` header is added).
    pub fn http10(mut self) -> TestRequest {
        self.http10 = true;
        self
    }

    /// The client's address (default `127.0.0.1:40000`; empty for a Unix socket).
    pub fn remote_addr(mut self, addr: impl Into<String>) -> TestRequest {
        self.remote_addr = addr.into();
        self
    }

    /// The address the request arrived on (default `127.0.0.1:8000`).
    pub fn local_addr(mut self, addr: impl Into<String>) -> TestRequest {
        self.local_addr = addr.into();
        self
    }

    /// `http` (the default) or `https`.
    pub fn scheme(mut self, scheme: impl Into<String>) -> TestRequest {
        self.scheme = scheme.into();
        self
    }

    /// Makes it arrive over TLS the host terminated, with these facts
    /// ([`Request::tls`](crate::Request::tls) gives them back), and sets the
    /// scheme to `https`, as the host does (a later
    /// [`scheme`](Self::scheme) call sets it otherwise, as a trusted proxy
    /// may).
    ///
    /// ```
    /// use app_sdk::{testing::{self, TestRequest}, App, OwnedTlsInfo, Request, Response};
    ///
    /// struct Who;
    /// impl App for Who {
    ///     fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
    ///         let who = req.tls().and_then(|t| t.client_subject()).unwrap_or("anonymous");
    ///         resp.body(format!("{} {who}", req.scheme()))?;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let tls = OwnedTlsInfo::new("TLSv1.3", "TLS13_AES_128_GCM_SHA256")
    ///     .with_client_subject("CN=alice");
    /// let resp = testing::call(Who, TestRequest::get("/").tls(tls));
    /// assert_eq!(resp.text(), "https CN=alice");
    /// assert_eq!(testing::call(Who, TestRequest::get("/")).text(), "http anonymous");
    /// ```
    pub fn tls(mut self, facts: OwnedTlsInfo) -> TestRequest {
        self.tls = Some(facts);
        self.scheme = "https".to_owned();
        self
    }

    /// What the client sends once the app switched protocols
    /// ([`Response::upgrade`](crate::Response::upgrade)); then it closes its
    /// side (reads end with `0`). The request must offer the protocol
    /// (`Connection: upgrade` and `Upgrade: NAME` headers); what the app
    /// writes is in [`TestResponse::body`] and [`TestResponse::parts`].
    pub fn raw_input(mut self, bytes: impl Into<Vec<u8>>) -> TestRequest {
        self.raw_input = bytes.into();
        self
    }

    /// Whether a comma-separated header `name` lists `token` (any case).
    fn lists(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }

    /// The request id (default empty, as with request ids off).
    pub fn request_id(mut self, id: impl Into<String>) -> TestRequest {
        self.request_id = id.into();
        self
    }

    /// Sets the body to `value` as JSON, with `Content-Type: application/json`.
    ///
    /// # Panics
    /// If `value` cannot be written as JSON (a map with non-text keys).
    #[cfg(feature = "testing-json")]
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> TestRequest {
        let body = serde_json::to_vec(value)
            .unwrap_or_else(|e| panic!("the test request's JSON body: {e}"));
        self.header("Content-Type", "application/json").body(body)
    }
}

/// Whether `b` may appear in a token (a method or a header name; RFC 9110).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `s` is a token: one or more `tchar`s.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Whether a header value holds a byte the host refuses (controls but tab).
fn has_control(value: &[u8]) -> bool {
    value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// A request head as the host holds it: the bytes and where each part lies.
struct Head {
    bytes: Vec<u8>,
    method: Span,
    target: Span,
    path: Span,
    query: Span,
    headers: Vec<HeaderSpan>,
    content_length: i64,
}

/// The span of `len` bytes that were just appended to `bytes`.
fn last_span(bytes: &[u8], len: usize) -> Span {
    Span {
        start: (bytes.len() - len) as u32,
        len: len as u32,
    }
}

impl Head {
    /// Writes `req`'s head as a client would send it.
    ///
    /// # Panics
    /// On a part the host's parser would refuse (see [`TestRequest`]).
    fn of(req: &TestRequest) -> Head {
        assert!(
            is_token(req.method.as_bytes()),
            "test request: {:?} is not a valid method",
            req.method
        );
        assert!(
            !req.target.is_empty() && req.target.bytes().all(|b| b > b' ' && b != 0x7f),
            "test request: {:?} is not a valid request-target",
            req.target
        );
        let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(req.headers.len() + 2);
        let named = |name: &str| {
            req.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        if !req.http10 && named("host").is_none() {
            headers.push(("Host", b"localhost"));
        }
        headers.extend(req.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
        let length_text = req.body.len().to_string();
        let content_length = if req.chunked {
            assert!(
                named("content-length").is_none(),
                "test request: a chunked body has no Content-Length"
            );
            if named("transfer-encoding").is_none() {
                headers.push(("Transfer-Encoding", b"chunked"));
            }
            -1
        } else {
            match named("content-length") {
                Some((_, given)) => assert!(
                    given.trim_ascii() == length_text.as_bytes(),
                    "test request: Content-Length {:?} is not the body's length, {}",
                    String::from_utf8_lossy(given),
                    req.body.len()
                ),
                None if !req.body.is_empty() => {
                    headers.push(("Content-Length", length_text.as_bytes()))
                }
                None => {}
            }
            req.body.len() as i64
        };

        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(req.method.as_bytes());
        let method = last_span(&bytes, req.method.len());
        bytes.push(b' ');
        bytes.extend_from_slice(req.target.as_bytes());
        let target = last_span(&bytes, req.target.len());
        let (path_len, query_len) = match req.target.split_once('?') {
            Some((path, query)) => (path.len(), query.len()),
            None => (req.target.len(), 0),
        };
        let path = Span {
            start: target.start,
            len: path_len as u32,
        };
        let query = if query_len > 0 || req.target.contains('?') {
            Span {
                start: target.start + path_len as u32 + 1,
                len: query_len as u32,
            }
        } else {
            Span::default()
        };
        bytes.extend_from_slice(if req.http10 {
            b" HTTP/1.0\r\n"
        } else {
            b" HTTP/1.1\r\n"
        });
        let mut spans = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            assert!(
                is_token(name.as_bytes()),
                "test request: {name:?} is not a valid header name"
            );
            assert!(
                !has_control(value),
                "test request: the value of {name} holds a control character"
            );
            bytes.extend_from_slice(name.as_bytes());
            let name = last_span(&bytes, name.len());
            bytes.extend_from_slice(b": ");
            let value = value.trim_ascii();
            bytes.extend_from_slice(value);
            let value = last_span(&bytes, value.len());
            bytes.extend_from_slice(b"\r\n");
            spans.push(HeaderSpan { name, value });
        }
        bytes.extend_from_slice(b"\r\n");
        Head {
            bytes,
            method,
            target,
            path,
            query,
            headers: spans,
            content_length,
        }
    }
}

// ---------------------------------------------------------------------------
// The response

/// How a call into the app ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It returned `Ok`.
    Done,
    /// It returned an error: its text, with its sources (`outer: cause`).
    Failed(String),
    /// It panicked: the message, with where (`boom (at src/lib.rs:7)`).
    Panicked(String),
}

impl Outcome {
    /// Whether the call returned `Ok`.
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done)
    }

    /// The error or panic message; `None` when done.
    pub fn message(&self) -> Option<&str> {
        match self {
            Outcome::Done => None,
            Outcome::Failed(m) | Outcome::Panicked(m) => Some(m),
        }
    }
}

impl From<CallOutcome> for Outcome {
    fn from(outcome: CallOutcome) -> Outcome {
        match outcome.kind {
            OUTCOME_DONE => Outcome::Done,
            OUTCOME_PANICKED => Outcome::Panicked(outcome.message.into_string()),
            // The host reads any kind it does not know as a failure.
            _ => Outcome::Failed(outcome.message.into_string()),
        }
    }
}

/// Which kind of body the response had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// The app sent none (the host sends an empty body).
    None,
    /// One whole body (`Response::body`), or the host's `500` body.
    Whole,
    /// A stream of parts (`Response::stream`).
    Stream,
    /// A file (`Response::file`), read into [`TestResponse::body`].
    File,
}

/// What the app answered, as the host would have sent it.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// The status code.
    pub status: u16,
    /// The headers the app set that the host sends, in order, names as the
    /// app spelled them, values trimmed; with the app's own `Date` and
    /// `Server`, which replace the host's. Not listed: the host's own
    /// (`Date` and `Server` unless the app set them), and the headers the
    /// host writes itself: the framing (the app's `Content-Length` is in
    /// [`content_length`](Self::content_length)) and `Connection` (the
    /// app's `close` is [`closes`](Self::closes)).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body: the bytes sent, all parts of a stream, or the file's.
    /// Empty for HEAD and for `204`/`304`.
    pub body: Vec<u8>,
    /// Each part of a streamed body, in order (empty parts are not sent).
    pub parts: Vec<Vec<u8>>,
    /// Which kind of body it was.
    pub kind: BodyKind,
    /// The `Content-Length` the host sends: the app's own if it set one
    /// (also for HEAD, for a stream, and for a `304`), else the whole
    /// body's or the file's length (also for HEAD); `None` for a stream of
    /// unknown length (chunked), and for a `204`, or a `304` without the
    /// app's.
    pub content_length: Option<u64>,
    /// How the call ended.
    pub outcome: Outcome,
    /// The app failed after the response had started, a file was shorter
    /// than announced, or a stream ended short of the app's
    /// `Content-Length`: the client gets a truncated response and the host
    /// closes the connection.
    pub cut_short: bool,
    /// The app set `Connection: close`: the host sends `Connection: close`
    /// and closes the connection after this response (`keep-alive`
    /// changes nothing). Kept on the host's `500` after a failure.
    pub closes: bool,
    /// Every response call the host refused, with its reason, in order.
    pub refused: Vec<String>,
    /// The id of the WebSocket connection the app accepted (the status is
    /// then `101`); see [`TestClient::websocket`].
    pub websocket: Option<WsId>,
    /// The protocol the app switched to with
    /// [`Response::upgrade`](crate::Response::upgrade) (the status is then
    /// `101`, and the body is what it wrote to the raw stream).
    pub upgraded: Option<String>,
}

impl TestResponse {
    fn new() -> TestResponse {
        TestResponse {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
            parts: Vec::new(),
            kind: BodyKind::None,
            content_length: None,
            outcome: Outcome::Done,
            cut_short: false,
            closes: false,
            refused: Vec::new(),
            websocket: None,
            upgraded: None,
        }
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of the first header named `name` (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The values of every header named `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// The body read as JSON into `T` (`serde_json::Value` for any).
    #[cfg(feature = "testing-json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.body)
    }
}

// ---------------------------------------------------------------------------
// Starting an app

/// Why a [`TestClient`] could not start the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// The library could not be loaded, or the symbol is not an app this SDK serves.
    Load(String),
    /// The app's `init` returned an error (its text).
    Failed(String),
    /// The app's `init` panicked (the message).
    Panicked(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Load(why) => write!(f, "cannot load the app: {why}"),
            StartError::Failed(why) => write!(f, "the app's init failed: {why}"),
            StartError::Panicked(why) => write!(f, "the app's init panicked: {why}"),
        }
    }
}

impl std::error::Error for StartError {}

thread_local! {
    /// The app value [`TestClient::with_worker`] hands to the `init` it
    /// calls right after, on this thread (an `extern "C"` function cannot
    /// capture it).
    static PENDING: RefCell<Option<Box<dyn Any + Send>>> = const { RefCell::new(None) };
}

/// `init` of the root [`TestClient::with_worker`] makes for an `A`.
///
/// # Safety
/// [`AppRoot::init`]'s contract.
unsafe extern "C" fn init_pending<A: App>(
    host: *const HostFns,
    worker: *const WorkerInfo<'_>,
    out: *mut AppHandle,
) -> CallOutcome {
    // SAFETY: this function's contract is `init_app`'s.
    unsafe { init_app(host, worker, out, take_pending::<A>) }
}

/// The app waiting in [`PENDING`]; runs inside the SDK's `init`, which
/// catches the panic if (by a bug here) there is none.
fn take_pending<A: App>() -> A {
    match PENDING
        .with(|p| p.borrow_mut().take())
        .map(|b| b.downcast::<A>())
    {
        Some(Ok(app)) => *app,
        _ => panic!("app_sdk::testing: no app of this type waits to be started"),
    }
}

/// An app started as a worker starts it, to call with requests.
///
/// Made from an app value ([`new`](Self::new)) or a built library
/// ([`load`](Self::load)); `init` runs when it is made, `exit` when it is
/// dropped (or [`exit`](Self::exit)ed). It is `Send + Sync`, and
/// [`call`](Self::call) takes `&self`: calls from several threads at once
/// overlap in the app as with `--threads`.
pub struct TestClient {
    root: AppRoot,
    /// The instance; `None` only once `exit` has taken it.
    app: Option<AppHandle>,
    /// The WebSocket connections the app accepted, and what it sent.
    sockets: Mutex<Sockets>,
}

// SAFETY: the instance behind the handle is the SDK's box of an `App`,
// which is `Send + Sync`; `AppRoot::handle`'s contract allows overlapping
// calls on one instance (as `--threads` makes them), and `exit` runs once,
// with `&mut self` or `self`, so never during a call.
unsafe impl Send for TestClient {}
// SAFETY: as for `Send`.
unsafe impl Sync for TestClient {}

impl TestClient {
    /// Starts `app` as worker 1 would ([`WorkerFacts::default`]).
    pub fn new<A: App>(app: A) -> Result<TestClient, StartError> {
        TestClient::with_worker(app, &WorkerFacts::default())
    }

    /// Starts `app` as the worker `worker` describes would.
    pub fn with_worker<A: App>(app: A, worker: &WorkerFacts) -> Result<TestClient, StartError> {
        PENDING.with(|p| *p.borrow_mut() = Some(Box::new(app)));
        let started = TestClient::start(root(init_pending::<A>, cfg!(panic = "abort"), 0), worker);
        // Taken by `init` unless something failed before it ran.
        PENDING.with(|p| p.borrow_mut().take());
        started
    }

    /// Loads the app `spec` names (`path/libfoo.so:app`, or a path alone
    /// for the export `app`) and starts it as worker 1 would.
    ///
    /// The library stays loaded for the life of the process, as in a worker
    /// (unloading a Rust library whose threads or thread-locals still run
    /// its code is not sound).
    ///
    /// # Safety
    /// Loading runs the library's initialisers, and its code then runs in
    /// this process: the library must be trusted as the host trusts the
    /// app it serves. The named symbol must be a data object at least as
    /// large as an app root's head ([`APP_ROOT_HEAD`](crate::abi::APP_ROOT_HEAD) bytes), as every
    /// [`export_app!`](crate::export_app) export is; from there on it is
    /// checked (magic, ABI line, size, required features).
    pub unsafe fn load(spec: &str) -> Result<TestClient, StartError> {
        let (_, name) = split_spec(spec);
        let facts = WorkerFacts {
            app_name: name.to_owned(),
            ..WorkerFacts::default()
        };
        // SAFETY: this function's contract is `load_with`'s.
        unsafe { TestClient::load_with(spec, &facts) }
    }

    /// Like [`load`](Self::load), as the worker `worker` describes.
    ///
    /// # Safety
    /// As for [`load`](Self::load).
    pub unsafe fn load_with(spec: &str, worker: &WorkerFacts) -> Result<TestClient, StartError> {
        let (path, name) = split_spec(spec);
        let path = std::path::absolute(Path::new(path))
            .map_err(|e| StartError::Load(format!("{path}: {e}")))?;
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        // SAFETY: the caller vouches for the library (this function's contract).
        let lib = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_LOCAL) }
            .map_err(|e| StartError::Load(e.to_string()))?;
        let symbol = format!("{name}\0");
        // SAFETY: only the symbol's address is taken here.
        let address: *const c_void = match unsafe { lib.get::<*const c_void>(symbol.as_bytes()) } {
            Ok(sym) => *sym,
            Err(e) => return Err(StartError::Load(e.to_string())),
        };
        // The library stays loaded for the life of the process.
        std::mem::forget(lib);
        // SAFETY: the caller vouches that the symbol is a data object at
        // least APP_ROOT_HEAD bytes long. The same check as the host's.
        let root = unsafe { crate::abi::read_root(address, None) }
            .map_err(|e| StartError::Load(format!("`{name}`: {e}")))?;
        TestClient::start(root, worker)
    }

    /// Runs `root`'s `init` with the recording host's table and `worker`.
    fn start(root: AppRoot, worker: &WorkerFacts) -> Result<TestClient, StartError> {
        let info = WorkerInfo {
            size: size_u32::<WorkerInfo<'_>>(),
            worker_id: worker.id,
            pid: worker.pid,
            threads: worker.threads,
            generation: worker.generation,
            flags: if worker.probe { WORKER_PROBE } else { 0 },
            app_name: RStr::from_str(&worker.app_name),
        };
        let mut app = AppHandle::null();
        // SAFETY: the table lives for the process, `info` for the call, and
        // `app` is writable: `AppRoot::init`'s contract.
        let outcome = unsafe { (root.init)(host_table(), &info, &mut app) };
        match Outcome::from(outcome) {
            Outcome::Done => Ok(TestClient {
                root,
                app: Some(app),
                sockets: Mutex::new(Sockets::default()),
            }),
            Outcome::Failed(why) => Err(StartError::Failed(why)),
            Outcome::Panicked(why) => Err(StartError::Panicked(why)),
        }
    }

    /// Calls the app with `req` and returns what it answered.
    ///
    /// # Panics
    /// If `req` is not a request the host would pass to an app (see
    /// [`TestRequest`]); never because of what the app does.
    pub fn call(&self, req: TestRequest) -> TestResponse {
        self.call_with(req, |_| {})
    }

    /// [`call`](Self::call) for a request that may open a WebSocket
    /// connection (`handshake`): the response's `websocket` is its id, open
    /// from now on.
    fn call_as(&self, req: TestRequest, handshake: bool) -> TestResponse {
        self.call_inner(req, handshake, |_| {})
    }

    /// [`call`](Self::call), with the request table `adjust`ed before the
    /// app gets it (the tests make it an older host's).
    fn call_with(
        &self,
        req: TestRequest,
        adjust: impl for<'r> FnOnce(&mut RawRequest<'r>),
    ) -> TestResponse {
        let resp = self.call_inner(req, false, adjust);
        self.settle();
        resp
    }

    /// Calls `handle` (see [`call_with`](Self::call_with)); `handshake`:
    /// the request is a WebSocket handshake the app may accept.
    fn call_inner(
        &self,
        req: TestRequest,
        handshake: bool,
        adjust: impl for<'r> FnOnce(&mut RawRequest<'r>),
    ) -> TestResponse {
        let Some(app) = &self.app else {
            unreachable!("only `exit`, which consumes the client, takes the instance")
        };
        let head = Head::of(&req);
        let tls = req.tls.as_ref().map(|t| RawTls {
            size: size_u32::<RawTls<'_>>(),
            _reserved: 0,
            version: RStr::from_str(t.version()),
            cipher: RStr::from_str(t.cipher()),
            sni: RStr::from_str(t.sni().unwrap_or("")),
            alpn: RStr::from_str(t.alpn().unwrap_or("")),
            client_subject: RStr::from_str(t.client_subject().unwrap_or("")),
        });
        let mut raw = RawRequest {
            size: size_u32::<RawRequest<'_>>(),
            version_minor: if req.http10 { 0 } else { 1 },
            _reserved: [0; 3],
            head: RSlice::from_slice(&head.bytes),
            method: head.method,
            target: head.target,
            path: head.path,
            query: head.query,
            headers: RSlice::from_slice(&head.headers),
            content_length: head.content_length,
            remote_addr: RStr::from_str(&req.remote_addr),
            local_addr: RStr::from_str(&req.local_addr),
            scheme: RStr::from_str(&req.scheme),
            request_id: RStr::from_str(&req.request_id),
            tls: tls
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const RawTls<'_>),
        };
        adjust(&mut raw);
        let upgrade_offer = !handshake
            && !req.http10
            && req.lists("connection", "upgrade")
            && req
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("upgrade"));
        let mut recorder = Recorder {
            body: &req.body,
            read: 0,
            body_error: req.body_error.as_deref(),
            is_head: req.method == "HEAD",
            mode: Mode::Open,
            app_length: None,
            resp: TestResponse::new(),
            sockets: &self.sockets,
            event: false,
            handshake,
            upgrade_offer: upgrade_offer.then_some(&req),
            raw_input: &req.raw_input,
        };
        // SAFETY: `recorder` outlives the call and is reached only through
        // this context during it; the SDK calls the table's functions from
        // this thread (its `HostIo` is neither `Send` nor `Sync`), one at a time.
        let ctx = unsafe { HostCtx::new(&mut recorder as *mut Recorder<'_> as *mut c_void) };
        // SAFETY: `app` was made by this root's `init` and `exit` has not
        // taken it; `raw` (and the head it points into) is live for the
        // call; `ctx` is the recording host's for it.
        let outcome = Outcome::from(unsafe { (self.root.handle)(app, &raw, ctx) });
        if !outcome.is_done() {
            recorder.fail();
        }
        recorder.complete();
        recorder.resp.outcome = outcome;
        recorder.resp
    }

    /// Calls the app's `on_websocket` for one event of connection `id`:
    /// what it sends is recorded; an open or message event that fails
    /// closes the connection with `1011`, as the host does.
    fn event(&self, kind: u32, id: WsId, data: &[u8], code: u16) -> Outcome {
        let Some(app) = &self.app else {
            unreachable!("only `exit`, which consumes the client, takes the instance")
        };
        let Some(on_websocket) = self.root.on_websocket else {
            return Outcome::Failed("the app handles no WebSocket events".into());
        };
        let event = RawWsEvent {
            size: size_u32::<RawWsEvent<'_>>(),
            kind,
            conn: id.get(),
            data: RSlice::from_slice(data),
            code,
            _reserved: [0; 6],
        };
        let mut recorder = Recorder::for_event(&self.sockets);
        // SAFETY: as in `call_inner`: `recorder` outlives the call and is
        // reached only through this context during it.
        let ctx = unsafe { HostCtx::new(&mut recorder as *mut Recorder<'_> as *mut c_void) };
        // SAFETY: `app` was made by this root's `init` and `exit` has not
        // taken it; `event` is live for the call; `ctx` is the recording
        // host's for it.
        let outcome = Outcome::from(unsafe { on_websocket(app, &event, ctx) });
        if !outcome.is_done() && kind != websocket::WS_CLOSE_EVENT {
            self.lock_sockets().app_failed(id);
        }
        outcome
    }

    /// Runs the `on_close` each connection that closed is owed, in order
    /// (as the host does once the call that closed it has returned).
    fn settle(&self) {
        loop {
            let next = self.lock_sockets().owed.pop_front();
            let Some((id, close)) = next else { return };
            let _ = self.event(websocket::WS_CLOSE_EVENT, id, close.1.as_bytes(), close.0);
        }
    }

    fn lock_sockets(&self) -> std::sync::MutexGuard<'_, Sockets> {
        self.sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `req` as a WebSocket handshake (adding the headers a browser
    /// sends that it lacks: `Connection: Upgrade`, `Upgrade: websocket`,
    /// `Sec-WebSocket-Version: 13` and a key), calls `handle`, and if the
    /// app accepted, opens the connection (`on_open`). The socket's
    /// [`response`](TestSocket::response) is the answer (`101` when
    /// accepted).
    ///
    /// # Panics
    /// As [`call`](Self::call); and for a request the host would refuse
    /// as a handshake before the app sees it (not a `GET`, HTTP/1.0).
    pub fn websocket(&self, req: TestRequest) -> TestSocket<'_> {
        assert!(
            req.method == "GET" && !req.http10,
            "test request: a WebSocket handshake is an HTTP/1.1 GET"
        );
        let mut req = req;
        for (name, value) in [
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", websocket::TEST_KEY),
        ] {
            if !req
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                req = req.header(name, value);
            }
        }
        assert!(
            req.lists("connection", "upgrade") && req.lists("upgrade", "websocket"),
            "test request: a WebSocket handshake says Connection: upgrade and Upgrade: websocket"
        );
        let response = self.call_as(req, true);
        let opened = response.websocket.map(|id| {
            self.lock_sockets().open(id);
            self.event(WS_OPEN, id, &[], 0)
        });
        self.settle();
        TestSocket::new(self, response, opened)
    }

    /// Takes every WebSocket send the app made since the last time, in
    /// order (from `handle` and from its events): to which ids, what. Sends
    /// to a connection that is open also reach its
    /// [`TestSocket::received`].
    pub fn websocket_sent(&self) -> Vec<Sent> {
        std::mem::take(&mut self.lock_sockets().sent)
    }

    /// Runs the app's exit hook and frees it, as a worker that stops
    /// gracefully does; returns how the hook ended (dropping the client
    /// does the same and ignores it).
    pub fn exit(mut self) -> Outcome {
        self.exit_app()
    }

    fn exit_app(&mut self) -> Outcome {
        match self.app.take() {
            // SAFETY: made by this root's `init`; no call is running (this
            // takes `&mut self`), and the handle is moved out, so freed once.
            Some(app) => Outcome::from(unsafe { (self.root.exit)(app) }),
            None => Outcome::Done,
        }
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        let _ = self.exit_app();
    }
}

impl fmt::Debug for TestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestClient")
            .field("sdk_version", &self.root.sdk_version.as_str())
            .field("running", &self.app.is_some())
            .finish()
    }
}

/// Starts `app` as worker 1 would, calls it once with `req`, and runs its
/// exit hook: the whole life of a worker that serves one request.
///
/// # Panics
/// If the app's `init` fails (use [`TestClient::new`] to see that as an
/// error), or as [`TestClient::call`].
pub fn call<A: App>(app: A, req: TestRequest) -> TestResponse {
    match TestClient::new(app) {
        Ok(client) => client.call(req),
        Err(e) => panic!("{e}"),
    }
}

/// `PATH:NAME` split as the host splits it: the name is an identifier
/// after the last `:`; without one, the whole is the path and the name is
/// [`DEFAULT_APP_NAME`].
fn split_spec(spec: &str) -> (&str, &str) {
    match spec.rsplit_once(':') {
        Some((path, name))
            if !path.is_empty()
                && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            (path, name)
        }
        _ => (spec, DEFAULT_APP_NAME),
    }
}

// ---------------------------------------------------------------------------
// The recording host

/// Where the response is (as the host's exchange tracks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Status and headers can still change.
    Open,
    /// The head is sent and the body streams.
    Streaming {
        /// With the app's `Content-Length`: the bytes still owed.
        left: Option<u64>,
    },
    /// The app accepted the WebSocket handshake: the answer is a `101`, to
    /// which headers may still be added.
    Accepted,
    /// The app switched protocols: the `101` is sent, the stream is raw.
    Raw,
    /// The response is complete.
    Done,
}

/// Longest `Content-Length` value an app may give, in digits (as the
/// host's): more could overflow a `u64` (19 digits always fit).
const MAX_LENGTH_DIGITS: usize = 19;

/// What the host does with a header the app adds (its `check_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderCheck {
    /// Pass it on (listed in [`TestResponse::headers`]).
    Keep,
    /// A valid `Content-Length`: it frames the body.
    ContentLength(u64),
    /// `Transfer-Encoding`: the host's alone.
    TransferEncoding,
    /// `Connection` listing only `close` and `keep-alive`.
    Connection {
        /// The value lists `close`.
        close: bool,
    },
    /// Not valid HTTP, or a value the host cannot honour.
    Invalid(&'static str),
}

/// Classifies a header the app wants to add, as the host does.
fn check_header(name: &[u8], value: &[u8]) -> HeaderCheck {
    if !is_token(name) {
        return HeaderCheck::Invalid("invalid header name");
    }
    if has_control(value) {
        return HeaderCheck::Invalid("control character in header value");
    }
    if name.eq_ignore_ascii_case(b"content-length") {
        parse_length(value)
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        HeaderCheck::TransferEncoding
    } else if name.eq_ignore_ascii_case(b"connection") {
        parse_connection(value)
    } else {
        // `Date` and `Server` too: the app's replace the host's.
        HeaderCheck::Keep
    }
}

/// An app's `Content-Length` value: digits only, at most
/// [`MAX_LENGTH_DIGITS`] of them, surrounding blanks allowed.
fn parse_length(value: &[u8]) -> HeaderCheck {
    let digits = value.trim_ascii();
    if digits.is_empty()
        || digits.len() > MAX_LENGTH_DIGITS
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return HeaderCheck::Invalid("Content-Length must be a number of bytes");
    }
    let n = digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    HeaderCheck::ContentLength(n)
}

/// An app's `Connection` value: a list of `close` and `keep-alive`.
fn parse_connection(value: &[u8]) -> HeaderCheck {
    let mut close = false;
    for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if option.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if !option.eq_ignore_ascii_case(b"keep-alive") && !option.is_empty() {
            return HeaderCheck::Invalid("Connection may only be close or keep-alive");
        }
    }
    HeaderCheck::Connection { close }
}

/// The recording host's state for one call: what is behind its [`HostCtx`].
struct Recorder<'a> {
    /// The request body, and how much of it the app read.
    body: &'a [u8],
    read: usize,
    /// What reading fails with once the body's bytes are read.
    body_error: Option<&'a str>,
    is_head: bool,
    mode: Mode,
    /// The app's `Content-Length`, if it set one.
    app_length: Option<u64>,
    resp: TestResponse,
    /// The client's WebSocket connections and what the app sent them.
    sockets: &'a Mutex<Sockets>,
    /// This is an event call's: only `websocket_send` is called with it.
    event: bool,
    /// The request is a WebSocket handshake ([`TestClient::websocket`]).
    handshake: bool,
    /// The request, when it offers to switch protocols (its `Upgrade`).
    upgrade_offer: Option<&'a TestRequest>,
    /// What the client sends after a protocol switch (read from `read`).
    raw_input: &'a [u8],
}

/// Whether a response with `status` has no body (`1xx`, `204`, `304`).
fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

impl<'a> Recorder<'a> {
    /// The recorder of an event call.
    fn for_event(sockets: &'a Mutex<Sockets>) -> Recorder<'a> {
        Recorder {
            body: &[],
            read: 0,
            body_error: None,
            is_head: false,
            mode: Mode::Done,
            app_length: None,
            resp: TestResponse::new(),
            sockets,
            event: true,
            handshake: false,
            upgrade_offer: None,
            raw_input: &[],
        }
    }

    /// The host's `websocket_accept`, with its words.
    fn websocket_accept(&mut self, protocol: &[u8]) -> Result<usize, String> {
        if self.event {
            return Err("accept_websocket outside handle".into());
        }
        if !self.handshake {
            return Err("accept_websocket: the request is not a WebSocket handshake (app_sdk::testing: send it with TestClient::websocket)".into());
        }
        if self.mode != Mode::Open {
            return Err("accept_websocket: the response has already started".into());
        }
        if !protocol.is_empty() && !is_token(protocol) {
            return Err(format!(
                "accept_websocket: {:?} is not a subprotocol name",
                String::from_utf8_lossy(protocol)
            ));
        }
        let id = websocket::lock(self.sockets).accept(protocol);
        self.mode = Mode::Accepted;
        self.resp.websocket = Some(id);
        Ok(id.get() as usize)
    }

    /// The host's `websocket_send`: checked as the host checks it, then
    /// recorded (and delivered to the open connections among `ids`).
    fn websocket_send(&mut self, ids: &[u64], kind: u32, data: &[u8]) -> Result<usize, String> {
        let frame = Frame::of(kind, data).map_err(|why| format!("a WebSocket send: {why}"))?;
        Ok(websocket::lock(self.sockets).send(ids, frame))
    }

    /// The host's `upgrade`, with its words (see
    /// `host/src/worker/exchange.rs`).
    fn upgrade(&mut self, protocol: &[u8]) -> Result<usize, String> {
        let shown = String::from_utf8_lossy(protocol);
        if self.event {
            return Err("upgrade outside handle".into());
        }
        if protocol.eq_ignore_ascii_case(b"websocket") {
            return Err(format!(
                "upgrade to {shown:?}: the host runs WebSocket itself (use accept_websocket)"
            ));
        }
        let mut parts = protocol.splitn(2, |&b| b == b'/');
        let valid = is_token(parts.next().unwrap_or_default()) && parts.next().is_none_or(is_token);
        if !valid {
            return Err(format!("upgrade to {shown:?}: not a protocol name"));
        }
        match self.upgrade_offer {
            Some(req) if req.lists("upgrade", &shown) => {}
            Some(_) => {
                return Err(format!(
                    "upgrade to {shown:?}: the request's Upgrade does not offer it"
                ))
            }
            None => {
                return Err(format!(
                    "upgrade to {shown:?}: the request asked for no upgrade (Connection: upgrade and Upgrade)"
                ))
            }
        }
        if self.mode != Mode::Open {
            return Err(format!(
                "upgrade to {shown:?}: the response has already started"
            ));
        }
        if self.app_length.is_some() {
            return Err(format!("upgrade to {shown:?}: a 101 has no Content-Length"));
        }
        if self.read < self.body.len() {
            return Err(format!(
                "upgrade to {shown:?}: the request body is not read to its end"
            ));
        }
        self.resp.status = 101;
        self.resp.upgraded = Some(shown.into_owned());
        self.resp.kind = BodyKind::Stream;
        self.mode = Mode::Raw;
        self.read = 0;
        Ok(0)
    }

    fn read_body(&mut self, dst: &mut [u8]) -> Result<usize, String> {
        if self.mode == Mode::Raw {
            let rest = &self.raw_input[self.read..];
            let n = rest.len().min(dst.len());
            dst[..n].copy_from_slice(&rest[..n]);
            self.read += n;
            return Ok(n);
        }
        let rest = &self.body[self.read..];
        if rest.is_empty() {
            return match self.body_error {
                Some(why) if !dst.is_empty() => Err(why.to_owned()),
                _ => Ok(0),
            };
        }
        let n = rest.len().min(dst.len());
        dst[..n].copy_from_slice(&rest[..n]);
        self.read += n;
        Ok(n)
    }

    fn body_allowed(&self) -> bool {
        !self.is_head && !status_has_no_body(self.resp.status)
    }

    /// Sends the head: what it announces is settled now. `length` is the
    /// framing's: `Some` for a `Content-Length`, `None` for a stream of
    /// unknown length (chunked).
    fn commit(&mut self, kind: BodyKind, length: Option<u64>) {
        self.resp.kind = kind;
        self.resp.content_length = match self.app_length {
            // A 304 may say how long the representation is (RFC 9110 §8.6).
            Some(n) if self.resp.status == 304 => Some(n),
            _ if status_has_no_body(self.resp.status) => None,
            _ => length,
        };
    }

    /// Whether a body of `len` bytes, sent whole, matches the app's
    /// `Content-Length` (the host's `length_mismatch`): equal, or empty
    /// where no body goes out (HEAD, 304). `None` means it does.
    fn length_mismatch(&self, len: u64) -> Option<String> {
        let declared = self.app_length?;
        if self.resp.status == 204 {
            return Some(format!(
                "Content-Length: {declared} on a 204 response, which has no body"
            ));
        }
        let head_only = self.is_head || self.resp.status == 304;
        if len == declared || (head_only && len == 0) {
            return None;
        }
        Some(format!(
            "the body is {len} bytes but the app set Content-Length: {declared}"
        ))
    }

    fn set_status(&mut self, status: u16) -> Result<usize, String> {
        if self.mode != Mode::Open {
            return Err(format!(
                "status {status}: the response has started; the status can no longer change"
            ));
        }
        if !(200..=999).contains(&status) {
            return Err(format!(
                "status {status} is not a final status (200-999; 1xx are not supported)"
            ));
        }
        self.resp.status = status;
        Ok(0)
    }

    fn add_header(&mut self, name: &[u8], value: &[u8]) -> Result<usize, String> {
        let shown = || String::from_utf8_lossy(name);
        if !matches!(self.mode, Mode::Open | Mode::Accepted) {
            return Err(format!(
                "header {:?}: the response has started; headers can no longer be added",
                shown()
            ));
        }
        match check_header(name, value) {
            HeaderCheck::Invalid(why) => return Err(format!("header {:?}: {why}", shown())),
            HeaderCheck::TransferEncoding => {
                return Err(format!(
                    "header {:?}: the host frames the body (set Content-Length for a known length)",
                    shown()
                ))
            }
            HeaderCheck::ContentLength(n) => {
                if let Some(first) = self.app_length {
                    return Err(format!(
                        "a second Content-Length ({n}; the first was {first})"
                    ));
                }
                self.app_length = Some(n);
                return Ok(0);
            }
            HeaderCheck::Connection { close } => {
                self.resp.closes |= close;
                return Ok(0);
            }
            HeaderCheck::Keep => {}
        }
        // A token is ASCII, so this is the name as the app spelled it.
        let name = String::from_utf8_lossy(name).into_owned();
        self.resp.headers.push((name, value.trim_ascii().to_vec()));
        Ok(0)
    }

    fn send_body(&mut self, body: &[u8]) -> Result<usize, String> {
        if self.mode != Mode::Open {
            return Err("a body: the response has already started".into());
        }
        if let Some(why) = self.length_mismatch(body.len() as u64) {
            return Err(why);
        }
        let length = self.app_length.unwrap_or(body.len() as u64);
        self.commit(BodyKind::Whole, Some(length));
        self.mode = Mode::Done;
        if self.body_allowed() {
            self.resp.body = body.to_vec();
        }
        Ok(body.len())
    }

    fn write_chunk(&mut self, data: &[u8]) -> Result<usize, String> {
        let left = match self.mode {
            Mode::Done => return Err("a stream write: the response has ended".into()),
            Mode::Accepted => {
                return Err("a stream write: the response is the WebSocket handshake's 101".into())
            }
            Mode::Raw => {
                if !data.is_empty() {
                    self.resp.parts.push(data.to_vec());
                    self.resp.body.extend_from_slice(data);
                }
                return Ok(data.len());
            }
            Mode::Streaming { left } => left,
            Mode::Open => {
                if self.resp.status == 204 && self.app_length.is_some() {
                    return Err("Content-Length on a 204 response, which has no body".into());
                }
                self.commit(BodyKind::Stream, self.app_length);
                self.mode = Mode::Streaming {
                    left: self.app_length,
                };
                self.app_length
            }
        };
        if data.is_empty() || !self.body_allowed() {
            return Ok(data.len());
        }
        if let Some(left) = left {
            if data.len() as u64 > left {
                return Err(format!(
                    "a stream write of {} bytes: only {left} of the app's Content-Length: {} are left",
                    data.len(),
                    self.app_length.unwrap_or_default()
                ));
            }
            self.mode = Mode::Streaming {
                left: Some(left - data.len() as u64),
            };
        }
        self.resp.parts.push(data.to_vec());
        self.resp.body.extend_from_slice(data);
        Ok(data.len())
    }

    fn send_file(&mut self, file: BorrowedFd<'_>, offset: u64, len: u64) -> Result<usize, String> {
        if self.mode != Mode::Open {
            return Err("a file: the response has already started".into());
        }
        if let Some(why) = self.length_mismatch(len) {
            return Err(why);
        }
        self.commit(BodyKind::File, Some(self.app_length.unwrap_or(len)));
        self.mode = Mode::Done;
        if !self.body_allowed() {
            return Ok(0);
        }
        let file = File::from(
            file.try_clone_to_owned()
                .map_err(|e| format!("cannot read the file: {e}"))?,
        );
        let mut at = offset;
        let end = offset.saturating_add(len);
        let mut buf = vec![0u8; FILE_READ_CHUNK];
        while at < end {
            let want = buf.len().min((end - at) as usize);
            match file.read_at(&mut buf[..want], at) {
                Ok(0) => {
                    self.resp.cut_short = true;
                    return Err(format!(
                        "the file ended {} bytes short of the {len} announced",
                        end - at
                    ));
                }
                Ok(n) => {
                    self.resp.body.extend_from_slice(&buf[..n]);
                    at += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.resp.cut_short = true;
                    return Err(format!("cannot read the file: {e}"));
                }
            }
        }
        Ok(len as usize)
    }

    /// After a failed call: the host's `500` if nothing was sent (the app's
    /// headers and `Content-Length` dropped), else a response cut short.
    fn fail(&mut self) {
        if matches!(self.mode, Mode::Open | Mode::Accepted) {
            // An accepted handshake is refused after all: the app failed.
            if let Some(id) = self.resp.websocket.take() {
                websocket::lock(self.sockets).forget(id);
            }
            self.mode = Mode::Open;
            self.resp.headers.clear();
            self.app_length = None;
            self.resp.status = FAILED_STATUS;
            let _ = self.add_header(b"Content-Type", b"text/plain; charset=utf-8");
            let _ = self.send_body(FAILED_BODY.as_bytes());
        } else {
            self.resp.cut_short = true;
            self.mode = Mode::Done;
        }
    }

    /// After the call: an empty body if none was sent (or the host's `500`
    /// if the app's `Content-Length` cannot frame an empty one); a stream
    /// ends, cut short if it ended before the app's `Content-Length`.
    fn complete(&mut self) {
        match self.mode {
            Mode::Accepted => {
                self.resp.status = 101;
                self.mode = Mode::Done;
            }
            Mode::Raw => self.mode = Mode::Done,
            Mode::Open => {
                if let Some(why) = self.length_mismatch(0) {
                    self.refuse(format!("nothing was sent ({why}): answered 500"));
                    self.fail();
                } else {
                    let _ = self.send_body(&[]);
                    self.resp.kind = BodyKind::None;
                }
            }
            Mode::Streaming { left } => {
                if let Some(left) = left.filter(|&l| l > 0 && self.body_allowed()) {
                    self.refuse(format!(
                        "the stream ended {left} bytes short of the app's Content-Length: {}: closing the connection",
                        self.app_length.unwrap_or_default()
                    ));
                    self.resp.cut_short = true;
                }
                self.mode = Mode::Done;
            }
            Mode::Done => {}
        }
    }

    /// Keeps a refusal for [`TestResponse::refused`].
    fn refuse(&mut self, why: String) {
        self.resp.refused.push(why);
    }

    /// Keeps a refusal for [`TestResponse::refused`] and hands the result
    /// to the app.
    fn answer(&mut self, result: Result<usize, String>) -> IoResult {
        match result {
            Ok(n) => RResult::ROk(n),
            Err(why) => {
                self.refuse(why.clone());
                RResult::RErr(RString::from(why))
            }
        }
    }
}

/// The recording host's table: made once, valid for the process, as the
/// host's is.
fn host_table() -> &'static HostFns {
    static TABLE: OnceLock<HostFns> = OnceLock::new();
    TABLE.get_or_init(|| HostFns {
        size: size_u32::<HostFns>(),
        abi_line: ABI_LINE,
        abi_revision: ABI_REVISION,
        provides: PROVIDES,
        sdk_version: RStr::from_str(SDK_VERSION),
        // Tests see everything an app logs.
        max_log_level: 5,
        _reserved: 0,
        read_body,
        set_status,
        add_header,
        send_body,
        write_chunk,
        send_file,
        log,
        websocket_accept: Some(websocket_accept),
        websocket_send: Some(websocket_send),
        upgrade: Some(upgrade),
    })
}

/// The recorder behind a context.
///
/// # Safety
/// `ctx` was made by [`TestClient::call`] for the call in progress, on this
/// thread, and no other reference to the recorder is in use while the
/// result is.
unsafe fn recorder<'x>(ctx: HostCtx<'_>) -> &'x mut Recorder<'x> {
    // SAFETY: per the contract, the pointer is the call's live recorder,
    // used by nothing else meanwhile.
    unsafe { &mut *(ctx.as_ptr() as *mut Recorder<'x>) }
}

/// # Safety
/// [`HostFns`]'s contract: `ctx` is the recording host's for the call in progress.
unsafe extern "C" fn read_body(ctx: HostCtx<'_>, buf: RSliceMut<'_, u8>) -> IoResult {
    // SAFETY: this function's contract is `recorder`'s.
    let rec = unsafe { recorder(ctx) };
    let mut buf = buf;
    match rec.read_body(buf.as_mut_slice()) {
        Ok(n) => RResult::ROk(n),
        Err(why) => RResult::RErr(RString::from(why)),
    }
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn set_status(ctx: HostCtx<'_>, status: u16) -> IoResult {
    // SAFETY: this function's contract is `recorder`'s.
    let rec = unsafe { recorder(ctx) };
    let result = rec.set_status(status);
    rec.answer(result)
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn add_header(
    ctx: HostCtx<'_>,
    name: RSlice<'_, u8>,
    value: RSlice<'_, u8>,
) -> IoResult {
    // SAFETY: this function's contract is `recorder`'s.
    let rec = unsafe { recorder(ctx) };
    let result = rec.add_header(name.as_slice(), value.as_slice());
    rec.answer(result)
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn send_body(ctx: HostCtx<'_>, body: RSlice<'_, u8>) -> IoResult {
    // SAFETY: this function's contract is `recorder`'s.
    let rec = unsafe { recorder(ctx) };
    let result = rec.send_body(body.as_slice());
    rec.answer(result)
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn write_chunk(ctx: HostCtx<'_>, data: RSlice<'_, u8>) -> IoResult {
    // SAFETY: this function's contract is `recorder`'s.
    let rec = unsafe { recorder(ctx) };
    let result = rec.write_chunk(data.as_slice());
    rec.answer(result)
}

/// # Safety
/// As for [`read_body`]; `fd` is open for the whole call (the app lends it).
unsafe extern "C" fn send_file(ctx: HostCtx<'_>, fd: i32, offset: u64, len: u64) -> IoResult {
    // SAFETY: this function's contract is `recorder`'s.
    let rec = unsafe { recorder(ctx) };
    let result = if fd < 0 {
        Err("invalid file descriptor".to_owned())
    } else {
        // SAFETY: the app lends `fd`, open, for the length of this call;
        // what outlives the call is a duplicate.
        let file = unsafe { BorrowedFd::borrow_raw(fd) };
        rec.send_file(file, offset, len)
    };
    rec.answer(result)
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn websocket_accept(ctx: HostCtx<'_>, protocol: RSlice<'_, u8>) -> IoResult {
    // SAFETY: this function's contract is `recorder`'s.
    let rec = unsafe { recorder(ctx) };
    let result = rec.websocket_accept(protocol.as_slice());
    rec.answer(result)
}

/// # Safety
/// As for [`read_body`]; `ctx` may also be an event call's.
unsafe extern "C" fn websocket_send(
    ctx: HostCtx<'_>,
    ids: RSlice<'_, u64>,
    kind: u32,
    data: RSlice<'_, u8>,
) -> IoResult {
    // SAFETY: this function's contract is `recorder`'s (an event call's
    // context is a recorder too).
    let rec = unsafe { recorder(ctx) };
    let result = rec.websocket_send(ids.as_slice(), kind, data.as_slice());
    rec.answer(result)
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn upgrade(ctx: HostCtx<'_>, protocol: RSlice<'_, u8>) -> IoResult {
    // SAFETY: this function's contract is `recorder`'s.
    let rec = unsafe { recorder(ctx) };
    let result = rec.upgrade(protocol.as_slice());
    rec.answer(result)
}

/// Prints an app's log record to stderr (which the test harness shows for
/// a failing test).
///
/// # Safety
/// `record` points at a live, size-prefixed [`LogRecord`].
unsafe extern "C" fn log(record: *const LogRecord<'_>) {
    // SAFETY: per the contract; every field past the minimum is valid zero.
    let Some(record) = (unsafe { read_table(record, LOG_RECORD_MIN) }) else {
        return;
    };
    let level = match record.level {
        0 => return,
        1 => "ERROR",
        2 => "WARN",
        3 => "INFO",
        4 => "DEBUG",
        _ => "TRACE",
    };
    let (target, message) = (record.target.as_str(), record.message.as_str());
    match record.request_id.as_str() {
        "" => eprintln!("app {level} {target}: {message}"),
        id => eprintln!("app {level} {target}: {message} (request {id})"),
    }
}

#[cfg(test)]
mod tests;
