//! The scoreboard: a table in shared memory, one slot per worker.
//!
//! The master maps it before forking, so every worker writes its own slot and
//! the master reads them all without a system call: state, boot and heartbeat
//! times, the start of the request in hand, requests served. Plain atomics,
//! no locks: each slot has one writer (its worker) once the master filled it in.

use std::{
    num::NonZeroUsize,
    ptr::NonNull,
    sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering},
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
    /// Serving, waiting for a request.
    Idle = 2,
    /// Inside the app's handler.
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
    /// Monotonic milliseconds when the request in hand started (0: none).
    request_start_ms: AtomicU64,
    /// Requests served.
    requests: AtomicU64,
    /// Monotonic milliseconds when the worker last finished a request (or became ready).
    last_active_ms: AtomicU64,
    /// The build generation the worker runs.
    generation: AtomicU32,
    /// Set by the master just before it asks the worker to stop gracefully,
    /// so the response in progress already says `Connection: close`.
    stop: AtomicU32,
    /// Why the worker asked to be replaced ([`RetireReason`] as a number; 0: it did not).
    retire: AtomicU32,
    /// Resident memory in KiB, as last measured by the worker.
    rss_kib: AtomicU64,
    /// The start of the request in hand (`METHOD target`), NUL-padded, for the master's logs.
    request_line: [AtomicU64; REQUEST_LINE_WORDS],
    /// Responses by status class (1xx to 5xx).
    statuses: [AtomicU64; 5],
    /// Request durations: counts per bucket of [`LATENCY_BUCKETS`] (the last is +Inf).
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of request durations, in microseconds.
    latency_sum_us: AtomicU64,
}

/// Upper bounds of the request-duration histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
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
    }
}

/// Words of [`Slot::request_line`] (8 bytes each).
pub const REQUEST_LINE_WORDS: usize = 12;

/// Why a worker asked the master to replace it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RetireReason {
    /// It served `--max-requests` requests.
    MaxRequests = 1,
    /// Its memory passed `--max-worker-memory`.
    Memory = 2,
}

impl RetireReason {
    /// How the log says it.
    pub fn describe(self) -> &'static str {
        match self {
            RetireReason::MaxRequests => "it reached --max-requests",
            RetireReason::Memory => "its memory passed --max-worker-memory",
        }
    }
}

impl Slot {
    /// Fills the slot for a new worker of `generation` (master, before fork).
    pub fn claim(&self, generation: u32) {
        self.pid.store(0, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Relaxed);
        self.retire.store(0, Ordering::Relaxed);
        self.stop.store(0, Ordering::Relaxed);
        for counter in self.statuses.iter().chain(&self.latency) {
            counter.store(0, Ordering::Relaxed);
        }
        self.latency_sum_us.store(0, Ordering::Relaxed);
        self.rss_kib.store(0, Ordering::Relaxed);
        self.ready.store(0, Ordering::Relaxed);
        self.requests.store(0, Ordering::Relaxed);
        self.request_start_ms.store(0, Ordering::Relaxed);
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

    /// Marks the start of a request (worker); `line` is `METHOD target`, cut to fit.
    pub fn begin_request(&self, method: &[u8], target: &[u8]) {
        let mut words = [0u64; REQUEST_LINE_WORDS];
        let bytes = method
            .iter()
            .chain(b" ")
            .chain(target)
            .take(REQUEST_LINE_WORDS * 8);
        for (i, &b) in bytes.enumerate() {
            words[i / 8] |= (b as u64) << ((i % 8) * 8);
        }
        for (slot, word) in self.request_line.iter().zip(words) {
            slot.store(word, Ordering::Relaxed);
        }
        self.request_start_ms.store(now_ms(), Ordering::Relaxed);
        self.state.store(State::Busy as u32, Ordering::Relaxed);
    }

    /// Marks the end of a request (worker).
    pub fn end_request(&self) {
        self.request_start_ms.store(0, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.last_active_ms.store(now_ms(), Ordering::Relaxed);
        self.state.store(State::Idle as u32, Ordering::Relaxed);
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

    /// Marks the worker as asked to stop (master, before the signal).
    pub fn request_stop(&self) {
        self.stop.store(1, Ordering::Release);
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

    /// When the request in hand started, if there is one.
    pub fn request_start_ms(&self) -> Option<u64> {
        match self.request_start_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }
}

/// The shared table.
pub struct Scoreboard {
    slots: NonNull<Slot>,
    len: usize,
}

// The mapping is shared memory of atomics; every access goes through them.
unsafe impl Send for Scoreboard {}
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    /// Maps a zeroed table of `len` slots shared with every child forked later.
    pub fn new(len: usize) -> nix::Result<Scoreboard> {
        let bytes = NonZeroUsize::new(len.max(1) * std::mem::size_of::<Slot>())
            .ok_or(nix::Error::EINVAL)?;
        // SAFETY: a fresh anonymous mapping; zeroed memory is a valid Slot (all atomics 0).
        let ptr = unsafe {
            mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        Ok(Scoreboard {
            slots: ptr.cast(),
            len: len.max(1),
        })
    }

    /// Slot `index` (0-based); `None` when out of range.
    pub fn slot(&self, index: usize) -> Option<&Slot> {
        // SAFETY: in range of the mapping, which lives as long as self.
        (index < self.len).then(|| unsafe { &*self.slots.as_ptr().add(index) })
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

/// Monotonic milliseconds, comparable across processes of one boot.
pub fn now_ms() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000,
        Err(_) => 0,
    }
}
