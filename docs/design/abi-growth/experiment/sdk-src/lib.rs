//! Experimental SDK: v1 (0.2.0) and v2 (0.2.1, feature "v2") of the ABI.
//! Part P: abi_stable prefix types end to end (root, request, host table).
//! Part S: a frozen, size-prefixed root of our own (plain repr(C), no abi_stable check).
use std::ffi::c_void;
use abi_stable::{
    declare_root_module_statics, library::RootModule, package_version_strings,
    sabi_types::VersionStrings, std_types::RStr, StableAbi,
};

// ---------------- Part P: prefix types ----------------

/// Host function table (host -> app).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = HostFnsRef)))]
#[sabi(missing_field(option))]
pub struct HostFns {
    pub set_status: extern "C" fn(*mut c_void, u16) -> u32,
    #[sabi(last_prefix_field)]
    pub send_body: extern "C" fn(*mut c_void, RStr<'_>) -> u32,
    #[cfg(feature = "v2")]
    pub log: extern "C" fn(*mut c_void, RStr<'_>) -> u32,
}

/// Request (host -> app), built per request on the host's stack.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ReqRef)))]
#[sabi(missing_field(option))]
pub struct Req {
    pub method: u32,
    #[sabi(last_prefix_field)]
    pub content_length: i64,
    #[cfg(feature = "v2")]
    pub tls_version: u16,
}

/// Root module (app -> host).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = AppModRef)))]
#[sabi(missing_field(option))]
pub struct AppMod {
    pub init: extern "C" fn(u32) -> u64,
    pub handle: extern "C" fn(u64, ReqRef, HostFnsRef, *mut c_void) -> u32,
    #[sabi(last_prefix_field)]
    pub exit: extern "C" fn(u64),
    #[cfg(feature = "v2")]
    pub health: extern "C" fn(u64) -> u32,
}

impl RootModule for AppModRef {
    declare_root_module_statics! {AppModRef}
    const BASE_NAME: &'static str = "app";
    const NAME: &'static str = "app";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

// ---------------- Part S: our own size-prefixed tables ----------------

pub const ABI_MAJOR: u32 = 2;
#[cfg(not(feature = "v2"))]
pub const ABI_MINOR: u32 = 0;
#[cfg(feature = "v2")]
pub const ABI_MINOR: u32 = 1;

/// Host functions, size-prefixed. Fields are only ever appended.
#[repr(C)]
pub struct HostFnsS {
    pub size: u32,
    pub abi_minor: u32,
    pub set_status: extern "C" fn(*mut c_void, u16) -> u32,
    pub send_body: extern "C" fn(*mut c_void, RStr<'_>) -> u32,
    #[cfg(feature = "v2")]
    pub log: extern "C" fn(*mut c_void, RStr<'_>) -> u32,
}

/// Request, size-prefixed.
#[repr(C)]
pub struct ReqS {
    pub size: u32,
    pub method: u32,
    pub content_length: i64,
    #[cfg(feature = "v2")]
    pub tls_version: u16,
}

/// Reads a field only when the writer's struct is long enough to hold it.
#[macro_export]
macro_rules! field {
    ($p:expr, $T:ty, $f:ident) => {{
        let p: &$T = $p;
        let end = ::core::mem::offset_of!($T, $f) + ::core::mem::size_of_val(&p.$f);
        if (p.size as usize) >= end { Some(p.$f) } else { None }
    }};
}

/// What the app needs from the host, by minor version: the host refuses an app whose
/// `needs_minor` is above its own ABI_MINOR, naming the missing items.
#[repr(C)]
pub struct AppRootS {
    pub size: u32,
    pub abi_major: u32,
    pub abi_minor: u32,       // SDK minor the app was built with
    pub needs_minor: u32,     // lowest host minor whose features the app *requires*
    pub init: extern "C" fn(u32) -> u64,
    pub handle: extern "C" fn(u64, &ReqS, &HostFnsS, *mut c_void) -> u32,
    pub exit: extern "C" fn(u64),
    #[cfg(feature = "v2")]
    pub health: extern "C" fn(u64) -> u32,
}

/// Items added in each minor, for the refusal message.
pub const ADDED_IN: &[(u32, &str)] = &[(1, "HostFns.log, Req.tls_version, AppRoot.health")];
