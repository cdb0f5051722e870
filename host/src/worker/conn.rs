//! One client connection in a worker: its buffers, its read-ahead body, and
//! where it is between requests.
//!
//! The event loop and the callers of the app move a connection through named
//! transitions ([`Conn::begin_reading`], [`Conn::refuse`], [`Conn::keep`],
//! [`Conn::close_after_output`], [`Conn::linger`]) rather than setting its
//! fields, so its phase and its deadline always change together. A chunked
//! body read ahead before the app is called ([`ReadAhead`]) belongs to the
//! connection it arrived on, and stays with it until the app is called. A
//! connection belongs to the event loop that accepted it (one per thread).
//!
//! Output the socket has not taken yet waits in the connection, for the loop
//! to write when the socket is writable: small responses in its output
//! buffer, and the rest of a large one ([`Held`], see
//! [`crate::worker::held`]). While output waits, the connection's deadline
//! is the write deadline: the I/O timeout since the socket last took a byte.
//! Once it is all out, an idle connection gets a whole keep-alive wait and
//! one part-way through its next request a whole `--header-timeout` (nothing
//! was read from it while it waited).

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    time::{Duration, Instant},
};

use crate::{
    http::{
        body::ChunkedDecoder,
        io::read_into,
        proxy_protocol::{self, Parsed},
        response,
    },
    tls::{facts::TlsFacts, session::TlsSession},
    websocket::session::{Limits, Wire, WsSession},
    worker::{call::EXCHANGE_IO_TIMEOUT, held::Held, stream::Stream},
};

/// Bytes read from a socket at a time (and the least spare room kept in the input buffer).
pub const READ_CHUNK: usize = 16 * 1024;

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No request in progress: waiting up to the keep-alive timeout.
    Idle,
    /// Part of a request has arrived: waiting up to the read timeout.
    Reading,
    /// Close once the pending output is written.
    Closing,
    /// A WebSocket connection (after its `101`): its session runs it.
    WebSocket,
}

/// A connection's buffers, kept from a closed connection for the next one
/// (a worker under `Connection: close` load would allocate them anew for
/// every request).
#[derive(Debug)]
pub struct Buffers {
    /// Received bytes.
    pub inbuf: Vec<u8>,
    /// Response bytes not yet written.
    pub out: Vec<u8>,
    /// The peer's address (filled in by the acceptor).
    pub peer: String,
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers {
            inbuf: Vec::with_capacity(READ_CHUNK),
            out: Vec::new(),
            peer: String::new(),
        }
    }
}

/// A chunked body decoded before the app is called (up to --body-buffer):
/// the app gets its decoded bytes first, then the decoder goes on from
/// where it stopped.
pub struct ReadAhead {
    /// The decoder, where it stopped.
    pub decoder: ChunkedDecoder,
    /// Decoded bytes (the first `len` are valid), at most --body-buffer.
    pub decoded: Vec<u8>,
    /// Valid bytes of `decoded`.
    pub len: usize,
    /// Raw bytes after the head the decoder has used.
    pub raw_used: usize,
}

impl ReadAhead {
    /// A body of at most `max_body` bytes, of which up to `buffer` are read ahead.
    pub fn new(max_body: u64, buffer: usize) -> ReadAhead {
        ReadAhead {
            decoder: ChunkedDecoder::new(max_body),
            decoded: vec![0; buffer],
            len: 0,
            raw_used: 0,
        }
    }
}

/// The parts of a connection a call of the app uses (see [`Conn::for_call`]).
pub struct CallView<'c> {
    /// The socket.
    pub fd: BorrowedFd<'c>,
    /// The socket as the exchange reads and writes it (through TLS on a TLS connection).
    pub stream: Stream<'c>,
    /// The unconsumed input: the request's head, then what followed it.
    pub input: &'c [u8],
    /// The output buffer.
    pub out: &'c mut Vec<u8>,
    /// The peer as `ip:port` (empty for Unix sockets).
    pub peer: &'c str,
    /// Index of the listener it arrived on.
    pub listener: usize,
    /// The peer is a trusted proxy.
    pub trusted_proxy: bool,
    /// `100 Continue` was already sent for the request.
    pub continue_sent: bool,
    /// Where the rest of a response the socket will not take is held.
    pub held: &'c mut Held,
    /// The connection's TLS session's facts (`None` on a plain connection).
    pub tls: Option<TlsFacts<'c>>,
}

