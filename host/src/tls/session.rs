//! One TLS connection: a rustls `ServerConnection` driven by the worker's
//! non-blocking socket, never waiting itself.
//!
//! The worker's loop and the app's call read and write plaintext through
//! [`Link`] exactly as they read and write a plain socket (see
//! [`crate::worker::stream`]): a read returns plaintext, or `WouldBlock`
//! when the socket has nothing more; a write takes plaintext as far as the
//! socket takes the records it makes. So the handshake needs no code of its
//! own: the first reads drive it (each read feeds what arrived to rustls
//! and writes what rustls answers), and the connection waits in the loop's
//! epoll set like any other, bounded by `--tls-handshake-timeout`.
//!
//! The rules that keep it from stalling:
//! - A read drains all the plaintext rustls holds before it reads the
//!   socket again, and feeds the socket's bytes to rustls until plaintext
//!   comes out or the socket is empty: nothing is ever left inside rustls
//!   that the socket's readiness would not announce.
//! - Records rustls holds for the socket are written before new plaintext
//!   is taken, so at most one batch (`rustls`'s buffer limit, 64 KiB) is
//!   held per connection, and [`Link::flush`] says whether they are all out:
//!   the connection's output counts as drained only then.

use std::{
    io::{self, Read, Write},
    os::fd::{AsRawFd, BorrowedFd},
    sync::Arc,
};

use rustls::{ServerConfig, ServerConnection};

use crate::tls::facts::TlsFacts;

/// Plaintext bytes of a file encrypted per step when a file response goes
/// out over TLS (`sendfile` cannot encrypt): one TLS record's worth.
pub const FILE_CHUNK: usize = 16 * 1024;

/// Seeds this thread's random generator (aws-lc's), which every handshake
/// draws from. Seeding gathers entropy, CPU jitter included: over 100 ms,
/// measured in a release build, the first time a process (and a thread)
/// asks, and a forked worker asks anew. Called as each worker thread starts
/// (before the worker reports ready), so no client's first handshake pays it.
pub fn warm_up() {
    let mut bytes = [0u8; 32];
    if let Err(e) = aws_lc_rs::rand::fill(&mut bytes) {
        log::warn!("cannot seed the random generator for TLS: {e}");
    }
}

/// A TLS connection's session: the link that reads and writes through it,
/// and, once the handshake is done, what it agreed.
pub struct TlsSession {
    link: Link,
    /// The facts, once the handshake is done.
    agreed: Option<Agreed>,
}

/// What the handshake agreed, kept as the app reads it (owned, so the
/// facts and the link can be borrowed at once).
struct Agreed {
    version: &'static str,
    cipher: &'static str,
    sni: Box<str>,
    alpn: Box<str>,
    client_subject: Box<str>,
}

/// The rustls connection, read and written through the socket.
pub struct Link {
    conn: ServerConnection,
    /// The peer's end of the stream was seen (close_notify, or EOF).
    eof: bool,
}

impl TlsSession {
    /// A new session for a connection just accepted.
    pub fn new(config: &Arc<ServerConfig>) -> io::Result<TlsSession> {
        let conn = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
        Ok(TlsSession {
            link: Link { conn, eof: false },
            agreed: None,
        })
    }

    /// Whether the handshake is still under way.
    pub fn handshaking(&self) -> bool {
        self.link.conn.is_handshaking()
    }

    /// Notes what the handshake agreed (once it is done), for the app.
    pub fn handshake_done(&mut self) {
        if self.agreed.is_some() || self.handshaking() {
            return;
        }
        let conn = &self.link.conn;
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("");
        let client_subject = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| {
                use x509_parser::prelude::FromDer;
                x509_parser::certificate::X509Certificate::from_der(leaf.as_ref())
                    .ok()
                    .map(|(_, cert)| cert.subject().to_string())
            })
            .unwrap_or_default();
        self.agreed = Some(Agreed {
            version,
            cipher,
            sni: conn.server_name().unwrap_or("").into(),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default()
                .into(),
            client_subject: client_subject.into(),
        });
    }

    /// The link, and the facts the handshake agreed (borrowed at once).
    pub fn parts(&mut self) -> (&mut Link, Option<TlsFacts<'_>>) {
        let facts = self.agreed.as_ref().map(|a| TlsFacts {
            version: a.version,
            cipher: a.cipher,
            sni: &a.sni,
            alpn: &a.alpn,
            client_subject: &a.client_subject,
        });
        (&mut self.link, facts)
    }

    /// The link alone.
    pub fn link(&mut self) -> &mut Link {
        &mut self.link
    }
}

