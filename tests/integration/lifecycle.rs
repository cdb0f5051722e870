//! The process lifecycle: respawn, graceful and quick stops, pool resizing, orphans.

use std::{
    io::{Read, Write},
    thread,
};

use nix::sys::signal::Signal;
use tests::{connect, eventually, parse_responses, read_response, read_to_close, Host};

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

#[test]
fn worker_killed_with_sigkill_is_replaced() {
    let host = Host::app("echo", &[]);
    let first = host.get("/").json()["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), Signal::SIGKILL).unwrap();
    host.wait_for_log(&format!("(pid {first}) exited killed by SIGKILL"), 1);
    host.wait_for_log("ready in", 2);
    let second = host.get("/").json()["pid"].as_i64().unwrap() as i32;
    assert_ne!(first, second);
}

/// Sends `GET target` from a thread and returns once the worker is handling it
/// (the host must run with `--log-level debug`); the thread returns the reply.
fn in_flight(host: &Host, target: &str) -> thread::JoinHandle<Vec<u8>> {
    let addr = host.addr();
    let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n");
    let client = thread::spawn(move || {
        let mut s = connect(addr);
        s.write_all(request.as_bytes()).unwrap();
        read_to_close(&mut s)
    });
    host.wait_for_log(&format!("handling \"GET {target}\""), 1);
    client
}

#[test]
fn term_finishes_the_request_in_flight_then_exits_0() {
    let mut host = Host::app("slow", &["--log-level", "debug"]);
    let client = in_flight(&host, "/?ms=1500");
    host.signal(Signal::SIGTERM);
    let reply = client.join().unwrap();
    let resps = parse_responses(&reply);
    assert_eq!(resps.len(), 1, "{:?}", String::from_utf8_lossy(&reply));
    assert_eq!(resps[0].status, 200);
    assert_eq!(resps[0].text(), "slept 1500 ms\n");
    assert_eq!(resps[0].header("connection"), Some("close"));
    assert_eq!(host.wait_exit().code(), Some(0));
    assert_eq!(host.count_log("shutdown complete"), 1);
}

#[test]
fn int_stops_at_once() {
    let mut host = Host::app("slow", &["--log-level", "debug"]);
    let client = in_flight(&host, "/?ms=60000");
    host.signal(Signal::SIGINT);
    assert_eq!(host.wait_exit().code(), Some(0));
    // The request was cut off, not answered.
    assert!(client.join().unwrap().is_empty());
}

#[test]
fn ttin_and_ttou_resize_the_pool() {
    let host = Host::app("hello", &["-w", "2"]);
    host.wait_for_log("ready in", 2);
    host.signal(Signal::SIGTTIN);
    host.wait_for_log("workers now 3", 1);
    host.wait_for_log("ready in", 3);
    eventually("three workers", || {
        (host.children().len() == 3).then_some(())
    });
    host.signal(Signal::SIGTTOU);
    host.wait_for_log("workers now 2", 1);
    host.wait_for_log("retiring worker", 1);
    eventually("two workers", || (host.children().len() == 2).then_some(()));
    assert_eq!(host.get("/").status, 200);
}

#[test]
fn workers_exit_when_the_master_dies() {
    let host = Host::app("hello", &["-w", "2"]);
    host.wait_for_log("ready in", 2);
    let workers = host.children();
    assert_eq!(workers.len(), 2);
    host.signal(Signal::SIGKILL);
    for pid in workers {
        eventually(&format!("worker {pid} to exit"), || gone(pid).then_some(()));
    }
}

#[test]
fn keep_alive_connections_idle_out() {
    let host = Host::app("hello", &["--keep-alive", "1"]);
    let mut s = connect(host.addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).status, 200);
    // Idle past the timeout: the server closes. A read timeout (the test's own
    // deadline, far longer than the keep-alive timeout) would be a failure.
    s.set_read_timeout(Some(tests::WAIT)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "unexpected bytes on an idle connection: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close the idle connection: {e}"),
    }
}
