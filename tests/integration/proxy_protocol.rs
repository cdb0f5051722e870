//! The PROXY protocol (`--proxy-protocol BIND`): behind an L4 balancer the
//! client's address comes in a header at the very start of the connection.
//! A listener named by `--proxy-protocol` takes exactly one header, from a
//! trusted peer (`--forwarded-allow-ips`) only; the address in it is the
//! request's remote address (the access log's `%(h)s`) for every request on
//! the connection. A connection that starts with something other than a
//! header from a trusted peer, or with a header from another peer, is closed;
//! the listener beside it without `--proxy-protocol` takes no header at all.
//!
//! Raw bytes check the framing (v1, v2, split, garbage, a second header);
//! HAProxy (`send-proxy-v2`, `send-proxy`) checks a real sender, with curl
//! connecting from 127.0.0.2 so the client's address differs from the TCP
//! peer's (haproxy's, 127.0.0.1).

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use tests::{
    curl, eventually, free_port,
    haproxy::{Haproxy, SendProxy},
    parse_responses, read_response, require_tool, Host, Scratch,
};

/// The client address the raw headers below carry.
const CLIENT: &str = "203.0.113.7";

/// A v1 header for [`CLIENT`].
const V1: &[u8] = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";

/// A host running the echo app with two listeners: `proxied`, named by
/// `--proxy-protocol`, and `plain`, not; the access log in `log`.
struct Setup {
    _host: Host,
    proxied: SocketAddr,
    plain: SocketAddr,
    log: String,
    _dir: Scratch,
}

/// Starts [`Setup`]'s host; `proxy_protocol` is the value given to
/// `--proxy-protocol` (`None`: the proxied listener's own bind value).
fn start(name: &str, proxy_protocol: Option<&str>, extra: &[&str]) -> Setup {
    let dir = Scratch::new(name);
    let log = dir.file("access.log");
    let proxied = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let plain = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (proxied_bind, plain_bind) = (proxied.to_string(), plain.to_string());
    let mut args = vec![
        "-b",
        &proxied_bind,
        "-b",
        &plain_bind,
        "--proxy-protocol",
        proxy_protocol.unwrap_or(&proxied_bind),
        "--access-logfile",
        &log,
    ];
    args.extend(extra);
    let host = Host::app("echo", &args);
    Setup {
        _host: host,
        proxied,
        plain,
        log,
        _dir: dir,
    }
}

/// The remote address (`%(h)s`, the first field) of the access log line of
/// the request for `path`.
fn remote_of(log: &str, path: &str) -> String {
    let needle = format!("\"GET {path} ");
    eventually(&format!("the access log line of {path}"), || {
        let text = std::fs::read_to_string(log).ok()?;
        let line = text.lines().find(|l| l.contains(&needle))?;
        line.split(' ').next().map(str::to_owned)
    })
}

/// A GET of `path` that closes the connection after it.
fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").into_bytes()
}

/// How a connection ended: the bytes the server sent, and whether it closed
/// the connection (end of stream or reset) rather than leaving it open.
struct Ending {
    reply: Vec<u8>,
    closed: bool,
}

/// Sends `pieces` on a new connection to `addr`, each in its own write with
/// Nagle off, then reads until the server closes the connection or 30
/// seconds pass without a byte.
fn send(addr: SocketAddr, pieces: &[&[u8]]) -> Ending {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    for piece in pieces {
        if stream.write_all(piece).is_err() {
            // Closed on us mid-way: what it sent before is still there to read.
            break;
        }
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => {
                return Ending {
                    reply,
                    closed: true,
                }
            }
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ending {
                    reply,
                    closed: false,
                }
            }
            Err(_) => {
                return Ending {
                    reply,
                    closed: true,
                }
            }
        }
    }
}

/// The one response to a request that should succeed, as JSON (the echo app).
fn served(ending: &Ending) -> serde_json::Value {
    let responses = parse_responses(&ending.reply);
    assert_eq!(
        responses.len(),
        1,
        "one response, got {:?}",
        String::from_utf8_lossy(&ending.reply)
    );
    assert_eq!(responses[0].status, 200, "{}", responses[0].text());
    responses[0].json()
}

/// Fails unless the server closed the connection without serving a request:
/// no response at all, or a 400 before closing.
fn refused(ending: &Ending, what: &str) {
    assert!(ending.closed, "{what}: the connection was left open");
    for r in parse_responses(&ending.reply) {
        assert_eq!(r.status, 400, "{what}: {}", r.text());
    }
}

/// A v2 header: PROXY command over TCP, `payload` (addresses, then TLVs).
fn v2(family: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend([0x21, family]);
    out.extend((payload.len() as u16).to_be_bytes());
    out.extend(payload);
    out
}

