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

use abi_stable::std_types::RString;
use app_sdk::abi::{AppHandle, AppModRef, HandleOutcome, HostIo, RawRequest, WorkerInfo};

/// The app's `handle` function, as the root module exports it.
type HandleFn = unsafe extern "C" fn(&AppHandle, &RawRequest<'_>, HostIo<'_>) -> HandleOutcome;
/// The app's `exit` function, as the root module exports it.
type ExitFn = unsafe extern "C" fn(AppHandle) -> HandleOutcome;

/// An app instance and its module's functions (read once, off the hot path).
///
/// Not `Clone`: there is one owner, which lends it (`&LoadedApp`) to the
/// callers of `handle` and gives it up to `exit`.
pub struct LoadedApp {
    handle: HandleFn,
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
    /// (the app's `init`); `Err` carries the app's message.
    pub fn init(module: AppModRef, info: &WorkerInfo<'_>) -> Result<LoadedApp, RString> {
        let instance = (module.init())(info).into_result()?;
        Ok(LoadedApp {
            handle: module.handle(),
            exit: module.exit(),
            instance,
        })
    }

    /// Calls the app for one request; `io` is the host's side of it
    /// (`worker::host_fns::host_io`).
    #[inline]
    pub fn handle(&self, raw: &RawRequest<'_>, io: HostIo<'_>) -> HandleOutcome {
        // SAFETY: `instance` came from this module's `init` and is borrowed
        // here, so `exit` (which consumes `self`) has not freed it; `io` was
        // made by the host with `HostIo::new`, whose contract covers the call.
        unsafe { (self.handle)(&self.instance, raw, io) }
    }

    /// Runs the app's exit hook and frees the instance: at most once, since
    /// it consumes the app, and never during a `handle` call, which borrows it.
    pub fn exit(self) -> HandleOutcome {
        // SAFETY: `instance` came from this module's `init`; owning `self`
        // means no `handle` call borrows it, and it moves into the call.
        unsafe { (self.exit)(self.instance) }
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
