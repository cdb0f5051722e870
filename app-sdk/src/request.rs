//! The request an app handler receives: a borrowed view of what the host parsed.
//!
//! Nothing is copied to build it: every accessor slices the raw request head
//! the host already holds, and the decoding helpers (a percent-decoded path,
//! query pairs) allocate only when there is something to decode. The body is
//! read on demand through [`Body`], which streams decoded bytes
//! (Content-Length or chunked) from the host, or whole, up to a limit the app
//! chooses, with [`Request::body_bytes`].
//!
//! How the helpers decode, and why:
//! - The query is `application/x-www-form-urlencoded`, decoded as the WHATWG
//!   URL standard says (the `form_urlencoded` crate): `+` is a space, `%XX` a
//!   byte, and bytes that are not UTF-8 become U+FFFD. That is what browsers
//!   send and every web framework reads; [`Request::query`] keeps the raw text.
//! - The path has no such standard, and paths name things (files, records), so
//!   [`Request::path_decoded`] refuses to guess: percent-decoded bytes that are
//!   not UTF-8 are an error (two different paths must not decode to the same
//!   text), `+` stays `+`. `%2F` decodes to `/`, as in Go's `URL.Path`; an app
//!   that must tell `/a%2Fb` from `/a/b` routes on [`Request::path_segments`],
//!   which splits first and decodes each segment.

use std::{
    borrow::Cow,
    fmt, io,
    net::{IpAddr, SocketAddr},
};

use percent_encoding::percent_decode_str;

use crate::{
    abi::{HostIo, RawRequest, Span},
    TlsInfo,
};

