//! One WebSocket connection's protocol state, after its `101`: framing
//! with tungstenite, over the connection's stream, without blocking.
//!
//! tungstenite's `WebSocketContext` is its sans-I/O core: it is handed the
//! stream on each call, so the connection keeps owning its socket and TLS
//! session, and a call that would block returns `WouldBlock` (a message
//! sent meanwhile waits in its write buffer, bounded: the back-pressure).
//! tungstenite is the WebSocket crate of the Rust ecosystem (tokio-tungstenite,
//! axum and warp are built on it), passes the Autobahn suite, and checks
//! every rule of RFC 6455 this host must hold a client to: masking,
//! reserved bits and opcodes, control frames of at most 125 bytes and
//! unfragmented, UTF-8 in text, message and frame sizes.
//!
//! The stream tungstenite sees: the connection's socket (or TLS
//! session), writing first what the connection's output buffer still holds
//! (the `101` itself), so frames never overtake it.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    time::{Duration, Instant},
};

use tungstenite::{
    error::{CapacityError, Error, ProtocolError},
    protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig},
    protocol::{frame::Frame, WebSocketContext},
    Message,
};

use crate::{tls::session::Link, worker::stream::Stream};

/// Bytes of a connection's read buffer, allocated when it opens: small, so
/// that idle connections cost little (larger messages grow it for as long
/// as they take).
pub const READ_BUFFER: usize = 4 * 1024;

/// Close codes the host sends or reports (RFC 6455 §7.4.1).
pub mod code {
    /// The server is going away (the worker stops or reloads).
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the protocol.
    pub const PROTOCOL: u16 = 1002;
    /// The client's close frame had no code (reported, never sent).
    pub const NO_STATUS: u16 = 1005;
    /// The connection ended without a close frame (reported, never sent).
    pub const ABNORMAL: u16 = 1006;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A message larger than `--websocket-max-message`.
    pub const TOO_BIG: u16 = 1009;
    /// The app failed handling an event.
    pub const APP_FAILED: u16 = 1011;
}

/// The limits of a connection's session.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest message (and frame) a client may send.
    pub max_message: usize,
    /// The most output a connection holds unsent before it is closed.
    pub max_pending: usize,
}

/// What a read of the session came to.
#[derive(Debug)]
pub enum Read {
    /// A whole message: text (checked UTF-8) or binary.
    Message {
        /// A text message.
        text: bool,
        /// Its payload.
        data: bytes::Bytes,
    },
    /// A control frame (ping, pong) was handled; read on.
    Control,
    /// The client sent its close frame (the reply is queued): code and reason.
    PeerClosed(u16, String),
    /// Nothing more to read now.
    Blocked,
    /// The closing handshake is over, or the client is gone: close the socket.
    Ended,
    /// The client broke a rule: close with this code (sent to it) and reason.
    Failed(u16, &'static str),
}

/// A WebSocket connection's session.
pub struct WsSession {
    /// The connection's id, as the app knows it.
    pub id: u64,
    ctx: WebSocketContext,
    /// Plaintext a TLS read produced beyond what tungstenite asked for.
    spill: Vec<u8>,
    /// When the client last sent anything (any bytes: a frame, a pong, or
    /// part of a long frame still arriving).
    pub last_seen: Instant,
    /// When the host sent a ping still unanswered.
    pub ping_sent: Option<Instant>,
    /// When the host began closing (its close frame is queued), and by when
    /// the client must answer.
    pub closing_until: Option<Instant>,
    /// When the worker's drain ends this connection with `1001`.
    pub drain_at: Option<Instant>,
    /// The code and reason the app is told when the connection ends.
    pub close_report: Option<(u16, String)>,
    /// The app's `on_open` has run: an `on_close` is owed.
    pub opened: bool,
    /// Since when output has waited for the socket without it taking any
    /// (cleared by every write the socket takes some of).
    pub stalled_since: Option<Instant>,
}

impl WsSession {
    /// The session of connection `id`, whose first `leftover` bytes (sent
    /// right behind the handshake) are already read.
    pub fn new(id: u64, leftover: Vec<u8>, limits: Limits, now: Instant) -> WsSession {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            // Each message is written as it is sent (one write per
            // message); what the socket does not take waits, bounded.
            .write_buffer_size(0)
            .max_write_buffer_size(limits.max_pending.max(1))
            .max_message_size(Some(limits.max_message))
            .max_frame_size(Some(limits.max_message));
        WsSession {
            id,
            ctx: WebSocketContext::from_partially_read(leftover, Role::Server, Some(config)),
            spill: Vec::new(),
            last_seen: now,
            ping_sent: None,
            closing_until: None,
            drain_at: None,
            close_report: None,
            opened: false,
            stalled_since: None,
        }
    }

