//! The WebSocket opening handshake (RFC 6455 §4): checking a client's
//! before the app sees it, and the key the server's `101` proves it with.
//!
//! A request asks for WebSocket when it says `Connection: upgrade` and
//! lists `websocket` in `Upgrade`. Such a request must be a `GET` over
//! HTTP/1.1 with `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key` of
//! 16 bytes in base64; one that is not is refused here, with `426` and the
//! version the host speaks for a wrong version, `400` for the rest, and
//! never reaches the app.

use app_sdk::abi::Span;

use crate::http::parse::{self, RequestHead};

/// The protocol version the host speaks (`Sec-WebSocket-Version`).
pub const VERSION: &str = "13";

/// The header a `426` names the supported version with.
pub const VERSION_HEADER: &[u8] = b"Sec-WebSocket-Version: 13\r\n";

/// The GUID RFC 6455 §1.3 appends to a key before hashing it.
const KEY_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What a request's head comes to as a WebSocket handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// It does not ask for WebSocket (it may ask for another protocol).
    NotAsked,
    /// A valid handshake; its key lies at this span of the head.
    Valid(Span),
    /// It asks for WebSocket but is not a valid handshake: refuse it with
    /// this status (`426` carries [`VERSION_HEADER`]).
    Refused(u16, &'static str),
}

/// Whether a comma-separated list holds `token` (any case).
fn lists(value: &[u8], token: &[u8]) -> bool {
    parse::list(value).any(|t| t.eq_ignore_ascii_case(token))
}

/// Checks the head of a request (`bytes` is the head, which the spans of
/// `head` point into) as a WebSocket handshake.
pub fn check(head: &RequestHead, bytes: &[u8]) -> Checked {
    if !head.upgrade {
        return Checked::NotAsked;
    }
    let values = |name: &'static [u8]| {
        head.headers
            .iter()
            .filter(move |h| h.name.get(bytes).eq_ignore_ascii_case(name))
            .map(move |h| h.value.get(bytes))
    };
    if !values(b"upgrade").any(|v| lists(v, b"websocket")) {
        return Checked::NotAsked;
    }
    if head.method.get(bytes) != b"GET" {
        return Checked::Refused(400, "a WebSocket handshake must be a GET");
    }
    if head.version_minor == 0 {
        return Checked::Refused(400, "a WebSocket handshake needs HTTP/1.1");
    }
    let mut versions = values(b"sec-websocket-version");
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.trim_ascii() == VERSION.as_bytes() => {}
        _ => return Checked::Refused(426, "Sec-WebSocket-Version is not 13"),
    }
    let keys: Vec<_> = head
        .headers
        .iter()
        .filter(|h| h.name.get(bytes).eq_ignore_ascii_case(b"sec-websocket-key"))
        .collect();
    let [key] = keys.as_slice() else {
        return Checked::Refused(400, "not exactly one Sec-WebSocket-Key");
    };
    match data_encoding::BASE64.decode(key.value.get(bytes)) {
        Ok(raw) if raw.len() == 16 => Checked::Valid(key.value),
        _ => Checked::Refused(400, "Sec-WebSocket-Key is not 16 bytes in base64"),
    }
}

/// The `Sec-WebSocket-Accept` value for a client's key: the base64 of the
/// SHA-1 of the key and the protocol's GUID.
pub fn accept_key(key: &[u8]) -> String {
    let mut input = Vec::with_capacity(key.len() + KEY_GUID.len());
    input.extend_from_slice(key);
    input.extend_from_slice(KEY_GUID);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    data_encoding::BASE64.encode(digest.as_ref())
}

/// Whether `protocol` can name a subprotocol: a non-empty HTTP token.
pub fn valid_protocol(protocol: &[u8]) -> bool {
    !protocol.is_empty() && crate::http::token::is_token(protocol)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::{parse_head, Limits, Parsed};

    fn checked(request: &str) -> Checked {
        let mut head = RequestHead::default();
        let parsed = parse_head(request.as_bytes(), &Limits::default(), &mut head);
        assert_eq!(parsed, Ok(Parsed::Complete), "{request:?}");
        check(&head, request.as_bytes())
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn the_rfc_example_key_is_answered_as_the_rfc_says() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(KEY.as_bytes()),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_string()
        );
    }

    #[test]
    fn handshakes_are_sorted_before_the_app() {
        let ok = format!(
            "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
        );
        assert!(matches!(checked(&ok), Checked::Valid(_)));
        let cases = [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_string(), None),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n".into(),
                None,
            ),
            (
                // Upgrade without `Connection: upgrade` asks for nothing.
                format!("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"),
                None,
            ),
            (ok.replace("Version: 13", "Version: 8"), Some(426)),
            (ok.replace("Sec-WebSocket-Version: 13\r\n", ""), Some(426)),
            (ok.replace(KEY, "c2hvcnQ="), Some(400)),
            (ok.replace(KEY, "not base64!"), Some(400)),
            (ok.replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""), Some(400)),
            (ok.replace("GET", "POST"), Some(400)),
        ];
        for (request, status) in cases {
            let got = checked(&request);
            match status {
                None => assert_eq!(got, Checked::NotAsked, "{request:?}"),
                Some(s) => assert!(
                    matches!(got, Checked::Refused(code, _) if code == s),
                    "{request:?}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn repeated_fields_and_http_1_0_are_refused_and_subprotocols_are_tokens() {
        let ok = format!(
            "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
        );
        let key_line = format!("Sec-WebSocket-Key: {KEY}\r\n");
        let cases = [
            (ok.replace(&key_line, &format!("{key_line}{key_line}")), 400),
            (
                ok.replace(
                    "Sec-WebSocket-Version: 13\r\n",
                    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n",
                ),
                426,
            ),
            (ok.replace("HTTP/1.1", "HTTP/1.0"), 400),
            // 17 bytes.
            (ok.replace(KEY, "AQIDBAUGBwgJCgsMDQ4PEBE="), 400),
        ];
        for (request, status) in cases {
            let got = checked(&request);
            assert!(
                matches!(got, Checked::Refused(code, _) if code == status),
                "{request:?}: {got:?}"
            );
        }
        assert!(valid_protocol(b"chat.v1"));
        for bad in [&b""[..], b"two words", b"a,b", b"caf\xc3\xa9"] {
            assert!(!valid_protocol(bad), "{bad:?}");
        }
    }
}
