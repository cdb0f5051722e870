//! A worker process: loads the app, then serves connections in an epoll loop.
//!
//! The loop watches the shared listeners (with `EPOLLEXCLUSIVE`, so one
//! connection wakes one worker), the worker's own connections, and a signalfd
//! for its graceful stop. It reads request heads without blocking and calls
//! the app only for a complete, valid head (and, for small bodies, the whole
//! body). So an idle or slow client costs a buffer, never the worker.
//! Pipelined requests are answered in order and their responses leave in one
//! write. With `--threads 1` the loop calls the app itself, one request at a
//! time; with more, it lends each complete request's connection to a pool of
//! handler threads ([`crate::worker::threads`]) and goes on reading.

pub mod call;
pub mod conn;
pub mod exchange;
pub mod host_fns;
pub mod threads;
pub mod timeout;

use std::{
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
    time::{Duration, Instant},
};

use abi_stable::std_types::RStr;
use app_sdk::abi::{HandleOutcome, WorkerInfo};
use nix::sys::{
    epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags},
    signalfd::SignalFd,
};
use slab::Slab;

use crate::{
    app::{self, AppSpec},
    http::{
        body::ChunkedDecoder,
        date::DateCache,
        forwarded::TrustedProxies,
        parse::{self, Framing, Limits, Parsed, RequestHead},
        response,
    },
    os::listener::Listener,
    os::process::Identity,
    os::signals,
    report::access_log::{AccessFormat, AccessLogTarget},
    scoreboard::{RetireReason, Slot, State},
    worker::call::{CallFlags, Caller, LoadedApp, PreBody},
    worker::conn::{Conn, Phase},
    worker::threads::{Job, Pool},
};

/// Exit status of a worker that could not load or initialise the app.
pub const EXIT_BOOT_FAILED: i32 = crate::exit_code::WORKER_BOOT_FAILED;
/// Exit status of a worker whose event loop failed.
pub const EXIT_LOOP_FAILED: i32 = crate::exit_code::WORKER_LOOP_FAILED;

/// How long the app's last call must have taken before a worker holding
/// more connections than threads lets one go to an idle worker (see `call_flags`): far
/// above a fast request, far below a slow one.
const SHED_AFTER: Duration = Duration::from_millis(20);
/// Connections accepted per wake-up. One: a connection a worker accepts waits
/// for that worker, so a worker takes one and lets idle workers (woken one at
/// a time by EPOLLEXCLUSIVE) take the next; what no worker takes stays in the
/// listen queue, where the adaptive pool sees it.
const ACCEPT_BATCH: usize = 1;
/// How long a threaded worker keeps a handler thread's place for a new
/// connection's first request (see `has_free_thread`). Long enough for a
/// client that sends right after connecting, short enough that connections
/// that send nothing cannot stop the worker from accepting.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(50);
/// The epoll wait of a threaded worker that paused accepting for lack of a
/// free thread: how soon it looks again (threads coming back wake it anyway).
const PAUSED_WAIT_MS: u16 = 10;

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

/// How long a stopping worker keeps an idle keep-alive connection open for a
/// last request (answered with `Connection: close`) before closing it.
pub const STOP_IDLE_LINGER: Duration = Duration::from_secs(5);
/// How often a worker with `--max-worker-memory` measures its memory.
const MEMORY_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How often idle connections are checked against their deadlines.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// Events taken from epoll per wait.
const EVENTS_PER_WAIT: usize = 256;

/// Closed connections whose buffers a worker keeps for new ones.
const SPARE_BUFFERS: usize = 8;

