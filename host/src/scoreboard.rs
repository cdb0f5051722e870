//! The scoreboard: a table in shared memory, one slot per worker.
//!
//! The master maps it before forking, so every worker writes its own slot and
//! the master reads them all without a system call: state, boot and heartbeat
//! times, requests served. Each slot has one lane per thread
//! (`--threads`): the request that thread has in hand and when it started.
//! Plain atomics, no locks: a slot has one writing process (its worker) once
//! the master filled it in, and a lane one writing thread.

use std::{
    num::NonZeroUsize,
    ptr::NonNull,
    sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering},
    time::Instant,
};

use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};

/// A worker's state as its slot shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum State {
    /// Slot unused.
    Free = 0,
    /// Forked, loading the app.
    Booting = 1,
    /// Serving, and a thread is free for the next request.
    Idle = 2,
    /// Every thread is inside the app.
    Busy = 3,
    /// Finishing up after a stop request.
    Stopping = 4,
}

impl State {
    fn from_u32(v: u32) -> State {
        match v {
            1 => State::Booting,
            2 => State::Idle,
            3 => State::Busy,
            4 => State::Stopping,
            _ => State::Free,
        }
    }
}

/// One worker's slot.
#[repr(C)]
#[derive(Debug)]
pub struct Slot {
    pid: AtomicI32,
    state: AtomicU32,
    /// Set once the worker has loaded the app and can serve.
    ready: AtomicU32,
    /// Monotonic milliseconds of the fork.
    spawned_ms: AtomicU64,
    /// Monotonic milliseconds of the last sign of life.
    heartbeat_ms: AtomicU64,
    /// Handler threads (lanes) the worker runs.
    threads: AtomicU32,
    /// Lanes inside the app now.
    busy: AtomicU32,
    /// The lane (1-based) whose request the master found past `--timeout`
    /// (0: none), written before it sends the timeout signal.
    timed_out_lane: AtomicU32,
    /// Requests served.
    requests: AtomicU64,
    /// Monotonic milliseconds when the worker last finished a request (or became ready).
    last_active_ms: AtomicU64,
    /// The build generation the worker runs.
    generation: AtomicU32,
    /// Set by the master just before it asks the worker to stop gracefully,
    /// so the response in progress already says `Connection: close`:
    /// [`STOP_WORKER`] (this worker retires), [`STOP_SERVER`] (the server stops).
    stop: AtomicU32,
    /// Set by the master while a canary runs: after taking connections from
    /// a listener, the worker moves to the back of that listener's queue of
    /// waiters (see [`Slot::take_turns`]).
    take_turns: AtomicU32,
    /// Why the worker asked to be replaced ([`RetireReason`] as a number; 0: it did not).
    retire: AtomicU32,
    /// Resident memory in KiB, as last measured by the worker.
    rss_kib: AtomicU64,
    /// Responses by status class (1xx to 5xx).
    statuses: [AtomicU64; 5],
    /// Request durations: counts per bucket of [`LATENCY_BUCKETS`] (the last is +Inf).
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of request durations, in microseconds.
    latency_sum_us: AtomicU64,
    /// Why the worker failed to boot, NUL-padded and cut to fit (worker
    /// writes before it exits; master reads after reaping it, to say why in
    /// its own log line).
    boot_error: [AtomicU64; BOOT_ERROR_WORDS],
    /// Times the worker paused accepting because `accept` failed for want
    /// of resources (see [`crate::worker::accept_pause`]).
    accept_pauses: AtomicU64,
    /// Response bytes the worker holds for clients that have not taken
    /// them yet (its budget, `--max-worker-pending-output`, bounds it).
    pending_output: AtomicU64,
    /// Responses whose rest was handed to the event loop.
    held: AtomicU64,
    /// Responses whose rest did not fit the budgets: written as the client
    /// took them, the worker waiting.
    over_budget: AtomicU64,
    /// Calls in which the app panicked.
    app_panics: AtomicU64,
    /// Calls in which the app returned an error (not counting those after
    /// the client went away).
    app_errors: AtomicU64,
    /// WebSocket connections open now (a gauge).
    websockets: AtomicU64,
    /// WebSocket messages received from clients, and sent to them.
    websocket_in: AtomicU64,
    websocket_out: AtomicU64,
}

