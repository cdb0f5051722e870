//! `hello`: the smallest app. Answers `200 text/plain` "Hello, World!" on every path.
//!
//! Serve it with `host target/debug/libhello.so:app`.

use app_sdk::{export_app, App, Request, Response};

/// Says hello to every request.
struct Hello;

impl App for Hello {
    fn handle(&self, _req: &mut Request<'_>, resp: &mut Response<'_>) {
        let _ = resp
            .header("Content-Type", "text/plain")
            .body("Hello, World!");
    }
}

export_app!(app = Hello);