/// epoll token of the signalfd.
const SIGNAL_TOKEN: u64 = u64::MAX;
/// epoll token of the handler threads' eventfd (connections coming back).
const WAKE_TOKEN: u64 = u64::MAX - 1;
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
        timeout::install_worker_handlers()?;
        signals::signalfd_for(&[signals::WORKER_GRACEFUL, signals::WORKER_REOPEN_LOGS])
    };
    let lanes = args.scoreboard.lanes(args.slot_index);
    timeout::set_worker_identity(id, args.slot, lanes);
    let mut sigfd = setup().map_err(|e| {
        log::error!("worker {id} (pid {pid}): signal set-up failed: {e}");
        EXIT_BOOT_FAILED
    })?;
    if nix::unistd::getppid() != args.master_pid {
        // The master died between fork and set_pdeathsig.
        return Ok(());
    }
    crate::os::process::set_title(&args.title);
    // The app's prints go to the master, which logs them tagged (never into
    // an access log on stdout).
    if let Some((stdout, stderr)) = &args.output {
        let dup = |fd: &OwnedFd| fd.try_clone();
        if let (Ok(o), Ok(e)) = (dup(stdout), dup(stderr)) {
            if let Err(err) = crate::report::logging::capture_output(o, e) {
                log::warn!("worker {id} (pid {pid}): cannot capture its output: {err}");
            }
        }
    }
    if let Some(identity) = args.identity {
        crate::os::process::drop_to(identity).map_err(|e| {
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
    let app = LoadedApp::init(module, &info).map_err(|e| {
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

    let result = std::thread::scope(|scope| {
        let pool = if lanes.len() > 1 {
            match Pool::start(scope, args, &app, lanes) {
                Ok(pool) => Some(pool),
                Err(e) => {
                    log::error!("worker {id} (pid {pid}): cannot start its handler threads: {e}");
                    return Err(EXIT_BOOT_FAILED);
                }
            }
        } else {
            None
        };
        let mut event_loop = EventLoop::new(args, &app, &sigfd, pool).map_err(|e| {
            log::error!("worker {id} (pid {pid}) event loop failed: {e}");
            EXIT_LOOP_FAILED
        })?;
        let result = event_loop.run(&mut sigfd);
        let stuck = event_loop.stuck();
        drop(event_loop);
        if stuck > 0 {
            // A thread is still inside the app for a request given up on
            // after --timeout: it can be neither joined nor told to stop.
            log::error!(
                "worker {id} (pid {pid}) exiting with {stuck} request(s) still in the app after --timeout"
            );
            // SAFETY: ends the process without unwinding or running the
            // app's exit hook while one of its threads is still inside it.
            unsafe { libc::_exit(crate::exit_code::WORKER_TIMED_OUT) }
        }
        result.map_err(|e| {
            log::error!("worker {id} (pid {pid}) event loop failed: {e}");
            EXIT_LOOP_FAILED
        })
    });
    args.slot.set_state(State::Stopping);
    if let HandleOutcome::Panicked(msg) = app.exit() {
        log::error!("worker {id} (pid {pid}): app exit hook panicked: {msg}");
    }
    if result.is_ok() {
        log::debug!("worker {id} (pid {pid}) exiting");
    }
    result
}

struct EventLoop<'a> {
    args: &'a WorkerArgs<'a>,
    epoll: Epoll,
    conns: Slab<Conn>,
    /// The loop's own caller of the app (`--threads 1`).
    caller: Option<Caller<'a>>,
    /// The handler threads (`--threads` > 1).
    pool: Option<Pool>,
    /// The head being parsed (reused: its header list keeps its capacity).
    head: RequestHead,
    /// Buffers of closed connections, for the next ones (at most [`SPARE_BUFFERS`]).
    spare_buffers: Vec<crate::worker::conn::Buffers>,
    /// Heads back from handler threads, for reuse.
    spare_heads: Vec<RequestHead>,
    /// Requests given up on after --timeout whose threads came back anyway.
    abandoned_back: usize,
    /// The current date, for the answers the loop writes itself (refreshed before each).
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
    reopened_log: Option<Arc<AccessLogTarget>>,
    /// Chunked bodies being read ahead, by connection.
    prebodies: std::collections::HashMap<usize, PreBody>,
    /// How long the app's last call took.
    last_call: Duration,
}

impl<'a> EventLoop<'a> {
    fn new(
        args: &'a WorkerArgs<'a>,
        app: &'a LoadedApp,
        sigfd: &SignalFd,
        pool: Option<Pool>,
    ) -> nix::Result<EventLoop<'a>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(sigfd, EpollEvent::new(EpollFlags::EPOLLIN, SIGNAL_TOKEN))?;
        let caller = match &pool {
            Some(pool) => {
                epoll.add(
                    pool.wake_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TOKEN),
                )?;
                timeout::set_wake_fd(pool.wake_fd().as_raw_fd());
                None
            }
            None => {
                let lane = args
                    .scoreboard
                    .lane(args.slot_index, 0)
                    .ok_or(nix::Error::EINVAL)?;
                Some(Caller::new(args, app, lane, 0))
            }
        };
        let mut l = EventLoop {
            args,
            epoll,
            conns: Slab::with_capacity(64),
            caller,
            pool,
            head: RequestHead::default(),
            spare_heads: Vec::new(),
            spare_buffers: Vec::new(),
            abandoned_back: 0,
            date: DateCache::default(),
            accepting: false,
            stopping: false,
            retiring: false,
            served: 0,
            memory_checked: Instant::now(),
            reopened_log: None,
            prebodies: std::collections::HashMap::new(),
            last_call: Duration::ZERO,
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
            } else if self.pool.is_some() && !self.accepting && !self.retiring {
                PAUSED_WAIT_MS
            } else {
                SWEEP_INTERVAL.as_millis() as u16
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => 0,
                Err(e) => return Err(e),
            };
            // Signals first: a request that came in the same wake-up as a
            // USR1 goes to the reopened log, as one after a stop signal
            // is answered as a stopping worker's.
            if events[..n].iter().any(|ev| ev.data() == SIGNAL_TOKEN) {
                for signal in signals::drain(sigfd) {
                    if signal == signals::WORKER_REOPEN_LOGS {
                        self.reopen_log();
                    } else {
                        self.begin_stop()?;
                    }
                }
            }
            for ev in &events[..n] {
                match ev.data() {
                    SIGNAL_TOKEN => {}
                    WAKE_TOKEN => self.take_back()?,
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
                if self.conns.is_empty() && self.lent() <= self.stuck() {
                    return Ok(());
                }
            } else if !self.accepting
                && !self.retiring
                && self.open() < self.args.serve.max_connections
                && self.has_free_thread()
            {
                self.set_accepting(true)?;
            }
        }
    }

    fn reopen_log(&mut self) {
        if let Err(e) = crate::report::logging::reopen(self.args.error_log_path) {
            log::error!("worker {}: cannot reopen the error log: {e}", self.args.id);
        }
        if let Some(path) = self.args.access_log_path {
            match AccessLogTarget::open(path) {
                Ok(target) => self.reopened_log = Some(Arc::new(target)),
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
                    self.date.refresh();
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
        self.take_prebody(key);
        if let Some(conn) = self.conns.try_remove(key) {
            // Closing the fd removes it from the epoll set.
            let buffers = conn.recycle();
            // Kept only while small: a buffer grown by a large request goes.
            if self.spare_buffers.len() < SPARE_BUFFERS
                && buffers.inbuf.capacity() <= 2 * crate::worker::conn::READ_CHUNK
                && buffers.out.capacity() <= 2 * crate::worker::conn::READ_CHUNK
            {
                self.spare_buffers.push(buffers);
            }
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
            let mut buffers = self.spare_buffers.pop().unwrap_or_default();
            let trusted = if listener.is_unix {
                // A Unix socket's peer is on this machine, as a proxy in front would be.
                true
            } else {
                // SAFETY: the kernel filled `len` bytes of `storage`.
                let addr = unsafe { socket2::SockAddr::new(storage, len) };
                match addr.as_socket() {
                    Some(sa) => {
                        crate::worker::conn::write_peer(&mut buffers.peer, &sa);
                        self.args.serve.trusted.trusts(sa.ip())
                    }
                    None => false,
                }
            };
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let deadline = Instant::now()
                + self
                    .args
                    .serve
                    .keep_alive
                    .unwrap_or(self.args.serve.header_timeout);
            let mut conn = Conn::new(fd, buffers, index, deadline);
            conn.trusted_proxy = trusted;
            if self.pool.is_some() {
                conn.first_request_by = Some(Instant::now() + FIRST_REQUEST_GRACE);
            }
            entry.insert(conn);
            // A request that came with the connection (as it usually does)
            // is answered now, before the connection joins the epoll set: a
            // `Connection: close` one never joins it, and a threaded worker
            // has lent it before its next accept, so it knows whether a
            // thread is left. Otherwise the read finds nothing.
            self.on_conn_event(key, EpollFlags::EPOLLIN);
            self.register(key);
            if self.pool.is_some() && !self.has_free_thread() {
                return self.set_accepting(false);
            }
            if self.open() >= self.args.serve.max_connections {
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
                    Ok(n) if n < crate::worker::conn::READ_CHUNK => break,
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
                    self.date.refresh();
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
                            self.date.refresh();
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
            if self.pool.is_some() {
                // The connection comes back through `take_back`.
                self.lend(key);
                return;
            }
            self.call_inline(key);
            self.check_limits();
        }
        self.after_io(key);
    }

    /// The chunked body read ahead for connection `key`, if any (without
    /// hashing the key when there is none, as for almost every request).
    fn take_prebody(&mut self, key: usize) -> Option<PreBody> {
        if self.prebodies.is_empty() {
            return None;
        }
        self.prebodies.remove(&key)
    }

    /// Connections open: in the loop's hands or lent to handler threads.
    fn open(&self) -> usize {
        self.conns.len() + self.lent()
    }

    /// Whether a handler thread is free for one more connection: a threaded
    /// worker accepts only then, so a burst of connections spreads over the
    /// workers instead of queueing behind one worker's busy threads (what no
    /// worker takes waits in the listen queue, where the adaptive pool sees
    /// it). Requests lent count, and so do new connections whose first
    /// request is still expected (see [`FIRST_REQUEST_GRACE`]).
    fn has_free_thread(&self) -> bool {
        let Some(pool) = &self.pool else {
            return true;
        };
        let now = Instant::now();
        let expected = self
            .conns
            .iter()
            .filter(|(_, c)| c.first_request_by.is_some_and(|by| by > now))
            .count();
        pool.lent() + expected < self.args.slot.threads() as usize
    }

    /// Connections lent to handler threads.
    fn lent(&self) -> usize {
        self.pool.as_ref().map_or(0, Pool::lent)
    }

    /// Requests given up on after --timeout whose threads are still in the app.
    fn stuck(&self) -> usize {
        timeout::abandoned().saturating_sub(self.abandoned_back)
    }

    /// Decides, before the call, whether the connection closes after it.
    fn call_flags(&self) -> CallFlags {
        let args = self.args;
        // A worker holding more clients than threads while its app is slow
        // lets this one go after its response when another worker is idle:
        // it reconnects, and the idle worker takes it. Connections otherwise
        // stay with the worker that accepted them, however busy it is; a
        // fast app never triggers this.
        let shed = self.last_call > SHED_AFTER
            && self.open() > args.slot.threads() as usize
            && args.scoreboard.any_idle_except(args.slot_index);
        CallFlags {
            close: self.stopping || self.retiring || shed,
        }
    }

    /// Calls the app for the request in `self.head` on connection `key`, from this thread.
    fn call_inline(&mut self, key: usize) {
        let flags = self.call_flags();
        let prebody = self.take_prebody(key);
        let log = self.reopened_log.as_deref().or(self.args.access_log);
        let (Some(conn), Some(caller)) = (self.conns.get_mut(key), self.caller.as_mut()) else {
            return;
        };
        let called = caller.call(conn, &self.head, prebody, flags, log);
        self.last_call = called.call_time;
        self.served += 1;
    }

    /// Lends connection `key`, whose request is in `self.head`, to the handler threads.
    fn lend(&mut self, key: usize) {
        let flags = self.call_flags();
        let prebody = self.take_prebody(key);
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        conn.first_request_by = None;
        // Out of the epoll set while away: its thread does its I/O.
        if conn.registered {
            let _ = self.epoll.delete(conn.fd.as_fd());
            conn.registered = false;
        }
        let head = std::mem::replace(&mut self.head, self.spare_heads.pop().unwrap_or_default());
        let log = self.reopened_log.clone();
        if let Some(pool) = self.pool.as_mut() {
            pool.submit(Job {
                conn,
                head,
                prebody,
                flags,
                log,
            });
        }
    }

    /// Takes back the connections handler threads are done with, and goes on
    /// with each (its next pipelined request, its output, or closing it).
    fn take_back(&mut self) -> nix::Result<()> {
        if let Some(pool) = &self.pool {
            pool.acknowledge();
        }
        while let Some(back) = self.pool.as_mut().and_then(Pool::take) {
            self.spare_heads.push(back.head);
            self.served += 1;
            self.last_call = back.called.call_time;
            if back.called.abandoned {
                self.abandoned_back += 1;
            }
            let mut conn = back.conn;
            if self.stopping && conn.phase == Phase::Idle {
                conn.deadline = conn.deadline.min(Instant::now() + STOP_IDLE_LINGER);
            }
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if self
                .epoll
                .add(&conn.fd, EpollEvent::new(EpollFlags::EPOLLIN, key as u64))
                .is_err()
            {
                continue;
            }
            conn.registered = true;
            entry.insert(conn);
            self.check_limits();
            self.process(key);
        }
        // A request ran past --timeout: the timeout handler gave up on it and
        // asked for a replacement; accept nothing more.
        if !self.retiring && self.args.slot.retire_requested() == Some(RetireReason::TimedOut) {
            self.retiring = true;
            let _ = nix::sys::signal::kill(self.args.master_pid, signals::MASTER_NUDGE);
            self.set_accepting(false)?;
        }
        Ok(())
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

    /// Adds connection `key` to the epoll set if it is still open and not
    /// there yet: for reading, or for writing when output is pending.
    fn register(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.registered {
            return;
        }
        let flags = if conn.want_write {
            EpollFlags::EPOLLOUT
        } else {
            EpollFlags::EPOLLIN
        };
        if self
            .epoll
            .add(&conn.fd, EpollEvent::new(flags, key as u64))
            .is_ok()
        {
            conn.registered = true;
        } else {
            self.close(key);
        }
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
                    // One not yet registered joins the set for writing (see `register`).
                    let mut ev = EpollEvent::new(EpollFlags::EPOLLOUT, key as u64);
                    if conn.registered && self.epoll.modify(&conn.fd, &mut ev).is_err() {
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
}

/// This process's resident memory in KiB, from `/proc/self/statm`.
fn rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()? / 1024)
}