impl Link {
    /// Feeds bytes already read from the socket (those that followed a
    /// PROXY protocol header) to rustls, as if just read.
    pub fn feed(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.conn.read_tls(&mut bytes)?;
            self.process()?;
        }
        Ok(())
    }

    /// Reads plaintext into the spare room of `buf` (growing it by at least
    /// `room`) without waiting: `Ok(0)` at the end of the stream,
    /// `WouldBlock` when the socket has nothing more. Handshake messages
    /// rustls answers on the way are written as far as the socket takes
    /// them (the caller's next flush writes the rest).
    pub fn read_into(
        &mut self,
        fd: BorrowedFd<'_>,
        buf: &mut Vec<u8>,
        room: usize,
    ) -> io::Result<usize> {
        loop {
            let got = self.drain_plaintext(buf, room)?;
            if got > 0 || self.eof {
                return Ok(got);
            }
            match self.conn.read_tls(&mut Socket(fd)) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            let processed = self.process();
            // The handshake's answer, or an alert on the way out.
            let flushed = self.flush(fd);
            processed?;
            flushed?;
        }
    }

    /// Processes the records read; a protocol error is sent to the peer as
    /// an alert (by the next flush) and returned as `InvalidData`.
    fn process(&mut self) -> io::Result<()> {
        match self.conn.process_new_packets() {
            Ok(state) => {
                if state.peer_has_closed() {
                    self.eof = true;
                }
                Ok(())
            }
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    /// Moves every byte of plaintext rustls holds into `buf` (copied once,
    /// from rustls's buffer to the connection's).
    fn drain_plaintext(&mut self, buf: &mut Vec<u8>, room: usize) -> io::Result<usize> {
        use std::io::BufRead;
        let mut got = 0;
        loop {
            let mut reader = self.conn.reader();
            let chunk = match reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
                // The peer closed without close_notify: HTTP frames its own
                // messages, so this is an end like any other.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.eof = true;
                    return Ok(got);
                }
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                // A close_notify: the clean end of the stream.
                self.eof = true;
                return Ok(got);
            }
            if got == 0 {
                buf.reserve(room);
            }
            buf.extend_from_slice(chunk);
            let n = chunk.len();
            reader.consume(n);
            got += n;
        }
    }

    /// Writes the records rustls holds as far as the socket takes them:
    /// `Ok(true)` when none is left.
    pub fn flush(&mut self, fd: BorrowedFd<'_>) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Socket(fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Takes as much of `parts` as the socket takes the records of, without
    /// waiting: returns the plaintext bytes taken (some of whose records may
    /// still be held: see [`Link::flush`]).
    pub fn write_ready(&mut self, fd: BorrowedFd<'_>, parts: &[&[u8]]) -> io::Result<usize> {
        let mut taken = 0;
        for part in parts {
            let mut at = 0;
            while at < part.len() {
                if !self.flush(fd)? {
                    return Ok(taken);
                }
                let n = self.conn.writer().write(&part[at..])?;
                if n == 0 {
                    return Ok(taken);
                }
                at += n;
                taken += n;
            }
        }
        Ok(taken)
    }

    /// Sends bytes `*offset..end` of `file` as far as the socket takes
    /// them, advancing `*offset` (as [`crate::http::io::send_file_ready`]
    /// does for a plain socket, but read and encrypted here, a record at a
    /// time). `Ok(true)` once all of it is out of the file (the caller's
    /// flush writes the last records).
    pub fn send_file_ready(
        &mut self,
        fd: BorrowedFd<'_>,
        file: BorrowedFd<'_>,
        offset: &mut u64,
        end: u64,
    ) -> io::Result<bool> {
        let mut chunk = [0u8; FILE_CHUNK];
        while *offset < end {
            if !self.flush(fd)? {
                return Ok(false);
            }
            let want = ((end - *offset) as usize).min(FILE_CHUNK);
            let n = nix::sys::uio::pread(file, &mut chunk[..want], *offset as libc::off_t)
                .map_err(io::Error::from)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before the announced length",
                ));
            }
            let taken = self.conn.writer().write(&chunk[..n])?;
            *offset += taken as u64;
        }
        Ok(true)
    }

    /// Sends close_notify (with what is pending), as far as the socket takes it.
    pub fn close(&mut self, fd: BorrowedFd<'_>) {
        self.conn.send_close_notify();
        let _ = self.flush(fd);
    }
}

/// The socket as rustls reads and writes it: `recv` and `sendmsg` with
/// `MSG_NOSIGNAL` (a vanished client is an `EPIPE`, never a signal).
struct Socket<'a>(BorrowedFd<'a>);

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match nix::sys::socket::recv(
                self.0.as_raw_fd(),
                buf,
                nix::sys::socket::MsgFlags::empty(),
            ) {
                Ok(n) => return Ok(n),
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        loop {
            match nix::sys::socket::sendmsg::<()>(
                self.0.as_raw_fd(),
                bufs,
                &[],
                nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) => return Ok(n),
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
