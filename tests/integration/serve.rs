//! Serving: what a client sees from a healthy server, over raw TCP and curl.

use std::io::Write;

use base64::Engine;
use tests::{connect, curl, parse_responses, raw, read_response, Host};

#[test]
fn hello_over_curl() {
    let host = Host::app("hello", &[]);
    let url = format!("http://{}/any/path", host.addr());
    let (code, out, err) = curl(&["-i", &url]);
    assert_eq!(code, 0, "{err}");
    let resp = &parse_responses(out.as_bytes())[0];
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "Hello, World!");
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(resp.header("content-length"), Some("13"));
    assert!(resp.header("date").is_some_and(|d| d.ends_with(" GMT")));
    assert!(resp
        .header("server")
        .is_some_and(|s| s.starts_with("host/")));
}

#[test]
fn echo_reflects_the_request_exactly() {
    let host = Host::app("echo", &[]);
    let request = b"POST /a/b?x=1&y=%20 HTTP/1.1\r\nHost: test\r\nX-Mixed-Case: One\r\nx-dup: 1\r\nX-Dup: 2\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let bytes = raw(host.addr(), request);
    let resp = &parse_responses(&bytes)[0];
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let j = resp.json();
    assert_eq!(j["method"], "POST");
    assert_eq!(j["target"], "/a/b?x=1&y=%20");
    assert_eq!(j["path"], "/a/b");
    assert_eq!(j["query"], "x=1&y=%20");
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(j["scheme"], "http");
    assert!(j["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(j["local_addr"], host.addr().to_string());
    let headers: Vec<(String, String)> = j["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Host",
            "X-Mixed-Case",
            "x-dup",
            "X-Dup",
            "Content-Length",
            "Connection"
        ]
    );
    assert_eq!(headers[1].1, "One");
    let body = base64::engine::general_purpose::STANDARD
        .decode(j["body_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(body, b"hello");
}

#[test]
fn echo_decodes_a_chunked_body_with_trailers() {
    let host = Host::app("echo", &[]);
    let request = b"POST /c HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: yes\r\n\r\n";
    let resp = &parse_responses(&raw(host.addr(), request))[0];
    assert_eq!(resp.status, 200);
    let body = base64::engine::general_purpose::STANDARD
        .decode(resp.json()["body_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(body, b"Wikipedia");
}

#[test]
fn large_body_streams_to_the_app() {
    let host = Host::app("echo", &[]);
    let body = vec![b'z'; 300_000];
    let mut request = format!(
        "PUT /big HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let resp = &parse_responses(&raw(host.addr(), &request))[0];
    assert_eq!(resp.status, 200);
    let got = base64::engine::general_purpose::STANDARD
        .decode(resp.json()["body_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(got.len(), body.len());
    assert!(got == body);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let host = Host::app("echo", &[]);
    let mut stream = connect(host.addr());
    for i in 0..3 {
        write!(stream, "GET /ka/{i} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let resp = read_response(&mut stream);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["path"], format!("/ka/{i}"));
        assert_eq!(resp.header("connection"), None);
    }
}

#[test]
fn http10_closes_unless_keep_alive_is_asked() {
    let host = Host::app("hello", &[]);
    // Without keep-alive: the server closes after the response.
    let bytes = raw(host.addr(), b"GET / HTTP/1.0\r\n\r\n");
    let resps = parse_responses(&bytes);
    assert_eq!(resps.len(), 1);
    assert_eq!(resps[0].header("connection"), Some("close"));

    // With keep-alive: the connection stays open for a second request.
    let mut stream = connect(host.addr());
    stream
        .write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let first = read_response(&mut stream);
    assert_eq!(first.header("connection"), Some("keep-alive"));
    stream
        .write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream).status, 200);
}

#[test]
fn connection_close_is_honoured() {
    let host = Host::app("hello", &[]);
    // The second request must never be answered: the server closes after the first.
    let bytes = raw(
        host.addr(),
        b"GET /1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let resps = parse_responses(&bytes);
    assert_eq!(resps.len(), 1, "{:?}", String::from_utf8_lossy(&bytes));
    assert_eq!(resps[0].header("connection"), Some("close"));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let host = Host::app("echo", &[]);
    let mut request = Vec::new();
    for i in 0..5 {
        request.extend_from_slice(format!("GET /p/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    request.extend_from_slice(
        b"POST /p/last HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    );
    let resps = parse_responses(&raw(host.addr(), &request));
    let paths: Vec<String> = resps
        .iter()
        .map(|r| r.json()["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["/p/0", "/p/1", "/p/2", "/p/3", "/p/4", "/p/last"]);
}

#[test]
fn head_has_the_get_headers_and_no_body() {
    let host = Host::app("hello", &[]);
    let bytes = raw(
        host.addr(),
        b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    // If HEAD carried a body, the GET's status line would be read as its body.
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let head_end = text.find("\r\n\r\n").unwrap() + 4;
    assert!(
        text[..head_end].contains("Content-Length: 13\r\n"),
        "{text}"
    );
    assert!(
        text[head_end..].starts_with("HTTP/1.1 200 OK\r\n"),
        "{text}"
    );
    assert!(text.ends_with("Hello, World!"), "{text}");
}

#[test]
fn expect_100_continue_gets_an_interim_response() {
    let host = Host::app("echo", &[]);
    let mut stream = connect(host.addr());
    stream
        .write_all(
            b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        )
        .unwrap();
    let interim = read_response(&mut stream);
    assert_eq!(interim.status, 100);
    stream.write_all(b"data").unwrap();
    let resp = read_response(&mut stream);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["body_b64"], "ZGF0YQ==");
}

#[test]
fn stream_sends_a_chunked_body() {
    let host = Host::app("stream", &[]);
    let resp = host.get("/?n=4");
    assert_eq!(resp.status, 200);
    assert!(resp.chunked, "{:?}", resp.headers);
    assert_eq!(resp.text(), "part 1\npart 2\npart 3\npart 4\n");
    // HTTP/1.0 clients get the stream close-delimited.
    let bytes = raw(host.addr(), b"GET /?n=2 HTTP/1.0\r\n\r\n");
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("chunked"), "{text}");
    assert!(text.ends_with("\r\n\r\npart 1\npart 2\n"), "{text}");
}

#[test]
fn two_workers_both_serve() {
    let host = Host::app("echo", &["-w", "2"]);
    host.wait_for_log("ready in", 2);
    let mut pids = std::collections::BTreeSet::new();
    tests::eventually("requests served by two different workers", || {
        // Hold one connection open so the next request must go to the other worker.
        let mut held = connect(host.addr());
        held.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        pids.insert(read_response(&mut held).json()["pid"].as_u64().unwrap());
        pids.insert(host.get("/").json()["pid"].as_u64().unwrap());
        (pids.len() >= 2).then_some(())
    });
}

#[test]
fn unix_socket_serves() {
    let dir = std::env::temp_dir().join(format!("host-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("app.sock");
    let bind = format!("unix:{}", sock.display());
    let app = tests::app_arg("echo");
    let host = Host::start(&["-b", &bind, &app]);
    host.wait_for_log(&format!("listening on {bind}"), 1);
    let (code, out, err) = curl(&["--unix-socket", sock.to_str().unwrap(), "http://x/unix?q=1"]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["path"], "/unix");
    assert_eq!(j["remote_addr"], "");
    assert_eq!(j["local_addr"], bind);
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The access log's content once it holds a whole line.
fn access_line(log: &std::path::Path) -> String {
    tests::eventually("an access-log line", || {
        std::fs::read_to_string(log)
            .ok()
            .filter(|s| s.ends_with('\n'))
    })
}

#[test]
fn access_log_writes_combined_format() {
    let dir = std::env::temp_dir().join(format!("host-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let host = Host::app("hello", &["--access-logfile", log.to_str().unwrap()]);
    let (code, _, err) = curl(&[
        "-A",
        "test-agent/1",
        &format!("http://{}/x?y=1", host.addr()),
    ]);
    assert_eq!(code, 0, "{err}");
    let line = access_line(&log);
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains("] \"GET /x?y=1 HTTP/1.1\" 200 13 \"-\" \"test-agent/1\""),
        "{line}"
    );
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn forwarded_headers_count_only_from_trusted_proxies() {
    let request = b"GET /f HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.7\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";
    // 127.0.0.1 is trusted by default: the proxy's word is taken.
    let host = Host::app("echo", &[]);
    let j = parse_responses(&raw(host.addr(), request))[0].json();
    assert_eq!(j["remote_addr"], "203.0.113.7");
    assert_eq!(j["scheme"], "https");
    // Not trusted: the headers change nothing.
    let host = Host::app("echo", &["--forwarded-allow-ips", "10.0.0.0/8"]);
    let j = parse_responses(&raw(host.addr(), request))[0].json();
    assert!(
        j["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{j}"
    );
    assert_eq!(j["scheme"], "http");
    // Trusted hops in the chain are skipped: the nearest address from the
    // right that is not a trusted proxy is the client.
    let host = Host::app(
        "echo",
        &["--forwarded-allow-ips", "127.0.0.1,203.0.113.0/24"],
    );
    let j = parse_responses(&raw(host.addr(), request))[0].json();
    assert_eq!(j["remote_addr"], "6.6.6.6");
}

#[test]
fn unix_socket_mode_and_owner_and_inherited_descriptors() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = std::env::temp_dir().join(format!("host-sockmode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("m.sock");
    let bind = format!("unix:{}", sock.display());
    let app = tests::app_arg("hello");
    let mut args = vec!["-b", &bind, "--socket-mode", "660"];
    let root = nix::unistd::Uid::effective().is_root();
    if root {
        args.extend(["--socket-owner", "nobody"]);
    }
    args.push(&app);
    let host = Host::start(&args);
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    if root {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        assert_eq!(meta.uid(), nobody.uid.as_raw());
    }
    drop(host);
    // fd://N: a descriptor that is not a listening socket is refused.
    let mut host = Host::spawn(&["-b", "fd://0", &app]);
    assert_eq!(host.wait_exit().code(), Some(3));
    assert!(host
        .log_lines()
        .iter()
        .any(|l| l.contains("not a listening socket")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reuse_port_lets_two_servers_share_a_port() {
    let first = Host::app("hello", &["--reuse-port"]);
    let addr = first.addr().to_string();
    let app = tests::app_arg("echo");
    let second = Host::start(&["--reuse-port", "-b", &addr, &app]);
    assert_eq!(second.addr(), first.addr());
    // Without it, the port is taken.
    let mut third = Host::spawn(&["-b", &addr, &app]);
    assert_eq!(third.wait_exit().code(), Some(3));
}

#[test]
#[ignore = "needs an IPv6 loopback (::1)"]
fn access_log_names_an_ipv6_client_without_brackets_or_port() {
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        panic!("this test needs an IPv6 loopback (::1): {e}; run it where there is one (CI does) or without --include-ignored");
    }
    let dir = tests::Scratch::new("access-v6");
    let log = dir.join("access.log");
    let host = Host::app(
        "hello",
        &["-b", "[::1]:0", "--access-logfile", log.to_str().unwrap()],
    );
    let (code, _, err) = curl(&["-g", &format!("http://{}/v6", host.addr())]);
    assert_eq!(code, 0, "{err}");
    let line = access_line(&log);
    assert!(line.starts_with("::1 - - ["), "{line}");
}

#[test]
fn the_date_header_follows_the_clock() {
    // With and without handler threads, over one keep-alive connection.
    for threads in ["1", "2"] {
        let host = Host::app("hello", &["--threads", threads]);
        host.wait_for_log("ready in", 1);
        let mut s = connect(host.addr());
        let mut date = || {
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let resp = read_response(&mut s);
            resp.header("date").map(str::to_owned).unwrap()
        };
        let first = date();
        // The header has one-second resolution: once the clock has passed
        // the second the first answer was made in, the next must differ.
        let answered_by = unix_second();
        tests::eventually("the clock to reach the next second", || {
            (unix_second() > answered_by).then_some(())
        });
        assert_ne!(first, date(), "--threads {threads}");
    }
}

/// The wall clock's current second since the Unix epoch.
fn unix_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}