/// Most bytes [`Request::body_bytes`] reserves before reading, whatever the
/// `Content-Length`: a client that announces a large body and sends little
/// costs no more than this up front (the buffer grows as bytes arrive).
pub const BODY_PREALLOCATE_MAX: usize = 1 << 20;

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

    /// The path part of the target, e.g. `/caf%C3%A9`, as received (not
    /// percent-decoded; see [`path_decoded`](Self::path_decoded)).
    pub fn path(&self) -> &'a str {
        self.text(self.raw.path)
    }

    /// The path, percent-decoded: `/caf%C3%A9` is `/café`. Borrowed when there
    /// is nothing to decode.
    ///
    /// `%2F` decodes to `/`, so `/a%2Fb` and `/a/b` read the same here (use
    /// [`path_segments`](Self::path_segments) to tell them apart); `+` stays
    /// `+` (it means a space only in a query); dot segments (`/a/../b`,
    /// `%2E%2E`) are left as they are, so check them before using a path as a
    /// file name.
    ///
    /// # Errors
    /// [`DecodeError`] when the decoded bytes are not UTF-8 (`/%FF`): a
    /// client's mistake, so answer it `400` rather than `?` it into a `500`.
    pub fn path_decoded(&self) -> Result<Cow<'a, str>, DecodeError> {
        decode_path_part(self.path())
    }

    /// The path's segments, each percent-decoded after the path is split on
    /// `/`, so an encoded slash stays inside its segment: `/a%2Fb/c` is
    /// `["a/b", "c"]` and `/a/b/c` is `["a", "b", "c"]`. `/` has no segments;
    /// a trailing slash gives a last empty segment (`/a/` is `["a", ""]`).
    ///
    /// # Errors
    /// [`DecodeError`] when a segment's decoded bytes are not UTF-8.
    pub fn path_segments(&self) -> Result<Vec<Cow<'a, str>>, DecodeError> {
        split_segments(self.path()).map(decode_path_part).collect()
    }

    /// The query part of the target without `?`, e.g. `q=rust+lang`, as
    /// received (not decoded); empty when absent.
    pub fn query(&self) -> &'a str {
        self.text(self.raw.query)
    }

    /// Every query parameter as a decoded `(key, value)` pair, in order,
    /// repeated keys included: `a=1&b=x+y&a=%C3%A9` gives `("a", "1")`,
    /// `("b", "x y")`, `("a", "é")`. A key without `=` has an empty value;
    /// empty pairs (`a=1&&b=2`) are skipped. Decoded as a form
    /// (`application/x-www-form-urlencoded`): `+` is a space, and bytes that
    /// are not UTF-8 become U+FFFD (the WHATWG URL standard's rule).
    pub fn query_pairs(&self) -> impl Iterator<Item = (Cow<'a, str>, Cow<'a, str>)> + 'a {
        form_urlencoded::parse(self.query().as_bytes())
    }

    /// The decoded value of the first query parameter whose decoded key is
    /// `name`, as [`query_pairs`](Self::query_pairs) decodes it: for
    /// `?q=rust+lang`, `query_param("q")` is `"rust lang"`. The raw text is in
    /// [`query`](Self::query).
    pub fn query_param(&self, name: &str) -> Option<Cow<'a, str>> {
        self.query_pairs()
            .find_map(|(key, value)| (key == name).then_some(value))
    }

    /// The decoded values of every query parameter named `name`, in order:
    /// for `?tag=a&tag=b`, `query_params("tag")` yields `"a"`, `"b"`.
    pub fn query_params<'n>(&self, name: &'n str) -> impl Iterator<Item = Cow<'a, str>> + 'n
    where
        'a: 'n,
    {
        self.query_pairs()
            .filter_map(move |(key, value)| (key == name).then_some(value))
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

    /// The values of every header named `name` (compared case-insensitively),
    /// one per field line, in received order. A line that holds a
    /// comma-separated list (`Accept: a, b`) is one value: lists are not split,
    /// since some fields (`Set-Cookie`, dates) hold commas of their own.
    pub fn headers_all<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n
    where
        'a: 'n,
    {
        self.headers()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The body length announced by `Content-Length`; `None` for a chunked body.
    pub fn content_length(&self) -> Option<u64> {
        u64::try_from(self.raw.content_length).ok()
    }

    /// The client's address as text: `ip:port` or `[v6]:port` for the
    /// connection's peer, a bare IP when a trusted proxy named the client
    /// (`--forwarded-allow-ips`), empty for Unix-socket connections.
    pub fn remote_addr(&self) -> &'a str {
        self.raw.remote_addr.as_str()
    }

    /// The client's IP, parsed from [`remote_addr`](Self::remote_addr);
    /// `None` on a Unix socket. An IPv4 client of a dual-stack (`[::]`)
    /// listener shows as `::ffff:a.b.c.d`: `IpAddr::to_canonical` turns it
    /// into IPv4.
    pub fn remote_ip(&self) -> Option<IpAddr> {
        parse_remote(self.remote_addr()).map(|(ip, _)| ip)
    }

    /// The client's port, parsed from [`remote_addr`](Self::remote_addr);
    /// `None` on a Unix socket and when a trusted proxy named the client
    /// (the proxy says no port).
    pub fn remote_port(&self) -> Option<u16> {
        parse_remote(self.remote_addr()).and_then(|(_, port)| port)
    }

    /// The local address the request arrived on (`ip:port` or `unix:/path`).
    pub fn local_addr(&self) -> &'a str {
        self.raw.local_addr.as_str()
    }

    /// `http` or `https`: `https` when the host terminated TLS for the
    /// connection; behind a trusted proxy, as the proxy says (its word wins,
    /// both ways).
    pub fn scheme(&self) -> &'a str {
        self.raw.scheme.as_str()
    }

    /// The TLS session the request arrived on, when the host terminated
    /// TLS (`--bind tls://…`): version, cipher suite, SNI name, ALPN
    /// protocol, the client certificate's subject. `None` on a plain
    /// connection, behind a proxy that terminated TLS, and from a host older
    /// than app-sdk 0.2.1 (ABI revision 1), which passes no TLS facts.
    ///
    /// Costs nothing until called, and no allocation when called.
    pub fn tls(&self) -> Option<TlsInfo<'a>> {
        // SAFETY: the host's `tls` is null or points at a live RawTls for
        // the call (RawRequest::tls's contract); an older host's shorter
        // table was zero-filled (null) when it was read.
        unsafe { TlsInfo::from_raw(self.raw.tls) }
    }

    /// The request id: the one the client or proxy sent in the host's
    /// request-id header (`X-Request-Id` by default), else one the host made
    /// up. The response carries it back. Empty when request ids are off.
    pub fn request_id(&self) -> &'a str {
        self.raw.request_id.as_str()
    }

    /// What the request offers when it is a WebSocket handshake (`GET` with
    /// `Upgrade: websocket` and `Connection: upgrade`; the host refused an
    /// invalid one before the app saw it), else `None`. Accept it with
    /// [`Response::accept_websocket`](crate::Response::accept_websocket).
    pub fn websocket(&self) -> Option<crate::WebSocketRequest<'a>> {
        if self.method() != "GET"
            || !self.has_token("upgrade", "websocket")
            || !self.has_token("connection", "upgrade")
        {
            return None;
        }
        Some(crate::WebSocketRequest {
            protocols: self.header_str("sec-websocket-protocol").unwrap_or(""),
        })
    }

    /// Whether a comma-separated header `name` lists `token` (any case).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers_all(name).any(|v| {
            std::str::from_utf8(v)
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    }

    /// A reader over the decoded request body.
    pub fn body(&mut self) -> Body<'_> {
        Body { io: self.io }
    }

    /// Reads the whole body into memory, up to `limit` bytes.
    ///
    /// The host's `--limit-request-body` applies first (a larger body is
    /// answered `413` before the app is called); `limit` is the app's own,
    /// usually smaller, bound for this route. A body announced larger than
    /// `limit` is refused before a byte is read; a chunked one as soon as it
    /// passes it.
    ///
    /// # Errors
    /// [`BodyError::TooLarge`] past `limit` (its message says so; answer it
    /// `413` yourself, or `?` it into a logged `500`), [`BodyError::Read`]
    /// when the body is malformed or truncated or the client went away.
    pub fn body_bytes(&mut self, limit: usize) -> Result<Vec<u8>, BodyError> {
        let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
        let announced = self.content_length();
        if announced.is_some_and(|n| n > limit_u64) {
            return Err(BodyError::TooLarge { limit });
        }
        let reserve = announced
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
            .min(limit)
            .min(BODY_PREALLOCATE_MAX);
        let mut out = Vec::with_capacity(reserve);
        // One byte past the limit tells "exactly `limit`" from "more".
        let mut reader = io::Read::take(self.body(), limit_u64.saturating_add(1));
        io::Read::read_to_end(&mut reader, &mut out).map_err(BodyError::Read)?;
        if out.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        Ok(out)
    }
}

