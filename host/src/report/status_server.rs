//! The master's own small HTTP endpoint (`--metrics-bind`): `/metrics`
//! (Prometheus), `/status.json`, `/status` (an HTML page), and `/ready` (200
//! while a worker serves, else 503: a readiness probe).
//!
//! It runs inside the master's single-threaded loop: a non-blocking listener
//! and a few non-blocking connections polled with the signalfd, each answered
//! from a fresh [`Snapshot`] and closed. No app code is involved, so it keeps
//! answering while workers are busy, crashing or rolling.

use std::{
    io::{self, Read, Write},
    os::fd::{AsFd, BorrowedFd},
    time::{Duration, Instant},
};

use nix::poll::PollFlags;
use socket2::Socket;

use crate::{
    os::listener::{BindAddr, InheritedFds, Listener, SocketOptions},
    report::metrics::{self, Snapshot},
};

/// Largest request head the endpoint reads.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client of the endpoint may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most clients at once; more wait in the listen queue.
const MAX_CLIENTS: usize = 16;

struct Client {
    socket: Socket,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    deadline: Instant,
}

/// The endpoint: its listener and the clients being answered.
pub struct StatusServer {
    listener: Listener,
    clients: Vec<Client>,
}

impl StatusServer {
    /// Listens on `addr` (`fd://N`: a duplicate of a descriptor in `inherited`).
    pub fn bind(addr: &BindAddr, inherited: &InheritedFds) -> io::Result<StatusServer> {
        let opts = SocketOptions {
            backlog: 64,
            ..SocketOptions::default()
        };
        Ok(StatusServer {
            listener: Listener::bind(addr, &opts, inherited)?,
            clients: Vec::new(),
        })
    }

    /// Where it listens, for the log.
    pub fn url(&self) -> String {
        self.listener.url()
    }

    /// The descriptors to poll, and for what.
    pub fn poll_set(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let mut set = Vec::new();
        if self.clients.len() < MAX_CLIENTS {
            set.push((self.listener.as_fd(), PollFlags::POLLIN));
        }
        for c in &self.clients {
            let want = if c.out.is_empty() {
                PollFlags::POLLIN
            } else {
                PollFlags::POLLOUT
            };
            set.push((c.socket.as_fd(), want));
        }
        set
    }

    /// Accepts, reads, answers and closes what it can without blocking.
    pub fn service(&mut self, snapshot: impl Fn() -> Snapshot) {
        while self.clients.len() < MAX_CLIENTS {
            match self.listener.accept() {
                Ok(socket) => {
                    self.clients.push(Client {
                        socket,
                        inbuf: Vec::new(),
                        out: Vec::new(),
                        written: 0,
                        deadline: Instant::now() + CLIENT_TIMEOUT,
                    });
                }
                Err(_) => break,
            }
        }
        let now = Instant::now();
        self.clients.retain_mut(|c| {
            if now > c.deadline {
                return false;
            }
            if c.out.is_empty() {
                let mut buf = [0u8; 2048];
                loop {
                    match c.socket.read(&mut buf) {
                        Ok(0) => return false,
                        Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return false,
                    }
                }
                if !c.inbuf.windows(4).any(|w| w == b"\r\n\r\n") {
                    // Still waiting for the head, unless it is too long.
                    return c.inbuf.len() <= MAX_REQUEST;
                }
                c.out = respond(&c.inbuf, &snapshot);
            }
            while c.written < c.out.len() {
                match c.socket.write(&c.out[c.written..]) {
                    Ok(n) => c.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(_) => return false,
                }
            }
            false // answered: close
        });
    }
}

/// The whole response to the request head in `request`.
fn respond(request: &[u8], snapshot: &impl Fn() -> Snapshot) -> Vec<u8> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let (status, content_type, body) = match req.parse(request) {
        Ok(httparse::Status::Complete(_)) if matches!(req.method, Some("GET") | Some("HEAD")) => {
            let path = req.path.unwrap_or("/").split('?').next().unwrap_or("/");
            match path {
                "/metrics" => (
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics::prometheus(&snapshot()),
                ),
                "/status.json" => (200, "application/json", metrics::json(&snapshot())),
                "/" | "/status" => (200, "text/html; charset=utf-8", metrics::html(&snapshot())),
                "/ready" => {
                    let serving = snapshot()
                        .workers
                        .iter()
                        .filter(|w| matches!(w.state, "idle" | "busy"))
                        .count();
                    if serving > 0 {
                        (
                            200,
                            "text/plain; charset=utf-8",
                            format!("ready: {serving} worker(s)\n"),
                        )
                    } else {
                        (
                            503,
                            "text/plain; charset=utf-8",
                            "not ready: no worker serves\n".to_owned(),
                        )
                    }
                }
                _ => (
                    404,
                    "text/plain; charset=utf-8",
                    "not found: try /metrics, /status or /status.json\n".to_owned(),
                ),
            }
        }
        Ok(httparse::Status::Complete(_)) => {
            (405, "text/plain; charset=utf-8", "only GET\n".to_owned())
        }
        _ => (400, "text/plain; charset=utf-8", "bad request\n".to_owned()),
    };
    let head_only = req.method == Some("HEAD");
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        crate::http::response::reason(status),
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}
