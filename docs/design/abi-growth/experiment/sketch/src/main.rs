//! Sketch of the recommended ABI: a frozen root + size-prefixed, append-only tables.
use std::{ffi::c_void, mem::{size_of, MaybeUninit}};

pub const ABI_MAGIC: [u8; 8] = *b"HOSTAPP\0";
pub const ABI_MAJOR: u16 = 2;      // bumps only on a breaking change (never within 0.2.x)
pub const ABI_MINOR: u16 = 1;      // bumps with every SDK release that appends something

/// What each minor added: used for the refusal message and `host --version`.
pub const FEATURES: &[(u16, u64, &str)] = &[
    (1, 1 << 0, "HostFns.log (log/tracing bridge)"),
    (1, 1 << 1, "Req.tls (TLS details)"),
];

#[repr(C)] pub struct Bytes<'a> { pub ptr: *const u8, pub len: usize, _p: std::marker::PhantomData<&'a [u8]> }

/// FROZEN forever: the exported symbol. Never reordered, never grown.
#[repr(C)]
pub struct AppRoot {
    pub size: u32,            // FIRST in every table: size_of::<Self>() as the writer knew it
    pub abi_major: u16,
    pub abi_minor: u16,       // SDK minor the app was built with
    pub magic: [u8; 8],
    pub requires: u64,        // FEATURES bits the app cannot run without
    pub init: extern "C" fn(&HostFns, &WorkerInfo) -> *mut c_void,
    pub handle: unsafe extern "C" fn(*mut c_void, &Req<'_>, *mut c_void /*ctx*/) -> u32,
    pub exit: unsafe extern "C" fn(*mut c_void),
    // ---- appended in 0.2.1 (always Option: null in older apps / zero-filled by the copy) ----
    pub health: Option<unsafe extern "C" fn(*mut c_void) -> u32>,
}

#[repr(C)]
pub struct HostFns {
    pub size: u32, pub abi_minor: u16, pub _pad: u16,
    pub provides: u64,        // FEATURES bits this host implements
    pub set_status: unsafe extern "C" fn(*mut c_void, u16) -> u32,
    pub send_body: unsafe extern "C" fn(*mut c_void, Bytes<'_>) -> u32,
    // ---- 0.2.1 ----
    pub log: Option<unsafe extern "C" fn(*mut c_void, u8, Bytes<'_>)>,
}

#[repr(C)] pub struct WorkerInfo { pub size: u32, pub worker_id: u32, pub pid: u32 }

#[repr(C)]
pub struct Req<'a> {
    pub size: u32, pub method: u32, pub head: Bytes<'a>, pub content_length: i64,
    // ---- 0.2.1 ----
    pub tls: u16,
}
impl Req<'_> {
    /// An appended field: present only if the host's struct reaches it.
    #[inline] pub fn tls(&self) -> Option<u16> {
        let end = std::mem::offset_of!(Req, tls) + size_of::<u16>();
        (self.size as usize >= end).then_some(self.tls)
    }
}

/// Reads a size-prefixed table written by an older or newer peer into our own full-size
/// version: fields the peer lacks are zero (so every appended `Option<fn>` is `None`).
/// Done once at load (root) / once per worker (host table): no per-call check.
///
/// # Safety
/// `p` points at a `T` written by a peer of the same ABI major, whose first field is
/// its `size: u32` and whose appended fields are all nullable (Option<fn>, integers).
pub unsafe fn read_sized<T>(p: *const T) -> T {
    let peer = unsafe { (p as *const u32).read() } as usize;
    let n = peer.min(size_of::<T>());
    let mut out = MaybeUninit::<T>::zeroed();
    unsafe { std::ptr::copy_nonoverlapping(p as *const u8, out.as_mut_ptr() as *mut u8, n) };
    unsafe { out.assume_init() }
}

/// Host side: the whole compatibility rule in one function.
pub fn check_root(name: &str, root: &AppRoot, host_minor: u16, host_provides: u64) -> Result<(), String> {
    if root.magic != ABI_MAGIC { return Err(format!("`{name}` is not an app exported with app-sdk")); }
    if root.abi_major != ABI_MAJOR {
        return Err(format!("`{name}` was built against app-sdk ABI {}.x; this host speaks {ABI_MAJOR}.x", root.abi_major));
    }
    let missing = root.requires & !host_provides;
    if missing != 0 {
        let what: Vec<_> = FEATURES.iter().filter(|f| missing & f.1 != 0)
            .map(|f| format!("{} (app-sdk ABI 2.{})", f.2, f.0)).collect();
        return Err(format!("`{name}` was built against app-sdk ABI {}.{} and needs {}, which this host (ABI {ABI_MAJOR}.{host_minor}) lacks; upgrade the host",
            root.abi_major, root.abi_minor, what.join(", ")));
    }
    Ok(())
}

// ---- demo: an "old" 0.2.0 root (no `health`) read by this 0.2.1 host ----
#[repr(C)] struct AppRootV0 { size: u32, abi_major: u16, abi_minor: u16, magic: [u8; 8], requires: u64,
    init: extern "C" fn(&HostFns, &WorkerInfo) -> *mut c_void,
    handle: unsafe extern "C" fn(*mut c_void, &Req<'_>, *mut c_void) -> u32,
    exit: unsafe extern "C" fn(*mut c_void) }
extern "C" fn init(_: &HostFns, _: &WorkerInfo) -> *mut c_void { std::ptr::null_mut() }
unsafe extern "C" fn handle(_: *mut c_void, r: &Req<'_>, _: *mut c_void) -> u32 { r.tls().map_or(0, u32::from) }
unsafe extern "C" fn exit(_: *mut c_void) {}

fn main() {
    let old = AppRootV0 { magic: ABI_MAGIC, size: size_of::<AppRootV0>() as u32, abi_major: 2, abi_minor: 0, requires: 0, init, handle, exit };
    let root: AppRoot = unsafe { read_sized(&old as *const AppRootV0 as *const AppRoot) };
    println!("old root read by new host: size {} health present: {}", root.size, root.health.is_some());
    println!("{:?}", check_root("app", &root, ABI_MINOR, 0b11));
    let mut strict = root; strict.abi_minor = 1; strict.requires = 0b01;
    println!("{:?}", check_root("app", &strict, 0, 0b00));
}
