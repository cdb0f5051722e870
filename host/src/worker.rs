//! A worker process: loads the app, then serves connections in an epoll loop.
//!
//! The loop watches the shared listeners (with `EPOLLEXCLUSIVE`, so one
//! connection wakes one worker), the worker's own connections, and a signalfd
//! for its graceful stop. It reads request heads without blocking and calls
//! the app only for a complete, valid head (and, for small `Content-Length`
//! bodies, the whole body), one request at a time. So an idle or slow client
//! costs a buffer, never the worker. Pipelined requests are answered in order
//! and their responses leave in one write.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use abi_stable::std_types::{RSlice, RStr};
use app_sdk::abi::{AppHandle, AppModRef, HandleOutcome, HostIo, RawRequest, WorkerInfo};
use nix::sys::{
    epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags},
    signalfd::SignalFd,
    socket::{setsockopt, sockopt},
};
use slab::Slab;

use crate::{
    access_log::{AccessEntry, AccessFormat, AccessLogTarget},
    app::{self, AppSpec},
    conn::{Conn, Phase},
    exchange::{self, BodyState, Exchange, ExchangeBuffers, ExchangeInit, VTABLE},
    http::{
        body::{ChunkedDecoder, LengthBody},
        date::DateCache,
        forwarded::TrustedProxies,
        parse::{self, Framing, Limits, Parsed, RequestHead},
        response,
    },
    listener::Listener,
    process::Identity,
    scoreboard::{RetireReason, Slot, State},
    signals,
};

/// Exit status of a worker that could not load or initialise the app.
pub const EXIT_BOOT_FAILED: i32 = 3;
/// Exit status of a worker whose event loop failed.
pub const EXIT_LOOP_FAILED: i32 = 1;

/// How long the app's last call must have taken before a worker holding
/// several connections lets one go to an idle worker (see `dispatch`): far
/// above a fast request, far below a slow one.
const SHED_AFTER: Duration = Duration::from_millis(20);
/// Longest request id taken from a request (longer ones are replaced).
const MAX_REQUEST_ID: usize = 200;
/// Connections accepted per wake-up. One: a connection a worker accepts waits
/// for that worker, so a worker takes one and lets idle workers (woken one at
/// a time by EPOLLEXCLUSIVE) take the next; what no worker takes stays in the
/// listen queue, where the adaptive pool sees it.
const ACCEPT_BATCH: usize = 1;
/// How long socket I/O may wait without progress while the app handles a request.
pub const EXCHANGE_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How a worker serves connections (from the command line).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Parser limits.
    pub limits: Limits,
    /// Keep-alive idle timeout; `None` disables keep-alive.
    pub keep_alive: Option<Duration>,
    /// Time to send a whole head (and a buffered body) once a request started.
    pub header_timeout: Duration,
    /// Bodies up to this size are read and checked before the app is called.
    pub body_buffer: usize,
    /// Lowest rate of a streamed body, bytes per second (0: none).
    pub body_min_rate: u64,
    /// Most connections one worker holds.
    pub max_connections: usize,
    /// Proxies whose forwarding headers are believed.
    pub trusted: TrustedProxies,
    /// The access log's format.
    pub access_format: AccessFormat,
    /// The header carrying request ids; `None`: no request ids.
    pub request_id_header: Option<String>,
}

/// Makes request ids: 16 hex digits from a per-worker xorshift generator
/// seeded from the clock and the pid (unique enough to follow a request
/// through logs; not a secret).
struct RequestIds {
    state: u64,
    buf: [u8; 16],
}

impl RequestIds {
    fn new() -> RequestIds {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        RequestIds {
            state: nanos ^ (u64::from(std::process::id()) << 32) | 1,
            buf: [0; 16],
        }
    }

    fn next(&mut self) -> &str {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let n = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.buf.iter_mut().enumerate() {
            *b = HEX[((n >> (60 - 4 * i)) & 15) as usize];
        }
        std::str::from_utf8(&self.buf).unwrap_or_default()
    }
}

