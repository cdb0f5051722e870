//! The PROXY protocol header (HAProxy's, versions 1 and 2) at the start of a
//! connection from an L4 load balancer: who the client really is.
//!
//! Behind AWS NLB or HAProxy in `mode tcp` the TCP peer is the balancer; it
//! tells the client's address in one header sent before anything else on the
//! connection (before TLS, before HTTP). The worker's event loop calls
//! [`parse`] on the bytes read so far, on a listener that expects the header
//! and from a peer it trusts, until the answer is no longer
//! [`Parsed::Incomplete`]; what follows the header is the client's.
//!
//! The verdict on a complete header is the `ppp` crate's, which knows both
//! versions; this module adds what a server needs around it, as a pure
//! function over a byte slice, with no allocation on the good path:
//!
//! - **Waiting only for a header that can still come.** [`Parsed::Incomplete`]
//!   only while the bytes are a prefix of some valid header: anything else
//!   (an HTTP request, a TLS ClientHello, a second `PROXY ` signature's
//!   stray bytes) is [`Parsed::Invalid`] as soon as it is seen, so a peer
//!   cannot hold a connection open by sending almost a header. `ppp` alone
//!   gives up on some prefixes of valid lines (`…80 ` before the last port)
//!   and waits on some lines that can never become valid; the prefix rules
//!   here are this module's own, checked against `ppp` in the tests.
//! - **Strict framing.** Version 1 is one line of printable ASCII ended by
//!   CRLF within [`V1_MAX_LEN`] bytes (the specification's limit); a bare LF,
//!   a CR not followed by LF, a doubled space, a `+` or leading zero in a
//!   port, an address of the other family: all invalid. Version 2's length
//!   field is capped at [`V2_MAX_PAYLOAD`], checked as soon as its two bytes
//!   arrive; its TLVs must tile the rest of the header exactly.
//! - **Exactly one header.** [`Parsed::Done::consumed`] counts the header's
//!   bytes only; the caller hands the rest to HTTP (or TLS), never back here,
//!   so a second header is the client's bytes, as it should be.
//! - **No address where there is none.** A version 2 `LOCAL` header (a
//!   balancer's health check), an `UNSPEC` or `AF_UNIX` family, and version
//!   1 `UNKNOWN` all give `source: None`: the caller keeps the TCP peer.
//!
//! Puma and Gunicorn each shipped PROXY support that broke on a header split
//! across two reads, or waited forever on a line that never ended; the
//! tests below feed every valid header in every split, and the fuzz target
//! `fuzz/fuzz_targets/proxy_protocol.rs` checks that a split never changes
//! the answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ppp::v2;

/// The longest version 1 header, CRLF included: the specification's limit
/// (`PROXY UNKNOWN` with two full-length IPv6 addresses and ports is 104
/// bytes; 107 is what the specification tells receivers to accept).
pub const V1_MAX_LEN: usize = 107;

/// Version 1's signature: `PROXY` and the space after it.
pub const V1_SIGNATURE: &[u8] = b"PROXY ";

/// Version 2's signature, the first 12 bytes of every version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Version 2's fixed part: the signature, the version-and-command byte, the
/// family-and-protocol byte and the two-byte length of the rest.
pub const V2_FIXED_LEN: usize = 16;

/// The longest version 2 payload (addresses and TLVs) taken, in bytes: 4 KiB.
///
/// The length field could say 64 KiB, which a peer would make the server
/// buffer before a single request byte. What real balancers send is far
/// smaller: HAProxy's `send-proxy-v2-ssl-cn` with a unique ID, ALPN and an
/// authority (SNI, at most 255 bytes) stays under 1 KiB; AWS NLB adds a VPC
/// endpoint TLV of a few dozen bytes, GCP and Azure one of similar size. The
/// largest address block (`AF_UNIX`, 216 bytes) leaves 3.8 KiB for TLVs.
pub const V2_MAX_PAYLOAD: usize = 4096;

