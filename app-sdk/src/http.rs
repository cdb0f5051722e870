//! The `http` feature: the SDK's request and response as the `http` crate's
//! types, the vocabulary the Rust web ecosystem (hyper, tower, axum) shares.
//!
//! - [`Request::http_parts`] builds an [`http::request::Parts`] (method, URI
//!   with its query, version, every header value) from the request head the
//!   host parsed, and the TLS facts in its extensions
//!   ([`OwnedTlsInfo`](crate::OwnedTlsInfo)); [`Request::to_http`] pairs it
//!   with the body reader.
//! - [`Response::send_http`] sends an [`http::Response`] whose body is any
//!   [`http_body::Body`]: status, every header, then the body. A body of one
//!   frame (a `String`, `Bytes`, `Full`, axum's `Json`) is sent whole, so the
//!   host frames it with `Content-Length`; a longer body is streamed frame by
//!   frame as it is produced, never buffered, with `Content-Length` set from
//!   the body's exact size when it has one (a host that honours it frames the
//!   stream with it; an older one chunks it).
//!
//! It exists so that code written for `http` types runs unchanged in the
//! host, and so that the [`tower`](crate::tower) bridge has one place that
//! turns responses into host calls.

use std::{
    future::Future,
    pin::{pin, Pin},
    task::{Context, Poll, Waker},
};

use bytes::Buf;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use http_body::Body as HttpBody;

use crate::{Body, BodyWriter, Error, Request, Response, Version};

/// The largest announced length a `HEAD` response is framed with through
/// [`Response::send_http`]'s portable path: up to this, the SDK hands the
/// host a slice of zeros of that length (which a host never sends on `HEAD`,
/// and every 0.2 host frames as `Content-Length`). Beyond it the SDK sets the
/// `Content-Length` header, which only hosts that honour an app-set length
/// (later than 0.2.0) send.
pub const HEAD_LENGTH_MAX: usize = 256 * 1024;

/// What [`HEAD_LENGTH_MAX`] slices: never read by a host (it sends no body on
/// `HEAD`), so it stays in untouched, zero pages.
static HEAD_ZEROS: [u8; HEAD_LENGTH_MAX] = [0; HEAD_LENGTH_MAX];

impl<'a> Request<'a> {
    /// The request head as [`http::request::Parts`]: method, URI as received
    /// (origin form `/path?query`, or absolute or `*`), version, and every
    /// header field in received order (repeated names keep every value).
    ///
    /// The extensions hold an [`OwnedTlsInfo`](crate::OwnedTlsInfo) when the
    /// request arrived over TLS the host terminated (an axum handler takes
    /// it as `Option<Extension<OwnedTlsInfo>>`), and nothing else: on a
    /// plain connection they are empty. Fails only on a head the `http` crate
    /// refuses and the host let through (the host checks every field first,
    /// so in practice never); the handler then answers `500` through `?`.
    pub fn http_parts(&self) -> Result<http::request::Parts, http::Error> {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = Method::from_bytes(self.method().as_bytes())?;
        parts.uri = Uri::try_from(self.target())?;
        parts.version = match self.version() {
            Version::Http10 => http::Version::HTTP_10,
            Version::Http11 => http::Version::HTTP_11,
        };
        let headers = self.headers();
        let mut map = HeaderMap::with_capacity(headers.len());
        for h in headers {
            map.append(
                HeaderName::from_bytes(h.name.as_bytes())?,
                HeaderValue::from_bytes(h.value)?,
            );
        }
        parts.headers = map;
        if let Some(tls) = self.tls() {
            parts.extensions.insert(tls.into_owned());
        }
        Ok(parts)
    }

    /// The request as an [`http::Request`] whose body is this request's
    /// [`Body`] reader (`std::io::Read`, streaming from the host).
    pub fn to_http(&mut self) -> Result<http::Request<Body<'_>>, http::Error> {
        let parts = self.http_parts()?;
        Ok(http::Request::from_parts(parts, self.body()))
    }
}

