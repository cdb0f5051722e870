//! `abi-future`: a test fixture exporting apps as a later app-sdk 0.2.y
//! would, to check the compatibility rule's second half against the real
//! host: a newer app runs on an older host when it needs nothing the host
//! lacks, and is refused, naming what is missing, when it does.
//!
//! Both roots are this SDK's root with one field appended (a `health` hook,
//! as a later release might add), a higher revision, a later SDK version
//! and one more [`Feature`] the host has never heard of:
//!
//! - `tolerant`: requires nothing new; the host reads the part of the root
//!   it knows and serves it (`200 from the future`).
//! - `strict`: requires the new feature; the host refuses it with
//!   "needs health hooks (app-sdk 0.2.9), which this host … lacks".

use std::ffi::c_void;

use abi_stable::std_types::{RSlice, RStr};
use app_sdk::{
    __private::{init_app, root},
    abi::{size_u32, AppHandle, AppRoot, CallOutcome, Feature, HostFns, WorkerInfo, ABI_REVISION},
    App, Request, Response,
};

/// The feature bit the "future" SDK added (one no host knows yet).
const HEALTH: u64 = 1 << 40;

/// The "future" SDK's features: the names it gives them.
static FEATURES: [Feature; 1] = [Feature {
    bit: HEALTH,
    name: RStr::from_str("health hooks (app-sdk 0.2.9)"),
}];

/// A root as app-sdk 0.2.9 might export it: today's, plus an appended hook.
#[repr(C)]
pub struct FutureRoot {
    /// Today's root, with this struct's size and a later revision.
    pub base: AppRoot,
    /// The appended field: a health hook.
    pub health: Option<unsafe extern "C" fn(*const c_void) -> u32>,
}

/// The app both exports serve.
struct Future;

impl App for Future {
    fn handle(&self, _req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
        resp.header("Content-Type", "text/plain")
            .body("200 from the future\n")?;
        Ok(())
    }
}

/// # Safety
/// `AppRoot::init`'s contract.
unsafe extern "C" fn init(
    host: *const HostFns,
    worker: *const WorkerInfo<'_>,
    out: *mut AppHandle,
) -> CallOutcome {
    // SAFETY: this function's contract is `init_app`'s.
    unsafe { init_app(host, worker, out, || Future) }
}

/// # Safety
/// Never called by a 0.2.0 host (it does not know the field).
unsafe extern "C" fn health(_app: *const c_void) -> u32 {
    0
}

/// The root of a "future" app requiring `requires`.
const fn future_root(requires: u64) -> FutureRoot {
    FutureRoot {
        base: AppRoot {
            size: size_u32::<FutureRoot>(),
            abi_revision: ABI_REVISION + 9,
            requires,
            sdk_version: RStr::from_str("0.2.9"),
            features: RSlice::from_slice(&FEATURES),
            ..root(init, false, 0)
        },
        health: Some(health),
    }
}

// SAFETY: immutable data, `'static` text and function pointers.
unsafe impl Sync for FutureRoot {}

/// Exported as `tolerant`: newer, but needs nothing this host lacks.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static tolerant: FutureRoot = future_root(0);

/// Exported as `strict`: needs the feature this host lacks.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static strict: FutureRoot = future_root(HEALTH);
