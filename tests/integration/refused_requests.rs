//! Requests the worker refuses before the app (400, 408, 413, 414, 431) are
//! in the access log, as Gunicorn logs them: with their status, and `-`
//! for what is unknown (the request line, when it could not be read). An
//! idle keep-alive connection that times out with nothing sent is not a
//! request, and is not logged.

use std::io::{Read, Write};

use tests::{
    connect, eventually, metrics_addr, parse_responses, raw, sample, try_get, Host, Scratch,
};

/// The server's limits in this test, small so that short requests pass them.
const LIMIT_LINE: usize = 100;
const LIMIT_FIELD: usize = 100;
const LIMIT_BODY: usize = 10;

/// The access log's lines, once it has at least `n`.
fn lines(path: &str, n: usize) -> Vec<String> {
    eventually(&format!("{n} line(s) in {path}"), || {
        let text = std::fs::read_to_string(path).ok()?;
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        (lines.len() >= n).then_some(lines)
    })
}

/// Sends `request` and returns the status of the response.
fn status_of(host: &Host, request: &[u8]) -> u16 {
    let responses = parse_responses(&raw(host.addr(), request));
    assert_eq!(responses.len(), 1, "one response to {request:?}");
    responses[0].status
}

#[test]
fn refused_requests_are_in_the_access_log() {
    let dir = Scratch::new("refused");
    let log = dir.file("access.log");
    let (line, field, body) = (
        LIMIT_LINE.to_string(),
        LIMIT_FIELD.to_string(),
        LIMIT_BODY.to_string(),
    );
    let host = Host::app(
        "hello",
        &[
            "--access-logfile",
            &log,
            "--header-timeout",
            "1",
            "--keep-alive",
            "1",
            "--limit-request-line",
            &line,
            "--limit-request-field-size",
            &field,
            "--limit-request-body",
            &body,
        ],
    );
    let long_target = format!("/{}", "t".repeat(LIMIT_LINE * 2));
    let long_field = "f".repeat(LIMIT_FIELD * 2);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        // A head that cannot be read at all: nothing of it is known.
        (b"\x01\x02 nonsense\r\n\r\n".to_vec(), 400, "\"-\" 400 "),
        // A readable request line with a bad header.
        (
            b"GET /bad?q=1 HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n".to_vec(),
            400,
            "\"GET /bad?q=1 HTTP/1.1\" 400 ",
        ),
        (
            b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n".to_vec(),
            413,
            "\"POST /big HTTP/1.1\" 413 ",
        ),
        // The request line is over the limit: not taken apart.
        (
            format!("GET {long_target} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes(),
            414,
            "\"-\" 414 ",
        ),
        (
            format!("GET /fields HTTP/1.1\r\nHost: t\r\nX-Long: {long_field}\r\n\r\n").into_bytes(),
            431,
            "\"GET /fields HTTP/1.1\" 431 ",
        ),
    ];
    for (i, (request, status, needle)) in cases.iter().enumerate() {
        assert_eq!(status_of(&host, request), *status, "case {i}");
        let all = lines(&log, i + 1);
        let last = &all[i];
        assert!(
            last.starts_with("127.0.0.1 - - [") && last.contains(needle),
            "case {i}: {needle:?} in {last:?}"
        );
    }
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .contains(&long_target));

    // 408: part of a request arrived and the rest never did. An idle
    // connection beside it times out too, silently.
    let mut idle = connect(host.addr());
    let mut partial = connect(host.addr());
    partial
        .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n")
        .expect("send part of a head");
    let mut answer = Vec::new();
    partial.read_to_end(&mut answer).expect("the 408");
    let answer = parse_responses(&answer);
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].status, 408);
    let mut nothing = Vec::new();
    idle.read_to_end(&mut nothing)
        .expect("the idle connection closed");
    assert!(nothing.is_empty(), "an idle connection is closed silently");
    let all = lines(&log, cases.len() + 1);
    assert!(
        all[cases.len()].contains("\"GET /slow HTTP/1.1\" 408 "),
        "{all:?}"
    );
    // A served request comes next: nothing was logged for the idle connection.
    assert_eq!(host.get("/after").status, 200);
    let all = lines(&log, cases.len() + 2);
    assert_eq!(all.len(), cases.len() + 2, "{all:?}");
    assert!(all[cases.len() + 1].contains("/after"), "{all:?}");
}

#[test]
fn refused_requests_in_json_have_null_for_the_unknown() {
    let dir = Scratch::new("refused-json");
    let log = dir.file("access.jsonl");
    let host = Host::app(
        "hello",
        &["--access-logfile", &log, "--access-logformat", "json"],
    );
    assert_eq!(status_of(&host, b"\x01\x02 nonsense\r\n\r\n"), 400);
    assert_eq!(
        status_of(&host, b"GET /x HTTP/1.1\r\nHost: t\r\nNo colon\r\n\r\n"),
        400
    );
    let all = lines(&log, 2);
    let unknown: serde_json::Value = serde_json::from_str(&all[0]).unwrap();
    assert_eq!(unknown["status"], 400);
    assert!(unknown["method"].is_null(), "{unknown}");
    assert!(unknown["path"].is_null(), "{unknown}");
    assert_eq!(unknown["remote"], "127.0.0.1");
    let known: serde_json::Value = serde_json::from_str(&all[1]).unwrap();
    assert_eq!(known["method"], "GET");
    assert_eq!(known["path"], "/x");
    assert_eq!(known["status"], 400);
}

#[test]
fn refused_requests_are_counted_in_metrics() {
    let metrics = metrics_addr();
    let m = metrics.to_string();
    let host = Host::app(
        "hello",
        &["--metrics-bind", &m, "--limit-request-body", "10"],
    );
    assert_eq!(status_of(&host, b"\x01\x02 nonsense\r\n\r\n"), 400);
    assert_eq!(
        status_of(
            &host,
            b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
        ),
        413
    );
    assert_eq!(host.get("/").status, 200);
    eventually("/metrics to count the two refused requests as 4xx", || {
        let text = try_get(connect(metrics), "/metrics")?.text();
        let count = |name: &str| sample(&text, name);
        (count("host_requests_total{status=\"4xx\"}") == Some(2.0)
            && count("host_requests_total{status=\"2xx\"}") == Some(1.0))
        .then_some(())
    });
}
