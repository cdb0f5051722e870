//! The response rules: what an app may and may not put in a response, each
//! refusal an error the app sees (the `rules` app reports it in `X-Refused`,
//! or fails the call with it) and one warning in the log naming the worker
//! and the request id; and the app's `Content-Length`, which the host honours
//! (HEAD, known-length streams, whole bodies and files that must match).

use std::{io::Read, io::Write};

use tests::{connect, metrics_addr, parse_responses, raw, read_to_close, sample, Host, Scratch};

/// A request to the `rules` app: `method path` with the id `id` and the
/// extra header lines `extra` (`Name: value`), closing after it.
fn request(method: &str, path: &str, id: &str, extra: &[&str]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nX-Request-Id: {id}\r\n");
    for line in extra {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("Connection: close\r\n\r\n");
    text.into_bytes()
}

/// The one response to `GET path` with `extra` header lines.
fn get(host: &Host, path: &str, id: &str, extra: &[&str]) -> tests::Response {
    let bytes = raw(host.addr(), &request("GET", path, id, extra));
    let mut resps = parse_responses(&bytes);
    assert_eq!(resps.len(), 1, "{:?}", String::from_utf8_lossy(&bytes));
    resps.remove(0)
}

/// The one log line that mentions request `id` and contains `needle`.
fn line_for(host: &Host, id: &str, needle: &str) -> String {
    let tag = format!("id {id})");
    host.wait_for_log(&tag, 1);
    tests::eventually(&format!("a log line with {needle:?} for {id}"), || {
        host.log_lines()
            .into_iter()
            .find(|l| l.contains(&tag) && l.contains(needle))
    })
}

/// Checks the refusal of request `id`: one warning, naming the worker and
/// the request, with `why` in it.
fn refused_once(host: &Host, id: &str, why: &str) {
    let line = line_for(host, id, "app response refused");
    assert!(line.contains("[WARNING]"), "{line}");
    assert!(line.contains(why), "{line}");
    assert!(line.contains("(worker 1, id "), "{line}");
    let tag = format!("id {id})");
    let refusals = host
        .log_lines()
        .iter()
        .filter(|l| l.contains(&tag) && l.contains("app response refused"))
        .count();
    assert_eq!(refusals, 1, "logged once: {:#?}", host.log_lines());
}

#[test]
fn a_status_outside_200_to_999_is_refused() {
    let host = Host::app("rules", &["-w", "1"]);
    for code in [0, 1, 100, 101, 199, 1000] {
        let id = format!("status-{code}");
        let resp = get(&host, "/try-status", &id, &[&format!("X-Status: {code}")]);
        assert_eq!(resp.status, 200, "code {code}");
        let refused = resp.header("x-refused").unwrap_or_default();
        assert!(refused.contains("not a final status"), "{code}: {refused}");
        refused_once(&host, &id, &format!("status {code} is not a final status"));
    }
    for code in [200, 299, 999] {
        let resp = get(&host, "/try-status", "ok", &[&format!("X-Status: {code}")]);
        assert_eq!((resp.status, resp.header("x-refused")), (code, None));
    }
    // Chained, the refusal comes back from the body call: `?` makes it a 500.
    let resp = get(&host, "/status", "chained", &["X-Status: 1000"]);
    assert_eq!(resp.status, 500);
    let line = line_for(&host, "chained", "app returned an error");
    assert!(line.contains("status 1000 is not a final status"), "{line}");
}

#[test]
fn transfer_encoding_is_refused() {
    let host = Host::app("rules", &["-w", "1"]);
    let resp = get(
        &host,
        "/try-header",
        "te",
        &["X-Name: Transfer-Encoding", "X-Value: chunked"],
    );
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("x-refused")
            .is_some_and(|r| r.contains("the host frames the body")),
        "{resp:?}"
    );
    assert_eq!(resp.header("transfer-encoding"), None);
    assert_eq!(resp.header("content-length"), Some("5"));
    refused_once(
        &host,
        "te",
        "\"Transfer-Encoding\": the host frames the body",
    );
    let resp = get(
        &host,
        "/header",
        "te-chained",
        &["X-Name: transfer-encoding", "X-Value: gzip"],
    );
    assert_eq!(resp.status, 500);
}

