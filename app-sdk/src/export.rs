//! Exporting an app from a library: the [`export_app!`](crate::export_app) macro
//! and the glue it expands to.
//!
//! Each export is a `#[no_mangle]` static [`AppRoot`] named after the app, so
//! one library can export several apps (`lib.so:app`, `lib.so:admin`). The
//! glue turns the safe [`App`] trait into the `extern "C"` functions of the
//! root, reads the host's tables with [`read_table`] (so an older host's
//! shorter tables read as "absent"), and catches every panic inside the
//! library: a panic crossing `extern "C"` would abort the worker.
//!
//! `init`, `handle` and `exit` trust the pointers and the [`AppHandle`] they
//! are given, so they are `unsafe extern "C"` functions whose `# Safety`
//! sections are [`AppRoot`]'s contract.

use std::{
    any::Any,
    cell::Cell,
    ffi::c_void,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{Once, OnceLock},
};

use abi_stable::std_types::{RSlice, RStr};

use crate::{
    abi::{
        read_table, size_u32, table_size, AppHandle, AppRoot, CallOutcome, EventIo, HostCtx,
        HostFns, HostIo, RawRequest, RawWsEvent, WorkerInfo, ABI_LINE, ABI_MAGIC, ABI_REVISION,
        FEATURES, HOST_FNS_MIN, OUTCOME_FAILED, OUTCOME_PANICKED, RAW_REQUEST_MIN,
        RAW_WS_EVENT_MIN, ROOT_PANIC_ABORT, SDK_VERSION, WORKER_INFO_MIN, WORKER_PROBE, WS_BINARY,
        WS_CLOSE, WS_OPEN, WS_TEXT,
    },
    App, BodyError, Close, DecodeError, Error, Message, Request, Response, WebSocket, Worker, WsId,
};

