//! Fault injection for tests, compiled only into debug builds.
//!
//! Some defects only show when host code fails where it normally cannot, such
//! as a panic in a freshly forked worker. `HOST_FAULT=<fault>:<path>` in the
//! master's environment makes the named fault happen while the file at
//! `<path>` exists, so a test can switch it on and off while the server runs.
//! Release builds contain none of this.
//!
//! Faults:
//! - `worker-panic`: a forked worker panics in host code before it runs
//!   [`crate::worker::run`] (the master must go on spawning good workers).
//! - `unix-bind-pause`: the master, binding a `unix:` address, logs
//!   `fault unix-bind-pause: paused after binding <path>` right after the
//!   socket is bound and before its mode and owner are set, and waits there
//!   until the switch file is removed (at most [`PAUSE_LIMIT`]): a test can
//!   then swap the socket's path for a symlink inside that window, which is
//!   otherwise a few microseconds wide.
//! - `worker-signals-pause`: a forked worker logs `fault
//!   worker-signals-pause: paused before the worker's signalfd exists` after
//!   its signal dispositions are reset and waits until the switch file is
//!   removed: a test can send the master `TERM` inside that window (the
//!   worker must not die of it by the default action).

/// The environment variable that names the fault and its switch file.
pub const FAULT_ENV: &str = "HOST_FAULT";

/// A worker panics in host code right after the fork.
pub const WORKER_PANIC: &str = "worker-panic";

/// A Unix listener pauses between `bind` and setting its mode and owner.
pub const UNIX_BIND_PAUSE: &str = "unix-bind-pause";

/// A forked worker pauses between resetting its signals and creating its signalfd.
pub const WORKER_SIGNALS_PAUSE: &str = "worker-signals-pause";

/// The longest a pausing fault waits for its switch file to go.
pub const PAUSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether `fault` is switched on: named in `HOST_FAULT` and its file exists.
pub fn active(fault: &str) -> bool {
    std::env::var(FAULT_ENV).ok().is_some_and(|value| {
        value
            .split_once(':')
            .is_some_and(|(name, path)| name == fault && std::path::Path::new(path).exists())
    })
}

/// Panics if `fault` is switched on (see the module docs).
pub fn inject(fault: &str) {
    if active(fault) {
        panic!("injected fault {fault} ({FAULT_ENV})");
    }
}

/// If `fault` is switched on: logs that it pauses `at` and waits until its
/// switch file is removed (or [`PAUSE_LIMIT`] passed). Called from a single
/// thread: the master's at start-up, or a forked worker's before it loads
/// the app.
pub fn pause(fault: &str, at: &str) {
    if !active(fault) {
        return;
    }
    log::info!("fault {fault}: paused {at}");
    let deadline = std::time::Instant::now() + PAUSE_LIMIT;
    while active(fault) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
