//! What an app sees of TLS, against the real binary: the request's scheme
//! and TLS facts (`Request::tls`, ABI revision 1) as the `echo` app reports
//! them at `GET /tls`, through curl over the host's `tls://` listener (SNI
//! by `--resolve`, ALPN, TLS 1.2 and 1.3, a client certificate). A plain
//! connection has none (a trusted proxy may still say `https`), and an app
//! built against app-sdk 0.2.0, which knows nothing of them, serves over TLS
//! as before.

use std::net::SocketAddr;

use serde_json::{json, Value};
use tests::{free_port, parse_responses, raw, tls::Pki, Host, Scratch};

use tests::tls::host as tls_host;

/// curl over TLS (see [`tests::tls::curl`]): the body, after checking curl succeeded.
fn curl_tls(pki: &Pki, addr: SocketAddr, name: &str, path: &str, extra: &[&str]) -> String {
    let (code, body, err) = tests::tls::curl(pki, addr, name, path, extra);
    assert_eq!(code, 0, "curl {name}{path} {extra:?}: {err}");
    body
}

/// What `echo` at `/tls` says over TLS.
fn tls_facts(pki: &Pki, addr: SocketAddr, name: &str, extra: &[&str]) -> Value {
    let body = curl_tls(pki, addr, name, "/tls", extra);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// What `echo` at `/tls` says of `request`, sent over plain TCP to `addr`.
fn facts(addr: SocketAddr, request: &str) -> Value {
    let responses = parse_responses(&raw(addr, request.as_bytes()));
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].status, 200, "{}", responses[0].text());
    responses[0].json()
}

#[test]
fn a_plain_connection_has_no_tls_facts_whatever_a_proxy_says() {
    let host = Host::app("echo", &[]);
    let plain = facts(
        host.addr(),
        "GET /tls HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(plain, json!({"scheme": "http", "tls": null}));
    // 127.0.0.1 is a trusted proxy by default: its word sets the scheme,
    // but the host saw no TLS, so the app gets no facts.
    let proxied = facts(
        host.addr(),
        "GET /tls HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(proxied, json!({"scheme": "https", "tls": null}));
}

#[test]
fn curl_over_tls_shows_the_sessions_facts_to_the_app() {
    let dir = Scratch::new("tls-facts");
    let pki = Pki::new(dir.path());
    let server = pki.server(&["a.test", "b.test"]);
    let alice = pki.client("alice");
    let ca = pki.ca.display().to_string();
    let (cert, key) = (
        alice.cert.display().to_string(),
        alice.key.display().to_string(),
    );
    let plain = format!("127.0.0.1:{}", free_port());
    let host = tls_host(
        "echo",
        &server,
        &["--ca-certs", &ca, "--client-cert", "optional", "-b", &plain],
    );
    let addr = host.addr();

    // TLS 1.3 (curl's default here), SNI from the URL's name, ALPN http/1.1.
    let seen = tls_facts(&pki, addr, "a.test", &[]);
    assert_eq!(seen["scheme"], "https", "{seen}");
    let tls = &seen["tls"];
    assert_eq!(tls["version"], "TLSv1.3", "{seen}");
    assert!(
        tls["cipher"]
            .as_str()
            .is_some_and(|c| c.starts_with("TLS13_")),
        "{seen}"
    );
    assert_eq!(tls["sni"], "a.test", "{seen}");
    assert_eq!(tls["alpn"], "http/1.1", "{seen}");
    assert_eq!(tls["client_subject"], Value::Null, "{seen}");

    // Another name, a client certificate, TLS 1.2, no ALPN.
    let seen = tls_facts(
        &pki,
        addr,
        "b.test",
        &[
            "--cert",
            &cert,
            "--key",
            &key,
            "--tls-max",
            "1.2",
            "--no-alpn",
        ],
    );
    let tls = &seen["tls"];
    assert_eq!(tls["version"], "TLSv1.2", "{seen}");
    assert!(
        tls["cipher"]
            .as_str()
            .is_some_and(|c| c.starts_with("TLS_ECDHE_")),
        "{seen}"
    );
    assert_eq!(tls["sni"], "b.test", "{seen}");
    assert_eq!(tls["alpn"], Value::Null, "{seen}");
    assert!(
        tls["client_subject"]
            .as_str()
            .is_some_and(|s| s.contains("CN=alice")),
        "{seen}"
    );

    // A trusted proxy's word on the scheme wins; the facts are the host's.
    let seen = tls_facts(&pki, addr, "a.test", &["-H", "X-Forwarded-Proto: http"]);
    assert_eq!(seen["scheme"], "http", "{seen}");
    assert_eq!(seen["tls"]["sni"], "a.test", "{seen}");

    // The full description carries them too; the plain listener beside
    // the TLS one has none.
    let body = curl_tls(&pki, addr, "a.test", "/other", &[]);
    let seen: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(seen["tls"]["version"], "TLSv1.3", "{seen}");
    let seen = facts(
        plain.parse().expect("an address"),
        "GET /tls HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(seen, json!({"scheme": "http", "tls": null}));
}

/// An app built against app-sdk 0.2.0 gets the longer request table of
/// revision 1, with the TLS pointer set past what it knows: it serves over
/// TLS as it does over plain TCP.
#[test]
fn the_0_2_0_app_serves_over_tls() {
    let dir = Scratch::new("tls-compat");
    let pki = Pki::new(dir.path());
    let server = pki.server(&["localhost"]);
    let host = tls_host("compat-app-0-2-0", &server, &[]);
    let home = curl_tls(&pki, host.addr(), "localhost", "/", &[]);
    assert!(home.starts_with("built against app-sdk 0.2.0\n"), "{home}");
    let echo = curl_tls(
        &pki,
        host.addr(),
        "localhost",
        "/echo",
        &["--data-binary", "hello"],
    );
    assert_eq!(echo, "hello");
    assert_eq!(host.count_log("panicked"), 0);
}
