//! Request heads: bytes → [`RequestHead`] or [`ParseError`], every framing rule in one place.
//!
//! `httparse` tokenises the request line and the fields; this module adds what
//! a server facing the internet must decide itself (RFC 9112): size limits
//! while the head is still arriving, bare LF, the version (505 for a
//! well-formed but unsupported one), the target's form, Host, and above all
//! the body's framing: Content-Length against Transfer-Encoding, duplicates,
//! lists, unknown codings; and singleton fields sent twice
//! ([`SINGLETON_FIELDS`]). Whatever this accepts is safe to frame; whatever it
//! refuses closes the connection. The result is kept as [`Span`]s into the
//! buffer, so the same bytes are handed to the app without copying.
//!
//! Every field name is classified once, by its length first (one jump) and
//! then by at most two comparisons, so the checks cost little per field.

use std::mem::MaybeUninit;

use app_sdk::abi::{HeaderSpan, Span};

/// Longest request line by default (Gunicorn's), else 414.
pub const DEFAULT_MAX_REQUEST_LINE: usize = 8190;
/// Most header fields by default, else 431.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Most header fields a request may be configured to allow.
pub const MAX_HEADERS_CAP: usize = 256;
/// Longest header field line by default, else 431.
pub const DEFAULT_MAX_FIELD_SIZE: usize = 8190;
/// Largest request body by default (1 GiB), else 413.
pub const DEFAULT_MAX_BODY: u64 = 1 << 30;
/// Most decimal digits in a Content-Length (19 always fit a u64).
const MAX_LENGTH_DIGITS: usize = 19;

/// Request fields that may appear only once; a second line is refused with 400.
///
/// RFC 9110 §5.3: a field whose value is one item, not a list, cannot be
/// combined with a repeat of itself, so two lines leave the request ambiguous:
/// the host, a proxy in front and the app could each act on a different one
/// (which credentials, which content type, which range). These are the
/// singleton request fields of RFC 9110 (and `Origin`, RFC 6454 §7.3, which
/// CSRF checks read); `Host` and `Content-Length` have their own rules (RFC
/// 9112 §3.2, §6.3) and are refused when repeated too, even with the same
/// value. Fields that only responses carry (`Age`, `ETag`, `Location`…) are
/// left out: nothing acts on them in a request. `Cookie` is left out although
/// RFC 6265 §5.4 makes it a singleton: HTTP/2 splits it into several fields,
/// and gateways to HTTP/1.1 pass them on.
pub const SINGLETON_FIELDS: [&str; 17] = [
    "Host",
    "Content-Length",
    "Content-Type",
    "Content-Location",
    "Content-Range",
    "Authorization",
    "Proxy-Authorization",
    "Date",
    "From",
    "Referer",
    "User-Agent",
    "Origin",
    "Max-Forwards",
    "Range",
    "If-Range",
    "If-Modified-Since",
    "If-Unmodified-Since",
];

/// Size limits on requests.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest request line, in bytes.
    pub max_request_line: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Longest header field line (`name: value`), in bytes.
    pub max_field_size: usize,
    /// Largest body, in bytes.
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: DEFAULT_MAX_REQUEST_LINE,
            max_headers: DEFAULT_MAX_HEADERS,
            max_field_size: DEFAULT_MAX_FIELD_SIZE,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// No body.
    #[default]
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head; every span points into the buffer given to [`parse_head`].
#[derive(Debug, Default)]
pub struct RequestHead {
    /// The method token.
    pub method: Span,
    /// The request-target as received.
    pub target: Span,
    /// The target's path (before `?`).
    pub path: Span,
    /// The target's query (after `?`); empty when absent.
    pub query: Span,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub version_minor: u8,
    /// Header fields in received order.
    pub headers: Vec<HeaderSpan>,
    /// The body's framing.
    pub framing: Framing,
    /// Whether the client allows the connection to stay open.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on a request with a body.
    pub expect_continue: bool,
    /// The method is HEAD.
    pub is_head: bool,
    /// It has a `Forwarded`, `X-Forwarded-For` or `X-Forwarded-Proto`
    /// header (worth reading only from a trusted proxy).
    pub forwarded: bool,
    /// It asks to switch protocols: `Connection: upgrade` and an `Upgrade`
    /// header (a WebSocket handshake is checked further by
    /// [`crate::websocket::handshake`]).
    pub upgrade: bool,
    /// The `Sec-WebSocket-Key` of a valid WebSocket handshake (empty when
    /// it is none): set by [`crate::worker::stage::stage`], not the parser.
    pub websocket_key: Span,
    /// Bytes of the head, from the buffer's start to the end of the empty line.
    pub head_len: usize,
}

