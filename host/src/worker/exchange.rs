//! One request/response exchange: the host side of the app's `Request` and `Response`.
//!
//! While the app handles a request it calls back into the host through the
//! functions of [`host_fns`](super::host_fns) to read the body and write the
//! response. Those calls land here,
//! on an [`Exchange`] that borrows the connection's buffers for the length of
//! the call. Small responses are only appended to the connection's output
//! buffer, so pipelined responses leave in one write. Large bodies and files
//! are written through at once, as far as the socket takes them; what it
//! does not take is handed to the event loop within the budgets
//! ([`crate::worker::held`]), so the call ends without waiting for the
//! client. Bodies that stream (and a complete response whose rest does not
//! fit the budgets) are written through blocking until the socket is ready
//! (a client that makes no progress for 30 s is dropped).
//!
//! The exchange gathers facts rather than deciding the connection's fate:
//! [`Exchange::finish`] reports them as an [`Outcome`], and
//! [`crate::worker::outcome::keep_alive`] weighs them. Before its first write
//! it claims the response from the timeout watch ([`Watch`]), so a 504 for a
//! request past `--timeout` and the app's own bytes never both go out.
//!
//! It also holds the app to the response rules (the README's "Response
//! rules"): a status outside 200-999, a header the host owns or cannot
//! honour, a body that does not match the app's `Content-Length`, each is
//! refused: an error the app's call returns, and one warning in the log
//! naming the worker and the request id. An app's `Content-Length` is
//! honoured: it frames a whole body (which must match it), a file, a HEAD
//! response's head, and a stream (no chunked coding; writing past it is
//! refused, ending short of it closes the connection).

use std::{
    io,
    os::fd::{BorrowedFd, RawFd},
    time::{Duration, Instant},
};

use crate::{
    http::{
        body::{ChunkedDecoder, LengthBody},
        response::{self, check_header, Framing, Head, HeaderCheck},
        upgrade::{self, Offer},
    },
    scoreboard::Slot,
    websocket::{handshake, port::Port},
    worker::held::{Held, HeldFile, HoldLimits},
    worker::outcome::{keep_alive, Flags, Outcome},
    worker::stream::Stream,
    worker::timeout::Watch,
};

/// Bodies up to this size are appended to the output buffer (and may share a
/// write with pipelined responses); larger ones are written through directly.
pub const INLINE_BODY_MAX: usize = 64 * 1024;

/// Bytes read from the socket at a time while the app reads a body.
const BODY_READ_CHUNK: usize = 64 * 1024;
/// How long a read of an upgraded connection's raw stream waits at a time
/// before it looks whether the worker was asked to stop (the read itself
/// waits without limit: see [`Exchange::upgrade`]).
pub const RAW_READ_SLICE: Duration = Duration::from_secs(1);
/// How long a streamed body may arrive slowly before --body-min-rate applies.
pub const BODY_RATE_GRACE: Duration = Duration::from_secs(20);

/// How the request body is delimited, and how much of it is left.
pub enum BodyState {
    /// No body, or all of it read.
    Done,
    /// A `Content-Length` body.
    Length(LengthBody),
    /// A chunked body.
    Chunked(ChunkedDecoder),
    /// The body could not be read; the connection must close.
    Failed(String),
}

/// Where the response is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Head not sent; status and headers can still change.
    Open,
    /// The app accepted the WebSocket handshake: the head will be a `101`,
    /// to which headers may still be added; no status, no body.
    Accepted,
    /// The app switched protocols ([`Exchange::upgrade`]): the `101` is
    /// sent and the connection is a raw byte stream until the call ends.
    Raw,
    /// Head sent, body streaming.
    Streaming {
        /// Chunks are framed (HTTP/1.1) rather than close-delimited.
        chunked: bool,
        /// With the app's `Content-Length`: the bytes still owed.
        left: Option<u64>,
    },
    /// Response complete.
    Done,
}

/// What the worker knows of a request when it calls the app.
pub struct ExchangeInit<'a> {
    /// The connection's stream (its socket, through TLS on a TLS connection).
    pub stream: Stream<'a>,
    /// Raw body bytes that arrived with the head (after any `prefix`).
    pub pending: &'a [u8],
    /// Body bytes already decoded before the call (a read-ahead chunked body).
    pub prefix: &'a [u8],
    /// The rest of the body.
    pub body: BodyState,
    /// `100 Continue` is still owed before the body is read.
    pub continue_pending: bool,
    /// The request head's wish to keep the connection (see [`keep_alive`]).
    pub wish: bool,
    /// The worker's state when it took the request.
    pub flags: Flags,
    /// The request was HEAD.
    pub is_head: bool,
    /// The client speaks HTTP/1.0.
    pub http10: bool,
    /// The current `Date` value.
    pub date: &'a str,
    /// How long socket I/O may wait without progress.
    pub io_timeout: Duration,
    /// Lowest rate of a streamed body, bytes per second (0: none).
    pub min_rate: u64,
    /// The worker's scoreboard slot.
    pub slot: &'a Slot,
    /// The timeout watch of the calling thread's lane.
    pub watch: Watch<'a>,
    /// The budgets for a response's rest handed to the event loop.
    pub hold: HoldLimits,
    /// The worker's number, for the log.
    pub worker: u32,
    /// The request's id ("" when request ids are off), for the log.
    pub request_id: &'a str,
    /// The `Sec-WebSocket-Key` of a valid WebSocket handshake.
    pub websocket_key: Option<&'a [u8]>,
    /// The loop's WebSocket side: where sends go, where ids come from.
    pub port: &'a mut Port,
    /// The protocols the request offers to switch to ([`Offer::of`]).
    pub upgrade_offer: Option<Offer<'a>>,
}

/// Reusable buffers an exchange borrows from the worker and the connection.
pub struct ExchangeBuffers<'a> {
    /// Body bytes read during the exchange.
    pub staged: &'a mut Vec<u8>,
    /// The connection's output buffer.
    pub out: &'a mut Vec<u8>,
    /// The app's header lines.
    pub headers: &'a mut Vec<u8>,
    /// Where the connection holds the rest of a response for the event loop.
    pub held: &'a mut Held,
}

