//! A running app instance in a worker or the probe: the only way the host
//! calls an app.
//!
//! The ABI's `handle` and `exit` are `unsafe` to call because they trust the
//! instance pointer they are given. [`LoadedApp`] owns the instance its
//! module's `init` returned and exposes safe calls that uphold that contract:
//! `handle` borrows the instance, `exit` consumes it, so an instance is never
//! used after `exit` nor freed twice. Dropped without `exit` (a worker that
//! leaves with a thread still inside the app), the instance is leaked, never
//! freed under a running call.

use std::fmt;

use app_sdk::abi::{
    AppHandle, CallOutcome, HostCtx, HostFns, RawRequest, RawWsEvent, WorkerInfo, OUTCOME_DONE,
    OUTCOME_PANICKED,
};

use crate::app::AppModule;

/// The app's `handle` function, as its root exports it.
type HandleFn = unsafe extern "C" fn(&AppHandle, *const RawRequest<'_>, HostCtx<'_>) -> CallOutcome;
/// The app's `on_websocket` function, as its root exports it.
type EventFn = unsafe extern "C" fn(&AppHandle, *const RawWsEvent<'_>, HostCtx<'_>) -> CallOutcome;
/// The app's `exit` function, as its root exports it.
type ExitFn = unsafe extern "C" fn(AppHandle) -> CallOutcome;

/// How a call into the app went wrong.
#[derive(Debug)]
pub enum Failure {
    /// It panicked (the message says where and why).
    Panicked(String),
    /// It returned an error (the message is the error and its sources).
    Failed(String),
}

impl Failure {
    /// `Ok` for a call that returned normally, else what went wrong.
    pub fn check(outcome: CallOutcome) -> Result<(), Failure> {
        match outcome.kind {
            OUTCOME_DONE => {
                // The usual case: an empty message owns no memory, so there is
                // nothing to free, and forgetting it saves the indirect call
                // into the app's deallocator that dropping an `RString` makes.
                if outcome.message.capacity() == 0 {
                    std::mem::forget(outcome.message);
                }
                Ok(())
            }
            OUTCOME_PANICKED => Err(Failure::Panicked(outcome.message.into_string())),
            // A kind a newer SDK added reads as a failure.
            _ => Err(Failure::Failed(outcome.message.into_string())),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Panicked(m) => write!(f, "panicked: {m}"),
            Failure::Failed(m) => f.write_str(m),
        }
    }
}

/// An app instance and its root's functions (read once, off the hot path).
///
/// Not `Clone`: there is one owner, which lends it (`&LoadedApp`) to the
/// callers of `handle` and gives it up to `exit`.
pub struct LoadedApp {
    handle: HandleFn,
    on_websocket: Option<EventFn>,
    exit: ExitFn,
    instance: AppHandle,
}

// SAFETY: the SDK's `App` trait requires `Send + Sync`, so the instance
// behind the handle may be moved to and called from other threads, several at
// once (`--threads`).
unsafe impl Send for LoadedApp {}
// SAFETY: as above.
unsafe impl Sync for LoadedApp {}

impl LoadedApp {
    /// Creates the app instance of `module` for the worker `info` describes
    /// (the app's `init`), giving it the host's functions `host`.
    pub fn init(
        module: &AppModule,
        host: &'static HostFns,
        info: &WorkerInfo<'_>,
    ) -> Result<LoadedApp, Failure> {
        let mut instance = AppHandle::null();
        // SAFETY: both tables are live (`host` for the life of the process,
        // as the app may keep it), and `instance` is writable.
        let outcome = unsafe { (module.root.init)(host, info, &mut instance) };
        Failure::check(outcome)?;
        Ok(LoadedApp {
            handle: module.root.handle,
            on_websocket: module.root.on_websocket,
            exit: module.root.exit,
            instance,
        })
    }

    /// Calls the app for one request; `ctx` is the host's state for it
    /// (`worker::host_fns::host_ctx`).
    #[inline]
    pub fn handle(&self, raw: &RawRequest<'_>, ctx: HostCtx<'_>) -> CallOutcome {
        // SAFETY: `instance` came from this root's `init` and is borrowed
        // here, so `exit` (which consumes `self`) has not freed it; `raw`
        // lives for the call; `ctx` was made by the host with `HostCtx::new`,
        // whose contract covers the call.
        unsafe { (self.handle)(&self.instance, raw, ctx) }
    }

    /// Whether the app handles WebSocket events (an app older than app-sdk
    /// 0.2.2 does not, and is never handed a WebSocket connection).
    pub fn handles_websockets(&self) -> bool {
        self.on_websocket.is_some()
    }

    /// Calls the app for one WebSocket event; `ctx` is the host's for it
    /// (`worker::host_fns::event_ctx`). An app without a handler is never
    /// given a connection, so this is never called for one; if it were,
    /// the call is done.
    pub fn on_websocket(&self, event: &RawWsEvent<'_>, ctx: HostCtx<'_>) -> CallOutcome {
        let Some(f) = self.on_websocket else {
            return CallOutcome::done();
        };
        // SAFETY: as in `handle`: `instance` came from this root's `init`
        // and is borrowed; the event lives for the call; `ctx` was made by
        // the host for it.
        unsafe { f(&self.instance, event, ctx) }
    }

    /// Runs the app's exit hook and frees the instance: at most once, since
    /// it consumes the app, and never during a `handle` call, which borrows it.
    pub fn exit(self) -> Result<(), Failure> {
        // SAFETY: `instance` came from this root's `init`; owning `self`
        // means no `handle` call borrows it, and it moves into the call.
        Failure::check(unsafe { (self.exit)(self.instance) })
    }
}

#[cfg(test)]
mod tests {
    use std::marker::PhantomData;

    use super::*;

    /// Answers "is `T` Clone?" at run time: the inherent method (only when
    /// `T: Clone`) wins over the trait's fallback.
    struct CloneProbe<T>(PhantomData<T>);
    trait NotClone {
        fn is_clone(&self) -> bool {
            false
        }
    }
    impl<T> NotClone for CloneProbe<T> {}
    impl<T: Clone> CloneProbe<T> {
        fn is_clone(&self) -> bool {
            true
        }
    }

    #[test]
    fn an_instance_has_one_owner_so_exit_runs_once() {
        // Were either Clone (or Copy), two owners could each call `exit`
        // and free the app twice.
        assert!(!CloneProbe::<AppHandle>(PhantomData).is_clone());
        assert!(!CloneProbe::<LoadedApp>(PhantomData).is_clone());
        // The probe does tell a Clone type.
        assert!(CloneProbe::<String>(PhantomData).is_clone());
    }
}
