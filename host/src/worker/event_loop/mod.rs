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
//! in one write. The loop calls the app itself, one request at a time. A
//! complete response the client does not take at once is left to the loop
//! to write ([`crate::worker::held`]), so a slow reader costs a buffer too.
//! When `accept` fails for want of descriptors or memory, the loop stops
//! polling its listeners for a short, growing pause
//! ([`crate::worker::accept_pause`]) and goes on serving the connections it has.
//!
//! With `--threads 1` a worker is one such loop, which reads the worker's
//! signals itself. With `--threads T` it runs T of them, one per thread
//! ([`crate::worker::threads`]), each with its own epoll set, connections and
//! lane; the worker's main thread reads the signals and wakes the loops
//! through an eventfd each watches when the worker's shared state changes
//! ([`crate::worker::supervisor`]).
//!
//! A connection whose handshake the app accepted becomes a WebSocket one
//! and stays in its loop, which runs it ([`websocket`]).

mod websocket;

use std::{
    collections::{HashMap, VecDeque},
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
    config::PanicPolicy,
    http::{date::DateCache, parse::RequestHead},
    os::{listener::Listener, signals},
    report::access_log::AccessLogTarget,
    scoreboard::{RetireReason, Scoreboard, State},
    tls::session::TlsSession,
    websocket::port::Port,
    worker::{
        accept_pause::{AcceptPause, Report, MAX_PAUSE},
        call::{Caller, EXCHANGE_IO_TIMEOUT},
        conn::{write_peer, Buffers, Conn, Phase, READ_CHUNK},
        outcome::Flags,
        refused::Refusal,
        rss_kib,
        serving::Serving,
        stage::{stage, Staged},
        threads::Team,
        timeout::Watch,
    },
};

/// How long the app's last call must have taken before a loop holding more
/// than one connection lets one go to an idle worker (see `call_flags`): far
/// above a fast request, far below a slow one.
const SHED_AFTER: Duration = Duration::from_millis(20);
/// Connections accepted per wake-up. One: a connection a loop accepts waits
/// for that loop, so a loop takes one and lets idle loops (woken one at a
/// time by EPOLLEXCLUSIVE, in this worker or another) take the next; what no
/// loop takes stays in the listen queue, where the adaptive pool sees it.
const ACCEPT_BATCH: usize = 1;
/// The epoll wait of a loop of a threaded worker that paused accepting at
/// `--worker-connections`: how soon it looks whether other loops closed some.
const PAUSED_WAIT_MS: u16 = 10;
/// The epoll wait of a stopping worker: how soon it looks whether its last
/// connections are done.
pub const STOPPING_WAIT_MS: u16 = 50;

