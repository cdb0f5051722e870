//! WebSocket protocol rules (RFC 6455), checked frame by frame with a
//! client made of raw bytes (`tests::websocket`) against the `chat`
//! example app (`/echo` echoes each message, `/ws` is the chat room).
//!
//! Each test breaks (or keeps) one rule and checks exactly what the host
//! answers: the handshake's status and headers, the close code of the
//! close frame it sends, and that the socket then closes. The last test
//! holds the same rules over TLS.

use std::{
    io::{self, Write},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use tests::{
    connect, read_response,
    websocket::{
        accept_for, handshake_request, op, Frame, Next, WsClient, SAMPLE_ACCEPT, SAMPLE_KEY,
    },
    Host, WAIT,
};

/// The chat app on one worker, with extra `args`.
fn chat(args: &[&str]) -> Host {
    let mut all = vec!["-w", "1"];
    all.extend_from_slice(args);
    Host::app("chat", &all)
}

/// Opens `/echo`, sends `frames` (in one write), and expects the host to
/// answer with a close frame carrying `code`, then to close the socket.
fn closes_with(addr: SocketAddr, frames: &[Frame], code: u16) {
    let mut ws = WsClient::open(addr, "/echo");
    let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
    // The host may close before it has read them all (a frame over the
    // limit): a failed send is fine, the close frame is what counts.
    let _ = ws.try_send_bytes(&bytes);
    let (got, reason) = ws.expect_close();
    assert_eq!(got, Some(code), "close reason {reason:?} after {frames:?}");
}

/// The response to the handshake `request` (on a new connection).
fn status_of(request: &str, addr: SocketAddr) -> tests::Response {
    let (_, resp) = WsClient::handshake_raw(addr, request.as_bytes());
    resp
}

// The handshake.

#[test]
fn a_valid_handshake_gets_101_with_the_accept_key() {
    let host = chat(&[]);
    let addr = host.addr();
    // The RFC's own example key, then one whose answer the test computes.
    let other_key = "AQIDBAUGBwgJCgsMDQ4PEA==";
    for (key, accept) in [
        (SAMPLE_KEY, SAMPLE_ACCEPT.to_owned()),
        (other_key, accept_for(other_key)),
    ] {
        let request = handshake_request("/echo", key, "");
        let (mut ws, resp) = WsClient::handshake_raw(addr, request.as_bytes());
        assert_eq!(resp.status, 101, "{resp:?}");
        assert!(
            resp.header("upgrade")
                .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
            "{resp:?}"
        );
        assert!(
            resp.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
            "{resp:?}"
        );
        assert_eq!(
            resp.header("sec-websocket-accept"),
            Some(accept.as_str()),
            "{resp:?}"
        );
        assert_eq!(resp.header("sec-websocket-protocol"), None, "none offered");
        // A 1xx has no body, and says nothing of one.
        assert_eq!(resp.header("content-length"), None, "{resp:?}");
        assert_eq!(resp.header("transfer-encoding"), None, "{resp:?}");
        ws.text("works");
        assert_eq!(ws.text_message(), "works");
    }
    assert_eq!(
        accept_for(SAMPLE_KEY),
        SAMPLE_ACCEPT,
        "the test's own SHA-1"
    );

    // A subprotocol the app picks is named; one it does not is not.
    let request = handshake_request(
        "/ws?name=ann",
        SAMPLE_KEY,
        "Sec-WebSocket-Protocol: other, chat.v1\r\n",
    );
    let (_, resp) = WsClient::handshake_raw(addr, request.as_bytes());
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("sec-websocket-protocol"), Some("chat.v1"));
    let request = handshake_request("/ws", SAMPLE_KEY, "Sec-WebSocket-Protocol: other\r\n");
    let (_, resp) = WsClient::handshake_raw(addr, request.as_bytes());
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("sec-websocket-protocol"), None);
}

#[test]
fn an_offered_extension_is_not_taken_and_then_rsv1_is_refused() {
    let host = chat(&[]);
    let request = handshake_request(
        "/echo",
        SAMPLE_KEY,
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    );
    let (mut ws, resp) = WsClient::handshake_raw(host.addr(), request.as_bytes());
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("sec-websocket-extensions"), None, "{resp:?}");
    // So a compressed frame (RSV1) is a protocol error.
    ws.send(&Frame::new(op::TEXT, vec![0xf2, 0x48, 0x05, 0x00]).rsv(0b100));
    assert_eq!(ws.expect_close().0, Some(1002));
}