/// The host's state for one request.
pub struct Exchange<'a> {
    /// The connection's stream.
    io: Stream<'a>,
    /// Decoded body bytes handed over before the socket's.
    prefix: &'a [u8],
    prefix_pos: usize,
    /// Body bytes that arrived with the head.
    pending: &'a [u8],
    /// How many of `pending` were consumed.
    pending_pos: usize,
    /// Bytes read from the socket during the exchange (body, then maybe the next request).
    staged: &'a mut Vec<u8>,
    /// How many of `staged` were consumed.
    staged_pos: usize,
    /// The connection's output buffer.
    pub out: &'a mut Vec<u8>,
    /// The request body.
    body: BodyState,
    /// `Expect: 100-continue` still to be answered before reading the body.
    continue_pending: bool,
    /// The response status.
    status: u16,
    /// The app's header lines, `Name: value\r\n` each.
    headers: &'a mut Vec<u8>,
    has_date: bool,
    has_server: bool,
    /// The app's `Content-Length`, if it set one.
    app_length: Option<u64>,
    /// The worker's number and the request's id, for the log.
    worker: u32,
    request_id: &'a str,
    /// The response state.
    mode: Mode,
    /// Body bytes sent.
    bytes_sent: u64,
    /// The head's wish to keep the connection.
    wish: bool,
    /// The worker's state when it took the request.
    flags: Flags,
    /// What happened so far (status and counts are filled in by `finish`).
    facts: Outcome,
    /// The request was HEAD: send heads, never bodies.
    is_head: bool,
    /// The client speaks HTTP/1.0.
    http10: bool,
    /// The current `Date` value.
    date: &'a str,
    /// How long socket I/O may wait without progress.
    io_timeout: Duration,
    /// Lowest rate of a streamed body (0: none), and when and how much of it came.
    min_rate: u64,
    body_started: Option<Instant>,
    body_received: u64,
    /// The worker's slot: a stop requested mid-request closes the connection.
    slot: &'a Slot,
    /// The lane's timeout watch: once a byte is written, a timeout can no longer answer 504.
    watch: Watch<'a>,
    /// The response was claimed from the watch (see [`Watch::claim`]).
    claimed: bool,
    /// The budgets for a response's rest handed to the event loop.
    hold: HoldLimits,
    /// Where the connection holds that rest.
    held: &'a mut Held,
    /// The `Sec-WebSocket-Key` of a valid WebSocket handshake.
    websocket_key: Option<&'a [u8]>,
    /// The loop's WebSocket side.
    port: &'a mut Port,
    /// The id of the WebSocket connection the app accepted.
    accepted: Option<u64>,
    /// The protocols the request offers to switch to.
    upgrade_offer: Option<Offer<'a>>,
    /// An upgraded connection's client closed its side.
    raw_eof: bool,
}

