//! The response an app handler writes: status, headers, then one kind of body.
//!
//! The host frames the body: a whole body gets `Content-Length`, a stream gets
//! chunked transfer coding (or close-delimited on HTTP/1.0), a file is sent with
//! `sendfile`. An app may set `Content-Length` itself: the host honours it (on
//! HEAD it is sent with no body; a stream of that length goes without chunked
//! coding, see [`Response::stream_with_length`]), and refuses a body that
//! does not match it. The app may also set `Date` and `Server` (they replace
//! the host's) and `Connection: close` (the host closes the connection after
//! the response). The host refuses `Transfer-Encoding`, other `Connection`
//! options, a second `Content-Length`, a status outside 200-999, and headers
//! or a status after the body started.
//!
//! Every refusal is logged by the host (once, as a warning with the worker
//! and the request id) and reaches the app as an error: at once from
//! [`Response::try_status`] and [`Response::try_header`]; from the chaining
//! [`Response::status`] and [`Response::header`] at the next body call
//! ([`Response::body`], [`Response::stream`], [`Response::file`]), which then
//! sends nothing. A handler that returns `Ok` after a refusal kept it from
//! sending any body is reported as failed (answered 500), since the client
//! would otherwise get a response the app did not mean.

use std::{fs::File, io, os::fd::AsFd};

use crate::abi::{HostIo, IoResult};

#[inline]
fn to_io(result: IoResult) -> io::Result<usize> {
    result
        .into_result()
        .map_err(|e| io::Error::other(e.into_string()))
}

/// What a response keeps of the host's refusals (see the module docs).
#[derive(Default)]
struct Refusals {
    /// A refusal of `status` or `header`, not yet returned by a body call.
    kept: Option<String>,
    /// A refusal a body call returned instead of sending, nothing sent since.
    returned: Option<String>,
    /// A body call succeeded.
    sent: bool,
}

impl Refusals {
    /// Keeps `error` for the next body call (the first refusal wins).
    #[inline]
    fn keep<T>(&mut self, result: io::Result<T>) {
        if let Err(error) = result {
            self.kept.get_or_insert_with(|| error.to_string());
        }
    }

    /// The kept refusal, as the error a body call returns instead of sending.
    #[inline]
    fn take(&mut self) -> io::Result<()> {
        match self.kept.take() {
            None => Ok(()),
            Some(why) => {
                self.returned = Some(why.clone());
                Err(io::Error::other(why))
            }
        }
    }

    /// Notes the result of a body call.
    #[inline]
    fn note<T>(&mut self, result: &io::Result<T>) {
        if result.is_ok() {
            self.sent = true;
            self.returned = None;
        }
    }
}

/// The response being written. Valid for one call of [`App::handle`](crate::App::handle).
///
/// If the handler sends no body, the host sends the status and headers set so
/// far with an empty body.
pub struct Response<'a> {
    io: HostIo<'a>,
    refusals: Refusals,
    /// Whether the request is a `HEAD` (the host then sends no body).
    head: bool,
}

impl<'a> Response<'a> {
    #[doc(hidden)]
    pub fn __new(io: HostIo<'a>, head: bool) -> Self {
        Response {
            io,
            refusals: Refusals::default(),
            head,
        }
    }

    /// Whether the request being answered is a `HEAD`: the host sends the
    /// status and headers (with the length the body would have) and no body.
    pub fn is_head(&self) -> bool {
        self.head
    }

    /// Why the response the handler meant was not sent, if a refusal kept
    /// every body from going out (the SDK reports such a call as failed).
    #[doc(hidden)]
    pub fn __unsent_refusal(&mut self) -> Option<String> {
        if self.refusals.sent {
            return None;
        }
        self.refusals
            .returned
            .take()
            .or_else(|| self.refusals.kept.take())
    }

    /// Sets the status code (default `200`). The host refuses codes outside
    /// 200-999 (informational responses are not supported) and any change
    /// once the body has started: the refusal is kept, and the next body
    /// call returns it instead of sending. [`Response::try_status`] returns
    /// it at once.
    pub fn status(&mut self, code: u16) -> &mut Self {
        let result = self.try_status(code);
        self.refusals.keep(result);
        self
    }

    /// Sets the status code, reporting whether the host accepted it (see
    /// [`Response::status`]).
    pub fn try_status(&mut self, code: u16) -> io::Result<()> {
        to_io(self.io.set_status(code)).map(drop)
    }

    /// Adds a header. The host refuses names or values that are not valid
    /// HTTP (such as a value with a line break), headers it owns
    /// (`Transfer-Encoding`, a `Connection` other than `close` or
    /// `keep-alive`, a second or invalid `Content-Length`), and headers
    /// added after the body has started: the refusal is kept, and the next
    /// body call returns it instead of sending. [`Response::try_header`]
    /// returns it at once.
    pub fn header(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        let result = self.try_header(name, value);
        self.refusals.keep(result);
        self
    }