#[test]
fn a_handshake_on_a_kept_alive_connection_is_accepted() {
    let host = chat(&[]);
    let mut stream = connect(host.addr());
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("send");
    assert_eq!(read_response(&mut stream).status, 200);
    let request = handshake_request("/echo", SAMPLE_KEY, "");
    let (mut ws, resp) = WsClient::handshake_on(stream, request.as_bytes());
    assert_eq!(resp.status, 101, "{resp:?}");
    ws.text("second");
    assert_eq!(ws.text_message(), "second");
}

#[test]
fn a_wrong_or_missing_version_is_answered_426_naming_version_13() {
    let host = chat(&[]);
    let ok = handshake_request("/echo", SAMPLE_KEY, "");
    for request in [
        ok.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
        ok.replace("Sec-WebSocket-Version: 13\r\n", ""),
        ok.replace(
            "Sec-WebSocket-Version: 13\r\n",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 8\r\n",
        ),
    ] {
        let resp = status_of(&request, host.addr());
        assert_eq!(resp.status, 426, "{request:?}: {resp:?}");
        assert_eq!(
            resp.header("sec-websocket-version"),
            Some("13"),
            "{request:?}: {resp:?}"
        );
    }
}

#[test]
fn a_bad_key_is_answered_400() {
    let host = chat(&[]);
    let ok = handshake_request("/echo", SAMPLE_KEY, "");
    let key_line = format!("Sec-WebSocket-Key: {SAMPLE_KEY}\r\n");
    for request in [
        // 5 bytes, not 16.
        ok.replace(SAMPLE_KEY, "c2hvcnQ="),
        // 17 bytes.
        ok.replace(SAMPLE_KEY, "AQIDBAUGBwgJCgsMDQ4PEBE="),
        ok.replace(SAMPLE_KEY, "not base64 at all!!!"),
        ok.replace(&key_line, ""),
        ok.replace(&key_line, &format!("{key_line}{key_line}")),
    ] {
        let resp = status_of(&request, host.addr());
        assert_eq!(resp.status, 400, "{request:?}: {resp:?}");
    }
}

#[test]
fn a_handshake_that_is_not_a_get_over_http_1_1_is_answered_400() {
    let host = chat(&[]);
    let ok = handshake_request("/echo", SAMPLE_KEY, "");
    let post = ok.replacen("GET", "POST", 1).replace(
        "Sec-WebSocket-Version: 13\r\n",
        "Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n",
    );
    let http10 = ok.replace("HTTP/1.1", "HTTP/1.0");
    for request in [post, http10] {
        let resp = status_of(&request, host.addr());
        assert_eq!(resp.status, 400, "{request:?}: {resp:?}");
    }
}

#[test]
fn a_plain_get_of_a_websocket_endpoint_gets_the_apps_own_answer() {
    let host = chat(&[]);
    let resp = host.get("/ws");
    assert_eq!(resp.status, 426, "{resp:?}");
    assert_eq!(resp.text(), "this is a WebSocket endpoint\n");
    assert_eq!(resp.header("upgrade"), Some("websocket"));
    // `Upgrade` without `Connection: upgrade` asks for nothing either.
    let request = handshake_request("/ws", SAMPLE_KEY, "").replace("Connection: Upgrade\r\n", "");
    let resp = status_of(&request, host.addr());
    assert_eq!(resp.status, 426, "{resp:?}");
    assert_eq!(resp.text(), "this is a WebSocket endpoint\n");
}

#[test]
fn frames_sent_with_the_handshake_are_answered() {
    let host = chat(&[]);
    let mut bytes = handshake_request("/echo", SAMPLE_KEY, "").into_bytes();
    bytes.extend(Frame::new(op::TEXT, "early").encode());
    bytes.extend(Frame::new(op::PING, "p1").encode());
    bytes.extend(Frame::new(op::BINARY, vec![0u8, 1, 2, 255]).encode());
    let (mut ws, resp) = WsClient::handshake_raw(host.addr(), &bytes);
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(ws.text_message(), "early");
    let pong = ws.frame();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (op::PONG, &b"p1"[..])
    );
    assert_eq!(ws.message(), (op::BINARY, vec![0u8, 1, 2, 255]));
}

// Message size.

