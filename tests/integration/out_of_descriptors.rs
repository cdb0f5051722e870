//! Out of descriptors: a worker that cannot accept (`EMFILE`) stops
//! polling its listeners for a short, growing pause instead of spinning on
//! a listener that stays readable; it logs the episode with a count, not a
//! line per failure, counts the pauses in `/metrics`, and serves again by
//! itself once descriptors free up. The master raises the soft open-files
//! limit to the hard one at start-up and says so.

use std::{
    io::Write,
    net::{SocketAddr, TcpStream},
};

use tests::{
    app_arg, connect, eventually, metrics_addr, parse_responses, raw, read_response, sample,
    try_get, Host,
};

/// The open-files limit (soft and hard) of the starved host: a worker
/// accepts a few dozen connections, then `accept` fails with `EMFILE`.
const NOFILE: u64 = 64;
/// Clients that connect and wait: well past what the worker can hold.
const CLIENTS: usize = 120;
/// Accept pauses the test waits to see: with pauses of 10 ms doubling,
/// these take a few hundred milliseconds of starvation.
const PAUSES_SEEN: u64 = 5;
/// Log lines about accepting the test allows for those pauses: the
/// episode's first line, a summary now and then, and slack. A worker that
/// logs each failure writes thousands in the same time.
const ACCEPT_LINES_ALLOWED: usize = 12;

/// The value of the sample `name` (with its labels) in `/metrics`, if shown.
fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    let resp = try_get(connect(addr), "/metrics")?;
    sample(&resp.text(), name).map(|v| v as u64)
}

/// Log lines about failed or paused accepting.
fn accept_lines(host: &Host) -> usize {
    host.count_log("accept")
}

fn starved_worker_pauses_and_recovers(threads: &str) {
    let maddr = metrics_addr();
    let m = maddr.to_string();
    let app = app_arg("hello");
    let host = Host::start_nofile(
        &[
            "-w",
            "1",
            "--threads",
            threads,
            "--keep-alive",
            "300",
            "--metrics-bind",
            &m,
            &app,
        ],
        NOFILE,
        NOFILE,
    );
    host.wait_for_log("ready in", 1);
    // A keep-alive client from before the starvation.
    let mut early = connect(host.addr());
    let get = b"GET /early HTTP/1.1\r\nHost: t\r\n\r\n";
    early.write_all(get).expect("send");
    assert_eq!(read_response(&mut early).status, 200);
    let before = accept_lines(&host);
    // Clients that connect and send nothing: each the worker accepts holds
    // a descriptor until its keep-alive timeout, far beyond this test.
    let clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(host.addr()).expect("connect (the listen queue takes it)"))
        .collect();
    // Either the worker pauses (and counts it), or it floods the log.
    let pauses = eventually("accept pauses in /metrics (or a flooded log)", || {
        if accept_lines(&host) > before + 1000 {
            return Some(0);
        }
        metric(maddr, "host_accept_pauses_total").filter(|&n| n >= PAUSES_SEEN)
    });
    let lines = accept_lines(&host) - before;
    assert!(
        lines <= ACCEPT_LINES_ALLOWED,
        "{lines} log lines about accepting (at most {ACCEPT_LINES_ALLOWED} allowed): a line per failure"
    );
    assert!(pauses >= PAUSES_SEEN);
    // While accepting pauses, the connections the worker has are served.
    early.write_all(get).expect("send again");
    assert_eq!(read_response(&mut early).status, 200);
    assert!(
        host.count_log("pausing accept") >= 1,
        "the episode is logged once"
    );
    // Descriptors free up: the worker serves again by itself.
    drop(clients);
    let resp = eventually("a request served once the clients left", || {
        let request = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        parse_responses(&raw(host.addr(), request))
            .into_iter()
            .next()
            .filter(|r| r.status == 200)
    });
    assert_eq!(resp.status, 200);
    assert!(
        accept_lines(&host) - before <= ACCEPT_LINES_ALLOWED + 2,
        "recovering logs a line, not a flood"
    );
}

#[test]
fn a_worker_out_of_descriptors_pauses_accepting_and_recovers() {
    starved_worker_pauses_and_recovers("1");
}

#[test]
fn each_loop_of_a_threaded_worker_pauses_accepting_and_recovers() {
    starved_worker_pauses_and_recovers("2");
}

#[test]
fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    let host = Host::start_nofile(&["-w", "1", &app_arg("hello")], 64, 256);
    host.wait_for_log("open files limit: 64 -> 256", 1);
    host.wait_for_log("ready in", 1);
    let worker = host.children()[0];
    let limits = std::fs::read_to_string(format!("/proc/{worker}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("the open files line");
    let figures: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(figures, ["256", "256"], "{line}");
}