/// [`Slot::request_stop`]'s mark: this worker retires (the others keep the listeners).
const STOP_WORKER: u32 = 1;
/// [`Slot::request_server_stop`]'s mark: the whole server stops.
const STOP_SERVER: u32 = 2;

/// Words of [`Slot::boot_error`] (8 bytes each): 192 bytes of the message.
pub const BOOT_ERROR_WORDS: usize = 24;

/// Upper bounds of the request-duration histogram buckets, in seconds.
///
/// Fine enough between 5 ms and 1 s (steps of 1.5x or less) that a p99
/// interpolated within a bucket ([`crate::master::canary`] compares the
/// p99 of two builds) is off by a third at most; a bucket is found by a
/// short linear scan, so `record` stays cheap.
pub const LATENCY_BUCKETS: [f64; 21] = [
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075, 0.1, 0.15,
    0.25, 0.35, 0.5, 0.75, 1.0, 2.5, 5.0,
];

/// What the master adds up from slots: by status class, and the duration histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestTotals {
    /// Responses by status class, 1xx to 5xx.
    pub statuses: [u64; 5],
    /// Counts per duration bucket (not cumulative; the last is +Inf).
    pub latency: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of durations, in microseconds.
    pub latency_sum_us: u64,
    /// Accept pauses (see [`Slot::count_accept_pause`]).
    pub accept_pauses: u64,
    /// Responses whose rest was handed to the event loop (a slow reader).
    pub held: u64,
    /// Responses to slow readers that did not fit the pending-output budgets.
    pub over_budget: u64,
    /// Calls in which the app panicked.
    pub app_panics: u64,
    /// Calls in which the app returned an error (the client still there).
    pub app_errors: u64,
    /// WebSocket messages received from clients.
    pub websocket_in: u64,
    /// WebSocket messages sent to clients.
    pub websocket_out: u64,
    /// Response bytes live workers hold for slow readers now: a gauge, so
    /// [`RequestTotals::add`] leaves it alone (a worker gone holds nothing);
    /// the master adds it up from live slots.
    pub pending_output: u64,
}

impl RequestTotals {
    /// Adds a slot's counts.
    pub fn add(&mut self, slot: &Slot) {
        for (t, s) in self.statuses.iter_mut().zip(&slot.statuses) {
            *t += s.load(Ordering::Relaxed);
        }
        for (t, s) in self.latency.iter_mut().zip(&slot.latency) {
            *t += s.load(Ordering::Relaxed);
        }
        self.latency_sum_us += slot.latency_sum_us.load(Ordering::Relaxed);
        self.accept_pauses += slot.accept_pauses.load(Ordering::Relaxed);
        self.held += slot.held.load(Ordering::Relaxed);
        self.over_budget += slot.over_budget.load(Ordering::Relaxed);
        self.app_panics += slot.app_panics.load(Ordering::Relaxed);
        self.app_errors += slot.app_errors.load(Ordering::Relaxed);
        self.websocket_in += slot.websocket_in.load(Ordering::Relaxed);
        self.websocket_out += slot.websocket_out.load(Ordering::Relaxed);
    }
}

/// Words of [`Lane::request_line`] (8 bytes each).
pub const REQUEST_LINE_WORDS: usize = 12;

/// What the request line shows instead of a query, unless `--status-show-query`.
pub const HIDDEN_QUERY: &[u8] = "?…".as_bytes();

/// Most threads per worker (`--threads`).
pub const MAX_THREADS: u32 = 256;

/// One thread's request in hand.
#[repr(C)]
#[derive(Debug)]
pub struct Lane {
    /// Monotonic milliseconds when the request in hand started (0: none).
    request_start_ms: AtomicU64,
    /// The start of the request in hand (`METHOD target`), NUL-padded, for the master's logs.
    request_line: [AtomicU64; REQUEST_LINE_WORDS],
    /// The request's socket while nothing of its response has been written
    /// (-1 otherwise): where a single-threaded worker's timeout handler may
    /// still answer 504. Only meaningful inside the worker.
    answer_fd: AtomicI32,
}