#[test]
fn a_message_at_the_limit_passes() {
    let host = chat(&["--websocket-max-message", "1000"]);
    let mut ws = WsClient::open(host.addr(), "/echo");
    ws.send(&Frame::new(op::BINARY, vec![7u8; 1000]));
    assert_eq!(ws.message(), (op::BINARY, vec![7u8; 1000]));
    // As two fragments, too.
    ws.send(&Frame::new(op::TEXT, "a".repeat(500)).fin(false));
    ws.send(&Frame::new(op::CONTINUATION, "b".repeat(500)));
    assert_eq!(ws.text_message(), "a".repeat(500) + &"b".repeat(500));
}

#[test]
fn a_message_over_the_limit_closes_with_1009() {
    let host = chat(&["--websocket-max-message", "1000"]);
    closes_with(
        host.addr(),
        &[Frame::new(op::BINARY, vec![7u8; 1001])],
        1009,
    );
}

#[test]
fn fragments_adding_up_past_the_limit_close_with_1009() {
    let host = chat(&["--websocket-max-message", "1000"]);
    closes_with(
        host.addr(),
        &[
            Frame::new(op::TEXT, "a".repeat(600)).fin(false),
            Frame::new(op::CONTINUATION, "b".repeat(401)),
        ],
        1009,
    );
}

#[test]
fn a_large_message_over_the_limit_still_gets_its_close_frame() {
    let host = chat(&["--websocket-max-message", "1000"]);
    // The host stops reading at the frame's header: 256 KiB it never
    // reads are left in its socket when it closes.
    for _ in 0..5 {
        closes_with(
            host.addr(),
            &[Frame::new(op::BINARY, vec![7u8; 256 * 1024])],
            1009,
        );
    }
}

#[test]
fn a_declared_length_past_the_limit_closes_with_1009_before_the_payload() {
    let host = chat(&["--websocket-max-message", "1000"]);
    // A 64-bit length of 2^62 (and one with the top bit set, which RFC
    // 6455 forbids): the host must not wait for (or allocate) the payload.
    for len in [1u64 << 62, u64::MAX] {
        let mut ws = WsClient::open(host.addr(), "/echo");
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        ws.stream.write_all(&header).expect("send the header");
        let (code, _) = ws.expect_close();
        assert!(
            matches!(code, Some(1009 | 1002)),
            "a length of {len}: closed with {code:?}"
        );
    }
}

#[test]
fn payload_lengths_of_every_encoding_are_read_and_written() {
    let host = chat(&[]);
    let mut ws = WsClient::open(host.addr(), "/echo");
    // 7-bit, 16-bit and 64-bit lengths, at their edges, up to the default
    // limit (1 MiB).
    for len in [0, 1, 125, 126, 127, 65_535, 65_536, 1024 * 1024] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        ws.send(&Frame::new(op::BINARY, payload.clone()));
        let (opcode, got) = ws.message();
        assert_eq!(opcode, op::BINARY);
        assert!(got == payload, "{len} bytes came back as {}", got.len());
    }
}

// Framing rules: each a protocol error, 1002.

#[test]
fn a_control_frame_over_125_bytes_closes_with_1002() {
    let host = chat(&[]);
    closes_with(host.addr(), &[Frame::new(op::PING, vec![1u8; 126])], 1002);
}

#[test]
fn a_fragmented_ping_closes_with_1002() {
    let host = chat(&[]);
    closes_with(host.addr(), &[Frame::new(op::PING, "x").fin(false)], 1002);
}

#[test]
fn reserved_opcodes_close_with_1002() {
    let host = chat(&[]);
    // A reserved data opcode, and a reserved control one.
    closes_with(host.addr(), &[Frame::new(0x3, "x")], 1002);
    closes_with(host.addr(), &[Frame::new(0xB, "x")], 1002);
}

#[test]
fn a_reserved_bit_closes_with_1002() {
    let host = chat(&[]);
    // RSV1 (no extension was negotiated), then RSV3.
    closes_with(host.addr(), &[Frame::new(op::TEXT, "x").rsv(0b100)], 1002);
    closes_with(host.addr(), &[Frame::new(op::TEXT, "x").rsv(0b001)], 1002);
}

#[test]
fn an_unmasked_client_frame_closes_with_1002() {
    let host = chat(&[]);
    closes_with(host.addr(), &[Frame::new(op::TEXT, "x").unmasked()], 1002);
}