/// Exports apps from this library under the names given.
///
/// Each `name = expression` pair exports the app built by `expression` (a
/// value of a type implementing [`App`]) as `name`, so the host serves it as
/// `lib<crate>.so:name`. The expression is evaluated once in each worker, when
/// the worker starts; [`App::init`] runs right after.
///
/// ```
/// use app_sdk::{export_app, App, Request, Response};
///
/// struct Hello;
/// impl App for Hello {
///     fn handle(&self, _req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
///         resp.body("hello")?;
///         Ok(())
///     }
/// }
///
/// struct Admin;
/// impl App for Admin {
///     fn handle(&self, _req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
///         resp.status(403).body("no")?;
///         Ok(())
///     }
/// }
///
/// export_app!(app = Hello, admin = Admin);
/// ```
///
/// An attribute before a name makes the export require a feature of the
/// host, so that a host without it refuses to load the app, naming what is
/// missing, rather than failing requests that use it:
/// - `#[websocket]`: WebSocket connections ([`crate::websocket`]);
/// - `#[upgrade]`: raw protocol upgrades ([`crate::upgrade`]).
///
/// ```
/// # use app_sdk::{export_app, App, Request, Response};
/// # struct Chat;
/// # impl App for Chat {
/// #     fn handle(&self, _req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
/// #         resp.accept_websocket(None)?;
/// #         Ok(())
/// #     }
/// # }
/// export_app!(#[websocket] app = Chat);
/// ```
#[macro_export]
macro_rules! export_app {
    ($($(#[$feature:ident])* $name:ident = $make:expr),+ $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            #[allow(non_upper_case_globals)]
            #[doc = concat!("The app `", stringify!($name), "`, exported for the host.")]
            pub static $name: $crate::abi::AppRoot = {
                /// # Safety
                /// `AppRoot::init`'s contract.
                unsafe extern "C" fn init(
                    host: *const $crate::abi::HostFns,
                    worker: *const $crate::abi::WorkerInfo<'_>,
                    out: *mut $crate::abi::AppHandle,
                ) -> $crate::abi::CallOutcome {
                    // SAFETY: this function's contract is `init_app`'s.
                    unsafe { $crate::__private::init_app(host, worker, out, || $make) }
                }
                // `cfg!` here is the app crate's: how *it* was built.
                $crate::__private::root(
                    init,
                    cfg!(panic = "abort"),
                    0 $(| $crate::__private::features::$feature)*,
                )
            };
        )+
    };
}

#[doc(hidden)]
pub mod __private {
    pub use super::{init_app, root};

    /// The features an export's attributes name (`#[websocket]`): an
    /// unknown name fails to compile here.
    #[allow(non_upper_case_globals)]
    pub mod features {
        /// `#[websocket]`.
        pub const websocket: u64 = crate::abi::FEATURE_WEBSOCKET;
        /// `#[upgrade]`.
        pub const upgrade: u64 = crate::abi::FEATURE_UPGRADE;
    }
}

/// The type `init` has in an [`AppRoot`].
type InitFn =
    unsafe extern "C" fn(*const HostFns, *const WorkerInfo<'_>, *mut AppHandle) -> CallOutcome;

/// The root of an export whose `init` the macro generated, requiring the
/// [`crate::abi::Feature`] bits `requires`.
pub const fn root(init: InitFn, panic_abort: bool, requires: u64) -> AppRoot {
    AppRoot {
        size: size_u32::<AppRoot>(),
        abi_line: ABI_LINE,
        abi_revision: ABI_REVISION,
        magic: ABI_MAGIC,
        requires,
        flags: if panic_abort { ROOT_PANIC_ABORT } else { 0 },
        sdk_version: RStr::from_str(SDK_VERSION),
        features: RSlice::from_slice(FEATURES),
        init,
        handle,
        exit,
        on_websocket: Some(on_websocket),
    }
}

/// The host's table, as the first `init` in this process read it: what
/// code outside a request (logging from any thread) calls.
static HOST: OnceLock<HostFns> = OnceLock::new();

/// The host's table, once the first `init` in this process has read it.
#[inline]
pub(crate) fn host() -> Option<&'static HostFns> {
    HOST.get()
}

/// An app instance: the app and the host table its requests use.
struct Instance {
    app: Box<dyn App>,
    host: HostFns,
}

/// Creates the app in a worker: reads the host's tables, builds the app,
/// runs its init hook, and hands the host the boxed instance.
///
/// # Safety
/// [`AppRoot::init`]'s contract: `host` and `worker` point at live tables
/// of this ABI line for the call, `out` is writable.
pub unsafe fn init_app<A: App>(
    host: *const HostFns,
    worker: *const WorkerInfo<'_>,
    out: *mut AppHandle,
    make: impl FnOnce() -> A,
) -> CallOutcome {
    install_panic_hook();
    // SAFETY: per the contract, both are live size-prefixed tables, and
    // every field past the minimum is valid when zero.
    let (fns, info) = unsafe {
        (
            read_table(host, HOST_FNS_MIN),
            read_table(worker, WORKER_INFO_MIN),
        )
    };
    let (Some(fns), Some(info)) = (fns, info) else {
        return CallOutcome::failed(
            OUTCOME_FAILED,
            "the host's tables are too short for app-sdk 0.2",
        );
    };
    // The instance calls the table its own `init` was given: one host per
    // process makes them all the same, but a test process (`testing`) may
    // start apps with more than one.
    HOST.get_or_init(|| fns);
    let worker = Worker {
        id: info.worker_id,
        pid: info.pid,
        threads: info.threads,
        generation: info.generation,
        probe: info.flags & WORKER_PROBE != 0,
        app_name: info.app_name.as_str(),
    };
    let result = in_call(std::ptr::null(), || {
        let mut app = make();
        // After `make`, so a logger the app sets up there is kept; before
        // `init`, so what `init` logs reaches the host.
        crate::logging::install(fns.max_log_level);
        app.init(&worker)?;
        Ok::<_, Error>(Box::new(Instance {
            app: Box::new(app),
            host: fns,
        }))
    });
    match result {
        Ok(Ok(instance)) => {
            // SAFETY: per the contract, `out` is writable.
            unsafe { out.write(AppHandle::from_raw(Box::into_raw(instance) as *mut c_void)) };
            CallOutcome::done()
        }
        Ok(Err(error)) => CallOutcome::failed(OUTCOME_FAILED, error_text(&*error)),
        Err(message) => CallOutcome::failed(OUTCOME_PANICKED, message),
    }
}

/// An error and its sources, as one line: `outer: cause: root cause`.
pub(crate) fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Calls the app's handler for one request, catching its panics.
///
/// # Safety
/// [`AppRoot::handle`]'s contract: `app` was made by [`init_app`] (in this
/// library, so it boxes an [`Instance`]) and is borrowed, so `exit` has not
/// freed it; `raw` is live for the call; `ctx` is the host's for it.
unsafe extern "C" fn handle(
    app: &AppHandle,
    raw: *const RawRequest<'_>,
    ctx: HostCtx<'_>,
) -> CallOutcome {
    // SAFETY: per the contract above, the pointer is the live
    // `Box<Instance>` `init_app` leaked, and only shared references to it
    // exist until `exit`.
    let instance: &Instance = unsafe { &*(app.as_ptr() as *const Instance) };
    let copy;
    // SAFETY: `raw` is a live size-prefixed request table (the contract).
    // A host at least as new as this SDK sends all of our fields, which are
    // then read in place; an older host's shorter table is copied and
    // zero-filled.
    let raw: &RawRequest<'_> = unsafe {
        if table_size(raw) >= std::mem::size_of::<RawRequest<'_>>() {
            &*raw
        } else {
            match older_request(raw) {
                Some(full) => {
                    copy = full;
                    &copy
                }
                None => {
                    return CallOutcome::failed(OUTCOME_FAILED, "the host's request is too short")
                }
            }
        }
    };
    // SAFETY: `ctx` is the host's for this call, and `instance.host` is the
    // table of the host that made it.
    let io = unsafe { HostIo::new(ctx, &instance.host) };
    // Log records made on this thread during the call carry its request id.
    let result = in_call(&raw.request_id, || {
        let mut req = Request::__new(raw, io);
        let head = raw.method.get(raw.head.as_slice()) == b"HEAD";
        let mut resp = Response::__new(io, head);
        let result = match instance.app.handle(&mut req, &mut resp) {
            Ok(()) => Ok(()),
            failed => answer_client_error(failed, &mut resp),
        };
        // A refusal that kept every body from going out fails the call:
        // the client would otherwise get an empty response the app never meant.
        match (result, resp.__unsent_refusal()) {
            (Ok(()), Some(why)) => Err(format!("the host refused the response: {why}").into()),
            (result, _) => result,
        }
    });
    match result {
        Ok(Ok(())) => CallOutcome::done(),
        Ok(Err(error)) => CallOutcome::failed(OUTCOME_FAILED, error_text(&*error)),
        Err(message) => CallOutcome::failed(OUTCOME_PANICKED, message),
    }
}

