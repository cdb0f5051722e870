//! Field rules over raw TCP: fields RFC 9110 §6.5.1 forbids in a trailer
//! section, and singleton fields (RFC 9110 §5.3) sent twice, are refused with
//! 400 before the app sees the request; the fields that are fine there still
//! reach it. The `echo` app answers JSON, so a refusal that comes from the app
//! instead of the host shows.

use tests::{parse_responses, raw, Host};

/// A chunked POST whose trailer section is `trailer` (lines ending in CRLF).
fn with_trailer(trailer: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\n{trailer}\r\n"
    )
    .into_bytes()
}

/// A GET with the extra field lines `fields` (each ending in CRLF).
fn with_fields(fields: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: t\r\n{fields}\r\n").into_bytes()
}

/// Sends `request` followed by a second request on the same connection;
/// returns the responses.
fn exchange(host: &Host, request: &[u8]) -> Vec<tests::Response> {
    let mut bytes = request.to_vec();
    bytes.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    parse_responses(&raw(host.addr(), &bytes))
}

/// Checks that `request` is refused by the host: one 400 (not from the app),
/// then the connection closes (the request after it is not answered).
fn refused(host: &Host, what: &str, request: &[u8]) -> Option<String> {
    let resps = exchange(host, request);
    let shown = || {
        resps
            .iter()
            .map(|r| format!("{} {}", r.status, r.text().trim()))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let from_host = resps
        .first()
        .is_some_and(|r| r.status == 400 && r.header("content-type") != Some("application/json"));
    (resps.len() != 1 || !from_host)
        .then(|| format!("{what}: want one 400 then close, got {}", shown()))
}

/// Checks that `request` reaches the app and the connection stays in step.
fn served(host: &Host, what: &str, request: &[u8]) -> Option<String> {
    let resps = exchange(host, request);
    let ok = resps.len() == 2
        && resps[0].status == 200
        && resps[0].json()["path"] == "/"
        && resps[1].json()["path"] == "/next";
    (!ok).then(|| {
        format!(
            "{what}: want the app's answer and then /next, got {:?}",
            resps
                .iter()
                .map(|r| (r.status, r.text()))
                .collect::<Vec<_>>()
        )
    })
}

/// Every failure at once, so one run shows them all.
fn all_pass(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fields_forbidden_in_trailers_are_refused_with_400() {
    let host = Host::app("echo", &["--log-level", "debug"]);
    let mut failures = Vec::new();
    for field in [
        "Content-Length: 5",
        "transfer-encoding: chunked",
        "Host: elsewhere",
        "Authorization: Basic YTpi",
        "Proxy-Authorization: Basic YTpi",
        "Cookie: a=b",
        "Set-Cookie: a=b",
        "Content-Type: text/plain",
        "Content-Encoding: gzip",
        "Content-Range: bytes 0-4/5",
        "Trailer: X-Sum",
        "Cache-Control: no-cache",
        "Expect: 100-continue",
        "Max-Forwards: 1",
        "Pragma: no-cache",
        "Range: bytes=0-1",
        "TE: trailers",
        "WWW-Authenticate: Basic",
        "Proxy-Authenticate: Basic",
        "If-None-Match: \"x\"",
        "Connection: close",
    ] {
        let request = with_trailer(&format!("X-Sum: 1\r\n{field}\r\n"));
        failures.extend(refused(&host, field, &request));
    }
    all_pass(failures);
    // The reason is in the error log.
    host.wait_for_log("Content-Length is not allowed in a trailer", 1);
}

#[test]
fn other_trailer_fields_still_reach_the_app() {
    let host = Host::app("echo", &[]);
    let mut failures = Vec::new();
    for trailer in [
        "",
        "X-Checksum: 5d41402abc4b2a76b9719d911017c592\r\n",
        "Repr-Digest: sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:\r\nX-A: 1\r\n",
        // Longer than any forbidden name, and a forbidden name's prefix.
        "X-Content-Length-Checked-By-The-Client: yes\r\nContent-Lengt: 5\r\n",
    ] {
        failures.extend(served(&host, trailer, &with_trailer(trailer)));
    }
    all_pass(failures);
}

#[test]
fn a_forbidden_trailer_on_a_streamed_body_fails_the_app_s_read() {
    // A body over --body-buffer reaches the app before its trailer arrived:
    // the app's read of the body fails instead (echo answers 400 itself).
    let host = Host::app("echo", &["--body-buffer", "4"]);
    let resps = exchange(&host, &with_trailer("Content-Length: 5\r\n"));
    assert_eq!(resps.first().map(|r| r.status), Some(400), "{resps:?}");
    assert!(
        resps[0]
            .text()
            .contains("Content-Length is not allowed in a trailer"),
        "{}",
        resps[0].text()
    );
}

#[test]
fn repeated_singleton_fields_are_refused_with_400() {
    let host = Host::app("echo", &["--log-level", "debug"]);
    let mut failures = Vec::new();
    for (name, a, b) in [
        ("Content-Type", "text/plain", "application/json"),
        ("Content-Type", "text/plain", "text/plain"),
        ("content-type", "text/plain", "TEXT/PLAIN"),
        ("Authorization", "Basic YTpi", "Basic Yzpk"),
        ("Proxy-Authorization", "Basic YTpi", "Basic Yzpk"),
        ("User-Agent", "a", "b"),
        ("Referer", "http://a/", "http://b/"),
        ("From", "a@example.com", "b@example.com"),
        ("Origin", "http://a", "http://b"),
        (
            "Date",
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:38 GMT",
        ),
        ("Max-Forwards", "1", "2"),
        ("Range", "bytes=0-1", "bytes=2-3"),
        ("If-Range", "\"a\"", "\"b\""),
        (
            "If-Modified-Since",
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT",
        ),
        (
            "If-Unmodified-Since",
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT",
        ),
        ("Content-Location", "/a", "/b"),
        ("Content-Range", "bytes 0-1/2", "bytes 0-1/2"),
    ] {
        // Apart, with another field between them, and in another case.
        let upper = name.to_ascii_uppercase();
        let request = with_fields(&format!("{name}: {a}\r\nX-Between: 1\r\n{upper}: {b}\r\n"));
        failures.extend(refused(&host, name, &request));
    }
    all_pass(failures);
    host.wait_for_log("more than one Content-Type", 1);
}

#[test]
fn list_fields_and_single_singletons_still_reach_the_app() {
    let host = Host::app("echo", &[]);
    let mut failures = Vec::new();
    for fields in [
        // List-valued fields may repeat (RFC 9110 §5.3).
        "Accept: text/html\r\nAccept: application/json\r\n",
        "Cache-Control: no-cache\r\nCache-Control: no-store\r\n",
        "X-Custom: 1\r\nX-Custom: 2\r\n",
        // Cookie is a singleton in RFC 6265, but HTTP/2 gateways may split it.
        "Cookie: a=1\r\nCookie: b=2\r\n",
        // Each singleton once.
        "Content-Type: text/plain\r\nUser-Agent: t\r\nReferer: http://a/\r\nRange: bytes=0-1\r\n\
         Authorization: Basic YTpi\r\nOrigin: http://a\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
    ] {
        failures.extend(served(&host, fields, &with_fields(fields)));
    }
    all_pass(failures);
}