    /// Reads the next message or event from `io`. Any bytes that arrive
    /// count as a sign of life (even part of a frame: a client sending a
    /// long frame slowly cannot answer a ping before its end).
    pub fn read(&mut self, wire: Wire<'_>) -> Read {
        let mut io = wire.io(&mut self.spill);
        let result = self.ctx.read(&mut io);
        if io.traffic.read > 0 {
            self.last_seen = Instant::now();
            self.ping_sent = None;
        }
        if io.traffic.written > 0 {
            self.stalled_since = None;
        }
        match result {
            Ok(Message::Text(text)) => Read::Message {
                text: true,
                data: bytes::Bytes::from(text),
            },
            Ok(Message::Binary(data)) => Read::Message { text: false, data },
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Read::Control,
            Ok(Message::Close(frame)) => {
                let (code, reason) = match frame {
                    Some(f) => (u16::from(f.code), f.reason.as_str().to_owned()),
                    None => (code::NO_STATUS, String::new()),
                };
                Read::PeerClosed(code, reason)
            }
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Read::Blocked,
            Err(Error::ConnectionClosed | Error::AlreadyClosed | Error::Io(_)) => Read::Ended,
            Err(Error::Utf8(_)) => Read::Failed(code::INVALID_DATA, "text that is not UTF-8"),
            Err(Error::Capacity(CapacityError::MessageTooLong { .. })) => {
                Read::Failed(code::TOO_BIG, "message too large")
            }
            Err(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => Read::Ended,
            Err(Error::Protocol(e)) => Read::Failed(code::PROTOCOL, protocol_reason(&e)),
            Err(_) => Read::Failed(code::PROTOCOL, "protocol error"),
        }
    }

    /// Queues a data message (`text`: already checked UTF-8) and writes as
    /// much as the socket takes. `Ok(false)` when output waits for the
    /// socket; an error when the connection cannot take it (closing, or
    /// past its pending-output limit: the connection must then close).
    pub fn send(&mut self, wire: Wire<'_>, text: bool, data: bytes::Bytes) -> io::Result<bool> {
        use tungstenite::protocol::frame::coding::{Data, OpCode};
        let opcode = OpCode::Data(if text { Data::Text } else { Data::Binary });
        let frame = Frame::message(data, opcode, true);
        let mut io = wire.io(&mut self.spill);
        let result = self.ctx.write(&mut io, Message::Frame(frame));
        let written = io.traffic.written;
        self.took_output(written);
        outcome(result)
    }

    /// Sends a ping (when the client has been quiet), as [`WsSession::send`].
    pub fn ping(&mut self, wire: Wire<'_>, now: Instant) -> io::Result<bool> {
        self.ping_sent = Some(now);
        let mut io = wire.io(&mut self.spill);
        let result = self.ctx.write(&mut io, Message::Ping(bytes::Bytes::new()));
        let written = io.traffic.written;
        self.took_output(written);
        outcome(result)
    }

    /// Begins the closing handshake with `code` and `reason` (once); the
    /// client has until `until` to answer. `Ok(false)` when output waits.
    pub fn close(
        &mut self,
        wire: Wire<'_>,
        code: u16,
        reason: &str,
        until: Instant,
    ) -> io::Result<bool> {
        if self.closing_until.is_none() {
            self.closing_until = Some(until);
        }
        self.close_report
            .get_or_insert_with(|| (code, reason.to_owned()));
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let mut io = wire.io(&mut self.spill);
        let result = self.ctx.close(&mut io, Some(frame));
        let written = io.traffic.written;
        self.took_output(written);
        outcome(result)
    }

    /// Writes queued output: `Ok(true)` when none is left.
    pub fn flush(&mut self, wire: Wire<'_>) -> io::Result<bool> {
        let mut io = wire.io(&mut self.spill);
        let result = self.ctx.flush(&mut io);
        let written = io.traffic.written;
        self.took_output(written);
        outcome(result)
    }

    /// Notes that the socket took some output (not stalled, whatever is
    /// still waiting).
    fn took_output(&mut self, written: usize) {
        if written > 0 {
            self.stalled_since = None;
        }
    }

    /// Whether the session can still send messages (no close sent or received).
    pub fn can_send(&self) -> bool {
        self.ctx.can_write()
    }

    /// Whether the client's close frame has arrived (or the session ended):
    /// once output is flushed, the socket closes.
    pub fn peer_done(&self) -> bool {
        !self.ctx.can_read()
    }

    /// When the session next needs the loop: to close a connection whose
    /// client did not answer the close or a ping, or stopped reading; to
    /// begin the drain's close; to ping a quiet client.
    pub fn next_timer(
        &self,
        ping_interval: Option<Duration>,
        ping_timeout: Duration,
        stall: Duration,
    ) -> Option<Instant> {
        let ping = match self.ping_sent {
            Some(sent) => Some(sent + ping_timeout),
            None => ping_interval.map(|i| self.last_seen + i),
        };
        [
            self.closing_until,
            self.drain_at.filter(|_| self.closing_until.is_none()),
            ping.filter(|_| self.closing_until.is_none()),
            self.stalled_since.map(|s| s + stall),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A write's result: `Ok(true)` all out, `Ok(false)` waiting for the
/// socket, an error when the connection is done for.
fn outcome(result: tungstenite::Result<()>) -> io::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        // The closing handshake completed: nothing more to write.
        Err(Error::ConnectionClosed) => Ok(true),
        Err(Error::WriteBufferFull(_)) => Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            "the client is not reading: its unsent output passed the limit",
        )),
        Err(Error::Io(e)) => Err(e),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

/// The reason sent with `1002` for a broken rule (at most 123 bytes).
fn protocol_reason(e: &ProtocolError) -> &'static str {
    match e {
        ProtocolError::FragmentedControlFrame => "fragmented control frame",
        ProtocolError::ControlFrameTooBig => "control frame over 125 bytes",
        ProtocolError::UnknownControlFrameType(_) | ProtocolError::UnknownDataFrameType(_) => {
            "reserved opcode"
        }
        ProtocolError::NonZeroReservedBits => "reserved bits set",
        ProtocolError::UnmaskedFrameFromClient => "unmasked frame",
        ProtocolError::UnexpectedContinueFrame | ProtocolError::ExpectedFragment(_) => {
            "bad fragmentation"
        }
        ProtocolError::InvalidCloseSequence => "bad close frame",
        _ => "protocol error",
    }
}

/// The parts of a connection a session's call reads and writes through:
/// its socket, its TLS session, and the output it still holds (the `101`).
pub struct Wire<'c> {
    /// The socket.
    pub fd: BorrowedFd<'c>,
    /// The TLS session, on a TLS connection.
    pub tls: Option<&'c mut Link>,
    /// The connection's output buffer, written before any frame.
    pub out: &'c mut Vec<u8>,
    /// How much of it is written.
    pub out_pos: &'c mut usize,
}

impl<'c> Wire<'c> {
    fn io<'s>(self, spill: &'s mut Vec<u8>) -> WsIo<'s>
    where
        'c: 's,
    {
        WsIo {
            stream: Stream::new(self.fd, self.tls),
            out: self.out,
            out_pos: self.out_pos,
            spill,
            traffic: Traffic::default(),
        }
    }
}

