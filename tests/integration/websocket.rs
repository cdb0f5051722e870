//! WebSocket through real clients: Python's `websockets` against the `chat`
//! example (echo of every frame-length class, subprotocols, broadcast in a
//! room, an HTTP request reaching the room, cross-loop delivery with
//! `--threads`, `wss://`), the lifecycle (TERM, HUP, `--max-requests`: open
//! connections get `1001` after `--websocket-drain`), `on_close` on every
//! way out, the counts in `/metrics`, and the chat page in headless
//! Chromium.
//!
//! The Python clients run in one process ([`Clients`], the script
//! `websocket_clients.py`) that the test drives a JSON line at a time, so a
//! test holds many connections and reads each one when it chooses.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use base64::Engine;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tests::{eventually, get, metrics_addr, raw, sample, Host, Scratch};

/// The client script (see the module's documentation).
const CLIENTS_PY: &str = include_str!("websocket_clients.py");

/// Seconds a client waits for a message, a handshake or a close: generous,
/// for a loaded machine.
const CLIENT_TIMEOUT_S: u64 = 20;

/// Fails the test unless Python's `websockets` package imports.
fn require_websockets() {
    let ok = Command::new("python3")
        .args(["-c", "import websockets.asyncio.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs python3 with the `websockets` package (pip install websockets), \
         as .ci/run installs it; or run the tests without --include-ignored"
    );
}

/// WebSocket clients in a Python process, each named by the test.
struct Clients {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Clients {
    fn new() -> Clients {
        require_websockets();
        let mut child = Command::new("python3")
            .args(["-u", "-c", CLIENTS_PY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Clients {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command, returns its answer.
    fn call(&mut self, mut cmd: Value) -> Value {
        cmd["timeout"] = json!(CLIENT_TIMEOUT_S);
        writeln!(self.stdin, "{cmd}").expect("write to the clients");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read the clients");
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("clients answered {line:?} to {cmd}: {e}"));
        assert!(answer.get("error").is_none(), "{cmd} -> {answer}");
        answer
    }

    /// Opens client `id` on `url`, offering `protocols`; the answer has the
    /// chosen `subprotocol`, or the refusal's `status`.
    fn open_with(&mut self, id: &str, url: &str, protocols: &[&str], ca: Option<&str>) -> Value {
        let mut cmd = json!({"op": "open", "id": id, "url": url});
        if !protocols.is_empty() {
            cmd["protocols"] = json!(protocols);
        }
        if let Some(ca) = ca {
            // The test certificate names `localhost`; the URL has the address.
            cmd["ca"] = json!(ca);
            cmd["server_name"] = json!("localhost");
        }
        self.call(cmd)
    }

    /// Opens client `id` on `url`; panics unless the handshake succeeds.
    fn open(&mut self, id: &str, url: &str) {
        let answer = self.open_with(id, url, &[], None);
        assert_eq!(answer["ok"], true, "open {url}: {answer}");
    }

    fn send_text(&mut self, id: &str, text: &str) {
        let answer = self.call(json!({"op": "send", "id": id, "text": text}));
        assert_eq!(answer["ok"], true, "send from {id}: {answer}");
    }

    fn send_binary(&mut self, id: &str, data: &[u8]) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        let answer = self.call(json!({"op": "send", "id": id, "binary": b64}));
        assert_eq!(answer["ok"], true, "send from {id}: {answer}");
    }

    /// The next thing client `id` gets: `{"text"}`, `{"binary"}` (base64),
    /// `{"closed": code, "reason"}` or `{"timeout": true}`.
    fn recv(&mut self, id: &str) -> Value {
        self.call(json!({"op": "recv", "id": id}))
    }

    /// The next message of client `id`, which must be text.
    fn text(&mut self, id: &str) -> String {
        let got = self.recv(id);
        got["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{id} expected text, got {got}"))
            .to_owned()
    }

    /// Reads client `id`'s messages until `want`; returns those before it.
    fn text_until(&mut self, id: &str, want: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let t = self.text(id);
            if t == want {
                return before;
            }
            before.push(t);
        }
    }

    /// Reads client `id` until its connection closes; returns the close
    /// code and reason (messages on the way are skipped).
    fn closed(&mut self, id: &str) -> (u64, String) {
        loop {
            let got = self.recv(id);
            if let Some(code) = got.get("closed") {
                let reason = got["reason"].as_str().unwrap_or("").to_owned();
                return (code.as_u64().unwrap_or(0), reason);
            }
            assert!(got.get("timeout").is_none(), "{id} was not closed");
        }
    }

    fn close(&mut self, id: &str, code: u16) {
        let answer = self.call(json!({"op": "close", "id": id, "code": code}));
        assert_eq!(answer["ok"], true, "close {id}: {answer}");
    }

    /// Drops client `id`'s TCP connection without a close frame.
    fn abort(&mut self, id: &str) {
        let answer = self.call(json!({"op": "abort", "id": id}));
        assert_eq!(answer["ok"], true, "abort {id}: {answer}");
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ws_url(addr: SocketAddr, path: &str) -> String {
    format!("ws://{addr}{path}")
}

/// `POST /broadcast` with `body`: the chat's answer (how many it reached).
fn post_broadcast(addr: SocketAddr, body: &str) -> String {
    let request = format!(
        "POST /broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = tests::parse_responses(&raw(addr, request.as_bytes()));
    let resp = resp.first().expect("a response to POST /broadcast");
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.text().trim().to_owned()
}

/// UTF-8 text of exactly `len` bytes, not all ASCII.
fn text_of(len: usize) -> String {
    let mut text = String::with_capacity(len);
    for ch in "héllo wörld ".chars().cycle() {
        if text.len() + ch.len_utf8() > len {
            break;
        }
        text.push(ch);
    }
    while text.len() < len {
        text.push('.');
    }
    text
}

/// A payload of `len` bytes that is not all one byte.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
#[ignore = "needs python3 websockets"]
fn echo_every_frame_length_class_and_choose_the_subprotocol() {
    let host = Host::app("chat", &["-w", "1"]);
    let mut c = Clients::new();
    let offered = c.open_with(
        "e",
        &ws_url(host.addr(), "/echo"),
        &["other", "chat.v1"],
        None,
    );
    assert_eq!(offered["subprotocol"], "chat.v1", "{offered}");
    let plain = c.open_with("p", &ws_url(host.addr(), "/echo"), &[], None);
    assert_eq!(plain["subprotocol"], Value::Null, "{plain}");
    // 7-bit, 16-bit and 64-bit lengths at their edges, and a message just
    // under the default --websocket-max-message (1 MiB).
    for len in [0, 1, 125, 126, 127, 65535, 65536, 200_000, 1_000_000] {
        let data = payload(len);
        c.send_binary("e", &data);
        let got = c.recv("e");
        let back = base64::engine::general_purpose::STANDARD
            .decode(
                got["binary"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{len}: {got}")),
            )
            .expect("base64");
        assert!(back == data, "binary of {len} bytes came back different");
        let text = text_of(len);
        c.send_text("e", &text);
        assert!(
            c.text("e") == text,
            "text of {len} chars came back different"
        );
    }
    c.close("e", 1000);
    c.send_text("p", "still here");
    assert_eq!(c.text("p"), "still here");
}

#[test]
#[ignore = "needs python3 websockets"]
fn a_room_of_five_sees_every_message_in_one_order_and_an_http_broadcast() {
    let host = Host::app("chat", &["-w", "1"]);
    let mut c = Clients::new();
    let names = ["a", "b", "c", "d", "e"];
    for n in names {
        c.open(n, &ws_url(host.addr(), &format!("/ws?name={n}")));
    }
    // Everyone has seen the last one join.
    for n in names {
        c.text_until(n, "* e joined");
    }
    // Ten messages from each, sent round the room.
    let mut sent = Vec::new();
    for i in 0..10 {
        for n in names {
            let text = format!("{n}-{i}");
            c.send_text(n, &text);
            sent.push(format!("{n}: {text}"));
        }
    }
    let mut seen = Vec::new();
    for n in names {
        let got: Vec<String> = (0..sent.len()).map(|_| c.text(n)).collect();
        // Each sender's messages in the order it sent them.
        for m in names {
            let theirs: Vec<&String> = got.iter().filter(|t| t.starts_with(m)).collect();
            let want: Vec<&String> = sent.iter().filter(|t| t.starts_with(m)).collect();
            assert_eq!(theirs, want, "{n} saw {m}'s messages");
        }
        seen.push(got);
    }
    // One worker, one loop: the same order for everyone.
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    // An HTTP request reaches them.
    assert_eq!(post_broadcast(host.addr(), "from http"), "5");
    for n in names {
        assert_eq!(c.text(n), "from http");
    }
}

/// The loop that holds a chat connection, from the id in its
/// `* guest-<id> joined` line (the top 16 bits name the loop).
fn loop_of_guest(line: &str) -> u64 {
    let hex = line
        .strip_prefix("* guest-")
        .and_then(|r| r.strip_suffix(" joined"))
        .unwrap_or_else(|| panic!("a join line: {line:?}"));
    u64::from_str_radix(hex, 16).expect("a hex id") >> 48
}

#[test]
#[ignore = "needs python3 websockets"]
fn with_threads_a_broadcast_reaches_the_connections_of_every_loop() {
    let host = Host::app("chat", &["-w", "1", "--threads", "2"]);
    let mut c = Clients::new();
    let mut loops = BTreeSet::new();
    let mut opened: Vec<String> = Vec::new();
    // Handshakes that arrive together, until both loops hold connections:
    // a loop inside the app (answering one) leaves the next to the other,
    // but which loop accepts is the kernel's choice, so a few rounds.
    for round in 0..8 {
        if loops.len() == 2 {
            break;
        }
        let ids: Vec<String> = (0..8).map(|i| format!("g{round}-{i}")).collect();
        let answer =
            c.call(json!({"op": "open_many", "ids": ids, "url": ws_url(host.addr(), "/ws")}));
        assert_eq!(answer["ok"], true, "{answer}");
        // The first thing each hears is a join: its own, or one of the
        // others' that joined at the same moment on the other loop.
        for id in &ids {
            loops.insert(loop_of_guest(&c.text(id)));
        }
        opened.extend(ids);
    }
    assert_eq!(loops.len(), 2, "every connection went to loops {loops:?}");
    // A message from the first connection and one from the last (on
    // another loop than some) reach all of them, and so does an HTTP
    // request, whichever loop takes it.
    let last = opened.last().expect("connections").clone();
    let first = opened[0].clone();
    c.send_text(&first, "from the first");
    c.send_text(&last, "from the last");
    for id in &opened {
        let mut seen = BTreeSet::new();
        while seen.len() < 2 {
            let t = c.text(id);
            if t.ends_with(": from the first") || t.ends_with(": from the last") {
                seen.insert(t);
            }
        }
    }
    assert_eq!(
        post_broadcast(host.addr(), "from http"),
        opened.len().to_string()
    );
    for id in &opened {
        c.text_until(id, "from http");
    }
}

#[test]
#[ignore = "needs python3 websockets"]
fn wss_echo_over_tls() {
    let dir = Scratch::new("wss");
    let pki = tests::tls::Pki::new(dir.path());
    let pair = pki.server(&["localhost"]);
    let host = tests::tls::host("chat", &pair, &["-w", "1"]);
    let mut c = Clients::new();
    let ca = pki.ca.display().to_string();
    let url = format!("wss://127.0.0.1:{}/echo", host.addr().port());
    let opened = c.open_with("t", &url, &["chat.v1"], Some(&ca));
    assert_eq!(opened["subprotocol"], "chat.v1", "{opened}");
    for len in [0, 126, 65536, 300_000] {
        let data = payload(len);
        c.send_binary("t", &data);
        let got = c.recv("t");
        let back = base64::engine::general_purpose::STANDARD
            .decode(
                got["binary"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{len}: {got}")),
            )
            .expect("base64");
        assert!(back == data, "{len} bytes came back different over TLS");
    }
    c.send_text("t", "over tls");
    assert_eq!(c.text("t"), "over tls");
    c.close("t", 1000);
}

/// An upper bound for "within the drain", on a loaded machine.
const DRAIN_BOUND: Duration = Duration::from_secs(20);

#[test]
#[ignore = "needs python3 websockets"]
fn term_closes_open_connections_with_1001_after_the_drain_and_exits_0() {
    let mut host = Host::app("chat", &["-w", "2", "--websocket-drain", "1"]);
    host.wait_for_log("ready in", 2);
    let mut c = Clients::new();
    let ids: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
    for id in &ids {
        c.open(id, &ws_url(host.addr(), "/echo"));
        c.send_text(id, "hi");
        assert_eq!(c.text(id), "hi");
    }
    let asked = Instant::now();
    host.signal(Signal::SIGTERM);
    for id in &ids {
        let (code, reason) = c.closed(id);
        assert_eq!(code, 1001, "{id}: {reason}");
    }
    assert!(
        asked.elapsed() < DRAIN_BOUND,
        "closed after {:?}",
        asked.elapsed()
    );
    let status = host.wait_exit();
    assert_eq!(status.code(), Some(0), "{:?}", host.log_lines());
}

/// Clients that send requests over keep-alive connections until stopped.
/// As every HTTP client does (RFC 9112 §9.3.1), a request on a reused idle
/// connection that closed before any byte of a response came is retried on
/// a new one; anything else is a lost request.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok) = (stop.clone(), ok.clone());
                thread::spawn(move || {
                    let mut failures = Vec::new();
                    let mut conn: Option<std::net::TcpStream> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let reused = conn.is_some();
                        let stream = conn.get_or_insert_with(|| tests::connect(addr));
                        match one_request(stream) {
                            Ok(close) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                if close {
                                    conn = None;
                                }
                            }
                            Err((received, e)) => {
                                conn = None;
                                if !(reused && received == 0) {
                                    failures.push(e);
                                }
                            }
                        }
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, threads }
    }

    /// Stops; returns the requests answered and the failures.
    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("a load thread"))
            .collect();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// One `GET /` (the chat page) on `stream`: whether the server closes
/// after it; or the bytes received before the failure and what went wrong.
fn one_request(stream: &mut std::net::TcpStream) -> Result<bool, (usize, String)> {
    use std::io::Read;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .map_err(|e| (0, format!("send: {e}")))?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some((resp, _)) = tests::parse_one(&data) {
            if resp.status != 200 {
                return Err((data.len(), format!("status {}", resp.status)));
            }
            return Ok(resp.header("connection") == Some("close"));
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err((data.len(), "closed before a response".into())),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) => return Err((data.len(), format!("read: {e}"))),
        }
    }
}

/// `/status.json`'s workers as (generation, open WebSocket connections).
fn worker_websockets(maddr: SocketAddr) -> Vec<(u64, u64)> {
    let j = get(maddr, "/status.json").json();
    j["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| {
            (
                w["generation"].as_u64().unwrap_or(0),
                w["websockets"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// `chat` on two workers with `--websocket-drain SECS` and a status
/// endpoint, both ready: the host and the endpoint's address.
fn two_chat_workers(drain: &str) -> (Host, SocketAddr) {
    let maddr = metrics_addr();
    let m = maddr.to_string();
    let host = Host::app(
        "chat",
        &["-w", "2", "--websocket-drain", drain, "--metrics-bind", &m],
    );
    host.wait_for_log("ready in", 2);
    (host, maddr)
}

#[test]
#[ignore = "needs python3 websockets"]
fn hup_drains_old_connections_with_1001_while_new_workers_serve_and_http_loses_nothing() {
    let (host, maddr) = two_chat_workers("2");
    let mut c = Clients::new();
    let old: Vec<String> = (0..3).map(|i| format!("old{i}")).collect();
    for id in &old {
        c.open(id, &ws_url(host.addr(), "/echo"));
    }
    eventually("the old workers to hold the connections", || {
        let w = worker_websockets(maddr);
        (w.iter().map(|(_, n)| n).sum::<u64>() == 3).then_some(())
    });
    let load = Load::start(host.addr(), 3);
    host.signal(Signal::SIGHUP);
    for id in &old {
        let (code, reason) = c.closed(id);
        assert_eq!(code, 1001, "{id}: {reason}");
    }
    // The old workers exit once their connections are closed; a new
    // connection is the new generation's.
    eventually("only generation 2 workers", || {
        let w = worker_websockets(maddr);
        (w.len() == 2 && w.iter().all(|(g, _)| *g == 2)).then_some(())
    });
    c.open("new", &ws_url(host.addr(), "/echo"));
    c.send_text("new", "after the reload");
    assert_eq!(c.text("new"), "after the reload");
    let w = worker_websockets(maddr);
    assert_eq!(w.iter().map(|(_, n)| n).sum::<u64>(), 1, "{w:?}");
    assert!(w.iter().all(|(g, _)| *g == 2), "{w:?}");
    let (ok, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} lost requests: {failures:?}",
        failures.len()
    );
    assert!(ok > 20, "only {ok} requests were made");
}

#[test]
#[ignore = "needs python3 websockets"]
fn max_requests_retires_a_worker_holding_connections_with_1001() {
    let host = Host::app(
        "chat",
        &["-w", "1", "--max-requests", "4", "--websocket-drain", "1"],
    );
    host.wait_for_log("ready in", 1);
    let mut c = Clients::new();
    for id in ["m0", "m1"] {
        c.open(id, &ws_url(host.addr(), "/echo"));
    }
    // Requests until the worker has served its share (the handshakes may
    // count), then it asks to be replaced.
    for _ in 0..8 {
        if host.count_log("asks to be replaced: it reached --max-requests") > 0 {
            break;
        }
        assert_eq!(host.get("/").status, 200);
    }
    host.wait_for_log("asks to be replaced: it reached --max-requests", 1);
    for id in ["m0", "m1"] {
        let (code, reason) = c.closed(id);
        assert_eq!(code, 1001, "{id}: {reason}");
    }
    host.wait_for_log("ready in", 2);
    host.wait_for_log("exited with status 0", 1);
    c.open("m2", &ws_url(host.addr(), "/echo"));
    c.send_text("m2", "new worker");
    assert_eq!(c.text("m2"), "new worker");
}

#[test]
#[ignore = "needs python3 websockets"]
fn on_close_runs_for_a_dropped_connection_a_normal_close_and_a_server_close() {
    let host = Host::app("chat", &["-w", "1"]);
    let mut c = Clients::new();
    for n in ["a", "b", "c", "d"] {
        c.open(n, &ws_url(host.addr(), &format!("/ws?name={n}")));
    }
    c.text_until("c", "* d joined");
    // TCP dropped, no close frame: 1006.
    c.abort("a");
    c.text_until("c", "* a left (1006)");
    // A normal close.
    c.close("b", 1000);
    c.text_until("c", "* b left (1000)");
    // The app closes one itself.
    c.send_text("d", "/close 4001 bye");
    assert_eq!(c.closed("d"), (4001, "bye".to_owned()));
    c.text_until("c", "* d left (4001)");
    // The room still works for who is left.
    c.send_text("c", "alone");
    c.text_until("c", "c: alone");
}

#[test]
#[ignore = "needs python3 websockets"]
fn metrics_count_open_connections_and_messages_across_worker_replacement() {
    let (host, maddr) = two_chat_workers("1");
    let mut c = Clients::new();
    let ids: Vec<String> = (0..4).map(|i| format!("x{i}")).collect();
    for id in &ids {
        c.open(id, &ws_url(host.addr(), "/echo"));
        for i in 0..5 {
            c.send_text(id, &i.to_string());
            assert_eq!(c.text(id), i.to_string());
        }
    }
    let connections = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("host_websocket_connections{worker="))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let text = eventually("4 open connections and 20 messages each way", || {
        let text = get(maddr, "/metrics").text();
        (connections(&text) == 4.0
            && sample(&text, "host_websocket_messages_total{direction=\"in\"}") == Some(20.0))
        .then_some(text)
    });
    assert_eq!(
        sample(&text, "host_websocket_messages_total{direction=\"out\"}"),
        Some(20.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE host_websocket_connections gauge"),
        "{text}"
    );
    // The workers served 4 requests (the handshakes); messages are not requests.
    let j = get(maddr, "/status.json").json();
    let served: u64 = j["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["requests"].as_u64())
        .sum();
    assert_eq!(served, 4, "{j}");
    c.close("x0", 1000);
    eventually("3 open connections", || {
        (connections(&get(maddr, "/metrics").text()) == 3.0).then_some(())
    });
    // `host ctl workers` and the status page have a column for them.
    let (code, table, err) = host.ctl(&["workers"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let column = header
        .iter()
        .position(|h| *h == "websockets")
        .unwrap_or_else(|| panic!("a websockets column in {table}"));
    let open: u64 = lines
        .filter_map(|l| l.split_whitespace().nth(column)?.parse::<u64>().ok())
        .sum();
    assert_eq!(open, 3, "{table}");
    let page = get(maddr, "/status").text();
    assert!(page.contains("<th>WebSockets</th>"), "{page}");
    // New workers: the gauges start again, the totals keep what the old
    // workers counted.
    host.signal(Signal::SIGHUP);
    for id in &ids[1..] {
        assert_eq!(c.closed(id).0, 1001, "{id}");
    }
    let text = eventually("only new workers, with no connections", || {
        let w = worker_websockets(maddr);
        let text = get(maddr, "/metrics").text();
        (w.len() == 2 && w.iter().all(|(g, _)| *g == 2) && connections(&text) == 0.0)
            .then_some(text)
    });
    assert_eq!(
        sample(&text, "host_websocket_messages_total{direction=\"in\"}"),
        Some(20.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "host_websocket_messages_total{direction=\"out\"}"),
        Some(20.0),
        "{text}"
    );
}

#[test]
#[ignore = "needs chromium and python3 websockets"]
fn the_chat_page_in_headless_chromium_exchanges_messages_with_a_python_client() {
    let chromium = tests::chromium();
    let host = Host::app("chat", &["-w", "1"]);
    let mut c = Clients::new();
    c.open("py", &ws_url(host.addr(), "/ws?name=py"));
    c.text_until("py", "* py joined");
    let profile = Scratch::new("chat-chromium");
    let url = format!(
        "http://{}/?name=browser&say=hello%20from%20chromium",
        host.addr()
    );
    let out = Command::new(chromium)
        .args(tests::CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=10000", "--dump-dom", &url])
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    // The page's message went through the server and came back to it...
    assert!(
        dom.contains("<p class=\"message\">browser: hello from chromium</p>"),
        "{dom}"
    );
    // ...and reached the other client in the room, who saw the page join
    // and leave (on_close ran when Chromium went).
    assert!(c
        .text_until("py", "browser: hello from chromium")
        .contains(&"* browser joined".to_owned()));
    let left = c.text("py");
    assert!(left.starts_with("* browser left ("), "{left}");
}
