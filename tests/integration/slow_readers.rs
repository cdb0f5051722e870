//! Slow readers hold no worker (issue 14, item 8): clients that ask for a
//! large response and do not read it leave the workers free for the next
//! request, and still get every byte of their responses once they read.
//!
//! Each slow reader has a small receive buffer (so the kernel cannot absorb
//! the response for it), sends its request, reads the response head (proof
//! that the app answered it) and stops reading. Then a small request on a
//! new connection must be answered before [`PROMPT`], well under the 30 s
//! I/O timeout a worker waiting on its client would give it up after; the
//! request timeout is raised so it cannot cut in either. The responses come
//! from `libstream.so:bytes`: byte `i` is `i % 251`, so every byte is checked.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use tests::{
    app_lib, metrics_addr, parse_one, parse_responses, read_to_close, sample, try_get, Host,
    READ_TIMEOUT,
};

/// How soon a request must be answered while slow readers hold their
/// responses: well under the 30 s I/O timeout after which a worker waiting
/// on a client gives up (so an answer in time proves nobody waited for it),
/// and far above what a loaded machine needs.
const PROMPT: Duration = Duration::from_secs(15);
/// The size of a slow reader's response: more than the kernel's socket
/// buffers take (the server's send buffer grows to 4 MiB at most).
const BIG: usize = 8_000_000;
/// A slow reader's receive buffer, in bytes (the kernel doubles it).
const SLOW_RCVBUF: usize = 16 * 1024;
/// Far above the 30 s I/O timeout and any test's length: no request is
/// given up on for running long.
const NO_REQUEST_TIMEOUT: &str = "600";

/// The `bytes` app of the stream example.
fn bytes_app() -> String {
    format!("{}:bytes", app_lib("stream").display())
}

/// A connection whose small receive buffer stays small (set before connecting).
fn slow_connect(addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("the tests listen on IPv4 loopback");
    };
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    socket::setsockopt(&fd, sockopt::RcvBuf, &SLOW_RCVBUF).expect("SO_RCVBUF");
    socket::connect(fd.as_raw_fd(), &SockaddrIn::from(v4)).expect("connect");
    TcpStream::from(fd)
}

/// The byte pattern of the `bytes` app, checked over `body` (of `n` bytes).
fn check_pattern(body: &[u8], n: usize, what: &str) {
    assert_eq!(body.len(), n, "{what}: body length");
    if let Some(i) = (0..n).find(|&i| body[i] != (i % 251) as u8) {
        panic!(
            "{what}: byte {i} is {}, expected {}",
            body[i],
            (i % 251) as u8
        );
    }
}

/// A client that asked for a large response and reads nothing of it past its head.
struct SlowReader {
    stream: TcpStream,
    /// What arrived so far (the head, and maybe the start of the body).
    got: Vec<u8>,
}

impl SlowReader {
    /// Connects and sends `requests` (one or several, pipelined).
    fn send(addr: SocketAddr, requests: &str) -> SlowReader {
        let mut stream = slow_connect(addr);
        stream.write_all(requests.as_bytes()).expect("send");
        SlowReader {
            stream,
            got: Vec::new(),
        }
    }

    /// Reads until the first response head is in, failing past `PROMPT`
    /// (`which` names the reader). Reads little: the rest stays unread.
    fn wait_head(&mut self, which: &str) {
        let deadline = Instant::now() + PROMPT;
        let mut buf = [0u8; 512];
        while !self.got.windows(4).any(|w| w == b"\r\n\r\n") {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{which}: no response head within {PROMPT:?} (a worker is held by another slow reader)"
            );
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("{which}: closed before the response head"),
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("{which}: reading the head: {e}"),
            }
        }
    }

    /// Reads on until `count` complete responses are in; returns them.
    fn read_responses(&mut self, count: usize, which: &str) -> Vec<tests::Response> {
        self.stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let responses = parse_responses(&self.got);
            if responses.len() >= count {
                return responses;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => panic!(
                    "{which}: closed after {} bytes, {} of {count} response(s)",
                    self.got.len(),
                    responses.len()
                ),
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("{which}: reading after {} bytes: {e}", self.got.len()),
            }
        }
    }
}