/// Whether a head is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The head is complete and valid; see [`RequestHead`].
    Complete,
    /// More bytes are needed.
    Partial,
}

/// Why a head was refused; [`ParseError::status`] is the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// 400, with the reason.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// 414: the request line is too long.
    #[error("request line too long")]
    UriTooLong,
    /// 431: too many header fields, or one too large.
    #[error("header fields too large")]
    HeadersTooLarge,
    /// 413: Content-Length over the body limit.
    #[error("body larger than the limit")]
    PayloadTooLarge,
    /// 501: a transfer coding other than chunked.
    #[error("unsupported transfer coding")]
    NotImplemented,
    /// 505: a well-formed HTTP version other than 1.0 and 1.1.
    #[error("unsupported HTTP version")]
    VersionNotSupported,
}

impl ParseError {
    /// The response status for this error.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::BadRequest(_) => 400,
            ParseError::UriTooLong => 414,
            ParseError::HeadersTooLarge => 431,
            ParseError::PayloadTooLarge => 413,
            ParseError::NotImplemented => 501,
            ParseError::VersionNotSupported => 505,
        }
    }
}

/// Parses the head at the start of `buf` into `head`.
///
/// Limits are enforced on incomplete heads too, so a client cannot make the
/// worker buffer more than a head's worth of bytes.
pub fn parse_head(
    buf: &[u8],
    limits: &Limits,
    head: &mut RequestHead,
) -> Result<Parsed, ParseError> {
    // RFC 9112 §2.2: empty lines before the request line are ignored.
    let skip = buf.chunks(2).take_while(|pair| *pair == b"\r\n").count() * 2;
    let rest = &buf[skip..];
    let line_end = memchr::memchr(b'\n', rest);
    match line_end {
        None if rest.len() > limits.max_request_line + 1 => return Err(ParseError::UriTooLong),
        None => return Ok(Parsed::Partial),
        Some(end) => {
            let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
            if line.len() > limits.max_request_line {
                return Err(ParseError::UriTooLong);
            }
            check_version(line)?;
        }
    }

    let mut storage: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_CAP] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(
        rest,
        &mut storage[..limits.max_headers.clamp(1, MAX_HEADERS_CAP)],
    );
    let len = match status {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            check_partial(rest, limits)?;
            return Ok(Parsed::Partial);
        }
        Err(e) => {
            return Err(match e {
                httparse::Error::TooManyHeaders => ParseError::HeadersTooLarge,
                httparse::Error::HeaderName => ParseError::BadRequest("invalid header name"),
                httparse::Error::HeaderValue => ParseError::BadRequest("invalid header value"),
                httparse::Error::NewLine => ParseError::BadRequest("invalid line ending"),
                httparse::Error::Token => ParseError::BadRequest("invalid method or target"),
                httparse::Error::Version => ParseError::BadRequest("invalid HTTP version"),
                httparse::Error::Status => ParseError::BadRequest("invalid request line"),
            })
        }
    };
    let head_bytes = &rest[..len];
    if has_bare_lf(head_bytes) {
        return Err(ParseError::BadRequest("line ending without CR"));
    }

    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    head.version_minor = req.version.unwrap_or(1);
    head.method = Span::of(buf, method.as_bytes());
    head.target = Span::of(buf, target.as_bytes());
    head.is_head = method == "HEAD";
    head.head_len = skip + len;
    split_target(buf, method, target, head)?;

    head.headers.clear();
    let mut singletons_seen = 0u32;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut has_te = false;
    let mut hosts = 0;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    let mut forwarded = false;
    let (mut connection_upgrade, mut upgrade_field) = (false, false);
    for h in req.headers.iter() {
        if h.name.len() + 2 + h.value.len() > limits.max_field_size {
            return Err(ParseError::HeadersTooLarge);
        }
        head.headers.push(HeaderSpan {
            name: Span::of(buf, h.name.as_bytes()),
            value: Span::of(buf, h.value),
        });
        match Field::of(h.name.as_bytes()) {
            Field::Other => {}
            Field::Singleton(s) => {
                if singletons_seen & s.bit() != 0 {
                    return Err(ParseError::BadRequest(s.repeated()));
                }
                singletons_seen |= s.bit();
            }
            Field::ContentLength => {
                if content_length.is_some() {
                    return Err(ParseError::BadRequest("more than one Content-Length"));
                }
                content_length = Some(parse_length(h.value)?);
            }
            Field::TransferEncoding => {
                has_te = true;
                for coding in list(h.value) {
                    if coding.is_empty() {
                        return Err(ParseError::BadRequest("empty transfer coding"));
                    }
                    if !coding.eq_ignore_ascii_case(b"chunked") {
                        return Err(ParseError::NotImplemented);
                    }
                    if chunked {
                        return Err(ParseError::BadRequest("chunked applied twice"));
                    }
                    chunked = true;
                }
            }
            Field::Host => hosts += 1,
            Field::Connection => {
                for token in list(h.value) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                    connection_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                }
            }
            Field::Expect => {
                expect_continue |= h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            }
            Field::Forwarded => forwarded = true,
            Field::Upgrade => upgrade_field = true,
        }
    }

    if has_te && head.version_minor == 0 {
        return Err(ParseError::BadRequest(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    if has_te && !chunked {
        return Err(ParseError::BadRequest("empty Transfer-Encoding"));
    }
    if has_te && content_length.is_some() {
        return Err(ParseError::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if head.version_minor == 1 && hosts != 1 {
        return Err(ParseError::BadRequest(if hosts == 0 {
            "missing Host"
        } else {
            "more than one Host"
        }));
    }
    if hosts > 1 {
        return Err(ParseError::BadRequest("more than one Host"));
    }
    head.framing = match (chunked, content_length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) if n > limits.max_body => return Err(ParseError::PayloadTooLarge),
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::None,
    };
    // A CONNECT answered yes would make the rest of the connection a
    // tunnel, which the host does not run: whatever the answer, the
    // connection closes after it, so bytes meant for the tunnel are never
    // read as the next request.
    head.keep_alive = method != "CONNECT"
        && if head.version_minor == 0 {
            keep_alive_token && !close
        } else {
            !close
        };
    let has_body = !matches!(head.framing, Framing::None | Framing::Length(0));
    head.expect_continue = expect_continue && has_body && head.version_minor == 1;
    head.forwarded = forwarded;
    head.upgrade = connection_upgrade && upgrade_field;
    head.websocket_key = Span::default();
    Ok(Parsed::Complete)
}

/// What a field name means to the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// `Content-Length`.
    ContentLength,
    /// `Transfer-Encoding`.
    TransferEncoding,
    /// `Host`.
    Host,
    /// `Connection`.
    Connection,
    /// `Expect`.
    Expect,
    /// `Upgrade`.
    Upgrade,
    /// One of [`crate::http::forwarded::HEADERS`].
    Forwarded,
    /// A field that may appear once (the rest of [`SINGLETON_FIELDS`]).
    Singleton(Singleton),
    /// Any other field: passed to the app as it is.
    Other,
}

impl Field {
    /// Classifies `name` (any case): by length first, a jump, then at most
    /// two comparisons of names of that length.
    #[inline]
    fn of(name: &[u8]) -> Field {
        use Singleton::*;
        let is = |lower: &[u8]| name.eq_ignore_ascii_case(lower);
        match name.len() {
            4 if is(b"host") => Field::Host,
            4 if is(b"date") => Field::Singleton(Date),
            4 if is(b"from") => Field::Singleton(From),
            5 if is(b"range") => Field::Singleton(Range),
            6 if is(b"expect") => Field::Expect,
            6 if is(b"origin") => Field::Singleton(Origin),
            7 if is(b"referer") => Field::Singleton(Referer),
            7 if is(b"upgrade") => Field::Upgrade,
            8 if is(b"if-range") => Field::Singleton(IfRange),
            10 if is(b"connection") => Field::Connection,
            10 if is(b"user-agent") => Field::Singleton(UserAgent),
            12 if is(b"content-type") => Field::Singleton(ContentType),
            12 if is(b"max-forwards") => Field::Singleton(MaxForwards),
            13 if is(b"authorization") => Field::Singleton(Authorization),
            13 if is(b"content-range") => Field::Singleton(ContentRange),
            14 if is(b"content-length") => Field::ContentLength,
            16 if is(b"content-location") => Field::Singleton(ContentLocation),
            17 if is(b"transfer-encoding") => Field::TransferEncoding,
            17 if is(b"if-modified-since") => Field::Singleton(IfModifiedSince),
            19 if is(b"if-unmodified-since") => Field::Singleton(IfUnmodifiedSince),
            19 if is(b"proxy-authorization") => Field::Singleton(ProxyAuthorization),
            len if crate::http::forwarded::HEADERS
                .iter()
                .any(|h| h.len() == len && is(h)) =>
            {
                Field::Forwarded
            }
            _ => Field::Other,
        }
    }
}

/// The singleton fields without rules of their own (see [`SINGLETON_FIELDS`]),
/// one bit each in the set of those seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Singleton {
    ContentType,
    ContentLocation,
    ContentRange,
    Authorization,
    ProxyAuthorization,
    Date,
    From,
    Referer,
    UserAgent,
    Origin,
    MaxForwards,
    Range,
    IfRange,
    IfModifiedSince,
    IfUnmodifiedSince,
}

impl Singleton {
    /// Its bit in the set of singletons seen.
    fn bit(self) -> u32 {
        1 << self as u32
    }

    /// The reason a request that repeats it is refused.
    fn repeated(self) -> &'static str {
        match self {
            Singleton::ContentType => "more than one Content-Type",
            Singleton::ContentLocation => "more than one Content-Location",
            Singleton::ContentRange => "more than one Content-Range",
            Singleton::Authorization => "more than one Authorization",
            Singleton::ProxyAuthorization => "more than one Proxy-Authorization",
            Singleton::Date => "more than one Date",
            Singleton::From => "more than one From",
            Singleton::Referer => "more than one Referer",
            Singleton::UserAgent => "more than one User-Agent",
            Singleton::Origin => "more than one Origin",
            Singleton::MaxForwards => "more than one Max-Forwards",
            Singleton::Range => "more than one Range",
            Singleton::IfRange => "more than one If-Range",
            Singleton::IfModifiedSince => "more than one If-Modified-Since",
            Singleton::IfUnmodifiedSince => "more than one If-Unmodified-Since",
        }
    }
}

