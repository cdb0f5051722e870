//! The response an app handler writes: status, headers, then one kind of body.
//!
//! The host frames the body: a whole body gets `Content-Length`, a stream gets
//! chunked transfer coding (or close-delimited on HTTP/1.0), a file is sent with
//! `sendfile`. `Date`, `Server` and `Connection` are the host's; framing headers
//! the app sets are ignored, since only the host knows how it frames the body.

use std::{fs::File, io, os::fd::AsFd};

use crate::abi::{HostIo, IoResult};

fn to_io(result: IoResult) -> io::Result<usize> {
    result
        .into_result()
        .map_err(|e| io::Error::other(e.into_string()))
}

/// The response being written. Valid for one call of [`App::handle`](crate::App::handle).
///
/// If the handler sends no body, the host sends the status and headers set so
/// far with an empty body.
pub struct Response<'a> {
    pub(crate) io: HostIo<'a>,
    /// Whether the request is a `HEAD` (the host then sends no body).
    head: bool,
}

impl<'a> Response<'a> {
    #[doc(hidden)]
    pub fn __new(io: HostIo<'a>, head: bool) -> Self {
        Response { io, head }
    }

    /// Whether the request being answered is a `HEAD`: the host sends the
    /// status and headers (with the length the body would have) and no body.
    pub fn is_head(&self) -> bool {
        self.head
    }

    /// Sets the status code (default `200`). Ignored once the body has started.
    pub fn status(&mut self, code: u16) -> &mut Self {
        let _ = self.io.set_status(code);
        self
    }

    /// Sets the status code, reporting whether the host accepted it (it
    /// refuses codes outside 200-999 and changes after the body started).
    pub fn try_status(&mut self, code: u16) -> io::Result<()> {
        to_io(self.io.set_status(code)).map(drop)
    }

    /// Adds a header. The host refuses (and logs) names or values that are not
    /// valid HTTP, such as a value with a line break, and headers added after
    /// the body has started.
    pub fn header(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        let _ = self.try_header(name, value);
        self
    }

    /// Adds a header, reporting whether the host accepted it.
    pub fn try_header(
        &mut self,
        name: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> io::Result<()> {
        to_io(self.io.add_header(name.as_ref(), value.as_ref())).map(drop)
    }

    /// Sends `body` as the whole body and ends the response.
    ///
    /// A failure here means the client went away; the host already knows, so
    /// most handlers ignore the result.
    pub fn body(&mut self, body: impl AsRef<[u8]>) -> io::Result<()> {
        to_io(self.io.send_body(body.as_ref())).map(drop)
    }

    /// Starts a streamed body: each write goes to the client as it is made.
    pub fn stream(&mut self) -> BodyWriter<'_> {
        BodyWriter { io: self.io }
    }

    /// Sends the whole of `file` (from its start) as the body.
    pub fn file(&mut self, file: &File) -> io::Result<()> {
        let len = file.metadata()?.len();
        self.file_range(file, 0, len)
    }

    /// Sends `len` bytes of `file` starting at `offset` as the body.
    pub fn file_range(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        to_io(self.io.send_file(file.as_fd(), offset, len)).map(drop)
    }
}

/// Writes a streamed response body; see [`Response::stream`].
pub struct BodyWriter<'r> {
    io: HostIo<'r>,
}

impl io::Write for BodyWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        to_io(self.io.write_chunk(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        // Each chunk is written through to the socket by the host.
        Ok(())
    }
}