impl Exchange<'_> {
    fn source(&self) -> &[u8] {
        if self.pending_pos < self.pending.len() {
            &self.pending[self.pending_pos..]
        } else {
            &self.staged[self.staged_pos..]
        }
    }

    fn advance(&mut self, n: usize) {
        if self.pending_pos < self.pending.len() {
            self.pending_pos += n;
        } else {
            self.staged_pos += n;
        }
    }

    /// Reads more of the body from the socket into `staged`, blocking until the deadline.
    fn fill(&mut self) -> Result<(), String> {
        if self.continue_pending {
            self.continue_pending = false;
            self.out.extend_from_slice(response::CONTINUE);
        }
        self.flush()
            .map_err(|e| format!("cannot write to the client: {e}"))?;
        if self.staged_pos == self.staged.len() {
            self.staged.clear();
            self.staged_pos = 0;
        }
        let started = *self.body_started.get_or_insert_with(Instant::now);
        let elapsed = started.elapsed();
        if self.min_rate > 0
            && elapsed > BODY_RATE_GRACE
            && self.body_received < self.min_rate.saturating_mul(elapsed.as_secs())
        {
            self.facts.client_gone = true;
            return Err(format!(
                "the client sent the body too slowly ({} bytes in {} s; --body-min-rate {})",
                self.body_received,
                elapsed.as_secs(),
                self.min_rate
            ));
        }
        loop {
            match self.io.read_into(self.staged, BODY_READ_CHUNK) {
                Ok(0) => {
                    self.facts.client_gone = true;
                    return Err("the client closed the connection before the body ended".into());
                }
                Ok(n) => {
                    self.body_received += n as u64;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self
                    .io
                    .wait_readable(Instant::now() + self.io_timeout)
                    .map_err(|e| {
                        self.facts.client_gone = true;
                        format!("reading the body: {e}")
                    })?,
                Err(e) => {
                    self.facts.client_gone = true;
                    return Err(format!("reading the body: {e}"));
                }
            }
        }
    }

    /// Reads decoded body bytes into `dst`; `Ok(0)` at the end of the body.
    /// With `may_block` false it stops (with `Ok(0)`) where the buffered bytes end.
    pub fn read_body(&mut self, dst: &mut [u8], may_block: bool) -> Result<usize, String> {
        if dst.is_empty() {
            return Ok(0);
        }
        if self.mode == Mode::Raw {
            return self.read_raw(dst);
        }
        if self.prefix_pos < self.prefix.len() {
            let n = dst.len().min(self.prefix.len() - self.prefix_pos);
            dst[..n].copy_from_slice(&self.prefix[self.prefix_pos..self.prefix_pos + n]);
            self.prefix_pos += n;
            return Ok(n);
        }
        loop {
            match &self.body {
                BodyState::Done => return Ok(0),
                BodyState::Failed(why) => return Err(why.clone()),
                _ => {}
            }
            if self.source().is_empty() {
                if !may_block {
                    return Ok(0);
                }
                if let Err(why) = self.fill() {
                    self.body = BodyState::Failed(why.clone());
                    return Err(why);
                }
                continue;
            }
            let src: &[u8] = if self.pending_pos < self.pending.len() {
                &self.pending[self.pending_pos..]
            } else {
                &self.staged[self.staged_pos..]
            };
            match &mut self.body {
                BodyState::Length(length) => {
                    let n = length.take(src.len().min(dst.len()));
                    dst[..n].copy_from_slice(&src[..n]);
                    let done = length.is_done();
                    self.advance(n);
                    if done {
                        self.body = BodyState::Done;
                    }
                    return Ok(n);
                }
                BodyState::Chunked(decoder) => match decoder.decode(src, dst) {
                    Ok(d) => {
                        self.advance(d.consumed);
                        if d.done {
                            self.body = BodyState::Done;
                        }
                        if d.written > 0 || d.done {
                            return Ok(d.written);
                        }
                        if d.consumed == 0 {
                            // Nothing decodable and nothing consumed: a decoder bug; stop.
                            let why = "the chunked body could not be decoded".to_owned();
                            self.body = BodyState::Failed(why.clone());
                            return Err(why);
                        }
                    }
                    Err(e) => {
                        let why = format!("invalid chunked body: {e}");
                        self.body = BodyState::Failed(why.clone());
                        return Err(why);
                    }
                },
                BodyState::Done | BodyState::Failed(_) => {}
            }
        }
    }

    /// Consumes what is left of the body from the bytes already received.
    /// Returns whether the body ended (so the connection can be reused).
    fn discard_buffered_body(&mut self) -> bool {
        if matches!(self.body, BodyState::Done) {
            return true;
        }
        let mut scratch = [0u8; 4096];
        loop {
            match self.read_body(&mut scratch, false) {
                Ok(0) => return matches!(self.body, BodyState::Done),
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Claims the response before its first byte is written: from then on a
    /// timeout can no longer answer 504. Fails (the client counts as gone)
    /// if the timeout already answered it.
    fn claim(&mut self) -> io::Result<()> {
        if !self.claimed {
            if !self.watch.claim() {
                self.facts.client_gone = true;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request ran past --timeout and was answered 504",
                ));
            }
            self.claimed = true;
        }
        Ok(())
    }

    /// Writes the output buffer out, blocking until the deadline.
    fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.claim()?;
        let result = self.io.write_all(&[self.out], self.io_timeout);
        self.out.clear();
        if result.is_err() {
            self.facts.client_gone = true;
        }
        result
    }

    /// Writes the output buffer and then `parts`, blocking until the deadline.
    fn write_through(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        self.claim()?;
        let mut all: [&[u8]; 4] = [&[]; 4];
        all[0] = self.out;
        for (slot, part) in all[1..].iter_mut().zip(parts) {
            *slot = part;
        }
        let result = self.io.write_all(&all, self.io_timeout);
        self.out.clear();
        if result.is_err() {
            self.facts.client_gone = true;
        }
        result
    }

    /// Writes the output buffer and then `body`, the last of a complete
    /// response, as far as the socket takes them now. The rest stays in the
    /// output buffer for the event loop if it fits the budgets; otherwise
    /// it is written blocking until the deadline, as a stream is.
    fn write_or_hold(&mut self, body: &[u8]) -> io::Result<()> {
        self.claim()?;
        let written = match self.io.write_ready(&[self.out, body]) {
            Ok(n) => n,
            Err(e) => {
                self.out.clear();
                self.facts.client_gone = true;
                return Err(e);
            }
        };
        let head = self.out.len();
        let (head_done, body_done) = (written.min(head), written.saturating_sub(head));
        let left = (head - head_done) + (body.len() - body_done);
        if left == 0 {
            self.out.clear();
            return Ok(());
        }
        if self.hold(left as u64) {
            self.out.drain(..head_done);
            self.out.reserve_exact(body.len() - body_done);
            self.out.extend_from_slice(&body[body_done..]);
            return Ok(());
        }
        let result = self.io.write_all(
            &[&self.out[head_done..], &body[body_done..]],
            self.io_timeout,
        );
        self.out.clear();
        if result.is_err() {
            self.facts.client_gone = true;
        }
        result
    }

    /// Takes `bytes` of the budgets for output the event loop will write
    /// after the call; false if they do not fit (then the caller waits for
    /// the client, as before).
    fn hold(&mut self, bytes: u64) -> bool {
        if bytes > self.hold.per_conn as u64 {
            self.slot.note_over_budget();
            return false;
        }
        if !self.slot.hold_output(bytes, self.hold.per_worker) {
            return false;
        }
        self.held.charge(bytes);
        true
    }

    /// Appends the response head with the given framing to the output buffer.
    fn commit(&mut self, framing: Framing) {
        // Asked to stop while the app ran: this response is the connection's last.
        self.facts.stop_requested = self.slot.stop_requested();
        let framing = match self.app_length {
            // A 304 may say how long the representation is (RFC 9110 §8.6).
            Some(n) if self.status == 304 => Framing::Length(n),
            _ if response::status_has_no_body(self.status) => Framing::NoBody,
            _ => framing,
        };
        self.facts.close_delimited = framing == Framing::Close;
        let close = !keep_alive(self.wish, self.flags, &self.facts);
        response::write_head(
            self.out,
            &Head {
                status: self.status,
                framing,
                close,
                announce_keep_alive: self.http10 && !close,
                date: (!self.has_date).then_some(self.date),
                server: !self.has_server,
                app_headers: self.headers,
            },
        );
    }

    fn body_allowed(&self) -> bool {
        !self.is_head && !response::status_has_no_body(self.status)
    }

    /// Refuses what the app asked for: logs it once (a warning naming the
    /// worker and the request) and returns it as the error the app's call
    /// gets.
    fn refuse<T>(&self, why: String) -> Result<T, String> {
        if self.request_id.is_empty() {
            log::warn!("app response refused: {why} (worker {})", self.worker);
        } else {
            log::warn!(
                "app response refused: {why} (worker {}, id {})",
                self.worker,
                self.request_id
            );
        }
        Err(why)
    }

    /// Sets the response status, as the app's `Response::status` does:
    /// 200 to 999 (informational responses, 1xx, are not supported).
    pub fn set_status(&mut self, status: u16) -> Result<(), String> {
        if self.mode != Mode::Open {
            return self.refuse(format!(
                "status {status}: the response has started; the status can no longer change"
            ));
        }
        if !(200..=999).contains(&status) {
            return self.refuse(format!(
                "status {status} is not a final status (200-999; 1xx are not supported)"
            ));
        }
        self.status = status;
        Ok(())
    }

    /// Adds a response header as the app would (checked the same way).
    /// `Date` and `Server` replace the host's; `Connection: close` closes
    /// the connection after the response (`keep-alive` changes nothing);
    /// `Content-Length` frames the body (see [`Exchange::send_body`],
    /// [`Exchange::write_chunk`], [`Exchange::send_file`]); anything else of
    /// the host's is refused.
    pub fn add_header(&mut self, name: &[u8], value: &[u8]) -> Result<(), String> {
        let shown = || String::from_utf8_lossy(name);
        if !matches!(self.mode, Mode::Open | Mode::Accepted) {
            return self.refuse(format!(
                "header {:?}: the response has started; headers can no longer be added",
                shown()
            ));
        }
        match check_header(name, value) {
            HeaderCheck::Invalid(why) => {
                return self.refuse(format!("header {:?}: {why}", shown()));
            }
            HeaderCheck::TransferEncoding => {
                return self.refuse(format!(
                    "header {:?}: the host frames the body (set Content-Length for a known length)",
                    shown()
                ));
            }
            HeaderCheck::ContentLength(n) => {
                if let Some(first) = self.app_length {
                    return self.refuse(format!(
                        "a second Content-Length ({n}; the first was {first})"
                    ));
                }
                self.app_length = Some(n);
                return Ok(());
            }
            HeaderCheck::Connection { close } => {
                self.facts.app_close |= close;
                return Ok(());
            }
            HeaderCheck::Date => self.has_date = true,
            HeaderCheck::Server => self.has_server = true,
            HeaderCheck::Keep => {}
        }
        self.push_header(name, value.trim_ascii());
        Ok(())
    }

    /// Whether a body of `len` bytes, sent whole, matches the app's
    /// `Content-Length`: equal, or none at all where no body goes out
    /// (HEAD, 304: the head alone says how long it would be). `None`
    /// means it does; else why not.
    fn length_mismatch(&self, len: u64) -> Option<String> {
        let declared = self.app_length?;
        if self.status == 204 {
            return Some(format!(
                "Content-Length: {declared} on a 204 response, which has no body"
            ));
        }
        let head_only = self.is_head || self.status == 304;
        if len == declared || (head_only && len == 0) {
            return None;
        }
        Some(format!(
            "the body is {len} bytes but the app set Content-Length: {declared}"
        ))
    }

    /// Appends the header line `name: value`.
    fn push_header(&mut self, name: &[u8], value: &[u8]) {
        self.headers.extend_from_slice(name);
        self.headers.extend_from_slice(b": ");
        self.headers.extend_from_slice(value);
        self.headers.extend_from_slice(b"\r\n");
    }

    /// Adds a header of the host's own whose name was checked at start-up
    /// and whose value is valid by construction (a request id: made up, or
    /// a request header value the parser accepted, so without control
    /// characters). Skips the per-byte check an app's header gets.
    pub fn add_host_header(&mut self, name: &[u8], value: &[u8]) {
        debug_assert_eq!(check_header(name, value), HeaderCheck::Keep);
        self.push_header(name, value);
    }

    /// Sends `body` as the whole body, as the app's `Response::body` does.
    ///
    /// With the app's `Content-Length`, the body must be that long (on HEAD
    /// it may also be empty): else it is refused and nothing is sent, the
    /// response still open. The host does not send the body with the length
    /// corrected: it cannot tell which of the two the app got wrong (a
    /// length computed before a body was compressed, say), and a refusal
    /// reaches the app as an error, so a handler that returns it with `?`
    /// is answered 500.
    pub fn send_body(&mut self, body: &[u8]) -> Result<usize, String> {
        if self.mode != Mode::Open {
            return self.refuse("a body: the response has already started".into());
        }
        if let Some(why) = self.length_mismatch(body.len() as u64) {
            return self.refuse(why);
        }
        let length = self.app_length.unwrap_or(body.len() as u64);
        self.commit(Framing::Length(length));
        self.mode = Mode::Done;
        if !self.body_allowed() || body.is_empty() {
            return Ok(body.len());
        }
        if body.len() <= INLINE_BODY_MAX {
            self.out.extend_from_slice(body);
        } else {
            self.write_or_hold(body).map_err(|e| e.to_string())?;
        }
        self.bytes_sent = body.len() as u64;
        Ok(body.len())
    }

    /// Writes one part of a streamed body, as the app's stream does.
    ///
    /// With the app's `Content-Length`, the stream is that long: sent
    /// without chunked coding, a write past it refused (nothing of it
    /// sent), and a stream that ends short of it closes the connection
    /// (see [`Exchange::finish`]).
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<usize, String> {
        let chunked = match self.mode {
            Mode::Done => return self.refuse("a stream write: the response has ended".into()),
            Mode::Accepted => {
                return self
                    .refuse("a stream write: the response is the WebSocket handshake's 101".into())
            }
            Mode::Raw => return self.write_raw(data),
            Mode::Streaming { chunked, .. } => chunked,
            Mode::Open => {
                if self.status == 204 && self.app_length.is_some() {
                    return self
                        .refuse("Content-Length on a 204 response, which has no body".to_owned());
                }
                let (framing, chunked) = match self.app_length {
                    Some(n) => (Framing::Length(n), false),
                    None if self.http10 => (Framing::Close, false),
                    None => (Framing::Chunked, true),
                };
                self.commit(framing);
                self.mode = Mode::Streaming {
                    chunked,
                    left: self.app_length,
                };
                chunked
            }
        };
        if self.facts.client_gone {
            return Err("the client went away".into());
        }
        if data.is_empty() || !self.body_allowed() {
            return Ok(data.len());
        }
        if let Mode::Streaming {
            left: Some(left), ..
        } = self.mode
        {
            if data.len() as u64 > left {
                return self.refuse(format!(
                    "a stream write of {} bytes: only {left} of the app's Content-Length: {} are left",
                    data.len(),
                    self.app_length.unwrap_or_default()
                ));
            }
            self.mode = Mode::Streaming {
                chunked,
                left: Some(left - data.len() as u64),
            };
        }
        let result = if chunked {
            response::chunk_size_line(self.out, data.len());
            self.write_through(&[data, b"\r\n"])
        } else {
            self.write_through(&[data])
        };
        result.map_err(|e| e.to_string())?;
        self.bytes_sent += data.len() as u64;
        Ok(data.len())
    }

    /// Sends `len` bytes of the app's file `fd` from `offset` as the whole
    /// body, as the app's `Response::file` does: with `sendfile`, as far as
    /// the socket takes it now; the rest is handed to the event loop as a
    /// duplicate descriptor and an offset (within the budgets: otherwise it
    /// is sent blocking until the deadline).
    pub fn send_file(&mut self, fd: RawFd, offset: u64, len: u64) -> Result<usize, String> {
        if self.mode != Mode::Open {
            return self.refuse("a file: the response has already started".into());
        }
        if fd < 0 {
            return self.refuse("invalid file descriptor".into());
        }
        if let Some(why) = self.length_mismatch(len) {
            return self.refuse(why);
        }
        self.commit(Framing::Length(self.app_length.unwrap_or(len)));
        self.mode = Mode::Done;
        if !self.body_allowed() {
            // The head alone: the event loop writes it with the rest of the output.
            return Ok(0);
        }
        // SAFETY: the app lends `fd` for the length of this call (the SDK
        // passes the descriptor of a `File` it holds across it), and the
        // borrow ends with the call: what outlives it is a duplicate.
        let file = unsafe { BorrowedFd::borrow_raw(fd) };
        let end = offset.saturating_add(len);
        let mut at = offset;
        let result = self.send_file_or_hold(file, &mut at, end);
        self.bytes_sent = at - offset;
        match result {
            Ok(()) => {
                // Sent, or held for the event loop: either way, all of it is on its way.
                self.bytes_sent = len;
                Ok(len as usize)
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    // The file is shorter than announced: the framing is broken.
                    self.facts.cut_short = true;
                }
                self.facts.client_gone = true;
                Err(e.to_string())
            }
        }
    }

    /// Writes the output buffer, then bytes `*at..end` of `file`, as far as
    /// the socket takes them now; holds the rest for the event loop, or
    /// (over budget) sends it blocking until the deadline.
    fn send_file_or_hold(
        &mut self,
        file: BorrowedFd<'_>,
        at: &mut u64,
        end: u64,
    ) -> io::Result<()> {
        self.claim()?;
        let written = self.io.write_ready(&[self.out])?;
        self.out.drain(..written);
        let head_left = self.out.len();
        if head_left == 0 && self.io.send_file_ready(file, at, end)? {
            return Ok(());
        }
        // The socket is full: hand the rest to the event loop if it fits.
        match HeldFile::new(file, *at, end) {
            Ok(held) => {
                if self.hold(head_left as u64) {
                    self.held.set_file(held);
                    return Ok(());
                }
            }
            Err(e) => {
                // Out of descriptors, most likely: wait for the client instead.
                log::debug!("cannot hold a file for a slow client: {e}");
                self.slot.note_over_budget();
            }
        }
        let head_result = self.io.write_all(&[self.out], self.io_timeout);
        self.out.clear();
        head_result?;
        while !self.io.send_file_ready(file, at, end)? {
            self.io.wait_writable(Instant::now() + self.io_timeout)?;
        }
        // Over TLS, the file's last records may still be in the session.
        while !self.io.flush()? {
            self.io.wait_writable(Instant::now() + self.io_timeout)?;
        }
        Ok(())
    }

    /// Completes the response after the app returned: an empty body if none was
    /// sent, the last chunk of a stream. A response the app's
    /// `Content-Length` cannot frame is answered 500 if nothing was sent
    /// (the app set a length and sent no body), or cut short (a stream that
    /// ended before its length: the connection closes, since the client
    /// would wait for the rest).
    fn complete(&mut self) {
        match self.mode {
            Mode::Accepted => {
                self.status = 101;
                response::write_head(
                    self.out,
                    &Head {
                        status: 101,
                        framing: Framing::NoBody,
                        close: false,
                        announce_keep_alive: false,
                        date: (!self.has_date).then_some(self.date),
                        server: !self.has_server,
                        app_headers: self.headers,
                    },
                );
                self.mode = Mode::Done;
            }
            // The 101 went out at the switch; the connection closes now.
            Mode::Raw => self.mode = Mode::Done,
            Mode::Open => {
                if let Some(why) = self.length_mismatch(0) {
                    let _ = self.refuse::<()>(format!("nothing was sent ({why}): answered 500"));
                    self.fail();
                } else {
                    let _ = self.send_body(&[]);
                }
            }
            Mode::Streaming { chunked, left } => {
                if chunked && self.body_allowed() {
                    self.out.extend_from_slice(response::LAST_CHUNK);
                }
                if let Some(left) = left.filter(|&l| l > 0 && self.body_allowed()) {
                    let _ = self.refuse::<()>(format!(
                        "the stream ended {left} bytes short of the app's Content-Length: {}: closing the connection",
                        self.app_length.unwrap_or_default()
                    ));
                    self.facts.cut_short = true;
                }
                self.mode = Mode::Done;
            }
            Mode::Done => {}
        }
    }

    /// Whether the client went away (or stalled past the I/O timeout)
    /// during the exchange: an app's error after it is no fault of the app.
    pub fn client_gone(&self) -> bool {
        self.facts.client_gone
    }

    /// Marks this response as the connection's last: the worker retires
    /// after it (`--panic-policy retire`).
    pub fn close_after(&mut self) {
        self.facts.worker_retiring = true;
    }

    /// Answers `500` after a panic if nothing was sent; otherwise the response
    /// is cut short and the connection must close.
    pub fn fail(&mut self) {
        if matches!(self.mode, Mode::Open | Mode::Accepted) {
            // An accepted handshake is refused after all: the app failed.
            self.mode = Mode::Open;
            self.accepted = None;
            self.headers.clear();
            self.has_date = false;
            self.has_server = false;
            self.app_length = None;
            self.status = 500;
            let _ = self.add_header(b"Content-Type", b"text/plain; charset=utf-8");
            let _ = self.send_body(b"Internal Server Error\n");
        } else {
            self.facts.cut_short = true;
            self.mode = Mode::Done;
        }
    }

    /// Ends the exchange after the app returned (and after [`Exchange::fail`]
    /// if it panicked): completes the response, consumes what is left of the
    /// body from the bytes already received, and reports what happened. The
    /// caller drops the exchange right after. (It borrows rather than
    /// consumes: the app held the exchange's address during the call, so a
    /// move by value compiled to a copy of the whole exchange, 64 instructions
    /// a request by callgrind.)
    pub fn finish(&mut self) -> Outcome {
        self.complete();
        let body_complete = self.discard_buffered_body();
        Outcome {
            status: self.status,
            bytes_sent: self.bytes_sent,
            pending_used: self.pending_pos,
            staged_used: self.staged_pos,
            body_unread: !body_complete,
            websocket: self.accepted,
            ..self.facts
        }
    }

    /// Accepts the request's WebSocket handshake with subprotocol
    /// `protocol` (empty: none), as the app's `Response::accept_websocket`
    /// does: the head becomes a `101` with the handshake's headers, and the
    /// new connection's id is returned.
    pub fn websocket_accept(&mut self, protocol: &[u8]) -> Result<usize, String> {
        let Some(key) = self.websocket_key else {
            return self
                .refuse("accept_websocket: the request is not a WebSocket handshake".into());
        };
        if self.mode != Mode::Open {
            return self.refuse("accept_websocket: the response has already started".into());
        }
        if !self.port.enabled {
            return self.refuse(
                "accept_websocket: the app has no WebSocket event handler (built against an app-sdk older than 0.2.2)"
                    .into(),
            );
        }
        if !protocol.is_empty() && !handshake::valid_protocol(protocol) {
            return self.refuse(format!(
                "accept_websocket: {:?} is not a subprotocol name",
                String::from_utf8_lossy(protocol)
            ));
        }
        let id = self.port.ids.next_id();
        self.push_header(b"Upgrade", b"websocket");
        self.push_header(b"Connection", b"Upgrade");
        self.push_header(
            b"Sec-WebSocket-Accept",
            handshake::accept_key(key).as_bytes(),
        );
        if !protocol.is_empty() {
            self.push_header(b"Sec-WebSocket-Protocol", protocol);
        }
        self.mode = Mode::Accepted;
        self.accepted = Some(id);
        Ok(id as usize)
    }

    /// Switches the connection to `protocol`, as the app's
    /// `Response::upgrade` does: writes `101 Switching Protocols` with
    /// `Connection: Upgrade`, `Upgrade: <protocol>` and the app's headers
    /// at once (blocking, with the I/O timeout), after which the
    /// connection is a raw byte stream for the rest of the call:
    /// [`Exchange::read_body`] reads what the client sends (what came after
    /// the head first), [`Exchange::write_chunk`] writes bytes as they are.
    /// The connection closes when the call ends: it never carries HTTP
    /// again.
    ///
    /// Refused (nothing sent) unless the request offered `protocol` in
    /// `Upgrade` with `Connection: upgrade` over HTTP/1.1; for `websocket`,
    /// which the host runs itself (`accept_websocket`); once the response
    /// has begun; with the app's `Content-Length`; and while part of the
    /// request body is unread (its bytes would pass for the new protocol's).
    ///
    /// How long it may last: reads wait for the client without an idle
    /// limit (a raw protocol may be quiet for long), writes give up after
    /// the I/O timeout without progress, and the whole stream is part of
    /// the call, so `--timeout` bounds it as it bounds any request (past
    /// it, the worker answers as for a stuck request: the connection is
    /// shut). A worker told to stop (a graceful stop, a retirement) ends a
    /// waiting read as if the client had closed its side (`Ok(0)`), so the
    /// app can finish and the worker go.
    pub fn upgrade(&mut self, protocol: &[u8]) -> Result<usize, String> {
        let shown = String::from_utf8_lossy(protocol);
        if upgrade::is_websocket(protocol) {
            return self.refuse(format!(
                "upgrade to {shown:?}: the host runs WebSocket itself (use accept_websocket)"
            ));
        }
        if !upgrade::valid_protocol(protocol) {
            return self.refuse(format!("upgrade to {shown:?}: not a protocol name"));
        }
        if self.http10 {
            return self.refuse(format!(
                "upgrade to {shown:?}: an HTTP/1.0 request cannot switch protocols"
            ));
        }
        match self.upgrade_offer {
            Some(offer) if offer.lists(protocol) => {}
            Some(_) => {
                return self.refuse(format!(
                    "upgrade to {shown:?}: the request's Upgrade does not offer it"
                ))
            }
            None => {
                return self.refuse(format!(
                    "upgrade to {shown:?}: the request asked for no upgrade (Connection: upgrade and Upgrade)"
                ))
            }
        }
        if self.mode != Mode::Open {
            return self.refuse(format!(
                "upgrade to {shown:?}: the response has already started"
            ));
        }
        if self.app_length.is_some() {
            return self.refuse(format!("upgrade to {shown:?}: a 101 has no Content-Length"));
        }
        if !matches!(self.body, BodyState::Done) || self.prefix_pos < self.prefix.len() {
            return self.refuse(format!(
                "upgrade to {shown:?}: the request body is not read to its end"
            ));
        }
        self.status = 101;
        self.mode = Mode::Raw;
        self.facts.upgraded = true;
        self.push_header(b"Connection", b"Upgrade");
        self.push_header(b"Upgrade", protocol);
        response::write_head(
            self.out,
            &Head {
                status: 101,
                framing: Framing::NoBody,
                close: false,
                announce_keep_alive: false,
                date: (!self.has_date).then_some(self.date),
                server: !self.has_server,
                app_headers: self.headers,
            },
        );
        self.flush().map_err(|e| format!("writing the 101: {e}"))?;
        Ok(0)
    }

    /// Reads an upgraded connection's raw bytes: those that arrived after
    /// the head first, then the socket's, waiting until some come; `Ok(0)`
    /// once the client closed its side (or the worker was asked to stop).
    fn read_raw(&mut self, dst: &mut [u8]) -> Result<usize, String> {
        loop {
            let src = self.source();
            if !src.is_empty() {
                let n = src.len().min(dst.len());
                dst[..n].copy_from_slice(&src[..n]);
                self.advance(n);
                return Ok(n);
            }
            if self.raw_eof {
                return Ok(0);
            }
            self.staged.clear();
            self.staged_pos = 0;
            match self
                .io
                .read_into(self.staged, dst.len().min(BODY_READ_CHUNK))
            {
                Ok(0) => self.raw_eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.slot.stop_requested() {
                        return Ok(0);
                    }
                    match self.io.wait_readable(Instant::now() + RAW_READ_SLICE) {
                        Err(e) if e.kind() != io::ErrorKind::TimedOut => {
                            self.facts.client_gone = true;
                            return Err(format!("reading the upgraded connection: {e}"));
                        }
                        _ => {}
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.facts.client_gone = true;
                    return Err(format!("reading the upgraded connection: {e}"));
                }
            }
        }
    }

    /// Writes raw bytes to an upgraded connection at once (blocking until
    /// they are out, or the I/O timeout passes without progress).
    fn write_raw(&mut self, data: &[u8]) -> Result<usize, String> {
        if self.facts.client_gone {
            return Err("the client went away".into());
        }
        if data.is_empty() {
            return Ok(0);
        }
        self.write_through(&[data])
            .map_err(|e| format!("writing to the upgraded connection: {e}"))?;
        self.bytes_sent += data.len() as u64;
        Ok(data.len())
    }

    /// Queues a message for WebSocket connections of the worker (see
    /// [`Port::send`]); it goes out when the call returns.
    pub fn websocket_send(&mut self, ids: &[u64], kind: u32, data: &[u8]) -> Result<usize, String> {
        match self.port.send(ids, kind, data) {
            Ok(n) => Ok(n),
            Err(why) => self.refuse(format!("a WebSocket send: {why}")),
        }
    }
}

