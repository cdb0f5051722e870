//! The floor: the least a server can do per request on this kernel, for
//! `bench/run.py` to measure beside host and nginx.
//!
//! One thread, one epoll loop, `TCP_DEFER_ACCEPT`, a canned response the
//! size of host's to every `\r\n\r\n` it reads (pipelined ones answered in
//! one write), closing when a request says `Connection: close`. No parsing,
//! no limits, no timeouts, no app: not a server anyone should run, only the
//! system calls one cannot avoid (`recv` + `send` per keep-alive request;
//! `accept4`, `recv`, `send`, `close` per close one) and what they cost.
//!
//! ```text
//! cargo build --release --example floor -p host
//! target/release/examples/floor 127.0.0.1:8080
//! ```

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use host::internals::os::listener::{BindAddr, Listener, SocketOptions};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use socket2::Socket;

/// host's `hello` response, byte for byte in size, with `$extra` header lines.
macro_rules! response {
    ($extra:literal) => {
        concat!(
            "HTTP/1.1 200 OK\r\nServer: host/0.1.0\r\n",
            "Date: Wed, 25 Nov 2026 05:00:00 GMT\r\nX-Request-Id: 0123456789abcdef\r\n",
            "Content-Type: text/plain\r\nContent-Length: 13\r\n",
            $extra,
            "\r\nHello, World!"
        )
        .as_bytes()
    };
}

/// What every request gets.
const RESPONSE: &[u8] = response!("");
/// The same, to a request that asked to close.
const RESPONSE_CLOSE: &[u8] = response!("Connection: close\r\n");
/// The listener's epoll token (connections use their descriptor).
const LISTENER: u64 = u64::MAX;

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    // host's own listener set-up: non-blocking, TCP_NODELAY, TCP_DEFER_ACCEPT.
    let bind: BindAddr = addr.parse().map_err(io::Error::other)?;
    let opts = SocketOptions {
        backlog: 1024,
        defer_accept: 1,
        ..SocketOptions::default()
    };
    let listener = Listener::bind(&bind, &opts, &Default::default())?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    // SAFETY: the listener outlives the epoll set's use of it.
    let listener_fd = unsafe { BorrowedFd::borrow_raw(listener.as_raw_fd()) };
    epoll.add(listener_fd, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    let mut conns: HashMap<u64, Socket> = HashMap::new();
    let mut events = vec![EpollEvent::empty(); 256];
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(64 * RESPONSE.len());
    println!("floor listening on {addr}");
    loop {
        let n = epoll.wait(&mut events, EpollTimeout::NONE)?;
        for ev in &events[..n] {
            if ev.data() == LISTENER {
                while let Ok(stream) = listener.accept() {
                    let key = stream.as_raw_fd() as u64;
                    // Deferred accept: the request is (almost always) there.
                    if serve(&stream, &mut buf, &mut out) {
                        epoll.add(stream.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, key))?;
                        conns.insert(key, stream);
                    }
                }
            } else if let Some(stream) = conns.get(&ev.data()) {
                if !serve(stream, &mut buf, &mut out) {
                    conns.remove(&ev.data());
                }
            }
        }
    }
}

/// Reads what is there and answers each request in it; false to close.
fn serve(mut stream: &Socket, buf: &mut [u8], out: &mut Vec<u8>) -> bool {
    let n = match stream.read(buf) {
        Ok(0) => return false,
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
        Err(_) => return false,
    };
    let input = &buf[..n];
    let close = memchr::memmem::find(input, b"Connection: close").is_some();
    out.clear();
    for _ in memchr::memmem::find_iter(input, b"\r\n\r\n") {
        out.extend_from_slice(if close { RESPONSE_CLOSE } else { RESPONSE });
    }
    if !out.is_empty() && stream.write_all(out).is_err() {
        return false;
    }
    !close
}
