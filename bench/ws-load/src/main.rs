//! `ws-load`: the load generator of `bench/websocket.py`.
//!
//! ```text
//! ws-load echo --addr 127.0.0.1:8000 --path /echo --connections 100 --seconds 5 --size 16
//! ws-load hold --addr 127.0.0.1:8000 --path /echo --connections 10000 --kind ws|http \
//!              [--sources 127.0.0.2,127.0.0.3]
//! ```
//!
//! - `echo`: opens the connections (WebSocket handshakes), then each one
//!   sends a text message of `--size` bytes, waits for it to come back and
//!   sends the next, for `--seconds`. Prints one JSON line: round trips, the
//!   rate, and latency percentiles (send to echo, in µs).
//! - `hold`: opens the connections (WebSocket handshakes, or with
//!   `--kind http` one `GET` each, kept alive), prints `ready N`, then keeps
//!   them open and idle (answering the server's pings, unless
//!   `--silent yes`) until its standard input closes; prints one JSON line
//!   (how many the server closed, pings).
//!
//! Why a program of its own, and why this shape: the benchmark compares
//! servers that answer a round trip in a few µs of CPU, so the client must
//! cost less than they do. A Python asyncio client spends more per message
//! than the servers; a thread per connection pays two context switches per
//! round trip. This is one thread, one epoll loop (`mio`), hand-written
//! framing (a masked frame out, an unmasked one in: RFC 6455 §5.2) with no
//! allocation per message: a round trip costs it one `write` and one `read`.
//! It is pinned to its own CPU by the script. Connections may come from
//! several loopback source addresses (`--sources`), so tens of thousands of
//! them (and the TIME_WAIT of earlier runs) do not run out of ports.
//! Only loopback (or whatever `--addr` names) is contacted.

use std::{
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

/// How long one connect, or one handshake's answer, may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections opened (request written) before their answers are read: the
/// handshakes overlap, without overrunning the server's accept backlog.
const HANDSHAKE_BATCH: usize = 64;
/// The largest response head accepted at the handshake.
const MAX_HEAD: usize = 16 * 1024;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// After the run, how long the echoes still under way get to arrive.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the `hold` loop looks whether its standard input has closed.
const HOLD_TICK: Duration = Duration::from_millis(100);
/// Events taken per `epoll_wait`.
const EVENTS: usize = 1024;
/// The `Sec-WebSocket-Key` every handshake sends (the server's answer is
/// not checked: a 101 is what matters here).
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The largest `--size`: one message stays one small frame.
const MAX_SIZE: usize = 65_535;

/// Frame opcodes (RFC 6455 §5.2).
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ws,
    Http,
}

struct Options {
    echo: bool,
    addr: SocketAddr,
    path: String,
    connections: usize,
    seconds: f64,
    size: usize,
    kind: Kind,
    sources: Vec<IpAddr>,
    /// `hold`: pings are read, never answered (the server closes after its ping timeout).
    silent: bool,
}

fn usage() -> String {
    "usage: ws-load echo|hold --addr IP:PORT [--path /echo] [--connections N] [--seconds S] \
     [--size BYTES] [--kind ws|http] [--sources IP,IP...] [--silent yes]"
        .to_string()
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let echo = match args.next().as_deref() {
        Some("echo") => true,
        Some("hold") => false,
        _ => return Err(usage()),
    };
    let mut opts = Options {
        echo,
        addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
        path: "/echo".into(),
        connections: 100,
        seconds: 5.0,
        size: 16,
        kind: Kind::Ws,
        sources: Vec::new(),
        silent: false,
    };
    let mut addr_given = false;
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--addr" => {
                opts.addr = value.parse().map_err(|e| bad(&e))?;
                addr_given = true;
            }
            "--path" => opts.path = value,
            "--connections" => opts.connections = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => opts.seconds = value.parse().map_err(|e| bad(&e))?,
            "--size" => opts.size = value.parse().map_err(|e| bad(&e))?,
            "--kind" => {
                opts.kind = match value.as_str() {
                    "ws" => Kind::Ws,
                    "http" => Kind::Http,
                    _ => return Err(bad(&"expected ws or http")),
                }
            }
            "--silent" => opts.silent = value == "yes",
            "--sources" => {
                opts.sources = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().map_err(|e| bad(&e)))
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("unknown option {flag}\n{}", usage())),
        }
    }
    if !addr_given {
        return Err(format!("--addr is required\n{}", usage()));
    }
    if opts.size > MAX_SIZE {
        return Err(format!("--size is at most {MAX_SIZE}"));
    }
    if !(opts.seconds.is_finite() && opts.seconds > 0.0) {
        return Err("--seconds must be positive".into());
    }
    Ok(opts)
}

