//! Behind a proxy: whose forwarding headers to believe, and which ones.
//!
//! A request's remote address and scheme are the connection's, unless the
//! peer is a trusted proxy (`--forwarded-allow-ips`); then they come from the
//! headers it added, of ONE family (`--forwarded-headers`): `X-Forwarded-For`
//! and `X-Forwarded-Proto` (the default, what the shipped nginx recipe sets),
//! or RFC 7239 `Forwarded`, or neither. The other family is never read: a
//! proxy that sets one family and passes the other through from the client
//! (nginx does, unless told otherwise) would otherwise let any client choose
//! its own address. Gunicorn and uvicorn likewise read only the headers they
//! are told the proxy sets. Request headers themselves reach the app as sent,
//! whichever family: only `remote_addr` and `scheme` are the host's word.
//!
//! Every line of the chosen header counts, in order, as one list (RFC 9110
//! §5.3), read from the right, skipping trusted proxies, so a client cannot
//! pose as another by sending its own header: the nearest address no trusted
//! proxy vouches for is the client.

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

/// The family of forwarding headers read from a trusted proxy
/// (`--forwarded-headers`); the other family is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardedHeaders {
    /// `X-Forwarded-For` (address) and `X-Forwarded-Proto` (scheme), as nginx,
    /// HAProxy and most load balancers set them; the shipped recipe's.
    XForwarded,
    /// RFC 7239 `Forwarded` (`for=`, and `proto=` of the same element).
    Forwarded,
    /// Neither: the connection's address and scheme, even from a trusted proxy.
    None,
}

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

    /// The client address and scheme that the `family` headers of a request
    /// from a trusted proxy give, as slices of `head`. `None` where the headers
    /// say nothing usable (then the connection's own count).
    pub fn client<'h>(
        &self,
        family: ForwardedHeaders,
        head: &'h [u8],
        headers: &[HeaderSpan],
    ) -> (Option<&'h str>, Option<&'static str>) {
        // Every line of one header, in order, as one comma-separated list.
        let items = |name: &'static [u8]| {
            headers
                .iter()
                .filter(move |h| h.name.get(head).eq_ignore_ascii_case(name))
                .flat_map(move |h| h.value.get(head).split(|&b| b == b','))
        };
        match family {
            ForwardedHeaders::None => (None, None),
            ForwardedHeaders::XForwarded => {
                let addr = self
                    .nearest_untrusted(items(X_FORWARDED_FOR).rev(), Some)
                    .map(|(_, addr)| addr);
                let scheme = items(X_FORWARDED_PROTO).next_back().and_then(known_scheme);
                (addr, scheme)
            }
            ForwardedHeaders::Forwarded => {
                match self
                    .nearest_untrusted(items(FORWARDED).rev(), |element| param(element, b"for"))
                {
                    Some((element, addr)) => {
                        (Some(addr), param(element, b"proto").and_then(known_scheme))
                    }
                    None => (None, None),
                }
            }
        }
    }

    /// Walks the hops from the nearest (rightmost) outwards and returns the
    /// first whose address (`addr` of it) is not a trusted proxy, or the
    /// farthest if all are, with its address as text. `None` if a hop on the
    /// way has no usable address (`unknown`, `_hidden`, garbage): nothing past
    /// it can be vouched for.
    fn nearest_untrusted<'h>(
        &self,
        hops: impl Iterator<Item = &'h [u8]>,
        addr: impl Fn(&'h [u8]) -> Option<&'h [u8]>,
    ) -> Option<(&'h [u8], &'h str)> {
        let mut chosen = None;
        for hop in hops {
            let (text, ip) = addr(hop).and_then(hop_address)?;
            chosen = Some((hop, text));
            if !self.trusts(ip) {
                break;
            }
        }
        chosen
    }
}

