//! Exporting an app from a library: the [`export_app!`](crate::export_app) macro
//! and the glue it expands to.
//!
//! Each export is a `#[no_mangle]` static `abi_stable` library header named
//! after the app, so one library can export several apps (`lib.so:app`,
//! `lib.so:admin`). The glue turns the safe [`App`] trait into the
//! `extern "C"` functions of [`AppMod`], and catches every panic inside the
//! library: a panic crossing `extern "C"` would abort the worker.
//!
//! `handle` and `exit` turn the host's [`AppHandle`] back into the boxed app,
//! so they are `unsafe extern "C"` functions whose `# Safety` sections are
//! [`AppMod`]'s contract; `init` only receives a reference, so it stays safe.

use std::{
    any::Any,
    cell::{Cell, RefCell},
    ffi::c_void,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Once,
};

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    std_types::{RResult, RString},
};

use crate::{
    abi::{AppHandle, AppMod, AppModRef, HandleOutcome, HostIo, RawRequest, WorkerInfo},
    App, Request, Response, Worker,
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
///     fn handle(&self, _req: &mut Request<'_>, resp: &mut Response<'_>) {
///         let _ = resp.body("hello");
///     }
/// }
///
/// struct Admin;
/// impl App for Admin {
///     fn handle(&self, _req: &mut Request<'_>, resp: &mut Response<'_>) {
///         let _ = resp.status(403).body("no");
///     }
/// }
///
/// export_app!(app = Hello, admin = Admin);
/// ```
#[macro_export]
macro_rules! export_app {
    ($($name:ident = $make:expr),+ $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            #[allow(non_upper_case_globals)]
            #[doc = concat!("The app `", stringify!($name), "`, exported for the host.")]
            pub static $name: $crate::__private::LibHeader = {
                // Safe to call: it receives a reference, never a raw pointer.
                extern "C" fn init(
                    worker: &$crate::abi::WorkerInfo<'_>,
                ) -> $crate::__private::InitResult {
                    $crate::__private::init_app(worker, || $make)
                }
                extern "C" fn load() -> $crate::__private::RootModuleResult {
                    $crate::__private::call_loader(|| $crate::__private::module(init))
                }
                // SAFETY: `load` returns the `AppModRef` this header is declared for.
                unsafe {
                    $crate::__private::LibHeader::from_constructor::<$crate::abi::AppModRef>(
                        load,
                        $crate::__private::CheckTypeLayout::Yes,
                    )
                }
            };
        )+
    };
}

#[doc(hidden)]
pub mod __private {
    pub use abi_stable::library::{CheckTypeLayout, LibHeader, RootModuleResult};

    /// What an app's `init` returns across the boundary.
    pub type InitResult =
        abi_stable::std_types::RResult<crate::abi::AppHandle, abi_stable::std_types::RString>;

    /// Runs abi_stable's root-module loader protocol around `f`.
    pub fn call_loader(f: fn() -> crate::abi::AppModRef) -> RootModuleResult {
        abi_stable::library::__call_root_module_loader(f)
    }

    pub use super::{init_app, module};
}

/// The object-safe face of an app, so `handle` and `exit` need no generics.
type DynApp = Box<dyn App>;

