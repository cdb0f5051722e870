//! Raw protocol upgrades (RFC 9110 §7.8): what a request offers to switch
//! to, and which protocol names an app may answer `101` with.
//!
//! The host runs WebSocket itself ([`crate::websocket`]); any other
//! protocol a client names in `Upgrade` is the app's to take, through
//! `Response::upgrade` ([`crate::worker::exchange::Exchange::upgrade`]).
//! The host only lets an app switch to a protocol the request offered: a
//! `101` the client did not ask for would leave it reading bytes it cannot
//! make sense of.

use app_sdk::abi::HeaderSpan;

use crate::http::{
    parse::{self, RequestHead},
    token::is_token,
};

/// The protocols a request offers to switch to: its `Upgrade` fields, when
/// it also said `Connection: upgrade`.
#[derive(Clone, Copy)]
pub struct Offer<'a> {
    bytes: &'a [u8],
    headers: &'a [HeaderSpan],
}

impl<'a> Offer<'a> {
    /// The offer of the request `head` (whose spans point into `bytes`):
    /// `None` when it asks for no upgrade, or is a WebSocket handshake
    /// (which the host answers itself).
    pub fn of(head: &'a RequestHead, bytes: &'a [u8]) -> Option<Offer<'a>> {
        (head.upgrade && head.websocket_key.len == 0).then_some(Offer {
            bytes,
            headers: &head.headers,
        })
    }

    /// Whether one of the `Upgrade` fields lists `protocol` (compared
    /// whole, version included, in any case: `h2c`, `echo/1`).
    pub fn lists(&self, protocol: &[u8]) -> bool {
        self.headers
            .iter()
            .filter(|h| h.name.get(self.bytes).eq_ignore_ascii_case(b"upgrade"))
            .flat_map(|h| parse::list(h.value.get(self.bytes)))
            .any(|p| p.eq_ignore_ascii_case(protocol))
    }
}

/// Whether `protocol` can name a protocol in `Upgrade`: a token, or two
/// joined by `/` (a name and a version).
pub fn valid_protocol(protocol: &[u8]) -> bool {
    let mut parts = protocol.splitn(2, |&b| b == b'/');
    let name = parts.next().unwrap_or_default();
    is_token(name) && parts.next().is_none_or(is_token)
}

/// Whether `protocol` is WebSocket, which only the host may switch to.
pub fn is_websocket(protocol: &[u8]) -> bool {
    protocol.eq_ignore_ascii_case(b"websocket")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::{parse_head, Limits, Parsed};

    fn offered(request: &str, protocol: &str) -> Option<bool> {
        let mut head = RequestHead::default();
        let parsed = parse_head(request.as_bytes(), &Limits::default(), &mut head);
        assert_eq!(parsed, Ok(Parsed::Complete), "{request:?}");
        Offer::of(&head, request.as_bytes()).map(|o| o.lists(protocol.as_bytes()))
    }

    #[test]
    fn an_offer_needs_connection_upgrade_and_lists_protocols_in_any_case() {
        let both = "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: h2c, Echo/1\r\nUpgrade: foo\r\n\r\n";
        assert_eq!(offered(both, "echo/1"), Some(true));
        assert_eq!(offered(both, "H2C"), Some(true));
        assert_eq!(offered(both, "foo"), Some(true), "a second field counts");
        assert_eq!(
            offered(both, "echo"),
            Some(false),
            "the version is part of it"
        );
        assert_eq!(offered(both, "h2"), Some(false));
        let no_connection = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\n\r\n";
        assert_eq!(offered(no_connection, "echo"), None);
        let no_upgrade = "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n";
        assert_eq!(offered(no_upgrade, "echo"), None);
    }

    #[test]
    fn protocol_names_are_tokens_with_an_optional_version() {
        for good in ["echo", "h2c", "HTTP/2.0", "x-my.proto/1"] {
            assert!(valid_protocol(good.as_bytes()), "{good}");
        }
        for bad in ["", "a b", "a/", "/1", "a/1/2", "a,b", "é"] {
            assert!(!valid_protocol(bad.as_bytes()), "{bad}");
        }
        assert!(is_websocket(b"WebSocket") && !is_websocket(b"websockets"));
    }
}
