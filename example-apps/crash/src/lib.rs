//! `crash`: fails in every way an app can, to show (and test) crash containment.
//!
//! - `/panic`: panics with "boom": the SDK turns it into a 500; the worker
//!   is replaced gracefully (`--panic-policy retire`, the default) or lives
//!   on (`--panic-policy serve`).
//! - `/panic-after-body`: streams a first part, then panics: the response is cut short.
//! - `/segv`: writes through a null pointer: the worker dies of SIGSEGV.
//! - `/abort`: aborts: the worker dies of SIGABRT.
//! - `/exit`: exits the process with status 7.
//! - `/panic-in-thread`: a thread the handler starts panics with
//!   "background boom" (outside any call from the host, so the SDK hands
//!   it to Rust's own hook, which prints it: the host logs it), then `200`.
//! - `/caught-panic`: panics with "caught inside" and catches it itself,
//!   then `200`: nothing is reported.
//! - `/resume-unwind`: raises the payload "resumed payload" with
//!   `resume_unwind`, which no panic hook sees: the host must log that
//!   payload, not the message of an earlier panic.
//! - anything else: `200 ok`.
//!
//! - `CRASH_INIT_FAIL=always` in the environment: init fails everywhere, so
//!   the host refuses the app at start-up.
//! - `CRASH_INIT_FAIL=/some/file`: init fails in workers (not in the host's
//!   probe) while that file exists, to show boot failures and their backoff.
//! - `CRASH_AFTER_BOOT_MS=20`: every worker (not the probe) aborts that
//!   many milliseconds after its init returned, a crash loop after boot, to
//!   show the host's restart back-off.
//! - `CRASH_INIT_WAIT=/some/file`: init in workers (not in the probe) waits
//!   while that file exists (checking every 10 ms), a build whose workers
//!   boot slowly, to show that the old build's pool is kept meanwhile.
//! - `CRASH_INIT_CLOSE_FDS=1`: init in workers (not in the probe) closes
//!   every descriptor above stderr, as a careless app might: the worker
//!   cannot serve, and must not be reported ready.
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
/// Environment variable: milliseconds after init at which a worker aborts (see the crate docs).
const AFTER_BOOT_ENV: &str = "CRASH_AFTER_BOOT_MS";
/// Environment variable naming a file while which init waits (see the crate docs).
const INIT_WAIT_ENV: &str = "CRASH_INIT_WAIT";
/// Environment variable: init closes every descriptor above stderr (see the crate docs).
const CLOSE_FDS_ENV: &str = "CRASH_INIT_CLOSE_FDS";
/// Environment variable naming a command init starts in the background (see the crate docs).
const INIT_SPAWN_ENV: &str = "CRASH_INIT_SPAWN";

/// Crashes on request.
struct Crash;

impl App for Crash {
    fn init(&mut self, worker: &Worker<'_>) -> app_sdk::Result {
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
        // The host's probe runs init as worker 0; real workers count from 1.
        if worker.id > 0 {
            if let Ok(path) = std::env::var(INIT_WAIT_ENV) {
                while std::path::Path::new(&path).exists() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            if std::env::var_os(CLOSE_FDS_ENV).is_some() {
                close_descriptors();
            }
            if let Some(ms) = std::env::var(AFTER_BOOT_ENV)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            {
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                    std::process::abort();
                });
            }
        }
        match std::env::var(INIT_FAIL_ENV) {
            Ok(v) if v == "always" => Err("init fails (CRASH_INIT_FAIL=always)".into()),
            // The host's probe runs init as worker 0; real workers count from 1.
            Ok(path) if worker.id > 0 && std::path::Path::new(&path).exists() => {
                Err(format!("init fails while {path} exists").into())
            }
            _ => Ok(()),
        }
    }

    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
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
            "/panic-in-thread" => {
                let joined = std::thread::spawn(|| panic!("background boom")).join();
                let _ = resp
                    .header("Content-Type", "text/plain")
                    .body(if joined.is_err() {
                        "the thread panicked\n"
                    } else {
                        "?\n"
                    });
            }
            "/caught-panic" => {
                let caught = std::panic::catch_unwind(|| panic!("caught inside")).is_err();
                let _ = resp.header("Content-Type", "text/plain").body(if caught {
                    "caught\n"
                } else {
                    "?\n"
                });
            }
            "/resume-unwind" => std::panic::resume_unwind(Box::new("resumed payload")),
            "/error" => {
                // An error returned with `?`: answered 500, logged with its cause.
                std::fs::read("/nonexistent/crash-app-config")
                    .map_err(|e| ConfigError { source: e })?;
            }
            "/exit" => std::process::exit(7),
            _ => {
                let _ = resp.header("Content-Type", "text/plain").body("ok\n");
            }
        }
        Ok(())
    }
}

