//! The worker's event loop: epoll over the listeners, its connections and
//! its signals; accepting with back-pressure; and the worker's life from
//! serving to stopping.
//!
//! The loop watches the shared listeners (with `EPOLLEXCLUSIVE`, so one
//! connection wakes one worker), the worker's own connections, and a signalfd
//! (graceful stop, log reopening and, in a threaded worker, the timeout
//! signal). It reads request heads without blocking ([`crate::worker::stage`])
//! and calls the app only for a complete, valid head (and, for small bodies,
//! the whole body). So an idle or slow client costs a buffer, never the
//! worker. Pipelined requests are answered in order and their responses leave
//! in one write. With `--threads 1` the loop calls the app itself, one
//! request at a time; with more, it lends each complete request's connection
//! to the handler threads ([`crate::worker::threads`]) and goes on reading.

use std::{
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use nix::sys::{
    epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags},
    signalfd::SignalFd,
};
use slab::Slab;

use crate::{
    app::LoadedApp,
    http::{date::DateCache, parse::RequestHead},
    os::{listener::Listener, signals},
    report::access_log::AccessLogTarget,
    scoreboard::{RetireReason, Scoreboard, State},
    worker::{
        call::Caller,
        conn::{write_peer, Buffers, Conn, Phase, READ_CHUNK},
        outcome::Flags,
        rss_kib,
        serving::Serving,
        stage::{stage, Staged},
        threads::{Job, Pool},
        timeout::{GaveUp, Watch},
    },
};

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
/// The epoll wait of a stopping worker: how soon it looks whether its last
/// connections are done.
const STOPPING_WAIT_MS: u16 = 50;

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

/// What the loop needs for the worker's life beyond serving requests: its
/// listeners, its place among the workers, its limits, its logs' paths.
pub struct Life {
    /// The shared listeners (dropped, so closed, when the worker stops).
    pub listeners: Vec<Listener>,
    /// The whole scoreboard (to see whether other workers idle).
    pub board: &'static Scoreboard,
    /// This worker's index in it.
    pub slot_index: usize,
    /// The master's pid, to notice its death and nudge it.
    pub master_pid: nix::unistd::Pid,
    /// Requests after which the worker asks to be replaced.
    pub max_requests: Option<u64>,
    /// Resident memory (KiB) past which the worker asks to be replaced (0: no limit).
    pub max_memory_kib: u64,
    /// The access log's path, to reopen it on USR1.
    pub access_log_path: Option<PathBuf>,
    /// The error log's path (`-`: stderr as inherited), to reopen it on USR1.
    pub error_log_path: PathBuf,
}

/// The event loop of one worker.
pub struct EventLoop<'w> {
    serving: &'w Serving,
    life: Life,
    epoll: Epoll,
    conns: Slab<Conn>,
    /// The loop's own caller of the app (`--threads 1`).
    caller: Option<Caller<'w>>,
    /// The handler threads (`--threads` > 1).
    pool: Option<Pool>,
    /// The head being parsed (reused: its header list keeps its capacity).
    head: RequestHead,
    /// Buffers of closed connections, for the next ones (at most [`SPARE_BUFFERS`]).
    spare_buffers: Vec<Buffers>,
    /// Heads back from handler threads, for reuse.
    spare_heads: Vec<RequestHead>,
    /// Requests given up on after --timeout.
    abandoned: usize,
    /// Of those, the ones whose threads came back anyway.
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
    /// How long the app's last call took.
    last_call: Duration,
}

