//! The threads of a worker run with `--threads T` (T > 1): T event loops and
//! what they share.
//!
//! Each thread runs an event loop of its own ([`crate::worker::event_loop`]):
//! its own epoll set over the shared listeners (with `EPOLLEXCLUSIVE`, as
//! between workers), its own connections, its own caller of the app and
//! scoreboard lane. A request is read, answered and written by the thread
//! that accepted its connection, so nothing is handed between threads on the
//! hot path. Back-pressure comes by itself: a loop inside the app is not
//! waiting in epoll, so a new connection wakes a loop that is free. A slow
//! client costs a buffer in a loop that goes on serving, never a thread.
//!
//! What the loops share is a [`Team`]: the worker's state (stopping,
//! retiring), its limits (connections open, requests served), the access
//! log reopened after USR1, one eventfd per loop to wake it when that state
//! changes, and one [`LaneWatch`] per lane, through which the worker's main
//! thread ([`crate::worker::supervisor`]) gives up on a request past
//! `--timeout`. The loops inherit the main thread's signal mask, in which
//! every worker signal is blocked: only the main thread reads them.

use std::{
    io,
    os::fd::{AsFd, BorrowedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    thread::JoinHandle,
};

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::{
    app::LoadedApp,
    report::access_log::AccessLogTarget,
    websocket::outbox::Outgoing,
    worker::{
        event_loop::{EventLoop, Life},
        serving::Serving,
        timeout::{GaveUp, LaneWatch},
    },
};

/// What the loops of a threaded worker share.
pub struct Team {
    /// The worker is stopping (graceful stop, or the master is gone).
    stopping: AtomicBool,
    /// The worker asked the master for a replacement.
    retiring: AtomicBool,
    /// A loop failed (its epoll set broke): the worker stops with an error.
    failed: AtomicBool,
    /// Connections open across the loops (`--worker-connections` caps it).
    open: AtomicUsize,
    /// Requests served across the loops (`--max-requests` caps it).
    served: AtomicU64,
    /// The access log reopened after USR1, and how many times it was.
    log: Mutex<Option<Arc<AccessLogTarget>>>,
    log_generation: AtomicU64,
    /// One per loop: written when the shared state changes.
    wakes: Box<[EventFd]>,
    /// One per loop: WebSocket messages other loops' calls sent to its
    /// connections (see [`Team::forward`]).
    inboxes: Box<[Mutex<Vec<Outgoing>>]>,
    /// One per loop: its thread has left its loop.
    ended: Box<[AtomicBool]>,
    /// Written when a loop ends (the supervisor watches it).
    ended_wake: EventFd,
    /// One per loop (and lane).
    watches: Box<[LaneWatch]>,
}

impl Team {
    /// The shared state of `loops` loops.
    pub fn new(loops: usize) -> io::Result<Team> {
        let eventfd = || EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK);
        Ok(Team {
            stopping: AtomicBool::new(false),
            retiring: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            log: Mutex::new(None),
            log_generation: AtomicU64::new(0),
            wakes: (0..loops).map(|_| eventfd()).collect::<Result<_, _>>()?,
            inboxes: (0..loops).map(|_| Mutex::new(Vec::new())).collect(),
            ended: (0..loops).map(|_| AtomicBool::new(false)).collect(),
            ended_wake: eventfd()?,
            watches: (0..loops).map(|_| LaneWatch::default()).collect(),
        })
    }

    /// How many loops.
    pub fn size(&self) -> usize {
        self.wakes.len()
    }

    /// Loop `index`'s wake-up eventfd.
    pub fn wake_fd(&self, index: usize) -> Option<BorrowedFd<'_>> {
        self.wakes.get(index).map(AsFd::as_fd)
    }

    /// Clears loop `index`'s wake-up, before it looks at the shared state.
    pub fn acknowledge(&self, index: usize) {
        if let Some(wake) = self.wakes.get(index) {
            let _ = wake.read();
        }
    }

    /// Hands loop `index` a WebSocket message for one of its connections,
    /// and wakes it.
    pub fn forward(&self, index: usize, message: Outgoing) {
        if let (Some(inbox), Some(wake)) = (self.inboxes.get(index), self.wakes.get(index)) {
            inbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(message);
            let _ = wake.write(1);
        }
    }

    /// The WebSocket messages other loops forwarded to loop `index`.
    pub fn inbox(&self, index: usize) -> Vec<Outgoing> {
        match self.inboxes.get(index) {
            Some(inbox) => {
                std::mem::take(&mut *inbox.lock().unwrap_or_else(PoisonError::into_inner))
            }
            None => Vec::new(),
        }
    }

    /// Wakes every loop to look at the shared state.
    pub fn wake_all(&self) {
        for wake in self.wakes.iter() {
            let _ = wake.write(1);
        }
    }

    /// Loop `index`'s lane watch.
    pub fn watch(&self, index: usize) -> Option<&LaneWatch> {
        self.watches.get(index)
    }

    /// Stops the worker: every loop stops accepting and finishes.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake_all();
    }

    /// Whether the worker is stopping.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The worker asks for a replacement: true for the first caller only
    /// (who tells the master). Every loop stops accepting.
    pub fn retire(&self) -> bool {
        let first = !self.retiring.swap(true, Ordering::AcqRel);
        if first {
            self.wake_all();
        }
        first
    }

    /// Whether the worker asked for a replacement.
    pub fn retiring(&self) -> bool {
        self.retiring.load(Ordering::Acquire)
    }

    /// A loop accepted a connection.
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A loop closed a connection.
    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open across the loops.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a request served; returns the worker's total.
    pub fn served(&self) -> u64 {
        self.served.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The access log, reopened after USR1: every loop picks it up.
    pub fn set_log(&self, log: Arc<AccessLogTarget>) {
        *self.log.lock().unwrap_or_else(PoisonError::into_inner) = Some(log);
        self.log_generation.fetch_add(1, Ordering::AcqRel);
        self.wake_all();
    }

    /// The access log reopened since generation `seen` (which it updates), if it was.
    pub fn log_since(&self, seen: &mut u64) -> Option<Arc<AccessLogTarget>> {
        let now = self.log_generation.load(Ordering::Acquire);
        if now == *seen {
            return None;
        }
        *seen = now;
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Loop `index` has ended (`failed`: on an error); wakes the supervisor.
    pub fn end(&self, index: usize, failed: bool) {
        if failed {
            self.failed.store(true, Ordering::Release);
            self.stop();
        }
        if let Some(ended) = self.ended.get(index) {
            ended.store(true, Ordering::Release);
        }
        let _ = self.ended_wake.write(1);
    }

    /// Whether a loop failed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The eventfd written when a loop ends.
    pub fn ended_fd(&self) -> BorrowedFd<'_> {
        self.ended_wake.as_fd()
    }

    /// Clears the supervisor's wake-up.
    pub fn acknowledge_ended(&self) {
        let _ = self.ended_wake.read();
    }

    /// Whether loop `index` has ended.
    pub fn has_ended(&self, index: usize) -> bool {
        self.ended
            .get(index)
            .is_some_and(|e| e.load(Ordering::Acquire))
    }

    /// Loops whose thread is inside the app for a request given up on after `--timeout`.
    pub fn stuck(&self) -> usize {
        (0..self.size())
            .filter(|&i| !self.has_ended(i) && self.watches[i].stuck())
            .count()
    }

    /// Whether every loop has ended, but for those stuck in the app.
    pub fn done(&self) -> bool {
        (0..self.size()).all(|i| self.has_ended(i) || self.watches[i].stuck())
    }

    /// Gives up on the request in lane `index` (see [`LaneWatch::give_up`]).
    pub fn give_up(&self, serving: &Serving, index: usize) -> Option<GaveUp> {
        let lane = serving.lanes.get(index)?;
        self.watches.get(index)?.give_up(serving.slot, lane)
    }
}

