//! Raw protocol upgrades (`Response::upgrade`): the echo app's `GET /raw`
//! switches to its `echo` protocol, answers `101`, and sends back every
//! byte until the client closes its side; then the connection closes. Over
//! plain TCP and TLS; a switch the request did not ask for, or to
//! WebSocket (the host's own), is refused and the app's error answers 500.
//! (`upgrade.rs` is the binary upgrade, USR2.)

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
};

use nix::sys::signal::Signal;
use tests::{connect, parse_one, raw, read_to_close, tls::Pki, Host, Scratch};

/// A request for `/raw` that offers the echo protocol.
const ASKS_ECHO: &[u8] =
    b"GET /raw HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";

/// Reads from `stream` until `got` ends with `want` (or panics at EOF or the
/// read timeout, showing what came).
fn read_until(stream: &mut impl Read, got: &mut Vec<u8>, want: &[u8]) {
    let mut buf = [0u8; 4096];
    while !got.ends_with(want) {
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "the server closed before {:?}; got {:?}",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading: {e}; got {:?}", String::from_utf8_lossy(got)),
        }
    }
}

/// Reads from `stream` until `got` holds `n` bytes (or panics at EOF or the
/// read timeout).
fn read_count(stream: &mut impl Read, got: &mut Vec<u8>, n: usize) {
    let mut buf = [0u8; 4096];
    while got.len() < n {
        match stream.read(&mut buf) {
            Ok(0) => panic!("the server closed after {} of {n} bytes", got.len()),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => panic!("reading: {e} after {} of {n} bytes", got.len()),
        }
    }
}

/// Checks a `101` head for the echo protocol at the start of `got`;
/// returns the bytes after it.
fn after_101(got: &[u8]) -> &[u8] {
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head")
        + 4;
    let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
    assert!(
        head.starts_with("http/1.1 101 switching protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(head.contains("\r\nupgrade: echo\r\n"), "{head}");
    assert!(
        !head.contains("content-length") && !head.contains("transfer-encoding"),
        "{head}"
    );
    &got[end..]
}

#[test]
fn the_101_then_every_byte_comes_back_until_the_client_closes() {
    let host = Host::app("echo", &[]);
    let mut stream = connect(host.addr());
    // Bytes of the new protocol in the same write as the head.
    let mut first = ASKS_ECHO.to_vec();
    first.extend_from_slice(b"early bytes|");
    stream.write_all(&first).expect("send");
    let mut got = Vec::new();
    read_until(&mut stream, &mut got, b"early bytes|");
    assert_eq!(after_101(&got), b"early bytes|");
    // Binary bytes later, some that look like HTTP: none of it is parsed.
    let later: Vec<u8> = (0..=255u8)
        .chain(*b"GET / HTTP/1.1\r\n\r\n")
        .cycle()
        .take(100_000)
        .collect();
    stream.write_all(&later).expect("send more");
    let mut echoed = Vec::new();
    read_count(&mut stream, &mut echoed, later.len());
    assert_eq!(echoed, later);
    // The client closes its side: the app returns and the connection closes.
    stream.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_close(&mut stream), b"", "nothing more, then EOF");
    assert_eq!(host.get("/").status, 200, "the worker serves on");
}

#[test]
fn without_the_upgrade_headers_the_switch_is_refused_and_the_apps_error_answers_500() {
    let host = Host::app("echo", &[]);
    for (request, why) in [
        (
            &b"GET /raw HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"[..],
            "the request asked for no upgrade",
        ),
        (
            b"GET /raw HTTP/1.1\r\nHost: t\r\nConnection: upgrade, close\r\nUpgrade: h2c\r\n\r\n",
            "the request's Upgrade does not offer it",
        ),
        (
            b"GET /raw HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
            "an HTTP/1.0 request cannot switch protocols",
        ),
    ] {
        let got = raw(host.addr(), request);
        let (resp, _) = parse_one(&got).expect("a response");
        assert_eq!(resp.status, 500, "{}", String::from_utf8_lossy(&got));
        host.wait_for_log(why, 1);
    }
}

#[test]
fn an_app_cannot_switch_to_websocket_which_is_the_hosts() {
    let host = Host::app("echo", &[]);
    let handshake = b"GET /raw?protocol=websocket HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n\
        Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: close\r\n\r\n";
    let got = raw(host.addr(), handshake);
    let (resp, _) = parse_one(&got).expect("a response");
    assert_eq!(resp.status, 500, "{}", String::from_utf8_lossy(&got));
    host.wait_for_log("the host runs WebSocket itself (use accept_websocket)", 1);
}

#[test]
fn it_works_over_tls() {
    let dir = Scratch::new("raw-upgrade-tls");
    let pki = Pki::new(dir.path());
    let pair = pki.server(&["localhost"]);
    let host = tests::tls::host("echo", &pair, &[]);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    let conn = rustls::ClientConnection::new(pki.client_config(), name).expect("a client");
    let sock = TcpStream::connect(host.addr()).expect("connect");
    sock.set_read_timeout(Some(tests::READ_TIMEOUT))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut first = ASKS_ECHO.to_vec();
    first.extend_from_slice(b"secret|");
    tls.write_all(&first).expect("send");
    let mut got = Vec::new();
    read_until(&mut tls, &mut got, b"secret|");
    assert_eq!(after_101(&got), b"secret|");
    let later = vec![b'x'; 50_000];
    tls.write_all(&later).expect("send more");
    let mut echoed = Vec::new();
    read_count(&mut tls, &mut echoed, later.len());
    assert_eq!(echoed, later);
    // close_notify ends the client's side: the server closes too.
    tls.conn.send_close_notify();
    tls.flush().expect("send close_notify");
    let mut rest = Vec::new();
    match tls.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("reading to the end: {e}"),
    }
    assert_eq!(rest, b"");
}