/// Builds the root module for an export whose `init` the macro generated.
pub fn module(init: extern "C" fn(&WorkerInfo<'_>) -> RResult<AppHandle, RString>) -> AppModRef {
    AppMod { init, handle, exit }.leak_into_prefix()
}

/// Creates the app in a worker: builds it, runs its init hook, and boxes it.
pub fn init_app<A: App>(
    info: &WorkerInfo<'_>,
    make: impl FnOnce() -> A,
) -> RResult<AppHandle, RString> {
    install_panic_hook();
    let worker = Worker {
        id: info.worker_id,
        pid: info.pid,
        app_name: info.app_name.as_str(),
    };
    let result = in_call(|| {
        let mut app = make();
        app.init(&worker)?;
        let boxed: DynApp = Box::new(app);
        Ok::<_, String>(AppHandle::from_raw(
            Box::into_raw(Box::new(boxed)) as *mut c_void
        ))
    });
    match result {
        Ok(Ok(handle)) => RResult::ROk(handle),
        Ok(Err(message)) => RResult::RErr(RString::from(message)),
        Err(message) => RResult::RErr(RString::from(format!("init panicked: {message}"))),
    }
}

/// Calls the app's handler for one request, catching its panics.
///
/// # Safety
/// `app` was made by [`init_app`] (in this library, so it boxes a [`DynApp`])
/// and is borrowed, so `exit` has not freed it; `io` is the host's for this
/// request. This is [`AppMod::handle`]'s contract.
unsafe extern "C" fn handle(
    app: &AppHandle,
    raw: &RawRequest<'_>,
    io: HostIo<'_>,
) -> HandleOutcome {
    // SAFETY: per the contract above, the pointer is the live `Box<DynApp>`
    // `init_app` leaked, and only shared references to it exist until `exit`.
    let app: &DynApp = unsafe { &*(app.as_ptr() as *const DynApp) };
    let result = in_call(|| {
        let mut req = Request::__new(raw, io);
        let mut resp = Response::__new(io);
        app.handle(&mut req, &mut resp);
    });
    match result {
        Ok(()) => HandleOutcome::Done,
        Err(message) => HandleOutcome::Panicked(RString::from(message)),
    }
}

/// Runs the app's exit hook and frees it, catching a panic.
///
/// # Safety
/// `app` was made by [`init_app`] in this library and no `handle` call on it
/// is running. It is taken by value, so it is freed once. This is
/// [`AppMod::exit`]'s contract.
unsafe extern "C" fn exit(app: AppHandle) -> HandleOutcome {
    // SAFETY: per the contract above, the pointer is the `Box<DynApp>`
    // `init_app` leaked, owned here and nowhere else now.
    let app: Box<DynApp> = unsafe { Box::from_raw(app.as_ptr() as *mut DynApp) };
    match in_call(move || {
        app.exit();
        drop(app);
    }) {
        Ok(()) => HandleOutcome::Done,
        Err(message) => HandleOutcome::Panicked(RString::from(message)),
    }
}

thread_local! {
    /// Where and why the last panic on this thread happened, kept by the hook
    /// while this thread is inside a call from the host.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Whether this thread is inside a call from the host ([`in_call`]),
    /// which catches and reports its panics itself.
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, a call from the host, catching its panics: the hook keeps the
/// message of a panic in `f` instead of printing it, and a message left by
/// an earlier call is forgotten first, so a payload raised without the hook
/// (`resume_unwind`) is reported as itself, never as an older panic.
fn in_call<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    LAST_PANIC.with(|last| last.borrow_mut().take());
    let outer = IN_CALL.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_CALL.with(|c| c.set(outer));
    result.map_err(panic_message)
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
            if !IN_CALL.with(Cell::get) {
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
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(message));
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
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let text = payload_text(&*payload);
    LAST_PANIC
        .with(|last| last.borrow_mut().take())
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

    /// How many times `Counted`'s exit hook ran.
    static EXITS: AtomicU32 = AtomicU32::new(0);

    struct Counted;
    impl App for Counted {
        fn handle(&self, _req: &mut Request<'_>, _resp: &mut Response<'_>) {}
        fn exit(&self) {
            EXITS.fetch_add(1, Ordering::SeqCst);
        }
    }

    extern "C" fn init_counted(info: &WorkerInfo<'_>) -> RResult<AppHandle, RString> {
        init_app(info, || Counted)
    }

    #[test]
    fn exit_consumes_the_instance_and_runs_the_hook_once() {
        let module = module(init_counted);
        let info = WorkerInfo {
            worker_id: 1,
            pid: std::process::id(),
            app_name: RStr::from_str("app"),
        };
        let app = match (module.init())(&info) {
            RResult::ROk(app) => app,
            RResult::RErr(e) => panic!("init failed: {e}"),
        };
        // SAFETY: `app` was made by this module's `init`; no call borrows it.
        let outcome = unsafe { (module.exit())(app) };
        assert!(matches!(outcome, HandleOutcome::Done));
        assert_eq!(EXITS.load(Ordering::SeqCst), 1);
        // `app` has moved: a second `exit(app)` does not compile (see the
        // `compile_fail` examples on `AppHandle`).
    }
}