/// What `/error` fails with: an error with a source, as apps' errors have.
#[derive(Debug)]
struct ConfigError {
    source: std::io::Error,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot read the config")
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Closes every descriptor of the process above stderr.
fn close_descriptors() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|&fd| fd > 2)
                .collect()
        })
        .unwrap_or_default();
    for fd in open {
        // The directory's own descriptor is closed by now: skip what is gone.
        if std::fs::metadata(format!("/proc/self/fd/{fd}")).is_err() {
            continue;
        }
        // SAFETY: none needed for the demonstration: closing descriptors the
        // host owns is exactly the misbehaviour this shows; `fd` was open.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

export_app!(app = Crash);

#[cfg(test)]
mod tests {
    use app_sdk::testing::{self, Outcome, TestClient, TestRequest};

    use super::*;

    /// One client for several calls: a panic leaves the instance serving,
    /// as it leaves the worker.
    fn client() -> TestClient {
        TestClient::new(Crash).expect("the crash app starts")
    }

    #[test]
    fn a_panic_is_a_500_and_the_app_serves_on() {
        let client = client();
        let resp = client.call(TestRequest::get("/panic"));
        assert_eq!(resp.status, 500);
        assert_eq!(resp.text(), testing::FAILED_BODY);
        let Outcome::Panicked(message) = &resp.outcome else {
            panic!("expected a panic, got {:?}", resp.outcome)
        };
        assert!(message.starts_with("boom (at "), "{message}");
        assert!(message.contains("lib.rs"), "{message}");
        let resp = client.call(TestRequest::get("/"));
        assert_eq!((resp.status, resp.text()), (200, "ok\n".to_owned()));
    }

    #[test]
    fn a_panic_after_the_body_started_cuts_it_short() {
        let resp = client().call(TestRequest::get("/panic-after-body"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "first part\n");
        assert!(resp.cut_short);
        assert!(matches!(&resp.outcome, Outcome::Panicked(m) if m.starts_with("boom after")));
    }

    #[test]
    fn an_error_is_a_500_with_its_cause() {
        let resp = client().call(TestRequest::get("/error"));
        assert_eq!(resp.status, 500);
        let Outcome::Failed(message) = &resp.outcome else {
            panic!("expected an error, got {:?}", resp.outcome)
        };
        assert!(
            message.starts_with("cannot read the config: "),
            "the cause is kept: {message}"
        );
    }

    #[test]
    fn resume_unwind_reports_its_own_payload() {
        let client = client();
        // A panic with a message first, so a stale message would show.
        assert!(!client.call(TestRequest::get("/panic")).outcome.is_done());
        let resp = client.call(TestRequest::get("/resume-unwind"));
        assert_eq!(resp.outcome, Outcome::Panicked("resumed payload".into()));
    }

    #[test]
    fn panics_caught_or_in_threads_are_not_the_calls() {
        let client = client();
        let resp = client.call(TestRequest::get("/caught-panic"));
        assert_eq!(
            (resp.text(), resp.outcome),
            ("caught\n".to_owned(), Outcome::Done)
        );
        let resp = client.call(TestRequest::get("/panic-in-thread"));
        assert_eq!(resp.text(), "the thread panicked\n");
        assert!(resp.outcome.is_done());
    }
}
