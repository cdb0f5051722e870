//! `hello`: the smallest app. Answers `200 text/plain` "Hello, World!" on every path.
//!
//! Serve it with `host target/debug/libhello.so:app`. Building it with
//! `HELLO_GREETING=... cargo build -p hello` changes the greeting, which the
//! reload tests use to tell two builds apart.

use app_sdk::{export_app, App, Request, Response};

/// What every request gets: `HELLO_GREETING` at build time, else "Hello, World!".
const GREETING: &str = match option_env!("HELLO_GREETING") {
    Some(greeting) => greeting,
    None => "Hello, World!",
};

/// Says hello to every request.
struct Hello;

impl App for Hello {
    fn handle(&self, _req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
        resp.header("Content-Type", "text/plain").body(GREETING)?;
        Ok(())
    }
}

export_app!(app = Hello);
