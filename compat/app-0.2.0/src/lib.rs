//! `compat-app-0-2-0`: an app built against the first 0.2 SDK (the frozen
//! copy in `compat/app-sdk-0.2.0`), which every later host of the line
//! must load and serve: `tests/integration/compat.rs` checks it does, each
//! route exercising a part of the ABI.
//!
//! - `/`: the worker facts and the request line, as text.
//! - `/headers`: every value of `X-Thing`, and the client's address.
//! - `POST /echo`: the body back, with the status and header the client
//!   asks for in `?status=` and `X-Reply`.
//! - `/stream?n=N`: N parts, streamed.
//! - `/file`: the first 64 bytes of the running program, sent as a file.
//! - `/error`: an error returned with `?` (the host answers 500).
//! - `/panic`: a panic (the host answers 500).

use std::{fs::File, io::Write};

use app_sdk::{export_app, App, Request, Response, Worker};

/// The fixture app; remembers what its worker was told.
#[derive(Default)]
struct Compat {
    facts: String,
}

impl App for Compat {
    fn init(&mut self, worker: &Worker<'_>) -> app_sdk::Result {
        self.facts = format!(
            "worker {} threads {} generation {} probe {} app {}",
            worker.id, worker.threads, worker.generation, worker.probe, worker.app_name
        );
        Ok(())
    }

    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
        match req.path() {
            "/" => {
                let text = format!(
                    "built against app-sdk 0.2.0\n{}\n{} {} {}\n",
                    self.facts,
                    req.method(),
                    req.target(),
                    req.version().as_str()
                );
                resp.header("Content-Type", "text/plain").body(text)?;
            }
            "/headers" => {
                let things: Vec<String> = req
                    .headers()
                    .filter(|h| h.name.eq_ignore_ascii_case("x-thing"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    .collect();
                let text = format!("{} from {}\n", things.join(","), req.remote_addr());
                resp.body(text)?;
            }
            "/echo" => {
                let body = req.body_bytes()?;
                let status = req
                    .query_param("status")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(200);
                let reply = req.header_str("x-reply").unwrap_or("none").to_owned();
                resp.status(status).header("X-Reply", reply).body(body)?;
            }
            "/stream" => {
                let n: u32 = req
                    .query_param("n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(3);
                let mut out = resp.stream();
                for i in 1..=n.min(1000) {
                    out.write_all(format!("part {i}\n").as_bytes())?;
                }
            }
            "/file" => {
                let me = std::env::current_exe()?;
                let file = File::open(me)?;
                resp.file_range(&file, 0, 64)?;
            }
            "/error" => {
                std::fs::read("/nonexistent/compat-app")?;
            }
            "/panic" => panic!("compat panic"),
            _ => {
                resp.status(404).body("not found\n")?;
            }
        }
        Ok(())
    }
}

export_app!(app = Compat::default());