/// A percent-decoded part of the path that is not UTF-8 (from
/// [`Request::path_decoded`] and [`Request::path_segments`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    raw: String,
}

impl DecodeError {
    /// The part of the path, as received, that does not decode to UTF-8.
    pub fn raw(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request path `{}` is not UTF-8 once percent-decoded",
            self.raw
        )
    }
}

impl std::error::Error for DecodeError {}

/// Why [`Request::body_bytes`] returned no body.
#[derive(Debug)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is longer than the limit the app passed.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Reading failed: the body was malformed or truncated, or the client
    /// went away.
    Read(io::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge { limit } => write!(
                f,
                "the request body is larger than this handler's limit of {limit} bytes"
            ),
            BodyError::Read(e) => write!(f, "cannot read the request body: {e}"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::TooLarge { .. } => None,
            BodyError::Read(e) => Some(e),
        }
    }
}

impl From<BodyError> for io::Error {
    fn from(e: BodyError) -> io::Error {
        match e {
            BodyError::Read(e) => e,
            too_large => io::Error::new(io::ErrorKind::InvalidData, too_large),
        }
    }
}

/// Percent-decodes one part of a path, strictly (see the module docs).
fn decode_path_part(raw: &str) -> Result<Cow<'_, str>, DecodeError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| DecodeError {
            raw: raw.to_owned(),
        })
}

/// The raw segments of a path: split on `/` after its leading one; none for `/`.
fn split_segments(path: &str) -> impl Iterator<Item = &str> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    (!rest.is_empty())
        .then(|| rest.split('/'))
        .into_iter()
        .flatten()
}

