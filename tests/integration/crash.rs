//! Crash containment: a worker that dies is logged with its cause and replaced.

use tests::{connect, raw, read_response, Host};

/// Requests `path` (which kills the worker), then checks the cause in the log,
/// a replacement booting, and the next request being served.
fn crash_and_recover(path: &str, cause: &str) {
    let host = Host::app("crash", &[]);
    host.wait_for_log("ready in", 1);
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let reply = raw(host.addr(), request.as_bytes());
    assert!(
        reply.is_empty(),
        "no response from a dying worker: {:?}",
        String::from_utf8_lossy(&reply)
    );
    host.wait_for_log(cause, 1);
    let line = host
        .log_lines()
        .into_iter()
        .find(|l| l.contains(cause))
        .unwrap();
    assert!(
        line.contains(&format!("while handling \"GET {path}\"")),
        "{line}"
    );
    host.wait_for_log("ready in", 2);
    assert_eq!(host.get("/").text(), "ok\n");
}

#[test]
fn segfault_is_contained() {
    crash_and_recover("/segv", "killed by SIGSEGV");
}

#[test]
fn abort_is_contained() {
    crash_and_recover("/abort", "killed by SIGABRT");
}

#[test]
fn exit_is_contained() {
    crash_and_recover("/exit", "with status 7");
}

#[test]
fn panic_after_the_body_started_cuts_the_response() {
    // --panic-policy serve, so the same worker answers next (by default it
    // would retire: tests/integration/panic_policy.rs).
    let host = Host::app("crash", &["--panic-policy", "serve"]);
    let mut stream = connect(host.addr());
    use std::io::Write;
    stream
        .write_all(b"GET /panic-after-body HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let bytes = tests::read_to_close(&mut stream);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("first part\n"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the chunked body must not look complete: {text}"
    );
    host.wait_for_log("app panicked: boom after the body started", 1);
    // The worker lives on.
    let mut again = connect(host.addr());
    again
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut again).status, 200);
    assert_eq!(host.count_log("ready in"), 1);
}

/// A panic outside any call from the host (an app's own thread) is not
/// swallowed: it reaches the log through Rust's hook and the worker's stderr.
#[test]
fn a_panic_in_an_apps_thread_is_logged() {
    let host = Host::app("crash", &["-w", "1"]);
    let resp = host.get("/panic-in-thread");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "the thread panicked\n");
    host.wait_for_log("background boom", 1);
}

/// Each call's panic is reported as itself: a payload raised with
/// `resume_unwind` (which no hook sees) is never logged as the message of an
/// earlier panic, here one the app caught itself on the same worker.
#[test]
fn resume_unwind_is_reported_as_its_own_payload() {
    let host = Host::app("crash", &["-w", "1"]);
    assert_eq!(host.get("/caught-panic").text(), "caught\n");
    assert_eq!(host.get("/resume-unwind").status, 500);
    host.wait_for_log("app panicked: resumed payload (worker 1", 1);
    assert_eq!(
        host.count_log("caught inside"),
        0,
        "{:#?}",
        host.log_lines()
    );
    // A real panic still carries where it happened.
    assert_eq!(host.get("/panic").status, 500);
    host.wait_for_log("app panicked: boom (at ", 1);
}