/// One connection of the loop.
struct Conn {
    stream: mio::net::TcpStream,
    /// Bytes read and not yet parsed into frames.
    rbuf: Vec<u8>,
    /// When its message under way was sent (`echo`), if one is.
    sent: Option<Instant>,
    /// The state of its masking keys (xorshift).
    mask: u32,
    /// Closed (by the server, or after an error): no longer polled.
    dead: bool,
}

impl Conn {
    fn next_mask(&mut self) -> [u8; 4] {
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        self.mask.to_be_bytes()
    }

    /// Writes one masked frame. The frames are small and the socket's
    /// buffer empty, so a frame goes in one `write`; a short one is an error.
    fn send(&mut self, opcode: u8, payload: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let mask = self.next_mask();
        out.clear();
        out.push(0x80 | opcode);
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let n = self.stream.write(out)?;
        if n != out.len() {
            return Err(io::Error::other("short write"));
        }
        Ok(())
    }
}

/// The next complete frame at the start of `buf`: (opcode, payload range,
/// frame length), or None if it has not all arrived yet.
fn next_frame(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at): (usize, usize) = match buf[1] & 0x7F {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?,
            10,
        ),
        n => (n as usize, 2),
    };
    if masked {
        at += 4;
    }
    let end = at.checked_add(len)?;
    (buf.len() >= end).then_some((opcode, at..end, end))
}

/// A TCP connection to `addr`, from `source` if given, with Nagle off.
fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&addr.into(), IO_TIMEOUT)?;
    socket.set_nodelay(true)?;
    socket.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok(socket.into())
}