/// The address in one hop's `for` value: `192.0.2.1`, `"192.0.2.1:4711"`,
/// `"[2001:db8::1]"` or `"[2001:db8::1]:4711"` (a port is dropped).
fn hop_address(value: &[u8]) -> Option<(&str, IpAddr)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let text = text.strip_prefix('"').unwrap_or(text);
    let text = text.strip_suffix('"').unwrap_or(text);
    let bare = if let Some(bracketed) = text.strip_prefix('[') {
        bracketed.split_once(']')?.0
    } else if text.bytes().filter(|&b| b == b':').count() == 1 {
        text.split_once(':')?.0
    } else {
        text
    };
    Some((bare, bare.parse().ok()?))
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
        use ForwardedHeaders::{Forwarded, XForwarded};
        let t: TrustedProxies = "127.0.0.1,10.0.0.0/8".parse().unwrap();
        let (head, spans) = headers(&[
            ("X-Forwarded-For", "6.6.6.6, 203.0.113.7, 10.0.0.2"),
            ("X-Forwarded-Proto", "https"),
        ]);
        assert_eq!(
            t.client(XForwarded, &head, &spans),
            (Some("203.0.113.7"), Some("https"))
        );
        // The scheme is the chosen hop's own `proto=`, not another hop's.
        let (head, spans) = headers(&[(
            "Forwarded",
            "for=192.0.2.60;proto=https, for=\"[2001:db8::1]\";proto=http",
        )]);
        assert_eq!(
            t.client(Forwarded, &head, &spans),
            (Some("2001:db8::1"), Some("http"))
        );
        let (head, spans) = headers(&[(
            "Forwarded",
            "for=192.0.2.60;proto=https, for=10.0.0.3;proto=http",
        )]);
        assert_eq!(
            t.client(Forwarded, &head, &spans),
            (Some("192.0.2.60"), Some("https"))
        );
        let (head, spans) = headers(&[("X-Forwarded-For", "not-an-ip")]);
        assert_eq!(t.client(XForwarded, &head, &spans), (None, None));
    }

    #[test]
    fn reads_only_the_chosen_family() {
        use ForwardedHeaders::{Forwarded, None as Neither, XForwarded};
        let t: TrustedProxies = "127.0.0.1".parse().unwrap();
        let (head, spans) = headers(&[
            ("Forwarded", "for=6.6.6.6;proto=https"),
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "http"),
        ]);
        assert_eq!(
            t.client(XForwarded, &head, &spans),
            (Some("203.0.113.7"), Some("http"))
        );
        assert_eq!(
            t.client(Forwarded, &head, &spans),
            (Some("6.6.6.6"), Some("https"))
        );
        assert_eq!(t.client(Neither, &head, &spans), (None, None));
        // The other family alone gives nothing.
        let (head, spans) = headers(&[("Forwarded", "for=6.6.6.6;proto=https")]);
        assert_eq!(t.client(XForwarded, &head, &spans), (None, None));
        let (head, spans) = headers(&[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
        ]);
        assert_eq!(t.client(Forwarded, &head, &spans), (None, None));
    }

    #[test]
    fn several_lines_are_one_list() {
        use ForwardedHeaders::{Forwarded, XForwarded};
        let t: TrustedProxies = "127.0.0.1,10.0.0.0/8".parse().unwrap();
        // A client's own line first, then a proxy's: the proxy's is nearer.
        let (head, spans) = headers(&[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-For", "203.0.113.7, 10.0.0.2"),
        ]);
        assert_eq!(
            t.client(XForwarded, &head, &spans),
            (Some("203.0.113.7"), None)
        );
        // An unreadable nearest hop does not hand the choice to an earlier line.
        let (head, spans) = headers(&[
            ("Forwarded", "for=6.6.6.6;proto=https"),
            ("Forwarded", "for=unknown"),
        ]);
        assert_eq!(t.client(Forwarded, &head, &spans), (None, None));
        let (head, spans) = headers(&[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-For", "garbage"),
        ]);
        assert_eq!(t.client(XForwarded, &head, &spans), (None, None));
        // Every hop trusted: the farthest is the client.
        let (head, spans) = headers(&[("X-Forwarded-For", "10.0.0.9, 127.0.0.1")]);
        assert_eq!(
            t.client(XForwarded, &head, &spans),
            (Some("10.0.0.9"), None)
        );
        // The last X-Forwarded-Proto value is the nearest proxy's.
        let (head, spans) = headers(&[
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Proto", "https"),
        ]);
        assert_eq!(t.client(XForwarded, &head, &spans), (None, Some("https")));
    }

    #[test]
    fn hop_addresses_drop_ports_brackets_and_quotes() {
        let ip = |s: &str| hop_address(s.as_bytes()).map(|(text, _)| text.to_owned());
        assert_eq!(ip("192.0.2.1").as_deref(), Some("192.0.2.1"));
        assert_eq!(ip(" \"192.0.2.1:4711\" ").as_deref(), Some("192.0.2.1"));
        assert_eq!(ip("\"[2001:db8::1]:4711\"").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("[2001:db8::1]").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("2001:db8::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("unknown"), None);
        assert_eq!(ip("_hidden"), None);
        assert_eq!(ip(""), None);
        assert_eq!(ip("[2001:db8::1"), None);
    }
}