    /// Adds a header, reporting whether the host accepted it.
    pub fn try_header(
        &mut self,
        name: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> io::Result<()> {
        to_io(self.io.add_header(name.as_ref(), value.as_ref())).map(drop)
    }

    /// Sends `body` as the whole body and ends the response.
    ///
    /// Fails without sending if a `status` or `header` call before it was
    /// refused, or if the body does not match the `Content-Length` the app
    /// set (on HEAD an empty body is fine: the head carries the length).
    /// Otherwise a failure means the client went away; the host already
    /// knows, so most handlers ignore that.
    pub fn body(&mut self, body: impl AsRef<[u8]>) -> io::Result<()> {
        self.refusals.take()?;
        let result = to_io(self.io.send_body(body.as_ref())).map(drop);
        self.refusals.note(&result);
        result
    }

    /// Starts a streamed body: each write goes to the client as it is made.
    ///
    /// If a `status` or `header` call before it was refused, the first
    /// write returns that refusal (and sends nothing).
    pub fn stream(&mut self) -> BodyWriter<'_> {
        let pending = self.refusals.take().err();
        BodyWriter {
            io: self.io,
            pending,
            refusals: &mut self.refusals,
            left: None,
        }
    }

    /// Starts a streamed body of exactly `len` bytes: it is sent with
    /// `Content-Length: len` rather than chunked, so the client knows its
    /// length (and the connection can serve another request on HTTP/1.0
    /// too). The host refuses a write past `len`; a handler that returns
    /// having written less breaks the framing, so the host closes the
    /// connection (and logs it).
    pub fn stream_with_length(&mut self, len: u64) -> BodyWriter<'_> {
        self.header("Content-Length", len.to_string());
        let mut writer = self.stream();
        writer.left = Some(len);
        writer
    }

    /// Sends the whole of `file` (from its start) as the body.
    pub fn file(&mut self, file: &File) -> io::Result<()> {
        let len = file.metadata()?.len();
        self.file_range(file, 0, len)
    }

    /// Sends `len` bytes of `file` starting at `offset` as the body. Fails
    /// without sending as [`Response::body`] does.
    pub fn file_range(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        self.refusals.take()?;
        let result = to_io(self.io.send_file(file.as_fd(), offset, len)).map(drop);
        self.refusals.note(&result);
        result
    }

    /// Accepts the request's WebSocket handshake (see
    /// [`Request::websocket`](crate::Request::websocket)), naming
    /// `protocol` as the subprotocol chosen (one the client offered), and
    /// returns the connection's id. When `handle` returns the host answers
    /// `101 Switching Protocols` (with the headers set on this response,
    /// such as a cookie), and the connection's events go to
    /// [`App::on_open`](crate::App::on_open) and the others. Fails, and
    /// nothing is accepted, when the request is not a handshake, the
    /// response has begun, or the host runs no WebSocket (older than
    /// app-sdk 0.2.2). See [`crate::websocket`].
    pub fn accept_websocket(&mut self, protocol: Option<&str>) -> io::Result<crate::WsId> {
        self.refusals.take()?;
        let protocol = protocol.unwrap_or("").as_bytes();
        let result = crate::websocket::to_io(self.io.websocket_accept(protocol))
            .map(|id| crate::WsId::from_raw(id as u64));
        self.refusals.note(&result);
        result
    }

    /// Answers `101 Switching Protocols` with `Upgrade: protocol` (and the
    /// headers set so far) and returns the connection's raw byte stream,
    /// for a protocol the request asked to upgrade to (its `Upgrade`
    /// header) other than WebSocket. The handler keeps its thread while it
    /// uses the stream; the connection closes when `handle` returns. Fails,
    /// and nothing is sent, when the request asked for no such upgrade,
    /// the response has begun, or the host is older than app-sdk 0.2.2.
    /// See [`crate::upgrade`].
    pub fn upgrade(&mut self, protocol: &str) -> io::Result<crate::upgrade::Upgraded<'a>> {
        self.refusals.take()?;
        let result = match self.io.upgrade(protocol.as_bytes()) {
            None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this host does not upgrade connections (it is older than app-sdk 0.2.2)",
            )),
            Some(r) => to_io(r),
        };
        self.refusals.note(&result);
        result.map(|_| crate::upgrade::Upgraded::new(self.io))
    }

    /// A [`Sender`](crate::Sender) to the worker's WebSocket connections,
    /// for a `handle` call that has news for them (a `POST` that
    /// broadcasts, say); what it sends goes out when `handle` returns.
    pub fn websockets(&self) -> crate::Sender<'a> {
        crate::Sender::for_request(self.io)
    }
}

/// Writes a streamed response body; see [`Response::stream`] and
/// [`Response::stream_with_length`].
pub struct BodyWriter<'r> {
    io: HostIo<'r>,
    /// A refusal the first write returns.
    pending: Option<io::Error>,
    refusals: &'r mut Refusals,
    /// Of a known-length stream: the bytes still to write.
    left: Option<u64>,
}

impl BodyWriter<'_> {
    /// Of a stream started with [`Response::stream_with_length`]: how many
    /// bytes are still to be written (`None` for a stream of unknown length).
    pub fn remaining(&self) -> Option<u64> {
        self.left
    }
}

impl io::Write for BodyWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(refused) = self.pending.take() {
            return Err(refused);
        }
        let result = to_io(self.io.write_chunk(buf));
        self.refusals.note(&result);
        if let (Ok(n), Some(left)) = (&result, &mut self.left) {
            *left = left.saturating_sub(*n as u64);
        }
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        // Each chunk is written through to the socket by the host.
        Ok(())
    }
}
