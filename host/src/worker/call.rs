//! Calling the app for one request: the request view, the exchange, the
//! scoreboard lane, the access-log line.
//!
//! A [`Caller`] holds what one caller of the app reuses from request to
//! request (buffers, the cached date, the request-id generator). A worker
//! with `--threads 1` has one, used inline by its event loop; a threaded
//! worker has one per handler thread. It sees its worker only through
//! [`Serving`]. The event loop passes the worker's state ([`Flags`]) with
//! the request; the caller hands the connection's read-ahead body to the
//! exchange, and once the app returns, settles the connection's fate with
//! [`keep_alive`] from what the exchange reports.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use abi_stable::std_types::{RSlice, RStr};
use app_sdk::abi::{size_u32, RawRequest, RawTls, RawWsEvent};

use crate::{
    app::{instance::Failure, LoadedApp},
    config::PanicPolicy,
    http::{
        body::{ChunkedDecoder, LengthBody},
        date::DateCache,
        parse::{Framing, RequestHead},
        upgrade::Offer,
    },
    report::access_log::{AccessEntry, AccessLogTarget},
    scoreboard::{Lane, MsClock},
    tls::facts::TlsFacts,
    websocket::port::Port,
    worker::conn::{peer_ip, Conn},
    worker::exchange::{BodyState, Exchange, ExchangeBuffers, ExchangeInit},
    worker::held::HoldLimits,
    worker::host_fns,
    worker::outcome::{keep_alive, Flags},
    worker::serving::Serving,
    worker::timeout::Watch,
};

/// Longest request id taken from a request (longer ones are replaced).
const MAX_REQUEST_ID: usize = 200;
/// How long socket I/O may wait without progress while the app handles a request.
pub const EXCHANGE_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes request ids: 16 hex digits from a xorshift generator seeded from
/// the clock, the pid and the caller (unique enough to follow a request
/// through logs; not a secret).
struct RequestIds {
    state: u64,
    buf: [u8; 16],
}

impl RequestIds {
    fn new(caller: usize) -> RequestIds {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let seed = nanos ^ (u64::from(std::process::id()) << 32) ^ (caller as u64).rotate_left(17);
        RequestIds {
            state: seed | 1,
            buf: [0; 16],
        }
    }

    fn next(&mut self) -> &str {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let n = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.buf.iter_mut().enumerate() {
            *b = HEX[((n >> (60 - 4 * i)) & 15) as usize];
        }
        std::str::from_utf8(&self.buf).unwrap_or_default()
    }
}

/// The app's view of the TLS facts of a request's connection, borrowed.
pub fn tls_view<'a>(facts: &TlsFacts<'a>) -> RawTls<'a> {
    RawTls {
        size: size_u32::<RawTls<'_>>(),
        _reserved: 0,
        version: RStr::from_str(facts.version),
        cipher: RStr::from_str(facts.cipher),
        sni: RStr::from_str(facts.sni),
        alpn: RStr::from_str(facts.alpn),
        client_subject: RStr::from_str(facts.client_subject),
    }
}

/// The scheme a request arrived with: a trusted proxy's word when it gave
/// one, else `https` on a connection the host terminated TLS for.
#[inline]
pub fn scheme(forwarded: Option<&str>, tls: bool) -> &str {
    match forwarded {
        Some(scheme) => scheme,
        None if tls => "https",
        None => "http",
    }
}

/// The app's view of the request whose head, parsed into `head`, is
/// `head_bytes`: spans into those bytes, nothing copied; `tls` is the
/// connection's TLS facts ([`tls_view`]), `None` on a plain connection.
pub fn request_view<'a>(
    head: &'a RequestHead,
    head_bytes: &'a [u8],
    remote_addr: &'a str,
    local_addr: &'a str,
    scheme: &'a str,
    request_id: &'a str,
    tls: Option<&'a RawTls<'a>>,
) -> RawRequest<'a> {
    RawRequest {
        size: size_u32::<RawRequest<'_>>(),
        version_minor: head.version_minor,
        _reserved: [0; 3],
        head: RSlice::from_slice(head_bytes),
        method: head.method,
        target: head.target,
        path: head.path,
        query: head.query,
        headers: RSlice::from_slice(&head.headers),
        content_length: match head.framing {
            Framing::None => 0,
            Framing::Length(n) => n as i64,
            Framing::Chunked => -1,
        },
        remote_addr: RStr::from_str(remote_addr),
        local_addr: RStr::from_str(local_addr),
        scheme: RStr::from_str(scheme),
        request_id: RStr::from_str(request_id),
        tls: tls.map_or(std::ptr::null(), |t| t as *const RawTls<'a>),
    }
}

