//! TEMPORARY minimal parser (to be replaced).
use app_sdk::abi::{HeaderSpan, Span};
pub const DEFAULT_MAX_REQUEST_LINE: usize = 8190;
pub const DEFAULT_MAX_HEADERS: usize = 100;
pub const MAX_HEADERS_CAP: usize = 256;
pub const DEFAULT_MAX_FIELD_SIZE: usize = 8190;
pub const DEFAULT_MAX_BODY: u64 = 1 << 30;
#[derive(Debug, Clone)]
pub struct Limits { pub max_request_line: usize, pub max_headers: usize, pub max_field_size: usize, pub max_body: u64 }
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing { #[default] None, Length(u64), Chunked }
#[derive(Debug, Default)]
pub struct RequestHead {
    pub method: Span, pub target: Span, pub path: Span, pub query: Span,
    pub version_minor: u8, pub headers: Vec<HeaderSpan>, pub framing: Framing,
    pub keep_alive: bool, pub expect_continue: bool, pub is_head: bool, pub head_len: usize,
}
pub enum Parsed { Complete, Partial }
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError { #[error("bad request: {0}")] BadRequest(&'static str) }
impl ParseError { pub fn status(&self) -> u16 { 400 } }
pub fn parse_head(buf: &[u8], _limits: &Limits, head: &mut RequestHead) -> Result<Parsed, ParseError> {
    let mut hs = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut hs);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(Parsed::Partial),
        Err(_) => Err(ParseError::BadRequest("x")),
        Ok(httparse::Status::Complete(n)) => {
            head.head_len = n;
            head.method = Span::of(buf, req.method.unwrap_or("").as_bytes());
            let t = req.path.unwrap_or("");
            head.target = Span::of(buf, t.as_bytes());
            head.path = head.target; head.query = Span::default();
            if let Some(q) = t.find('?') { head.path = Span::of(buf, &t.as_bytes()[..q]); head.query = Span::of(buf, &t.as_bytes()[q+1..]); }
            head.version_minor = req.version.unwrap_or(1);
            head.headers.clear();
            head.framing = Framing::None; head.keep_alive = head.version_minor == 1; head.expect_continue = false;
            head.is_head = req.method == Some("HEAD");
            for h in req.headers.iter() {
                head.headers.push(HeaderSpan { name: Span::of(buf, h.name.as_bytes()), value: Span::of(buf, h.value) });
                if h.name.eq_ignore_ascii_case("content-length") { head.framing = Framing::Length(std::str::from_utf8(h.value).ok().and_then(|v| v.parse().ok()).unwrap_or(0)); }
                if h.name.eq_ignore_ascii_case("transfer-encoding") { head.framing = Framing::Chunked; }
                if h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close") { head.keep_alive = false; }
            }
            Ok(Parsed::Complete)
        }
    }
}