/// Starts one thread per loop of `team`, each running an event loop with a
/// copy of `life` (so over its listeners) and calling `app` itself.
///
/// Returns once every loop exists (its epoll set made, the listeners in it),
/// so the worker reports ready only when it can serve; fails if a loop could
/// not be set up (the others are then stopped and joined).
pub fn start(
    serving: &Arc<Serving>,
    app: &Arc<LoadedApp>,
    team: &Arc<Team>,
    life: Life,
) -> io::Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::with_capacity(team.size());
    // Each loop says whether it could be set up before it runs.
    let (built_tx, built_rx) = std::sync::mpsc::channel::<bool>();
    let stop_all = |threads: Vec<JoinHandle<()>>| {
        // The threads started stop, and are joined.
        team.stop();
        for thread in threads {
            let _ = thread.join();
        }
    };
    for index in 0..team.size() {
        let serving = Arc::clone(serving);
        let app = Arc::clone(app);
        let member = Arc::clone(team);
        let life = life.clone();
        let built = built_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("loop-{}", index + 1))
            .spawn(move || {
                let team = member;
                let failed = match EventLoop::threaded(&serving, life, app, &team, index) {
                    Ok(mut event_loop) => {
                        let _ = built.send(true);
                        drop(built);
                        match event_loop.run() {
                            Ok(()) => false,
                            Err(e) => {
                                log::error!("worker {} loop {} failed: {e}", serving.id, index + 1);
                                true
                            }
                        }
                    }
                    Err(e) => {
                        log::error!(
                            "worker {}: cannot start loop {}: {e}",
                            serving.id,
                            index + 1
                        );
                        let _ = built.send(false);
                        true
                    }
                };
                team.end(index, failed);
            });
        match thread {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                stop_all(threads);
                return Err(e);
            }
        }
    }
    drop(built_tx);
    let built = built_rx.iter().take(team.size()).filter(|ok| *ok).count();
    if built < team.size() {
        stop_all(threads);
        return Err(io::Error::other("an event loop could not be set up"));
    }
    Ok(threads)
}
