//! The master's own small HTTP endpoint (`--metrics-bind`): `/metrics`
//! (Prometheus), `/status.json`, `/status` (an HTML page), and `/ready` (200
//! while a worker serves, else 503: a readiness probe).
//!
//! It runs inside the master's single-threaded loop, so it must never make
//! that loop wait, and no client may keep another out: Kubernetes probes
//! `/ready`, and a port scanner or a stuck monitoring agent holding
//! connections open must not get the pod restarted. So:
//! - everything is non-blocking, and the connections sit in the endpoint's
//!   own epoll set: the master polls one descriptor for all of them, and a
//!   turn touches only the connections that have something to say, however
//!   many are open;
//! - each connection has a deadline: [`HEAD_TIMEOUT`] from its accept to
//!   send a whole request head, then [`WRITE_TIMEOUT`] to take the answer;
//!   the master wakes for the nearest one ([`StatusServer::next_wake`]);
//! - every pending connection is accepted at each wake-up (up to
//!   [`MAX_ACCEPTS_PER_WAKE`]), and at most [`MAX_CLIENTS`] are held (fewer
//!   under a low descriptor limit: [`client_cap`]); a new connection past
//!   the cap closes the oldest idle one (accepted, no complete request yet),
//!   which is also what the endpoint does when `accept` finds no descriptor
//!   left (`EMFILE`); with no idle one to close, or short of kernel memory,
//!   it stops accepting for [`ACCEPT_PAUSE`] rather than spin on a listener
//!   that stays readable.
//!
//! Each request is answered from a fresh [`Snapshot`], then the connection
//! is closed. No app code is involved, so it keeps answering while workers
//! are busy, crashing or rolling.

use std::{
    collections::BTreeSet,
    io::{self, Read, Write},
    os::fd::{AsFd, BorrowedFd},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    poll::PollFlags,
    sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
};
use slab::Slab;
use socket2::Socket;

use crate::{
    os::listener::{BindAddr, InheritedFds, Listener, SocketOptions},
    report::metrics::{self, Snapshot, StatusEndpointStats},
};

/// Largest request head the endpoint reads.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has, from its accept, to send a whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has, once its answer is ready, to take all of it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections held at once (fewer under a low descriptor limit: [`client_cap`]).
pub const MAX_CLIENTS: usize = 1024;
/// Status clients may use at most this fraction (1/N) of the master's
/// descriptor limit (the soft `RLIMIT_NOFILE`); the rest stays for
/// listeners, workers' output pipes, probes and the log.
const DESCRIPTOR_SHARE: u64 = 4;
/// Fewest connections held, however low the descriptor limit.
const MIN_CLIENTS: usize = 4;
/// Most connections accepted in one wake-up, so a flood of connections
/// cannot hold the master's loop in `accept`.
pub const MAX_ACCEPTS_PER_WAKE: usize = 1024;
/// How long the endpoint stops accepting when no descriptor (or kernel
/// memory) is left and no idle connection can make room.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(250);
/// The listen backlog: connections the kernel queues between wake-ups.
const LISTEN_BACKLOG: i32 = 1024;
/// Events taken from the epoll set per wake-up (more: the next turn).
const EVENTS_PER_WAKE: usize = 256;
/// At most one warning about running out of descriptors per this long.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// The epoll token of the listener (clients' tokens are their slab keys).
const LISTENER_TOKEN: u64 = u64::MAX;

/// One connection.
struct Client {
    socket: Socket,
    /// The request head so far.
    inbuf: Vec<u8>,
    /// The answer (empty while reading the head).
    out: Vec<u8>,
    /// How much of `out` was sent.
    written: usize,
    /// When it is closed, answered or not (its key in `reading` or `writing`).
    deadline: Instant,
    /// Whether its epoll interest is writability (it is being answered).
    writing: bool,
}

/// The endpoint: its listener and the clients being answered.
pub struct StatusServer {
    listener: Listener,
    /// The listener (while accepting) and every client.
    epoll: Epoll,
    clients: Slab<Client>,
    /// Clients still sending their head, by deadline: the first is the oldest idle one.
    reading: BTreeSet<(Instant, usize)>,
    /// Clients being answered, by deadline.
    writing: BTreeSet<(Instant, usize)>,
    /// Whether the listener is in the epoll set.
    accepting: bool,
    /// Accepting is paused until then (out of descriptors, nothing idle to close).
    paused_until: Option<Instant>,
    /// When descriptors last ran short, as logged, and how often since.
    short: (Option<Instant>, u64),
    stats: StatusEndpointStats,
}

