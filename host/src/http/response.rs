//! Writing response heads: status line, the host's headers, the app's, framing.
//!
//! The host writes the framing: `Content-Length` when the body's length is
//! known (the app's own `Content-Length`, or the length of a whole body),
//! chunked when a stream of unknown length goes to an HTTP/1.1 client,
//! close-delimited on HTTP/1.0. The app's framing headers never get here as
//! such: [`check_header`] sorts them out for the exchange, which honours a
//! `Content-Length` and refuses a `Transfer-Encoding`.

use super::token::is_token;

/// `host/<version>`, as a literal for `concat!`.
macro_rules! server {
    () => {
        concat!("host/", env!("CARGO_PKG_VERSION"))
    };
}

/// The `Server` header value.
pub const SERVER: &str = server!();
/// The whole `Server` header line.
const SERVER_LINE: &[u8] = concat!("Server: ", server!(), "\r\n").as_bytes();
/// The status line of almost every response, in one piece.
const OK_LINE: &[u8] = b"HTTP/1.1 200 OK\r\n";
/// Room for a head's fixed lines (status, `Server`, `Date`, framing,
/// `Connection`): reserved once, so the appends below never reallocate.
const HEAD_ROOM: usize = 160;

/// The interim response sent for `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The last chunk of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No length: the body ends when the connection closes (HTTP/1.0 streams).
    Close,
    /// No body and no length header (1xx, 204, 304).
    NoBody,
}

/// Everything that goes into a response head besides the app's headers.
pub struct Head<'a> {
    /// Status code.
    pub status: u16,
    /// Body framing.
    pub framing: Framing,
    /// Whether the connection closes after this response.
    pub close: bool,
    /// Whether to say `Connection: keep-alive` (HTTP/1.0 clients need it).
    pub announce_keep_alive: bool,
    /// The `Date` value, or `None` if the app set its own.
    pub date: Option<&'a str>,
    /// Whether to add the host's `Server` header (the app may set its own).
    pub server: bool,
    /// The app's header lines, each `Name: value\r\n`, already checked.
    pub app_headers: &'a [u8],
}

