//! The `http` feature: the SDK's request and response as the `http` crate's
//! types, the vocabulary the Rust web ecosystem (hyper, tower, axum) shares.
//!
//! - [`Request::http_parts`] builds an [`http::request::Parts`] (method, URI
//!   with its query, version, every header value) from the request head the
//!   host parsed; [`Request::to_http`] pairs it with the body reader.
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

use crate::{Body, Error, Request, Response, Version};

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
    /// The extensions are empty. Fails only on a head the `http` crate
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
        if let Some(len) = exact.or(declared) {
            // A host that honours an app-set length frames the stream with
            // it; an older one drops the header and chunks the stream.
            let _ = self.try_header("content-length", len.to_string());
        }
        self.write_buf(first)?;
        while let Some(data) = next_data(body.as_mut(), driver)? {
            self.write_buf(data)?;
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

    /// Writes every byte of `data` as streamed body parts.
    fn write_buf(&mut self, mut data: impl Buf) -> crate::Result {
        while data.has_remaining() {
            let chunk = data.chunk();
            let n = chunk.len();
            std::io::Write::write_all(&mut self.stream(), chunk)?;
            data.advance(n);
        }
        Ok(())
    }
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
