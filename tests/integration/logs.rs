//! Logs: access-log formats, request ids, the error log file.

use nix::sys::signal::Signal;
use tests::{eventually, parse_responses, raw, Host, Scratch};

/// Waits for a line containing `needle` in the file at `path`.
fn line_with(path: &str, needle: &str) -> String {
    eventually(&format!("a line with {needle:?} in {path}"), || {
        std::fs::read_to_string(path)
            .ok()?
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_owned)
    })
}

#[test]
fn request_ids_are_kept_or_made_and_sent_back() {
    let host = Host::app("echo", &[]);
    // Given by the client: the app sees it and the response carries it back.
    let reply = raw(
        host.addr(),
        b"GET /a HTTP/1.1\r\nHost: t\r\nX-Request-Id: trace-42\r\nConnection: close\r\n\r\n",
    );
    let resp = &parse_responses(&reply)[0];
    assert_eq!(resp.json()["request_id"], "trace-42");
    assert_eq!(resp.header("x-request-id"), Some("trace-42"));
    // Made up: 16 hex digits, different each time.
    let a = host.get("/b");
    let b = host.get("/c");
    let id = a.header("x-request-id").unwrap().to_owned();
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(a.json()["request_id"], id);
    assert_ne!(b.header("x-request-id").unwrap(), id);
    // Turned off: no header, and the app sees an empty id.
    let host = Host::app("echo", &["--request-id-header", ""]);
    let resp = host.get("/d");
    assert_eq!(resp.header("x-request-id"), None);
    assert_eq!(resp.json()["request_id"], "");
}

#[test]
fn access_log_formats_atoms_and_json() {
    let dir = Scratch::new("format");
    let log = dir.file("access.log");
    let host = Host::app(
        "hello",
        &[
            "--access-logfile",
            &log,
            "--access-logformat",
            "%(m)s %(U)s q=%(q)s %(s)s %(B)s id=%({x-request-id}i)s ct=%({content-type}o)s %(D)sus",
        ],
    );
    raw(
        host.addr(),
        b"GET /atoms?x=1 HTTP/1.1\r\nHost: t\r\nX-Request-Id: r-1\r\nConnection: close\r\n\r\n",
    );
    let line = line_with(&log, "/atoms");
    assert!(
        line.starts_with("GET /atoms q=x=1 200 13 id=r-1 ct=text/plain "),
        "{line}"
    );
    assert!(line.ends_with("us"), "{line}");

    let json_log = dir.file("access.jsonl");
    let host = Host::app(
        "hello",
        &["--access-logfile", &json_log, "--access-logformat", "json"],
    );
    host.get("/json?y=2");
    let line = line_with(&json_log, "/json");
    let j: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(j["method"], "GET");
    assert_eq!(j["path"], "/json");
    assert_eq!(j["query"], "y=2");
    assert_eq!(j["status"], 200);
    assert_eq!(j["bytes"], 13);
    assert_eq!(j["request_id"].as_str().unwrap().len(), 16);
    assert!(j["duration_us"].is_u64());
}

#[test]
fn bad_access_log_format_is_refused() {
    let app = tests::app_arg("hello");
    let mut host = Host::spawn(&["--access-logformat", "%(nope)s", &app]);
    assert_eq!(host.wait_exit().code(), Some(2));
    assert!(host
        .log_lines()
        .iter()
        .any(|l| l.contains("unknown access-log atom %(nope)s")));
}

#[test]
fn error_log_file_is_written_and_reopened_on_usr1() {
    let dir = Scratch::new("errors");
    let log = dir.file("error.log");
    let app = tests::app_arg("crash");
    let mut host = Host::spawn(&["--error-logfile", &log, &app]);
    // The log goes to the file, so the address is learned from there.
    let listening = line_with(&log, "listening on http://");
    let addr = listening.rsplit("http://").next().unwrap().parse().unwrap();
    host.set_addr(addr);
    line_with(&log, "ready in");
    // Lines from workers land there too.
    host.get("/panic");
    line_with(&log, "app panicked: boom");
    // logrotate: move the file, USR1, and new lines go to a new file.
    let rotated = dir.file("error.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    host.signal(Signal::SIGUSR1);
    line_with(&log, "reopening log files");
    eventually("a worker's line in the new file", || {
        host.get("/panic");
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.contains("app panicked"))
    });
}

#[test]
fn app_output_reaches_the_error_log_tagged() {
    let host = Host::app("echo", &[]);
    let pid = host.get("/?print=hello-from-the-app").json()["pid"]
        .as_u64()
        .unwrap();
    host.wait_for_log(
        &format!("worker 1 (pid {pid}) stdout: hello-from-the-app (stdout)"),
        1,
    );
    host.wait_for_log(
        &format!("worker 1 (pid {pid}) stderr: hello-from-the-app (stderr)"),
        1,
    );
}