impl Lane {
    /// When the request in hand started, if there is one.
    pub fn request_start_ms(&self) -> Option<u64> {
        match self.request_start_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// The request in hand as `METHOD target` (cut at 96 bytes), for logs.
    pub fn request_line(&self) -> String {
        let mut buf = [0u8; REQUEST_LINE_WORDS * 8];
        let n = self.request_line_into(&mut buf);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Copies the request line into `out` without allocating (safe in a
    /// signal handler); returns its length.
    pub fn request_line_into(&self, out: &mut [u8; REQUEST_LINE_WORDS * 8]) -> usize {
        let mut n = 0;
        for word in &self.request_line {
            for b in word.load(Ordering::Relaxed).to_le_bytes() {
                if b == 0 {
                    return n;
                }
                out[n] = b;
                n += 1;
            }
        }
        n
    }

    /// Sets where a timeout may still answer 504 (-1: nowhere).
    #[inline]
    pub fn set_answer_fd(&self, fd: i32) {
        self.answer_fd.store(fd, Ordering::Relaxed);
    }

    /// Where a timeout may still answer 504 (-1: nowhere).
    pub fn answer_fd(&self) -> i32 {
        self.answer_fd.load(Ordering::Relaxed)
    }
}

/// Why a worker asked the master to replace it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RetireReason {
    /// It served `--max-requests` requests.
    MaxRequests = 1,
    /// Its memory passed `--max-worker-memory`.
    Memory = 2,
    /// One of its threads ran past `--timeout` (the others finish first).
    TimedOut = 3,
    /// The app panicked in a request (`--panic-policy retire`).
    Panicked = 4,
}

impl RetireReason {
    /// How the log says it.
    pub fn describe(self) -> &'static str {
        match self {
            RetireReason::MaxRequests => "it reached --max-requests",
            RetireReason::Memory => "its memory passed --max-worker-memory",
            RetireReason::TimedOut => "a request ran past --timeout",
            RetireReason::Panicked => "the app panicked (--panic-policy retire)",
        }
    }
}

impl Slot {
    /// Fills the slot for a new worker of `generation` with `threads`
    /// threads (master, before fork).
    fn claim(&self, generation: u32, threads: u32) {
        self.threads.store(threads, Ordering::Relaxed);
        self.pid.store(0, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Relaxed);
        self.retire.store(0, Ordering::Relaxed);
        self.stop.store(0, Ordering::Relaxed);
        self.take_turns.store(0, Ordering::Relaxed);
        for counter in self.statuses.iter().chain(&self.latency) {
            counter.store(0, Ordering::Relaxed);
        }
        self.latency_sum_us.store(0, Ordering::Relaxed);
        for word in &self.boot_error {
            word.store(0, Ordering::Relaxed);
        }
        self.accept_pauses.store(0, Ordering::Relaxed);
        self.pending_output.store(0, Ordering::Relaxed);
        self.held.store(0, Ordering::Relaxed);
        self.over_budget.store(0, Ordering::Relaxed);
        self.app_panics.store(0, Ordering::Relaxed);
        self.app_errors.store(0, Ordering::Relaxed);
        self.websockets.store(0, Ordering::Relaxed);
        self.websocket_in.store(0, Ordering::Relaxed);
        self.websocket_out.store(0, Ordering::Relaxed);
        self.rss_kib.store(0, Ordering::Relaxed);
        self.ready.store(0, Ordering::Relaxed);
        self.requests.store(0, Ordering::Relaxed);
        self.busy.store(0, Ordering::Relaxed);
        self.timed_out_lane.store(0, Ordering::Relaxed);
        let now = now_ms();
        self.spawned_ms.store(now, Ordering::Relaxed);
        self.heartbeat_ms.store(now, Ordering::Relaxed);
        self.state.store(State::Booting as u32, Ordering::Release);
    }

    /// Frees the slot (master, after reaping the worker).
    pub fn release(&self) {
        self.state.store(State::Free as u32, Ordering::Release);
        self.pid.store(0, Ordering::Relaxed);
    }

