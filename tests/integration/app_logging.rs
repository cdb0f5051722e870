//! Logging through the host: what an app logs with `log`, `tracing` or
//! `app_sdk::log` reaches the error log as the host's own lines do (one
//! timestamp, the level, the worker or the probe, the target and the
//! request id), filtered by `--log-level`; what the probe prints is tagged
//! as the probe's. The `logger` example app makes the records.

use nix::sys::signal::Signal;
use tests::{
    app_arg, app_lib, eventually, free_port, install, parse_responses, raw, try_get, Host, Scratch,
    READ_TIMEOUT,
};

/// One error-log line, taken apart: `[time] [pid] [LEVEL] text`.
#[derive(Debug)]
struct Line {
    pid: i32,
    level: String,
    text: String,
}

/// Takes a line of the host's error log apart; `None` if it is not one.
fn parse(line: &str) -> Option<Line> {
    let rest = line.strip_prefix('[')?;
    let (time, rest) = rest.split_once("] [")?;
    let (pid, rest) = rest.split_once("] [")?;
    let (level, text) = rest.split_once("] ")?;
    // Exactly one timestamp, at the start.
    if !time.ends_with("+0000") || text.contains("+0000]") {
        return None;
    }
    Some(Line {
        pid: pid.parse().ok()?,
        level: level.to_owned(),
        text: text.to_owned(),
    })
}

/// The parsed log lines whose text is exactly `text`.
fn lines_saying(host: &Host, text: &str) -> Vec<Line> {
    host.log_lines()
        .iter()
        .filter_map(|l| parse(l))
        .filter(|l| l.text == text)
        .collect()
}

/// The one log line whose text is exactly `text`, at `level`, from a
/// worker (not the master); panics with the log otherwise.
fn the_line(host: &Host, level: &str, text: &str) -> Line {
    let mut found = lines_saying(host, text);
    assert_eq!(found.len(), 1, "one line {text:?}: {found:?}");
    let line = found.remove(0);
    assert_eq!(line.level, level, "{line:?}");
    assert_ne!(line.pid, host.pid(), "logged by the master: {line:?}");
    line
}

/// Makes a request for `path` with the request id `id`; checks it was answered.
fn request(host: &Host, path: &str, id: &str) {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n"
    );
    let reply = raw(host.addr(), head.as_bytes());
    let responses = parse_responses(&reply);
    assert_eq!(responses[0].status, 200, "{path}: {}", responses[0].text());
}

#[test]
fn log_records_carry_level_target_worker_and_request_id() {
    let host = Host::app("logger", &["--log-level", "debug"]);
    request(&host, "/log?token=L1", "rq-log");
    host.wait_for_log("app logger::db: done L1 (request rq-log)", 1);
    for (level, word) in [
        ("ERROR", "error"),
        ("WARNING", "warn"),
        ("INFO", "info"),
        ("DEBUG", "debug"),
    ] {
        the_line(
            &host,
            level,
            &format!("worker 1: app logger::db: {word} L1 (request rq-log)"),
        );
    }
    // The host's most verbose level is debug: trace never reaches it.
    assert_eq!(host.count_log("trace L1"), 0);
    // The app runs with the host's level.
    assert_eq!(host.get("/levels").text(), "log=DEBUG tracing=debug");
}

#[test]
fn tracing_events_carry_their_fields() {
    let host = Host::app("logger", &["--log-level", "debug"]);
    request(&host, "/tracing?token=T1", "rq-trace");
    host.wait_for_log("app logger::tracing: done T1 (request rq-trace)", 1);
    for (level, word) in [
        ("ERROR", "error"),
        ("WARNING", "warn"),
        ("INFO", "info"),
        ("DEBUG", "debug"),
    ] {
        the_line(
            &host,
            level,
            &format!("worker 1: app logger::tracing: {word} T1 user=alice n=3 (request rq-trace)"),
        );
    }
    assert_eq!(host.count_log("trace T1"), 0);
}

