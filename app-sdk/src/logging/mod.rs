//! Logging through the host: an app's records go to the host's error log,
//! with the host's timestamp, pid, level filter and worker number, and the
//! id of the request being handled on the thread that logged.
//!
//! Why: the app library has its own copy of the `log` and `tracing` crates,
//! with no logger of its own, so without this its records go nowhere (or,
//! printed to stderr, arrive as untyped INFO lines with two timestamps).
//! Everything here sits on the SDK's side of the frozen ABI: it only calls
//! [`HostFns::log`](crate::abi::HostFns::log) with a [`LogRecord`].
//!
//! - [`log()`](crate::log) (always there): one record from plain text.
//! - feature `log`: a [`log::Log`] the SDK installs at the first `init` in
//!   the process (unless the app installed one already).
//! - feature `tracing`: a global default subscriber, installed the same way.
//!
//! The request id is a thread-local pointer to the id the host passed for
//! the `handle` call running on this thread (kept with the rest of the
//! call's state in `export`): set before the call, restored after it, never
//! allocated. A thread the app started logs with an empty id.

use std::io::Write;

use abi_stable::std_types::RStr;

use crate::abi::{size_u32, LogLevel, LogRecord};

#[cfg(feature = "log")]
mod log_crate;
#[cfg(feature = "tracing")]
mod tracing_subscriber;

/// How important a log record is: the `log` crate's levels and numbering
/// (what [`LogRecord::level`] carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum Level {
    /// Something failed.
    Error = 1,
    /// Something looks wrong.
    Warn = 2,
    /// Normal operation worth noting.
    Info = 3,
    /// Detail for debugging.
    Debug = 4,
    /// Very fine detail.
    Trace = 5,
}

impl Level {
    /// The level's number in the ABI ([`LogLevel`]: 1 error … 5 trace).
    pub const fn as_abi(self) -> LogLevel {
        self as LogLevel
    }
}

pub(crate) use crate::export::with_current_request_id;

/// Whether a record at `level` would be written: the host's `--log-level`
/// lets it through (outside a host, every level is).
pub fn log_enabled(level: Level) -> bool {
    match crate::export::host() {
        Some(host) => level.as_abi() <= host.max_log_level,
        None => true,
    }
}

/// Writes one record to the host's error log at `level`, naming `target`
/// (a module path, say) and the request being handled on this thread.
///
/// The host adds the time, its pid, the level and the worker number, and
/// drops the record when `--log-level` is less verbose than `level`; the
/// line reads `[time] [pid] [ERROR] worker 3: app my_app::db: connection
/// refused (request 5f2c…)`. It needs no feature: it is what the `log`
/// and `tracing` features use underneath. Before the first `init` (in an
/// app's unit tests, say) the record goes to standard error instead.
///
/// ```
/// app_sdk::log(app_sdk::Level::Warn, "my_app::cache", "cache miss storm");
/// ```
pub fn log(level: Level, target: &str, message: &str) {
    let Some(host) = crate::export::host() else {
        let _ = writeln!(std::io::stderr().lock(), "[{level:?}] {target}: {message}");
        return;
    };
    if level.as_abi() > host.max_log_level {
        return;
    }
    with_current_request_id(|request_id| {
        let record = LogRecord {
            size: size_u32::<LogRecord<'_>>(),
            level: level.as_abi(),
            target: RStr::from_str(target),
            message: RStr::from_str(message),
            request_id: RStr::from_str(request_id),
        };
        // SAFETY: `record` is a live, size-prefixed LogRecord for the call
        // (`HostFns::log`'s contract); the host may be called from any thread.
        unsafe { (host.log)(&record) }
    });
}

/// Installs the SDK's `log` logger and `tracing` subscriber (those of the
/// features that are on) unless the app installed its own; at most once
/// per process. `max` is the host's most verbose level.
#[cfg_attr(
    not(any(feature = "log", feature = "tracing")),
    allow(unused_variables)
)]
pub(crate) fn install(max: LogLevel) {
    #[cfg(any(feature = "log", feature = "tracing"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            #[cfg(feature = "log")]
            log_crate::install(max);
            #[cfg(feature = "tracing")]
            tracing_subscriber::install(max);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `in_call` for a request whose id is `id`.
    fn with_request_id<T>(id: &str, f: impl FnOnce() -> T) -> T {
        let id = RStr::from_str(id);
        crate::export::in_call(&id, f).unwrap_or_else(|m| std::panic::panic_any(m))
    }

    #[test]
    fn the_request_id_is_set_for_the_call_and_restored_after() {
        assert_eq!(with_current_request_id(str::to_owned), "");
        let id = String::from("r-1");
        let seen = with_request_id(&id, || {
            let inner = with_request_id("r-2", || with_current_request_id(str::to_owned));
            (inner, with_current_request_id(str::to_owned))
        });
        assert_eq!(seen, ("r-2".to_owned(), "r-1".to_owned()));
        assert_eq!(with_current_request_id(str::to_owned), "");
        // Another thread has its own (empty) id.
        with_request_id("r-3", || {
            let other = std::thread::spawn(|| with_current_request_id(str::to_owned));
            assert_eq!(other.join().unwrap(), "");
        });
    }

    #[test]
    fn an_unwinding_call_still_restores_the_id() {
        let caught = std::panic::catch_unwind(|| with_request_id("r-4", || panic!("boom")));
        assert!(caught.is_err());
        assert_eq!(with_current_request_id(str::to_owned), "");
    }

    #[test]
    fn levels_are_numbered_as_the_abi_says() {
        let all = [
            Level::Error,
            Level::Warn,
            Level::Info,
            Level::Debug,
            Level::Trace,
        ];
        assert_eq!(all.map(Level::as_abi), [1, 2, 3, 4, 5]);
    }
}
