//! Raw protocol upgrades: a `101 Switching Protocols` answer, after which
//! the handler owns the connection's byte stream.
//!
//! For protocols the host does not speak itself (WebSocket it runs for the
//! app: see [`crate::websocket`]). The stream goes through the host, so it
//! works over TLS too. The handler keeps its thread for as long as it
//! keeps the stream: a worker with `--threads 1` serves nothing else
//! meanwhile, and `--timeout` still bounds the whole call (past it the
//! connection is shut; with one thread the worker is replaced, as for any
//! stuck request). The connection closes when `handle` returns.
//!
//! The host switches only to a protocol the request offered (`Connection:
//! upgrade` and `Upgrade: NAME`, compared whole and in any case, over
//! HTTP/1.1), never to `websocket`, before anything of the response was
//! sent, without a `Content-Length`, and once the request body (if any)
//! was read to its end; otherwise the switch fails and nothing is sent (a
//! handler that returns the error with `?` is answered `500`).
//!
//! Reads wait for the client without an idle limit and return what came
//! after the request head first; `0` once the client closed its side, or
//! once the worker is asked to stop (a graceful stop, a retirement), so the
//! handler can finish. A write returns once its bytes are out; a client
//! that takes nothing for 30 s fails it.
//!
//! ```
//! use std::io::{Read, Write};
//! use app_sdk::{App, Request, Response};
//!
//! /// Echoes the bytes of the `echo` protocol until the client closes.
//! struct Echo;
//!
//! impl App for Echo {
//!     fn handle(&self, _req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
//!         let mut stream = resp.upgrade("echo")?;
//!         let mut buf = [0u8; 16 * 1024];
//!         loop {
//!             match stream.read(&mut buf)? {
//!                 0 => return Ok(()),
//!                 n => stream.write_all(&buf[..n])?,
//!             }
//!         }
//!     }
//! }
//! # #[cfg(feature = "testing")]
//! # {
//! # use app_sdk::testing::{call, TestRequest};
//! # let req = TestRequest::get("/").header("Connection", "upgrade").header("Upgrade", "echo");
//! # let resp = call(Echo, req.raw_input("hi"));
//! # assert_eq!((resp.status, resp.text().as_str()), (101, "hi"));
//! # }
//! ```

use std::io;

use crate::abi::HostIo;

/// The raw byte stream of an upgraded connection, from
/// [`Response::upgrade`](crate::Response::upgrade): reads what the client
/// sends (blocking; `0` once it closes its side) and writes bytes as they
/// are, at once.
pub struct Upgraded<'a> {
    io: HostIo<'a>,
}

impl<'a> Upgraded<'a> {
    pub(crate) fn new(io: HostIo<'a>) -> Upgraded<'a> {
        Upgraded { io }
    }
}

fn to_io(result: crate::abi::IoResult) -> io::Result<usize> {
    result
        .into_result()
        .map_err(|e| io::Error::other(e.into_string()))
}

impl io::Read for Upgraded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        to_io(self.io.read_body(buf))
    }
}

impl io::Write for Upgraded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        to_io(self.io.write_chunk(buf)).map(|_| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Each write goes out before it returns.
        Ok(())
    }
}