impl Response<'_> {
    /// Sends `response`: its status, every header, then its body (see the
    /// [module docs](self) for how the body is framed). Trailers are dropped
    /// (the host sends none). On a `HEAD` request the body is not read: the
    /// length announced is the `Content-Length` header's, else the body's
    /// exact size.
    ///
    /// A body that is not ready when polled is waited for on this thread
    /// (its waker unparks it), so it may be fed from another thread; with
    /// the `tower` feature, [`TowerApp`](crate::tower::TowerApp) runs it on
    /// its tokio runtime instead.
    ///
    /// Errors: a status the host refuses (below 200), a body error, or the
    /// client going away. Once the body has started, the host cuts the
    /// connection on an error rather than send a wrong body.
    pub fn send_http<B>(&mut self, response: http::Response<B>) -> crate::Result
    where
        B: HttpBody,
        B::Error: Into<Error>,
    {
        self.write_http(response, &mut Park)
    }

    /// [`send_http`](Self::send_http), waiting for the body's frames with `driver`.
    pub(crate) fn write_http<B, D>(
        &mut self,
        response: http::Response<B>,
        driver: &mut D,
    ) -> crate::Result
    where
        B: HttpBody,
        B::Error: Into<Error>,
        D: Drive,
    {
        let (parts, body) = response.into_parts();
        self.try_status(parts.status.as_u16())?;
        let mut declared = None;
        for (name, value) in &parts.headers {
            // Framing is decided below: the host frames what it is given.
            if name == header::CONTENT_LENGTH {
                declared = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
                continue;
            }
            if name == header::TRANSFER_ENCODING {
                continue;
            }
            // A header the host refuses is logged by the host; the rest of
            // the response still goes, as with `Response::header`.
            let _ = self.try_header(name.as_str(), value.as_bytes());
        }
        let mut body = pin!(body);
        let exact = body.size_hint().exact();
        if self.is_head() {
            return self.head_only(declared.or(exact));
        }
        if exact == Some(0) || body.is_end_stream() {
            self.body([])?;
            return Ok(());
        }
        let Some(first) = next_data(body.as_mut(), driver)? else {
            self.body([])?;
            return Ok(());
        };
        if body.is_end_stream() || body.size_hint().exact() == Some(0) {
            // One frame: the whole body, framed with its length by the host.
            if first.chunk().len() == first.remaining() {
                self.body(first.chunk())?;
            } else {
                let mut first = first;
                let whole = first.copy_to_bytes(first.remaining());
                self.body(&whole)?;
            }
            return Ok(());
        }
        // A host that honours an app-set length (later than 0.2.0) frames
        // the stream with it; an older one drops the header and chunks it.
        let mut out = match exact.or(declared) {
            Some(len) => self.stream_with_length(len),
            None => self.stream(),
        };
        write_buf(&mut out, first)?;
        while let Some(data) = next_data(body.as_mut(), driver)? {
            write_buf(&mut out, data)?;
        }
        Ok(())
    }

    /// Ends a `HEAD` response announcing `len` bytes (if known) without a body.
    fn head_only(&mut self, len: Option<u64>) -> crate::Result {
        match len {
            Some(n) if n <= HEAD_LENGTH_MAX as u64 => {
                // Every host frames this as `Content-Length: n` and, on
                // HEAD, sends no byte of it.
                self.body(&HEAD_ZEROS[..n as usize])?;
            }
            Some(n) => {
                let _ = self.try_header("content-length", n.to_string());
                self.body([])?;
            }
            // Unknown length: announced as a stream, as a GET's would be.
            None => drop(std::io::Write::write(&mut self.stream(), &[])?),
        }
        Ok(())
    }
}

/// Writes every byte of `data` to `out`.
fn write_buf(out: &mut BodyWriter<'_>, mut data: impl Buf) -> crate::Result {
    while data.has_remaining() {
        let chunk = data.chunk();
        let n = chunk.len();
        std::io::Write::write_all(out, chunk)?;
        data.advance(n);
    }
    Ok(())
}

/// The next data frame of `body`, skipping trailers; `None` at its end.
fn next_data<B, D>(mut body: Pin<&mut B>, driver: &mut D) -> Result<Option<B::Data>, Error>
where
    B: HttpBody,
    B::Error: Into<Error>,
    D: Drive,
{
    loop {
        let frame = driver.drive(pin!(std::future::poll_fn(|cx| body
            .as_mut()
            .poll_frame(cx))));
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if data.has_remaining() => return Ok(Some(data)),
                // An empty frame or trailers (which the host cannot send).
                Ok(_) | Err(_) => {}
            },
        }
    }
}