/// An older host's shorter request table, copied and zero-filled: out of
/// line, so the common case (a host at least as new as this SDK, read in
/// place) carries none of it.
///
/// # Safety
/// `raw` is a live size-prefixed request table.
#[cold]
#[inline(never)]
unsafe fn older_request<'a>(raw: *const RawRequest<'a>) -> Option<RawRequest<'a>> {
    // SAFETY: per the contract; every field past RAW_REQUEST_MIN is valid
    // when zero (`tls`: a null pointer, no TLS facts).
    unsafe { read_table(raw, RAW_REQUEST_MIN) }
}

/// Answers an error that is the client's mistake, returned with `?` before
/// the response started, with its 4xx status instead of a 500: a body over
/// the handler's limit (`413`), a path that does not decode (`400`). Such a
/// call is not an app error, so the host does not log it as one.
#[cold]
fn answer_client_error(result: crate::Result, resp: &mut Response<'_>) -> crate::Result {
    let Err(error) = result else {
        return result;
    };
    let status = match error.downcast_ref::<BodyError>() {
        Some(BodyError::TooLarge { .. }) => 413,
        _ if error.is::<DecodeError>() => 400,
        _ => return Err(error),
    };
    if resp.try_status(status).is_err() {
        return Err(error); // the response has started: too late for a status
    }
    match resp.body(format!("{error}\n")) {
        Ok(()) => Ok(()),
        Err(_) => Err(error),
    }
}

