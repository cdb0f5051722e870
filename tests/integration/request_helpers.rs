//! The SDK's request helpers, through the real host: what `path_decoded`,
//! `path_segments`, `query_pairs`, `query_param`, `headers_all`, `remote_ip`,
//! `remote_port` and `body_bytes(limit)` make of requests sent as raw bytes
//! (the echo app reports each).

use tests::{parse_responses, raw, Host, Response};

/// The one response to `request`.
fn send(host: &Host, request: &str) -> Response {
    let mut responses = parse_responses(&raw(host.addr(), request.as_bytes()));
    assert_eq!(responses.len(), 1, "{responses:?}");
    responses.remove(0)
}

/// What the echo app saw of a GET of `target` with extra header lines.
fn seen(host: &Host, target: &str, headers: &str) -> serde_json::Value {
    let r = send(
        host,
        &format!("GET {target} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn the_path_is_decoded_and_an_encoded_slash_stays_in_its_segment() {
    let host = Host::app("echo", &[]);
    let j = seen(&host, "/caf%C3%A9/a%2Fb/x+y", "");
    assert_eq!(j["path"], "/caf%C3%A9/a%2Fb/x+y", "{j}");
    assert_eq!(j["path_decoded"], "/café/a/b/x+y", "{j}");
    assert_eq!(
        j["path_segments"],
        serde_json::json!(["café", "a/b", "x+y"]),
        "{j}"
    );
    // Not UTF-8 once decoded: the helpers say so (the echo app shows null).
    let j = seen(&host, "/bad%FF", "");
    assert_eq!(j["path"], "/bad%FF", "{j}");
    assert!(j["path_decoded"].is_null(), "{j}");
    assert!(j["path_segments"].is_null(), "{j}");
}

#[test]
fn query_pairs_are_decoded_with_every_value() {
    let host = Host::app("echo", &[]);
    let j = seen(
        &host,
        "/s?tag=a&q=rust+lang&tag=%C3%A9&flag&n%61me=x%26y",
        "",
    );
    assert_eq!(j["query"], "tag=a&q=rust+lang&tag=%C3%A9&flag&n%61me=x%26y");
    assert_eq!(
        j["query_pairs"],
        serde_json::json!([
            ["tag", "a"],
            ["q", "rust lang"],
            ["tag", "é"],
            ["flag", ""],
            ["name", "x&y"]
        ]),
        "{j}"
    );
    // `query_param` decodes too: `?env=` names a variable, encoded here.
    let j = seen(&host, "/?env=P%41TH", "");
    assert!(j["env"].as_str().is_some_and(|p| !p.is_empty()), "{j}");
}

#[test]
fn headers_all_gives_every_line_of_a_header() {
    let host = Host::app("echo", &[]);
    let j = seen(
        &host,
        "/?header=x-tag",
        "X-Tag: one\r\nAccept: */*\r\nx-tag: two, three\r\nX-TAG: four\r\n",
    );
    assert_eq!(
        j["headers_all"],
        serde_json::json!(["one", "two, three", "four"]),
        "{j}"
    );
}

#[test]
fn remote_ip_and_port_come_from_the_connection_or_a_trusted_proxy() {
    let host = Host::app("echo", &[]);
    let j = seen(&host, "/", "");
    let addr = j["remote_addr"].as_str().expect("remote_addr");
    let port = j["remote_port"].as_u64().expect("a port");
    assert_eq!(j["remote_ip"], "127.0.0.1", "{j}");
    assert_eq!(addr, format!("127.0.0.1:{port}"));

    // From the loopback (trusted by default) a proxy names the client: no port.
    let j = seen(&host, "/", "X-Forwarded-For: 2001:db8::7\r\n");
    assert_eq!(j["remote_addr"], "2001:db8::7", "{j}");
    assert_eq!(j["remote_ip"], "2001:db8::7", "{j}");
    assert!(j["remote_port"].is_null(), "{j}");
}

#[test]
fn remote_ip_and_port_of_an_ipv6_peer() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let host = Host::app("echo", &["-b", "[::1]:0"]);
    let j = seen(&host, "/", "");
    let port = j["remote_port"].as_u64().expect("a port");
    assert_eq!(j["remote_ip"], "::1", "{j}");
    assert_eq!(j["remote_addr"], format!("[::1]:{port}"), "{j}");
}

#[test]
fn body_bytes_refuses_a_body_past_the_apps_limit() {
    let host = Host::app("echo", &[]);
    let post = |target: &str, framing: &str, body: &str| {
        send(
            &host,
            &format!(
                "POST {target} HTTP/1.1\r\nHost: t\r\n{framing}Connection: close\r\n\r\n{body}"
            ),
        )
    };
    // Within the limit, announced or chunked: the whole body.
    let r = post("/?body_limit=5", "Content-Length: 5\r\n", "hello");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_b64"], "aGVsbG8=");
    let chunked = "Transfer-Encoding: chunked\r\n";
    let r = post(
        "/?body_limit=5",
        chunked,
        "3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_b64"], "aGVsbG8=");

    // Past it: an error that says so (the echo app answers it 413).
    let r = post("/?body_limit=4", "Content-Length: 5\r\n", "hello");
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("limit of 4 bytes"), "{}", r.text());
    let r = post(
        "/?body_limit=4",
        chunked,
        "3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("limit of 4 bytes"), "{}", r.text());
}
