use std::ffi::c_void;
use abi_stable::{
    library::{CheckTypeLayout, LibHeader, RootModuleResult},
    prefix_type::PrefixTypeTrait,
    std_types::RStr,
};
use sdk::*;
use std::sync::atomic::{AtomicBool, Ordering};
static SAID: AtomicBool = AtomicBool::new(false);
static SAID_S: AtomicBool = AtomicBool::new(false);
macro_rules! once { ($f:expr, $($t:tt)*) => { if !$f.load(Ordering::Relaxed) { eprintln!($($t)*); } } }

extern "C" fn init(worker: u32) -> u64 { worker as u64 + 1000 }
extern "C" fn exit(_app: u64) {}
#[cfg(feature = "v2")]
extern "C" fn health(_app: u64) -> u32 { 7 }

extern "C" fn handle(_app: u64, req: ReqRef, host: HostFnsRef, ctx: *mut c_void) -> u32 {
    (host.set_status())(ctx, 200);
    #[cfg(feature = "v2")]
    {
        // Optional field of a host-given prefix type: None on an older host.
        match host.log() {
            Some(log) => { log(ctx, RStr::from("app v2 logging through host")); }
            None => once!(SAID, "  [app v2] host lacks HostFns.log -> falling back to stderr"),
        }
        match req.tls_version() {
            Some(v) => once!(SAID, "  [app v2] req.tls_version = {v:#x}"),
            None => once!(SAID, "  [app v2] host lacks Req.tls_version"),
        }
        SAID.store(true, Ordering::Relaxed);
    }
    let _ = req.method();
    (host.send_body())(ctx, RStr::from("hello"));
    0
}

extern "C" fn load() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(|| {
        AppMod {
            init, handle, exit,
            #[cfg(feature = "v2")]
            health,
        }
        .leak_into_prefix()
    })
}

#[no_mangle]
pub static app: LibHeader =
    unsafe { LibHeader::from_constructor::<AppModRef>(load, CheckTypeLayout::Yes) };

// ---------- Part S ----------
extern "C" fn handle_s(_app: u64, req: &ReqS, host: &HostFnsS, ctx: *mut c_void) -> u32 {
    (host.set_status)(ctx, 200);
    #[cfg(feature = "v2")]
    {
        match field!(host, HostFnsS, log) {
            Some(log) => { log(ctx, RStr::from("app v2 (S) logging through host")); }
            None => once!(SAID_S, "  [app v2 S] host lacks HostFnsS.log (host size {})", host.size),
        }
        match field!(req, ReqS, tls_version) {
            Some(v) => once!(SAID_S, "  [app v2 S] req.tls_version = {v:#x}"),
            None => once!(SAID_S, "  [app v2 S] host lacks ReqS.tls_version (req size {})", req.size),
        }
        SAID_S.store(true, Ordering::Relaxed);
    }
    let _ = req.method;
    (host.send_body)(ctx, RStr::from("hello"));
    0
}

const fn root_s(needs_minor: u32) -> AppRootS {
    AppRootS {
        size: std::mem::size_of::<AppRootS>() as u32,
        abi_major: ABI_MAJOR, abi_minor: ABI_MINOR, needs_minor,
        init, handle: handle_s, exit,
        #[cfg(feature = "v2")]
        health,
    }
}
#[no_mangle]
pub static app_s: AppRootS = root_s(0);
/// Same app, but declaring it cannot work without minor-1 features.
#[no_mangle]
pub static app_s_strict: AppRootS = root_s(ABI_MINOR);
