use std::{ffi::c_void, hint::black_box, time::Instant};
use abi_stable::{
    library::{AbiHeaderRef, LibHeader, RootModule},
    prefix_type::{PrefixTypeTrait, WithMetadata},
    std_types::RStr,
};
use sdk::*;

extern "C" fn set_status(ctx: *mut c_void, s: u16) -> u32 { black_box(ctx); s as u32 }
extern "C" fn send_body(ctx: *mut c_void, b: RStr<'_>) -> u32 { black_box(ctx); b.len() as u32 }
#[cfg(feature = "v2")]
extern "C" fn log(_ctx: *mut c_void, m: RStr<'_>) -> u32 {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) { eprintln!("  [host v2] log from app: {m}"); }
    0
}

fn host_fns() -> HostFnsRef {
    HostFns { set_status, send_body, #[cfg(feature = "v2")] log }.leak_into_prefix()
}

fn header(path: &str, sym: &str) -> &'static LibHeader {
    let lib = unsafe { libloading::Library::new(path) }.expect("dlopen");
    let addr: *const c_void = unsafe { *lib.get::<*const c_void>(sym.as_bytes()).expect("dlsym") };
    std::mem::forget(lib);
    let h: AbiHeaderRef = unsafe { std::mem::transmute(addr) };
    h.upgrade().expect("upgrade")
}

fn report(e: abi_stable::library::LibraryError) {
    let s = e.to_string();
    println!("  LOAD REFUSED ({} chars of report). Key lines:", s.len());
    let lines: Vec<&str> = s.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim();
        if t.starts_with("Error:") || t.contains("Incompatible") || t.contains("version") {
            for l2 in &lines[i..(i + 6).min(lines.len())] { println!("    | {}", l2.trim_end()); }
        }
    }
    if std::env::var_os("FULL").is_some() { println!("{s}"); }
}

