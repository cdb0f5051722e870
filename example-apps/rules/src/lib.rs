//! `rules`: an app that breaks the host's response rules on request, and
//! panics or fails on request, to show (and test) what the host does about
//! it: each refusal is an error the app sees and a warning in the host's
//! log; `--panic-policy` decides a panicking worker's fate.
//!
//! What to do comes from request headers, so values need no URL decoding:
//!
//! - `/try-status` (`X-Status: N`): sets the status with `try_status`; a
//!   refusal is reported in the `X-Refused` response header (status 200).
//! - `/status` (`X-Status: N`): `status(N).body(..)?`: a refusal fails the
//!   call (500).
//! - `/try-header` (`X-Name`, `X-Value`): adds the header with
//!   `try_header`; a refusal is reported in `X-Refused`. The body is
//!   `X-Body` (default `done\n`).
//! - `/header` (`X-Name`, `X-Value`): `header(..).body(..)?`.
//! - `/length` (`X-Length`, `X-Body`): sets `Content-Length: X-Length` and
//!   sends `X-Body` whole with `?` (a mismatch: 500).
//! - `/length-ignored` (`X-Length`, `X-Body`): the same, ignoring what
//!   `body` returns.
//! - `/two-lengths`: `Content-Length: 5` twice; the second's refusal is in
//!   `X-Refused`, the body `done\n`.
//! - `/stream` (`X-Length`, `X-Write`): a stream of declared length
//!   `X-Length` (`stream_with_length`) or, without it, of unknown length;
//!   writes `X-Write` bytes of `a` three at a time, stopping at the first
//!   refused write (printed to stderr: the host logs it).
//! - `/file` (`X-Length`, `X-File`): sends the file `X-File` with
//!   `Content-Length: X-Length` set first.
//! - `/limited`: reads the body with `body_bytes(16)?`: a longer one is
//!   the client's mistake, answered 413 by the SDK (not an app error).
//! - `/decoded/…`: `path_decoded()?`: a path that does not decode to UTF-8
//!   is answered 400 by the SDK.
//! - `/flood`: streams 64 KiB writes until one fails and returns that error
//!   with `?` (a client that went away: logged at info, not as an error).
//! - `/wait` (`X-Wait-File`, `X-Started-File`): creates the file
//!   `X-Started-File` (so a test knows the request is in the app), then
//!   waits (10 ms at a time, 60 s at most) until `X-Wait-File` exists, and
//!   answers its pid: a request in flight.
//! - `/panic`: panics with "rules boom".
//! - `/error`: returns an error, "rules error".
//! - anything else: `200` with the worker's pid.
//!
//! Serve it with `host target/debug/librules.so`.

use std::io::Write;

use app_sdk::{export_app, App, Request, Response};

/// Longest a `/wait` request waits.
const WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);
/// Bytes per write of `/flood`.
const FLOOD_WRITE: usize = 64 * 1024;
/// Most writes `/flood` makes (6.4 GB: a client reading it all is not expected).
const FLOOD_WRITES: usize = 100_000;

/// Breaks the response rules on request.
struct Rules;

/// The request header `name` as text ("" when absent).
fn given<'a>(req: &Request<'a>, name: &str) -> &'a str {
    req.header_str(name).unwrap_or("")
}

/// The request header `name` as a number (0 when absent or not a number).
fn number(req: &Request<'_>, name: &str) -> u64 {
    given(req, name).trim().parse().unwrap_or(0)
}

/// Reports `result` in the `X-Refused` header when it is an error.
fn report(resp: &mut Response<'_>, result: std::io::Result<()>) {
    if let Err(e) = result {
        resp.header("X-Refused", e.to_string());
    }
}

impl App for Rules {
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
        let pid = format!("{}\n", std::process::id());
        match req.path() {
            "/try-status" => {
                let result = resp.try_status(number(req, "X-Status") as u16);
                report(resp, result);
                resp.body("done\n")?;
            }
            "/status" => {
                resp.status(number(req, "X-Status") as u16).body("sent\n")?;
            }
            "/try-header" => {
                let result = resp.try_header(given(req, "X-Name"), given(req, "X-Value"));
                report(resp, result);
                let body = req.header_str("X-Body").unwrap_or("done\n");
                resp.body(body)?;
            }
            "/header" => {
                resp.header(given(req, "X-Name"), given(req, "X-Value"))
                    .body("sent\n")?;
            }
            "/length" => {
                resp.header("Content-Length", given(req, "X-Length"))
                    .body(given(req, "X-Body"))?;
            }
            "/length-ignored" => {
                let _ = resp
                    .header("Content-Length", given(req, "X-Length"))
                    .body(given(req, "X-Body"));
            }
            "/two-lengths" => {
                resp.header("Content-Length", "5");
                let result = resp.try_header("Content-Length", "5");
                report(resp, result);
                resp.body("done\n")?;
            }
            "/stream" => {
                let mut left = number(req, "X-Write") as usize;
                let mut writer = match req.header_str("X-Length") {
                    Some(n) => resp.stream_with_length(n.trim().parse().unwrap_or(0)),
                    None => resp.stream(),
                };
                while left > 0 {
                    let part = left.min(3);
                    if let Err(e) = writer.write_all(&b"aaa"[..part]) {
                        eprintln!("rules: stream write refused: {e}");
                        break;
                    }
                    left -= part;
                }
            }
            "/file" => {
                let file = std::fs::File::open(given(req, "X-File"))?;
                resp.header("Content-Length", given(req, "X-Length"))
                    .file(&file)?;
            }
            "/flood" => {
                let mut writer = resp.stream();
                let block = vec![b'x'; FLOOD_WRITE];
                for _ in 0..FLOOD_WRITES {
                    writer.write_all(&block)?;
                }
            }
            "/wait" => {
                std::fs::write(given(req, "X-Started-File"), b"")?;
                let path = std::path::Path::new(given(req, "X-Wait-File"));
                let started = std::time::Instant::now();
                while !path.exists() && started.elapsed() < WAIT_LIMIT {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                resp.body(pid)?;
            }
            "/panic" => panic!("rules boom"),
            "/error" => return Err("rules error".into()),
            "/limited" => {
                // A client's mistake returned with `?`: the SDK answers 413.
                let body = req.body_bytes(16)?;
                resp.body(body)?;
            }
            p if p.starts_with("/decoded/") => {
                // A path that is not UTF-8 once decoded: the SDK answers 400.
                let path = req.path_decoded()?;
                resp.body(path.as_bytes())?;
            }
            _ => {
                resp.body(pid)?;
            }
        }
        Ok(())
    }
}

export_app!(app = Rules);
