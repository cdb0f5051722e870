//! What an app sees of TLS, against the real binary: the request's scheme
//! and TLS facts (`Request::tls`, ABI revision 1) as the `echo` app reports
//! them at `GET /tls`. A plain connection has none (a trusted proxy may
//! still say `https`).

use tests::{parse_responses, raw, Host};

/// What `echo` at `/tls` says of `request`, sent over plain TCP.
fn facts(host: &Host, request: &str) -> serde_json::Value {
    let responses = parse_responses(&raw(host.addr(), request.as_bytes()));
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].status, 200, "{}", responses[0].text());
    responses[0].json()
}

#[test]
fn a_plain_connection_has_no_tls_facts_whatever_a_proxy_says() {
    let host = Host::app("echo", &[]);
    let plain = facts(
        &host,
        "GET /tls HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(plain, serde_json::json!({"scheme": "http", "tls": null}));
    // 127.0.0.1 is a trusted proxy by default: its word sets the scheme,
    // but the host saw no TLS, so the app gets no facts.
    let proxied = facts(
        &host,
        "GET /tls HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(proxied, serde_json::json!({"scheme": "https", "tls": null}));
}