impl StatusServer {
    /// Listens on `addr` (`fd://N`: a duplicate of a descriptor in `inherited`).
    pub fn bind(addr: &BindAddr, inherited: &InheritedFds) -> io::Result<StatusServer> {
        let opts = SocketOptions {
            backlog: LISTEN_BACKLOG,
            ..SocketOptions::default()
        };
        let listener = Listener::bind(addr, &opts, inherited)?;
        Self::with_listener(listener)
    }

    /// Serves on a listening socket handed over by an old master (binary
    /// upgrade): the same socket, so no address is bound twice.
    pub fn adopt(fd: std::os::fd::OwnedFd) -> io::Result<StatusServer> {
        Self::with_listener(Listener::inherited(fd)?)
    }

    /// The listening socket, to hand over on a binary upgrade.
    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    fn with_listener(listener: Listener) -> io::Result<StatusServer> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(
            listener.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, LISTENER_TOKEN),
        )?;
        Ok(StatusServer {
            listener,
            epoll,
            clients: Slab::new(),
            reading: BTreeSet::new(),
            writing: BTreeSet::new(),
            accepting: true,
            paused_until: None,
            short: (None, 0),
            stats: StatusEndpointStats {
                limit: client_cap(nofile_limit()) as u64,
                ..StatusEndpointStats::default()
            },
        })
    }

    /// Where it listens, for the log.
    pub fn url(&self) -> String {
        self.listener.url()
    }

    /// Most connections it holds at once, under today's descriptor limit.
    pub fn limit(&self) -> u64 {
        self.stats.limit
    }

    /// The descriptors for the master to poll, and for what: one, the
    /// endpoint's epoll set, however many clients are open.
    pub fn poll_set(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        vec![(self.epoll.0.as_fd(), PollFlags::POLLIN)]
    }

    /// How soon the master must come back even if nothing happens: the
    /// nearest deadline or the end of a pause (rounded up to a millisecond,
    /// so it does not wake just before it).
    pub fn next_wake(&self, now: Instant) -> Option<Duration> {
        let first = |set: &BTreeSet<(Instant, usize)>| set.first().map(|&(at, _)| at);
        [
            first(&self.reading),
            first(&self.writing),
            self.paused_until,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| {
            let left = at.saturating_duration_since(now);
            let ms = left.as_micros().div_ceil(1000);
            Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
        })
    }

    /// Accepts, reads, answers and closes what it can without blocking.
    pub fn service(&mut self, snapshot: impl Fn() -> Snapshot) {
        let now = Instant::now();
        let mut events = [EpollEvent::empty(); EVENTS_PER_WAKE];
        let n = match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => {
                log::error!("status endpoint: epoll_wait failed: {e}");
                0
            }
        };
        let mut listener_ready = false;
        for ev in &events[..n] {
            match ev.data() {
                LISTENER_TOKEN => listener_ready = true,
                key => self.drive(key as usize, now, &snapshot),
            }
        }
        if self.paused_until.is_some_and(|until| now >= until) {
            self.paused_until = None;
            listener_ready = true; // try at once: the queue may be full
        }
        if listener_ready && self.paused_until.is_none() {
            self.accept_pending(now, &snapshot);
        }
        self.expire(now);
        self.update_accepting();
    }

    /// Accepts every connection waiting (up to [`MAX_ACCEPTS_PER_WAKE`]),
    /// closing the oldest idle ones past the cap.
    fn accept_pending(&mut self, now: Instant, snapshot: &impl Fn() -> Snapshot) {
        let cap = client_cap(nofile_limit());
        self.stats.limit = cap as u64;
        for _ in 0..MAX_ACCEPTS_PER_WAKE {
            if self.clients.len() >= cap && self.reading.is_empty() {
                return; // full of clients being answered: wait for one to finish
            }
            match self.listener.accept() {
                Ok(socket) => {
                    // Room for it: the oldest idle ones go (more than one if
                    // the descriptor limit was lowered).
                    while self.clients.len() >= cap && self.drop_oldest_idle() {}
                    // Its own clock reading, not the wake-up's: idle
                    // clients are ordered by deadline, and with one
                    // deadline for a whole batch the tie went by slab key,
                    // so a newer client in a reused slot was taken for the
                    // oldest and closed before the older ones (a `/ready`
                    // sent past the cap went unanswered, now and then).
                    self.admit(socket, Instant::now(), snapshot);
                }
                Err(e) => match accept_failure(&e) {
                    AcceptFailure::Drained => return,
                    AcceptFailure::Transient => continue,
                    AcceptFailure::NoDescriptor => {
                        self.note_shortage(now, &e);
                        if !self.drop_oldest_idle() {
                            self.pause(now);
                            return;
                        }
                    }
                    AcceptFailure::NoMemory => {
                        self.note_shortage(now, &e);
                        self.pause(now);
                        return;
                    }
                },
            }
        }
    }

    /// Takes a new connection in, and answers it at once if its request is there.
    fn admit(&mut self, socket: Socket, now: Instant, snapshot: &impl Fn() -> Snapshot) {
        let deadline = now + HEAD_TIMEOUT;
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.epoll.add(
            socket.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, key as u64),
        ) {
            log::warn!("status endpoint: cannot watch a connection: {e}");
            return; // dropping the socket closes it
        }
        entry.insert(Client {
            socket,
            inbuf: Vec::new(),
            out: Vec::new(),
            written: 0,
            deadline,
            writing: false,
        });
        self.reading.insert((deadline, key));
        self.stats.accepted += 1;
        // A probe usually sends its request with the connection: answer now.
        self.drive(key, now, snapshot);
    }

    /// Reads what client `key` sent, answers a complete request, writes
    /// what the socket takes, and closes it when done or broken.
    fn drive(&mut self, key: usize, now: Instant, snapshot: &impl Fn() -> Snapshot) {
        let open = self.clients.len() as u64;
        let Some(c) = self.clients.get_mut(key) else {
            return; // closed earlier in this turn
        };
        if c.out.is_empty() {
            let mut buf = [0u8; 2048];
            loop {
                match c.socket.read(&mut buf) {
                    Ok(0) => return self.close(key),
                    Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return self.close(key),
                }
                if c.inbuf.len() > MAX_REQUEST {
                    return self.close(key);
                }
            }
            if memchr::memmem::find(&c.inbuf, b"\r\n\r\n").is_none() {
                return; // still waiting for the rest of the head
            }
            let stats = StatusEndpointStats {
                open,
                ..self.stats.clone()
            };
            let with_stats = || {
                let mut s = snapshot();
                s.status_endpoint = stats.clone();
                s
            };
            c.out = respond(&c.inbuf, &with_stats);
            c.inbuf = Vec::new();
            self.reading.remove(&(c.deadline, key));
            c.deadline = now + WRITE_TIMEOUT;
            self.writing.insert((c.deadline, key));
        }
        while c.written < c.out.len() {
            match c.socket.write(&c.out[c.written..]) {
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !c.writing {
                        c.writing = true;
                        let mut ev = EpollEvent::new(EpollFlags::EPOLLOUT, key as u64);
                        if self.epoll.modify(c.socket.as_fd(), &mut ev).is_err() {
                            return self.close(key);
                        }
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(key),
            }
        }
        self.close(key); // answered
    }

    /// Closes client `key` (if open).
    fn close(&mut self, key: usize) {
        if !self.clients.contains(key) {
            return;
        }
        let c = self.clients.remove(key);
        self.reading.remove(&(c.deadline, key));
        self.writing.remove(&(c.deadline, key));
        // Forked children may briefly hold a copy of the socket: leave the
        // epoll set explicitly, so no event outlives the key.
        let _ = self.epoll.delete(c.socket.as_fd());
    }

    /// Closes the oldest client that has not sent a whole request; false if there is none.
    fn drop_oldest_idle(&mut self) -> bool {
        let Some(&(_, key)) = self.reading.first() else {
            return false;
        };
        self.close(key);
        self.stats.dropped_idle += 1;
        true
    }

    /// Closes the clients past their deadline (both sets are in deadline
    /// order: this looks at the due ones and one more).
    fn expire(&mut self, now: Instant) {
        loop {
            let due = |set: &BTreeSet<(Instant, usize)>| {
                set.first()
                    .filter(|&&(at, _)| at <= now)
                    .map(|&(_, key)| key)
            };
            let Some(key) = due(&self.reading).or_else(|| due(&self.writing)) else {
                return;
            };
            self.close(key);
            self.stats.timed_out += 1;
        }
    }

    /// Stops accepting for [`ACCEPT_PAUSE`].
    fn pause(&mut self, now: Instant) {
        self.paused_until = Some(now + ACCEPT_PAUSE);
        self.stats.accept_pauses += 1;
    }

    /// Logs that descriptors (or memory) ran short, at most once per [`WARN_INTERVAL`], with a count.
    fn note_shortage(&mut self, now: Instant, e: &io::Error) {
        self.short.1 += 1;
        if self.short.0.is_some_and(|at| now < at + WARN_INTERVAL) {
            return;
        }
        log::warn!(
            "status endpoint: accept failed {} time(s) since the last warning ({e}); \
             closing the oldest idle connection, or pausing accepts for {} ms",
            self.short.1,
            ACCEPT_PAUSE.as_millis()
        );
        self.short = (Some(now), 0);
    }

    /// Keeps the listener in the epoll set only while accepting can make
    /// progress: not during a pause, nor when full of clients being answered.
    fn update_accepting(&mut self) {
        let want = self.paused_until.is_none()
            && (self.clients.len() < self.stats.limit as usize || !self.reading.is_empty());
        if want == self.accepting {
            return;
        }
        let result = if want {
            self.epoll.add(
                self.listener.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, LISTENER_TOKEN),
            )
        } else {
            self.epoll.delete(self.listener.as_fd())
        };
        match result {
            Ok(()) => self.accepting = want,
            Err(e) => log::error!("status endpoint: cannot update its epoll set: {e}"),
        }
    }
}