/// Reads a response head (and whatever follows it) into `buf`; returns the
/// head's length.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(at + 4);
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::other("response head too long"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("closed before answering"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The Content-Length of a response head, 0 without one.
fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Opens every connection (handshakes in batches), as non-blocking streams.
fn open_all(opts: &Options) -> Result<Vec<Conn>, String> {
    let host = opts.addr;
    let request = match opts.kind {
        Kind::Ws => format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            opts.path
        ),
        Kind::Http => format!("GET {} HTTP/1.1\r\nHost: {host}\r\n\r\n", opts.path),
    };
    let mut conns = Vec::with_capacity(opts.connections);
    let mut index = 0;
    while index < opts.connections {
        let batch = HANDSHAKE_BATCH.min(opts.connections - index);
        let mut pending = Vec::with_capacity(batch);
        for i in index..index + batch {
            let source = (!opts.sources.is_empty()).then(|| opts.sources[i % opts.sources.len()]);
            let mut stream = connect(opts.addr, source)
                .map_err(|e| format!("connection {i}: connect from {source:?}: {e}"))?;
            stream
                .write_all(request.as_bytes())
                .map_err(|e| format!("connection {i}: write: {e}"))?;
            pending.push(stream);
        }
        for (k, mut stream) in pending.into_iter().enumerate() {
            let i = index + k;
            let mut buf = Vec::new();
            let head = read_head(&mut stream, &mut buf)
                .map_err(|e| format!("connection {i}: handshake: {e}"))?;
            let want = match opts.kind {
                Kind::Ws => "HTTP/1.1 101",
                Kind::Http => "HTTP/1.1 ",
            };
            if !buf.starts_with(want.as_bytes()) {
                let line = String::from_utf8_lossy(&buf[..head]);
                let line = line.lines().next().unwrap_or("");
                return Err(format!("connection {i}: answered {line:?}, not {want:?}…"));
            }
            let mut rest = buf.split_off(head);
            if opts.kind == Kind::Http {
                // Read the body, so the connection is idle, between requests.
                let body = content_length(&buf);
                let mut chunk = [0u8; 4096];
                while rest.len() < body {
                    let n = stream
                        .read(&mut chunk)
                        .map_err(|e| format!("connection {i}: body: {e}"))?;
                    if n == 0 {
                        return Err(format!("connection {i}: closed after its response"));
                    }
                    rest.extend_from_slice(&chunk[..n]);
                }
                rest.clear();
            }
            stream
                .set_nonblocking(true)
                .map_err(|e| format!("connection {i}: {e}"))?;
            conns.push(Conn {
                stream: mio::net::TcpStream::from_std(stream),
                rbuf: rest,
                sent: None,
                mask: (0x9E37_79B9 ^ (i as u32).wrapping_mul(0x85EB_CA6B)) | 1,
                dead: false,
            });
        }
        index += batch;
    }
    Ok(conns)
}

/// Reads what there is on `conn` into its buffer; Ok(false) at EOF.
///
/// A read that does not fill `scratch` emptied the socket's receive queue,
/// so the loop stops there rather than read again for a `WouldBlock`: data
/// arriving later raises a new edge (epoll is edge-triggered under mio).
/// That saves a system call per round trip.
fn fill(conn: &mut Conn, scratch: &mut [u8]) -> io::Result<bool> {
    loop {
        match conn.stream.read(scratch) {
            Ok(0) => return Ok(false),
            Ok(n) if n < scratch.len() => {
                conn.rbuf.extend_from_slice(&scratch[..n]);
                return Ok(true);
            }
            Ok(n) => conn.rbuf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The value below which `fraction` of `sorted` lie (nearest rank), in µs.
fn percentile(sorted: &[u64], fraction: f64) -> String {
    if sorted.is_empty() {
        return "null".into();
    }
    let rank = (fraction * sorted.len() as f64).round() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    format!("{:.1}", sorted[index] as f64 / 1000.0)
}

fn echo(opts: &Options, mut conns: Vec<Conn>) -> io::Result<()> {
    let mut poll = Poll::new()?;
    for (i, c) in conns.iter_mut().enumerate() {
        poll.registry()
            .register(&mut c.stream, Token(i), Interest::READABLE)?;
    }
    let message = vec![b'x'; opts.size];
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut out = Vec::with_capacity(opts.size + 16);
    let mut events = Events::with_capacity(EVENTS);
    let mut latencies: Vec<u64> = Vec::with_capacity(1 << 20);
    let (mut errors, mut outstanding) = (0u64, 0usize);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(opts.seconds);
    for c in conns.iter_mut() {
        c.sent = Some(Instant::now());
        match c.send(OP_TEXT, &message, &mut out) {
            Ok(()) => outstanding += 1,
            Err(_) => {
                errors += 1;
                c.dead = true;
            }
        }
    }
    let mut stopping = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            stopping = true;
            if outstanding == 0 || now >= deadline + DRAIN_TIMEOUT {
                break;
            }
        }
        let wait = if stopping {
            deadline + DRAIN_TIMEOUT - now
        } else {
            deadline - now
        };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            let c = &mut conns[event.token().0];
            if c.dead {
                continue;
            }
            let open = fill(c, &mut scratch).unwrap_or(false);
            let mut consumed = 0;
            while let Some((opcode, payload, len)) = next_frame(&c.rbuf[consumed..]) {
                let payload = consumed + payload.start..consumed + payload.end;
                consumed += len;
                match opcode {
                    OP_TEXT | OP_BINARY => {
                        let Some(sent) = c.sent.take() else { continue };
                        outstanding -= 1;
                        let now = Instant::now();
                        if now <= deadline {
                            latencies.push((now - sent).as_nanos() as u64);
                        }
                        if payload.len() != message.len() {
                            errors += 1;
                        }
                        if !stopping {
                            c.sent = Some(now);
                            match c.send(OP_TEXT, &message, &mut out) {
                                Ok(()) => outstanding += 1,
                                Err(_) => {
                                    c.sent = None;
                                    c.dead = true;
                                    break;
                                }
                            }
                        }
                    }
                    OP_PING => {
                        let ping = c.rbuf[payload].to_vec();
                        if c.send(OP_PONG, &ping, &mut out).is_err() {
                            c.dead = true;
                            break;
                        }
                    }
                    OP_CLOSE => {
                        c.dead = true;
                        break;
                    }
                    _ => {}
                }
            }
            c.rbuf.drain(..consumed.min(c.rbuf.len()));
            if !open || c.dead {
                // Lost: the server closed it, or a write failed.
                if c.sent.take().is_some() {
                    outstanding -= 1;
                }
                c.dead = true;
                errors += 1;
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
    }
    let elapsed = opts.seconds;
    // Say goodbye: a close frame each (1000), not waited for.
    for c in conns.iter_mut().filter(|c| !c.dead) {
        let _ = c.send(OP_CLOSE, &1000u16.to_be_bytes(), &mut out);
    }
    latencies.sort_unstable();
    let messages = latencies.len();
    println!(
        "{{\"mode\":\"echo\",\"connections\":{},\"size\":{},\"seconds\":{elapsed},\"messages\":{messages},\
         \"rate\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{},\"errors\":{errors},\
         \"unanswered\":{outstanding}}}",
        conns.len(),
        opts.size,
        messages as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    Ok(())
}

fn hold(opts: &Options, mut conns: Vec<Conn>) -> io::Result<()> {
    let mut poll = Poll::new()?;
    for (i, c) in conns.iter_mut().enumerate() {
        poll.registry()
            .register(&mut c.stream, Token(i), Interest::READABLE)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            // Until EOF (or an error): the script closes our stdin to stop us.
            let _ = io::copy(&mut io::stdin(), &mut io::sink());
            stop.store(true, Ordering::SeqCst);
        });
    }
    println!("ready {}", conns.len());
    io::stdout().flush()?;
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut out = Vec::with_capacity(256);
    let mut events = Events::with_capacity(EVENTS);
    let (mut closed, mut pings) = (0u64, 0u64);
    while !stop.load(Ordering::SeqCst) {
        match poll.poll(&mut events, Some(HOLD_TICK)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            let c = &mut conns[event.token().0];
            if c.dead {
                continue;
            }
            let open = fill(c, &mut scratch).unwrap_or(false);
            let mut consumed = 0;
            if opts.kind == Kind::Ws {
                while let Some((opcode, payload, len)) = next_frame(&c.rbuf[consumed..]) {
                    let payload = consumed + payload.start..consumed + payload.end;
                    consumed += len;
                    if opcode == OP_PING {
                        pings += 1;
                        if !opts.silent {
                            let ping = c.rbuf[payload].to_vec();
                            let _ = c.send(OP_PONG, &ping, &mut out);
                        }
                    } else if opcode == OP_CLOSE {
                        c.dead = true;
                    }
                }
            } else {
                consumed = c.rbuf.len();
            }
            c.rbuf.drain(..consumed.min(c.rbuf.len()));
            if !open || c.dead {
                c.dead = true;
                closed += 1;
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
    }
    println!(
        "{{\"mode\":\"hold\",\"kind\":\"{}\",\"connections\":{},\"closed_by_server\":{closed},\"pings\":{pings}}}",
        if opts.kind == Kind::Ws { "ws" } else { "http" },
        conns.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("ws-load: {e}");
            return ExitCode::from(2);
        }
    };
    if opts.echo && opts.kind == Kind::Http {
        eprintln!("ws-load: echo needs --kind ws");
        return ExitCode::from(2);
    }
    let conns = match open_all(&opts) {
        Ok(conns) => conns,
        Err(e) => {
            eprintln!("ws-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if opts.echo {
        echo(&opts, conns)
    } else {
        hold(&opts, conns)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ws-load: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_frame;

    #[test]
    fn frames_parse_when_whole() {
        assert_eq!(next_frame(&[0x81, 2, b'h']), None);
        assert_eq!(next_frame(&[0x81, 2, b'h', b'i', 0]), Some((1, 2..4, 4)));
        let mut long = vec![0x82, 126, 0x01, 0x00];
        long.resize(4 + 256, 0);
        assert_eq!(next_frame(&long), Some((2, 4..260, 260)));
        assert_eq!(next_frame(&long[..100]), None);
    }
}