impl<'a> Exchange<'a> {
    /// The exchange for one request, with the response not yet begun.
    pub fn new(init: ExchangeInit<'a>, buffers: ExchangeBuffers<'a>) -> Exchange<'a> {
        buffers.headers.clear();
        Exchange {
            io: init.stream,
            prefix: init.prefix,
            prefix_pos: 0,
            pending: init.pending,
            pending_pos: 0,
            staged: buffers.staged,
            staged_pos: 0,
            out: buffers.out,
            body: init.body,
            continue_pending: init.continue_pending,
            status: 200,
            headers: buffers.headers,
            has_date: false,
            has_server: false,
            app_length: None,
            worker: init.worker,
            request_id: init.request_id,
            mode: Mode::Open,
            bytes_sent: 0,
            wish: init.wish,
            flags: init.flags,
            facts: Outcome::default(),
            is_head: init.is_head,
            http10: init.http10,
            date: init.date,
            io_timeout: init.io_timeout,
            min_rate: init.min_rate,
            body_started: None,
            body_received: 0,
            slot: init.slot,
            watch: init.watch,
            claimed: false,
            hold: init.hold,
            held: buffers.held,
            websocket_key: init.websocket_key,
            port: init.port,
            accepted: None,
            upgrade_offer: init.upgrade_offer,
            raw_eof: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Read,
        os::{fd::AsFd, unix::net::UnixStream},
    };