/// A chunked body being read and checked before the app is called.
struct PreBody {
    decoder: ChunkedDecoder,
    /// Decoded bytes (the first `len` are valid), at most --body-buffer.
    decoded: Vec<u8>,
    len: usize,
    /// Raw bytes after the head the decoder has used.
    raw_used: usize,
}
/// How long a stopping worker keeps an idle keep-alive connection open for a
/// last request (answered with `Connection: close`) before closing it.
pub const STOP_IDLE_LINGER: Duration = Duration::from_secs(5);
/// How often a worker with `--max-worker-memory` measures its memory.
const MEMORY_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How often idle connections are checked against their deadlines.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// Events taken from epoll per wait.
const EVENTS_PER_WAIT: usize = 256;

/// epoll token of the signalfd.
const SIGNAL_TOKEN: u64 = u64::MAX;
/// epoll tokens of listeners start here (connections use their slab keys).
const LISTENER_TOKEN_BASE: u64 = 1 << 48;

/// Everything a worker needs from the master, inherited across fork.
pub struct WorkerArgs<'a> {
    /// The worker's number (1-based).
    pub id: u32,
    /// The app to load.
    pub spec: &'a AppSpec,
    /// The shared listeners.
    pub listeners: &'a [Listener],
    /// How to serve connections.
    pub serve: ServeOptions,
    /// This worker's scoreboard slot.
    pub slot: &'a Slot,
    /// Its index in the scoreboard.
    pub slot_index: usize,
    /// The whole scoreboard (to see whether other workers idle).
    pub scoreboard: &'a crate::scoreboard::Scoreboard,
    /// Where access-log lines go, if anywhere.
    pub access_log: Option<&'a AccessLogTarget>,
    /// The access log's path, to reopen it on USR1.
    pub access_log_path: Option<&'a std::path::Path>,
    /// The error log's path (`-`: stderr as inherited), to reopen it on USR1.
    pub error_log_path: &'a std::path::Path,
    /// Requests after which the worker asks to be replaced.
    pub max_requests: Option<u64>,
    /// Resident memory (KiB) past which the worker asks to be replaced (0: no limit).
    pub max_memory_kib: u64,
    /// Who to become before loading the app (`--user`, `--group`).
    pub identity: Option<&'a Identity>,
    /// The process title (`host: worker 3 gen 2 [libapp.so:app]`).
    pub title: String,
    /// The write ends of the pipes the master reads the worker's stdout and stderr from.
    pub output: Option<(OwnedFd, OwnedFd)>,
    /// When the master forked this worker.
    pub spawned_at: Instant,
    /// The master's pid, to notice its death.
    pub master_pid: nix::unistd::Pid,
}

/// The worker's main: never returns.
pub fn run(args: WorkerArgs<'_>) -> ! {
    let code = match serve(&args) {
        Ok(()) => 0,
        Err(code) => code,
    };
    std::process::exit(code)
}