/// A small request on a new connection, which must be answered within `PROMPT`.
fn prompt_get(addr: SocketAddr) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PROMPT)).expect("timeout");
    stream
        .write_all(b"GET /?n=13 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("send");
    let bytes = read_to_close(&mut stream);
    let answer = parse_one(&bytes).map(|(r, _)| r);
    assert!(
        answer.as_ref().is_some_and(|r| r.status == 200),
        "a small request got {:?} after {:?} (read timeout {PROMPT:?}): the workers wait on slow readers",
        String::from_utf8_lossy(&bytes),
        started.elapsed()
    );
    check_pattern(&answer.expect("checked").body, 13, "the small request");
}

/// `readers` slow readers of `query` on a server started with `args`; a
/// small request is answered promptly; then each reader gets its whole body.
fn slow_readers_leave_the_server_free(args: &[&str], readers: usize, query: &str) {
    let app = bytes_app();
    let mut all = vec!["--timeout", NO_REQUEST_TIMEOUT];
    all.extend_from_slice(args);
    all.push(&app);
    let host = Host::start(&all);
    let workers: usize = args
        .windows(2)
        .find(|w| w[0] == "-w")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(1);
    host.wait_for_log("ready in", workers);
    let addr = host.addr();
    let request = format!("GET /?n={BIG}{query} HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut slow: Vec<SlowReader> = (0..readers)
        .map(|_| SlowReader::send(addr, &request))
        .collect();
    for (i, reader) in slow.iter_mut().enumerate() {
        reader.wait_head(&format!("slow reader {i}"));
    }
    prompt_get(addr);
    for (i, reader) in slow.iter_mut().enumerate() {
        let which = format!("slow reader {i}");
        let responses = reader.read_responses(1, &which);
        assert_eq!(responses[0].status, 200, "{which}");
        check_pattern(&responses[0].body, BIG, &which);
    }
}

#[test]
fn slow_readers_of_buffered_bodies_hold_no_worker() {
    slow_readers_leave_the_server_free(&["-w", "2"], 4, "");
}

#[test]
fn slow_readers_of_files_hold_no_worker() {
    slow_readers_leave_the_server_free(&["-w", "2"], 4, "&file=1");
}

#[test]
fn slow_readers_hold_no_thread() {
    slow_readers_leave_the_server_free(&["-w", "1", "--threads", "2"], 4, "");
    slow_readers_leave_the_server_free(&["-w", "1", "--threads", "2"], 4, "&file=1");
}

/// Pipelined requests behind a large response are answered, in order, once
/// it has drained, and the connection stays open for more.
#[test]
fn a_slow_reader_keeps_its_pipeline_and_its_connection() {
    let app = bytes_app();
    let host = Host::start(&["-w", "1", "--timeout", NO_REQUEST_TIMEOUT, &app]);
    let addr = host.addr();
    let pipelined = format!(
        "GET /?n={BIG} HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /?n={BIG}&file=1 HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /?n=100 HTTP/1.1\r\nHost: t\r\n\r\n"
    );
    let mut reader = SlowReader::send(addr, &pipelined);
    reader.wait_head("the pipelining reader");
    prompt_get(addr);
    let responses = reader.read_responses(3, "the pipelining reader");
    assert_eq!(responses.len(), 3, "no response beyond the three asked for");
    check_pattern(&responses[0].body, BIG, "first pipelined response");
    check_pattern(
        &responses[1].body,
        BIG,
        "second pipelined response (a file)",
    );
    check_pattern(&responses[2].body, 100, "third pipelined response");
    // The connection is still open: one more request on it.
    reader.got.clear();
    reader
        .stream
        .write_all(b"GET /?n=7&file=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send on the kept connection");
    let more = reader.read_responses(1, "the kept connection");
    check_pattern(&more[0].body, 7, "a request on the kept connection");
}

/// The I/O timeout still applies to what the loop holds: a client that
/// reads nothing more is cut off after it, and the worker serves on.
#[test]
fn a_client_that_never_reads_is_cut_off_after_the_io_timeout() {
    let app = bytes_app();
    let host = Host::start(&[
        "-w",
        "1",
        "--timeout",
        NO_REQUEST_TIMEOUT,
        "--log-level",
        "debug",
        &app,
    ]);
    let addr = host.addr();
    let mut reader = SlowReader::send(addr, &format!("GET /?n={BIG} HTTP/1.1\r\nHost: t\r\n\r\n"));
    reader.wait_head("the reader that stops");
    prompt_get(addr);
    // The I/O timeout is 30 s; the test waits for the log line past it.
    let deadline = Instant::now() + Duration::from_secs(90);
    let needle = "took nothing of its response";
    while host.count_log(needle) == 0 {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} line within 90 s of a client that stopped reading"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    prompt_get(addr);
    // What it had not taken is gone with the connection: whatever is read
    // now ends well before the whole body.
    let rest = read_to_close(&mut reader.stream);
    assert!(
        reader.got.len() + rest.len() < BIG,
        "the cut-off client still got the whole body"
    );
}

/// The value of the sample `name` (no labels) in the host's `/metrics`.
fn metric(maddr: SocketAddr, name: &str) -> Option<u64> {
    let resp = try_get(tests::connect(maddr), "/metrics")?;
    sample(&resp.text(), &format!("{name} ")).map(|v| v as u64)
}

/// What a slow reader's response left held shows in `/metrics` while it is
/// held, and is given back once the client has read it.
#[test]
fn metrics_show_the_output_held_for_slow_readers() {
    let maddr = metrics_addr();
    let m = maddr.to_string();
    let app = bytes_app();
    let host = Host::start(&["-w", "1", "--metrics-bind", &m, &app]);
    let mut reader = SlowReader::send(
        host.addr(),
        &format!("GET /?n={BIG} HTTP/1.1\r\nHost: t\r\n\r\n"),
    );
    reader.wait_head("the slow reader");
    let held = tests::eventually("held output in /metrics", || {
        (metric(maddr, "host_responses_held_total")? == 1)
            .then(|| metric(maddr, "host_pending_output_bytes"))?
    });
    assert!(
        held > 0 && held < BIG as u64,
        "held {held} bytes of an {BIG}-byte response"
    );
    let responses = reader.read_responses(1, "the slow reader");
    check_pattern(&responses[0].body, BIG, "the slow reader");
    tests::eventually("held output given back", || {
        (metric(maddr, "host_pending_output_bytes")? == 0).then_some(())
    });
    assert_eq!(
        metric(maddr, "host_responses_over_output_budget_total"),
        Some(0)
    );
}

/// A response whose rest does not fit `--max-pending-output` (set here in a
/// config file) is written as before, the worker waiting on its client:
/// counted in `/metrics`, and delivered whole.
#[test]
fn a_response_past_the_budget_is_written_whole_the_old_way() {
    let scratch = tests::Scratch::new("slow-readers-budget");
    let maddr = metrics_addr();
    let config = scratch.join("host.toml");
    std::fs::write(
        &config,
        format!(
            "app = {app:?}\nbind = [\"127.0.0.1:0\"]\nmetrics-bind = \"{maddr}\"\n\
             timeout = {NO_REQUEST_TIMEOUT}\nmax-pending-output = 1000\n",
            app = bytes_app()
        ),
    )
    .expect("write the config file");
    let host = Host::start(&["-c", &config.display().to_string()]);
    let mut reader = SlowReader::send(
        host.addr(),
        &format!("GET /?n={BIG} HTTP/1.1\r\nHost: t\r\n\r\n"),
    );
    reader.wait_head("the slow reader");
    tests::eventually("a response over budget in /metrics", || {
        (metric(maddr, "host_responses_over_output_budget_total")? == 1).then_some(())
    });
    assert_eq!(metric(maddr, "host_responses_held_total"), Some(0));
    let responses = reader.read_responses(1, "the slow reader");
    check_pattern(&responses[0].body, BIG, "the slow reader");
}
