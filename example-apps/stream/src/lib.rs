//! `stream`: response bodies of the three kinds the host sends, to show them.
//!
//! - `app`: a streamed (chunked) response of `?n=` parts. Part `i` is
//!   `part {i}\n`; `?delay_ms=` waits between parts, so a client sees them
//!   arrive one by one. Serve it with `host target/debug/libstream.so`.
//! - `bytes`: a large response of `?n=` bytes (default 1 MiB), byte `i` being
//!   `i % 251` (so a client can check every byte, and a shifted or reordered
//!   piece shows). By default it is one buffered body; with `?file=1` the
//!   same bytes come from a file, sent with `sendfile` (the app writes the
//!   file, unlinks it, hands it over and closes it before the client has
//!   read it). Serve it with `host target/debug/libstream.so:bytes`; the slow
//!   reader tests and `bench/slow_readers.py` use it.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::Duration,
};

use app_sdk::{export_app, App, Request, Response};

/// Parts sent when `?n=` is absent.
const DEFAULT_PARTS: u32 = 5;
/// Most parts one response may ask for.
const MAX_PARTS: u32 = 10_000;
/// Longest pause between parts, in milliseconds.
const MAX_DELAY_MS: u64 = 10_000;

/// Bytes `bytes` answers when `?n=` is absent.
const DEFAULT_BYTES: usize = 1024 * 1024;
/// Most bytes one `bytes` response may ask for.
const MAX_BYTES: usize = 64 * 1024 * 1024;
/// The period of the byte pattern: a prime, so no buffer size hides a shift.
const PATTERN_PERIOD: usize = 251;

/// Streams numbered parts.
struct Stream;

impl App for Stream {
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
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
            // An error here means the client went away: `?` ends the call.
            out.write_all(format!("part {i}\n").as_bytes())?;
        }
        Ok(())
    }
}

/// `n` bytes of the pattern: byte `i` is `i % 251`.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % PATTERN_PERIOD) as u8).collect()
}

/// Files made so far by this process (for unique names).
static FILES: AtomicU64 = AtomicU64::new(0);

/// An unlinked temporary file holding `body`.
fn file_of(body: &[u8]) -> std::io::Result<File> {
    let n = FILES.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("stream-bytes-{}-{n}", std::process::id()));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let _ = std::fs::remove_file(&path);
    file.write_all(body)?;
    Ok(file)
}

/// Answers `?n=` bytes of the pattern, buffered or (`?file=1`) from a file.
struct Bytes;

impl App for Bytes {
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
        let n = req
            .query_param("n")
            .and_then(|n| n.parse().ok())
            .unwrap_or(DEFAULT_BYTES)
            .min(MAX_BYTES);
        let body = pattern(n);
        resp.header("Content-Type", "application/octet-stream");
        if req.query_param("file").as_deref() == Some("1") {
            match file_of(&body) {
                // The file is closed when it goes out of scope, right after.
                Ok(file) => {
                    let _ = resp.file(&file);
                }
                Err(e) => {
                    let _ = resp
                        .status(500)
                        .header("Content-Type", "text/plain")
                        .body(format!("cannot make the file: {e}\n"));
                }
            }
        } else {
            resp.body(&body)?;
        }
        Ok(())
    }
}

export_app!(app = Stream, bytes = Bytes);

#[cfg(test)]
mod tests {
    use app_sdk::testing::{self, BodyKind, TestRequest};

    use super::*;

    #[test]
    fn streams_numbered_parts_one_write_each() {
        let resp = testing::call(Stream, TestRequest::get("/?n=3"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.kind, BodyKind::Stream);
        assert_eq!(
            resp.parts,
            [
                b"part 1\n".to_vec(),
                b"part 2\n".to_vec(),
                b"part 3\n".to_vec()
            ]
        );
        let resp = testing::call(Stream, TestRequest::get("/"));
        assert_eq!(resp.parts.len(), DEFAULT_PARTS as usize);
    }

    #[test]
    fn bytes_come_whole_or_from_a_file_with_the_same_pattern() {
        let whole = testing::call(Bytes, TestRequest::get("/?n=1000"));
        assert_eq!(whole.kind, BodyKind::Whole);
        assert_eq!(whole.body, pattern(1000));
        let file = testing::call(Bytes, TestRequest::get("/?n=1000&file=1"));
        assert_eq!(file.kind, BodyKind::File);
        assert_eq!(file.content_length, Some(1000));
        assert_eq!(file.body, whole.body);
        assert!(file.outcome.is_done());
    }
}