/// Reads a remote address as the host writes it: `ip:port`, `[v6]:port`, or
/// a bare IP (a trusted proxy's word, no port). `None` for anything else,
/// such as the empty address of a Unix-socket connection.
fn parse_remote(text: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some((addr.ip(), Some(addr.port())));
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse::<IpAddr>().ok().map(|ip| (ip, None))
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

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, io::Read, net::Ipv4Addr};

    use abi_stable::std_types::{RResult, RSlice, RSliceMut, RStr};

    use super::*;
    use crate::abi::{HeaderSpan, HostCtx, HostFns, IoResult};

    thread_local! {
        /// The body the stub host's `read_body` hands out, and how many
        /// bytes it handed out so far.
        static BODY: RefCell<(Vec<u8>, usize)> = const { RefCell::new((Vec::new(), 0)) };
    }

    /// A host whose `read_body` streams [`BODY`] in 3-byte reads and whose
    /// other functions refuse. None of them looks at the context.
    fn stub_host() -> HostFns {
        unsafe extern "C" fn read(_: HostCtx<'_>, mut buf: RSliceMut<'_, u8>) -> IoResult {
            BODY.with(|b| {
                let (body, at) = &mut *b.borrow_mut();
                let n = buf.len().min(3).min(body.len() - *at);
                buf[..n].copy_from_slice(&body[*at..*at + n]);
                *at += n;
                RResult::ROk(n)
            })
        }
        HostFns {
            read_body: read,
            ..crate::test_host::refusing()
        }
    }

    /// Calls `check` with a request for `target` with `headers`, the given
    /// `Content-Length` (`-1`: chunked), body and remote address.
    fn with_request(
        target: &str,
        headers: &[(&str, &str)],
        content_length: i64,
        body: &[u8],
        remote_addr: &str,
        check: impl FnOnce(&mut Request<'_>),
    ) {
        let mut head = format!("GET {target} HTTP/1.1\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let head = head.into_bytes();
        let span = |start: usize, len: usize| Span {
            start: start as u32,
            len: len as u32,
        };
        let target_at = "GET ".len();
        let path_len = target.find('?').unwrap_or(target.len());
        let query = target.get(path_len + 1..).unwrap_or("");
        let mut at = target_at + target.len() + " HTTP/1.1\r\n".len();
        let mut spans = Vec::new();
        for (name, value) in headers {
            let value_at = at + name.len() + 2;
            spans.push(HeaderSpan {
                name: span(at, name.len()),
                value: span(value_at, value.len()),
            });
            at = value_at + value.len() + 2;
        }
        let raw = RawRequest {
            size: std::mem::size_of::<RawRequest<'_>>() as u32,
            version_minor: 1,
            _reserved: [0; 3],
            head: RSlice::from_slice(&head),
            method: span(0, 3),
            target: span(target_at, target.len()),
            path: span(target_at, path_len),
            query: span(target_at + target.len() - query.len(), query.len()),
            headers: RSlice::from_slice(&spans),
            content_length,
            remote_addr: RStr::from_str(remote_addr),
            local_addr: RStr::from_str("127.0.0.1:8000"),
            scheme: RStr::from_str("http"),
            request_id: RStr::from_str(""),
            tls: std::ptr::null(),
        };
        BODY.with(|b| *b.borrow_mut() = (body.to_vec(), 0));
        let fns = stub_host();
        // SAFETY: the stub host's functions never look at the context, so a
        // null one is sound for them, for as long as `fns` lives.
        let io = unsafe { HostIo::new(HostCtx::new(std::ptr::null_mut()), &fns) };
        check(&mut Request::__new(&raw, io));
    }

    fn get(target: &str, check: impl FnOnce(&mut Request<'_>)) {
        with_request(target, &[], 0, b"", "127.0.0.1:4711", check);
    }

    #[test]
    fn the_path_decodes_strictly() {
        get("/caf%C3%A9/a+b", |r| {
            assert_eq!(r.path(), "/caf%C3%A9/a+b");
            assert_eq!(r.path_decoded().unwrap(), "/café/a+b");
        });
        get("/plain", |r| {
            assert!(matches!(r.path_decoded().unwrap(), Cow::Borrowed("/plain")));
        });
        get("/bad%FF", |r| {
            let e = r.path_decoded().unwrap_err();
            assert_eq!(e.raw(), "/bad%FF");
            assert!(e.to_string().contains("not UTF-8"), "{e}");
            assert!(r.path_segments().is_err());
        });
        // A stray `%` that is not an escape stays as it is.
        get("/100%", |r| assert_eq!(r.path_decoded().unwrap(), "/100%"));
    }

    #[test]
    fn segments_keep_an_encoded_slash_apart() {
        get("/a%2Fb/c", |r| {
            assert_eq!(r.path_decoded().unwrap(), "/a/b/c");
            assert_eq!(r.path_segments().unwrap(), ["a/b", "c"]);
        });
        get("/a/b/c", |r| {
            assert_eq!(r.path_segments().unwrap(), ["a", "b", "c"])
        });
        get("/", |r| assert!(r.path_segments().unwrap().is_empty()));
        get("/a/", |r| assert_eq!(r.path_segments().unwrap(), ["a", ""]));
        get("//x", |r| assert_eq!(r.path_segments().unwrap(), ["", "x"]));
    }

    #[test]
    fn query_pairs_decode_as_a_form() {
        get("/s?a=1&b=x+y&a=%C3%A9&flag&&c=%FF&d=1%3D2&e", |r| {
            let pairs: Vec<(String, String)> = r
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let expected = [
                ("a", "1"),
                ("b", "x y"),
                ("a", "é"),
                ("flag", ""),
                ("c", "\u{FFFD}"),
                ("d", "1=2"),
                ("e", ""),
            ];
            let expected: Vec<(String, String)> = expected
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(pairs, expected);
            assert_eq!(r.query_param("a").unwrap(), "1");
            assert_eq!(r.query_param("b").unwrap(), "x y");
            assert_eq!(r.query_param("flag").unwrap(), "");
            assert_eq!(r.query_param("missing"), None);
            assert_eq!(r.query_params("a").collect::<Vec<_>>(), ["1", "é"]);
            assert_eq!(r.query_params("missing").count(), 0);
        });
        // Keys are decoded before they are compared.
        get("/?na%6De=x&first+name=Ada", |r| {
            assert_eq!(r.query_param("name").unwrap(), "x");
            assert_eq!(r.query_param("first name").unwrap(), "Ada");
        });
        get("/", |r| assert_eq!(r.query_pairs().count(), 0));
    }

    #[test]
    fn headers_all_gives_every_line() {
        let headers = [("Accept", "a, b"), ("X-One", "1"), ("accept", "c")];
        with_request("/", &headers, 0, b"", "", |r| {
            let all: Vec<&[u8]> = r.headers_all("ACCEPT").collect();
            assert_eq!(all, [&b"a, b"[..], &b"c"[..]]);
            assert_eq!(r.headers_all("x-one").count(), 1);
            assert_eq!(r.headers_all("x-none").count(), 0);
            assert_eq!(r.header("accept"), Some(&b"a, b"[..]));
        });
    }

    #[test]
    fn remote_addresses_parse_in_every_form_the_host_writes() {
        let cases: [(&str, Option<IpAddr>, Option<u16>); 7] = [
            (
                "192.0.2.7:4711",
                Some(Ipv4Addr::new(192, 0, 2, 7).into()),
                Some(4711),
            ),
            (
                "[2001:db8::1]:443",
                Some("2001:db8::1".parse().unwrap()),
                Some(443),
            ),
            (
                "[::ffff:192.0.2.7]:80",
                Some("::ffff:192.0.2.7".parse().unwrap()),
                Some(80),
            ),
            (
                "198.51.100.2",
                Some(Ipv4Addr::new(198, 51, 100, 2).into()),
                None,
            ),
            ("2001:db8::2", Some("2001:db8::2".parse().unwrap()), None),
            ("", None, None),
            ("unknown", None, None),
        ];
        for (text, ip, port) in cases {
            with_request("/", &[], 0, b"", text, |r| {
                assert_eq!(r.remote_addr(), text);
                assert_eq!(r.remote_ip(), ip, "{text}");
                assert_eq!(r.remote_port(), port, "{text}");
            });
        }
        assert_eq!(
            parse_remote("[2001:db8::3]"),
            Some(("2001:db8::3".parse().unwrap(), None))
        );
    }

    #[test]
    fn body_bytes_reads_up_to_the_limit() {
        let body = b"0123456789";
        // Exactly the limit, announced or chunked.
        for length in [10, -1] {
            with_request("/", &[], length, body, "", |r| {
                assert_eq!(r.body_bytes(10).unwrap(), body);
            });
        }
        // Announced larger: refused before a byte is read.
        with_request("/", &[], 10, body, "", |r| {
            let e = r.body_bytes(9).unwrap_err();
            assert!(matches!(e, BodyError::TooLarge { limit: 9 }));
            assert!(e.to_string().contains("limit of 9 bytes"), "{e}");
            let mut rest = Vec::new();
            r.body().read_to_end(&mut rest).unwrap();
            assert_eq!(rest, body, "nothing was read");
        });
        // Chunked and larger: refused once past the limit.
        with_request("/", &[], -1, body, "", |r| {
            assert!(matches!(
                r.body_bytes(4).unwrap_err(),
                BodyError::TooLarge { limit: 4 }
            ));
            let e: io::Error = BodyError::TooLarge { limit: 4 }.into();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        });
        with_request("/", &[], 0, b"", "", |r| {
            assert!(r.body_bytes(0).unwrap().is_empty());
        });
    }
}