/// The stream tungstenite reads and writes: the connection's socket
/// (through its TLS session), after the output the connection still holds.
struct WsIo<'c> {
    stream: Stream<'c>,
    out: &'c mut Vec<u8>,
    out_pos: &'c mut usize,
    /// Plaintext a TLS read produced beyond what tungstenite asked for.
    spill: &'c mut Vec<u8>,
    /// What moved during this call.
    traffic: Traffic,
}

/// Bytes that moved through a [`WsIo`] during one call of the session:
/// the client's signs of life (it sends), and of reading (its socket takes
/// output).
#[derive(Debug, Default)]
struct Traffic {
    /// Bytes read from the client.
    read: usize,
    /// Bytes the socket took.
    written: usize,
}

impl WsIo<'_> {
    /// Writes what the connection's output buffer holds: false if some waits.
    fn drain_out(&mut self) -> io::Result<bool> {
        while *self.out_pos < self.out.len() {
            match self.stream.write_some(&self.out[*self.out_pos..]) {
                Ok(n) => {
                    *self.out_pos += n;
                    self.traffic.written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if !self.out.is_empty() {
            // The `101` is out: the buffer is not needed again.
            *self.out = Vec::new();
            *self.out_pos = 0;
        }
        Ok(true)
    }
}

impl io::Read for WsIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let spill = &mut *self.spill;
        if spill.is_empty() {
            if !self.stream.is_tls() {
                let n = nix::unistd::read(self.stream.fd().as_raw_fd(), buf)
                    .map_err(io::Error::from)?;
                self.traffic.read += n;
                return Ok(n);
            }
            // TLS: what the session decrypts may be more than `buf` holds.
            self.stream.read_into(spill, buf.len())?;
            self.traffic.read += spill.len();
        }
        let n = spill.len().min(buf.len());
        buf[..n].copy_from_slice(&spill[..n]);
        spill.drain(..n);
        if spill.is_empty() && spill.capacity() > READ_BUFFER {
            *spill = Vec::new();
        }
        Ok(n)
    }
}