/// A v2 IPv4 header for [`CLIENT`], port 51234, to 10.0.0.1:443, with `tlvs`.
fn v2_ipv4(tlvs: &[u8]) -> Vec<u8> {
    let mut payload = vec![203, 0, 113, 7, 10, 0, 0, 1];
    payload.extend(51234u16.to_be_bytes());
    payload.extend(443u16.to_be_bytes());
    payload.extend(tlvs);
    v2(0x11, &payload)
}

#[test]
fn a_v1_header_gives_the_client_address_to_every_request_on_the_connection() {
    let s = start("pp-v1", None, &[]);
    let j = served(&send(s.proxied, &[&[V1, &get("/v1")[..]].concat()]));
    assert!(
        j["remote_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with(CLIENT)),
        "{j}"
    );
    assert_eq!(remote_of(&s.log, "/v1"), CLIENT);

    // Keep-alive: the header's address stands for the second request too.
    let mut stream = TcpStream::connect(s.proxied).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(&[V1, b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n"].concat())
        .unwrap();
    assert_eq!(read_response(&mut stream).status, 200);
    stream.write_all(&get("/second")).unwrap();
    assert_eq!(read_response(&mut stream).status, 200);
    assert_eq!(remote_of(&s.log, "/first"), CLIENT);
    assert_eq!(remote_of(&s.log, "/second"), CLIENT);
}

#[test]
fn v2_headers_ipv4_with_tlvs_ipv6_and_local() {
    let s = start("pp-v2", None, &[]);
    served(&send(
        s.proxied,
        &[&[&v2_ipv4(&[])[..], &get("/v2")].concat()],
    ));
    assert_eq!(remote_of(&s.log, "/v2"), CLIENT);

    // TLVs as HAProxy sends them: ALPN "h2", authority, a unique id.
    let tlvs = [
        &[0x01, 0, 2][..],
        b"h2",
        &[0x02, 0, 11],
        b"example.com",
        &[0x05, 0, 4],
        b"abcd",
    ]
    .concat();
    served(&send(
        s.proxied,
        &[&[&v2_ipv4(&tlvs)[..], &get("/tlvs")].concat()],
    ));
    assert_eq!(remote_of(&s.log, "/tlvs"), CLIENT);

    let mut payload = "2001:db8::7"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    payload.extend(
        "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    payload.extend(40000u16.to_be_bytes());
    payload.extend(80u16.to_be_bytes());
    served(&send(
        s.proxied,
        &[&[&v2(0x21, &payload)[..], &get("/v6")].concat()],
    ));
    assert_eq!(remote_of(&s.log, "/v6"), "2001:db8::7");

    // LOCAL (a balancer's health check) and v1 UNKNOWN: the TCP peer stands.
    let local = [&b"\r\n\r\n\0\r\nQUIT\n"[..], &[0x20, 0x00, 0, 0]].concat();
    served(&send(s.proxied, &[&[&local[..], &get("/local")].concat()]));
    assert_eq!(remote_of(&s.log, "/local"), "127.0.0.1");
    served(&send(
        s.proxied,
        &[&[&b"PROXY UNKNOWN\r\n"[..], &get("/unknown")].concat()],
    ));
    assert_eq!(remote_of(&s.log, "/unknown"), "127.0.0.1");
}

/// A header in many reads (one byte per write, Nagle off), then the request
/// in the same write as the header's last byte.
#[test]
fn a_header_split_across_writes() {
    let s = start("pp-split", None, &[]);
    for (header, path) in [(V1.to_vec(), "/split-v1"), (v2_ipv4(&[]), "/split-v2")] {
        let (last, first) = header.split_last().unwrap();
        let mut pieces: Vec<Vec<u8>> = first.iter().map(|b| vec![*b]).collect();
        pieces.push([&[*last][..], &get(path)].concat());
        let pieces: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        served(&send(s.proxied, &pieces));
        assert_eq!(remote_of(&s.log, path), CLIENT);
    }
}

/// `--forwarded-allow-ips 10.9.9.9`: the test client (127.0.0.1) is not
/// trusted, so its header is refused; without a header it is served as
/// itself.
#[test]
fn a_header_from_an_untrusted_peer_is_refused() {
    let s = start("pp-untrusted", None, &["--forwarded-allow-ips", "10.9.9.9"]);
    refused(
        &send(s.proxied, &[&[V1, &get("/untrusted-v1")[..]].concat()]),
        "a v1 header from an untrusted peer",
    );
    refused(
        &send(
            s.proxied,
            &[&[&v2_ipv4(&[])[..], &get("/untrusted-v2")].concat()],
        ),
        "a v2 header from an untrusted peer",
    );
    served(&send(s.proxied, &[&get("/untrusted-plain")]));
    assert_eq!(remote_of(&s.log, "/untrusted-plain"), "127.0.0.1");
    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
    assert!(
        !log.contains(CLIENT),
        "an untrusted header was believed:\n{log}"
    );
}

/// Anything but a header from a trusted peer closes the connection, and the
/// next client is served as usual.
#[test]
fn garbage_a_bare_request_or_a_bad_header_is_closed_and_the_next_client_served() {
    let s = start("pp-garbage", None, &[]);
    let cases: [(&str, Vec<u8>); 7] = [
        ("garbage", b"\x00\x01\x02garbage\r\n\r\n".to_vec()),
        ("a request without a header", get("/bare")),
        (
            "a v1 header with a bare LF",
            [&b"PROXY TCP4 203.0.113.7 10.0.0.1 1 2\n"[..], &get("/lf")].concat(),
        ),
        (
            "a v1 header of more than 107 bytes",
            [
                format!("PROXY UNKNOWN {}\r\n", "x".repeat(100)).as_bytes(),
                &get("/long"),
            ]
            .concat(),
        ),
        (
            "a v1 header with a bad port",
            [
                &b"PROXY TCP4 203.0.113.7 10.0.0.1 65536 2\r\n"[..],
                &get("/port"),
            ]
            .concat(),
        ),
        ("a v2 header with a length past the cap", {
            let mut h = v2_ipv4(&[]);
            h[14..16].copy_from_slice(&60000u16.to_be_bytes());
            h
        }),
        ("a TLS ClientHello", b"\x16\x03\x01\x00\x05hello".to_vec()),
    ];
    for (what, bytes) in &cases {
        refused(&send(s.proxied, &[bytes]), what);
        served(&send(s.proxied, &[&[V1, &get("/after")[..]].concat()]));
    }
    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
    for path in ["/bare", "/lf", "/long", "/port"] {
        assert!(
            !log.contains(&format!("GET {path} ")),
            "{path} was served:\n{log}"
        );
    }
}

/// Exactly one header: a second one is the client's bytes, not believed.
#[test]
fn a_second_header_is_not_a_header() {
    let s = start("pp-second", None, &[]);
    let ending = send(
        s.proxied,
        &[&[
            V1,
            b"PROXY TCP4 198.51.100.9 10.0.0.1 1 2\r\n",
            &get("/second-header"),
        ]
        .concat()],
    );
    for r in parse_responses(&ending.reply) {
        assert_ne!(r.status, 200, "{}", r.text());
    }
    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
    assert!(
        !log.contains("198.51.100.9"),
        "the second header was believed:\n{log}"
    );
}

/// The client named by the header is no proxy: its own forwarding headers
/// are not believed, whatever the balancer's peer address.
#[test]
fn the_clients_forwarding_headers_are_not_believed() {
    let s = start("pp-xff", None, &[]);
    let request =
        b"GET /xff HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n";
    served(&send(s.proxied, &[&[V1, &request[..]].concat()]));
    assert_eq!(remote_of(&s.log, "/xff"), CLIENT);
}

/// The listener without `--proxy-protocol` takes no header: one is an
/// invalid request line there, and plain requests are served.
#[test]
fn the_plain_listener_beside_takes_no_header() {
    let s = start("pp-plain", None, &[]);
    served(&send(s.plain, &[&get("/plain")]));
    assert_eq!(remote_of(&s.log, "/plain"), "127.0.0.1");
    let ending = send(s.plain, &[&[V1, &get("/plain-header")[..]].concat()]);
    for r in parse_responses(&ending.reply) {
        assert_ne!(r.status, 200, "{}", r.text());
    }
    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
    assert!(
        !log.contains(CLIENT),
        "a header was read on the plain listener:\n{log}"
    );
}

/// `--proxy-protocol all`: every listener takes the header.
#[test]
fn all_listeners() {
    let s = start("pp-all", Some("all"), &[]);
    for (addr, path) in [(s.proxied, "/all-1"), (s.plain, "/all-2")] {
        served(&send(addr, &[&[V1, &get(path)[..]].concat()]));
        assert_eq!(remote_of(&s.log, path), CLIENT);
    }
}

/// curl from 127.0.0.2 through haproxy sending `send`: the host's TCP peer
/// is haproxy (127.0.0.1, trusted by default); the request's remote address
/// is curl's.
fn through_haproxy(send: SendProxy, name: &str) {
    require_tool("haproxy", "-v");
    let s = start(name, None, &[]);
    let haproxy = Haproxy::start(Scratch::new(&format!("{name}-haproxy")), s.proxied, send);
    let path = format!("/through-{name}");
    let url = format!("http://{}{path}", haproxy.addr());
    let (code, out, err) = curl(&["--interface", "127.0.0.2", "--fail", &url]);
    assert_eq!(code, 0, "curl: {err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("echo's JSON");
    assert!(
        j["remote_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.2")),
        "{j}"
    );
    assert_eq!(remote_of(&s.log, &path), "127.0.0.2");
}

#[test]
#[ignore = "needs haproxy"]
fn through_haproxy_send_proxy_v2() {
    through_haproxy(SendProxy::V2, "pp-haproxy-v2");
}

#[test]
#[ignore = "needs haproxy"]
fn through_haproxy_send_proxy_v1() {
    through_haproxy(SendProxy::V1, "pp-haproxy-v1");
}
