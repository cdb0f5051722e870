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

/// The environment variable that names the fault and its switch file.
pub const FAULT_ENV: &str = "HOST_FAULT";

/// A worker panics in host code right after the fork.
pub const WORKER_PANIC: &str = "worker-panic";

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