/// What became of a call.
#[derive(Debug, Clone, Copy)]
pub struct Called {
    /// How long the app took.
    pub call_time: Duration,
    /// It ran past `--timeout` and was given up on (answered 504, its socket shut).
    pub abandoned: bool,
    /// The app panicked (answered 500 if nothing was sent yet).
    pub panicked: bool,
}

/// One caller of the app and what it reuses between requests.
pub struct Caller<'s> {
    serving: &'s Serving,
    app: Arc<LoadedApp>,
    /// Its scoreboard lane.
    lane: &'s Lane,
    /// How its requests stand against a timeout.
    watch: Watch<'s>,
    /// Body bytes read while the app handles a request.
    stage: Vec<u8>,
    /// The app's response header lines.
    resp_headers: Vec<u8>,
    /// An access-log line being built.
    log_line: Vec<u8>,
    /// The current date (refreshed at each call).
    date: DateCache,
    /// Instants as scoreboard milliseconds.
    clock: MsClock,
    ids: RequestIds,
}

impl<'s> Caller<'s> {
    /// A caller of `app` for the worker `serving`, on scoreboard lane
    /// `index`, watched for timeouts by `watch`.
    pub fn new(
        serving: &'s Serving,
        app: Arc<LoadedApp>,
        index: usize,
        watch: Watch<'s>,
    ) -> Option<Self> {
        Some(Caller {
            serving,
            app,
            lane: serving.lanes.get(index)?,
            watch,
            stage: Vec::new(),
            resp_headers: Vec::new(),
            log_line: Vec::new(),
            date: DateCache::default(),
            clock: MsClock::new(),
            ids: RequestIds::new(index),
        })
    }