/// The most bytes a header can take: what the caller must be able to buffer
/// before [`parse`] says anything but [`Parsed::Incomplete`].
pub const MAX_HEADER_LEN: usize = V2_FIXED_LEN + V2_MAX_PAYLOAD;

/// The verdict on the bytes at the start of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A prefix of a valid header: read more and call again with all of it.
    Incomplete,
    /// A complete header of `consumed` bytes; what follows is the client's.
    Done {
        /// The header's length: the client's bytes start here.
        consumed: usize,
        /// The client's address and port; `None` when the header carries no
        /// IP address (v2 `LOCAL`, an `UNSPEC` or `AF_UNIX` family, v1
        /// `UNKNOWN`): then the connection's own peer stands.
        source: Option<SocketAddr>,
    },
    /// Not a header, and no more bytes can make it one: close the connection.
    Invalid(String),
}

/// Reads the PROXY protocol header at the start of `input`, the bytes read
/// from a connection so far (all of them, from the first).
pub fn parse(input: &[u8]) -> Parsed {
    let verdict = match input.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(input),
        Some(b'\r') => parse_v2(input),
        Some(_) => Err(neither()),
    };
    match verdict {
        Ok(None) => Parsed::Incomplete,
        Ok(Some((consumed, source))) => Parsed::Done { consumed, source },
        Err(why) => Parsed::Invalid(why),
    }
}

/// A header's verdict inside this module: `Ok(None)` to wait for more,
/// `Ok(Some((consumed, source)))` when complete, `Err` when invalid.
type Verdict = Result<Option<(usize, Option<SocketAddr>)>, String>;

fn neither() -> String {
    "not a PROXY protocol header (neither the v1 nor the v2 signature)".into()
}

/// Whether `input` and `signature` agree on their common length.
fn matches_signature(input: &[u8], signature: &[u8]) -> bool {
    let n = input.len().min(signature.len());
    input[..n] == signature[..n]
}

// ---------------------------------------------------------------- version 1

/// Version 1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or
/// `PROXY UNKNOWN …\r\n`.
fn parse_v1(input: &[u8]) -> Verdict {
    if !matches_signature(input, V1_SIGNATURE) {
        return Err(neither());
    }
    if input.len() < V1_SIGNATURE.len() {
        return Ok(None);
    }
    let window = &input[..input.len().min(V1_MAX_LEN)];
    let Some(lf) = memchr::memchr(b'\n', window) else {
        return v1_partial(window);
    };
    // A whole line: CRLF-ended, its body a valid v1 body; then ppp's verdict.
    // (`lf` is past the signature, which has no LF.)
    if window[lf - 1] != b'\r' {
        return Err("v1 header ends in a bare LF, not CRLF".into());
    }
    let line = &window[..=lf];
    let body = &line[..lf - 1];
    check_v1_body(body, true)?;
    if body.starts_with(b"PROXY UNKNOWN") {
        // The receiver ignores what follows UNKNOWN (ppp would refuse more
        // than four fields there, which the specification allows).
        return Ok(Some((line.len(), None)));
    }
    let header = ppp::v1::Header::try_from(line).map_err(|e| format!("v1 header: {e}"))?;
    if header.header.len() != line.len() {
        return Err("v1 header: malformed line".into());
    }
    let source = match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        ppp::v1::Addresses::Tcp6(a) => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        ppp::v1::Addresses::Unknown => None,
    };
    Ok(Some((line.len(), source)))
}

/// A v1 line not ended yet (no LF in the first [`V1_MAX_LEN`] bytes):
/// wait if it can still become a header.
fn v1_partial(window: &[u8]) -> Verdict {
    if window.len() >= V1_MAX_LEN {
        return Err(format!("v1 header longer than {V1_MAX_LEN} bytes"));
    }
    match window.split_last() {
        Some((b'\r', body)) => {
            // Everything before the CR must be a whole body.
            check_v1_body(body, true)?;
            Ok(None)
        }
        _ if window.len() >= V1_MAX_LEN - 1 => {
            // No room left for CRLF.
            Err(format!("v1 header longer than {V1_MAX_LEN} bytes"))
        }
        _ => {
            check_v1_body(window, false)?;
            Ok(None)
        }
    }
}