#[test]
fn a_stopping_worker_ends_an_idle_raw_stream_as_if_the_client_closed() {
    // A graceful timeout far past the read timeout below: the stream must
    // end because the stop reached the app's read, not because the master
    // lost patience.
    let mut host = Host::app("echo", &["--graceful-timeout", "300"]);
    let mut stream = connect(host.addr());
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    stream.write_all(ASKS_ECHO).expect("send");
    let mut got = Vec::new();
    read_until(&mut stream, &mut got, b"\r\n\r\n");
    assert_eq!(after_101(&got), b"");
    // The app waits in a read; a graceful stop ends it as EOF, the app
    // returns, the connection closes, and the worker and the master exit.
    host.signal(Signal::SIGTERM);
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        other => panic!("expected the server to close, got {other:?}"),
    }
    let status = host.wait_exit();
    assert!(status.success(), "{status:?}");
}

#[test]
fn timeout_bounds_a_raw_stream_as_any_call_with_one_thread_or_several() {
    for threads in ["1", "2"] {
        let host = Host::app("echo", &["--timeout", "2", "--threads", threads]);
        let mut stream = connect(host.addr());
        // Longer than the read timeout of other tests: the master looks
        // about once a second, and the box may be loaded.
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .expect("timeout");
        stream.write_all(ASKS_ECHO).expect("send");
        let mut got = Vec::new();
        read_until(&mut stream, &mut got, b"\r\n\r\n");
        stream.write_all(b"still here").expect("send");
        read_until(&mut stream, &mut got, b"still here");
        // Then silence: past --timeout the call is given up on and the
        // connection shut (a 101 went out, so no 504).
        let mut rest = Vec::new();
        let ended = stream.read_to_end(&mut rest);
        assert!(
            ended.is_ok()
                || ended
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "--threads {threads}: {ended:?}"
        );
        assert_eq!(rest, b"", "--threads {threads}");
        host.wait_for_log("timed out handling \"GET /raw\"", 1);
        assert_eq!(host.count_log("504"), 0, "--threads {threads}");
    }
}

#[test]
fn a_threaded_worker_switches_too() {
    let host = Host::app("echo", &["--threads", "4"]);
    let mut stream = connect(host.addr());
    let mut first = ASKS_ECHO.to_vec();
    first.extend_from_slice(b"threads|");
    stream.write_all(&first).expect("send");
    let mut got = Vec::new();
    read_until(&mut stream, &mut got, b"threads|");
    assert_eq!(after_101(&got), b"threads|");
    // Another client is served meanwhile, by another thread.
    assert_eq!(host.get("/").status, 200);
    stream.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_close(&mut stream), b"");
}