/// Appends the response head to `out`.
pub fn write_head(out: &mut Vec<u8>, head: &Head<'_>) {
    out.reserve(HEAD_ROOM + head.app_headers.len());
    if head.status == 200 {
        out.extend_from_slice(OK_LINE);
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(itoa::Buffer::new().format(head.status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason(head.status).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if head.server {
        out.extend_from_slice(SERVER_LINE);
    }
    if let Some(date) = head.date {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(date.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(head.app_headers);
    match head.framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Close | Framing::NoBody => {}
    }
    if head.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if head.announce_keep_alive {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether a response with this status carries no body at all (RFC 9110 §6.4.1).
pub fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Appends the size line of a chunk of `len` bytes: `<hex>\r\n`.
pub fn chunk_size_line(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends a complete error response (plain-text body naming the status).
pub fn write_error(out: &mut Vec<u8>, status: u16, date: &str, close: bool) {
    write_error_with(out, status, date, close, b"");
}

/// [`write_error`] with `extra` header lines (each ending in CRLF).
pub fn write_error_with(out: &mut Vec<u8>, status: u16, date: &str, close: bool, extra: &[u8]) {
    const CONTENT_TYPE: &[u8] = b"Content-Type: text/plain; charset=utf-8\r\n";
    let reason = reason(status);
    // The usual error (no extra lines) allocates nothing.
    let headers: std::borrow::Cow<'_, [u8]> = if extra.is_empty() {
        CONTENT_TYPE.into()
    } else {
        [CONTENT_TYPE, extra].concat().into()
    };
    let body_len = reason.len() + 1;
    write_head(
        out,
        &Head {
            status,
            framing: Framing::Length(body_len as u64),
            close,
            announce_keep_alive: false,
            date: Some(date),
            server: true,
            app_headers: &headers,
        },
    );
    out.extend_from_slice(reason.as_bytes());
    out.push(b'\n');
}

/// What the host does with a header the app adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCheck {
    /// Pass it on.
    Keep,
    /// `Content-Length` with a valid value: the exchange frames the body with it.
    ContentLength(u64),
    /// `Transfer-Encoding`: the host's alone (it chunks streams of unknown length).
    TransferEncoding,
    /// `Connection` listing only `close` and `keep-alive`; `close` asks the
    /// host to close after the response (the host writes the header).
    Connection {
        /// The value lists `close`.
        close: bool,
    },
    /// The app's own `Date`: the host leaves its own out.
    Date,
    /// The app's own `Server`: the host leaves its own out.
    Server,
    /// Not valid HTTP (bad name characters, CR/LF/NUL in the value), or a
    /// value the host cannot honour (a `Content-Length` that is not a
    /// number, a `Connection` option other than `close` or `keep-alive`).
    Invalid(&'static str),
}

/// Longest `Content-Length` value an app may give, in digits: more could
/// overflow a `u64` (19 digits always fit).
const MAX_LENGTH_DIGITS: usize = 19;

/// Classifies a header the app wants to add.
pub fn check_header(name: &[u8], value: &[u8]) -> HeaderCheck {
    if !is_token(name) {
        return HeaderCheck::Invalid("invalid header name");
    }
    // No early exit, so the compiler may vectorise the loop.
    let controls = value.iter().fold(false, |bad, &b| {
        bad | ((b < 0x20 && b != b'\t') | (b == 0x7f))
    });
    if controls {
        return HeaderCheck::Invalid("control character in header value");
    }
    // The names the host cares about differ in length: one comparison each.
    match name.len() {
        14 if name.eq_ignore_ascii_case(b"content-length") => content_length(value),
        17 if name.eq_ignore_ascii_case(b"transfer-encoding") => HeaderCheck::TransferEncoding,
        10 if name.eq_ignore_ascii_case(b"connection") => connection(value),
        4 if name.eq_ignore_ascii_case(b"date") => HeaderCheck::Date,
        6 if name.eq_ignore_ascii_case(b"server") => HeaderCheck::Server,
        _ => HeaderCheck::Keep,
    }
}

/// An app's `Content-Length` value: digits only (RFC 9110 §8.6), at most
/// [`MAX_LENGTH_DIGITS`] of them, surrounding blanks allowed.
fn content_length(value: &[u8]) -> HeaderCheck {
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
fn connection(value: &[u8]) -> HeaderCheck {
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

/// The reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_with_length() {
        let mut out = Vec::new();
        write_head(
            &mut out,
            &Head {
                status: 200,
                framing: Framing::Length(13),
                close: false,
                announce_keep_alive: false,
                date: Some("Tue, 24 Nov 2026 20:22:38 GMT"),
                server: true,
                app_headers: b"Content-Type: text/plain\r\n",
            },
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 200 OK\r\nServer: {SERVER}\r\nDate: Tue, 24 Nov 2026 20:22:38 GMT\r\n\
                 Content-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
            )
        );
    }

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        for (len, want) in [
            (0, "0\r\n"),
            (10, "a\r\n"),
            (255, "ff\r\n"),
            (4096, "1000\r\n"),
        ] {
            let mut out = Vec::new();
            chunk_size_line(&mut out, len);
            assert_eq!(out, want.as_bytes());
        }
    }

    #[test]
    fn header_checks() {
        assert_eq!(check_header(b"X-A", b"1"), HeaderCheck::Keep);
        assert_eq!(
            check_header(b"content-length", b" 12 "),
            HeaderCheck::ContentLength(12)
        );
        for bad in [
            &b""[..],
            b"-1",
            b"1,1",
            b"0x10",
            b"12a",
            b"99999999999999999999",
        ] {
            assert!(
                matches!(
                    check_header(b"Content-Length", bad),
                    HeaderCheck::Invalid(_)
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_header(b"Content-Length", b"9999999999999999999"),
            HeaderCheck::ContentLength(9_999_999_999_999_999_999)
        );
        assert_eq!(
            check_header(b"Connection", b"keep-alive"),
            HeaderCheck::Connection { close: false }
        );
        for bad in [&b"upgrade"[..], b"close, x-thing"] {
            assert!(matches!(
                check_header(b"Connection", bad),
                HeaderCheck::Invalid(_)
            ));
        }
        assert_eq!(
            check_header(b"Connection", b"keep-alive, Close"),
            HeaderCheck::Connection { close: true }
        );
        assert!(matches!(
            check_header(b"X A", b"1"),
            HeaderCheck::Invalid(_)
        ));
        assert!(matches!(
            check_header(b"X", b"a\r\nSet-Cookie: x"),
            HeaderCheck::Invalid(_)
        ));
        assert_eq!(check_header(b"X", b"tab\tok \x80"), HeaderCheck::Keep);
        for bad in [&b"a\x7fb"[..], b"\x01", b"a\0"] {
            assert!(matches!(check_header(b"X", bad), HeaderCheck::Invalid(_)));
        }
        assert!(matches!(check_header(b"", b"1"), HeaderCheck::Invalid(_)));
        assert_eq!(check_header(b"date", b"x"), HeaderCheck::Date);
        assert_eq!(check_header(b"SERVER", b"x"), HeaderCheck::Server);
        assert_eq!(
            check_header(b"Transfer-Encoding", b"x"),
            HeaderCheck::TransferEncoding
        );
        // Same lengths as names the host acts on, other names.
        assert_eq!(check_header(b"Content-Lengtx", b"1"), HeaderCheck::Keep);
        assert_eq!(check_header(b"Connectiox", b"close"), HeaderCheck::Keep);
    }

    #[test]
    fn error_response_is_complete() {
        let mut out = Vec::new();
        write_error(&mut out, 431, "d", true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nRequest Header Fields Too Large\n"));
    }
}