/// The v1 protocols.
const TCP4: &str = "TCP4";
const TCP6: &str = "TCP6";
const UNKNOWN: &str = "UNKNOWN";

/// Checks the body of a v1 line (what comes before CRLF, signature
/// included): whole when `complete`, else a prefix that can still become a
/// valid body. Every byte is printable ASCII; fields are separated by one
/// space; `TCP4`/`TCP6` take exactly four fields, addresses of their family
/// and ports in plain decimal; `UNKNOWN` takes anything after it.
fn check_v1_body(body: &[u8], complete: bool) -> Result<(), String> {
    if let Some(b) = body.iter().find(|b| !(0x20..0x7f).contains(*b)) {
        return Err(match b {
            b'\r' => "v1 header: a CR not followed by LF".into(),
            b => format!("v1 header: byte {b:#04x} is not printable ASCII"),
        });
    }
    // Printable ASCII is UTF-8.
    let text = std::str::from_utf8(body).map_err(|e| format!("v1 header: {e}"))?;
    let rest = text.get(V1_SIGNATURE.len()..).unwrap_or_default();
    let mut fields = rest.split(' ');
    let protocol = fields.next().unwrap_or_default();
    let mut fields = fields.peekable();
    let protocol_complete = complete || fields.peek().is_some();
    if !protocol_complete {
        return if [TCP4, TCP6, UNKNOWN]
            .iter()
            .any(|p| p.starts_with(protocol))
        {
            Ok(())
        } else {
            Err(format!("v1 header: unknown protocol {protocol:?}"))
        };
    }
    let v6 = match protocol {
        TCP4 => false,
        TCP6 => true,
        // Anything may follow UNKNOWN up to the CRLF; the receiver ignores it.
        UNKNOWN => return Ok(()),
        other => return Err(format!("v1 header: unknown protocol {other:?}")),
    };
    let mut count = 0;
    while let Some(field) = fields.next() {
        let whole = complete || fields.peek().is_some();
        let ok = match (count, whole) {
            (0 | 1, true) => whole_address(field, v6),
            (0 | 1, false) => address_prefix(field, v6),
            (2 | 3, _) => port(field, whole),
            _ => return Err("v1 header: more than four address fields".into()),
        };
        if !ok {
            let name = [
                "source address",
                "destination address",
                "source port",
                "destination port",
            ][count];
            return Err(format!("v1 header: bad {name} {field:?}"));
        }
        count += 1;
    }
    if complete && count != 4 {
        return Err(format!("v1 header: {count} address fields, not 4"));
    }
    Ok(())
}

/// Whether `field` is an address of the family (`v6` or IPv4).
fn whole_address(field: &str, v6: bool) -> bool {
    if v6 {
        field.parse::<Ipv6Addr>().is_ok()
    } else {
        field.parse::<Ipv4Addr>().is_ok()
    }
}

/// The endings tried on a partial address: if one of them makes it a whole
/// address of the family, it is a prefix of one. An IPv4 prefix ends in a
/// dot or a partial octet (itself a valid octet), completed by `0` and
/// `.0`s; an IPv6 prefix ends in a partial group, a colon or `::`, or an
/// embedded IPv4 prefix, completed by one of the first six or by the IPv4
/// endings.
const ADDRESS_ENDINGS: [&str; 14] = [
    "", "0", ":", "::", ":0", "0::", ".0", ".0.0", ".0.0.0", "0.0", "0.0.0", "0.0.0.0", ":0::",
    "::0",
];