impl<'w> EventLoop<'w> {
    /// The loop of a worker serving `serving`: with `pool` (handler
    /// threads), or calling `app` itself.
    pub fn new(
        serving: &'w Serving,
        life: Life,
        app: Arc<LoadedApp>,
        sigfd: &SignalFd,
        pool: Option<Pool>,
    ) -> nix::Result<EventLoop<'w>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(sigfd, EpollEvent::new(EpollFlags::EPOLLIN, SIGNAL_TOKEN))?;
        let caller = match &pool {
            Some(pool) => {
                epoll.add(
                    pool.wake_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TOKEN),
                )?;
                None
            }
            None => {
                let lane = serving.lanes.first().ok_or(nix::Error::EINVAL)?;
                Some(Caller::new(serving, app, 0, Watch::Signal(lane)).ok_or(nix::Error::EINVAL)?)
            }
        };
        let mut l = EventLoop {
            serving,
            life,
            epoll,
            conns: Slab::with_capacity(64),
            caller,
            pool,
            head: RequestHead::default(),
            spare_heads: Vec::new(),
            spare_buffers: Vec::new(),
            abandoned: 0,
            abandoned_back: 0,
            date: DateCache::default(),
            accepting: false,
            stopping: false,
            retiring: false,
            served: 0,
            memory_checked: Instant::now(),
            reopened_log: None,
            last_call: Duration::ZERO,
        };
        l.set_accepting(true)?;
        Ok(l)
    }

    /// Ends the loop: its handler threads (if any) are returned to be
    /// joined, unless some are stuck in the app.
    pub fn into_pool(self) -> Option<Pool> {
        self.pool
    }

    /// Adds or removes the listeners from the epoll set.
    fn set_accepting(&mut self, on: bool) -> nix::Result<()> {
        if on == self.accepting {
            return Ok(());
        }
        for (i, l) in self.life.listeners.iter().enumerate() {
            let fd = l.as_fd();
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

    /// Serves until the worker has stopped and every connection is done.
    pub fn run(&mut self, sigfd: &mut SignalFd) -> nix::Result<()> {
        let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAIT];
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        loop {
            let timeout: u16 = if self.stopping {
                STOPPING_WAIT_MS
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
                    } else if signal == signals::WORKER_TIMED_OUT {
                        self.on_timed_out()?;
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
                self.serving.slot.heartbeat();
                if let Some(kib) = rss_kib() {
                    self.serving.slot.set_rss_kib(kib);
                }
                if nix::unistd::getppid() != self.life.master_pid && !self.stopping {
                    log::warn!("worker {}: the master is gone; stopping", self.serving.id);
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
                && self.open() < self.serving.options.max_connections
                && self.has_free_thread()
            {
                self.set_accepting(true)?;
            }
        }
    }

    fn reopen_log(&mut self) {
        if let Err(e) = crate::report::logging::reopen(&self.life.error_log_path) {
            log::error!(
                "worker {}: cannot reopen the error log: {e}",
                self.serving.id
            );
        }
        if let Some(path) = &self.life.access_log_path {
            match AccessLogTarget::open(path) {
                Ok(target) => self.reopened_log = Some(Arc::new(target)),
                Err(e) => log::error!(
                    "worker {}: cannot reopen the access log: {e}",
                    self.serving.id
                ),
            }
        }
    }

    /// After a request: asks for a replacement past --max-requests or --max-worker-memory.
    fn check_limits(&mut self) {
        if self.retiring {
            return;
        }
        let mut reason = None;
        if self.life.max_requests.is_some_and(|max| self.served >= max) {
            reason = Some(RetireReason::MaxRequests);
        } else if self.life.max_memory_kib > 0
            && self.memory_checked.elapsed() >= MEMORY_CHECK_INTERVAL
        {
            self.memory_checked = Instant::now();
            if let Some(kib) = rss_kib() {
                self.serving.slot.set_rss_kib(kib);
                if kib > self.life.max_memory_kib {
                    reason = Some(RetireReason::Memory);
                }
            }
        }
        if let Some(reason) = reason {
            self.retiring = true;
            self.serving.slot.request_retire(reason);
            let _ = nix::sys::signal::kill(self.life.master_pid, signals::MASTER_NUDGE);
            if let Err(e) = self.set_accepting(false) {
                log::warn!("worker {}: cannot stop accepting: {e}", self.serving.id);
            }
        }
    }

    fn begin_stop(&mut self) -> nix::Result<()> {
        if !self.stopping {
            log::debug!("worker {} stopping gracefully", self.serving.id);
            self.stopping = true;
            self.serving.slot.set_state(State::Stopping);
            self.set_accepting(false)?;
            // Let go of the listening sockets: once every process of a
            // stopping server has, the kernel stops queueing connections for
            // it (a successor bound with --reuse-port gets them all). In a
            // reload the new workers and the master still hold them.
            self.life.listeners.clear();
            // Idle keep-alive connections are not cut now: a client may be
            // sending on one this instant. Each stays until its next request
            // (answered with `Connection: close`) or its idle deadline, cut to
            // STOP_IDLE_LINGER.
            let linger = Instant::now() + STOP_IDLE_LINGER;
            for (_, conn) in self.conns.iter_mut() {
                conn.linger(linger);
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
            .filter(|(_, c)| c.deadline() <= now)
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            if let Some(conn) = self.conns.get_mut(key) {
                if conn.phase() == Phase::Reading && !conn.wants_write() {
                    log::debug!(
                        "request from {} timed out (--header-timeout): 408",
                        conn.peer()
                    );
                    self.date.refresh();
                    conn.refuse(408, self.date.http());
                    let _ = conn.flush();
                }
            }
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(conn) = self.conns.try_remove(key) {
            // Closing the fd removes it from the epoll set.
            let buffers = conn.recycle();
            // Kept only while small: a buffer grown by a large request goes.
            if self.spare_buffers.len() < SPARE_BUFFERS
                && buffers.inbuf.capacity() <= 2 * READ_CHUNK
                && buffers.out.capacity() <= 2 * READ_CHUNK
            {
                self.spare_buffers.push(buffers);
            }
        }
    }

    fn accept(&mut self, index: usize) -> nix::Result<()> {
        for _ in 0..ACCEPT_BATCH {
            // Looked up each time: answering a request may have closed it.
            let Some(listener) = self.life.listeners.get(index) else {
                return Ok(());
            };
            let is_unix = listener.is_unix;
            // SAFETY: all-zero bytes are a valid (empty) sockaddr_storage.
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
                        log::warn!("worker {}: accept failed: {e}", self.serving.id);
                        return Ok(());
                    }
                }
            }
            // SAFETY: accept4 returned a new descriptor we now own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut buffers = self.spare_buffers.pop().unwrap_or_default();
            let trusted = if is_unix {
                // A Unix socket's peer is on this machine, as a proxy in front would be.
                true
            } else {
                // SAFETY: the kernel filled `len` bytes of `storage`.
                let addr = unsafe { socket2::SockAddr::new(storage, len) };
                match addr.as_socket() {
                    Some(sa) => {
                        write_peer(&mut buffers.peer, &sa);
                        self.serving.options.trusted.trusts(sa.ip())
                    }
                    None => false,
                }
            };
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let deadline = Instant::now()
                + self
                    .serving
                    .options
                    .keep_alive
                    .unwrap_or(self.serving.options.header_timeout);
            let mut conn = Conn::new(fd, buffers, index, deadline, trusted);
            if self.pool.is_some() {
                conn.expect_first_request_by(Instant::now() + FIRST_REQUEST_GRACE);
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
            if self.open() >= self.serving.options.max_connections {
                log::warn!(
                    "worker {}: {} connections open (--worker-connections); pausing accept",
                    self.serving.id,
                    self.serving.options.max_connections
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
        if conn.wants_write() {
            match conn.flush() {
                Ok(true) => {
                    conn.set_wants_write(false);
                    if conn.phase() == Phase::Closing {
                        self.close(key);
                        return;
                    }
                    let mut ev = EpollEvent::new(EpollFlags::EPOLLIN, key as u64);
                    if self.epoll.modify(conn.fd(), &mut ev).is_err() {
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
                    Ok(0) => break,
                    Ok(n) if n < READ_CHUNK => break,
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
    fn process(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.phase() == Phase::Closing
                || conn.wants_write()
                || conn.pending_input().is_empty()
            {
                break;
            }
            match stage(conn, &mut self.head, &self.serving.options) {
                Staged::Waiting => break,
                Staged::Refused(status) => {
                    self.date.refresh();
                    conn.refuse(status, self.date.http());
                    break;
                }
                Staged::Ready => {}
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
            .filter(|(_, c)| c.expects_first_request(now))
            .count();
        pool.lent() + expected < self.serving.slot.threads() as usize
    }

    /// Connections lent to handler threads.
    fn lent(&self) -> usize {
        self.pool.as_ref().map_or(0, Pool::lent)
    }

    /// Requests given up on after --timeout whose threads are still in the app.
    pub fn stuck(&self) -> usize {
        self.abandoned.saturating_sub(self.abandoned_back)
    }

    /// The worker's state, as it bears on the connection of the request taken now.
    fn call_flags(&self) -> Flags {
        // A worker holding more clients than threads while its app is slow
        // lets this one go after its response when another worker is idle:
        // it reconnects, and the idle worker takes it. Connections otherwise
        // stay with the worker that accepted them, however busy it is; a
        // fast app never triggers this.
        let shedding = self.last_call > SHED_AFTER
            && self.open() > self.serving.slot.threads() as usize
            && self.life.board.any_idle_except(self.life.slot_index);
        Flags {
            stopping: self.stopping,
            retiring: self.retiring,
            shedding,
            keep_alive_off: self.serving.options.keep_alive.is_none(),
        }
    }

    /// Calls the app for the request in `self.head` on connection `key`, from this thread.
    fn call_inline(&mut self, key: usize) {
        let flags = self.call_flags();
        let log = self
            .reopened_log
            .as_deref()
            .or(self.serving.access_log.as_ref());
        let (Some(conn), Some(caller)) = (self.conns.get_mut(key), self.caller.as_mut()) else {
            return;
        };
        let called = caller.call(conn, &self.head, flags, log);
        self.last_call = called.call_time;
        self.served += 1;
    }

    /// Lends connection `key`, whose request is in `self.head`, to the handler threads.
    fn lend(&mut self, key: usize) {
        let flags = self.call_flags();
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        conn.lent();
        // Out of the epoll set while away: its thread does its I/O.
        if conn.registered() {
            let _ = self.epoll.delete(conn.fd());
            conn.set_registered(false);
        }
        let head = std::mem::replace(&mut self.head, self.spare_heads.pop().unwrap_or_default());
        let log = self.reopened_log.clone();
        if let Some(pool) = self.pool.as_mut() {
            pool.submit(Job {
                conn,
                head,
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
            if self.stopping {
                conn.linger(Instant::now() + STOP_IDLE_LINGER);
            }
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if self
                .epoll
                .add(conn.fd(), EpollEvent::new(EpollFlags::EPOLLIN, key as u64))
                .is_err()
            {
                continue;
            }
            conn.set_registered(true);
            entry.insert(conn);
            self.check_limits();
            self.process(key);
        }
        Ok(())
    }

    /// The master found a request past `--timeout` (a threaded worker reads
    /// the signal here): gives up on the lane it named (answering 504 when
    /// nothing was sent yet), asks for a replacement, and accepts nothing
    /// more; the other threads finish their requests first.
    fn on_timed_out(&mut self) -> nix::Result<()> {
        let serving = self.serving;
        let index = serving.slot.timed_out_lane().unwrap_or(0);
        let line = serving
            .lanes
            .get(index)
            .map(|l| l.request_line())
            .unwrap_or_default();
        let gave_up = self
            .pool
            .as_ref()
            .and_then(|pool| pool.give_up(serving, index));
        if gave_up.is_some() {
            self.abandoned += 1;
        }
        let what = match gave_up {
            Some(GaveUp::Answered) => "answered 504",
            Some(GaveUp::Cut) | None => "the response had started, closing the connection",
        };
        log::error!(
            "worker {} timed out handling \"{line}\"; {what}; finishing the other threads' requests, then exiting",
            serving.id
        );
        serving.slot.request_retire(RetireReason::TimedOut);
        if !self.retiring {
            self.retiring = true;
            let _ = nix::sys::signal::kill(self.life.master_pid, signals::MASTER_NUDGE);
            self.set_accepting(false)?;
        }
        Ok(())
    }

    /// Adds connection `key` to the epoll set if it is still open and not
    /// there yet: for reading, or for writing when output is pending.
    fn register(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.registered() {
            return;
        }
        let flags = if conn.wants_write() {
            EpollFlags::EPOLLOUT
        } else {
            EpollFlags::EPOLLIN
        };
        if self
            .epoll
            .add(conn.fd(), EpollEvent::new(flags, key as u64))
            .is_ok()
        {
            conn.set_registered(true);
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
                if !conn.wants_write() {
                    conn.set_wants_write(true);
                    // One not yet registered joins the set for writing (see `register`).
                    let mut ev = EpollEvent::new(EpollFlags::EPOLLOUT, key as u64);
                    if conn.registered() && self.epoll.modify(conn.fd(), &mut ev).is_err() {
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
        // Closing, or the client closed (between requests or half-way through one).
        if conn.finished() {
            self.close(key);
        }
    }
}
