//! The access-log line of a request the worker refused before the app.
//!
//! A request refused while it is staged (400 for a bad head, 413, 414,
//! 431, 505) or timed out half-received (408) never reaches the app, so the
//! caller that logs answered requests ([`crate::worker::call`]) never sees
//! it. Gunicorn logs such requests, and an operator looking for an attack
//! or a broken client needs them: the event loop logs each here, with its
//! status and what is known of it. The request line is taken from the
//! bytes received only when it is complete, within `--limit-request-line`,
//! and well-formed; otherwise it is unknown and written `-`. Headers are
//! not looked at (the head may be what was wrong), nor forwarding headers:
//! the remote address is the peer's.

use crate::{
    http::{date::DateCache, response},
    report::access_log::{AccessEntry, AccessFormat, AccessLogTarget},
    worker::conn::peer_ip,
};

/// The parts of a request line: method, target, version.
type RequestLine<'a> = (&'a [u8], &'a [u8], &'a str);

/// The request line at the start of `input`, if it is complete, at most
/// `max_len` bytes, and reads as `METHOD SP target SP HTTP/1.x`.
pub fn request_line(input: &[u8], max_len: usize) -> Option<RequestLine<'_>> {
    let window = &input[..input.len().min(max_len.saturating_add(2))];
    let end = window.iter().position(|&b| b == b'\n')?;
    let line = window[..end].strip_suffix(b"\r").unwrap_or(&window[..end]);
    if line.len() > max_len {
        return None;
    }
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let method_ok = !method.is_empty()
        && method
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let target_ok = !target.is_empty() && target.iter().all(|&b| b.is_ascii_graphic());
    let version = match version {
        b"HTTP/1.0" => "HTTP/1.0",
        b"HTTP/1.1" => "HTTP/1.1",
        _ => return None,
    };
    (parts.next().is_none() && method_ok && target_ok).then_some((method, target, version))
}

/// A request refused before the app: what arrived of it, from whom, and
/// the status it was refused with.
pub struct Refusal<'a> {
    /// The bytes received of the request (and maybe what followed).
    pub input: &'a [u8],
    /// The peer as `ip:port` (empty for Unix sockets).
    pub peer: &'a str,
    /// The status it was refused with.
    pub status: u16,
    /// `--limit-request-line`.
    pub max_line: usize,
}

impl Refusal<'_> {
    /// Writes its line in `format` to `target`, dated `date`.
    pub fn log(&self, format: &AccessFormat, target: &AccessLogTarget, date: &DateCache) {
        let (method, request_target, version) =
            request_line(self.input, self.max_line).unwrap_or((b"", b"", ""));
        let (path, query) = match request_target.iter().position(|&b| b == b'?') {
            Some(q) => (&request_target[..q], &request_target[q + 1..]),
            None => (request_target, &b""[..]),
        };
        let no_header = |_: &str| None;
        // Rare (a bad or abandoned request): a buffer of its own.
        let mut line = Vec::new();
        format.write(
            &mut line,
            &AccessEntry {
                remote: peer_ip(self.peer),
                method,
                target: request_target,
                path,
                query,
                version,
                status: self.status,
                // The body of the host's own error response (see `write_error`).
                bytes: response::reason(self.status).len() as u64 + 1,
                micros: 0,
                request_id: "",
                request_header: &no_header,
                response_headers: b"",
                clf_time: date.clf(),
                iso_time: date.iso(),
            },
        );
        target.write_line(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::request_line;

    #[test]
    fn a_request_line_is_taken_only_whole_and_well_formed() {
        let get: &[u8] = b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            request_line(get, 100),
            Some((&b"GET"[..], &b"/a?b"[..], "HTTP/1.1"))
        );
        assert_eq!(
            request_line(b"GET / HTTP/1.0\nbare lf", 100),
            Some((&b"GET"[..], &b"/"[..], "HTTP/1.0"))
        );
        for bad in [
            &b"GET / HTTP/1.1"[..],       // incomplete
            b"\x01\x02 nonsense\r\n\r\n", // not a request line
            b"GET  / HTTP/1.1\r\n",       // two spaces
            b"GET / HTTP/2.0\r\n",        // another version
            b"GET /a b HTTP/1.1\r\n",     // four parts
            b"G\"T / HTTP/1.1\r\n",       // not a token
            b"GET /\x7f HTTP/1.1\r\n",    // a control in the target
        ] {
            assert_eq!(request_line(bad, 100), None, "{bad:?}");
        }
        // Over the limit: not taken apart, however long the rest.
        let long = format!("GET /{} HTTP/1.1\r\n", "t".repeat(200));
        assert_eq!(request_line(long.as_bytes(), 100), None);
        let exact = b"GET /12 HTTP/1.1\r\n";
        assert!(request_line(exact, exact.len() - 2).is_some());
        assert!(request_line(exact, exact.len() - 3).is_none());
    }
}
