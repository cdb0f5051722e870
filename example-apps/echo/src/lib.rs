//! `echo`: answers `200 application/json` describing the request exactly as the app saw it.
//!
//! Fields: `method`, `target` (the raw request-target), `path`, `query`,
//! `version`, `headers` (`[name, value]` pairs in received order and case),
//! `body_b64` (the decoded body, base64), `pid` (the worker's), `remote_addr`,
//! `local_addr`, `scheme` and `request_id`; with `?env=NAME`, also `env`, the value of that
//! environment variable in the worker; with `?print=TEXT`, the app prints TEXT
//! to its stdout and stderr. The tests use it to check what reaches an app.
//!
//! Serve it with `host target/debug/libecho.so:app`.

use std::io::Read;

use app_sdk::{export_app, App, Request, Response};
use base64::Engine;
use serde_json::{json, Value};

/// Describes each request back to its client.
struct Echo;

impl App for Echo {
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
        let mut body = Vec::new();
        if let Err(e) = req.body().read_to_end(&mut body) {
            let _ = resp
                .status(400)
                .header("Content-Type", "text/plain")
                .body(format!("cannot read the body: {e}\n"));
            return Ok(());
        }
        let headers: Vec<Value> = req
            .headers()
            .map(|h| json!([h.name, String::from_utf8_lossy(h.value)]))
            .collect();
        if let Some(text) = req.query_param("print") {
            // Shows where an app's output goes: the host's error log, tagged.
            println!("{text} (stdout)");
            eprintln!("{text} (stderr)");
        }
        let env = req.query_param("env").map(|name| std::env::var(name).ok());
        let mut description = json!({
            "method": req.method(),
            "target": req.target(),
            "path": req.path(),
            "query": req.query(),
            "version": req.version().as_str(),
            "headers": headers,
            "body_b64": base64::engine::general_purpose::STANDARD.encode(&body),
            "pid": std::process::id(),
            "remote_addr": req.remote_addr(),
            "local_addr": req.local_addr(),
            "scheme": req.scheme(),
            "request_id": req.request_id(),
        });
        if let Some(value) = env {
            description["env"] = json!(value);
        }
        let _ = resp
            .header("Content-Type", "application/json")
            .body(description.to_string());
        Ok(())
    }
}

export_app!(app = Echo);