/// A client connection owned by one worker.
pub struct Conn {
    /// The socket (non-blocking).
    fd: OwnedFd,
    /// Received bytes; the unconsumed ones start at `start`.
    inbuf: Vec<u8>,
    /// Offset of the first unconsumed byte of `inbuf`.
    start: usize,
    /// Response bytes not yet written, from `out_pos`.
    out: Vec<u8>,
    /// Offset of the first unwritten byte of `out`.
    out_pos: usize,
    /// The peer as `ip:port` or `[ip6]:port` (empty for Unix sockets).
    peer: String,
    /// Index of the listener it arrived on.
    listener: usize,
    /// When the connection is closed if nothing happens (while output
    /// waits for the socket: if the socket takes nothing more).
    deadline: Instant,
    /// See [`Phase`].
    phase: Phase,
    /// The peer closed its sending side.
    eof: bool,
    /// `100 Continue` was sent for the request in progress.
    continue_sent: bool,
    /// Registered for writability (output is pending).
    want_write: bool,
    /// In the event loop's epoll set.
    registered: bool,
    /// The peer is a trusted proxy (`--forwarded-allow-ips`).
    trusted_proxy: bool,
    /// The chunked body of the request in progress, read ahead (boxed: it
    /// is rare, and a connection stays small).
    read_ahead: Option<Box<ReadAhead>>,
    /// The rest of a large response, handed to the event loop.
    held: Held,
    /// The TLS session, on a TLS connection.
    tls: Option<Box<TlsSession>>,
    /// Counted among the loop's handshakes in progress (see [`Conn::handshake_done`]).
    in_handshake: bool,
    /// A PROXY protocol header is still to come (see [`Conn::take_proxy_header`]).
    awaiting_proxy: bool,
    /// The WebSocket session, once the connection is one (boxed: a
    /// connection stays small until then).
    ws: Option<Box<WsSession>>,
}

impl Conn {
    /// A new idle connection from `peer` (with `buffers`) on listener
    /// `listener`; over TLS with `tls`, whose handshake is then in progress.
    pub fn new(
        fd: OwnedFd,
        buffers: Buffers,
        listener: usize,
        deadline: Instant,
        trusted_proxy: bool,
        tls: Option<Box<TlsSession>>,
    ) -> Conn {
        Conn {
            fd,
            inbuf: buffers.inbuf,
            start: 0,
            out: buffers.out,
            out_pos: 0,
            peer: buffers.peer,
            listener,
            deadline,
            phase: Phase::Idle,
            eof: false,
            continue_sent: false,
            want_write: false,
            registered: false,
            trusted_proxy,
            read_ahead: None,
            held: Held::default(),
            in_handshake: tls.is_some(),
            tls,
            awaiting_proxy: false,
            ws: None,
        }
    }

    /// Expects a PROXY protocol header before anything else, until `deadline`.
    pub fn expect_proxy_header(&mut self, deadline: Instant) {
        self.awaiting_proxy = true;
        self.deadline = self.deadline.min(deadline);
    }

    /// Whether a PROXY protocol header is still to come.
    pub fn awaiting_proxy(&self) -> bool {
        self.awaiting_proxy
    }

