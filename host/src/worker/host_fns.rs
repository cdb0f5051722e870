//! The host functions an app calls, and the context they act on.
//!
//! An app receives the host's [`HostFns`] table once, at `init` ([`table`]),
//! and for each request an opaque [`HostCtx`] that [`host_ctx`] makes,
//! pointing at the worker's [`Exchange`]. Each request function finds the
//! exchange behind the context and turns the result into the ABI's
//! [`IoResult`]. Making the context is the one place the host vouches for
//! it. `log` needs no context: an app may log from any thread at any time.

use std::{
    ffi::c_void,
    fmt,
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
};

use abi_stable::std_types::{RResult, RSlice, RSliceMut, RStr, RString};
use app_sdk::abi::{
    read_table, size_u32, HostCtx, HostFns, IoResult, LogLevel, LogRecord, ABI_LINE, ABI_REVISION,
    LOG_RECORD_MIN, PROVIDES, SDK_VERSION,
};

use crate::{websocket::port::Port, worker::exchange::Exchange};

/// The low bit of a context that points at a loop's WebSocket [`Port`] (an
/// event call's) rather than an [`Exchange`] (a request's): both are at
/// least 8-byte aligned, so the bit is free.
const EVENT_TAG: usize = 1;

/// The context of one call of the app, acting on `ex`.
///
/// The exchange stays mutably borrowed while the returned value lives, so
/// the host cannot touch it while the app may.
#[inline]
pub fn host_ctx<'a>(ex: &'a mut Exchange<'_>) -> HostCtx<'a> {
    // SAFETY: the pointer is `ex`, exclusively borrowed for 'a, so it stays
    // alive and untouched by anything but the table's functions, which take
    // exactly such a pointer; the app calls them from this thread (the one
    // running its `handle`), one at a time.
    unsafe { HostCtx::new(ex as *mut Exchange<'_> as *mut c_void) }
}

/// The context of one WebSocket event call, acting on the loop's `port`
/// (only [`HostFns::websocket_send`] takes it).
#[inline]
pub fn event_ctx<'a>(port: &'a mut Port) -> HostCtx<'a> {
    let tagged = (port as *mut Port as usize) | EVENT_TAG;
    // SAFETY: as in `host_ctx`: `port` is exclusively borrowed for 'a; the
    // tag tells `websocket_send` it is a port, and the app passes an event
    // call's context to no other function (the SDK's `EventIo` offers none).
    unsafe { HostCtx::new(tagged as *mut c_void) }
}

/// The host's table, made once per process (with the log level it runs at).
pub fn table() -> &'static HostFns {
    static TABLE: OnceLock<HostFns> = OnceLock::new();
    TABLE.get_or_init(|| HostFns {
        size: size_u32::<HostFns>(),
        abi_line: ABI_LINE,
        abi_revision: ABI_REVISION,
        provides: PROVIDES,
        sdk_version: RStr::from_str(SDK_VERSION),
        max_log_level: log::max_level() as LogLevel,
        _reserved: 0,
        read_body,
        set_status,
        add_header,
        send_body,
        write_chunk,
        send_file,
        log: app_log,
        websocket_accept: Some(websocket_accept),
        websocket_send: Some(websocket_send),
        upgrade: Some(upgrade),
    })
}

