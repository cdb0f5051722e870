//! A WebSocket client made of raw bytes, for tests that hold the host to
//! RFC 6455 frame by frame.
//!
//! A real client library refuses to send the broken frames these tests
//! need (unmasked, reserved bits or opcodes, fragmented control frames,
//! bad UTF-8), and hides what the server sent back (the close code, the
//! moment the socket closes). So: a frame writer for any header the
//! protocol can express ([`Frame`]), and a reader of the server's frames
//! over a plain [`TcpStream`] ([`WsClient`]).

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use base64::Engine as _;

use crate::{connect, parse_one, Response};

/// The GUID RFC 6455 §1.3 appends to a key before hashing it.
pub const KEY_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A valid key: the RFC's own example (its accept value is
/// [`SAMPLE_ACCEPT`]).
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The `Sec-WebSocket-Accept` RFC 6455 §1.3 gives for [`SAMPLE_KEY`].
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Opcodes (RFC 6455 §5.2).
pub mod op {
    /// A continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// A text frame.
    pub const TEXT: u8 = 0x1;
    /// A binary frame.
    pub const BINARY: u8 = 0x2;
    /// A close frame.
    pub const CLOSE: u8 = 0x8;
    /// A ping.
    pub const PING: u8 = 0x9;
    /// A pong.
    pub const PONG: u8 = 0xA;
}

/// The `Sec-WebSocket-Accept` value for `key`: base64 of the SHA-1 of the
/// key and the GUID, computed here (not by the host's code).
pub fn accept_for(key: &str) -> String {
    let input = format!("{key}{KEY_GUID}");
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        input.as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// A handshake request for `path` with `key`, and `extra` header lines
/// (each ending in `\r\n`).
pub fn handshake_request(path: &str, key: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// One frame, as a client would send it or as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The FIN bit.
    pub fin: bool,
    /// RSV1..3, in the low three bits.
    pub rsv: u8,
    /// The opcode (four bits).
    pub opcode: u8,
    /// The masking key, when masked.
    pub mask: Option<[u8; 4]>,
    /// The payload, unmasked.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A final, masked frame: what a well-behaved client sends.
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Frame {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some([0x37, 0xfa, 0x21, 0x3d]),
            payload: payload.into(),
        }
    }

    /// The same frame with FIN set to `fin`.
    pub fn fin(mut self, fin: bool) -> Frame {
        self.fin = fin;
        self
    }

    /// The same frame with reserved bits `rsv` (RSV1 is `0b100`).
    pub fn rsv(mut self, rsv: u8) -> Frame {
        self.rsv = rsv;
        self
    }

    /// The same frame sent unmasked.
    pub fn unmasked(mut self) -> Frame {
        self.mask = None;
        self
    }

    /// A close frame with `code` and `reason`.
    pub fn close(code: u16, reason: &str) -> Frame {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        Frame::new(op::CLOSE, payload)
    }

    /// The frame's bytes: the shortest length encoding (7, 16 or 64 bits).
    pub fn encode(&self) -> Vec<u8> {
        let len = self.payload.len();
        let mut out = Vec::with_capacity(len + 14);
        out.push(u8::from(self.fin) << 7 | (self.rsv & 0b111) << 4 | (self.opcode & 0xF));
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if len <= usize::from(u16::MAX) {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        match self.mask {
            Some(mask) => {
                out.extend_from_slice(&mask);
                out.extend(
                    self.payload
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ mask[i % 4]),
                );
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }

    /// Parses one frame at the start of `bytes`: the frame and the bytes
    /// it took, or `None` if it is not all there yet.
    pub fn decode(bytes: &[u8]) -> Option<(Frame, usize)> {
        let (&b0, rest) = bytes.split_first()?;
        let (&b1, mut rest) = rest.split_first()?;
        let len = match b1 & 0x7F {
            126 => {
                let (n, r) = rest.split_first_chunk::<2>()?;
                rest = r;
                u64::from(u16::from_be_bytes(*n))
            }
            127 => {
                let (n, r) = rest.split_first_chunk::<8>()?;
                rest = r;
                u64::from_be_bytes(*n)
            }
            n => u64::from(n),
        };
        let mask = if b1 & 0x80 != 0 {
            let (m, r) = rest.split_first_chunk::<4>()?;
            rest = r;
            Some(*m)
        } else {
            None
        };
        let len = usize::try_from(len).ok()?;
        if rest.len() < len {
            return None;
        }
        let mut payload = rest[..len].to_vec();
        if let Some(mask) = mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        let used = bytes.len() - rest.len() + len;
        let frame = Frame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0b111,
            opcode: b0 & 0xF,
            mask,
            payload,
        };
        Some((frame, used))
    }

    /// A close frame's code (`None` when it has none) and reason.
    pub fn close_parts(&self) -> (Option<u16>, String) {
        assert_eq!(self.opcode, op::CLOSE, "not a close frame: {self:?}");
        match self.payload.split_first_chunk::<2>() {
            Some((code, reason)) => (
                Some(u16::from_be_bytes(*code)),
                String::from_utf8_lossy(reason).into_owned(),
            ),
            None => (None, String::new()),
        }
    }
}

/// What reading the server's next frame came to.
#[derive(Debug)]
pub enum Next {
    /// A frame.
    Frame(Frame),
    /// The server closed the socket (EOF or reset) with no frame pending.
    Closed(io::ErrorKind),
    /// Nothing came for the read timeout.
    TimedOut,
}

/// A WebSocket connection from a client made of raw bytes, over a plain
/// socket or any other stream (a TLS session).
pub struct WsClient<S = TcpStream> {
    /// The socket (or the TLS stream over it).
    pub stream: S,
    /// Bytes read but not yet parsed as a frame.
    buf: Vec<u8>,
}

impl WsClient {
    /// Connects to `addr` and sends `request` (a handshake, perhaps with
    /// frames behind it); returns the client and the server's response,
    /// whatever it is (bytes after it stay buffered as frames).
    pub fn handshake_raw(addr: SocketAddr, request: &[u8]) -> (WsClient, Response) {
        WsClient::handshake_on(connect(addr), request)
    }

    /// Opens a WebSocket to `path` on `addr`; fails the test unless the
    /// server answers `101`.
    pub fn open(addr: SocketAddr, path: &str) -> WsClient {
        let request = handshake_request(path, SAMPLE_KEY, "");
        let (client, resp) = WsClient::handshake_raw(addr, request.as_bytes());
        assert_eq!(resp.status, 101, "handshake to {path}: {resp:?}");
        client
    }

    /// Sets how long a read waits for the server.
    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set a read timeout");
    }
}