#[test]
fn a_continuation_without_a_start_closes_with_1002() {
    let host = chat(&[]);
    closes_with(host.addr(), &[Frame::new(op::CONTINUATION, "x")], 1002);
    // A new data frame while a message is still open is as bad.
    closes_with(
        host.addr(),
        &[
            Frame::new(op::TEXT, "a").fin(false),
            Frame::new(op::TEXT, "b"),
        ],
        1002,
    );
}

#[test]
fn a_close_frame_with_a_code_that_may_not_be_sent_closes_with_1002() {
    let host = chat(&[]);
    // 1005 and 1006 are reported, never sent; 999 is not a code at all;
    // a 1-byte payload cannot hold one.
    for frame in [
        Frame::close(1005, ""),
        Frame::close(1006, ""),
        Frame::close(999, ""),
        Frame::new(op::CLOSE, vec![3u8]),
    ] {
        closes_with(host.addr(), &[frame], 1002);
    }
}

// UTF-8 in text.

#[test]
fn text_that_is_not_utf8_closes_with_1007() {
    let host = chat(&[]);
    closes_with(
        host.addr(),
        &[Frame::new(op::TEXT, b"ok \xc3\x28 no".to_vec())],
        1007,
    );
}

#[test]
fn text_whose_second_fragment_breaks_utf8_closes_with_1007() {
    let host = chat(&[]);
    // The first fragment ends inside a two-byte character (fine so far);
    // the second does not continue it.
    closes_with(
        host.addr(),
        &[
            Frame::new(op::TEXT, b"caf\xc3".to_vec()).fin(false),
            Frame::new(op::CONTINUATION, b"\x28".to_vec()),
        ],
        1007,
    );
}

#[test]
fn a_character_split_across_fragments_passes() {
    let host = chat(&[]);
    let mut ws = WsClient::open(host.addr(), "/echo");
    // "é" is C3 A9; "€" is E2 82 AC, split after its first byte.
    ws.send(&Frame::new(op::TEXT, b"caf\xc3".to_vec()).fin(false));
    ws.send(&Frame::new(op::CONTINUATION, b"\xa9 \xe2".to_vec()).fin(false));
    ws.send(&Frame::new(op::CONTINUATION, b"\x82\xac".to_vec()));
    assert_eq!(ws.text_message(), "café €");
}

#[test]
fn a_close_reason_that_is_not_utf8_closes_with_1007() {
    let host = chat(&[]);
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye \xff");
    closes_with(host.addr(), &[Frame::new(op::CLOSE, payload)], 1007);
}

// Control frames and the closing handshake.

#[test]
fn a_ping_is_answered_with_a_pong_of_the_same_payload() {
    let host = chat(&[]);
    let mut ws = WsClient::open(host.addr(), "/echo");
    for payload in [b"".to_vec(), b"hello".to_vec(), vec![0xAB; 125]] {
        ws.send(&Frame::new(op::PING, payload.clone()));
        let pong = ws.frame();
        assert_eq!(pong.opcode, op::PONG, "{pong:?}");
        assert!(pong.fin && pong.mask.is_none(), "{pong:?}");
        assert_eq!(pong.payload, payload);
    }
    // A ping between a message's fragments is answered too.
    ws.send(&Frame::new(op::TEXT, "a").fin(false));
    ws.send(&Frame::new(op::PING, "mid"));
    ws.send(&Frame::new(op::CONTINUATION, "b"));
    let pong = ws.frame();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (op::PONG, &b"mid"[..])
    );
    assert_eq!(ws.text_message(), "ab");
    // An unsolicited pong is ignored.
    ws.send(&Frame::new(op::PONG, "unasked"));
    ws.text("still here");
    assert_eq!(ws.text_message(), "still here");
}

#[test]
fn the_clients_close_is_answered_and_the_socket_closes() {
    let host = chat(&[]);
    let mut ws = WsClient::open(host.addr(), "/echo");
    ws.send(&Frame::close(1000, "bye"));
    let close = ws.close_frame();
    assert_eq!(close.close_parts().0, Some(1000), "{close:?}");
    ws.expect_end();
}

#[test]
fn a_close_without_a_code_is_answered_without_one() {
    let host = chat(&[]);
    let mut ws = WsClient::open(host.addr(), "/echo");
    ws.send(&Frame::new(op::CLOSE, Vec::new()));
    let close = ws.close_frame();
    assert_eq!(close.close_parts(), (None, String::new()));
    ws.expect_end();
}