impl io::Write for WsIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.drain_out()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.stream.write_some(buf)?;
        self.traffic.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.drain_out()? || !self.stream.flush()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(now: Instant) -> WsSession {
        let limits = Limits {
            max_message: 1000,
            max_pending: 1 << 20,
        };
        WsSession::new(1, Vec::new(), limits, now)
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_quiet_client_is_pinged_after_the_interval_and_dropped_after_the_timeout() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let (interval, timeout, stall) = (Some(20 * SEC), 5 * SEC, 30 * SEC);
        assert_eq!(s.next_timer(interval, timeout, stall), Some(t0 + 20 * SEC));
        // Pinging off: nothing is due at all.
        assert_eq!(s.next_timer(None, timeout, stall), None);
        // Pinged: the answer is due within the timeout, pinging on or off.
        s.ping_sent = Some(t0 + 20 * SEC);
        assert_eq!(s.next_timer(interval, timeout, stall), Some(t0 + 25 * SEC));
        assert_eq!(s.next_timer(None, timeout, stall), Some(t0 + 25 * SEC));
        // It answered (the loop clears the ping and notes when).
        s.ping_sent = None;
        s.last_seen = t0 + 21 * SEC;
        assert_eq!(s.next_timer(interval, timeout, stall), Some(t0 + 41 * SEC));
    }

    #[test]
    fn the_earliest_of_drain_stall_and_ping_is_next_until_a_close_is_under_way() {
        // A minute ahead, so that the stalls below can start before it.
        let t0 = Instant::now() + 60 * SEC;
        let mut s = session(t0);
        let (interval, timeout, stall) = (Some(20 * SEC), 5 * SEC, 30 * SEC);
        s.drain_at = Some(t0 + 5 * SEC);
        assert_eq!(s.next_timer(interval, timeout, stall), Some(t0 + 5 * SEC));
        s.stalled_since = Some(t0 - 28 * SEC);
        assert_eq!(s.next_timer(interval, timeout, stall), Some(t0 + 2 * SEC));
        s.stalled_since = None;
        // Closing: only the close's own deadline (and a stall) count; the
        // drain and pings are moot.
        s.closing_until = Some(t0 + 9 * SEC);
        s.drain_at = Some(t0 + SEC);
        s.ping_sent = Some(t0);
        assert_eq!(s.next_timer(interval, timeout, stall), Some(t0 + 9 * SEC));
        s.stalled_since = Some(t0 - 25 * SEC);
        assert_eq!(s.next_timer(interval, timeout, stall), Some(t0 + 5 * SEC));
    }

    /// A session's wire over `sock` (no TLS, nothing left of the `101`).
    fn wire<'a>(
        sock: &'a std::os::unix::net::UnixStream,
        out: &'a mut Vec<u8>,
        out_pos: &'a mut usize,
    ) -> Wire<'a> {
        use std::os::fd::AsFd;
        Wire {
            fd: sock.as_fd(),
            tls: None,
            out,
            out_pos,
        }
    }

    #[test]
    fn part_of_a_frame_arriving_is_a_sign_of_life() {
        use std::io::Write;
        let (ours, mut client) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        ours.set_nonblocking(true).expect("non-blocking");
        let t0 = Instant::now() - 10 * SEC;
        let mut s = session(t0);
        s.ping_sent = Some(t0);
        let (mut out, mut pos) = (Vec::new(), 0);
        // Nothing yet: still silent.
        assert!(matches!(
            s.read(wire(&ours, &mut out, &mut pos)),
            Read::Blocked
        ));
        assert_eq!((s.last_seen, s.ping_sent), (t0, Some(t0)));
        // The first bytes of a masked 200-byte frame: no message yet, but
        // the client is there.
        client
            .write_all(&[0x82, 0x80 | 126, 0, 200, 1, 2, 3, 4, 9, 9])
            .expect("send");
        assert!(matches!(
            s.read(wire(&ours, &mut out, &mut pos)),
            Read::Blocked
        ));
        assert!(s.last_seen > t0);
        assert_eq!(s.ping_sent, None);
    }

    #[test]
    fn output_the_socket_takes_some_of_is_not_stalled() {
        use std::io::Read as _;
        let (ours, mut client) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        ours.set_nonblocking(true).expect("non-blocking");
        let t0 = Instant::now();
        let mut s = session(t0);
        let (mut out, mut pos) = (Vec::new(), 0);
        // More than the socket holds: output waits (as the loop marks).
        let mut sent_all = true;
        for _ in 0..64 {
            let data = bytes::Bytes::from(vec![7u8; 64 * 1024]);
            sent_all = s
                .send(wire(&ours, &mut out, &mut pos), false, data)
                .expect("under the pending limit");
            if !sent_all {
                break;
            }
        }
        assert!(!sent_all, "the socket took 4 MiB at once");
        s.stalled_since = Some(t0);
        // The socket takes nothing: still stalled since then.
        let flushed = s.flush(wire(&ours, &mut out, &mut pos));
        assert!(matches!(flushed, Ok(false)), "{flushed:?}");
        assert_eq!(s.stalled_since, Some(t0));
        // The client reads some: the socket takes some, not stalled.
        let mut buf = vec![0u8; 256 * 1024];
        let n = client.read(&mut buf).expect("read");
        assert!(n > 0);
        let flushed = s.flush(wire(&ours, &mut out, &mut pos));
        assert!(flushed.is_ok(), "{flushed:?}");
        assert_eq!(s.stalled_since, None);
    }

    #[test]
    fn every_protocol_reason_fits_a_close_frame() {
        use ProtocolError as P;
        let errors = [
            P::FragmentedControlFrame,
            P::ControlFrameTooBig,
            P::UnknownControlFrameType(11),
            P::UnknownDataFrameType(3),
            P::NonZeroReservedBits,
            P::UnmaskedFrameFromClient,
            P::UnexpectedContinueFrame,
            P::InvalidCloseSequence,
            P::ResetWithoutClosingHandshake,
        ];
        for e in errors {
            let reason = protocol_reason(&e);
            assert!(
                !reason.is_empty() && reason.len() <= 123,
                "{e:?}: {reason:?}"
            );
        }
    }
}
