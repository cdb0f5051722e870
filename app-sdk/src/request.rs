//! The request an app handler receives: a borrowed view of what the host parsed.
//!
//! Nothing is copied to build it: every accessor slices the raw request head
//! the host already holds. The body is read on demand through [`Body`], which
//! streams decoded bytes (Content-Length or chunked) from the host.

use std::io;

use crate::abi::{HostIo, RawRequest, Span};

/// The HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

impl Version {
    /// The version as it appears on the request line, e.g. `"HTTP/1.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// One request header as received: original case, in received order.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// The field name, as the client spelled it.
    pub name: &'a str,
    /// The field value (usually ASCII; obsolete text bytes are passed through).
    pub value: &'a [u8],
}

impl<'a> Header<'a> {
    /// The value as text, if it is valid UTF-8.
    pub fn value_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.value).ok()
    }
}

/// The request being handled. Valid for one call of [`App::handle`](crate::App::handle).
pub struct Request<'a> {
    raw: &'a RawRequest<'a>,
    io: HostIo<'a>,
}

impl<'a> Request<'a> {
    #[doc(hidden)]
    pub fn __new(raw: &'a RawRequest<'a>, io: HostIo<'a>) -> Self {
        Request { raw, io }
    }

    /// The host calls this request's body is read through.
    #[cfg(feature = "tower")]
    pub(crate) fn io(&self) -> HostIo<'a> {
        self.io
    }

    fn text(&self, span: Span) -> &'a str {
        // The host only hands over methods, targets and names it checked are ASCII.
        std::str::from_utf8(span.get(self.raw.head.as_slice())).unwrap_or("")
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &'a str {
        self.text(self.raw.method)
    }

    /// The request-target exactly as received, e.g. `/search?q=rust`.
    pub fn target(&self) -> &'a str {
        self.text(self.raw.target)
    }

    /// The path part of the target, e.g. `/search` (not percent-decoded).
    pub fn path(&self) -> &'a str {
        self.text(self.raw.path)
    }

    /// The query part of the target without `?`, e.g. `q=rust`; empty when absent.
    pub fn query(&self) -> &'a str {
        self.text(self.raw.query)
    }

    /// The value of query parameter `name` (first occurrence, not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query().split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }

    /// The HTTP version of the request.
    pub fn version(&self) -> Version {
        if self.raw.version_minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }

    /// All header fields in received order, names in their original case.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = Header<'a>> + 'a {
        let head = self.raw.head.as_slice();
        self.raw.headers.as_slice().iter().map(move |h| Header {
            name: std::str::from_utf8(h.name.get(head)).unwrap_or(""),
            value: h.value.get(head),
        })
    }

    /// The value of the first header named `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The value of the first header named `name`, if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The body length announced by `Content-Length`; `None` for a chunked body.
    pub fn content_length(&self) -> Option<u64> {
        u64::try_from(self.raw.content_length).ok()
    }

    /// The client's address (`ip:port`); empty for Unix-socket connections.
    pub fn remote_addr(&self) -> &'a str {
        self.raw.remote_addr.as_str()
    }

    /// The local address the request arrived on (`ip:port` or `unix:/path`).
    pub fn local_addr(&self) -> &'a str {
        self.raw.local_addr.as_str()
    }

    /// `http` or `https` (behind a trusted proxy, as the proxy says).
    pub fn scheme(&self) -> &'a str {
        self.raw.scheme.as_str()
    }

    /// The request id: the one the client or proxy sent in the host's
    /// request-id header (`X-Request-Id` by default), else one the host made
    /// up. The response carries it back. Empty when request ids are off.
    pub fn request_id(&self) -> &'a str {
        self.raw.request_id.as_str()
    }

    /// A reader over the decoded request body.
    pub fn body(&mut self) -> Body<'_> {
        Body { io: self.io }
    }

    /// Reads the whole body into memory.
    pub fn body_bytes(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.content_length().unwrap_or(0).min(1 << 20) as usize);
        io::Read::read_to_end(&mut self.body(), &mut out)?;
        Ok(out)
    }
}

/// Streams the decoded request body from the host. `read` returning `Ok(0)` means the end.
///
/// A malformed or truncated body is reported as an error, never as a short body.
pub struct Body<'r> {
    io: HostIo<'r>,
}

impl io::Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.io
            .read_body(buf)
            .into_result()
            .map_err(|e| io::Error::other(e.into_string()))
    }
}
