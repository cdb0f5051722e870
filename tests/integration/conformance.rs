//! Conformance: a table of raw requests and what must come of each (RFC 9112,
//! RFC 9110). A valid request must reach the app exactly as sent (checked
//! through the `echo` app); an invalid one must get its status, close the
//! connection, and never reach the app.

use base64::Engine;
use tests::{parse_responses, raw, Host};

/// What a request must lead to.
enum Expect {
    /// The app sees it: method, path, query, body (the echo app reports them).
    App {
        method: &'static str,
        path: &'static str,
        query: &'static str,
        body: &'static [u8],
    },
    /// The host refuses it with this status and closes.
    Refused(u16),
}

use Expect::*;

/// Shorthand for a valid GET of `path`.
const fn get(path: &'static str) -> Expect {
    App {
        method: "GET",
        path,
        query: "",
        body: b"",
    }
}

/// Shorthand for a valid POST of `body` to `/`.
const fn post(body: &'static [u8]) -> Expect {
    App {
        method: "POST",
        path: "/",
        query: "",
        body,
    }
}

/// (what the case checks, the raw request, what must happen)
const CASES: &[(&str, &[u8], Expect)] = &[
    // --- valid requests (RFC 9112 §3, §5, §6, §7)
    ("simple GET", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", get("/")),
    ("HTTP/1.0 without Host", b"GET /x HTTP/1.0\r\n\r\n", get("/x")),
    ("query string", b"GET /s?q=a+b&x HTTP/1.1\r\nHost: a\r\n\r\n", App { method: "GET", path: "/s", query: "q=a+b&x", body: b"" }),
    ("empty query", b"GET /s? HTTP/1.1\r\nHost: a\r\n\r\n", App { method: "GET", path: "/s", query: "", body: b"" }),
    ("percent-encoding is passed through", b"GET /a%20b HTTP/1.1\r\nHost: a\r\n\r\n", get("/a%20b")),
    ("absolute-form target", b"GET http://a/p?q=1 HTTP/1.1\r\nHost: a\r\n\r\n", App { method: "GET", path: "/p", query: "q=1", body: b"" }),
    ("asterisk-form OPTIONS", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", App { method: "OPTIONS", path: "*", query: "", body: b"" }),
    ("extension method", b"PURGE /c HTTP/1.1\r\nHost: a\r\n\r\n", App { method: "PURGE", path: "/c", query: "", body: b"" }),
    ("leading empty line is ignored (§2.2)", b"\r\nGET /l HTTP/1.1\r\nHost: a\r\n\r\n", get("/l")),
    ("header value with tab and spaces", b"GET / HTTP/1.1\r\nHost: a\r\nX: \t v  w \t\r\n\r\n", get("/")),
    ("header value with obs-text", b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xe9\r\n\r\n", get("/")),
    ("empty header value", b"GET / HTTP/1.1\r\nHost: a\r\nX:\r\n\r\n", get("/")),
    ("Content-Length body", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", post(b"hello")),
    ("Content-Length zero", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", post(b"")),
    ("Content-Length with leading zeros", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\n\r\nabc", post(b"abc")),
    ("chunked body (§7.1)", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", post(b"hello world")),
    ("chunked, upper-case hex", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", post(b"0123456789")),
    ("chunked with extensions", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;name=value;flag\r\nabc\r\n0;last\r\n\r\n", post(b"abc")),
    ("chunked with BWS before an extension", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3 ;x\r\nabc\r\n0\r\n\r\n", post(b"abc")),
    ("chunked with trailers", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\n", post(b"hi")),
    ("chunked, coding in another case", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n1\r\nx\r\n0\r\n\r\n", post(b"x")),
    ("chunked, empty body", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", post(b"")),
    ("chunked, size with leading zeros", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0002\r\nok\r\n0\r\n\r\n", post(b"ok")),
    ("Connection: close is honoured", b"GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", get("/c")),
    ("Expect on a bodiless request", b"GET /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", get("/e")),
    // --- request line (§3)
    ("garbage request line", b"hello\r\n\r\n", Refused(400)),
    ("missing version", b"GET /\r\nHost: a\r\n\r\n", Refused(400)),
    ("two spaces between parts", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Refused(400)),
    ("tab as separator", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", Refused(400)),
    ("lower-case version", b"GET / http/1.1\r\nHost: a\r\n\r\n", Refused(400)),
    ("HTTP/2.0 request line", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", Refused(505)),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", Refused(505)),
    ("HTTP/0.9 style", b"GET /\r\n\r\n", Refused(400)),
    ("method with a separator", b"GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", Refused(400)),
    ("target that is not a path", b"GET index.html HTTP/1.1\r\nHost: a\r\n\r\n", Refused(400)),
    ("asterisk-form with GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", Refused(400)),
    ("non-ASCII target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", Refused(400)),
    ("control character in target", b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", Refused(400)),
    // --- line endings and fields (§2.2, §5)
    ("bare LF line endings", b"GET / HTTP/1.1\nHost: a\n\n", Refused(400)),
    ("bare LF after a field", b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", Refused(400)),
    ("bare CR in a field", b"GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n", Refused(400)),
    ("space before the colon (§5.1)", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", Refused(400)),
    ("obsolete line folding (§5.2)", b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", Refused(400)),
    ("field without a colon", b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", Refused(400)),
    ("empty field name", b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", Refused(400)),
    ("invalid character in a name", b"GET / HTTP/1.1\r\nHost: a\r\nX[1]: v\r\n\r\n", Refused(400)),
    ("NUL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", Refused(400)),
    ("DEL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", Refused(400)),
    ("whitespace before the first field", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", Refused(400)),
    // --- Host (RFC 9112 §3.2)
    ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n", Refused(400)),
    ("two Host fields", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Refused(400)),
    ("two Host fields on HTTP/1.0", b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", Refused(400)),
    // --- body framing (§6)
    ("Content-Length and Transfer-Encoding", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Refused(400)),
    ("two Content-Length fields", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", Refused(400)),
    ("list-valued Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", Refused(400)),
    ("negative Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\n", Refused(400)),
    ("signed Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", Refused(400)),
    ("hex Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc", Refused(400)),
    ("empty Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", Refused(400)),
    ("overflowing Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 184467440737095516160\r\n\r\n", Refused(400)),
    ("Content-Length over the limit", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999\r\n\r\n", Refused(413)),
    ("Transfer-Encoding on HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Refused(400)),
    ("unknown transfer coding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", Refused(501)),
    ("chunked not last", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Refused(501)),
    ("coding before chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", Refused(501)),
    ("chunked twice", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", Refused(400)),
    ("chunked in two fields", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Refused(400)),
    ("empty Transfer-Encoding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", Refused(400)),
    // --- chunked framing (§7.1), found before the app is called
    ("chunk size not hex", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n", Refused(400)),
    ("chunk size with a sign", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    ("chunk size with 0x", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    ("chunk size with a leading space", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    ("chunk size overflowing 64 bits", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", Refused(400)),
    ("chunk size line ended by LF", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", Refused(400)),
    ("chunk data longer than its size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", Refused(400)),
    ("chunk data without CRLF", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc0\r\n\r\n", Refused(400)),
    ("invalid trailer field", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nnot a field\r\n\r\n", Refused(400)),
    ("last chunk without the final CRLF", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX\r\n", Refused(400)),
];

/// Runs one case; returns a description of the failure, if any.
fn check(host: &Host, name: &str, request: &[u8], expect: &Expect) -> Option<String> {
    let mut bytes = request.to_vec();
    // A request after it shows whether the connection stays in sync (valid
    // case) or is closed (refused case).
    bytes.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let reply = raw(host.addr(), &bytes);
    let resps = parse_responses(&reply);
    let shown = || String::from_utf8_lossy(&reply).into_owned();
    match expect {
        Refused(status) => {
            if resps.len() != 1 {
                return Some(format!(
                    "{name}: expected one {status} then close, got {}",
                    shown()
                ));
            }
            if resps[0].status != *status {
                return Some(format!(
                    "{name}: expected {status}, got {}",
                    resps[0].status
                ));
            }
            if resps[0].header("content-type") == Some("application/json") {
                return Some(format!("{name}: the app saw a refused request"));
            }
        }
        App {
            method,
            path,
            query,
            body,
        } => {
            let first = resps.first().filter(|r| r.status == 200);
            let Some(first) = first else {
                return Some(format!(
                    "{name}: expected the app to answer, got {}",
                    shown()
                ));
            };
            let j = first.json();
            let got_body = base64::engine::general_purpose::STANDARD
                .decode(j["body_b64"].as_str().unwrap_or(""))
                .unwrap_or_default();
            if j["method"] != *method
                || j["path"] != *path
                || j["query"] != *query
                || got_body != *body
            {
                return Some(format!("{name}: the app saw {j}"));
            }
            let keep_alive = !String::from_utf8_lossy(request).contains("Connection: close")
                && !request.starts_with(b"GET /x HTTP/1.0");
            if keep_alive && (resps.len() != 2 || resps[1].json()["path"] != "/next") {
                return Some(format!(
                    "{name}: the next request was not answered in order: {}",
                    shown()
                ));
            }
        }
    }
    None
}

#[test]
fn conformance_table() {
    let host = Host::app("echo", &[]);
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|(name, request, expect)| check(&host, name, request, expect))
        .collect();
    let valid = CASES
        .iter()
        .filter(|(_, _, e)| matches!(e, App { .. }))
        .count();
    println!(
        "conformance: {} of {} cases pass ({valid} valid, {} invalid)",
        CASES.len() - failures.len(),
        CASES.len(),
        CASES.len() - valid
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_connect_is_answered_then_its_connection_closes() {
    // Bytes meant for a tunnel are never read as the next request.
    let host = Host::app("echo", &[]);
    let bytes = tests::raw(
        host.addr(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\
GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let responses = tests::parse_responses(&bytes);
    assert_eq!(responses.len(), 1, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(responses[0].header("Connection"), Some("close"));
    assert_eq!(responses[0].json()["method"], "CONNECT");
}