/// Hands one WebSocket event to the app's `on_open`, `on_message` or
/// `on_close`, catching its panics. An event of a kind this SDK does not
/// know is ignored (a host never sends one).
///
/// # Safety
/// [`AppRoot::on_websocket`]'s contract: as [`handle`]'s, with `event` a
/// live event table and `ctx` the host's for the event call.
unsafe extern "C" fn on_websocket(
    app: &AppHandle,
    event: *const RawWsEvent<'_>,
    ctx: HostCtx<'_>,
) -> CallOutcome {
    // SAFETY: as in `handle`.
    let instance: &Instance = unsafe { &*(app.as_ptr() as *const Instance) };
    // SAFETY: `event` is a live size-prefixed table (the contract), every
    // field of which every host that sends one has.
    let Some(event) = (unsafe { read_table(event, RAW_WS_EVENT_MIN) }) else {
        return CallOutcome::failed(OUTCOME_FAILED, "the host's event is too short");
    };
    // SAFETY: `ctx` is the host's for this event call, and `instance.host`
    // is the table of the host that made it.
    let io = unsafe { EventIo::new(ctx, &instance.host) };
    let result = in_call(std::ptr::null(), || {
        let ws = WebSocket::new(WsId::from_raw(event.conn), io);
        let data = event.data.as_slice();
        let text = || std::str::from_utf8(data).unwrap_or("");
        match event.kind {
            WS_OPEN => instance.app.on_open(&ws),
            WS_TEXT => instance.app.on_message(&ws, Message::Text(text())),
            WS_BINARY => instance.app.on_message(&ws, Message::Binary(data)),
            WS_CLOSE => {
                let close = Close {
                    code: event.code,
                    reason: text(),
                };
                instance.app.on_close(&ws, close);
                Ok(())
            }
            _ => Ok(()),
        }
    });
    match result {
        Ok(Ok(())) => CallOutcome::done(),
        Ok(Err(error)) => CallOutcome::failed(OUTCOME_FAILED, error_text(&*error)),
        Err(message) => CallOutcome::failed(OUTCOME_PANICKED, message),
    }
}

/// Runs the app's exit hook and frees it, catching a panic.
///
/// # Safety
/// [`AppRoot::exit`]'s contract: `app` was made by [`init_app`] in this
/// library and no `handle` call on it is running. It is taken by value, so
/// it is freed once.
unsafe extern "C" fn exit(app: AppHandle) -> CallOutcome {
    // SAFETY: per the contract above, the pointer is the `Box<Instance>`
    // `init_app` leaked, owned here and nowhere else now.
    let instance: Box<Instance> = unsafe { Box::from_raw(app.as_ptr() as *mut Instance) };
    match in_call(std::ptr::null(), move || {
        instance.app.exit();
        drop(instance);
    }) {
        Ok(()) => CallOutcome::done(),
        Err(message) => CallOutcome::failed(OUTCOME_PANICKED, message),
    }
}

/// What this thread knows about the call from the host it is running: one
/// thread-local, so a call costs one lookup of it (in a library loaded with
/// `dlopen`, each lookup is a call into the dynamic loader).
struct CallState {
    /// Whether this thread is inside a call from the host ([`in_call`]),
    /// which catches and reports its panics itself.
    inside: Cell<bool>,
    /// Where and why the last panic in the call happened, kept by the hook.
    last_panic: Cell<Option<String>>,
    /// The request id of the `handle` call running on this thread (the
    /// host's, borrowed for the call); null outside one.
    request_id: Cell<*const RStr<'static>>,
}

thread_local! {
    /// This thread's [`CallState`]: plain cells, set up without allocating.
    static CALL: CallState = const {
        CallState {
            inside: Cell::new(false),
            last_panic: Cell::new(None),
            request_id: Cell::new(std::ptr::null()),
        }
    };
}

/// Runs `f`, a call from the host (for the request whose id is
/// `request_id`, or null), catching its panics: the hook keeps the message
/// of a panic in `f` instead of printing it, and a message left by an
/// earlier call is forgotten first, so a payload raised without the hook
/// (`resume_unwind`) is reported as itself, never as an older panic. Log
/// records made on this thread meanwhile carry the request id; the outer
/// state is put back afterwards, even when `f` unwinds.
pub(crate) fn in_call<T>(request_id: *const RStr<'_>, f: impl FnOnce() -> T) -> Result<T, String> {
    CALL.with(|call| {
        drop(call.last_panic.take());
        let outer = (
            call.inside.replace(true),
            call.request_id.replace(request_id.cast()),
        );
        let result = catch_unwind(AssertUnwindSafe(f));
        call.inside.set(outer.0);
        call.request_id.set(outer.1);
        result.map_err(|payload| panic_message(call, payload))
    })
}