/// Whether `field` (more bytes may follow) can still become an address of
/// the family. No address text is longer than 45 bytes
/// (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
fn address_prefix(field: &str, v6: bool) -> bool {
    const MAX_ADDRESS_TEXT: usize = 45;
    if field.len() > MAX_ADDRESS_TEXT {
        return false;
    }
    let mut buf = [0u8; MAX_ADDRESS_TEXT + 8];
    ADDRESS_ENDINGS.iter().any(|ending| {
        let n = field.len() + ending.len();
        buf[..field.len()].copy_from_slice(field.as_bytes());
        buf[field.len()..n].copy_from_slice(ending.as_bytes());
        std::str::from_utf8(&buf[..n]).is_ok_and(|candidate| whole_address(candidate, v6))
    })
}

/// Whether `field` is a port (plain decimal, no sign, no leading zero, at
/// most 65535), or when not `whole`, a prefix of one.
fn port(field: &str, whole: bool) -> bool {
    if field.is_empty() {
        return !whole;
    }
    field.bytes().all(|b| b.is_ascii_digit())
        && (field == "0" || !field.starts_with('0'))
        && field.parse::<u16>().is_ok()
}

// ---------------------------------------------------------------- version 2

/// The version-and-command byte: version 2, `LOCAL` or `PROXY`.
const V2_LOCAL: u8 = 0x20;
const V2_PROXY: u8 = 0x21;

/// The family-and-protocol bytes version 2 defines (`UNSPEC`, then
/// `STREAM` and `DGRAM` over `INET`, `INET6` and `UNIX`); the others must
/// be rejected. The datagram ones are only taken from a `LOCAL` header,
/// which carries no address: a client address cannot be a datagram peer's
/// on a TCP connection.
fn v2_family_ok(command: u8, family: u8) -> bool {
    match family {
        0x00 | 0x11 | 0x21 | 0x31 => true,
        0x12 | 0x22 | 0x32 => command == V2_LOCAL,
        _ => false,
    }
}