#[test]
fn date_and_server_are_the_apps_to_set() {
    let host = Host::app("rules", &["-w", "1"]);
    for (name, value) in [
        ("Server", "mine/1.0"),
        ("Date", "Thu, 01 Jan 2026 00:00:00 GMT"),
    ] {
        let resp = get(
            &host,
            "/try-header",
            "own",
            &[&format!("X-Name: {name}"), &format!("X-Value: {value}")],
        );
        assert_eq!(resp.header("x-refused"), None, "{resp:?}");
        let sent: Vec<&str> = resp
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(sent, [value], "the app's {name} replaces the host's");
    }
    assert_eq!(host.count_log("app response refused"), 0);
}

#[test]
fn connection_close_is_honoured_keep_alive_accepted_others_refused() {
    let host = Host::app("rules", &["-w", "1"]);
    let pipelined = |value: &str| {
        let request = format!(
            "GET /try-header HTTP/1.1\r\nHost: t\r\nX-Request-Id: conn\r\nX-Name: Connection\r\nX-Value: {value}\r\n\r\n\
             GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        );
        parse_responses(&raw(host.addr(), request.as_bytes()))
    };
    let resps = pipelined("close");
    assert_eq!(
        resps.len(),
        1,
        "the host closed after the response: {resps:?}"
    );
    assert_eq!(resps[0].header("connection"), Some("close"));
    assert_eq!(resps[0].header("x-refused"), None);
    let resps = pipelined("keep-alive");
    assert_eq!(resps.len(), 2, "keep-alive changes nothing: {resps:?}");
    assert_eq!(resps[0].header("x-refused"), None);
    assert_eq!(resps[0].header("connection"), None);
    assert_eq!(host.count_log("app response refused"), 0);
    let resp = get(
        &host,
        "/try-header",
        "upgrade",
        &["X-Name: Connection", "X-Value: upgrade"],
    );
    assert!(
        resp.header("x-refused")
            .is_some_and(|r| r.contains("close or keep-alive")),
        "{resp:?}"
    );
    refused_once(
        &host,
        "upgrade",
        "Connection may only be close or keep-alive",
    );
}

#[test]
fn an_invalid_or_second_content_length_is_refused() {
    let host = Host::app("rules", &["-w", "1"]);
    for (id, value) in [
        ("cl-word", "five"),
        ("cl-negative", "-1"),
        ("cl-list", "5, 5"),
    ] {
        let resp = get(
            &host,
            "/try-header",
            id,
            &["X-Name: Content-Length", &format!("X-Value: {value}")],
        );
        assert!(
            resp.header("x-refused")
                .is_some_and(|r| r.contains("must be a number")),
            "{value}: {resp:?}"
        );
        assert_eq!(resp.header("content-length"), Some("5"), "{resp:?}");
        refused_once(&host, id, "Content-Length must be a number");
    }
    let resp = get(&host, "/two-lengths", "cl-twice", &[]);
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("x-refused")
            .is_some_and(|r| r.contains("a second Content-Length")),
        "{resp:?}"
    );
    assert_eq!(resp.text(), "done\n");
    refused_once(
        &host,
        "cl-twice",
        "a second Content-Length (5; the first was 5)",
    );
}