/// 505 for a well-formed version other than 1.0/1.1; other bad versions are
/// left to httparse (400).
fn check_version(line: &[u8]) -> Result<(), ParseError> {
    let Some(space) = line.iter().rposition(|&b| b == b' ') else {
        return Ok(());
    };
    let version = &line[space + 1..];
    let well_formed = version.len() == 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit();
    if well_formed && version != b"HTTP/1.0" && version != b"HTTP/1.1" {
        return Err(ParseError::VersionNotSupported);
    }
    Ok(())
}

/// Limits on a head that has not ended yet.
fn check_partial(rest: &[u8], limits: &Limits) -> Result<(), ParseError> {
    let max_head = limits.max_request_line
        + 2
        + limits.max_headers.saturating_mul(limits.max_field_size + 2)
        + 2;
    if rest.len() > max_head {
        return Err(ParseError::HeadersTooLarge);
    }
    // The line being received must not already be longer than a field may be.
    let line_start = rest.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    if line_start > 0 && rest.len() - line_start > limits.max_field_size + 2 {
        return Err(ParseError::HeadersTooLarge);
    }
    Ok(())
}

/// Whether any LF in the head lacks its CR.
fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// Sets `path` and `query` from the target, checking its form (RFC 9112 §3.2).
fn split_target(
    buf: &[u8],
    method: &str,
    target: &str,
    head: &mut RequestHead,
) -> Result<(), ParseError> {
    let bytes = target.as_bytes();
    if bytes.is_empty() || !bytes.is_ascii() {
        return Err(ParseError::BadRequest("invalid request target"));
    }
    let path_and_query: &[u8] = if bytes[0] == b'/' || (method == "OPTIONS" && bytes == b"*") {
        bytes // origin-form, or asterisk-form
    } else if method == "CONNECT" {
        if !bytes.contains(&b':') {
            return Err(ParseError::BadRequest("CONNECT needs host:port"));
        }
        &bytes[bytes.len()..] // authority-form: no path
    } else if let Some(scheme_end) = find(bytes, b"://") {
        // absolute-form: the path starts at the first '/' after the authority
        let after = &bytes[scheme_end + 3..];
        match after.iter().position(|&b| b == b'/' || b == b'?') {
            Some(p) => &after[p..],
            None => &after[after.len()..],
        }
    } else {
        return Err(ParseError::BadRequest("invalid request target"));
    };
    match path_and_query.iter().position(|&b| b == b'?') {
        Some(q) => {
            head.path = Span::of(buf, &path_and_query[..q]);
            head.query = Span::of(buf, &path_and_query[q + 1..]);
        }
        None => {
            head.path = Span::of(buf, path_and_query);
            head.query = Span::of(buf, &path_and_query[path_and_query.len()..]);
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The elements of a comma-separated field value, trimmed of whitespace.
pub fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// A Content-Length value: 1 to 19 digits, nothing else (no sign, no list).
fn parse_length(value: &[u8]) -> Result<u64, ParseError> {
    let digits = value.trim_ascii();
    if digits.is_empty()
        || digits.len() > MAX_LENGTH_DIGITS
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return Err(ParseError::BadRequest("invalid Content-Length"));
    }
    digits
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(ParseError::BadRequest("invalid Content-Length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<(Parsed, RequestHead), ParseError> {
        let mut head = RequestHead::default();
        parse_head(input, &Limits::default(), &mut head).map(|p| (p, head))
    }

    fn complete(input: &[u8]) -> RequestHead {
        match parse(input) {
            Ok((Parsed::Complete, head)) => head,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn text(input: &[u8], span: Span) -> &str {
        std::str::from_utf8(span.get(input)).unwrap()
    }

    #[test]
    fn notes_forwarding_headers_in_any_case() {
        assert!(!complete(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded: no\r\n\r\n").forwarded);
        for name in ["Forwarded", "x-forwarded-for", "X-FORWARDED-PROTO"] {
            let input = format!("GET / HTTP/1.1\r\nHost: a\r\n{name}: x\r\n\r\n");
            assert!(complete(input.as_bytes()).forwarded, "{name}");
        }
    }

    #[test]
    fn simple_get() {
        let input = b"GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com\r\nX-Case: V\r\n\r\nnext";
        let head = complete(input);
        assert_eq!(text(input, head.method), "GET");
        assert_eq!(text(input, head.target), "/a/b?x=1&y");
        assert_eq!(text(input, head.path), "/a/b");
        assert_eq!(text(input, head.query), "x=1&y");
        assert_eq!(head.version_minor, 1);
        assert_eq!(head.headers.len(), 2);
        assert_eq!(text(input, head.headers[1].name), "X-Case");
        assert_eq!(text(input, head.headers[1].value), "V");
        assert_eq!(head.framing, Framing::None);
        assert!(head.keep_alive);
        assert_eq!(&input[head.head_len..], b"next");
    }

    #[test]
    fn partial_heads_wait() {
        for input in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n"[..],
            b"GET /",
            b"",
            b"\r\n",
        ] {
            assert!(
                matches!(parse(input), Ok((Parsed::Partial, _))),
                "{input:?}"
            );
        }
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let input = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let head = complete(input);
        assert_eq!(text(input, head.method), "GET");
        assert_eq!(head.head_len, input.len());
    }

    #[test]
    fn keep_alive_rules() {
        let cases: &[(&[u8], bool)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                false,
            ),
            (
                b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
                false,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                complete(input).keep_alive,
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn framing_rules() {
        let ok: &[(&[u8], Framing)] = &[
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
                Framing::Length(5),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                Framing::Length(0),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
                Framing::Chunked,
            ),
            (
                b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n",
                Framing::Length(3),
            ),
        ];
        for (input, want) in ok {
            assert_eq!(
                complete(input).framing,
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn refusals() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        let long_header = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let many_headers = format!(
            "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
            (0..101)
                .map(|i| format!("X-{i}: v\r\n"))
                .collect::<String>()
        );
        let cases: Vec<(&[u8], u16)> = vec![
            (b"garbage\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/x\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\nHost: a\n\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000000\r\n\r\n", 413),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (long_target.as_bytes(), 414),
            (long_header.as_bytes(), 431),
            (many_headers.as_bytes(), 431),
        ];
        for (input, want) in cases {
            let got = parse(input).map(|(p, _)| p);
            assert_eq!(
                got.map_err(|e| e.status()),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(&input[..input.len().min(80)])
            );
        }
    }

    #[test]
    fn repeated_singletons_are_refused() {
        for field in SINGLETON_FIELDS {
            // The Host line is the field's own first line when it is Host;
            // `0` is a value every one of them parses (Content-Length too).
            let host = if field == "Host" { "" } else { "Host: a\r\n" };
            for second in [field.to_owned(), field.to_ascii_lowercase()] {
                let input = format!(
                    "POST / HTTP/1.1\r\n{host}{field}: 0\r\nX: between\r\n{second}: 0\r\n\r\n"
                );
                let refused = parse(input.as_bytes()).map(|(p, _)| p);
                let want = format!("more than one {field}");
                assert!(
                    matches!(refused, Err(ParseError::BadRequest(why)) if why == want),
                    "{second}: {refused:?}"
                );
            }
            // Once is fine.
            complete(format!("GET / HTTP/1.1\r\n{host}{field}: 0\r\n\r\n").as_bytes());
        }
    }

    #[test]
    fn list_fields_may_repeat() {
        for field in [
            "Accept",
            "Cache-Control",
            "Cookie",
            "X-Custom",
            "Forwarded",
            "Via",
        ] {
            let input = format!("GET / HTTP/1.1\r\nHost: a\r\n{field}: 1\r\n{field}: 2\r\n\r\n");
            assert_eq!(complete(input.as_bytes()).headers.len(), 3, "{field}");
        }
    }

    #[test]
    fn every_field_name_is_classified_as_before() {
        let cases: &[(&[u8], Field)] = &[
            (b"Content-Length", Field::ContentLength),
            (b"TRANSFER-ENCODING", Field::TransferEncoding),
            (b"host", Field::Host),
            (b"Connection", Field::Connection),
            (b"Expect", Field::Expect),
            (b"Forwarded", Field::Forwarded),
            (b"X-Forwarded-For", Field::Forwarded),
            (b"x-forwarded-proto", Field::Forwarded),
            (b"User-Agent", Field::Singleton(Singleton::UserAgent)),
            (
                b"if-modified-since",
                Field::Singleton(Singleton::IfModifiedSince),
            ),
            (b"Hosts", Field::Other),
            (b"Hos", Field::Other),
            (b"X-Forwarded-Host", Field::Other),
            (b"Accept", Field::Other),
            (b"", Field::Other),
        ];
        for (name, want) in cases {
            assert_eq!(Field::of(name), *want, "{}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn limits_apply_before_the_head_ends() {
        let endless_line = vec![b'a'; 9000];
        assert_eq!(parse(&endless_line).err(), Some(ParseError::UriTooLong));
        let mut endless_header = b"GET / HTTP/1.1\r\nX: ".to_vec();
        endless_header.extend(vec![b'a'; 9000]);
        assert_eq!(
            parse(&endless_header).err(),
            Some(ParseError::HeadersTooLarge)
        );
    }

    #[test]
    fn target_forms() {
        let input = b"GET http://example.com/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n";
        let head = complete(input);
        assert_eq!(text(input, head.path), "/p");
        assert_eq!(text(input, head.query), "q");
        let input = b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(text(input, complete(input).path), "*");
        let input = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
        assert_eq!(text(input, complete(input).path), "");
    }

    #[test]
    fn expect_continue_only_with_a_body() {
        let with =
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        assert!(complete(with).expect_continue);
        let without = b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n";
        assert!(!complete(without).expect_continue);
    }

    #[test]
    fn head_method() {
        assert!(complete(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").is_head);
        assert!(!complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").is_head);
    }
}