#[test]
fn a_client_that_closes_and_stops_sending_still_gets_the_answer() {
    let host = chat(&[]);
    let mut ws = WsClient::open(host.addr(), "/echo");
    ws.send(&Frame::close(1001, "leaving"));
    ws.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    // The answer echoes the code (RFC 6455 §5.5.1), and here the reason.
    let close = ws.close_frame();
    assert_eq!(close.close_parts().0, Some(1001), "{close:?}");
    ws.expect_end();
}

#[test]
fn a_client_that_does_not_answer_the_apps_close_is_dropped_after_the_close_wait() {
    let host = chat(&[]);
    let mut ws = WsClient::open(host.addr(), "/ws?name=q");
    assert_eq!(ws.text_message(), "* q joined");
    ws.text("/close 4001 go");
    let close = ws.frame();
    assert_eq!(close.close_parts(), (Some(4001), "go".to_owned()));
    // No answer: the host closes the socket after its close wait (5 s).
    ws.set_read_timeout(WAIT);
    match ws.next_event() {
        Next::Closed(_) => {}
        other => panic!("expected the socket to close, got {other:?}"),
    }
}

#[test]
fn many_messages_in_one_write_are_all_answered_in_order() {
    let host = chat(&[]);
    let mut ws = WsClient::open(host.addr(), "/echo");
    // More than the host reads from one connection per turn (64).
    let bytes: Vec<u8> = (0..500)
        .flat_map(|i| Frame::new(op::TEXT, format!("m{i}")).encode())
        .collect();
    ws.stream.write_all(&bytes).expect("send");
    for i in 0..500 {
        assert_eq!(ws.text_message(), format!("m{i}"));
    }
}

#[test]
fn a_frame_trickled_byte_by_byte_is_assembled() {
    let host = chat(&[]);
    let mut ws = WsClient::open(host.addr(), "/echo");
    ws.stream.set_nodelay(true).expect("nodelay");
    let text = "é".repeat(150);
    let frame = Frame::new(op::TEXT, text.as_bytes()).encode();
    for byte in frame {
        ws.stream.write_all(&[byte]).expect("send a byte");
    }
    assert_eq!(ws.text_message(), text);
}

// Silence.

#[test]
fn a_client_that_never_answers_a_ping_is_dropped() {
    let host = chat(&[
        "--websocket-ping-interval",
        "1",
        "--websocket-ping-timeout",
        "1",
    ]);
    let mut ws = WsClient::open(host.addr(), "/echo");
    let ping = ws.frame();
    assert_eq!(ping.opcode, op::PING, "{ping:?}");
    // No answer: the socket closes, without a close frame (1006).
    match ws.next_event() {
        Next::Closed(_) => {}
        other => panic!("expected the socket to close, got {other:?}"),
    }
}

#[test]
fn a_client_that_answers_pings_stays_open() {
    // A client that did not answer would be gone 3 s in (a ping after 1 s
    // of silence, 2 s to answer it); this one answers, and stays past that
    // and past four intervals. (A longer timeout than 1 s leaves the test's
    // answers room on a loaded machine.)
    let host = chat(&[
        "--websocket-ping-interval",
        "1",
        "--websocket-ping-timeout",
        "2",
    ]);
    let mut ws = WsClient::open(host.addr(), "/echo");
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(4500) || pings < 4 {
        let frame = ws.frame();
        assert_eq!(frame.opcode, op::PING, "{frame:?}");
        pings += 1;
        ws.send(&Frame::new(op::PONG, frame.payload));
    }
    ws.text("alive");
    assert_eq!(ws.text_message(), "alive");
}

#[test]
fn a_client_sending_a_long_frame_slowly_is_not_silent() {
    // Pinged after 1 s of silence, dropped 1 s later: but this client is
    // never silent, it sends a byte every 30 ms; only its one frame takes
    // about 4 s, and it cannot answer a ping in the middle of it.
    let host = chat(&[
        "--websocket-ping-interval",
        "1",
        "--websocket-ping-timeout",
        "1",
    ]);
    let mut ws = WsClient::open(host.addr(), "/echo");
    ws.stream.set_nodelay(true).expect("nodelay");
    let payload = vec![b'z'; 120];
    let frame = Frame::new(op::BINARY, payload.clone()).encode();
    for byte in frame {
        ws.stream
            .write_all(&[byte])
            .expect("the host closed a connection that was sending");
        thread::sleep(Duration::from_millis(30));
    }
    // Whatever pings came meanwhile, then the echo.
    loop {
        let frame = ws.frame();
        if frame.opcode == op::PING {
            ws.send(&Frame::new(op::PONG, frame.payload));
            continue;
        }
        assert_eq!((frame.opcode, frame.payload), (op::BINARY, payload));
        break;
    }
}

