//! `crash`: fails in every way an app can, to show (and test) crash containment.
//!
//! - `/panic`: panics with "boom": the SDK turns it into a 500, the worker lives on.
//! - `/panic-after-body`: streams a first part, then panics: the response is cut short.
//! - `/segv`: writes through a null pointer: the worker dies of SIGSEGV.
//! - `/abort`: aborts: the worker dies of SIGABRT.
//! - `/exit`: exits the process with status 7.
//! - anything else: `200 ok`.
//!
//! The host replaces each dead worker; other workers' requests are untouched.
//! Serve it with `host -w 2 target/debug/libcrash.so`.

use std::io::Write;

use app_sdk::{export_app, App, Request, Response};

/// Crashes on request.
struct Crash;

impl App for Crash {
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) {
        match req.path() {
            "/panic" => panic!("boom"),
            "/panic-after-body" => {
                let _ = resp.stream().write_all(b"first part\n");
                panic!("boom after the body started");
            }
            "/segv" => {
                // SAFETY: none; this is the point: the worker must die of SIGSEGV.
                unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u8>(), 1) };
            }
            "/abort" => std::process::abort(),
            "/exit" => std::process::exit(7),
            _ => {
                let _ = resp.header("Content-Type", "text/plain").body("ok\n");
            }
        }
    }
}

export_app!(app = Crash);
