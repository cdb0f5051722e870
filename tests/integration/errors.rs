//! Error statuses: what bad requests get, and that the connection then closes.

use tests::{parse_responses, raw, Host};

/// Sends `request` (followed by a valid request that must never be answered)
/// and checks the status and that the connection closed after it.
fn expect_status(host: &Host, request: &[u8], status: u16) {
    let mut bytes = request.to_vec();
    bytes.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
    let reply = raw(host.addr(), &bytes);
    let resps = parse_responses(&reply);
    let shown = String::from_utf8_lossy(&request[..request.len().min(100)]);
    assert_eq!(
        resps.len(),
        1,
        "one response to {shown:?}; got {:?}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(resps[0].status, status, "status for {shown:?}");
    assert_eq!(resps[0].header("connection"), Some("close"), "{shown:?}");
}

#[test]
fn malformed_requests_get_400() {
    let host = Host::app("echo", &[]);
    let cases: &[&[u8]] = &[
        b"garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ];
    for case in cases {
        expect_status(&host, case, 400);
    }
}

#[test]
fn bad_chunked_body_is_refused_before_the_app_is_called() {
    let host = Host::app("echo", &[]);
    // A short chunked body: the host reads it ahead, finds the bad size and answers
    // 400 itself; the app (which would answer JSON) never sees the request.
    expect_status(
        &host,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n\r\n",
        400,
    );
    expect_status(
        &host,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
        400,
    );
}

#[test]
fn chunked_body_over_the_limit_gets_413_before_the_app() {
    let host = Host::app("echo", &["--limit-request-body", "10"]);
    expect_status(
        &host,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n",
        413,
    );
}

#[test]
fn an_error_in_a_streamed_body_reaches_the_app_as_a_read_error() {
    // Past --body-buffer the body streams to the app; a framing error found
    // then is a read error for the app, never a short body passed off as whole.
    let host = Host::app("echo", &["--body-buffer", "16"]);
    let mut request =
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    request.extend_from_slice(b"20\r\n0123456789abcdef0123456789abcdef\r\n");
    request.extend_from_slice(b"zz\r\n");
    let resps = parse_responses(&raw(host.addr(), &request));
    assert_eq!(resps.len(), 1);
    assert_eq!(resps[0].status, 400);
    assert!(
        resps[0]
            .text()
            .contains("cannot read the body: invalid chunked body"),
        "{}",
        resps[0].text()
    );
}

#[test]
fn limits_give_414_431_413() {
    let host = Host::app(
        "echo",
        &[
            "--limit-request-line",
            "100",
            "--limit-request-fields",
            "5",
            "--limit-request-field-size",
            "50",
            "--limit-request-body",
            "10",
        ],
    );
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(120));
    expect_status(&host, long_line.as_bytes(), 414);
    let many = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        (0..6).map(|i| format!("X-{i}: v\r\n")).collect::<String>()
    );
    expect_status(&host, many.as_bytes(), 431);
    let big_field = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(60)
    );
    expect_status(&host, big_field.as_bytes(), 431);
    expect_status(
        &host,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n0123456789a",
        413,
    );
    // At the limit is fine.
    let ok = raw(
        host.addr(),
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789",
    );
    assert_eq!(parse_responses(&ok)[0].status, 200);
}

#[test]
fn unsupported_coding_gets_501_and_version_505() {
    let host = Host::app("echo", &[]);
    expect_status(
        &host,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    );
    expect_status(&host, b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505);
}

#[test]
fn app_panic_gives_500_and_the_connection_survives() {
    // With --panic-policy serve: by default the worker retires after a
    // panic, and its 500 closes the connection (tests/integration/panic_policy.rs).
    let host = Host::app("crash", &["--panic-policy", "serve"]);
    let reply = raw(
        host.addr(),
        b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\nGET /fine HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let resps = parse_responses(&reply);
    assert_eq!(resps.len(), 2, "{:?}", String::from_utf8_lossy(&reply));
    assert_eq!(resps[0].status, 500);
    assert_eq!(resps[1].status, 200);
    assert_eq!(resps[1].text(), "ok\n");
    host.wait_for_log("app panicked: boom", 1);
    assert_eq!(host.count_log("ready in"), 1, "the worker was not replaced");
}