    /// Calls the app for the complete request `head` received on `conn`
    /// (with its chunked body read ahead, if any), writes or buffers the
    /// response, logs it, and leaves `conn` ready for its next request or
    /// closing.
    pub fn call(
        &mut self,
        conn: &mut Conn,
        head: &RequestHead,
        flags: Flags,
        log: Option<&AccessLogTarget>,
        port: &mut Port,
    ) -> Called {
        // Two clock readings per request: here and when the app returns.
        let started = Instant::now();
        self.date.refresh_at(started);
        let serving = self.serving;
        let serve = &serving.options;
        let read_ahead = conn.take_read_ahead();
        let view = conn.for_call();
        let (head_bytes, after_head) = view.input.split_at(head.head_len.min(view.input.len()));
        // A read-ahead chunked body hands over its decoded bytes first; the
        // decoder goes on from where it stopped.
        let (prefix, raw_used, body) = match (head.framing, &read_ahead) {
            (Framing::None | Framing::Length(0), _) => (&[][..], 0, BodyState::Done),
            (Framing::Length(n), _) => (&[][..], 0, BodyState::Length(LengthBody::new(n))),
            (Framing::Chunked, Some(pre)) => (
                &pre.decoded[..pre.len],
                pre.raw_used,
                if pre.decoder.is_done() {
                    BodyState::Done
                } else {
                    BodyState::Chunked(pre.decoder.clone())
                },
            ),
            (Framing::Chunked, None) => (
                &[][..],
                0,
                BodyState::Chunked(ChunkedDecoder::new(serve.limits.max_body)),
            ),
        };
        let body_here = match head.framing {
            Framing::Length(n) => n <= after_head.len() as u64,
            Framing::None => true,
            Framing::Chunked => matches!(body, BodyState::Done),
        };
        let flags = Flags {
            keep_alive_off: serve.keep_alive.is_none(),
            ..flags
        };
        self.stage.clear();
        let fd = view.fd;
        // A timeout answers 504 by writing to the socket itself: not through TLS.
        let plain = view.tls.is_none();
        // The request's id: the one it brings, else a new one; sent back too.
        let request_id: &str = match &serve.request_id_header {
            None => "",
            Some(name) => match head
                .headers
                .iter()
                .find(|h| h.name.get(head_bytes).eq_ignore_ascii_case(name.as_bytes()))
                .and_then(|h| std::str::from_utf8(h.value.get(head_bytes)).ok())
                .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID)
            {
                Some(given) => given,
                None => self.ids.next(),
            },
        };
        let mut ex = Exchange::new(
            ExchangeInit {
                stream: view.stream,
                pending: &after_head[raw_used.min(after_head.len())..],
                prefix,
                body,
                continue_pending: head.expect_continue && !view.continue_sent && !body_here,
                wish: head.keep_alive,
                flags,
                is_head: head.is_head,
                http10: head.version_minor == 0,
                date: self.date.http(),
                io_timeout: EXCHANGE_IO_TIMEOUT,
                min_rate: serve.body_min_rate,
                slot: serving.slot,
                watch: self.watch,
                hold: HoldLimits {
                    per_conn: serve.max_pending_output,
                    per_worker: serve.max_worker_pending_output,
                },
                worker: serving.id,
                request_id,
                websocket_key: (head.websocket_key.len > 0)
                    .then(|| head.websocket_key.get(head_bytes)),
                port,
                upgrade_offer: Offer::of(head, head_bytes),
            },
            ExchangeBuffers {
                staged: &mut self.stage,
                out: view.out,
                headers: &mut self.resp_headers,
                held: view.held,
            },
        );
        if let Some(name) = &serve.request_id_header {
            ex.add_host_header(name.as_bytes(), request_id.as_bytes());
        }
        // Behind a trusted proxy, the client and scheme are the proxy's word.
        let (forwarded_addr, forwarded_scheme) = if view.trusted_proxy && head.forwarded {
            serve
                .trusted
                .client(serve.forwarded_headers, head_bytes, &head.headers)
        } else {
            (None, None)
        };
        let tls = view.tls.as_ref().map(tls_view);
        let raw = request_view(
            head,
            head_bytes,
            forwarded_addr.unwrap_or(view.peer),
            serving.local(view.listener),
            scheme(forwarded_scheme, tls.is_some()),
            request_id,
            tls.as_ref(),
        );
        serving.slot.begin_request(
            self.lane,
            head.method.get(head_bytes),
            head.target.get(head_bytes),
            serve.show_query,
            self.clock.ms(started),
        );
        log::debug!(
            "worker {} handling \"{} {}\"",
            serving.id,
            String::from_utf8_lossy(head.method.get(head_bytes)),
            String::from_utf8_lossy(head.target.get(head_bytes))
        );
        // Until a byte of the response is written, a timeout can still answer 504.
        let answerable = ex.out.is_empty() && plain;
        match self.watch {
            Watch::Signal(lane) => {
                if answerable {
                    lane.set_answer_fd(std::os::fd::AsRawFd::as_raw_fd(&fd));
                }
            }
            Watch::Loop(watch) => watch.enter(fd, answerable),
        }
        let outcome = self.app.handle(&raw, host_fns::host_ctx(&mut ex));
        match self.watch {
            Watch::Signal(lane) => lane.set_answer_fd(-1),
            Watch::Loop(watch) => watch.leave(),
        }
        let returned = Instant::now();
        let abandoned = !serving.slot.end_request(self.lane, self.clock.ms(returned));
        let call_time = returned.duration_since(started);
        let mut panicked = false;
        if let Err(failure) = Failure::check(outcome) {
            // An error after the client went away is most likely the failed
            // write itself: the client's doing, not the app's.
            let (what, message, level) = match &failure {
                Failure::Panicked(m) => ("panicked", m, log::Level::Error),
                Failure::Failed(m) if ex.client_gone() => (
                    "returned an error after the client went away",
                    m,
                    log::Level::Info,
                ),
                Failure::Failed(m) => ("returned an error", m, log::Level::Error),
            };
            log::log!(
                level,
                "app {what}: {message} (worker {}, request \"{} {}\"{}{})",
                serving.id,
                String::from_utf8_lossy(head.method.get(head_bytes)),
                String::from_utf8_lossy(head.target.get(head_bytes)),
                if request_id.is_empty() { "" } else { ", id " },
                request_id,
            );
            match failure {
                Failure::Panicked(_) => {
                    panicked = true;
                    serving.slot.count_app_panic();
                    if serve.panic_policy == PanicPolicy::Retire {
                        ex.close_after();
                    }
                }
                Failure::Failed(_) if level == log::Level::Error => serving.slot.count_app_error(),
                Failure::Failed(_) => {}
            }
            ex.fail();
        }
        let mut outcome = ex.finish();
        outcome.abandoned = abandoned;
        serving
            .slot
            .record(outcome.status, call_time.as_micros() as u64);

        if let Some(target) = log {
            self.log_line.clear();
            let header = |name: &str| {
                head.headers
                    .iter()
                    .find(|h| h.name.get(head_bytes).eq_ignore_ascii_case(name.as_bytes()))
                    .map(|h| h.value.get(head_bytes))
            };
            serve.access_format.write(
                &mut self.log_line,
                &AccessEntry {
                    remote: forwarded_addr.unwrap_or(peer_ip(view.peer)),
                    method: head.method.get(head_bytes),
                    target: head.target.get(head_bytes),
                    path: head.path.get(head_bytes),
                    query: head.query.get(head_bytes),
                    version: if head.version_minor == 0 {
                        "HTTP/1.0"
                    } else {
                        "HTTP/1.1"
                    },
                    status: outcome.status,
                    bytes: outcome.bytes_sent,
                    micros: call_time.as_micros() as u64,
                    request_id,
                    request_header: &header,
                    response_headers: &self.resp_headers,
                    clf_time: self.date.clf(),
                    iso_time: self.date.iso(),
                },
            );
            target.write_line(&self.log_line);
        }