/// Version 2: the signature, then `ver_cmd`, `fam`, `len` and `len` bytes of
/// addresses and TLVs. Each fixed byte is checked as soon as it is read.
fn parse_v2(input: &[u8]) -> Verdict {
    if !matches_signature(input, &V2_SIGNATURE) {
        return Err(neither());
    }
    let sig = V2_SIGNATURE.len();
    let Some(&command) = input.get(sig) else {
        return Ok(None);
    };
    if command != V2_LOCAL && command != V2_PROXY {
        return Err(format!(
            "v2 header: version/command byte {command:#04x} (want 0x20 LOCAL or 0x21 PROXY)"
        ));
    }
    let Some(&family) = input.get(sig + 1) else {
        return Ok(None);
    };
    if !v2_family_ok(command, family) {
        return Err(format!("v2 header: family/protocol byte {family:#04x}"));
    }
    let Some(len) = input.get(sig + 2..V2_FIXED_LEN) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len > V2_MAX_PAYLOAD {
        return Err(format!(
            "v2 header: {len} bytes of addresses and TLVs, more than the {V2_MAX_PAYLOAD} taken"
        ));
    }
    let addresses = match family >> 4 {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if len < addresses {
        return Err(format!(
            "v2 header: {len} bytes cannot hold the family's {addresses} bytes of addresses"
        ));
    }
    let Some(bytes) = input.get(..V2_FIXED_LEN + len) else {
        return Ok(None);
    };
    let header = v2::Header::try_from(bytes).map_err(|e| format!("v2 header: {e}"))?;
    if header.len() != bytes.len() {
        return Err("v2 header: malformed".into());
    }
    if let Some(Err(e)) = header.tlvs().find(Result::is_err) {
        return Err(format!("v2 header: {e}"));
    }
    let source = match (header.command, header.addresses) {
        (v2::Command::Local, _) => None,
        (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        (v2::Command::Proxy, v2::Addresses::Unix(_) | v2::Addresses::Unspecified) => None,
    };
    Ok(Some((bytes.len(), source)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(consumed: usize, source: Option<&str>) -> Parsed {
        Parsed::Done {
            consumed,
            source: source.map(|s| s.parse().unwrap()),
        }
    }

    fn invalid(p: &Parsed) -> bool {
        matches!(p, Parsed::Invalid(_))
    }

    /// A v2 header: `command`, `family`, the payload (addresses and TLVs).
    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend([command, family]);
        out.extend((payload.len() as u16).to_be_bytes());
        out.extend(payload);
        out
    }

    /// IPv4 addresses 203.0.113.7:51234 -> 10.0.0.1:443, then `tlvs`.
    fn v4_payload(tlvs: &[u8]) -> Vec<u8> {
        let mut p = vec![203, 0, 113, 7, 10, 0, 0, 1];
        p.extend(51234u16.to_be_bytes());
        p.extend(443u16.to_be_bytes());
        p.extend(tlvs);
        p
    }

    /// A NOOP TLV of `n` zero bytes.
    fn noop(n: usize) -> Vec<u8> {
        let mut t = vec![0x04];
        t.extend((n as u16).to_be_bytes());
        t.resize(3 + n, 0);
        t
    }

    fn v6_payload() -> Vec<u8> {
        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut p = src.octets().to_vec();
        p.extend(dst.octets());
        p.extend(40000u16.to_be_bytes());
        p.extend(80u16.to_be_bytes());
        p
    }

    /// Valid headers, each with what it parses to (the header alone).
    fn valid() -> Vec<(Vec<u8>, Option<&'static str>)> {
        let unix = {
            let mut p = vec![0u8; 216];
            p[..9].copy_from_slice(b"/run/a.sk");
            p
        };
        // TLVs HAProxy sends: ALPN "h2", authority "example.com", unique id.
        let tlvs = [
            &[0x01, 0, 2][..],
            b"h2",
            &[0x02, 0, 11],
            b"example.com",
            &[0x05, 0, 4],
            b"abcd",
        ]
        .concat();
        vec![
            (b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n".to_vec(), Some("203.0.113.7:51234")),
            (b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n".to_vec(), Some("0.0.0.0:0")),
            (b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 80\r\n".to_vec(), Some("[2001:db8::7]:40000")),
            (b"PROXY TCP6 ::ffff:192.0.2.1 :: 1 2\r\n".to_vec(), Some("[::ffff:192.0.2.1]:1")),
            (
                b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n".to_vec(),
                Some("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
            ),
            (b"PROXY TCP6 1:2:3:4:5:6:7:: 1:2:3:4:5:6:1.2.3.4 9 9\r\n".to_vec(), Some("[1:2:3:4:5:6:7:0]:9")),
            (b"PROXY UNKNOWN\r\n".to_vec(), None),
            (b"PROXY UNKNOWN a b c d e f g\r\n".to_vec(), None),
            (
                b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n".to_vec(),
                None,
            ),
            (v2(0x21, 0x11, &v4_payload(&[])), Some("203.0.113.7:51234")),
            (v2(0x21, 0x11, &v4_payload(&tlvs)), Some("203.0.113.7:51234")),
            (v2(0x21, 0x21, &v6_payload()), Some("[2001:db8::7]:40000")),
            (v2(0x20, 0x00, &[]), None),
            (v2(0x20, 0x11, &v4_payload(&[])), None),
            (v2(0x21, 0x00, &[]), None),
            (v2(0x21, 0x31, &unix), None),
            // The largest payload taken: addresses and one NOOP TLV filling the cap.
            (v2(0x21, 0x11, &v4_payload(&noop(V2_MAX_PAYLOAD - 12 - 3))), Some("203.0.113.7:51234")),
        ]
    }

    #[test]
    fn valid_headers_parse_whole_and_followed_by_the_clients_bytes() {
        for (header, source) in valid() {
            let whole = parse(&header);
            assert_eq!(
                whole,
                done(header.len(), source),
                "{:?}",
                String::from_utf8_lossy(&header)
            );
            // Bytes after the header are the client's: a request, or a second header.
            for after in [
                &b"GET / HTTP/1.1\r\n\r\n"[..],
                b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n",
                b"\x16\x03\x01",
            ] {
                let input = [&header[..], after].concat();
                assert_eq!(
                    parse(&input),
                    whole,
                    "{:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }

    /// A header split across reads, at every byte: each prefix waits.
    #[test]
    fn every_prefix_of_a_valid_header_is_incomplete() {
        for (header, _) in valid() {
            for cut in 0..header.len() {
                assert_eq!(
                    parse(&header[..cut]),
                    Parsed::Incomplete,
                    "{:?}",
                    String::from_utf8_lossy(&header[..cut])
                );
            }
        }
    }

    /// Partial addresses of each family: every prefix of every address
    /// waits; text that no ending makes an address does not.
    #[test]
    fn address_prefixes() {
        let v6 = [
            "::",
            "::1",
            "1::",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "fe80::1:2",
            "::ffff:255.255.255.255",
            "1:2:3:4:5:6:1.2.3.4",
            "abcd:ef01::9",
            "1::2:3",
            "2001:DB8::A",
        ];
        for a in v6 {
            assert!(whole_address(a, true), "{a}");
            for cut in 0..=a.len() {
                assert!(address_prefix(&a[..cut], true), "{:?} of {a}", &a[..cut]);
            }
        }
        for a in ["0.0.0.0", "1.2.3.4", "255.255.255.255", "10.200.30.4"] {
            assert!(whole_address(a, false), "{a}");
            for cut in 0..=a.len() {
                assert!(address_prefix(&a[..cut], false), "{:?} of {a}", &a[..cut]);
            }
        }
        for (bad, v6) in [
            ("256", false),
            ("01", false),
            ("1.2.3.4.", false),
            ("1..", false),
            ("::1", false),
            ("a", false),
            ("1:2:3:4:5:6:7:8:", true),
            (":::", true),
            ("12345", true),
            ("g", true),
            ("1::2::", true),
            ("1.2.3.4.5", true),
        ] {
            assert!(!address_prefix(bad, v6), "{bad}");
        }
    }

    #[test]
    fn invalid_headers() {
        let long_unknown = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX_LEN - 16));
        let too_long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX_LEN - 15));
        assert_eq!(long_unknown.len(), V1_MAX_LEN);
        assert_eq!(parse(long_unknown.as_bytes()), done(V1_MAX_LEN, None));
        let mut big = v4_payload(&[]);
        big.resize(V2_MAX_PAYLOAD + 1, 0);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "an HTTP request",
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            ),
            ("one byte of HTTP", b"G".to_vec()),
            ("a TLS ClientHello", b"\x16\x03\x01\x02\x00".to_vec()),
            ("lower case", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec()),
            ("PROXY without its space", b"PROXYX".to_vec()),
            (
                "v1 with a bare LF",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
            ),
            (
                "v1 with LF only, request after",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET / HTTP/1.1\r\n".to_vec(),
            ),
            (
                "v1 with CR then not LF",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX".to_vec(),
            ),
            ("v1 CR mid-line", b"PROXY UNKNOWN a\rb\r\n".to_vec()),
            ("v1 over 107 bytes", too_long.clone().into_bytes()),
            (
                "v1 over 107 bytes, no CRLF yet",
                too_long.as_bytes()[..V1_MAX_LEN].to_vec(),
            ),
            (
                "v1 at 106 bytes, no CR",
                too_long.as_bytes()[..V1_MAX_LEN - 1].to_vec(),
            ),
            (
                "v1 unknown protocol",
                b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            ),
            ("v1 protocol typo, partial", b"PROXY TCP5".to_vec()),
            ("v1 no protocol", b"PROXY \r\n".to_vec()),
            ("v1 double space", b"PROXY  TCP4".to_vec()),
            ("v1 double space later", b"PROXY TCP4 1.2.3.4  ".to_vec()),
            (
                "v1 bad octet",
                b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n".to_vec(),
            ),
            ("v1 bad octet, partial", b"PROXY TCP4 1.2.3.256".to_vec()),
            (
                "v1 leading-zero octet",
                b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n".to_vec(),
            ),
            (
                "v1 v6 address in TCP4",
                b"PROXY TCP4 ::1 ::1 1 2\r\n".to_vec(),
            ),
            (
                "v1 v4 address in TCP6",
                b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            ),
            (
                "v1 port over 65535",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n".to_vec(),
            ),
            (
                "v1 port over 65535, partial",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536".to_vec(),
            ),
            (
                "v1 port with a sign",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n".to_vec(),
            ),
            (
                "v1 port with a leading zero",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".to_vec(),
            ),
            (
                "v1 port not a number",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 http 2\r\n".to_vec(),
            ),
            (
                "v1 missing a port",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(),
            ),
            (
                "v1 a fifth field",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(),
            ),
            (
                "v1 trailing space",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ".to_vec(),
            ),
            ("v1 tab", b"PROXY TCP4\t".to_vec()),
            ("v1 non-ASCII", "PROXY UNKNOWN é\r\n".as_bytes().to_vec()),
            ("v1 NUL", b"PROXY UNKNOWN \0".to_vec()),
            ("v2 bad signature", b"\r\n\r\n\0\r\nQUIX".to_vec()),
            ("v2 version 1", v2(0x11, 0x11, &v4_payload(&[]))),
            ("v2 command 2", v2(0x22, 0x11, &v4_payload(&[]))),
            ("v2 family 4", v2(0x21, 0x41, &v4_payload(&[]))),
            ("v2 protocol 3", v2(0x21, 0x13, &v4_payload(&[]))),
            (
                "v2 INET without a protocol",
                v2(0x21, 0x10, &v4_payload(&[])),
            ),
            ("v2 UNSPEC family with STREAM", v2(0x21, 0x01, &[])),
            ("v2 PROXY over UDP", v2(0x21, 0x12, &v4_payload(&[]))),
            (
                "v2 fixed part only, bad command",
                [&V2_SIGNATURE[..], &[0x23]].concat(),
            ),
            (
                "v2 length past the cap",
                v2(0x21, 0x11, &big)[..V2_FIXED_LEN].to_vec(),
            ),
            (
                "v2 length short of the addresses",
                v2(0x21, 0x21, &v4_payload(&[])),
            ),
            (
                "v2 length short of the addresses, at once",
                v2(0x21, 0x21, &v4_payload(&[]))[..V2_FIXED_LEN].to_vec(),
            ),
            (
                "v2 TLV past the end",
                v2(0x21, 0x11, &v4_payload(&[0x04, 0, 5, 1])),
            ),
            (
                "v2 stray byte after the TLVs",
                v2(0x21, 0x11, &v4_payload(&[0x04, 0, 0, 9])),
            ),
        ];
        for (what, input) in cases {
            let p = parse(&input);
            assert!(invalid(&p), "{what}: {p:?}");
        }
    }

    /// Prefixes that must wait, though a naive parser rejects or accepts them.
    #[test]
    fn waits_on() {
        let cases: [&[u8]; 12] = [
            b"",
            b"P",
            b"PROXY",
            b"PROXY ",
            b"PROXY TCP",
            b"PROXY UNKNOWN",
            b"PROXY UNKNOWN anything at all",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 ",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\r",
            b"\r",
            b"\r\n\r\n\0\r\nQUIT\n",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00",
        ];
        for input in cases {
            assert_eq!(
                parse(input),
                Parsed::Incomplete,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// Where this module and ppp part on whole v1 lines: ppp takes a signed
    /// port, which this module does not; ppp refuses more than four fields
    /// after `UNKNOWN`, which the specification allows (and ignores).
    /// Every other valid line, both take.
    #[test]
    fn differs_from_ppp_only_where_meant() {
        let many = b"PROXY UNKNOWN a b c d e f g\r\n";
        for (header, _) in valid().into_iter().filter(|(h, _)| h[0] == b'P') {
            assert_eq!(
                ppp::v1::Header::try_from(&header[..]).is_ok(),
                header != many,
                "{:?}",
                String::from_utf8_lossy(&header)
            );
        }
        let signed = b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n";
        assert!(ppp::v1::Header::try_from(&signed[..]).is_ok());
        assert!(invalid(&parse(signed)));
    }
}