fn run_p(module: AppModRef, fns: HostFnsRef) {
    let app = (module.init())(3);
    // Request built per call on the stack: no heap.
    let req = WithMetadata::new(Req { method: 1, content_length: 5, #[cfg(feature = "v2")] tls_version: 0x0304 });
    let req: ReqRef = ReqRef(unsafe { req.as_prefix() });
    let r = (module.handle())(app, req, fns, std::ptr::null_mut());
    println!("  handle -> {r}");
    #[cfg(feature = "v2")]
    match module.health() {
        Some(h) => println!("  app has health hook -> {}", h(app)),
        None => println!("  app lacks AppMod.health (older SDK): host skips health checks"),
    }
    (module.exit())(app);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    println!("host built with sdk {SDK_VERSION} (S-ABI {ABI_MAJOR}.{ABI_MINOR})");
    match args[1].as_str() {
        "checked" => {
            let h = header(&args[2], "app");
            println!("  library sdk version: {}", h.version_strings().version);
            match h.init_root_module::<AppModRef>() {
                Ok(m) => { println!("  LOADED (checked)"); run_p(m, host_fns()) }
                Err(e) => report(e),
            }
        }
        "unchecked" => {
            let h = header(&args[2], "app");
            match unsafe { h.init_root_module_with_unchecked_layout::<AppModRef>() } {
                Ok(m) => {
                    println!("  LOADED (unchecked layout); root prefix fields accessible in lib: {:?}",
                        (0..6).map(|i| m.0.field_accessibility().at(i).is_accessible()).collect::<Vec<_>>());
                    run_p(m, host_fns())
                }
                Err(e) => report(e),
            }
        }
        "bidir" => {
            // abi_stable's checker wants interface <= implementation for every prefix type.
            // SDK types only ever grow, so accept when either direction passes.
            use abi_stable::{abi_stability::abi_checking::check_layout_compatibility, StableAbi};
            let h = header(&args[2], "app");
            let host_l = <AppModRef as StableAbi>::LAYOUT;
            let lib_l = h.layout().expect("layout");
            let fwd = check_layout_compatibility(host_l, lib_l);
            let ok = match fwd {
                Ok(()) => { println!("  layout ok (host <= app)"); true }
                Err(e1) => match check_layout_compatibility(lib_l, host_l) {
                    Ok(()) => { println!("  layout ok (app <= host; forward check said: {})", e1.to_string().lines().filter(|l| l.trim().starts_with("Error:")).collect::<Vec<_>>().join(" / ")); true }
                    Err(e2) => { println!("  REFUSED both ways:"); for l in e2.to_string().lines().filter(|l| l.trim().starts_with("Error:")) { println!("    {}", l.trim()); } false }
                },
            };
            if ok {
                match unsafe { h.init_root_module_with_unchecked_layout::<AppModRef>() } {
                    Ok(m) => run_p(m, host_fns()),
                    Err(e) => report(e),
                }
            }
        }
        "S" => load_s(&args[2], &args[3]),
        "bench" => bench(&args[2]),
        _ => panic!("mode"),
    }
}

fn load_s(path: &str, sym: &str) {
    let lib = unsafe { libloading::Library::new(path) }.expect("dlopen");
    let root: &'static AppRootS = unsafe { &**lib.get::<*const AppRootS>(sym.as_bytes()).expect("dlsym") };
    std::mem::forget(lib);
    if root.abi_major != ABI_MAJOR {
        println!("  REFUSED: app ABI {}.x, host ABI {ABI_MAJOR}.x", root.abi_major);
        return;
    }
    if root.needs_minor > ABI_MINOR {
        let missing: Vec<&str> = ADDED_IN.iter().filter(|(m, _)| *m > ABI_MINOR && *m <= root.needs_minor).map(|(_, s)| *s).collect();
        println!("  REFUSED: `{sym}` was built against SDK ABI {}.{} and needs {} which this host (ABI {ABI_MAJOR}.{ABI_MINOR}) lacks; upgrade the host",
            root.abi_major, root.abi_minor, missing.join("; "));
        return;
    }
    println!("  LOADED (S): app ABI {}.{} size {} (host knows {})", root.abi_major, root.abi_minor, root.size, std::mem::size_of::<AppRootS>());
    let fns = HostFnsS { size: std::mem::size_of::<HostFnsS>() as u32, abi_minor: ABI_MINOR, set_status, send_body, #[cfg(feature = "v2")] log };
    let app = (root.init)(3);
    let req = ReqS { size: std::mem::size_of::<ReqS>() as u32, method: 1, content_length: 5, #[cfg(feature = "v2")] tls_version: 0x0304 };
    println!("  handle -> {}", (root.handle)(app, &req, &fns, std::ptr::null_mut()));
    #[cfg(feature = "v2")]
    match field!(root, AppRootS, health) {
        Some(h) => println!("  app has health hook -> {}", h(app)),
        None => println!("  app lacks AppRoot.health (root size {}): host skips health checks", root.size),
    }
    (root.exit)(app);
}

fn time(name: &str, n: u64, mut f: impl FnMut(u64)) {
    for i in 0..n / 10 { f(i) }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for i in 0..n { f(i) }
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    println!("  {name:<58} {best:6.2} ns/iter");
}

fn bench(path: &str) {
    const N: u64 = 20_000_000;
    let fns = host_fns();
    let fns_s = HostFnsS { size: std::mem::size_of::<HostFnsS>() as u32, abi_minor: ABI_MINOR, set_status, send_body, #[cfg(feature = "v2")] log };
    let ctx = std::ptr::null_mut();
    println!("micro (host fn called through a table, table pointer black_boxed each call):");
    time("plain repr(C) table: (t.set_status)(ctx, 200)", N, |_| { let t = black_box(&fns_s); black_box((t.set_status)(ctx, 200)); });
    time("prefix ref, prefix field: (f.set_status())(ctx, 200)", N, |_| { let f = black_box(fns); black_box((f.set_status())(ctx, 200)); });
    #[cfg(feature = "v2")]
    {
        time("prefix ref, optional field: f.log() -> Option, call", N, |_| { let f = black_box(fns); if let Some(l) = f.log() { black_box(l(ctx, RStr::from(""))); } });
        time("size-prefixed, optional field: field!(t, log), call", N, |_| { let t = black_box(&fns_s); if let Some(l) = field!(t, HostFnsS, log) { black_box(l(ctx, RStr::from(""))); } });
        time("plain repr(C) table: (t.log)(ctx, \"\") (no check)", N, |_| { let t = black_box(&fns_s); black_box((t.log)(ctx, RStr::from(""))); });
    }
    println!("per-request struct construction (on the stack):");
    time("ReqS {{size,..}} + read content_length", N, |i| { let r = black_box(ReqS { size: std::mem::size_of::<ReqS>() as u32, method: 1, content_length: i as i64, #[cfg(feature = "v2")] tls_version: 0x304 }); black_box(r.content_length); });
    time("WithMetadata::new(Req) + as_prefix + content_length()", N, |i| { let w = WithMetadata::new(Req { method: 1, content_length: i as i64, #[cfg(feature = "v2")] tls_version: 0x304 }); let r = ReqRef(unsafe { black_box(&w).as_prefix() }); black_box(r.content_length()); });
    // end-to-end through the loaded app
    let h = header(path, "app");
    let m = h.init_root_module::<AppModRef>().expect("load");
    let lib = unsafe { libloading::Library::new(path) }.unwrap();
    let root: &'static AppRootS = unsafe { &**lib.get::<*const AppRootS>(b"app_s").unwrap() };
    std::mem::forget(lib);
    let app = (m.init())(1);
    println!("end to end: host -> app.handle -> 2 host calls (+ v2 optional log/tls reads):");
    let handle = m.handle();
    time("P: cached handle fn, per-call WithMetadata Req", N, |i| {
        let w = WithMetadata::new(Req { method: 1, content_length: i as i64, #[cfg(feature = "v2")] tls_version: 0x304 });
        let r = ReqRef(unsafe { w.as_prefix() });
        black_box(handle(app, r, fns, ctx));
    });
    time("P: module.handle() accessor each call", N, |i| {
        let w = WithMetadata::new(Req { method: 1, content_length: i as i64, #[cfg(feature = "v2")] tls_version: 0x304 });
        let r = ReqRef(unsafe { w.as_prefix() });
        black_box((black_box(m).handle())(app, r, fns, ctx));
    });
    let hs = root.handle;
    time("S: cached handle fn, per-call ReqS", N, |i| {
        let r = ReqS { size: std::mem::size_of::<ReqS>() as u32, method: 1, content_length: i as i64, #[cfg(feature = "v2")] tls_version: 0x304 };
        black_box(hs(app, &r, &fns_s, ctx));
    });
}
