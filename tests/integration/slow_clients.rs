//! `--threads`: a client that sends its request head a byte at a time holds
//! no thread. Every loop of a threaded worker reads heads without blocking,
//! so clients dribbling as many heads as the worker has threads cost it
//! buffers, and another client is answered while they are still dribbling.

use std::{
    io::Write,
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use tests::{parse_responses, read_to_close, Host};

/// How long a client waits for an answer before the test fails.
const WAIT: Duration = Duration::from_secs(30);
/// The pace of a dribbling client (not a synchronisation: it only makes
/// the head last far longer than the other client's exchange).
const BYTE_EVERY: Duration = Duration::from_millis(20);
/// The handler threads of the worker, and the dribbling clients.
const THREADS: usize = 2;

/// A head that takes a dribbling client minutes to send (the server's
/// header timeout may cut it first: what matters is what happens before).
fn long_head() -> Vec<u8> {
    let mut head = b"GET /dribbled HTTP/1.1\r\nHost: t\r\nX-Pad: ".to_vec();
    head.extend(std::iter::repeat_n(b'p', 6000));
    head.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    head
}

/// A client dribbling `head` from its second byte on, until `stop` is set
/// (then it sends the rest at once and returns what came back), or until
/// the server cuts it.
fn dribble(mut stream: TcpStream, head: Vec<u8>, stop: Arc<AtomicBool>) -> Vec<u8> {
    for (i, byte) in head.iter().enumerate().skip(1) {
        if stop.load(Ordering::SeqCst) {
            if stream.write_all(&head[i..]).is_err() {
                return Vec::new();
            }
            break;
        }
        if stream.write_all(&[*byte]).is_err() {
            return Vec::new();
        }
        thread::sleep(BYTE_EVERY);
    }
    read_to_close(&mut stream)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

#[test]
fn clients_dribbling_their_heads_hold_no_thread() {
    let threads = THREADS.to_string();
    let host = Host::app("hello", &["-w", "1", "--threads", &threads]);
    host.wait_for_log("ready in", 1);
    let addr = host.addr();
    let head = long_head();
    let stop = Arc::new(AtomicBool::new(false));
    // The dribblers connect and send their first byte before the other
    // client connects: queued first, they are accepted first.
    let dribblers: Vec<_> = (0..THREADS)
        .map(|_| {
            let mut stream = connect(addr);
            stream.write_all(&head[..1]).expect("first byte");
            let head = head.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || dribble(stream, head, stop))
        })
        .collect();

    let mut other = connect(addr);
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("send");
    let reply = read_to_close(&mut other);
    // Answered while every dribbler was still sending its head.
    let still_dribbling = dribblers.iter().all(|d| !d.is_finished());
    let responses = parse_responses(&reply);
    assert_eq!(
        responses.len(),
        1,
        "the other client's answer: {:?}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(responses[0].status, 200);
    assert!(
        still_dribbling,
        "a dribbling client finished before the other client was answered"
    );

    // The dribbled heads were read as they came: once complete, each is answered.
    stop.store(true, Ordering::SeqCst);
    for dribbler in dribblers {
        let reply = dribbler.join().expect("a dribbling client");
        let responses = parse_responses(&reply);
        assert_eq!(
            responses.len(),
            1,
            "a dribbled request's answer: {:?}",
            String::from_utf8_lossy(&reply)
        );
        assert_eq!(responses[0].status, 200);
    }
}