#[test]
fn a_whole_body_must_match_the_apps_content_length() {
    let host = Host::app("rules", &["-w", "1"]);
    let resp = get(&host, "/length", "match", &["X-Length: 5", "X-Body: hello"]);
    assert_eq!((resp.status, resp.text().as_str()), (200, "hello"));
    assert_eq!(resp.header("content-length"), Some("5"));
    // A mismatch is refused, nothing of it sent; with `?` the call fails: 500.
    let resp = get(&host, "/length", "short", &["X-Length: 9", "X-Body: hello"]);
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), "Internal Server Error\n");
    refused_once(
        &host,
        "short",
        "the body is 5 bytes but the app set Content-Length: 9",
    );
    // Ignored by the app, the refusal still keeps the wrong body from the
    // client: the host answers 500 when the call returns (and says so).
    let resp = get(
        &host,
        "/length-ignored",
        "ignored",
        &["X-Length: 2", "X-Body: hello"],
    );
    assert_eq!(resp.status, 500);
    line_for(
        &host,
        "ignored",
        "the body is 5 bytes but the app set Content-Length: 2",
    );
    let line = line_for(&host, "ignored", "nothing was sent");
    assert!(line.contains("answered 500"), "{line}");
    // A header refused and ignored keeps the body from going out too: the
    // SDK fails the call.
    let resp = get(
        &host,
        "/length-ignored",
        "ignored-header",
        &["X-Length: x", "X-Body: hello"],
    );
    assert_eq!(resp.status, 500);
    let line = line_for(&host, "ignored-header", "app returned an error");
    assert!(line.contains("the host refused the response"), "{line}");
}

