//! `slow`: sleeps `?ms=` milliseconds (default 1000), then answers 200.
//!
//! Shows how the process model behaves under slow requests (each worker
//! handles one at a time) and drives the graceful-stop and timeout tests.
//! Serve it with `host -w 2 target/debug/libslow.so`.

use std::{thread, time::Duration};

use app_sdk::{export_app, App, Request, Response};

/// Sleep when `?ms=` is absent.
const DEFAULT_MS: u64 = 1000;
/// Longest sleep one request may ask for (10 minutes).
const MAX_MS: u64 = 600_000;

/// Sleeps, then answers.
struct Slow;

impl App for Slow {
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
        let ms = req
            .query_param("ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MS)
            .min(MAX_MS);
        thread::sleep(Duration::from_millis(ms));
        resp.header("Content-Type", "text/plain")
            .body(format!("slept {ms} ms\n"))?;
        Ok(())
    }
}

export_app!(app = Slow);

#[cfg(test)]
mod tests {
    use app_sdk::testing::{self, TestRequest};

    use super::*;

    #[test]
    fn answers_after_the_sleep_asked_for() {
        let resp = testing::call(Slow, TestRequest::get("/?ms=5"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "slept 5 ms\n");
        // Not a number: the default (1 s) is used, and said.
        let resp = testing::call(Slow, TestRequest::get("/?ms=soon"));
        assert_eq!(resp.text(), format!("slept {DEFAULT_MS} ms\n"));
    }
}