        conn.consume(head.head_len + raw_used + outcome.pending_used);
        if outcome.staged_used < self.stage.len() {
            conn.unread(&self.stage[outcome.staged_used..]);
        }
        if outcome.client_gone || outcome.abandoned {
            conn.drop_output_and_close();
        } else if let Some(id) = outcome.websocket {
            conn.start_websocket(id, serve.websocket.limits(), returned);
        } else if keep_alive(head.keep_alive, flags, &outcome) {
            conn.keep(returned + serve.keep_alive.unwrap_or(serve.header_timeout));
        } else {
            conn.close_after_output();
        }
        Called {
            call_time,
            abandoned,
            panicked,
        }
    }
}

impl Caller<'_> {
    /// Calls the app for one event of WebSocket connection `conn` (of ABI
    /// kind `kind`: open, a message, close) with `data` (a message, or a
    /// close reason) and close `code`; what it sends goes to `port`. Timed
    /// and watched as a request is; a stuck event call is given up on as a
    /// stuck request is.
    pub fn event(
        &mut self,
        kind: u32,
        conn: u64,
        data: &[u8],
        code: u16,
        port: &mut Port,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> (Called, bool) {
        let serving = self.serving;
        let started = Instant::now();
        let what: &[u8] = match kind {
            app_sdk::abi::WS_OPEN => b"open",
            app_sdk::abi::WS_CLOSE => b"close",
            _ => b"message",
        };
        serving
            .slot
            .begin_request(self.lane, b"WS", what, false, self.clock.ms(started));
        let event = RawWsEvent {
            size: size_u32::<RawWsEvent<'_>>(),
            kind,
            conn,
            data: RSlice::from_slice(data),
            code,
            _reserved: [0; 6],
        };
        let watched = match (self.watch, fd) {
            (Watch::Loop(watch), Some(fd)) => {
                watch.enter(fd, false);
                Some(watch)
            }
            _ => None,
        };
        let outcome = self.app.on_websocket(&event, host_fns::event_ctx(port));
        if let Some(watch) = watched {
            watch.leave();
        }
        let returned = Instant::now();
        let abandoned = !serving.slot.end_event(self.lane, self.clock.ms(returned));
        let mut called = Called {
            call_time: returned.duration_since(started),
            abandoned,
            panicked: false,
        };
        match Failure::check(outcome) {
            Ok(()) => (called, true),
            Err(failure) => {
                if let Failure::Panicked(_) = failure {
                    called.panicked = true;
                    serving.slot.count_app_panic();
                } else {
                    serving.slot.count_app_error();
                }
                log::error!(
                    "app {} in a WebSocket {} event: {} (worker {}, connection {conn:x})",
                    if called.panicked {
                        "panicked"
                    } else {
                        "returned an error"
                    },
                    String::from_utf8_lossy(what),
                    match &failure {
                        Failure::Panicked(m) | Failure::Failed(m) => m,
                    },
                    serving.id,
                );
                (called, false)
            }
        }
    }

    /// Whether the app handles WebSocket events.
    pub fn handles_websockets(&self) -> bool {
        self.app.handles_websockets()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_the_proxys_word_else_the_connections() {
        // (forwarded scheme, TLS connection) → scheme
        let cases = [
            (None, false, "http"),
            (None, true, "https"),
            (Some("https"), false, "https"),
            (Some("http"), true, "http"),
            (Some("https"), true, "https"),
        ];
        for (forwarded, tls, expected) in cases {
            assert_eq!(scheme(forwarded, tls), expected, "{forwarded:?} {tls}");
        }
    }

    #[test]
    fn the_tls_view_borrows_every_fact() {
        let facts = TlsFacts {
            version: "TLSv1.3",
            cipher: "TLS13_AES_128_GCM_SHA256",
            sni: "a.test",
            alpn: "http/1.1",
            client_subject: "CN=alice",
        };
        let raw = tls_view(&facts);
        assert_eq!(raw.size as usize, app_sdk::abi::RAW_TLS_MIN);
        let seen = [
            raw.version.as_str(),
            raw.cipher.as_str(),
            raw.sni.as_str(),
            raw.alpn.as_str(),
            raw.client_subject.as_str(),
        ];
        assert_eq!(
            seen,
            [
                "TLSv1.3",
                "TLS13_AES_128_GCM_SHA256",
                "a.test",
                "http/1.1",
                "CN=alice"
            ]
        );
    }
}