/// How long a stopping worker keeps an idle keep-alive connection open for a
/// last request (answered with `Connection: close`) before closing it.
pub const STOP_IDLE_LINGER: Duration = Duration::from_secs(5);
/// How often a worker with `--max-worker-memory` measures its memory.
const MEMORY_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How often idle connections are checked against their deadlines (and
/// the worker beats its heartbeat).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// Bytes read from one connection per wake-up, at most (give or take a
/// read): a client that writes faster than it reads cannot make the loop
/// read without end before it answers. What is left stays in the socket
/// (its epoll registration is level-triggered) for the next wake-up.
const READ_BURST: usize = 256 * 1024;
/// Buffered response bytes past which a connection's pipelined requests
/// wait until those are written: a client that pipelines and never reads
/// cannot make the worker buffer the answers to everything it sent.
const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// Events taken from epoll per wait.
const EVENTS_PER_WAIT: usize = 256;

/// Closed connections whose buffers a worker keeps for new ones.
const SPARE_BUFFERS: usize = 8;

/// epoll token of the signalfd (`--threads 1`).
const SIGNAL_TOKEN: u64 = u64::MAX;
/// epoll token of the loop's eventfd in a threaded worker (the shared state changed).
const WAKE_TOKEN: u64 = u64::MAX - 1;
/// epoll tokens of listeners start here (connections use their slab keys).
const LISTENER_TOKEN_BASE: u64 = 1 << 48;

/// What one `accept` came to.
enum Accepted {
    /// A new connection, under this key.
    Conn(usize),
    /// The queue is empty (`EAGAIN`), or the listener is gone.
    Empty,
    /// That connection went before it was taken (reset while queued, a
    /// signal): the next may be there.
    Transient,
    /// Out of descriptors or memory: accepting pauses.
    Failed(std::io::Error),
}

/// What the loop needs for the worker's life beyond serving requests: its
/// listeners, its place among the workers, its limits, its logs' paths.
#[derive(Clone)]
pub struct Life {
    /// The shared listeners (let go when the worker stops: closed once every
    /// loop of the worker has).
    pub listeners: Arc<[Listener]>,
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

/// A loop's place in a threaded worker.
struct Member<'w> {
    /// What the worker's loops share.
    team: &'w Team,
    /// This loop's index (and lane).
    index: usize,
    /// The access log generation this loop has (see [`Team::log_since`]).
    log_seen: u64,
}

/// The event loop of a worker (`--threads 1`) or of one of its threads.
pub struct EventLoop<'w> {
    serving: &'w Serving,
    life: Life,
    epoll: Epoll,
    conns: Slab<Conn>,
    /// The loop's caller of the app.
    caller: Caller<'w>,
    /// The worker's signals, read here in a single-threaded worker.
    sigfd: Option<SignalFd>,
    /// The loop's place in a threaded worker.
    member: Option<Member<'w>>,
    /// The head being parsed (reused: its header list keeps its capacity).
    head: RequestHead,
    /// Buffers of closed connections, for the next ones (at most [`SPARE_BUFFERS`]).
    spare_buffers: Vec<Buffers>,
    /// The current date, for the answers the loop writes itself (refreshed before each).
    date: DateCache,
    accepting: bool,
    /// Accepting paused after `accept` failed for want of resources.
    accept_pause: AcceptPause,
    stopping: bool,
    /// Asked the master for a replacement: serving what it has, accepting nothing new.
    retiring: bool,
    /// Requests served (by the whole worker, when threaded).
    served: u64,
    /// When memory was last measured.
    memory_checked: Instant,
    /// The access log reopened after USR1 (else the one inherited from the master).
    reopened_log: Option<Arc<AccessLogTarget>>,
    /// How long the app's last call took.
    last_call: Duration,
    /// The app panicked in the last call (`check_limits` reads and clears it).
    panicked: bool,
    /// TLS handshakes in progress on this loop's connections.
    handshakes: usize,
    /// The loop's WebSocket side, as calls of the app see it.
    port: Port,
    /// This loop's WebSocket connections: id → key.
    ws_ids: HashMap<u64, usize>,
    /// WebSocket connections gone whose `on_close` is owed: id, code, reason.
    ws_closed: VecDeque<(u64, u16, String)>,
    /// WebSocket connections with messages left unread last turn.
    ws_again: Vec<usize>,
}