/// The exchange behind a context pointer.
///
/// # Safety
/// `ctx` was made by [`host_ctx`] for the call in progress, on this thread,
/// and no other reference to the exchange is in use while the result is.
unsafe fn exchange<'x>(ctx: HostCtx<'_>) -> &'x mut Exchange<'x> {
    // SAFETY: per the contract above, the worker's Exchange outlives the app
    // call and nothing else uses it during the call.
    unsafe { &mut *(ctx.as_ptr() as *mut Exchange<'x>) }
}

fn to_abi(result: Result<usize, String>) -> IoResult {
    match result {
        Ok(n) => RResult::ROk(n),
        Err(e) => RResult::RErr(RString::from(e)),
    }
}

/// # Safety
/// [`HostFns`]'s contract: `ctx` was made by [`host_ctx`] for the call in progress.
unsafe extern "C" fn read_body(ctx: HostCtx<'_>, buf: RSliceMut<'_, u8>) -> IoResult {
    // SAFETY: this function's contract is `exchange`'s.
    let ex = unsafe { exchange(ctx) };
    let mut buf = buf;
    to_abi(ex.read_body(buf.as_mut_slice(), true))
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn set_status(ctx: HostCtx<'_>, status: u16) -> IoResult {
    // SAFETY: this function's contract is `exchange`'s.
    to_abi(unsafe { exchange(ctx) }.set_status(status).map(|()| 0))
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn add_header(
    ctx: HostCtx<'_>,
    name: RSlice<'_, u8>,
    value: RSlice<'_, u8>,
) -> IoResult {
    // SAFETY: this function's contract is `exchange`'s.
    let ex = unsafe { exchange(ctx) };
    to_abi(ex.add_header(name.as_slice(), value.as_slice()).map(|()| 0))
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn send_body(ctx: HostCtx<'_>, body: RSlice<'_, u8>) -> IoResult {
    // SAFETY: this function's contract is `exchange`'s.
    to_abi(unsafe { exchange(ctx) }.send_body(body.as_slice()))
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn write_chunk(ctx: HostCtx<'_>, data: RSlice<'_, u8>) -> IoResult {
    // SAFETY: this function's contract is `exchange`'s.
    to_abi(unsafe { exchange(ctx) }.write_chunk(data.as_slice()))
}

/// # Safety
/// As for [`read_body`]; `fd` is open for the whole call (the app lends it).
unsafe extern "C" fn send_file(ctx: HostCtx<'_>, fd: i32, offset: u64, len: u64) -> IoResult {
    // SAFETY: this function's contract is `exchange`'s.
    to_abi(unsafe { exchange(ctx) }.send_file(fd, offset, len))
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn websocket_accept(ctx: HostCtx<'_>, protocol: RSlice<'_, u8>) -> IoResult {
    if ctx.as_ptr() as usize & EVENT_TAG != 0 {
        return to_abi(Err("accept_websocket outside handle".into()));
    }
    // SAFETY: this function's contract is `exchange`'s (the context is a request's).
    to_abi(unsafe { exchange(ctx) }.websocket_accept(protocol.as_slice()))
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn upgrade(ctx: HostCtx<'_>, protocol: RSlice<'_, u8>) -> IoResult {
    if ctx.as_ptr() as usize & EVENT_TAG != 0 {
        return to_abi(Err("upgrade outside handle".into()));
    }
    // SAFETY: this function's contract is `exchange`'s (the context is a request's).
    to_abi(unsafe { exchange(ctx) }.upgrade(protocol.as_slice()))
}

/// # Safety
/// As for [`read_body`], or `ctx` was made by [`event_ctx`] for the event
/// call in progress.
unsafe extern "C" fn websocket_send(
    ctx: HostCtx<'_>,
    ids: RSlice<'_, u64>,
    kind: u32,
    data: RSlice<'_, u8>,
) -> IoResult {
    let ptr = ctx.as_ptr() as usize;
    let result = if ptr & EVENT_TAG != 0 {
        // SAFETY: a tagged context was made by `event_ctx` from the loop's
        // port, exclusively borrowed for the call in progress on this thread.
        let port = unsafe { &mut *((ptr & !EVENT_TAG) as *mut Port) };
        port.send(ids.as_slice(), kind, data.as_slice())
    } else {
        // SAFETY: this function's contract is `exchange`'s.
        unsafe { exchange(ctx) }.websocket_send(ids.as_slice(), kind, data.as_slice())
    };
    to_abi(result)
}

/// Who this process is in an app's log lines: a worker's number (1-based),
/// or [`PROBE`]. Set once, at the start of the worker or probe, after fork
/// (the master never runs app code, so never logs an app's record).
static LOG_AS: AtomicU32 = AtomicU32::new(PROBE);

/// [`LOG_AS`] in the probe: `0`, as the probe's `WorkerInfo::worker_id`.
pub const PROBE: u32 = 0;

/// Longest app log message written whole, in bytes; the rest is cut (and
/// the line says how much), so one record stays one bounded line.
pub const MAX_APP_LOG_MESSAGE: usize = 16 * 1024;

/// Tags this process's app log lines with worker `id` ([`PROBE`] in the probe).
pub fn set_log_identity(id: u32) {
    LOG_AS.store(id, Ordering::Relaxed);
}

/// Writes an app's log record to the error log, at its level, after the
/// host's own filter: `worker 3: app my_app::db: connection refused
/// (request 5f2c…)` (`probe: app …` in the probe).
///
/// # Safety
/// `record` points at a live, size-prefixed [`LogRecord`].
unsafe extern "C" fn app_log(record: *const LogRecord<'_>) {
    // SAFETY: per the contract; every field past the minimum is valid zero.
    let Some(record) = (unsafe { read_table(record, LOG_RECORD_MIN) }) else {
        return;
    };
    let level = match record.level {
        0 => return,
        1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        _ => log::Level::Trace,
    };
    if level > log::max_level() {
        return;
    }
    let line = AppLine {
        worker: LOG_AS.load(Ordering::Relaxed),
        target: record.target.as_str(),
        message: record.message.as_str(),
        request_id: record.request_id.as_str(),
    };
    log::log!(level, "{line}");
}

/// The text of an app's log line after the host's `[time] [pid] [LEVEL]`.
/// Control characters are escaped (`\n`), so a record is one line and an
/// app cannot forge a line of the host's.
struct AppLine<'a> {
    worker: u32,
    target: &'a str,
    message: &'a str,
    request_id: &'a str,
}

impl fmt::Display for AppLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.worker {
            PROBE => f.write_str("probe: app")?,
            id => write!(f, "worker {id}: app")?,
        }
        if !self.target.is_empty() {
            write!(f, " {}", Escaped(self.target))?;
        }
        let message = match self.message.len() {
            n if n <= MAX_APP_LOG_MESSAGE => self.message,
            _ => {
                let mut end = MAX_APP_LOG_MESSAGE;
                while !self.message.is_char_boundary(end) {
                    end -= 1;
                }
                &self.message[..end]
            }
        };
        write!(f, ": {}", Escaped(message))?;
        if message.len() < self.message.len() {
            write!(f, "… ({} bytes cut)", self.message.len() - message.len())?;
        }
        if !self.request_id.is_empty() {
            write!(f, " (request {})", Escaped(self.request_id))?;
        }
        Ok(())
    }
}

/// Text with its control characters escaped (`\n`, `\r`, `\u{1b}`), tabs kept.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(|c: char| c.is_control() && c != '\t') {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(f, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(worker: u32, target: &str, message: &str, request_id: &str) -> String {
        AppLine {
            worker,
            target,
            message,
            request_id,
        }
        .to_string()
    }

    #[test]
    fn app_lines_name_the_worker_the_target_and_the_request() {
        assert_eq!(
            line(3, "my_app::db", "connection refused", "5f2c"),
            "worker 3: app my_app::db: connection refused (request 5f2c)"
        );
        assert_eq!(line(1, "my_app", "tick", ""), "worker 1: app my_app: tick");
        assert_eq!(
            line(PROBE, "my_app", "warming up", ""),
            "probe: app my_app: warming up"
        );
        assert_eq!(
            line(2, "", "no target", "r"),
            "worker 2: app: no target (request r)"
        );
    }

    #[test]
    fn control_characters_are_escaped_so_a_record_is_one_line() {
        assert_eq!(
            line(1, "t", "one\ntwo\r\u{1b}[31m\tthree é", ""),
            "worker 1: app t: one\\ntwo\\r\\u{1b}[31m\tthree é"
        );
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = format!("{}é{}", "a".repeat(MAX_APP_LOG_MESSAGE - 1), "b".repeat(99));
        let text = line(1, "t", &long, "r");
        // The cut falls inside the two bytes of `é`, so it moves before it.
        let expected = format!(
            "worker 1: app t: {}… (101 bytes cut) (request r)",
            "a".repeat(MAX_APP_LOG_MESSAGE - 1),
        );
        assert_eq!(text, expected);
    }
}