impl<S: Read + Write> WsClient<S> {
    /// Sends `request` on `stream` (connected, its read timeout set) and
    /// reads the response, as [`WsClient::handshake_raw`] does.
    pub fn handshake_on(mut stream: S, request: &[u8]) -> (WsClient<S>, Response) {
        stream.write_all(request).expect("send the handshake");
        stream.flush().expect("send the handshake");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            // A 101 has no body: the response ends with its head.
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head_only = &buf[..end + 4];
                if head_only.starts_with(b"HTTP/1.1 101") {
                    let (resp, used) = parse_one(head_only).expect("a 101 head");
                    buf.drain(..used);
                    return (WsClient { stream, buf }, resp);
                }
                if let Some((resp, used)) = parse_one(&buf) {
                    if resp.header("content-length").is_some()
                        || resp.header("transfer-encoding").is_some()
                    {
                        buf.drain(..used);
                        return (WsClient { stream, buf }, resp);
                    }
                }
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    let (resp, _) = parse_one(&buf).unwrap_or_else(|| {
                        panic!(
                            "no response to the handshake: {:?}",
                            String::from_utf8_lossy(&buf)
                        )
                    });
                    let buf = Vec::new();
                    return (WsClient { stream, buf }, resp);
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends `frame`.
    pub fn send(&mut self, frame: &Frame) {
        self.try_send(frame).expect("send a frame");
    }

    /// Sends `frame`; an error when the server has closed.
    pub fn try_send(&mut self, frame: &Frame) -> io::Result<()> {
        self.try_send_bytes(&frame.encode())
    }

    /// Sends `bytes` as they are (frames made by hand, several at once).
    pub fn try_send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends a final masked text frame.
    pub fn text(&mut self, text: &str) {
        self.send(&Frame::new(op::TEXT, text.as_bytes()));
    }

    /// Reads the server's next frame (or the socket's end).
    pub fn next_event(&mut self) -> Next {
        let mut chunk = [0u8; 16384];
        loop {
            if let Some((frame, used)) = Frame::decode(&self.buf) {
                self.buf.drain(..used);
                return Next::Frame(frame);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Next::Closed(io::ErrorKind::UnexpectedEof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Next::TimedOut
                }
                Err(e) => return Next::Closed(e.kind()),
            }
        }
    }

    /// The server's next frame; fails the test if the socket ends or
    /// nothing comes.
    pub fn frame(&mut self) -> Frame {
        match self.next_event() {
            Next::Frame(f) => f,
            other => panic!("expected a frame from the server, got {other:?}"),
        }
    }

    /// The next frame, which must be a close frame (left unanswered).
    pub fn close_frame(&mut self) -> Frame {
        let close = self.frame();
        assert_eq!(close.opcode, op::CLOSE, "{close:?}");
        close
    }

    /// The next data message, text or binary, reassembled: (opcode of its
    /// first frame, payload). Answers nothing; fails on a close or EOF.
    pub fn message(&mut self) -> (u8, Vec<u8>) {
        let first = self.frame();
        assert!(
            matches!(first.opcode, op::TEXT | op::BINARY),
            "expected a data frame, got {first:?}"
        );
        assert!(first.mask.is_none(), "a server frame is never masked");
        let mut payload = first.payload;
        let mut fin = first.fin;
        while !fin {
            let next = self.frame();
            assert_eq!(next.opcode, op::CONTINUATION, "{next:?}");
            payload.extend_from_slice(&next.payload);
            fin = next.fin;
        }
        (first.opcode, payload)
    }

    /// The next text message.
    pub fn text_message(&mut self) -> String {
        let (opcode, payload) = self.message();
        assert_eq!(opcode, op::TEXT, "expected text");
        String::from_utf8(payload).expect("text is UTF-8")
    }

    /// Expects the server's close frame next (data frames before it are
    /// skipped), answers it as a client should (the server may have closed
    /// already: a failed send is fine), then expects the socket to close:
    /// the close's code and reason.
    pub fn expect_close(&mut self) -> (Option<u16>, String) {
        let close = loop {
            match self.next_event() {
                Next::Frame(f) if f.opcode == op::CLOSE => break f,
                Next::Frame(_) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert!(close.mask.is_none(), "a server frame is never masked");
        let parts = close.close_parts();
        let echo = match parts.0 {
            Some(code) => Frame::close(code, ""),
            None => Frame::new(op::CLOSE, Vec::new()),
        };
        let _ = self.try_send(&echo);
        self.expect_end();
        parts
    }

    /// Expects the socket to end (EOF or reset) with nothing but frames
    /// before it, within the read timeout.
    pub fn expect_end(&mut self) {
        loop {
            match self.next_event() {
                Next::Frame(f) => assert_ne!(f.opcode, op::CLOSE, "a second close frame"),
                Next::Closed(_) => return,
                Next::TimedOut => panic!("the server did not close the socket"),
            }
        }
    }
}