fn serve(args: &WorkerArgs<'_>) -> Result<(), i32> {
    let pid = std::process::id();
    let id = args.id;
    let setup = || -> nix::Result<SignalFd> {
        signals::reset_in_child()?;
        nix::sys::prctl::set_pdeathsig(signals::WORKER_PARENT_DIED)?;
        signals::install_worker_handlers()?;
        signals::signalfd_for(&[signals::WORKER_GRACEFUL, signals::WORKER_REOPEN_LOGS])
    };
    signals::set_worker_identity(id, args.slot);
    let mut sigfd = setup().map_err(|e| {
        log::error!("worker {id} (pid {pid}): signal set-up failed: {e}");
        EXIT_BOOT_FAILED
    })?;
    if nix::unistd::getppid() != args.master_pid {
        // The master died between fork and set_pdeathsig.
        return Ok(());
    }
    crate::process::set_title(&args.title);
    // The app's prints go to the master, which logs them tagged (never into
    // an access log on stdout).
    if let Some((stdout, stderr)) = &args.output {
        let dup = |fd: &OwnedFd| fd.try_clone();
        if let (Ok(o), Ok(e)) = (dup(stdout), dup(stderr)) {
            if let Err(err) = crate::logging::capture_output(o, e) {
                log::warn!("worker {id} (pid {pid}): cannot capture its output: {err}");
            }
        }
    }
    if let Some(identity) = args.identity {
        crate::process::drop_to(identity).map_err(|e| {
            log::error!(
                "worker {id} (pid {pid}): cannot switch to user {:?}: {e}",
                identity.name
            );
            EXIT_BOOT_FAILED
        })?;
    }

    let module = app::load(args.spec).map_err(|e| {
        log::error!("worker {id} (pid {pid}) cannot load the app: {e}");
        EXIT_BOOT_FAILED
    })?;
    let info = WorkerInfo {
        worker_id: id,
        pid,
        app_name: RStr::from_str(&args.spec.name),
    };
    let handle = (module.init())(&info).into_result().map_err(|e| {
        log::error!(
            "worker {id} (pid {pid}): app `{}` failed to initialise: {e}",
            args.spec.name
        );
        EXIT_BOOT_FAILED
    })?;
    let boot = args.spawned_at.elapsed();
    args.slot.mark_ready();
    if let Some(kib) = rss_kib() {
        args.slot.set_rss_kib(kib);
    }
    // Tell the master now rather than at its next tick: a reload waits on this.
    let _ = nix::sys::signal::kill(args.master_pid, signals::MASTER_NUDGE);
    log::info!(
        "worker {id} (pid {pid}) ready in {:.1} ms",
        boot.as_secs_f64() * 1000.0
    );

    let result = EventLoop::new(args, module, handle, &sigfd).and_then(|mut l| l.run(&mut sigfd));
    args.slot.set_state(State::Stopping);
    if let HandleOutcome::Panicked(msg) = (module.exit())(handle) {
        log::error!("worker {id} (pid {pid}): app exit hook panicked: {msg}");
    }
    match result {
        Ok(()) => {
            log::debug!("worker {id} (pid {pid}) exiting");
            Ok(())
        }
        Err(e) => {
            log::error!("worker {id} (pid {pid}) event loop failed: {e}");
            Err(EXIT_LOOP_FAILED)
        }
    }
}

/// The app as the loop calls it.
struct LoadedApp {
    handle: extern "C" fn(AppHandle, &RawRequest<'_>, HostIo<'_>) -> HandleOutcome,
    state: AppHandle,
}

struct EventLoop<'a> {
    args: &'a WorkerArgs<'a>,
    epoll: Epoll,
    conns: Slab<Conn>,
    app: LoadedApp,
    /// The head being parsed (reused: its header list keeps its capacity).
    head: RequestHead,
    /// Body bytes read while the app handles a request (reused).
    stage: Vec<u8>,
    /// The app's response header lines (reused).
    resp_headers: Vec<u8>,
    /// An access-log line being built (reused).
    log_line: Vec<u8>,
    date: DateCache,
    accepting: bool,
    stopping: bool,
    /// Asked the master for a replacement: serving what it has, accepting nothing new.
    retiring: bool,
    /// Requests served.
    served: u64,
    /// When memory was last measured.
    memory_checked: Instant,
    /// The access log reopened after USR1 (else the one inherited from the master).
    reopened_log: Option<AccessLogTarget>,
    /// Chunked bodies being read ahead, by connection.
    prebodies: std::collections::HashMap<usize, PreBody>,
    /// Where request ids come from when a request brings none.
    ids: RequestIds,
    /// How long the app's last call took.
    last_call: Duration,
    /// Connections open (kept for `dispatch`, which holds one of them borrowed).
    conns_open: usize,
}