/// Runs futures to completion on the handler thread.
pub(crate) trait Drive {
    /// Polls `fut` until it is ready and returns its output.
    fn drive<F: Future>(&mut self, fut: Pin<&mut F>) -> F::Output;
}

/// Polls once with a no-op waker; if pending, parks the thread until woken.
struct Park;

impl Drive for Park {
    fn drive<F: Future>(&mut self, mut fut: Pin<&mut F>) -> F::Output {
        match poll_now(fut.as_mut()) {
            Poll::Ready(out) => out,
            Poll::Pending => pollster::block_on(fut),
        }
    }
}

/// Polls `fut` once with a waker that does nothing: a future that is ready
/// at once (most handlers, most bodies) costs no executor round trip.
pub(crate) fn poll_now<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, collections::VecDeque, ffi::c_void};

    use abi_stable::std_types::{RResult, RSlice, RSliceMut};
    use bytes::Bytes;
    use http_body::{Frame, SizeHint};

    use super::*;
    use crate::abi::{HostCtx, HostFns, HostIo, IoResult};

    /// What the fake host was asked to do, one line per call.
    #[derive(Default)]
    struct Calls(RefCell<Vec<String>>);

    /// # Safety
    /// `ctx` is the pointer to the `Calls` of the running test.
    unsafe fn record(ctx: HostCtx<'_>, line: String) -> IoResult {
        // SAFETY: per the contract, a live `Calls`, used from this thread only.
        let calls = unsafe { &*(ctx.as_ptr() as *const Calls) };
        calls.0.borrow_mut().push(line);
        RResult::ROk(0)
    }

    fn text(bytes: RSlice<'_, u8>) -> String {
        String::from_utf8_lossy(bytes.as_slice()).into_owned()
    }

    fn fake_host() -> HostFns {
        unsafe extern "C" fn read(_: HostCtx<'_>, _: RSliceMut<'_, u8>) -> IoResult {
            RResult::ROk(0)
        }
        unsafe extern "C" fn status(ctx: HostCtx<'_>, code: u16) -> IoResult {
            // SAFETY: the test passes its `Calls`.
            unsafe { record(ctx, format!("status {code}")) }
        }
        unsafe extern "C" fn header(
            ctx: HostCtx<'_>,
            name: RSlice<'_, u8>,
            value: RSlice<'_, u8>,
        ) -> IoResult {
            // SAFETY: as above.
            unsafe { record(ctx, format!("header {}: {}", text(name), text(value))) }
        }
        unsafe extern "C" fn body(ctx: HostCtx<'_>, bytes: RSlice<'_, u8>) -> IoResult {
            let line = if !bytes.is_empty() && bytes.iter().all(|&b| b == 0) {
                format!("body of {} zeros", bytes.len())
            } else {
                format!("body {}", text(bytes))
            };
            // SAFETY: as above.
            unsafe { record(ctx, line) }
        }
        unsafe extern "C" fn chunk(ctx: HostCtx<'_>, bytes: RSlice<'_, u8>) -> IoResult {
            // SAFETY: as above.
            unsafe { record(ctx, format!("chunk {}", text(bytes))) }.map(|_| bytes.len())
        }
        HostFns {
            read_body: read,
            set_status: status,
            add_header: header,
            send_body: body,
            write_chunk: chunk,
            ..crate::test_host::refusing()
        }
    }

    /// A body of the given frames, with or without an exact size hint,
    /// pending once before each frame when `pending`.
    struct Frames {
        frames: VecDeque<&'static str>,
        exact: bool,
        pending: bool,
        woke: bool,
    }

    fn frames(frames: &[&'static str], exact: bool) -> Frames {
        Frames {
            frames: frames.iter().copied().collect(),
            exact,
            pending: false,
            woke: false,
        }
    }

    impl HttpBody for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.pending && !self.woke {
                self.woke = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.woke = false;
            Poll::Ready(
                self.frames
                    .pop_front()
                    .map(|f| Ok(Frame::data(Bytes::from(f)))),
            )
        }

        fn is_end_stream(&self) -> bool {
            self.frames.is_empty()
        }

        fn size_hint(&self) -> SizeHint {
            if self.exact {
                SizeHint::with_exact(self.frames.iter().map(|f| f.len() as u64).sum())
            } else {
                SizeHint::default()
            }
        }
    }

    /// Sends `response` through a fake host; returns its calls.
    fn send<B>(head: bool, response: http::Response<B>) -> Vec<String>
    where
        B: HttpBody,
        B::Error: Into<Error>,
    {
        let calls = Calls::default();
        let fns = fake_host();
        // SAFETY: the fake host's functions take this pointer to `calls`,
        // which outlives every call made through `io` below.
        let io = unsafe { HostIo::new(HostCtx::new(&calls as *const Calls as *mut c_void), &fns) };
        let mut resp = Response::__new(io, head);
        resp.send_http(response).expect("sent");
        calls.0.into_inner()
    }

    fn response<B>(body: B) -> http::Response<B> {
        http::Response::builder()
            .status(201)
            .header("content-type", "text/plain")
            .header("content-length", "999")
            .header("x-many", "1")
            .header("x-many", "2")
            .body(body)
            .expect("a valid response")
    }

    #[test]
    fn one_frame_is_sent_whole_with_every_header_and_the_hosts_length() {
        assert_eq!(
            send(false, response(frames(&["hello"], true))),
            [
                "status 201",
                "header content-type: text/plain",
                "header x-many: 1",
                "header x-many: 2",
                "body hello",
            ]
        );
        // Without a size hint too: the body ended after its first frame.
        assert_eq!(
            send(false, response(frames(&["hello"], false)))
                .last()
                .map(String::as_str),
            Some("body hello")
        );
    }

    #[test]
    fn an_empty_body_is_sent_empty() {
        assert_eq!(
            send(false, response(frames(&[], true)))
                .last()
                .map(String::as_str),
            Some("body ")
        );
    }

    #[test]
    fn frames_of_a_known_length_stream_with_it() {
        let calls = send(false, response(frames(&["ab", "cd", "e"], true)));
        assert_eq!(
            calls[4..],
            [
                "header Content-Length: 5",
                "chunk ab",
                "chunk cd",
                "chunk e"
            ]
        );
    }

    #[test]
    fn frames_of_an_unknown_length_stream_with_the_apps_length_if_any() {
        let calls = send(false, response(frames(&["ab", "cd"], false)));
        assert_eq!(
            calls[4..],
            ["header Content-Length: 999", "chunk ab", "chunk cd"]
        );
        let mut bare = response(frames(&["ab", "cd"], false));
        bare.headers_mut().remove("content-length");
        let calls = send(false, bare);
        assert_eq!(calls[4..], ["chunk ab", "chunk cd"]);
    }

    #[test]
    fn head_announces_the_length_without_reading_the_body() {
        let calls = send(true, response(frames(&["never read"], true)));
        assert_eq!(calls.last().map(String::as_str), Some("body of 999 zeros"));
        let mut hinted = response(frames(&["12345"], true));
        hinted.headers_mut().remove("content-length");
        assert_eq!(
            send(true, hinted).last().map(String::as_str),
            Some("body of 5 zeros")
        );
        let mut unknown = response(frames(&["12345"], false));
        unknown.headers_mut().remove("content-length");
        assert_eq!(
            send(true, unknown).last().map(String::as_str),
            Some("chunk ")
        );
        let mut huge = response(frames(&[], false));
        let len = (HEAD_LENGTH_MAX + 1).to_string();
        huge.headers_mut()
            .insert("content-length", len.parse().unwrap());
        assert_eq!(
            send(true, huge)[4..],
            [format!("header content-length: {len}"), "body ".to_owned()]
        );
    }

    #[test]
    fn a_pending_body_is_waited_for() {
        let mut body = frames(&["ab", "cd"], false);
        body.pending = true;
        let calls = send(false, response(body));
        assert_eq!(
            calls[4..],
            ["header Content-Length: 999", "chunk ab", "chunk cd"]
        );
    }

    #[test]
    fn the_status_goes_first_and_defaults_to_200() {
        let calls = send(false, http::Response::new(frames(&["x"], true)));
        assert_eq!(calls, ["status 200", "body x"]);
    }
}