#[test]
fn head_sends_the_apps_content_length_without_a_body() {
    let host = Host::app("rules", &["-w", "1"]);
    // What a framework does on HEAD: the length of the GET's body, no body.
    let mut stream = connect(host.addr());
    stream
        .write_all(
            b"HEAD /length HTTP/1.1\r\nHost: t\r\nX-Length: 5\r\nX-Body:\r\n\r\n\
              GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let bytes = read_to_close(&mut stream);
    let text = String::from_utf8_lossy(&bytes);
    let (head, rest) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(head.contains("\r\nContent-Length: 5"), "{text}");
    assert!(
        rest.starts_with("HTTP/1.1 200 OK\r\n"),
        "no body after the HEAD response's head: {text}"
    );
    assert_eq!(host.count_log("app response refused"), 0);
}

#[test]
fn a_stream_of_known_length_is_not_chunked() {
    let host = Host::app("rules", &["-w", "1"]);
    let mut stream = connect(host.addr());
    stream
        .write_all(
            b"GET /stream HTTP/1.1\r\nHost: t\r\nX-Length: 10\r\nX-Write: 10\r\n\r\n\
              GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let bytes = read_to_close(&mut stream);
    let resps = parse_responses(&bytes);
    assert_eq!(resps.len(), 2, "{:?}", String::from_utf8_lossy(&bytes));
    assert_eq!(resps[0].header("content-length"), Some("10"));
    assert_eq!(resps[0].header("transfer-encoding"), None);
    assert!(!resps[0].chunked);
    assert_eq!(resps[0].body, b"aaaaaaaaaa");
    // Without a length, the same stream is chunked.
    let resp = get(&host, "/stream", "chunked", &["X-Write: 10"]);
    assert!(resp.chunked, "{resp:?}");
    assert_eq!(resp.body, b"aaaaaaaaaa");
}

#[test]
fn a_stream_that_ends_short_closes_the_connection() {
    let host = Host::app("rules", &["-w", "1"]);
    let mut stream = connect(host.addr());
    stream
        .write_all(
            b"GET /stream HTTP/1.1\r\nHost: t\r\nX-Request-Id: short\r\nX-Length: 10\r\nX-Write: 4\r\n\r\n\
              GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let bytes = read_to_close(&mut stream);
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.contains("\r\nContent-Length: 10"), "{text}");
    assert_eq!(
        body, "aaaa",
        "four bytes, then the connection closes: {text}"
    );
    refused_once(&host, "short", "the stream ended 6 bytes short");
}

#[test]
fn a_stream_write_past_the_length_is_refused() {
    let host = Host::app("rules", &["-w", "1"]);
    let mut stream = connect(host.addr());
    stream
        .write_all(
            b"GET /stream HTTP/1.1\r\nHost: t\r\nX-Request-Id: over\r\nX-Length: 4\r\nX-Write: 10\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let (_, body) = text.split_once("\r\n\r\n").expect("a head");
    assert_eq!(body, "aaa", "the refused write sent nothing: {text}");
    host.wait_for_log("rules: stream write refused", 1);
    let line = line_for(&host, "over", "a stream write of 3 bytes");
    assert!(
        line.contains("only 1 of the app's Content-Length: 4"),
        "{line}"
    );
    // The stream then ended a byte short: the connection was closed (logged).
    line_for(&host, "over", "the stream ended 1 bytes short");
}

#[test]
fn a_file_must_match_the_apps_content_length() {
    let host = Host::app("rules", &["-w", "1"]);
    let scratch = Scratch::new("rules-file");
    let file = scratch.file("twelve.txt");
    std::fs::write(&file, b"twelve bytes").unwrap();
    let resp = get(
        &host,
        "/file",
        "file-ok",
        &["X-Length: 12", &format!("X-File: {file}")],
    );
    assert_eq!((resp.status, resp.text().as_str()), (200, "twelve bytes"));
    let resp = get(
        &host,
        "/file",
        "file-bad",
        &["X-Length: 5", &format!("X-File: {file}")],
    );
    assert_eq!(resp.status, 500);
    refused_once(
        &host,
        "file-bad",
        "the body is 12 bytes but the app set Content-Length: 5",
    );
}

#[test]
fn an_error_after_the_client_left_is_not_an_app_error() {
    let maddr = metrics_addr();
    let m = maddr.to_string();
    let host = Host::app("rules", &["-w", "1", "--metrics-bind", &m]);
    let mut stream = connect(host.addr());
    stream
        .write_all(&request("GET", "/flood", "flood", &[]))
        .unwrap();
    let mut first = [0u8; 1024];
    stream.read_exact(&mut first).expect("the flood starts");
    drop(stream);
    let line = line_for(&host, "flood", "app returned an error");
    assert!(line.contains("[INFO]"), "{line}");
    assert!(line.contains("after the client went away"), "{line}");
    assert_eq!(host.count_log("[ERROR]"), 0, "{:#?}", host.log_lines());
    // An app error proper is counted; the flood's was not.
    assert_eq!(get(&host, "/error", "error", &[]).status, 500);
    let errors = tests::eventually("host_app_errors_total counts /error", || {
        let metrics = tests::get(maddr, "/metrics").text();
        sample(&metrics, "host_app_errors_total ").filter(|&n| n >= 1.0)
    });
    assert_eq!(errors, 1.0);
}

#[test]
fn a_clients_mistake_returned_with_question_mark_is_a_4xx_not_an_app_error() {
    let host = Host::app("rules", &[]);
    let bytes = raw(
        host.addr(),
        b"POST /limited HTTP/1.1\r\nHost: t\r\nX-Request-Id: big\r\nContent-Length: 17\r\nConnection: close\r\n\r\n0123456789abcdefg",
    );
    let resps = parse_responses(&bytes);
    assert_eq!(resps.len(), 1, "{:?}", String::from_utf8_lossy(&bytes));
    assert_eq!(resps[0].status, 413);
    assert!(
        resps[0].text().contains("limit of 16 bytes"),
        "{}",
        resps[0].text()
    );
    let bytes = raw(
        host.addr(),
        b"POST /limited HTTP/1.1\r\nHost: t\r\nContent-Length: 16\r\nConnection: close\r\n\r\n0123456789abcdef",
    );
    assert_eq!(parse_responses(&bytes)[0].text(), "0123456789abcdef");
    let bad = get(&host, "/decoded/%FF", "bad-path", &[]);
    assert_eq!(bad.status, 400);
    assert_eq!(
        get(&host, "/decoded/caf%C3%A9", "good-path", &[]).text(),
        "/decoded/café"
    );
    // Client errors, not the app's: no error line, no worker retired.
    let lines = host.log_lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("app returned an error") || l.contains("retires")),
        "{lines:#?}"
    );
}