impl<'a> EventLoop<'a> {
    fn new(
        args: &'a WorkerArgs<'a>,
        module: AppModRef,
        state: AppHandle,
        sigfd: &SignalFd,
    ) -> nix::Result<EventLoop<'a>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(sigfd, EpollEvent::new(EpollFlags::EPOLLIN, SIGNAL_TOKEN))?;
        let mut l = EventLoop {
            args,
            epoll,
            conns: Slab::with_capacity(64),
            app: LoadedApp {
                handle: module.handle(),
                state,
            },
            head: RequestHead::default(),
            stage: Vec::new(),
            resp_headers: Vec::new(),
            log_line: Vec::new(),
            date: DateCache::default(),
            accepting: false,
            stopping: false,
            retiring: false,
            served: 0,
            memory_checked: Instant::now(),
            reopened_log: None,
            prebodies: std::collections::HashMap::new(),
            ids: RequestIds::new(),
            last_call: Duration::ZERO,
            conns_open: 0,
        };
        l.set_accepting(true)?;
        Ok(l)
    }

    /// Adds or removes the listeners from the epoll set.
    fn set_accepting(&mut self, on: bool) -> nix::Result<()> {
        if on == self.accepting {
            return Ok(());
        }
        for (i, l) in self.args.listeners.iter().enumerate() {
            // SAFETY: the listener outlives the loop.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(l.as_raw_fd()) };
            if on {
                self.epoll.add(
                    fd,
                    EpollEvent::new(
                        EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE,
                        LISTENER_TOKEN_BASE + i as u64,
                    ),
                )?;
            } else {
                self.epoll.delete(fd)?;
            }
        }
        self.accepting = on;
        Ok(())
    }

    fn run(&mut self, sigfd: &mut SignalFd) -> nix::Result<()> {
        let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAIT];
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        loop {
            let timeout: u16 = if self.stopping {
                50
            } else {
                SWEEP_INTERVAL.as_millis() as u16
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => 0,
                Err(e) => return Err(e),
            };
            self.date.refresh();
            for ev in &events[..n] {
                match ev.data() {
                    SIGNAL_TOKEN => {
                        for signal in signals::drain(sigfd) {
                            if signal == signals::WORKER_REOPEN_LOGS {
                                self.reopen_log();
                            } else {
                                self.begin_stop()?;
                            }
                        }
                    }
                    t if t >= LISTENER_TOKEN_BASE => {
                        self.accept((t - LISTENER_TOKEN_BASE) as usize)?
                    }
                    key => self.on_conn_event(key as usize, ev.events()),
                }
            }
            let now = Instant::now();
            if now >= next_sweep {
                next_sweep = now + SWEEP_INTERVAL;
                self.args.slot.heartbeat();
                if let Some(kib) = rss_kib() {
                    self.args.slot.set_rss_kib(kib);
                }
                if nix::unistd::getppid() != self.args.master_pid && !self.stopping {
                    log::warn!("worker {}: the master is gone; stopping", self.args.id);
                    self.begin_stop()?;
                }
                self.expire(now);
            }
            if self.stopping {
                if self.conns.is_empty() {
                    return Ok(());
                }
            } else if !self.accepting
                && !self.retiring
                && self.conns.len() < self.args.serve.max_connections
            {
                self.set_accepting(true)?;
            }
        }
    }

    fn reopen_log(&mut self) {
        if let Err(e) = crate::logging::reopen(self.args.error_log_path) {
            log::error!("worker {}: cannot reopen the error log: {e}", self.args.id);
        }
        if let Some(path) = self.args.access_log_path {
            match AccessLogTarget::open(path) {
                Ok(target) => self.reopened_log = Some(target),
                Err(e) => log::error!("worker {}: cannot reopen the access log: {e}", self.args.id),
            }
        }
    }

    /// After a request: asks for a replacement past --max-requests or --max-worker-memory.
    fn check_limits(&mut self) {
        if self.retiring {
            return;
        }
        let mut reason = None;
        if self.args.max_requests.is_some_and(|max| self.served >= max) {
            reason = Some(RetireReason::MaxRequests);
        } else if self.args.max_memory_kib > 0
            && self.memory_checked.elapsed() >= MEMORY_CHECK_INTERVAL
        {
            self.memory_checked = Instant::now();
            if let Some(kib) = rss_kib() {
                self.args.slot.set_rss_kib(kib);
                if kib > self.args.max_memory_kib {
                    reason = Some(RetireReason::Memory);
                }
            }
        }
        if let Some(reason) = reason {
            self.retiring = true;
            self.args.slot.request_retire(reason);
            let _ = nix::sys::signal::kill(self.args.master_pid, signals::MASTER_NUDGE);
            if let Err(e) = self.set_accepting(false) {
                log::warn!("worker {}: cannot stop accepting: {e}", self.args.id);
            }
        }
    }

    fn begin_stop(&mut self) -> nix::Result<()> {
        if !self.stopping {
            log::debug!("worker {} stopping gracefully", self.args.id);
            self.stopping = true;
            self.args.slot.set_state(State::Stopping);
            self.set_accepting(false)?;
            // Let go of the listening sockets: once every process of a
            // stopping server has, the kernel stops queueing connections for
            // it (a successor bound with --reuse-port gets them all). In a
            // reload the new workers and the master still hold them.
            for l in self.args.listeners {
                // SAFETY: the worker never touches its listeners again.
                unsafe { libc::close(l.as_raw_fd()) };
            }
            // Idle keep-alive connections are not cut now: a client may be
            // sending on one this instant. Each stays until its next request
            // (answered with `Connection: close`) or its idle deadline, cut to
            // STOP_IDLE_LINGER.
            let linger = Instant::now() + STOP_IDLE_LINGER;
            for (_, conn) in self.conns.iter_mut() {
                if conn.phase == Phase::Idle {
                    conn.deadline = conn.deadline.min(linger);
                }
            }
        }
        Ok(())
    }

    /// Closes connections past their deadline: an idle one silently, one
    /// with a request half-received with `408 Request Timeout`.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            if let Some(conn) = self.conns.get_mut(key) {
                if conn.phase == Phase::Reading && !conn.want_write {
                    log::debug!(
                        "request from {} timed out (--header-timeout): 408",
                        conn.peer
                    );
                    response::write_error(&mut conn.out, 408, self.date.http(), true);
                    let _ = conn.flush();
                }
            }
            self.close(key);
        }
    }

    /// Marks the connection as in the middle of receiving a request.
    fn reading(conn: &mut Conn, timeout: Duration) {
        if conn.phase == Phase::Idle {
            conn.phase = Phase::Reading;
            conn.deadline = Instant::now() + timeout;
        }
    }

    fn close(&mut self, key: usize) {
        self.prebodies.remove(&key);
        if let Some(conn) = self.conns.try_remove(key) {
            drop(conn); // closing the fd removes it from the epoll set
        }
    }

    fn accept(&mut self, index: usize) -> nix::Result<()> {
        let Some(listener) = self.args.listeners.get(index) else {
            return Ok(());
        };
        for _ in 0..ACCEPT_BATCH {
            let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: storage and len describe a valid buffer for the address.
            let fd = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    (&mut storage as *mut libc::sockaddr_storage).cast(),
                    &mut len,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(()),
                    Some(libc::ECONNABORTED) | Some(libc::EINTR) | Some(libc::EPROTO) => continue,
                    _ => {
                        log::warn!("worker {}: accept failed: {e}", self.args.id);
                        return Ok(());
                    }
                }
            }
            // SAFETY: accept4 returned a new descriptor we now own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let (peer, ip_len, trusted) = if listener.is_unix {
                // A Unix socket's peer is on this machine, as a proxy in front would be.
                (String::new(), 0, true)
            } else {
                let _ = setsockopt(&fd, sockopt::TcpNoDelay, &true);
                // SAFETY: the kernel filled `len` bytes of `storage`.
                let addr = unsafe { socket2::SockAddr::new(storage, len) };
                match addr.as_socket() {
                    Some(sa) => {
                        let ip_len = sa.ip().to_string().len();
                        (
                            sa.to_string(),
                            ip_len,
                            self.args.serve.trusted.trusts(sa.ip()),
                        )
                    }
                    None => (String::new(), 0, false),
                }
            };
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            self.epoll
                .add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, key as u64))?;
            let deadline = Instant::now()
                + self
                    .args
                    .serve
                    .keep_alive
                    .unwrap_or(self.args.serve.header_timeout);
            let mut conn = Conn::new(fd, peer, ip_len, index, deadline);
            conn.trusted_proxy = trusted;
            entry.insert(conn);
            if self.conns.len() >= self.args.serve.max_connections {
                log::warn!(
                    "worker {}: {} connections open (--worker-connections); pausing accept",
                    self.args.id,
                    self.args.serve.max_connections
                );
                return self.set_accepting(false);
            }
        }
        Ok(())
    }

    fn on_conn_event(&mut self, key: usize, flags: EpollFlags) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.want_write {
            match conn.flush() {
                Ok(true) => {
                    conn.want_write = false;
                    if conn.phase == Phase::Closing {
                        self.close(key);
                        return;
                    }
                    let mut ev = EpollEvent::new(EpollFlags::EPOLLIN, key as u64);
                    if self.epoll.modify(&conn.fd, &mut ev).is_err() {
                        self.close(key);
                        return;
                    }
                }
                Ok(false) => return,
                Err(_) => {
                    self.close(key);
                    return;
                }
            }
        } else if flags
            .intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
        {
            loop {
                match conn.read_available() {
                    Ok(0) => {
                        conn.eof = true;
                        break;
                    }
                    Ok(n) if n < crate::conn::READ_CHUNK => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.close(key);
                        return;
                    }
                }
            }
        }
        self.process(key);
    }

    /// Answers every complete request buffered on the connection, then writes.
    ///
    /// A request reaches the app only once its head is complete and valid and,
    /// for a body up to --body-buffer, once the whole body arrived (a chunked
    /// one decoded and checked): a bad request is answered here, never by the app.
    fn process(&mut self, key: usize) {
        let header_timeout = self.args.serve.header_timeout;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.phase == Phase::Closing || conn.want_write || conn.pending_input().is_empty() {
                break;
            }
            match parse::parse_head(
                conn.pending_input(),
                &self.args.serve.limits,
                &mut self.head,
            ) {
                Ok(Parsed::Partial) => {
                    Self::reading(conn, header_timeout);
                    break;
                }
                Err(e) => {
                    log::debug!("bad request from {}: {e}", conn.peer);
                    response::write_error(&mut conn.out, e.status(), self.date.http(), true);
                    conn.phase = Phase::Closing;
                    break;
                }
                Ok(Parsed::Complete) => {}
            }
            let body_wait = match self.head.framing {
                Framing::Length(n) => {
                    let available = conn.pending_input().len() - self.head.head_len;
                    n > available as u64 && n <= self.args.serve.body_buffer as u64
                }
                Framing::Chunked => match self.read_ahead_chunked(key) {
                    Ok(waiting) => waiting,
                    Err(status) => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            response::write_error(&mut conn.out, status, self.date.http(), true);
                            conn.phase = Phase::Closing;
                        }
                        break;
                    }
                },
                Framing::None => false,
            };
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if body_wait {
                // Wait for the rest of the body before calling the app.
                if self.head.expect_continue && !conn.continue_sent {
                    conn.out.extend_from_slice(response::CONTINUE);
                    conn.continue_sent = true;
                }
                Self::reading(conn, header_timeout);
                break;
            }
            self.dispatch(key);
            self.check_limits();
        }
        self.after_io(key);
    }

    /// Decodes what has arrived of a chunked body, up to --body-buffer.
    /// `Ok(true)`: more is needed before the app is called; `Err`: the status
    /// to refuse the request with.
    fn read_ahead_chunked(&mut self, key: usize) -> Result<bool, u16> {
        let Some(conn) = self.conns.get(key) else {
            return Ok(false);
        };
        let buffer = self.args.serve.body_buffer;
        let pre = self.prebodies.entry(key).or_insert_with(|| PreBody {
            decoder: ChunkedDecoder::new(self.args.serve.limits.max_body),
            decoded: vec![0; buffer],
            len: 0,
            raw_used: 0,
        });
        let raw = &conn.pending_input()[self.head.head_len..];
        loop {
            let fresh = &raw[pre.raw_used.min(raw.len())..];
            if pre.decoder.is_done() || pre.len == buffer || fresh.is_empty() {
                break;
            }
            match pre.decoder.decode(fresh, &mut pre.decoded[pre.len..]) {
                Ok(d) => {
                    pre.raw_used += d.consumed;
                    pre.len += d.written;
                    if d.consumed == 0 && d.written == 0 {
                        break;
                    }
                }
                Err(e) => {
                    log::debug!("bad chunked body from {}: {e}", conn.peer);
                    self.prebodies.remove(&key);
                    return Err(e.status());
                }
            }
        }
        Ok(!pre.decoder.is_done() && pre.len < buffer)
    }

    /// Writes what is pending without blocking and settles the connection's fate.
    fn after_io(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.flush() {
            Ok(true) => {}
            Ok(false) => {
                if !conn.want_write {
                    conn.want_write = true;
                    let mut ev = EpollEvent::new(EpollFlags::EPOLLOUT, key as u64);
                    if self.epoll.modify(&conn.fd, &mut ev).is_err() {
                        self.close(key);
                    }
                }
                return;
            }
            Err(_) => {
                self.close(key);
                return;
            }
        }
        if conn.phase == Phase::Closing || (conn.eof && conn.pending_input().is_empty()) {
            self.close(key);
        } else if conn.eof && conn.phase == Phase::Reading {
            // The client closed half-way through a request.
            self.close(key);
        }
    }

    /// Calls the app for the complete head in `self.head` on connection `key`.
    fn dispatch(&mut self, key: usize) {
        let started = Instant::now();
        self.conns_open = self.conns.len();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let head = &self.head;
        let args = self.args;
        let listener = &args.listeners[conn.listener.min(args.listeners.len() - 1)];
        if conn.out_pos > 0 {
            conn.out.drain(..conn.out_pos);
            conn.out_pos = 0;
        }
        let prebody = self.prebodies.remove(&key);
        let serve = &args.serve;
        // A worker holding several clients while its app is slow lets this
        // one go after its response when another worker is idle: it
        // reconnects, and the idle worker takes it. Connections otherwise
        // stay with the worker that accepted them, however busy it is; a
        // fast app never triggers this.
        let shed = self.last_call > SHED_AFTER
            && self.conns_open > 1
            && args.scoreboard.any_idle_except(args.slot_index);
        let close = !head.keep_alive
            || serve.keep_alive.is_none()
            || self.stopping
            || self.retiring
            || shed;
        let input = &conn.inbuf[conn.start..];
        let (head_bytes, after_head) = input.split_at(head.head_len.min(input.len()));
        // A read-ahead chunked body hands over its decoded bytes first; the
        // decoder goes on from where it stopped.
        let (prefix, raw_used, body) = match (head.framing, &prebody) {
            (Framing::None | Framing::Length(0), _) => (&[][..], 0, BodyState::Done),
            (Framing::Length(n), _) => (&[][..], 0, BodyState::Length(LengthBody::new(n))),
            (Framing::Chunked, Some(pre)) => (
                &pre.decoded[..pre.len],
                pre.raw_used,
                if pre.decoder.is_done() {
                    BodyState::Done
                } else {
                    BodyState::Chunked(pre.decoder.clone())
                },
            ),
            (Framing::Chunked, None) => (
                &[][..],
                0,
                BodyState::Chunked(ChunkedDecoder::new(serve.limits.max_body)),
            ),
        };
        let body_here = match head.framing {
            Framing::Length(n) => n <= after_head.len() as u64,
            Framing::None => true,
            Framing::Chunked => matches!(body, BodyState::Done),
        };
        self.stage.clear();
        let mut ex = Exchange::new(
            ExchangeInit {
                fd: conn.fd.as_raw_fd(),
                pending: &after_head[raw_used.min(after_head.len())..],
                prefix,
                body,
                continue_pending: head.expect_continue && !conn.continue_sent && !body_here,
                close,
                is_head: head.is_head,
                http10: head.version_minor == 0,
                date: self.date.http(),
                io_timeout: EXCHANGE_IO_TIMEOUT,
                min_rate: serve.body_min_rate,
                slot: args.slot,
            },
            ExchangeBuffers {
                staged: &mut self.stage,
                out: &mut conn.out,
                headers: &mut self.resp_headers,
            },
        );
        // The request's id: the one it brings, else a new one; sent back too.
        let request_id: &str = match &serve.request_id_header {
            None => "",
            Some(name) => match head
                .headers
                .iter()
                .find(|h| h.name.get(head_bytes).eq_ignore_ascii_case(name.as_bytes()))
                .and_then(|h| std::str::from_utf8(h.value.get(head_bytes)).ok())
                .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID)
            {
                Some(given) => given,
                None => self.ids.next(),
            },
        };
        if let Some(name) = &serve.request_id_header {
            let _ = ex.add_header(name.as_bytes(), request_id.as_bytes());
        }
        // Behind a trusted proxy, the client and scheme are the proxy's word.
        let (forwarded_addr, forwarded_scheme) = if conn.trusted_proxy {
            serve.trusted.client(head_bytes, &head.headers)
        } else {
            (None, None)
        };
        let raw = RawRequest {
            head: RSlice::from_slice(head_bytes),
            method: head.method,
            target: head.target,
            path: head.path,
            query: head.query,
            version_minor: head.version_minor,
            headers: RSlice::from_slice(&head.headers),
            content_length: match head.framing {
                Framing::None => 0,
                Framing::Length(n) => n as i64,
                Framing::Chunked => -1,
            },
            remote_addr: RStr::from_str(forwarded_addr.unwrap_or(&conn.peer)),
            local_addr: RStr::from_str(&listener.local),
            scheme: RStr::from_str(forwarded_scheme.unwrap_or("http")),
            request_id: RStr::from_str(request_id),
        };
        args.slot
            .begin_request(head.method.get(head_bytes), head.target.get(head_bytes));
        log::debug!(
            "worker {} handling \"{} {}\"",
            args.id,
            String::from_utf8_lossy(head.method.get(head_bytes)),
            String::from_utf8_lossy(head.target.get(head_bytes))
        );
        // Until a byte of the response is written, a timeout can still answer 504.
        let answer_fd = if ex.out.is_empty() {
            conn.fd.as_raw_fd()
        } else {
            -1
        };
        signals::TIMEOUT_ANSWER_FD.store(answer_fd, Ordering::Relaxed);
        let ctx = exchange::ctx_of(&mut ex);
        let outcome = (self.app.handle)(
            self.app.state,
            &raw,
            HostIo {
                ctx,
                vtable: &VTABLE,
            },
        );
        signals::TIMEOUT_ANSWER_FD.store(-1, Ordering::Relaxed);
        args.slot.end_request();
        self.last_call = started.elapsed();
        match outcome {
            HandleOutcome::Done => ex.finish(),
            HandleOutcome::Panicked(message) => {
                log::error!(
                    "app panicked: {message} (worker {}, request \"{} {}\")",
                    args.id,
                    String::from_utf8_lossy(head.method.get(head_bytes)),
                    String::from_utf8_lossy(head.target.get(head_bytes)),
                );
                ex.fail();
            }
        }
        args.slot
            .record(ex.status, started.elapsed().as_micros() as u64);
        let body_complete = ex.discard_buffered_body();
        let close = ex.close || !body_complete || ex.client_gone;
        let client_gone = ex.client_gone;
        let (status, bytes_sent) = (ex.status, ex.bytes_sent);
        let consumed = head.head_len + raw_used + ex.pending_pos;
        let staged_pos = ex.staged_pos;
        drop(ex);

        if let Some(target) = self.reopened_log.as_ref().or(args.access_log) {
            self.log_line.clear();
            let header = |name: &str| {
                head.headers
                    .iter()
                    .find(|h| h.name.get(head_bytes).eq_ignore_ascii_case(name.as_bytes()))
                    .map(|h| h.value.get(head_bytes))
            };
            serve.access_format.write(
                &mut self.log_line,
                &AccessEntry {
                    remote: forwarded_addr.unwrap_or(&conn.peer[..conn.peer_ip_len]),
                    method: head.method.get(head_bytes),
                    target: head.target.get(head_bytes),
                    path: head.path.get(head_bytes),
                    query: head.query.get(head_bytes),
                    version: if head.version_minor == 0 {
                        "HTTP/1.0"
                    } else {
                        "HTTP/1.1"
                    },
                    status,
                    bytes: bytes_sent,
                    micros: started.elapsed().as_micros() as u64,
                    request_id,
                    request_header: &header,
                    response_headers: &self.resp_headers,
                    clf_time: self.date.clf(),
                    iso_time: self.date.iso(),
                },
            );
            target.write_line(&self.log_line);
        }

        conn.consume(consumed);
        if staged_pos < self.stage.len() {
            conn.inbuf.extend_from_slice(&self.stage[staged_pos..]);
        }
        conn.continue_sent = false;
        self.served += 1;
        if client_gone {
            conn.out.clear();
            conn.phase = Phase::Closing;
        } else if close {
            conn.phase = Phase::Closing;
        } else {
            conn.phase = Phase::Idle;
            conn.deadline = Instant::now() + serve.keep_alive.unwrap_or(serve.header_timeout);
        }
    }
}

/// This process's resident memory in KiB, from `/proc/self/statm`.
fn rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()? / 1024)
}
