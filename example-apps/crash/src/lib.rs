//! `crash`: fails in every way an app can, to show (and test) crash containment.
//!
//! - `/panic`: panics with "boom": the SDK turns it into a 500, the worker lives on.
//! - `/panic-after-body`: streams a first part, then panics: the response is cut short.
//! - `/segv`: writes through a null pointer: the worker dies of SIGSEGV.
//! - `/abort`: aborts: the worker dies of SIGABRT.
//! - `/exit`: exits the process with status 7.
//! - anything else: `200 ok`.
//!
//! - `CRASH_INIT_FAIL=always` in the environment: init fails everywhere, so
//!   the host refuses the app at start-up.
//! - `CRASH_INIT_FAIL=/some/file`: init fails in workers (not in the host's
//!   probe) while that file exists, to show boot failures and their backoff.
//! - `CRASH_INIT_SPAWN="sleep 20"` in the environment: init (in the host's
//!   probe and in every worker) starts that command in the background and
//!   does not wait for it, as an app that launches a helper process does; it
//!   shows that the helper inherits none of the host's private descriptors
//!   (the host does not wait for it to exit).
//!
//! The host replaces each dead worker; other workers' requests are untouched.
//! Serve it with `host -w 2 target/debug/libcrash.so`.

use std::io::Write;

use app_sdk::{export_app, App, Request, Response, Worker};

/// Environment variable that makes init fail (see the crate docs).
const INIT_FAIL_ENV: &str = "CRASH_INIT_FAIL";
/// Environment variable naming a command init starts in the background (see the crate docs).
const INIT_SPAWN_ENV: &str = "CRASH_INIT_SPAWN";

/// Crashes on request.
struct Crash;

impl App for Crash {
    fn init(&mut self, worker: &Worker<'_>) -> Result<(), String> {
        if let Ok(command) = std::env::var(INIT_SPAWN_ENV) {
            let mut words = command.split_whitespace();
            if let Some(program) = words.next() {
                // Started and left running: never waited for.
                std::process::Command::new(program)
                    .args(words)
                    .spawn()
                    .map_err(|e| format!("cannot start `{command}`: {e}"))?;
            }
        }
        match std::env::var(INIT_FAIL_ENV) {
            Ok(v) if v == "always" => Err("init fails (CRASH_INIT_FAIL=always)".into()),
            // The host's probe runs init as worker 0; real workers count from 1.
            Ok(path) if worker.id > 0 && std::path::Path::new(&path).exists() => {
                Err(format!("init fails while {path} exists"))
            }
            _ => Ok(()),
        }
    }

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