    /// Records the worker's pid (master, after fork).
    pub fn set_pid(&self, pid: i32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// The state.
    pub fn state(&self) -> State {
        State::from_u32(self.state.load(Ordering::Acquire))
    }

    /// Sets the state (worker).
    pub fn set_state(&self, state: State) {
        self.state.store(state as u32, Ordering::Release);
    }

    /// Marks the worker ready; returns milliseconds since its fork.
    pub fn mark_ready(&self) -> u64 {
        self.ready.store(1, Ordering::Release);
        self.last_active_ms.store(now_ms(), Ordering::Relaxed);
        self.set_state(State::Idle);
        now_ms().saturating_sub(self.spawned_ms.load(Ordering::Relaxed))
    }

    /// Records why the worker failed to boot (worker, just before it exits).
    pub fn set_boot_error(&self, message: &str) {
        let mut bytes = [0u8; BOOT_ERROR_WORDS * 8];
        // Cut on a character boundary, so the master reads valid UTF-8.
        let mut n = message.len().min(bytes.len());
        while !message.is_char_boundary(n) {
            n -= 1;
        }
        bytes[..n].copy_from_slice(&message.as_bytes()[..n]);
        for (word, chunk) in self.boot_error.iter().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            word.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
    }

    /// Why the worker failed to boot, if it said (master).
    pub fn boot_error(&self) -> Option<String> {
        let bytes: Vec<u8> = self
            .boot_error
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
            .take_while(|&b| b != 0)
            .collect();
        (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Whether the worker ever became ready.
    pub fn was_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) == 1
    }

    /// Monotonic milliseconds of the worker's last sign of life.
    pub fn heartbeat_ms(&self) -> u64 {
        self.heartbeat_ms.load(Ordering::Relaxed)
    }

    /// Records a sign of life (worker).
    pub fn heartbeat(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Marks the start, at `now_ms` (see [`now_ms`]), of a request in `lane`
    /// (worker), which records `METHOD target`, cut to fit; unless
    /// `show_query`, the target's query is stored as [`HIDDEN_QUERY`] (it
    /// may carry tokens, and /status shows this line). The worker is busy
    /// once every lane is.
    pub fn begin_request(
        &self,
        lane: &Lane,
        method: &[u8],
        target: &[u8],
        show_query: bool,
        now_ms: u64,
    ) {
        // `METHOD target`, cut to fit and zero-padded, stored a word at a time.
        let mut line = [0u8; REQUEST_LINE_WORDS * 8];
        let m = method.len().min(line.len());
        line[..m].copy_from_slice(&method[..m]);
        if m < line.len() {
            line[m] = b' ';
            let (path, hidden) = match memchr::memchr(b'?', target) {
                Some(q) if !show_query => (&target[..q], HIDDEN_QUERY),
                _ => (target, &b""[..]),
            };
            let mut at = m + 1;
            for part in [path, hidden] {
                let n = part.len().min(line.len() - at);
                line[at..at + n].copy_from_slice(&part[..n]);
                at += n;
            }
        }
        for (slot, word) in lane.request_line.iter().zip(line.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            slot.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        // 0 means "no request": a start at 0 ms would read as none.
        lane.request_start_ms
            .store(now_ms.max(1), Ordering::Relaxed);
        let busy = self.busy.fetch_add(1, Ordering::Relaxed) + 1;
        if busy >= self.threads() {
            // Only an idle worker turns busy: a stopping one stays stopping.
            let _ = self.state.compare_exchange(
                State::Idle as u32,
                State::Busy as u32,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Marks the end, at `now_ms`, of the request in `lane` (worker). Returns
    /// false if the request had been given up on (see [`Slot::abandon_request`]).
    pub fn end_request(&self, lane: &Lane, now_ms: u64) -> bool {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.end_call(lane, now_ms)
    }

    /// Marks the end, at `now_ms`, of a WebSocket event's call in `lane`
    /// (worker): as [`Slot::end_request`], but not counted as a request
    /// served (messages are counted apart, see
    /// [`Slot::count_websocket_message_in`]). Returns false if the call had
    /// been given up on.
    pub fn end_event(&self, lane: &Lane, now_ms: u64) -> bool {
        self.end_call(lane, now_ms)
    }

    /// The end of a call in `lane`: the worker was active at `now_ms`, and
    /// the lane is free (false if it had been given up on).
    fn end_call(&self, lane: &Lane, now_ms: u64) -> bool {
        self.last_active_ms.store(now_ms, Ordering::Relaxed);
        if lane.request_start_ms.swap(0, Ordering::Relaxed) == 0 {
            return false;
        }
        self.busy.fetch_sub(1, Ordering::Relaxed);
        let _ = self.state.compare_exchange(
            State::Busy as u32,
            State::Idle as u32,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        true
    }

    /// Gives up on a timed-out lane's request (worker): its thread may never
    /// return, and it no longer counts as busy.
    pub fn abandon_request(&self, lane: &Lane) {
        if lane.request_start_ms.swap(0, Ordering::Relaxed) != 0 {
            self.busy.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Handler threads the worker runs.
    pub fn threads(&self) -> u32 {
        self.threads.load(Ordering::Relaxed).max(1)
    }

    /// Lanes inside the app now.
    pub fn busy_lanes(&self) -> u32 {
        self.busy.load(Ordering::Relaxed)
    }

    /// Names the lane (0-based) past `--timeout` (master, before the signal).
    pub fn set_timed_out_lane(&self, lane: usize) {
        self.timed_out_lane
            .store(lane as u32 + 1, Ordering::Relaxed);
    }

    /// The lane (0-based) the master found past `--timeout`, if it named one.
    pub fn timed_out_lane(&self) -> Option<usize> {
        match self.timed_out_lane.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n as usize - 1),
        }
    }

    /// Counts a response by status class and how long it took (worker).
    pub fn record(&self, status: u16, micros: u64) {
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.statuses[class].fetch_add(1, Ordering::Relaxed);
        let seconds = micros as f64 / 1e6;
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts a call in which the app panicked (worker; any of its threads).
    pub fn count_app_panic(&self) {
        self.app_panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call in which the app returned an error (worker; any of its threads).
    pub fn count_app_error(&self) {
        self.app_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a WebSocket connection opened (worker; any of its threads).
    pub fn websocket_opened(&self) {
        self.websockets.fetch_add(1, Ordering::Relaxed);
    }

    /// Uncounts a WebSocket connection that closed.
    pub fn websocket_closed(&self) {
        self.websockets.fetch_sub(1, Ordering::Relaxed);
    }

    /// WebSocket connections open in the worker now.
    pub fn websockets(&self) -> u64 {
        self.websockets.load(Ordering::Relaxed)
    }

    /// Counts a WebSocket message received from a client.
    pub fn count_websocket_message_in(&self) {
        self.websocket_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a WebSocket message sent to a client.
    pub fn count_websocket_message_out(&self) {
        self.websocket_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a pause of accepting after `accept` failed for want of
    /// resources (worker; any of its threads).
    pub fn count_accept_pause(&self) {
        self.accept_pauses.fetch_add(1, Ordering::Relaxed);
    }

    /// How long the worker has been without a request, in milliseconds.
    pub fn idle_ms(&self) -> u64 {
        now_ms().saturating_sub(self.last_active_ms.load(Ordering::Relaxed))
    }

    /// The worker's pid.
    pub fn pid(&self) -> i32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// The generation the worker runs.
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Marks the worker as asked to stop (master, before the signal).
    pub fn request_stop(&self) {
        self.stop.store(STOP_WORKER, Ordering::Release);
    }

    /// Marks the worker as asked to stop because the server stops (master,
    /// before the signal): its listener copies are among the last, so it
    /// takes what waits in their accept queues before it closes them.
    pub fn request_server_stop(&self) {
        self.stop.store(STOP_SERVER, Ordering::Release);
    }

    /// Asks the worker to take turns with the others at the listeners, or
    /// not (master). With `EPOLLEXCLUSIVE`, a connection wakes the first
    /// idle worker in the order they started waiting, so under light load
    /// the workers that started first (a canary's old generation) take
    /// nearly every connection; taking turns shares them out.
    pub fn set_take_turns(&self, on: bool) {
        self.take_turns.store(u32::from(on), Ordering::Relaxed);
    }

    /// Whether the worker should take turns at the listeners.
    #[inline]
    pub fn take_turns(&self) -> bool {
        self.take_turns.load(Ordering::Relaxed) != 0
    }

    /// Whether the master asked the worker to stop because the server stops.
    pub fn server_stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire) == STOP_SERVER
    }

    /// Whether the master asked the worker to stop.
    #[inline]
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed) != 0
    }

    /// Asks the master to replace this worker (worker).
    pub fn request_retire(&self, reason: RetireReason) {
        self.retire.store(reason as u32, Ordering::Release);
    }

    /// Whether, and why, the worker asked to be replaced.
    pub fn retire_requested(&self) -> Option<RetireReason> {
        match self.retire.load(Ordering::Acquire) {
            1 => Some(RetireReason::MaxRequests),
            2 => Some(RetireReason::Memory),
            3 => Some(RetireReason::TimedOut),
            4 => Some(RetireReason::Panicked),
            _ => None,
        }
    }

    /// Records the worker's resident memory (worker).
    pub fn set_rss_kib(&self, kib: u64) {
        self.rss_kib.store(kib, Ordering::Relaxed);
    }

    /// The worker's resident memory as last measured, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.rss_kib.load(Ordering::Relaxed)
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Takes `bytes` of the worker's pending-output budget, of `max` bytes in
    /// all, for a response handed to the event loop (worker; any thread).
    /// False, and nothing taken, if they do not fit; the response is then
    /// counted as over budget.
    pub fn hold_output(&self, bytes: u64, max: u64) -> bool {
        let before = self.pending_output.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > max {
            self.pending_output.fetch_sub(bytes, Ordering::Relaxed);
            self.over_budget.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Counts a response whose rest is larger than one connection may hold
    /// (worker): written as the client takes it, the worker waiting.
    pub fn note_over_budget(&self) {
        self.over_budget.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives back `bytes` taken by [`Slot::hold_output`] (worker).
    pub fn release_output(&self, bytes: u64) {
        if bytes > 0 {
            self.pending_output.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Response bytes the worker holds for slow readers now.
    pub fn pending_output(&self) -> u64 {
        self.pending_output.load(Ordering::Relaxed)
    }
}

/// The shared table: `len` slots, then `lanes` lanes for each.
///
/// A handle to a mapping that is never unmapped (it lives as long as the
/// master and every child forked from it): copies share it, which is how a
/// worker owns its view of the table after fork.
#[derive(Clone)]
pub struct Scoreboard {
    slots: NonNull<Slot>,
    len: usize,
    lanes: NonNull<Lane>,
    lanes_per_slot: usize,
}

// SAFETY: the mapping is shared memory of atomics, never unmapped while a
// `Scoreboard` exists; every access goes through the atomics, so the
// pointers may move to and be shared between threads.
unsafe impl Send for Scoreboard {}
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    /// Maps a zeroed table of `len` slots of `lanes` lanes each, shared with
    /// every child forked later.
    pub fn new(len: usize, lanes: usize) -> nix::Result<Scoreboard> {
        let len = len.max(1);
        let lanes_per_slot = lanes.max(1);
        let slot_bytes = len * std::mem::size_of::<Slot>();
        // Lanes start on their own alignment after the slots.
        let align = std::mem::align_of::<Lane>();
        let lanes_at = slot_bytes.div_ceil(align) * align;
        let bytes =
            NonZeroUsize::new(lanes_at + len * lanes_per_slot * std::mem::size_of::<Lane>())
                .ok_or(nix::Error::EINVAL)?;
        // SAFETY: a fresh anonymous mapping; zeroed memory is a valid Slot
        // and a valid Lane (all atomics 0).
        let ptr = unsafe {
            mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        // SAFETY: lanes_at is inside the mapping and aligned for Lane.
        let lanes = unsafe { NonNull::new_unchecked(ptr.as_ptr().cast::<u8>().add(lanes_at)) };
        Ok(Scoreboard {
            slots: ptr.cast(),
            len,
            lanes: lanes.cast(),
            lanes_per_slot,
        })
    }

    /// Slot `index` (0-based); `None` when out of range.
    pub fn slot(&self, index: usize) -> Option<&Slot> {
        // SAFETY: in range of the mapping, which lives as long as self.
        (index < self.len).then(|| unsafe { &*self.slots.as_ptr().add(index) })
    }

    /// The lanes of slot `index` the worker there uses (empty when out of range).
    pub fn lanes(&self, index: usize) -> &[Lane] {
        let Some(slot) = self.slot(index) else {
            return &[];
        };
        let used = (slot.threads() as usize).min(self.lanes_per_slot);
        // SAFETY: in range of the mapping, which lives as long as self.
        unsafe {
            std::slice::from_raw_parts(self.lanes.as_ptr().add(index * self.lanes_per_slot), used)
        }
    }

    /// The longest-running request of the worker in slot `index`: its lane
    /// and when it started.
    pub fn oldest_request(&self, index: usize) -> Option<(usize, u64)> {
        self.lanes(index)
            .iter()
            .enumerate()
            .filter_map(|(i, lane)| lane.request_start_ms().map(|start| (i, start)))
            .min_by_key(|&(_, start)| start)
    }

    /// Lane `lane` of slot `index`.
    pub fn lane(&self, index: usize, lane: usize) -> Option<&Lane> {
        self.lanes(index).get(lane)
    }

    /// Fills slot `index` and its lanes for a new worker of `generation`
    /// with `threads` threads (master, before fork).
    pub fn claim(&self, index: usize, generation: u32, threads: u32) -> Option<&Slot> {
        let slot = self.slot(index)?;
        slot.claim(generation, threads.clamp(1, self.lanes_per_slot as u32));
        for lane in self.lanes(index) {
            lane.request_start_ms.store(0, Ordering::Relaxed);
            lane.answer_fd.store(-1, Ordering::Relaxed);
        }
        Some(slot)
    }

    /// Whether a worker other than the one in slot `except` is ready and idle.
    pub fn any_idle_except(&self, except: usize) -> bool {
        (0..self.len).any(|i| {
            i != except
                && self
                    .slot(i)
                    .is_some_and(|s| s.state() == State::Idle && s.was_ready())
        })
    }

    /// The index of a free slot, if any.
    pub fn free_index(&self) -> Option<usize> {
        (0..self.len).find(|&i| self.slot(i).is_some_and(|s| s.state() == State::Free))
    }
}

/// Turns [`Instant`]s into scoreboard milliseconds ([`now_ms`]) without
/// reading the clock again: both are `CLOCK_MONOTONIC`, so an instant's
/// distance from a common base gives its milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct MsClock {
    base: Instant,
    base_ms: u64,
}

impl MsClock {
    /// A clock based at this moment.
    pub fn new() -> MsClock {
        MsClock {
            base: Instant::now(),
            base_ms: now_ms(),
        }
    }

    /// The scoreboard milliseconds of `at`.
    pub fn ms(&self, at: Instant) -> u64 {
        self.base_ms + at.saturating_duration_since(self.base).as_millis() as u64
    }
}

impl Default for MsClock {
    fn default() -> Self {
        MsClock::new()
    }
}

/// Monotonic milliseconds, comparable across processes of one boot.
pub fn now_ms() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_line_is_stored_cut_to_fit() {
        let board = Scoreboard::new(1, 1).expect("a scoreboard");
        let (slot, lane) = (board.slot(0).unwrap(), board.lane(0, 0).unwrap());
        slot.begin_request(lane, b"GET", b"/a?b=1", true, 5);
        assert_eq!(lane.request_line(), "GET /a?b=1");
        assert_eq!(lane.request_start_ms(), Some(5));
        assert!(slot.end_request(lane, 6));
        // A shorter line after a longer one leaves nothing of it behind.
        let long = vec![b'x'; 200];
        slot.begin_request(lane, b"POST", &long, true, 7);
        let line = lane.request_line();
        assert_eq!(line.len(), REQUEST_LINE_WORDS * 8);
        assert_eq!(&line[..6], "POST x");
        slot.end_request(lane, 8);
        slot.begin_request(lane, b"GET", b"/", false, 9);
        assert_eq!(lane.request_line(), "GET /");
        // A method that fills the line leaves no room for the target.
        let method = vec![b'M'; REQUEST_LINE_WORDS * 8 + 3];
        slot.begin_request(lane, &method, b"/", false, 10);
        assert_eq!(lane.request_line(), "M".repeat(REQUEST_LINE_WORDS * 8));
        slot.end_request(lane, 11);
    }

    #[test]
    fn websocket_events_are_not_requests_served() {
        let board = Scoreboard::new(1, 1).expect("a scoreboard");
        let (slot, lane) = (board.slot(0).unwrap(), board.lane(0, 0).unwrap());
        slot.begin_request(lane, b"GET", b"/ws", true, 5);
        assert!(slot.end_request(lane, 6));
        slot.begin_request(lane, b"WS", b"message", false, 7);
        assert_eq!(lane.request_start_ms(), Some(7));
        assert!(slot.end_event(lane, 8));
        assert_eq!(lane.request_start_ms(), None);
        assert_eq!(slot.requests(), 1);
        assert_eq!(slot.busy_lanes(), 0);
    }

    #[test]
    fn the_query_is_hidden_unless_asked_for() {
        let board = Scoreboard::new(1, 1).expect("a scoreboard");
        let (slot, lane) = (board.slot(0).unwrap(), board.lane(0, 0).unwrap());
        slot.begin_request(lane, b"GET", b"/login?token=secret&x=1", false, 5);
        assert_eq!(lane.request_line(), "GET /login?…");
        slot.end_request(lane, 6);
        slot.begin_request(lane, b"GET", b"/login?token=secret", true, 7);
        assert_eq!(lane.request_line(), "GET /login?token=secret");
        slot.end_request(lane, 8);
        slot.begin_request(lane, b"GET", b"/plain", false, 9);
        assert_eq!(lane.request_line(), "GET /plain");
        slot.end_request(lane, 10);
        // A long path leaves no room for the marker: it is cut, the query never shows.
        let long = format!("/{}?token=secret", "p".repeat(REQUEST_LINE_WORDS * 8));
        slot.begin_request(lane, b"GET", long.as_bytes(), false, 11);
        assert!(!lane.request_line().contains("secret"));
    }

    #[test]
    fn a_server_stop_is_a_stop_and_a_retirement_is_not_a_server_stop() {
        let board = Scoreboard::new(2, 1).expect("a scoreboard");
        let (retiring, stopping) = (board.slot(0).unwrap(), board.slot(1).unwrap());
        assert!(!retiring.stop_requested() && !retiring.server_stopping());
        retiring.request_stop();
        stopping.request_server_stop();
        assert!(retiring.stop_requested() && !retiring.server_stopping());
        assert!(stopping.stop_requested() && stopping.server_stopping());
    }

    #[test]
    fn a_boot_error_is_kept_cut_on_a_character() {
        let board = Scoreboard::new(1, 1).expect("a scoreboard");
        let slot = board.slot(0).unwrap();
        assert_eq!(slot.boot_error(), None);
        slot.set_boot_error("init failed: no database");
        assert_eq!(
            slot.boot_error().as_deref(),
            Some("init failed: no database")
        );
        let long = "é".repeat(BOOT_ERROR_WORDS * 8);
        slot.set_boot_error(&long);
        let kept = slot.boot_error().unwrap();
        assert!(kept.len() > 100);
        assert!(kept.len() <= BOOT_ERROR_WORDS * 8 && kept.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_pending_output_budget_is_taken_and_given_back() {
        let board = Scoreboard::new(1, 1).expect("a scoreboard");
        let slot = board.slot(0).unwrap();
        assert!(slot.hold_output(60, 100));
        assert!(!slot.hold_output(41, 100), "past the worker's budget");
        assert_eq!(slot.pending_output(), 60, "a refused hold takes nothing");
        assert!(slot.hold_output(40, 100), "up to the budget exactly");
        slot.release_output(60);
        slot.note_over_budget();
        assert_eq!(slot.pending_output(), 40);
        let mut totals = RequestTotals::default();
        totals.add(slot);
        assert_eq!((totals.held, totals.over_budget), (2, 2));
    }
}