#[test]
fn log_level_warning_drops_info_and_debug() {
    // At this level the host does not log where it listens: it is told.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let bind = addr.to_string();
    let app = app_arg("logger");
    let mut host = Host::spawn(&["--log-level", "warning", "--bind", &bind, &app]);
    host.set_addr(addr);
    // The app runs with the host's level (and answering means it serves).
    let levels = eventually("the host to serve", || {
        let stream = std::net::TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
        try_get(stream, "/levels")
    });
    assert_eq!(levels.text(), "log=WARN tracing=warn");
    request(&host, "/log?token=W1", "rq-w1");
    request(&host, "/tracing?token=W2", "rq-w2");
    // Each route logs `done` last, from the same process through the same
    // descriptor: once it is in, so is everything logged before it.
    host.wait_for_log("app logger::db: done W1", 1);
    host.wait_for_log("app logger::tracing: done W2", 1);
    for token in ["W1", "W2"] {
        assert_eq!(host.count_log(&format!(": error {token}")), 1);
        assert_eq!(host.count_log(&format!(": warn {token}")), 1);
        for dropped in ["info", "debug", "trace"] {
            assert_eq!(host.count_log(&format!("{dropped} {token}")), 0);
        }
    }
}

#[test]
fn a_thread_of_the_app_logs_without_a_request_id() {
    let host = Host::app("logger", &[]);
    request(&host, "/thread?token=B1", "rq-b1");
    request(&host, "/plain?token=P1", "rq-p1");
    host.wait_for_log("in the request B1", 1);
    host.wait_for_log("plain P1", 1);
    the_line(&host, "WARNING", "worker 1: app logger: in a thread B1");
    the_line(
        &host,
        "WARNING",
        "worker 1: app logger: in the request B1 (request rq-b1)",
    );
    // `app_sdk::log`, without the features.
    the_line(
        &host,
        "ERROR",
        "worker 1: app logger::plain: plain P1 (request rq-p1)",
    );
}

#[test]
fn the_probe_s_lines_are_tagged_as_the_probe_s() {
    let host = Host::app("logger", &[]);
    host.wait_for_log("ready in", 1);
    // What init logs: from the probe, then from the worker.
    let probe = the_line(&host, "INFO", "probe: app logger: init in the probe");
    the_line(&host, "INFO", "worker 1: app logger: init in worker 1");
    // What init prints: the master logs it, tagged with the probe's pid.
    for stream in ["stdout", "stderr"] {
        let text = format!("probe (pid {}) {stream}: init prints ({stream})", probe.pid);
        let line = &lines_saying(&host, &text);
        assert_eq!(
            line.len(),
            1,
            "one line {text:?} in {:#?}",
            host.log_lines()
        );
        assert_eq!(line[0].pid, host.pid(), "{line:?}");
    }
    // Nothing the probe printed reached the log untagged.
    assert!(
        !host
            .log_lines()
            .iter()
            .any(|l| l.starts_with("init prints")),
        "{:#?}",
        host.log_lines()
    );
}

#[test]
fn a_reload_s_probe_is_tagged_too() {
    let dir = Scratch::new("probe-output");
    let lib = dir.join("libapp.so");
    install(&app_lib("hello"), &lib);
    let spec = format!("{}:app", lib.display());
    let host = Host::start(&[&spec]);
    host.wait_for_log("ready in", 1);
    install(&app_lib("logger"), &lib);
    host.signal(Signal::SIGHUP);
    host.wait_for_log("generation 2: build", 1);
    let probe = the_line(&host, "INFO", "probe: app logger: init in the probe");
    host.wait_for_log(
        &format!("probe (pid {}) stdout: init prints (stdout)", probe.pid),
        1,
    );
    host.wait_for_log(
        &format!("probe (pid {}) stderr: init prints (stderr)", probe.pid),
        1,
    );
}
