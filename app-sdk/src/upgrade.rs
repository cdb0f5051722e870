//! Raw protocol upgrades: a `101 Switching Protocols` answer, after which
//! the handler owns the connection's byte stream.
//!
//! For protocols the host does not speak itself (WebSocket it runs for the
//! app: see [`crate::websocket`]). The stream goes through the host, so it
//! works over TLS too. The handler keeps its thread for as long as it
//! keeps the stream: a worker with `--threads 1` serves nothing else
//! meanwhile, and `--timeout` still bounds the whole call. The connection
//! closes when `handle` returns.

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
