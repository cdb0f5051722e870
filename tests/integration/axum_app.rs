//! The axum example app through the real binary: app-sdk's `tower` bridge
//! serving an axum `Router` (extractors, JSON, per-worker state, `HEAD`,
//! bodies streamed in and out, futures that go through the runtime).

use std::thread;

use nix::sys::signal::Signal;
use tests::{parse_responses, raw, Host};

/// A request with a body, asking the server to close after it.
fn post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// One response from `bytes`, failing the test otherwise.
fn one(bytes: &[u8]) -> tests::Response {
    let mut responses = parse_responses(bytes);
    assert_eq!(
        responses.len(),
        1,
        "one response, got {:?}",
        String::from_utf8_lossy(bytes)
    );
    responses.remove(0)
}

/// A body of `len` bytes that is not all one value.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn byte_sum(bytes: &[u8]) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

#[test]
fn json_posted_is_stored_per_worker_and_read_back() {
    let host = Host::app("axum-app", &["-w", "1"]);
    let created = one(&raw(
        host.addr(),
        &post("/items", "application/json", br#"{"name":"pen","qty":3}"#),
    ));
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("content-type"), Some("application/json"));
    let item = created.json();
    assert_eq!(item["name"], "pen");
    assert_eq!(item["qty"], 3);
    let id = item["id"].as_u64().expect("a numeric id");

    let read = host.get(&format!("/items/{id}"));
    assert_eq!(read.status, 200);
    assert_eq!(read.json(), item);

    // The counter is the worker's state, kept between requests.
    let counts: Vec<_> = (0..3)
        .map(|_| host.get("/count").json()["count"].clone())
        .collect();
    assert_eq!(counts, [1, 2, 3]);
    assert!(host.get("/count").json()["worker"].as_u64().unwrap() >= 1);
}

#[test]
fn json_the_extractor_refuses_is_a_client_error() {
    let host = Host::app("axum-app", &[]);
    let bad = one(&raw(
        host.addr(),
        &post("/items", "application/json", b"{not json"),
    ));
    assert_eq!(bad.status, 400, "{}", bad.text());
    let untyped = one(&raw(host.addr(), &post("/items", "text/plain", b"{}")));
    assert_eq!(untyped.status, 415, "{}", untyped.text());
}

#[test]
fn path_parameters_are_percent_decoded() {
    let host = Host::app("axum-app", &[]);
    let resp = host.get("/hello/J%C3%BCrgen%20%2F%20x");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["hello"], "Jürgen / x");
}

#[test]
fn query_parameters_are_decoded_and_required_ones_checked() {
    let host = Host::app("axum-app", &[]);
    let resp = host.get("/search?q=rust%20web&limit=3");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.json(),
        serde_json::json!({ "q": "rust web", "limit": 3 })
    );
    assert_eq!(host.get("/search?limit=3").status, 400);
}

#[test]
fn unknown_routes_and_items_are_not_found() {
    let host = Host::app("axum-app", &[]);
    assert_eq!(host.get("/no/such/route").status, 404);
    assert_eq!(host.get("/items/999").status, 404);
    // A method the route lacks.
    assert_eq!(
        one(&raw(host.addr(), &post("/count", "text/plain", b""))).status,
        405
    );
}

#[test]
fn head_announces_the_length_get_sends_and_no_body() {
    let host = Host::app("axum-app", &[]);
    let get = host.get("/hello/bob");
    let get_len = get.header("content-length").expect("GET has a length");
    assert_eq!(get_len, get.body.len().to_string());

    // HEAD then GET on one connection: if the HEAD carried body bytes,
    // they would sit where the second status line must be.
    let reply = raw(
        host.addr(),
        b"HEAD /hello/bob HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /hello/bob HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&reply);
    let (head, rest) = text.split_once("\r\n\r\n").expect("a HEAD response");
    assert!(head.starts_with("HTTP/1.1 200 "), "{text}");
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap_or_else(|| panic!("HEAD has a Content-Length: {head}"));
    assert_eq!(length, get_len, "{head}");
    assert!(rest.starts_with("HTTP/1.1 200 "), "{text}");
}

#[test]
fn request_bodies_stream_in_pieces() {
    let host = Host::app("axum-app", &[]);
    let body = pattern(200_000);
    let want_sum = byte_sum(&body);

    let sized = one(&raw(
        host.addr(),
        &post("/upload", "application/octet-stream", &body),
    ));
    assert_eq!(sized.status, 200, "{}", sized.text());
    let report = sized.json();
    assert_eq!(report["bytes"], 200_000);
    assert_eq!(report["sum"], want_sum);
    // Read as it came, in pieces of at most BODY_CHUNK (16 KiB), not whole.
    assert!(
        report["pieces"].as_u64().unwrap() >= 200_000 / (16 * 1024),
        "{report}"
    );

    // The same body chunked: no length known up front.
    let mut chunked = b"POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                        Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for part in body.chunks(30_000) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let report = one(&raw(host.addr(), &chunked)).json();
    assert_eq!(report["bytes"], 200_000);
    assert_eq!(report["sum"], want_sum);
}

#[test]
fn a_body_of_unknown_length_streams_out_chunked() {
    let host = Host::app("axum-app", &[]);
    let resp = host.get("/stream");
    assert_eq!(resp.status, 200);
    assert!(resp.chunked, "{:?}", resp.headers);
    assert_eq!(resp.text(), "part 1\npart 2\npart 3\npart 4\npart 5\n");
}

#[test]
fn pending_futures_run_on_the_runtime_of_each_handler_thread() {
    let host = Host::app("axum-app", &["--threads", "3"]);
    let addr = host.addr();
    let clients: Vec<_> = (0..6)
        .map(|i| {
            thread::spawn(move || {
                let path = if i % 2 == 0 { "/sleep?ms=50" } else { "/yield" };
                tests::get(addr, path)
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let resp = client.join().expect("client thread");
        assert_eq!(resp.status, 200, "{}", resp.text());
        let want = if i % 2 == 0 {
            "slept 50ms\n"
        } else {
            "hello from axum\n"
        };
        assert_eq!(resp.text(), want);
    }

    // The workers' runtimes are dropped with their threads: a clean stop.
    host.signal(Signal::SIGTERM);
    let mut host = host;
    assert!(host.wait_exit().success());
    assert_eq!(host.count_log("panicked"), 0, "{:#?}", host.log_lines());
}
