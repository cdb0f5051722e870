//! Behind a proxy: whose `Forwarded` / `X-Forwarded-*` headers to believe.
//!
//! A request's remote address and scheme are the connection's, unless the
//! peer is a trusted proxy (`--forwarded-allow-ips`); then they come from the
//! headers it added. `X-Forwarded-For` is read from the right, skipping
//! trusted proxies, so a client cannot pose as another by sending its own
//! header: the nearest address no trusted proxy vouches for is the client.

use std::net::IpAddr;

use app_sdk::abi::HeaderSpan;
use ipnet::IpNet;

/// The headers a proxy forwards the client's address and scheme in
/// (lower case): `Forwarded`, `X-Forwarded-For`, `X-Forwarded-Proto`.
pub const HEADERS: [&[u8]; 3] = [FORWARDED, X_FORWARDED_FOR, X_FORWARDED_PROTO];
const FORWARDED: &[u8] = b"forwarded";
const X_FORWARDED_FOR: &[u8] = b"x-forwarded-for";
const X_FORWARDED_PROTO: &[u8] = b"x-forwarded-proto";

/// The default trusted proxies, as Gunicorn's: this machine.
pub const DEFAULT_TRUSTED: &str = "127.0.0.1,::1";

/// The set of trusted proxy addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies {
    any: bool,
    nets: Vec<IpNet>,
}

impl std::str::FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of addresses and networks (`10.0.0.0/8`), or `*`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = TrustedProxies {
            any: false,
            nets: Vec::new(),
        };
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                out.any = true;
            } else if let Ok(net) = item.parse::<IpNet>() {
                out.nets.push(net);
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                out.nets.push(IpNet::from(ip));
            } else {
                return Err(format!("`{item}` is not an address, a network or *"));
            }
        }
        Ok(out)
    }
}

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.any || self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address and scheme the headers of a request from a trusted
    /// proxy give, as slices of `head`. `None` where the headers say nothing usable.
    pub fn client<'h>(
        &self,
        head: &'h [u8],
        headers: &[HeaderSpan],
    ) -> (Option<&'h str>, Option<&'static str>) {
        let mut addr = None;
        let mut scheme = None;
        for h in headers {
            let name = h.name.get(head);
            let value = h.value.get(head);
            if name.eq_ignore_ascii_case(X_FORWARDED_FOR) {
                addr = self
                    .rightmost_untrusted(value.split(|&b| b == b','))
                    .or(addr);
            } else if name.eq_ignore_ascii_case(FORWARDED) {
                let fors = value
                    .split(|&b| b == b',')
                    .filter_map(|element| param(element, b"for"));
                addr = self.rightmost_untrusted(fors).or(addr);
                if let Some(proto) = value
                    .split(|&b| b == b',')
                    .filter_map(|e| param(e, b"proto"))
                    .next_back()
                {
                    scheme = known_scheme(proto).or(scheme);
                }
            } else if name.eq_ignore_ascii_case(X_FORWARDED_PROTO) {
                let last = value.split(|&b| b == b',').next_back().unwrap_or_default();
                scheme = known_scheme(last).or(scheme);
            }
        }
        (addr, scheme)
    }

    /// The rightmost address in `items` that is not a trusted proxy (or the
    /// leftmost, if all are), as text.
    fn rightmost_untrusted<'h>(
        &self,
        items: impl DoubleEndedIterator<Item = &'h [u8]>,
    ) -> Option<&'h str> {
        let mut chosen = None;
        for item in items.rev() {
            let text = std::str::from_utf8(item).ok()?.trim();
            let text = text.trim_matches('"');
            let bare = text
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or(text);
            let ip: IpAddr = bare.parse().ok()?;
            chosen = Some(bare);
            if !self.trusts(ip) {
                break;
            }
        }
        chosen
    }
}

/// The value of `name=` in one `Forwarded` element (`for=1.2.3.4;proto=https`).
fn param<'h>(element: &'h [u8], name: &[u8]) -> Option<&'h [u8]> {
    element.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        pair[..eq]
            .trim_ascii()
            .eq_ignore_ascii_case(name)
            .then(|| pair[eq + 1..].trim_ascii())
    })
}

fn known_scheme(value: &[u8]) -> Option<&'static str> {
    let value = value.trim_ascii();
    let value = value.strip_prefix(b"\"").unwrap_or(value);
    let value = value.strip_suffix(b"\"").unwrap_or(value);
    if value.eq_ignore_ascii_case(b"https") {
        Some("https")
    } else if value.eq_ignore_ascii_case(b"http") {
        Some("http")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use app_sdk::abi::Span;

    fn headers(pairs: &[(&str, &str)]) -> (Vec<u8>, Vec<HeaderSpan>) {
        let mut head = Vec::new();
        let mut spans = Vec::new();
        for (n, v) in pairs {
            let name = Span {
                start: head.len() as u32,
                len: n.len() as u32,
            };
            head.extend_from_slice(n.as_bytes());
            let value = Span {
                start: head.len() as u32,
                len: v.len() as u32,
            };
            head.extend_from_slice(v.as_bytes());
            spans.push(HeaderSpan { name, value });
        }
        (head, spans)
    }

    #[test]
    fn parses_trust_lists() {
        let t: TrustedProxies = "127.0.0.1, 10.0.0.0/8,::1".parse().unwrap();
        assert!(t.trusts("10.1.2.3".parse().unwrap()));
        assert!(t.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!t.trusts("192.168.0.1".parse().unwrap()));
        assert!("*"
            .parse::<TrustedProxies>()
            .unwrap()
            .trusts("8.8.8.8".parse().unwrap()));
        assert!("nonsense".parse::<TrustedProxies>().is_err());
    }

    #[test]
    fn takes_the_nearest_untrusted_address() {
        let t: TrustedProxies = "127.0.0.1,10.0.0.0/8".parse().unwrap();
        let (head, spans) = headers(&[
            ("X-Forwarded-For", "6.6.6.6, 203.0.113.7, 10.0.0.2"),
            ("X-Forwarded-Proto", "https"),
        ]);
        assert_eq!(
            t.client(&head, &spans),
            (Some("203.0.113.7"), Some("https"))
        );
        let (head, spans) = headers(&[(
            "Forwarded",
            "for=192.0.2.60;proto=https, for=\"[2001:db8::1]\"",
        )]);
        assert_eq!(
            t.client(&head, &spans),
            (Some("2001:db8::1"), Some("https"))
        );
        let (head, spans) = headers(&[("X-Forwarded-For", "not-an-ip")]);
        assert_eq!(t.client(&head, &spans), (None, None));
    }
}
