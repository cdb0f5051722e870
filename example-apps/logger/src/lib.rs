//! `logger`: logs through the host with the `log` crate, `tracing`, and
//! [`app_sdk::log`], so the tests can check what reaches the error log.
//!
//! Built with app-sdk's `log` and `tracing` features. Each route takes a
//! `token` (`?token=T`) that it puts in every message it logs, and answers
//! `200 text/plain` once it has logged:
//! - `/log`: one `log` record at each level, target `logger::db`
//!   (`error T` … `trace T`), then `done T` at error level;
//! - `/tracing`: one `tracing` event at each level, target
//!   `logger::tracing`, with the fields `user` and `n` (`error T user=alice
//!   n=3` …), then `done T` at error level;
//! - `/thread`: `in a thread T` from a thread it starts (no request id),
//!   then `in the request T` from the request's thread, both at warn level;
//! - `/plain`: `plain T` through `app_sdk::log` at error level, target
//!   `logger::plain`;
//! - `/levels`: the `log` and `tracing` max levels the app runs with.
//!
//! `init` logs `init in worker N` (or `init in the probe`) at info level
//! with `log`, and prints `init prints` to stdout and stderr.
//!
//! Serve it with `host target/debug/liblogger.so:app`.

use app_sdk::{export_app, App, Level, Request, Response, Worker};

/// Logs what each route says, then answers `logged`.
struct Logger;

/// Target of the `log` records of `/log`.
const DB: &str = "logger::db";
/// Target of the `tracing` events of `/tracing`.
const TRACING: &str = "logger::tracing";

impl App for Logger {
    fn init(&mut self, worker: &Worker<'_>) -> app_sdk::Result {
        if worker.probe {
            log::info!("init in the probe");
        } else {
            log::info!("init in worker {}", worker.id);
        }
        println!("init prints (stdout)");
        eprintln!("init prints (stderr)");
        Ok(())
    }

    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
        let token: String = req.query_param("token").unwrap_or_default().into_owned();
        let t = token.as_str();
        let answer = match req.path() {
            "/log" => {
                log::error!(target: DB, "error {t}");
                log::warn!(target: DB, "warn {t}");
                log::info!(target: DB, "info {t}");
                log::debug!(target: DB, "debug {t}");
                log::trace!(target: DB, "trace {t}");
                log::error!(target: DB, "done {t}");
                "logged".to_owned()
            }
            "/tracing" => {
                tracing::error!(target: TRACING, user = "alice", n = 3, "error {t}");
                tracing::warn!(target: TRACING, user = "alice", n = 3, "warn {t}");
                tracing::info!(target: TRACING, user = "alice", n = 3, "info {t}");
                tracing::debug!(target: TRACING, user = "alice", n = 3, "debug {t}");
                tracing::trace!(target: TRACING, user = "alice", n = 3, "trace {t}");
                tracing::error!(target: TRACING, "done {t}");
                "logged".to_owned()
            }
            "/thread" => {
                let token = token.clone();
                std::thread::spawn(move || log::warn!("in a thread {token}"))
                    .join()
                    .map_err(|_| "the logging thread panicked")?;
                log::warn!("in the request {t}");
                "logged".to_owned()
            }
            "/plain" => {
                app_sdk::log(Level::Error, "logger::plain", &format!("plain {t}"));
                "logged".to_owned()
            }
            "/levels" => format!(
                "log={} tracing={}",
                log::max_level(),
                tracing::level_filters::LevelFilter::current()
            ),
            _ => {
                resp.status(404).body("no such route\n")?;
                return Ok(());
            }
        };
        resp.header("Content-Type", "text/plain").body(answer)?;
        Ok(())
    }
}

export_app!(app = Logger);
