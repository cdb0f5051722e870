//! `--threads T`: each worker calls the app from T threads. These check the
//! model's structure (how many requests run at once, that pipelining, bodies
//! and timeouts behave as with one thread), with bounds far from the values
//! they separate, so a loaded machine passes them.

use std::{
    thread,
    time::{Duration, Instant},
};

use tests::{connect, eventually, metrics_addr, parse_responses, raw, try_get, Host};

/// Each slow request sleeps this long: two waves take at least twice as long.
const SLEEP_MS: u64 = 2000;

/// Sends four concurrent slow requests and returns how long the last took.
fn four_slow_requests(host: &Host) -> Duration {
    let addr = host.addr();
    let started = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let request =
                    format!("GET /?ms={SLEEP_MS} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                raw(addr, request.as_bytes())
            })
        })
        .collect();
    for c in clients {
        let reply = c.join().unwrap();
        let responses = parse_responses(&reply);
        assert_eq!(responses[0].text(), format!("slept {SLEEP_MS} ms\n"));
    }
    started.elapsed()
}

#[test]
fn two_workers_answer_four_slow_requests_in_two_waves() {
    let host = Host::app("slow", &["-w", "2"]);
    host.wait_for_log("ready in", 2);
    let took = four_slow_requests(&host);
    // Two at a time: the second pair starts only when the first is done.
    assert!(
        took >= Duration::from_millis(2 * SLEEP_MS - 100),
        "took {took:?}"
    );
}

#[test]
fn two_workers_of_two_threads_answer_four_slow_requests_in_one_wave() {
    let host = Host::app("slow", &["-w", "2", "--threads", "2"]);
    host.wait_for_log("ready in", 2);
    let took = four_slow_requests(&host);
    // All four at once: far less than two waves.
    assert!(
        took < Duration::from_millis(2 * SLEEP_MS - 500),
        "took {took:?}"
    );
}

#[test]
fn threads_answer_pipelined_requests_and_bodies_in_order() {
    let host = Host::app("echo", &["--threads", "3"]);
    host.wait_for_log("ready in", 1);
    let reply = raw(
        host.addr(),
        b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
          POST /three HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc\
          GET /four HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let responses = parse_responses(&reply);
    let paths: Vec<_> = responses
        .iter()
        .map(|r| r.json()["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(paths, ["/one", "/two", "/three", "/four"]);
    assert_eq!(responses[1].json()["body_b64"], "aGVsbG8=");
    assert_eq!(responses[2].json()["body_b64"], "YWJj");
}

#[test]
fn a_timed_out_thread_lets_the_other_threads_finish() {
    let metrics = metrics_addr();
    let m = metrics.to_string();
    let host = Host::app(
        "slow",
        &["--threads", "2", "--timeout", "1", "--metrics-bind", &m],
    );
    host.wait_for_log("ready in", 1);
    let addr = host.addr();
    let stuck = thread::spawn(move || {
        raw(
            addr,
            b"GET /?ms=30000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
    });
    // The second starts once the first is in the app (so the first is the
    // one past --timeout) and is still running when the first times out,
    // about a second later.
    eventually("the first request in the app, in /status.json", || {
        let status = try_get(connect(metrics), "/status.json")?.json();
        status["workers"]
            .as_array()?
            .iter()
            .any(|w| w["current_request"] == "GET /?…")
            .then_some(())
    });
    let other = thread::spawn(move || {
        raw(
            addr,
            b"GET /?ms=4000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
    });
    let stuck = parse_responses(&stuck.join().unwrap());
    assert_eq!(stuck[0].status, 504);
    host.wait_for_log(
        "timed out handling \"GET /?…\"; answered 504; finishing the other threads' requests",
        1,
    );
    let other = parse_responses(&other.join().unwrap());
    assert_eq!(other[0].text(), "slept 4000 ms\n");
    // Then the worker exits (its stuck thread cannot be joined) and its
    // replacement serves.
    host.wait_for_log(
        "exiting with 1 request(s) still in the app after --timeout",
        1,
    );
    host.wait_for_log("exited with status 124 after its request timed out", 1);
    assert_eq!(host.get("/?ms=1").text(), "slept 1 ms\n");
}

#[test]
fn threads_out_of_range_are_refused() {
    let app = tests::app_arg("hello");
    let mut host = Host::spawn(&["--threads", "0", &app]);
    assert_eq!(host.wait_exit().code(), Some(2));
}