impl<'w> EventLoop<'w> {
    /// The loop of a single-threaded worker serving `serving` and calling
    /// `app`: it reads the worker's signals from `sigfd`.
    pub fn single(
        serving: &'w Serving,
        life: Life,
        app: Arc<LoadedApp>,
        sigfd: SignalFd,
    ) -> nix::Result<EventLoop<'w>> {
        let lane = serving.lanes.first().ok_or(nix::Error::EINVAL)?;
        let caller = Caller::new(serving, app, 0, Watch::Signal(lane)).ok_or(nix::Error::EINVAL)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&sigfd, EpollEvent::new(EpollFlags::EPOLLIN, SIGNAL_TOKEN))?;
        EventLoop::new(serving, life, epoll, caller, Some(sigfd), None)
    }

    /// Loop `index` of a threaded worker serving `serving` and calling
    /// `app`, on lane `index`, woken through `team` when the worker's state changes.
    pub fn threaded(
        serving: &'w Serving,
        life: Life,
        app: Arc<LoadedApp>,
        team: &'w Team,
        index: usize,
    ) -> nix::Result<EventLoop<'w>> {
        let watch = team.watch(index).ok_or(nix::Error::EINVAL)?;
        let caller =
            Caller::new(serving, app, index, Watch::Loop(watch)).ok_or(nix::Error::EINVAL)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(
            team.wake_fd(index).ok_or(nix::Error::EINVAL)?,
            EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TOKEN),
        )?;
        let member = Member {
            team,
            index,
            log_seen: 0,
        };
        let mut l = EventLoop::new(serving, life, epoll, caller, None, Some(member))?;
        // Woken before this loop existed: catch up.
        l.on_wake()?;
        Ok(l)
    }

    fn new(
        serving: &'w Serving,
        life: Life,
        epoll: Epoll,
        caller: Caller<'w>,
        sigfd: Option<SignalFd>,
        member: Option<Member<'w>>,
    ) -> nix::Result<EventLoop<'w>> {
        if serving.tls.is_some() {
            // Before the worker says it is ready, not in its first client's handshake.
            crate::tls::session::warm_up();
        }
        let port = Port::new(
            member.as_ref().map_or(0, |m| m.index),
            serving.options.websocket.limits().max_pending,
            caller.handles_websockets(),
        );
        let mut l = EventLoop {
            serving,
            life,
            epoll,
            conns: Slab::with_capacity(64),
            caller,
            sigfd,
            member,
            head: RequestHead::default(),
            spare_buffers: Vec::new(),
            date: DateCache::default(),
            accepting: false,
            accept_pause: AcceptPause::default(),
            stopping: false,
            retiring: false,
            served: 0,
            memory_checked: Instant::now(),
            reopened_log: None,
            last_call: Duration::ZERO,
            panicked: false,
            handshakes: 0,
            port,
            ws_ids: HashMap::new(),
            ws_closed: VecDeque::new(),
            ws_again: Vec::new(),
        };
        l.set_accepting(true)?;
        Ok(l)
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
    pub fn run(&mut self) -> nix::Result<()> {
        let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAIT];
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        loop {
            // (The clock is read for it only while accept fails.)
            let accept_paused = if self.accept_pause.in_episode() {
                self.accept_pause.remaining(Instant::now())
            } else {
                None
            };
            let mut timeout: u16 = if !self.ws_again.is_empty() {
                // Messages left unread on the last turn: read them now.
                0
            } else if self.stopping {
                STOPPING_WAIT_MS
            } else if self.member.is_some()
                && !self.accepting
                && !self.retiring
                && accept_paused.is_none()
            {
                PAUSED_WAIT_MS
            } else {
                SWEEP_INTERVAL.as_millis() as u16
            };
            // Woken when an accept pause ends, to poll the listeners again.
            if let Some(left) = accept_paused {
                let ms = left.as_millis().saturating_add(1).min(u128::from(timeout));
                timeout = ms as u16;
            }
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => 0,
                Err(e) => return Err(e),
            };
            // Signals (or the worker's changed state) first: a request that
            // came in the same wake-up as a USR1 goes to the reopened log,
            // as one after a stop signal is answered as a stopping worker's.
            let (mut signalled, mut woken) = (false, false);
            for ev in &events[..n] {
                match ev.data() {
                    SIGNAL_TOKEN => signalled = true,
                    WAKE_TOKEN => woken = true,
                    _ => {}
                }
            }
            if signalled {
                self.on_signals()?;
            }
            if woken {
                self.on_wake()?;
            }
            for ev in &events[..n] {
                match ev.data() {
                    SIGNAL_TOKEN | WAKE_TOKEN => {}
                    t if t >= LISTENER_TOKEN_BASE => {
                        self.accept((t - LISTENER_TOKEN_BASE) as usize)?
                    }
                    key => self.on_conn_event(key as usize, ev.events()),
                }
            }
            self.ws_read_again();
            let now = Instant::now();
            if now >= next_sweep {
                next_sweep = now + SWEEP_INTERVAL;
                // A threaded worker's main thread does the worker's part.
                if self.member.is_none() {
                    self.serving.slot.heartbeat();
                    if let Some(kib) = rss_kib() {
                        self.serving.slot.set_rss_kib(kib);
                    }
                    if nix::unistd::getppid() != self.life.master_pid && !self.stopping {
                        log::warn!("worker {}: the master is gone; stopping", self.serving.id);
                        self.begin_stop()?;
                    }
                }
                self.expire(now);
            }
            self.ws_settle();
            if self.stopping {
                // Listeners still held: the queue was not all taken (at
                // --worker-connections, or out of descriptors).
                if !self.life.listeners.is_empty()
                    && !self.accept_pause.holds(now)
                    && self.open() < self.serving.options.max_connections
                {
                    self.take_queue()?;
                }
                if self.conns.is_empty() && self.life.listeners.is_empty() {
                    return Ok(());
                }
            } else if !self.accepting
                && !self.retiring
                && !self.accept_pause.holds(now)
                && self.open() < self.serving.options.max_connections
            {
                self.set_accepting(true)?;
            }
        }
    }

    /// The worker's signals, in a single-threaded worker.
    fn on_signals(&mut self) -> nix::Result<()> {
        let Some(sigfd) = self.sigfd.as_mut() else {
            return Ok(());
        };
        for signal in signals::drain(sigfd) {
            if signal == signals::WORKER_REOPEN_LOGS {
                self.reopen_log();
            } else if signal == signals::WORKER_TIMED_OUT {
                // Unblocked in this thread: its handler takes it (see
                // `timeout`); never queued here.
            } else {
                self.begin_stop()?;
            }
        }
        Ok(())
    }

    /// A threaded worker's shared state changed: picks up a reopened access
    /// log, stops accepting when the worker retires, stops when it stops.
    fn on_wake(&mut self) -> nix::Result<()> {
        let Some(member) = self.member.as_mut() else {
            return Ok(());
        };
        let team = member.team;
        team.acknowledge(member.index);
        if let Some(log) = team.log_since(&mut member.log_seen) {
            self.reopened_log = Some(log);
        }
        self.ws_take_inbox();
        if team.retiring() && !self.retiring {
            self.retiring = true;
            self.set_accepting(false)?;
            self.ws_drain();
        }
        if team.stopping() {
            self.begin_stop()?;
        }
        Ok(())
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

    /// After a request: asks for a replacement after a panic (with
    /// `--panic-policy retire`), or past --max-requests or --max-worker-memory.
    fn check_limits(&mut self) {
        if self.retiring {
            return;
        }
        let mut reason = None;
        if std::mem::take(&mut self.panicked)
            && self.serving.options.panic_policy == PanicPolicy::Retire
        {
            log::warn!(
                "worker {} retires because the app panicked (--panic-policy retire): it finishes what it holds and takes nothing new",
                self.serving.id
            );
            reason = Some(RetireReason::Panicked);
        } else if self.life.max_requests.is_some_and(|max| self.served >= max) {
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
            // In a threaded worker, the first loop past a limit asks, and
            // every loop stops accepting.
            if self.member.as_ref().is_none_or(|m| m.team.retire()) {
                self.serving.slot.request_retire(reason);
                let _ = nix::sys::signal::kill(self.life.master_pid, signals::MASTER_NUDGE);
            }
            if let Err(e) = self.set_accepting(false) {
                log::warn!("worker {}: cannot stop accepting: {e}", self.serving.id);
            }
            self.ws_drain();
        }
    }

    fn begin_stop(&mut self) -> nix::Result<()> {
        if !self.stopping {
            log::debug!("worker {} stopping gracefully", self.serving.id);
            self.stopping = true;
            self.serving.slot.set_state(State::Stopping);
            self.set_accepting(false)?;
            // Idle keep-alive connections are not cut now: a client may be
            // sending on one this instant. Each stays until its next request
            // (answered with `Connection: close`) or its idle deadline, cut to
            // STOP_IDLE_LINGER.
            let linger = Instant::now() + STOP_IDLE_LINGER;
            for (_, conn) in self.conns.iter_mut() {
                conn.linger(linger);
            }
            self.ws_drain();
            // Let go of the listening sockets: once every process of a
            // stopping server has (and every loop of this worker), the
            // kernel stops queueing connections for it (a successor bound
            // with --reuse-port gets them all). When the server stops (or
            // the master is gone), these copies are among the last: the
            // connections waiting in their accept queues are taken first,
            // else closing the last copy resets them.
            // A worker that only retires takes the queue too: a wake-up
            // for a queued connection may be in this very batch of events
            // (EPOLLEXCLUSIVE woke this worker alone), and letting go
            // without taking it would leave it waiting for the next
            // connection to wake another worker (seen under a one-client
            // load during a canary: a request answered after 10 s).
            self.take_queue()?;
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
            if self.is_websocket(key) {
                self.ws_timer(key, now);
                continue;
            }
            if let Some(conn) = self.conns.get_mut(key) {
                if conn.in_handshake() {
                    log::debug!(
                        "closing the connection of {}: its TLS handshake took longer than --tls-handshake-timeout",
                        conn.peer()
                    );
                } else if conn.wants_write() {
                    log::debug!(
                        "closing the connection of {}: it took nothing of its response for {} s (the I/O timeout)",
                        conn.peer(),
                        EXCHANGE_IO_TIMEOUT.as_secs()
                    );
                } else if conn.phase() == Phase::Reading {
                    log::debug!(
                        "request from {} timed out (--header-timeout): 408",
                        conn.peer()
                    );
                    self.date.refresh();
                    conn.refuse(408, self.date.http());
                    let _ = conn.flush();
                    self.note_refused(key, 408);
                }
            }
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            if let Some((session, _)) = conn.websocket() {
                let (id, opened, report) =
                    (session.id, session.opened, session.close_report.take());
                self.ws_closing(id, opened, report);
            }
            if conn.in_handshake() {
                self.handshakes -= 1;
            } else if conn.is_tls() && !conn.wants_write() {
                conn.close_tls();
            }
            self.serving.slot.release_output(conn.release_held());
            if let Some(member) = &self.member {
                member.team.closed();
            }
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
        let mut took = false;
        for _ in 0..ACCEPT_BATCH {
            let key = match self.accept_one(index) {
                Accepted::Conn(key) => key,
                Accepted::Empty | Accepted::Transient => break,
                Accepted::Failed(e) => return self.pause_accepting(&e),
            };
            took = true;
            // A request that came with the connection (as it usually does)
            // is answered now, before the connection joins the epoll set: a
            // `Connection: close` one never joins it. Otherwise the read
            // finds nothing.
            self.on_conn_event(key, EpollFlags::EPOLLIN);
            self.register(key);
            if self.open() >= self.serving.options.max_connections {
                log::warn!(
                    "worker {}: {} connections open (--worker-connections); pausing accept",
                    self.serving.id,
                    self.serving.options.max_connections
                );
                return self.set_accepting(false);
            }
        }
        if took && self.accepting && self.serving.slot.take_turns() {
            self.back_of_the_queue(index)?;
        }
        Ok(())
    }

    /// Moves this loop to the back of listener `index`'s waiters (while a
    /// canary runs: see `Slot::take_turns`): `EPOLLEXCLUSIVE` wakes the
    /// first idle waiter in the order they were added, so re-adding after
    /// taking connections lets every idle worker have its turn. Two system
    /// calls per wake-up that accepted, and only then.
    fn back_of_the_queue(&mut self, index: usize) -> nix::Result<()> {
        let Some(listener) = self.life.listeners.get(index) else {
            return Ok(());
        };
        let fd = listener.as_fd();
        self.epoll.delete(fd)?;
        self.epoll.add(
            fd,
            EpollEvent::new(
                EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE,
                LISTENER_TOKEN_BASE + index as u64,
            ),
        )
    }

    /// Takes one connection from listener `index`'s accept queue (without
    /// reading it): its key, or why none.
    fn accept_one(&mut self, index: usize) -> Accepted {
        // Looked up each time: answering a request may have closed it.
        let Some(listener) = self.life.listeners.get(index) else {
            return Accepted::Empty;
        };
        let is_unix = listener.is_unix;
        let tls_listener = listener.tls;
        let proxy_listener = listener.proxy_protocol;
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
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Accepted::Empty,
                Some(errno) if !AcceptPause::pauses_for(errno) => Accepted::Transient,
                _ => Accepted::Failed(e),
            };
        }
        if self.accept_pause.in_episode() {
            self.end_accept_pause();
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
        let now = Instant::now();
        let options = &self.serving.options;
        let mut deadline = now + options.keep_alive.unwrap_or(options.header_timeout);
        let mut tls = None;
        if tls_listener {
            let Some(server) = self.serving.tls.as_deref() else {
                // The master never marks a listener TLS without a configuration.
                self.spare_buffers.push(buffers);
                return Accepted::Transient;
            };
            match TlsSession::new(&server.config) {
                Ok(session) => tls = Some(Box::new(session)),
                Err(e) => {
                    log::warn!(
                        "worker {}: cannot start a TLS session: {e}",
                        self.serving.id
                    );
                    self.spare_buffers.push(buffers);
                    return Accepted::Transient;
                }
            }
            deadline = now + server.handshake_timeout;
            if self.handshakes >= server.max_handshakes {
                self.evict_oldest_handshake();
            }
            self.handshakes += 1;
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let conn = entry.insert(Conn::new(fd, buffers, index, deadline, trusted, tls));
        // A header only from a peer trusted to send one (a balancer); from
        // any other, the first bytes are the client's own.
        if proxy_listener && trusted {
            conn.expect_proxy_header(now + options.header_timeout);
        }
        if let Some(member) = &self.member {
            member.team.opened();
        }
        Accepted::Conn(key)
    }

    /// At `--tls-max-handshakes`: closes the connection whose handshake
    /// began first (its deadline is the earliest), so a client that stalls
    /// its handshake yields to a new one rather than keeping it out.
    fn evict_oldest_handshake(&mut self) {
        let oldest = self
            .conns
            .iter()
            .filter(|(_, c)| c.in_handshake())
            .min_by_key(|(_, c)| c.deadline())
            .map(|(k, _)| k);
        if let Some(key) = oldest {
            if let Some(conn) = self.conns.get(key) {
                log::debug!(
                    "closing the TLS handshake of {}: {} handshakes in progress (--tls-max-handshakes)",
                    conn.peer(),
                    self.handshakes
                );
            }
            self.close(key);
        }
    }

    /// On a graceful stop of the server: takes every connection waiting in
    /// the listeners' accept queues, without serving them yet, then lets go of the
    /// listeners at once; the loop serves them next, as usual (each
    /// answered with `Connection: close`).
    ///
    /// Taking the whole queue before serving any of it keeps the moment
    /// between the last empty `accept` and the `close` a few instructions
    /// long: a connection the kernel queues in that moment is the only one
    /// lost (reset) when this is the last copy of the socket, and serving
    /// first would widen it to the time the app takes (and, under steady
    /// load, never let go). A loop at `--worker-connections`, or whose
    /// `accept` fails for want of descriptors, keeps the listeners (out of
    /// its epoll set) and takes the rest once connections close: see `run`.
    fn take_queue(&mut self) -> nix::Result<()> {
        if self.life.listeners.is_empty() {
            return Ok(());
        }
        let mut taken = 0;
        for index in 0..self.life.listeners.len() {
            loop {
                if self.open() >= self.serving.options.max_connections {
                    return Ok(());
                }
                match self.accept_one(index) {
                    Accepted::Conn(key) => {
                        taken += 1;
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.linger(Instant::now() + STOP_IDLE_LINGER);
                        }
                        // Level-triggered: its request, already there,
                        // wakes the loop at once.
                        self.register(key);
                    }
                    Accepted::Transient => {}
                    Accepted::Empty => break,
                    Accepted::Failed(e) => return self.pause_accepting(&e),
                }
            }
        }
        self.life.listeners = Arc::from(Vec::new());
        if taken > 0 {
            log::debug!(
                "worker {}: took {taken} queued connection(s) before closing its listeners",
                self.serving.id
            );
        }
        Ok(())
    }

    /// `accept` failed with `e` (out of descriptors, or of memory): stops
    /// polling the listeners for a pause (the loop re-arms them when it
    /// ends), counts it, and logs the episode now and then with a count.
    fn pause_accepting(&mut self, e: &std::io::Error) -> nix::Result<()> {
        let now = Instant::now();
        let (pause, report) = self.accept_pause.failed(now);
        self.serving.slot.count_accept_pause();
        let id = self.serving.id;
        let open = self.open();
        match report {
            Report::Quiet => {}
            Report::Started => log::warn!(
                "worker {id}: accept failed: {e} ({open} connection(s) open); pausing accept \
                 for {} ms, longer (up to {} ms) while it fails",
                pause.as_millis(),
                MAX_PAUSE.as_millis()
            ),
            Report::Continues { failures, over } => log::warn!(
                "worker {id}: accept still failing: {e} ({open} connection(s) open); \
                 {failures} failure(s) in the last {} s, each pausing accept",
                over.as_secs()
            ),
        }
        self.set_accepting(false)
    }

    /// `accept` succeeded after failing: logs the episode's end, with its count.
    fn end_accept_pause(&mut self) {
        if let Some((failures, over)) = self.accept_pause.succeeded(Instant::now()) {
            log::info!(
                "worker {}: accepting again after {failures} failed accept(s) over {} ms",
                self.serving.id,
                over.as_millis()
            );
        }
    }

    fn on_conn_event(&mut self, key: usize, flags: EpollFlags) {
        if self.is_websocket(key) {
            self.on_ws_ready(key, flags);
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.wants_write() {
            match conn.flush() {
                Ok(true) => {
                    self.serving.slot.release_output(conn.release_held());
                    if conn.phase() == Phase::Closing {
                        self.close(key);
                        return;
                    }
                    let now = Instant::now();
                    let options = &self.serving.options;
                    conn.output_drained(
                        now,
                        options.keep_alive.unwrap_or(options.header_timeout),
                        options.header_timeout,
                    );
                    if self.stopping {
                        conn.linger(now + STOP_IDLE_LINGER);
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
            if conn.awaiting_proxy() {
                match conn.take_proxy_header() {
                    Ok(None) => return,
                    Ok(Some(source)) => {
                        if let Some(addr) = source {
                            let trusted = self.serving.options.trusted.trusts(addr.ip());
                            conn.set_peer(&addr, trusted);
                        }
                    }
                    Err(e) => {
                        log::debug!(
                            "closing the connection of {}: no valid PROXY protocol header ({e})",
                            conn.peer()
                        );
                        self.close(key);
                        return;
                    }
                }
            }
            let mut burst = 0;
            loop {
                match conn.read_available() {
                    Ok(0) => break,
                    Ok(n) if n < READ_CHUNK => break,
                    Ok(n) => {
                        burst += n;
                        if burst >= READ_BURST {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        if e.kind() == std::io::ErrorKind::InvalidData {
                            log::debug!("TLS connection from {} failed: {e}", conn.peer());
                        }
                        // An alert, if the session has one to send.
                        let _ = conn.flush();
                        self.close(key);
                        return;
                    }
                }
            }
            if conn.in_handshake() {
                let options = &self.serving.options;
                let idle = Instant::now() + options.keep_alive.unwrap_or(options.header_timeout);
                if conn.handshake_done(idle) {
                    self.handshakes -= 1;
                }
            }
        }
        self.process(key);
    }

    /// Answers every complete request buffered on the connection, then
    /// writes; a held response's rest goes out before the next request.
    fn process(&mut self, key: usize) {
        loop {
            self.answer_buffered(key);
            if !self.after_io(key) {
                return;
            }
        }
    }

    /// Answers the complete requests buffered on the connection, in order,
    /// until one leaves the rest of its response held.
    fn answer_buffered(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.phase() == Phase::Closing
                || conn.wants_write()
                || conn.holds_output()
                || conn.pending_input().is_empty()
            {
                break;
            }
            if conn.pending_output() >= OUTPUT_HIGH_WATER {
                // Written before more requests are taken; what the socket
                // will not take waits for it to be writable (`after_io`).
                match conn.flush() {
                    Ok(true) => continue,
                    Ok(false) | Err(_) => break,
                }
            }
            match stage(conn, &mut self.head, &self.serving.options) {
                Staged::Waiting => break,
                Staged::Refused(status) => {
                    self.date.refresh();
                    conn.refuse(status, self.date.http());
                    self.note_refused(key, status);
                    break;
                }
                Staged::Ready => {}
            }
            self.call(key);
            if self.is_websocket(key) {
                // What `handle` sent goes out with what `on_open` sends.
                self.ws_opened(key);
                return;
            }
            self.ws_deliver();
            self.check_limits();
        }
    }

    /// Counts the request on connection `key`, refused with `status` before
    /// the app, in the scoreboard (so `/metrics` has it, with a duration of
    /// 0, as the access log does) and writes its access-log line (the date
    /// is fresh).
    fn note_refused(&self, key: usize, status: u16) {
        self.serving.slot.record(status, 0);
        let Some(target) = self
            .reopened_log
            .as_deref()
            .or(self.serving.access_log.as_ref())
        else {
            return;
        };
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let refusal = Refusal {
            input: conn.pending_input(),
            peer: conn.peer(),
            status,
            max_line: self.serving.options.limits.max_request_line,
        };
        refusal.log(&self.serving.options.access_format, target, &self.date);
    }

    /// Connections open in the worker (across its loops, when threaded).
    fn open(&self) -> usize {
        match &self.member {
            Some(member) => member.team.open(),
            None => self.conns.len(),
        }
    }

    /// The worker's state, as it bears on the connection of the request taken now.
    fn call_flags(&self) -> Flags {
        // A loop holding more than one client while its app is slow lets
        // this one go after its response when another worker is idle: it
        // reconnects, and the idle worker takes it. Connections otherwise
        // stay with the loop that accepted them, however busy it is; a fast
        // app never triggers this.
        let shedding = self.last_call > SHED_AFTER
            && self.conns.len() > 1
            && self.life.board.any_idle_except(self.life.slot_index);
        Flags {
            stopping: self.stopping,
            retiring: self.retiring,
            shedding,
            keep_alive_off: self.serving.options.keep_alive.is_none(),
        }
    }

    /// Calls the app for the request in `self.head` on connection `key`.
    fn call(&mut self, key: usize) {
        let flags = self.call_flags();
        let log = self
            .reopened_log
            .as_deref()
            .or(self.serving.access_log.as_ref());
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let called = self
            .caller
            .call(conn, &self.head, flags, log, &mut self.port);
        self.last_call = called.call_time;
        self.panicked |= called.panicked;
        self.served = match &self.member {
            Some(member) => member.team.served(),
            None => self.served + 1,
        };
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
        let flags = match (conn.wants_write(), conn.phase() == Phase::WebSocket) {
            (false, _) => EpollFlags::EPOLLIN,
            (true, false) => EpollFlags::EPOLLOUT,
            // A WebSocket connection reads while its output waits.
            (true, true) => EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT,
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

    /// Writes what is pending without blocking and settles the connection's
    /// fate. True when a held response's rest has just gone out and a
    /// pipelined request waits behind it: answer it now.
    fn after_io(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let holding = conn.holds_output();
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
                return false;
            }
            Err(_) => {
                self.close(key);
                return false;
            }
        }
        // Closing, or the client closed (between requests or half-way through one).
        if conn.finished() {
            self.close(key);
            return false;
        }
        if holding {
            self.serving.slot.release_output(conn.release_held());
            return !conn.pending_input().is_empty();
        }
        false
    }
}