    /// Reads the PROXY protocol header the connection begins with, as far
    /// as the socket has it: `Ok(None)` while it is incomplete, then once
    /// `Ok(Some(source))` (the client's address, if the header names one).
    /// The bytes after it are the client's: input on a plain connection,
    /// fed to the session on a TLS one. A header that is not one, or a peer
    /// that closes before it ends, is an error (the connection closes).
    pub fn take_proxy_header(&mut self) -> io::Result<Option<Option<SocketAddr>>> {
        loop {
            match proxy_protocol::parse(self.pending_input()) {
                Parsed::Done { consumed, source } => {
                    self.consume(consumed);
                    self.awaiting_proxy = false;
                    if let Some(session) = self.tls.as_deref_mut() {
                        let rest = self.inbuf.split_off(self.start);
                        self.inbuf.clear();
                        self.start = 0;
                        session.link().feed(&rest)?;
                    }
                    return Ok(Some(source));
                }
                Parsed::Invalid(why) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, why));
                }
                Parsed::Incomplete => {}
            }
            match read_into(self.fd.as_fd(), &mut self.inbuf, READ_CHUNK) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// The client is `addr` (from a PROXY protocol header), and is a
    /// trusted proxy itself or not.
    pub fn set_peer(&mut self, addr: &SocketAddr, trusted: bool) {
        self.peer.clear();
        write_peer(&mut self.peer, addr);
        self.trusted_proxy = trusted;
    }

    /// Closes the socket and keeps the buffers for another connection.
    pub fn recycle(self) -> Buffers {
        let mut buffers = Buffers {
            inbuf: self.inbuf,
            out: self.out,
            peer: self.peer,
        };
        buffers.inbuf.clear();
        buffers.out.clear();
        buffers.peer.clear();
        buffers
    }

    /// The socket.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The peer as `ip:port` (empty for Unix sockets).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The peer's address without the port (and an IPv6 one without brackets).
    pub fn peer_ip(&self) -> &str {
        peer_ip(&self.peer)
    }

    /// Index of the listener it arrived on.
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// Whether the peer is a trusted proxy.
    pub fn trusted_proxy(&self) -> bool {
        self.trusted_proxy
    }

    /// See [`Phase`].
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When the connection is closed if nothing happens: while output
    /// waits for the socket, the I/O timeout after it last took a byte.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The peer closed its sending side.
    pub fn eof(&self) -> bool {
        self.eof
    }

    /// Whether it waits for the socket to take pending output.
    pub fn wants_write(&self) -> bool {
        self.want_write
    }

    /// Notes that it waits (or no longer waits) for the socket to take output.
    pub fn set_wants_write(&mut self, on: bool) {
        self.want_write = on;
    }

    /// Whether it is in the event loop's epoll set.
    pub fn registered(&self) -> bool {
        self.registered
    }

    /// Notes that it joined (or left) the event loop's epoll set.
    pub fn set_registered(&mut self, on: bool) {
        self.registered = on;
    }

    /// The unconsumed input.
    pub fn pending_input(&self) -> &[u8] {
        &self.inbuf[self.start..]
    }

    /// Response bytes buffered and not yet written.
    pub fn pending_output(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// What a call of the app uses of the connection, all at once: the
    /// socket, the unconsumed input, the output buffer (emptied of what was
    /// written) and who the peer is.
    pub fn for_call(&mut self) -> CallView<'_> {
        if self.out_pos > 0 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        let (link, tls) = match self.tls.as_deref_mut() {
            Some(session) => {
                let (link, facts) = session.parts();
                (Some(link), facts)
            }
            None => (None, None),
        };
        CallView {
            fd: self.fd.as_fd(),
            stream: Stream::new(self.fd.as_fd(), link),
            input: &self.inbuf[self.start..],
            out: &mut self.out,
            peer: &self.peer,
            listener: self.listener,
            trusted_proxy: self.trusted_proxy,
            continue_sent: self.continue_sent,
            held: &mut self.held,
            tls,
        }
    }

    /// Whether the rest of a response is held: the connection writes it
    /// before it takes its next request.
    #[inline]
    pub fn holds_output(&self) -> bool {
        self.held.active()
    }

    /// Lets go of a held response's rest (written, or given up with the
    /// connection): returns the bytes to give back to the worker's budget.
    /// An output buffer grown to hold it goes too.
    pub fn release_held(&mut self) -> u64 {
        if !self.held.active() {
            return 0;
        }
        let charged = self.held.release();
        if self.out_pos >= self.out.len() && self.out.capacity() > 4 * READ_CHUNK {
            self.out = Vec::new();
            self.out_pos = 0;
        }
        charged
    }

    /// Whether `100 Continue` was already sent for the request in progress.
    pub fn continue_sent(&self) -> bool {
        self.continue_sent
    }

    /// Sends `100 Continue` for the request in progress, once.
    pub fn send_continue(&mut self) {
        if !self.continue_sent {
            self.out.extend_from_slice(response::CONTINUE);
            self.continue_sent = true;
        }
    }

    /// The request in progress's chunked body read ahead, made on first use.
    pub fn read_ahead(&mut self, max_body: u64, buffer: usize) -> (&[u8], &mut ReadAhead) {
        let pre = self
            .read_ahead
            .get_or_insert_with(|| Box::new(ReadAhead::new(max_body, buffer)));
        (&self.inbuf[self.start..], pre)
    }

    /// Takes the read-ahead body, for the call of the app.
    pub fn take_read_ahead(&mut self) -> Option<Box<ReadAhead>> {
        self.read_ahead.take()
    }

    /// Marks `n` input bytes consumed, compacting the buffer when it empties.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.inbuf.len());
        if self.start == self.inbuf.len() {
            self.inbuf.clear();
            self.start = 0;
        }
    }

    /// Puts back bytes read past the request during its call (the start of
    /// the next one), after the unconsumed input.
    pub fn unread(&mut self, bytes: &[u8]) {
        self.inbuf.extend_from_slice(bytes);
    }

    /// Reads what the socket has, without blocking. `Ok(0)` means end of
    /// stream (remembered: see [`Conn::eof`]); `WouldBlock` means nothing is there.
    pub fn read_available(&mut self) -> io::Result<usize> {
        if self.start > 0 && self.start * 2 >= self.inbuf.len() {
            self.inbuf.drain(..self.start);
            self.start = 0;
        }
        let link = self.tls.as_deref_mut().map(TlsSession::link);
        let n = Stream::new(self.fd.as_fd(), link).read_into(&mut self.inbuf, READ_CHUNK)?;
        if n == 0 {
            self.eof = true;
        }
        Ok(n)
    }

    /// Writes pending output (the buffer, then a held file) without
    /// blocking. `Ok(true)` when all of it is out; on `Ok(false)` the write
    /// deadline moves on if the socket took anything (or output just began
    /// to wait).
    pub fn flush(&mut self) -> io::Result<bool> {
        let mut progressed = false;
        let link = self.tls.as_deref_mut().map(TlsSession::link);
        let mut stream = Stream::new(self.fd.as_fd(), link);
        while self.out_pos < self.out.len() {
            match stream.write_some(&self.out[self.out_pos..]) {
                Ok(n) => {
                    self.out_pos += n;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(self.stalled(progressed))
                }
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        if let Some(file) = self.held.file_mut() {
            match file.send(&mut stream)? {
                (true, _) => self.held.drop_file(),
                (false, sent) => return Ok(self.stalled(progressed || sent)),
            }
        }
        // Over TLS: the records the session still holds.
        if !stream.flush()? {
            return Ok(self.stalled(progressed));
        }
        Ok(true)
    }

    /// Whether the connection's TLS handshake is in progress (counted
    /// among the loop's handshakes until [`Conn::handshake_done`]).
    pub fn in_handshake(&self) -> bool {
        self.in_handshake
    }

    /// Whether the TLS handshake has just completed: if so, the
    /// connection is no longer counted among the handshakes in progress,
    /// notes what the handshake agreed, and waits until `deadline` for its
    /// first request.
    pub fn handshake_done(&mut self, deadline: Instant) -> bool {
        let Some(session) = self.tls.as_deref_mut() else {
            return false;
        };
        if !self.in_handshake || session.handshaking() {
            return false;
        }
        session.handshake_done();
        self.in_handshake = false;
        if self.phase == Phase::Idle {
            self.deadline = deadline;
        }
        true
    }

    /// Makes it the WebSocket connection `id` (its `101` is in the output
    /// buffer): what the client sent after its handshake goes to the
    /// session, and the input buffer goes (an idle WebSocket connection
    /// keeps only the session's small read buffer).
    pub fn start_websocket(&mut self, id: u64, limits: Limits, now: Instant) {
        let leftover = self.inbuf[self.start..].to_vec();
        self.inbuf = Vec::new();
        self.start = 0;
        self.continue_sent = false;
        self.read_ahead = None;
        self.phase = Phase::WebSocket;
        self.ws = Some(Box::new(WsSession::new(id, leftover, limits, now)));
    }

    /// The WebSocket session and what it reads and writes through; `None`
    /// on an HTTP connection.
    pub fn websocket(&mut self) -> Option<(&mut WsSession, Wire<'_>)> {
        let session = self.ws.as_deref_mut()?;
        let wire = Wire {
            fd: self.fd.as_fd(),
            tls: self.tls.as_deref_mut().map(TlsSession::link),
            out: &mut self.out,
            out_pos: &mut self.out_pos,
        };
        Some((session, wire))
    }

    /// The WebSocket session, without its wire.
    pub fn ws_session(&self) -> Option<&WsSession> {
        self.ws.as_deref()
    }

    /// Sets the deadline (a WebSocket connection's next timer).
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// Whether it is a TLS connection.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Ends a TLS connection with close_notify (as far as the socket takes it now).
    pub fn close_tls(&mut self) {
        if let Some(session) = self.tls.as_deref_mut() {
            session.link().close(self.fd.as_fd());
        }
    }

    /// The socket is full with output left: moves the write deadline on
    /// if the socket took something, or if output only now begins to wait.
    /// Returns false (not all written), for [`Conn::flush`].
    fn stalled(&mut self, progressed: bool) -> bool {
        if progressed || !self.want_write {
            self.deadline = Instant::now() + EXCHANGE_IO_TIMEOUT;
        }
        false
    }

    /// All waiting output is out (at `now`): an idle connection waits up to
    /// `idle` for its next request, one part-way through its next request
    /// up to `reading` for the rest (nothing was read while output waited).
    pub fn output_drained(&mut self, now: Instant, idle: Duration, reading: Duration) {
        self.want_write = false;
        match self.phase {
            Phase::Idle => self.deadline = now + idle,
            Phase::Reading => self.deadline = now + reading,
            // Its session sets its timers.
            Phase::Closing | Phase::WebSocket => {}
        }
    }

    /// Part of a request arrived: it has `timeout` to arrive whole (the
    /// deadline is set once, when the request starts).
    pub fn begin_reading(&mut self, timeout: Duration) {
        if self.phase == Phase::Idle {
            self.phase = Phase::Reading;
            self.deadline = Instant::now() + timeout;
        }
    }

    /// Refuses the request in progress with `status` (the host's own
    /// answer, `Connection: close`) and closes once it is written.
    pub fn refuse(&mut self, status: u16, date: &str) {
        self.read_ahead = None;
        // A 426 is only ever the answer to a WebSocket handshake of another
        // version: it names the one the host speaks.
        let extra: &[u8] = if status == 426 {
            crate::websocket::handshake::VERSION_HEADER
        } else {
            b""
        };
        response::write_error_with(&mut self.out, status, date, true, extra);
        self.phase = Phase::Closing;
    }

    /// The request is answered; the connection waits for the next one until `deadline`.
    pub fn keep(&mut self, deadline: Instant) {
        self.continue_sent = false;
        self.read_ahead = None;
        self.phase = Phase::Idle;
        self.deadline = deadline;
    }

    /// The request is answered; the connection closes once its output is written.
    pub fn close_after_output(&mut self) {
        self.continue_sent = false;
        self.read_ahead = None;
        self.phase = Phase::Closing;
    }

    /// The client is gone or its request given up on: nothing more is
    /// written, and the connection closes.
    pub fn drop_output_and_close(&mut self) {
        self.out.clear();
        self.out_pos = 0;
        self.held.drop_file();
        self.close_after_output();
    }

    /// A stopping worker keeps an idle connection at most until `until`
    /// (one whose output is still waiting keeps its write deadline).
    pub fn linger(&mut self, until: Instant) {
        if self.phase == Phase::Idle && !self.want_write {
            self.deadline = self.deadline.min(until);
        }
    }

    /// Whether it is done: closing with nothing left to write, or the peer
    /// gone with nothing (or half a request) left to answer.
    pub fn finished(&self) -> bool {
        self.phase == Phase::Closing
            || (self.eof && (self.pending_input().is_empty() || self.phase == Phase::Reading))
    }
}

/// Writes `addr` as `ip:port` or `[ip6]:port` into `out` (as `Display`
/// does; an IPv4 one with `itoa`, which costs a fraction of the formatting
/// machinery on a path taken for every connection).
pub fn write_peer(out: &mut String, addr: &std::net::SocketAddr) {
    match addr {
        std::net::SocketAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
            out.push(':');
            out.push_str(digits.format(v4.port()));
        }
        v6 => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// The address part of `ip:port` or `[ip6]:port`.
pub fn peer_ip(peer: &str) -> &str {
    match peer.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => peer.rsplit_once(':').map_or(peer, |(ip, _)| ip),
    }
}

#[cfg(test)]
mod tests {
    use super::{peer_ip, write_peer};

    #[test]
    fn peers_are_written_as_display_writes_them() {
        for addr in [
            "127.0.0.1:50000",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:8000",
        ] {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            let mut out = String::new();
            write_peer(&mut out, &addr);
            assert_eq!(out, addr.to_string());
        }
    }

    #[test]
    fn a_connection_fits_in_256_bytes() {
        // Accepting and closing move a `Conn` into and out of the slab: up
        // to 256 bytes that is a short memcpy; past it, callgrind counted
        // about 20 more instructions per connection.
        assert!(std::mem::size_of::<super::Conn>() <= 256);
    }

    #[test]
    fn peer_ip_drops_the_port_and_brackets() {
        assert_eq!(peer_ip("127.0.0.1:50000"), "127.0.0.1");
        assert_eq!(peer_ip("[::1]:50000"), "::1");
        assert_eq!(peer_ip("[2001:db8::7]:80"), "2001:db8::7");
        assert_eq!(peer_ip(""), "");
    }
}