/// What a failed `accept` means for the endpoint.
#[derive(Debug, PartialEq, Eq)]
enum AcceptFailure {
    /// Nothing is waiting.
    Drained,
    /// That connection is gone (reset while queued, a signal): try the next.
    Transient,
    /// The process (or system) is out of descriptors.
    NoDescriptor,
    /// The kernel is short of memory, or something else is wrong: do not spin.
    NoMemory,
}

/// Sorts an `accept` error.
fn accept_failure(e: &io::Error) -> AcceptFailure {
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EAGAIN) => AcceptFailure::Drained,
        Some(Errno::EINTR | Errno::ECONNABORTED | Errno::EPROTO | Errno::EPERM) => {
            AcceptFailure::Transient
        }
        Some(Errno::EMFILE | Errno::ENFILE) => AcceptFailure::NoDescriptor,
        _ => AcceptFailure::NoMemory,
    }
}

/// The master's soft descriptor limit (`RLIMIT_NOFILE`), read now: it may
/// be raised after the endpoint bound.
fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc == 0 {
        lim.rlim_cur
    } else {
        1024 // the usual default
    }
}

/// Most clients held under a soft descriptor limit of `nofile`: a
/// [`DESCRIPTOR_SHARE`] of it, between [`MIN_CLIENTS`] and [`MAX_CLIENTS`].
pub fn client_cap(nofile: u64) -> usize {
    let share = usize::try_from(nofile / DESCRIPTOR_SHARE).unwrap_or(usize::MAX);
    share.clamp(MIN_CLIENTS, MAX_CLIENTS)
}