    use super::*;
    use crate::scoreboard::Scoreboard;

    /// What one exchange sent and how it ended.
    struct Ran {
        /// The bytes on the wire (flushed and still buffered).
        wire: String,
        outcome: Outcome,
    }

    /// Runs `app` against a fresh exchange for a request (HEAD if `head`)
    /// and returns what went out.
    fn run(head: bool, app: impl FnOnce(&mut Exchange<'_>)) -> Ran {
        let request = if head {
            "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
        } else {
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        };
        run_raw(request, &[], &[], app)
    }

    /// Runs `app` against an exchange for the request head `request` (with
    /// `pending`, bytes that came with the head), whose client then sends
    /// `later` and closes its side; returns what went out.
    fn run_raw(
        request: &str,
        pending: &[u8],
        later: &[u8],
        app: impl FnOnce(&mut Exchange<'_>),
    ) -> Ran {
        use crate::http::parse::{parse_head, Limits, Parsed, RequestHead};
        use std::io::Write;
        let mut head = RequestHead::default();
        let parsed = parse_head(request.as_bytes(), &Limits::default(), &mut head);
        assert_eq!(parsed, Ok(Parsed::Complete), "{request:?}");
        let (ours, mut theirs) = UnixStream::pair().expect("a socket pair");
        theirs.write_all(later).expect("the client's bytes");
        theirs
            .shutdown(std::net::Shutdown::Write)
            .expect("the client closes its side");
        let board = Scoreboard::new(1, 1).expect("a scoreboard");
        let (slot, lane) = (board.slot(0).unwrap(), board.lane(0, 0).unwrap());
        let (mut staged, mut out, mut headers, mut held) =
            (Vec::new(), Vec::new(), Vec::new(), Held::default());
        let mut port = Port::new(0, 1 << 20, false);
        let outcome = {
            let mut ex = Exchange::new(
                ExchangeInit {
                    stream: crate::worker::stream::Stream::plain(ours.as_fd()),
                    pending,
                    prefix: &[],
                    body: BodyState::Done,
                    continue_pending: false,
                    wish: true,
                    flags: Flags::default(),
                    is_head: head.is_head,
                    http10: head.version_minor == 0,
                    date: "Tue, 24 Nov 2026 20:22:38 GMT",
                    io_timeout: Duration::from_secs(5),
                    min_rate: 0,
                    slot,
                    watch: Watch::Signal(lane),
                    hold: HoldLimits {
                        per_conn: 1 << 20,
                        per_worker: 1 << 20,
                    },
                    worker: 1,
                    request_id: "t",
                    websocket_key: None,
                    port: &mut port,
                    upgrade_offer: Offer::of(&head, request.as_bytes()),
                },
                ExchangeBuffers {
                    staged: &mut staged,
                    out: &mut out,
                    headers: &mut headers,
                    held: &mut held,
                },
            );
            app(&mut ex);
            ex.finish()
        };
        drop(ours);
        let mut wire = Vec::new();
        theirs.read_to_end(&mut wire).expect("read the wire");
        wire.extend_from_slice(&out);
        Ran {
            wire: String::from_utf8_lossy(&wire).into_owned(),
            outcome,
        }
    }

    const ASKS_ECHO: &str =
        "GET /raw HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x-foo, Echo\r\n\r\n";

    /// Echoes the raw stream until the client closes its side.
    fn echo(ex: &mut Exchange<'_>) {
        let mut buf = [0u8; 3];
        loop {
            match ex.read_body(&mut buf, true) {
                Ok(0) => return,
                Ok(n) => {
                    assert_eq!(ex.write_chunk(&buf[..n]), Ok(n));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn an_upgrade_answers_101_then_streams_raw_bytes_and_closes() {
        let ran = run_raw(ASKS_ECHO, b"early ", b"and later", |ex| {
            ex.add_header(b"X-Before", b"1").unwrap();
            assert_eq!(ex.upgrade(b"echo"), Ok(0));
            assert!(ex.set_status(200).is_err());
            assert!(ex.add_header(b"X-After", b"1").is_err());
            assert!(ex.send_body(b"no").is_err());
            echo(ex);
            assert_eq!(ex.read_body(&mut [0; 4], true), Ok(0), "EOF stays EOF");
        });
        let (head, raw) = ran.wire.split_once("\r\n\r\n").expect("a head");
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nX-Before: 1\r\nConnection: Upgrade\r\nUpgrade: echo"));
        assert!(!head.contains("Content-Length") && !head.contains("chunked"));
        assert_eq!(raw, "early and later", "raw bytes, unframed");
        assert_eq!(ran.outcome.status, 101);
        assert_eq!(ran.outcome.bytes_sent, 15);
        assert!(ran.outcome.upgraded);
        assert!(!keep_alive(true, Flags::default(), &ran.outcome));
    }

    #[test]
    fn an_upgrade_the_request_did_not_offer_is_refused_and_nothing_sent() {
        let asks_nothing = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let no_connection = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\n\r\n";
        let http10 = "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n";
        for request in [asks_nothing, no_connection, http10, ASKS_ECHO] {
            let ran = run_raw(request, b"", b"", |ex| {
                let refused = ex.upgrade(b"other").unwrap_err();
                assert!(refused.contains("\"other\""), "{refused}");
                if request != ASKS_ECHO {
                    assert!(ex.upgrade(b"echo").is_err(), "{request}");
                }
                ex.send_body(b"plain").unwrap();
            });
            assert!(ran.wire.starts_with("HTTP/1.1 200 OK"), "{}", ran.wire);
            assert!(!ran.outcome.upgraded);
        }
    }

    #[test]
    fn websocket_bad_names_a_length_and_a_started_response_are_refused() {
        let asks_ws =
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket, echo\r\n\r\n";
        run_raw(asks_ws, b"", b"", |ex| {
            let refused = ex.upgrade(b"WebSocket").unwrap_err();
            assert!(refused.contains("accept_websocket"), "{refused}");
            assert!(ex.upgrade(b"ec ho").is_err());
            assert!(ex.upgrade(b"").is_err());
            ex.add_header(b"Content-Length", b"0").unwrap();
            assert!(ex.upgrade(b"echo").unwrap_err().contains("Content-Length"));
        });
        let ran = run_raw(ASKS_ECHO, b"", b"", |ex| {
            ex.write_chunk(b"started").unwrap();
            assert!(ex.upgrade(b"echo").unwrap_err().contains("started"));
        });
        assert!(ran.wire.starts_with("HTTP/1.1 200 OK"), "{}", ran.wire);
    }

    #[test]
    fn a_failure_after_the_switch_only_closes() {
        let ran = run_raw(ASKS_ECHO, b"", b"", |ex| {
            ex.upgrade(b"echo").unwrap();
            ex.write_chunk(b"partial").unwrap();
            ex.fail();
        });
        assert!(ran.wire.ends_with("\r\n\r\npartial"), "{}", ran.wire);
        assert!(!ran.wire.contains("500"));
        assert!(!keep_alive(true, Flags::default(), &ran.outcome));
    }

    #[test]
    fn a_refused_status_or_header_changes_nothing() {
        let ran = run(false, |ex| {
            for status in [0, 100, 101, 199, 1000] {
                assert!(ex.set_status(status).is_err(), "{status}");
            }
            assert!(ex.add_header(b"Transfer-Encoding", b"chunked").is_err());
            assert!(ex.add_header(b"Connection", b"upgrade").is_err());
            assert!(ex.add_header(b"Content-Length", b"x").is_err());
            assert!(ex.send_body(b"hi").is_ok());
        });
        assert!(ran.wire.starts_with("HTTP/1.1 200 OK\r\n"), "{}", ran.wire);
        assert!(
            ran.wire.ends_with("Content-Length: 2\r\n\r\nhi"),
            "{}",
            ran.wire
        );
        assert!(!ran.wire.contains("chunked") && !ran.wire.contains("upgrade"));
    }

    #[test]
    fn head_takes_the_apps_length_without_a_body() {
        let ran = run(true, |ex| {
            ex.add_header(b"Content-Length", b"5").unwrap();
            ex.send_body(b"").unwrap();
        });
        assert!(
            ran.wire.ends_with("Content-Length: 5\r\n\r\n"),
            "{}",
            ran.wire
        );
        let ran = run(true, |ex| {
            ex.add_header(b"Content-Length", b"5").unwrap();
            assert!(ex.send_body(b"four").is_err(), "neither empty nor 5 bytes");
        });
        // Refused, then completed as HEAD may be: the head alone, with the length.
        assert!(ran.wire.starts_with("HTTP/1.1 200 OK"), "{}", ran.wire);
        assert!(
            ran.wire.ends_with("Content-Length: 5\r\n\r\n"),
            "{}",
            ran.wire
        );
    }

    #[test]
    fn a_whole_body_must_match_and_a_mismatch_ends_in_500() {
        let ran = run(false, |ex| {
            ex.add_header(b"Content-Length", b"3").unwrap();
            assert!(
                ex.add_header(b"content-length", b"3").is_err(),
                "a second one"
            );
            assert!(ex.send_body(b"four").is_err());
        });
        assert!(ran.wire.starts_with("HTTP/1.1 500"), "{}", ran.wire);
        assert_eq!(ran.outcome.status, 500);
    }

    #[test]
    fn a_known_length_stream_is_not_chunked_and_must_not_overrun() {
        let ran = run(false, |ex| {
            ex.add_header(b"Content-Length", b"5").unwrap();
            assert_eq!(ex.write_chunk(b"abc"), Ok(3));
            assert!(ex.write_chunk(b"def").is_err(), "past the length");
            assert_eq!(ex.write_chunk(b"de"), Ok(2));
        });
        assert!(
            ran.wire.ends_with("Content-Length: 5\r\n\r\nabcde"),
            "{}",
            ran.wire
        );
        assert!(!ran.wire.contains("chunked"));
        assert!(!ran.outcome.cut_short, "complete: the connection may stay");
    }

    #[test]
    fn a_short_known_length_stream_closes_the_connection() {
        let ran = run(false, |ex| {
            ex.add_header(b"Content-Length", b"5").unwrap();
            ex.write_chunk(b"ab").unwrap();
        });
        assert!(ran.wire.ends_with("\r\n\r\nab"), "{}", ran.wire);
        assert!(ran.outcome.cut_short);
        assert!(!keep_alive(true, Flags::default(), &ran.outcome));
    }

    #[test]
    fn connection_close_from_the_app_is_honoured() {
        let ran = run(false, |ex| {
            ex.add_header(b"Connection", b"keep-alive, close").unwrap();
            ex.send_body(b"x").unwrap();
        });
        assert!(ran.wire.contains("Connection: close\r\n"), "{}", ran.wire);
        assert_eq!(ran.wire.matches("Connection").count(), 1, "{}", ran.wire);
        assert!(ran.outcome.app_close);
    }
}