// Back-pressure.

/// The resident memory of process `pid`, in KiB (`VmRSS`).
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read its status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_client_that_never_reads_is_dropped_and_others_are_served() {
    /// The most the reader-less client sends before the test gives up on
    /// the host dropping it: far more than the host may hold for it.
    const GIVE_UP: u64 = 512 * 1024 * 1024;
    let host = chat(&[]);
    let addr = host.addr();
    let worker = tests::eventually("the worker", || host.children().first().copied());
    let mut warm = WsClient::open(addr, "/echo");
    warm.send(&Frame::new(op::BINARY, vec![1u8; 64 * 1024]));
    assert_eq!(warm.message().1.len(), 64 * 1024);
    let before = rss_kib(worker);

    let hog = WsClient::open(addr, "/echo");
    let mut writer = hog.stream.try_clone().expect("clone the socket");
    writer
        .set_write_timeout(Some(WAIT))
        .expect("set a write timeout");
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let flood = {
        let (sent, done) = (Arc::clone(&sent), Arc::clone(&done));
        thread::spawn(move || -> io::Result<()> {
            let frame = Frame::new(op::BINARY, vec![0x5A; 64 * 1024]).encode();
            let result = loop {
                if sent.load(Ordering::Relaxed) >= GIVE_UP {
                    break Ok(());
                }
                if let Err(e) = writer.write_all(&frame) {
                    break Err(e);
                }
                sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
            };
            done.store(true, Ordering::Relaxed);
            result
        })
    };

    // While the flood runs, others are served: an HTTP request, an echo.
    let mut http = connect(addr);
    http.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("send");
    assert_eq!(read_response(&mut http).status, 200);
    warm.text("meanwhile");
    assert_eq!(warm.text_message(), "meanwhile");

    let result = flood.join().expect("the flood thread");
    let err = result.expect_err("the host never dropped a client that does not read");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "the flood ended with {err} after {} bytes",
        sent.load(Ordering::Relaxed)
    );
    assert!(done.load(Ordering::Relaxed));
    let after = rss_kib(worker);
    eprintln!(
        "the flood: {} bytes sent before the reset; the worker's RSS {before} KiB, then {after} KiB",
        sent.load(Ordering::Relaxed)
    );
    assert!(
        after < before + 64 * 1024,
        "the worker grew from {before} KiB to {after} KiB"
    );
    // Still serving.
    warm.text("after");
    assert_eq!(warm.text_message(), "after");
    assert_eq!(host.get("/").status, 200);
    drop(hog);
}

// The app's part.

#[test]
fn an_app_that_fails_in_on_message_closes_with_1011() {
    let host = chat(&["--panic-policy", "serve"]);
    let mut ws = WsClient::open(host.addr(), "/ws?name=p");
    assert_eq!(ws.text_message(), "* p joined");
    ws.text("/panic");
    let (code, _) = ws.expect_close();
    assert_eq!(code, Some(1011));
    // The worker serves on.
    let mut again = WsClient::open(host.addr(), "/echo");
    again.text("on");
    assert_eq!(again.text_message(), "on");
}

#[test]
fn an_app_close_sends_its_code_and_reason() {
    let host = chat(&[]);
    let mut ws = WsClient::open(host.addr(), "/ws?name=c");
    assert_eq!(ws.text_message(), "* c joined");
    ws.text("/close 4000 custom");
    let (code, reason) = ws.expect_close();
    assert_eq!((code, reason.as_str()), (Some(4000), "custom"));
}

/// How a test client ends its connection.
type Ending = fn(&mut WsClient);