/// Calls `f` with the request id of the `handle` call running on this
/// thread, or `""` outside one (a thread the app started, say).
pub(crate) fn with_current_request_id<T>(f: impl FnOnce(&str) -> T) -> T {
    let id = CALL
        .try_with(|call| call.request_id.get())
        .unwrap_or(std::ptr::null());
    if id.is_null() {
        return f("");
    }
    // SAFETY: a non-null pointer was stored by `in_call` from the request
    // of the call running on this thread (the cell is thread-local), which
    // lives until that call returns, and is replaced before it returns or
    // unwinds; the borrow handed to `f` cannot escape it.
    f(unsafe { &*id }.as_str())
}

/// Installs, once, a panic hook that keeps the message and location of a
/// panic inside a call from the host (the host logs it with the request)
/// and hands any other panic (an app's background thread, say) to the hook
/// that was there before, which prints it to stderr: the host logs a
/// worker's stderr, so it is seen.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Outside a call, nobody catches it; built with `panic = "abort"`,
            // nobody will: either way Rust's own hook prints it (to stderr,
            // which the host logs) before the thread unwinds or the worker dies.
            let inside = CALL.try_with(|call| call.inside.get()).unwrap_or(false);
            if !inside || cfg!(panic = "abort") {
                previous(info);
                return;
            }
            let message = match info.location() {
                Some(loc) => format!(
                    "{} (at {}:{})",
                    payload_text(info.payload()),
                    loc.file(),
                    loc.line()
                ),
                None => payload_text(info.payload()),
            };
            let _ = CALL.try_with(|call| call.last_panic.set(Some(message)));
        }));
    });
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

/// What to report of a caught panic: the hook's message (with where it
/// happened) when it is this payload's, else the payload itself (a payload
/// raised with `resume_unwind` never passes the hook).
fn panic_message(call: &CallState, payload: Box<dyn Any + Send>) -> String {
    let text = payload_text(&*payload);
    call.last_panic
        .take()
        .filter(|kept| {
            kept.strip_prefix(text.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(" (at "))
        })
        .unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use abi_stable::std_types::RStr;

    use super::*;
    use crate::abi::{OUTCOME_DONE, WORKER_INFO_MIN};

    /// How many times `Counted`'s exit hook ran.
    static EXITS: AtomicU32 = AtomicU32::new(0);

    struct Counted;
    impl App for Counted {
        fn handle(&self, _req: &mut Request<'_>, _resp: &mut Response<'_>) -> crate::Result {
            Ok(())
        }
        fn exit(&self) {
            EXITS.fetch_add(1, Ordering::SeqCst);
        }
    }

    unsafe extern "C" fn init_counted(
        host: *const HostFns,
        worker: *const WorkerInfo<'_>,
        out: *mut AppHandle,
    ) -> CallOutcome {
        // SAFETY: the caller upholds `init_app`'s contract.
        unsafe { init_app(host, worker, out, || Counted) }
    }

    #[test]
    fn exit_consumes_the_instance_and_runs_the_hook_once() {
        let root = root(init_counted, false, 0);
        let host = &crate::test_host::refusing();
        let info = WorkerInfo {
            size: WORKER_INFO_MIN as u32,
            worker_id: 1,
            pid: std::process::id(),
            threads: 1,
            generation: 1,
            flags: 0,
            app_name: RStr::from_str("app"),
        };
        let mut app = AppHandle::null();
        // SAFETY: live tables and a writable handle.
        let outcome = unsafe { (root.init)(host, &info, &mut app) };
        assert_eq!(outcome.kind, OUTCOME_DONE, "{}", outcome.message);
        // SAFETY: `app` was made by this root's `init`; no call borrows it.
        let outcome = unsafe { (root.exit)(app) };
        assert_eq!(outcome.kind, OUTCOME_DONE);
        assert_eq!(EXITS.load(Ordering::SeqCst), 1);
        // `app` has moved: a second `exit(app)` does not compile (see the
        // `compile_fail` examples on `AppHandle`).
    }
}
