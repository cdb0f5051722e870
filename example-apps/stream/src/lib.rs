//! `stream`: a streamed (chunked) response of `?n=` parts, to show streaming.
//!
//! Part `i` is `part {i}\n`; `?delay_ms=` waits between parts, so a client
//! sees them arrive one by one. Serve it with `host target/debug/libstream.so`.

use std::{io::Write, thread, time::Duration};

use app_sdk::{export_app, App, Request, Response};

/// Parts sent when `?n=` is absent.
const DEFAULT_PARTS: u32 = 5;
/// Most parts one response may ask for.
const MAX_PARTS: u32 = 10_000;
/// Longest pause between parts, in milliseconds.
const MAX_DELAY_MS: u64 = 10_000;

/// Streams numbered parts.
struct Stream;

impl App for Stream {
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) {
        let parts = req
            .query_param("n")
            .and_then(|n| n.parse().ok())
            .unwrap_or(DEFAULT_PARTS)
            .min(MAX_PARTS);
        let delay = req
            .query_param("delay_ms")
            .and_then(|d| d.parse().ok())
            .unwrap_or(0u64)
            .min(MAX_DELAY_MS);
        resp.header("Content-Type", "text/plain");
        let mut out = resp.stream();
        for i in 1..=parts {
            if i > 1 && delay > 0 {
                thread::sleep(Duration::from_millis(delay));
            }
            if out.write_all(format!("part {i}\n").as_bytes()).is_err() {
                return; // the client went away
            }
        }
    }
}

export_app!(app = Stream);