#[test]
fn the_app_learns_how_each_connection_ended() {
    let host = chat(&["--websocket-max-message", "1000"]);
    let addr = host.addr();
    let mut watcher = WsClient::open(addr, "/ws?name=watcher");
    assert_eq!(watcher.text_message(), "* watcher joined");
    // Each way to end, and the code the app's on_close is given (the chat
    // room tells everyone).
    let endings: [(&str, Ending, u16); 5] = [
        ("closer", |ws| ws.send(&Frame::close(1000, "bye")), 1000),
        (
            "mute",
            |ws| ws.send(&Frame::new(op::CLOSE, Vec::new())),
            1005,
        ),
        (
            "vanisher",
            |ws| {
                ws.stream
                    .shutdown(std::net::Shutdown::Both)
                    .expect("shutdown")
            },
            1006,
        ),
        (
            "breaker",
            |ws| ws.send(&Frame::new(op::TEXT, "x").unmasked()),
            1002,
        ),
        ("talker", |ws| ws.text(&"x".repeat(1001)), 1009),
    ];
    for (name, end, code) in endings {
        let mut ws = WsClient::open(addr, &format!("/ws?name={name}"));
        assert_eq!(watcher.text_message(), format!("* {name} joined"));
        end(&mut ws);
        assert_eq!(watcher.text_message(), format!("* {name} left ({code})"));
    }
}

#[test]
fn an_app_close_with_a_code_it_may_not_send_fails_its_call() {
    let host = chat(&["--panic-policy", "serve"]);
    let mut ws = WsClient::open(host.addr(), "/ws?name=c");
    assert_eq!(ws.text_message(), "* c joined");
    // 1005 is reported, never sent: the app's close is refused, its
    // on_message returns that error, and the host closes with 1011.
    ws.text("/close 1005 nope");
    let (code, _) = ws.expect_close();
    assert_eq!(code, Some(1011));
}

// Over TLS: the session reads and writes through the TLS session (which
// may decrypt more than one read asks for), with the same rules.

/// A TLS WebSocket to `path` on `addr` (trusting `pki`), sending `frames`
/// right behind the handshake.
fn tls_open(
    addr: SocketAddr,
    pki: &tests::tls::Pki,
    path: &str,
    frames: &[Frame],
) -> WsClient<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    let conn = rustls::ClientConnection::new(pki.client_config(), name).expect("a TLS client");
    let sock = connect(addr);
    let stream = rustls::StreamOwned::new(conn, sock);
    let mut request = handshake_request(path, SAMPLE_KEY, "").into_bytes();
    request.extend(frames.iter().flat_map(Frame::encode));
    let (ws, resp) = WsClient::handshake_on(stream, &request);
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("sec-websocket-accept"), Some(SAMPLE_ACCEPT));
    ws
}

#[test]
fn over_tls_the_same_rules_hold() {
    let scratch = tests::Scratch::new("websocket-protocol-tls");
    let pki = tests::tls::Pki::new(scratch.path());
    let pair = pki.server(&["localhost"]);
    let host = tests::tls::host("chat", &pair, &["-w", "1"]);
    let addr = host.addr();

    // Frames with the handshake, many at once, and one of 1 MiB.
    let early = [Frame::new(op::TEXT, "early"), Frame::new(op::PING, "p")];
    let mut ws = tls_open(addr, &pki, "/echo", &early);
    assert_eq!(ws.text_message(), "early");
    assert_eq!(ws.frame().payload, b"p");
    let many: Vec<u8> = (0..300)
        .flat_map(|i| Frame::new(op::TEXT, format!("m{i}")).encode())
        .collect();
    ws.try_send_bytes(&many).expect("send");
    for i in 0..300 {
        assert_eq!(ws.text_message(), format!("m{i}"));
    }
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 253) as u8).collect();
    ws.send(&Frame::new(op::BINARY, big.clone()));
    assert!(ws.message().1 == big, "the 1 MiB message came back changed");
    // The client's close.
    ws.send(&Frame::close(1000, "bye"));
    assert_eq!(ws.expect_close().0, Some(1000));

    // A broken rule: a close frame with 1002, then the end.
    let mut ws = tls_open(addr, &pki, "/echo", &[Frame::new(op::TEXT, "x").unmasked()]);
    assert_eq!(ws.expect_close().0, Some(1002));
    // Bad UTF-8 split across fragments: 1007.
    let split = [
        Frame::new(op::TEXT, b"caf\xc3".to_vec()).fin(false),
        Frame::new(op::CONTINUATION, b"\x28".to_vec()),
    ];
    let mut ws = tls_open(addr, &pki, "/echo", &split);
    assert_eq!(ws.expect_close().0, Some(1007));
}