/// `/ready`'s answer: 503 from a TERM on (while draining, workers still
/// serve, but a load balancer should send no more), else 200 while a
/// worker serves.
fn readiness(s: &Snapshot) -> (u16, String) {
    if let Some(state) = s.stopping {
        return (
            503,
            format!("not ready: {state} (the server is stopping)\n"),
        );
    }
    let serving = s
        .workers
        .iter()
        .filter(|w| matches!(w.state, "idle" | "busy"))
        .count();
    if serving > 0 {
        (200, format!("ready: {serving} worker(s)\n"))
    } else {
        (503, "not ready: no worker serves\n".to_owned())
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
                    let (status, body) = readiness(&snapshot());
                    (status, "text/plain; charset=utf-8", body)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_a_share_of_the_descriptor_limit() {
        assert_eq!(client_cap(1_048_576), MAX_CLIENTS);
        assert_eq!(client_cap(4096), MAX_CLIENTS);
        assert_eq!(client_cap(1024), 256);
        assert_eq!(client_cap(64), 16);
        assert_eq!(client_cap(0), MIN_CLIENTS);
    }

    #[test]
    fn ready_only_while_a_worker_serves_and_no_stop_was_asked_for() {
        let worker = |state| metrics::WorkerView {
            id: 1,
            pid: 2,
            state,
            generation: 1,
            requests: 0,
            current: None,
            rss_kib: 0,
            websockets: 0,
        };
        let table = [
            (vec!["idle"], None, 200),
            (vec!["booting", "busy"], None, 200),
            (vec!["booting"], None, 503),
            (vec![], None, 503),
            (vec!["idle"], Some("draining"), 503),
            (vec!["stopping"], Some("stopping"), 503),
        ];
        for (states, stopping, want) in table {
            let s = Snapshot {
                workers: states.iter().map(|&st| worker(st)).collect(),
                stopping,
                ..Snapshot::default()
            };
            let (status, body) = readiness(&s);
            assert_eq!(status, want, "{states:?} {stopping:?}: {body}");
            if let Some(state) = stopping {
                assert!(body.contains(state), "{body}");
            }
        }
    }

    #[test]
    fn accept_failures_that_would_spin_do_not_read_as_transient() {
        let sort = |errno: Errno| accept_failure(&io::Error::from_raw_os_error(errno as i32));
        assert_eq!(sort(Errno::EAGAIN), AcceptFailure::Drained);
        assert_eq!(sort(Errno::ECONNABORTED), AcceptFailure::Transient);
        assert_eq!(sort(Errno::EMFILE), AcceptFailure::NoDescriptor);
        assert_eq!(sort(Errno::ENFILE), AcceptFailure::NoDescriptor);
        assert_eq!(sort(Errno::ENOBUFS), AcceptFailure::NoMemory);
        assert_eq!(sort(Errno::ENOMEM), AcceptFailure::NoMemory);
    }
}
