//! The types that cross the boundary between the host and an app library:
//! the app-sdk ABI, line 0.2, which grows without breaking deployed apps.
//!
//! App authors never touch these types: they use [`Request`](crate::Request),
//! [`Response`](crate::Response) and [`export_app!`](crate::export_app). The
//! host uses them directly.
//!
//! # How the ABI grows (the compatibility rule)
//! Within one line (0.2.x) the ABI only grows, so
//! - an app built against any 0.2.x SDK loads and serves in any later 0.2.x
//!   host;
//! - an app built against a newer 0.2.y runs on an older host when it uses
//!   nothing that host lacks, and is refused, with a message naming what is
//!   missing, when it does.
//!
//! How that is kept, mechanically:
//! - Every table that crosses ([`AppRoot`], [`HostFns`], [`WorkerInfo`],
//!   [`RawRequest`], [`RawTls`], [`RawWsEvent`], [`LogRecord`]) is a `#[repr(C)]` struct whose first
//!   field is its own `size` in bytes, as its maker was built. A release
//!   only *appends* fields, never moves, retypes or removes one, and every
//!   appended field is valid when all zero (an `Option` of a function, an
//!   integer, a pointer that may be null) and zero means "absent". (An
//!   `RStr` or `RSlice` is not: all zero, its data pointer is null, so
//!   text is appended behind a pointer to a table of its own, as
//!   [`RawRequest::tls`] does.)
//! - A reader never takes a reference to a peer's table of unknown size: it
//!   reads it with [`read_table`], which copies the bytes the peer has and
//!   zero-fills the rest, once per load, worker or request.
//! - Each release that appends something bumps [`ABI_REVISION`] and, when an
//!   app could need the new thing, adds a [`Feature`] bit: the host says
//!   which bits it [`provides`](HostFns::provides), the app which it
//!   [`requires`](AppRoot::requires) (only features it cannot do without: a
//!   feature with a fallback, such as logging through the host, is never
//!   required). The app carries the names of its SDK's features, so even an
//!   older host that never heard of a feature can name it in its refusal.
//! - [`ABI_LINE`] changes only with a breaking change (the next line, 0.3);
//!   a host refuses an app of another line.
//!
//! What checks it: the unit tests at the bottom of this file pin the size
//! and offset of every field (an edit that moves one fails), and the
//! integration tests load an app built against the first 0.2 SDK (kept in
//! the repository, `compat/`) and an app "from the future".
//!
//! # Safety
//! Every function pointer whose callee trusts a pointer it is given is an
//! `unsafe extern "C" fn` with a `# Safety` contract, and each side calls
//! the other only through safe wrappers that uphold it: [`HostIo`]'s
//! methods in the app, the host's own wrapper around [`AppRoot`]. An
//! [`AppHandle`] has one owner, so an app instance is freed once.

use std::{
    ffi::c_void,
    marker::PhantomData,
    mem::{size_of, MaybeUninit},
    os::fd::{AsRawFd, BorrowedFd},
};

use abi_stable::std_types::{RResult, RSlice, RSliceMut, RStr, RString};

/// The ABI line: `2` for app-sdk 0.2.x. Changes only with a breaking change,
/// and a host refuses an app of another line.
pub const ABI_LINE: u16 = 2;

/// How many releases of this line appended to a table: `0` for the first
/// 0.2 SDK. Informational (what decides loading is [`Feature`] bits).
///
/// The history (each revision appends; nothing before it moves):
/// - `0` (app-sdk 0.2.0): the first 0.2 tables.
/// - `1` (app-sdk 0.2.1): [`RawRequest::tls`], a pointer to the
///   connection's TLS facts ([`RawTls`]), null on a plain connection. No
///   [`Feature`] bit: an app asking an older host sees `None`, as on a
///   plain connection, so no app needs to require it.
/// - `2` (app-sdk 0.2.2): WebSocket and raw upgrades:
///   [`HostFns::websocket_accept`], [`HostFns::websocket_send`] and
///   [`HostFns::upgrade`]; [`AppRoot::on_websocket`], called with a
///   [`RawWsEvent`]; the features [`FEATURE_WEBSOCKET`] and
///   [`FEATURE_UPGRADE`], which an app exported with `#[websocket]` or
///   `#[upgrade]` requires.
pub const ABI_REVISION: u16 = 2;

/// The first bytes of every exported [`AppRoot`] after its `size`, line and
/// revision: tells an app-sdk export from any other symbol.
pub const ABI_MAGIC: [u8; 8] = *b"hostapp\0";

/// The app-sdk version this crate is, as the host and the app report it.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A capability a release of this line appended, which an app may require.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Feature {
    /// Its bit in [`HostFns::provides`] and [`AppRoot::requires`].
    pub bit: u64,
    /// What it is, for people: "WebSocket events (app-sdk 0.2.3)".
    pub name: RStr<'static>,
}

/// [`Feature`] bit: WebSocket connections run by the host, whose events it
/// hands to [`AppRoot::on_websocket`] (revision 2).
pub const FEATURE_WEBSOCKET: u64 = 1;
/// [`Feature`] bit: raw protocol upgrades ([`HostFns::upgrade`]; revision 2).
pub const FEATURE_UPGRADE: u64 = 2;

/// Every feature this SDK knows, in release order. The first 0.2 SDK has
/// none: everything it offers is in the tables' first, frozen part.
pub const FEATURES: &[Feature] = &[
    Feature {
        bit: FEATURE_WEBSOCKET,
        name: RStr::from_str("WebSocket (app-sdk 0.2.2)"),
    },
    Feature {
        bit: FEATURE_UPGRADE,
        name: RStr::from_str("raw protocol upgrades (app-sdk 0.2.2)"),
    },
];

/// The OR of every bit in [`FEATURES`]: what a host built with this SDK provides.
pub const PROVIDES: u64 = {
    let mut bits = 0;
    let mut i = 0;
    while i < FEATURES.len() {
        bits |= FEATURES[i].bit;
        i += 1;
    }
    bits
};

/// Reads a peer's size-prefixed table: the bytes it has (up to our size),
/// the rest zero-filled, so a field the peer's older version lacks reads as
/// zero (`None`). `None` when the peer's table is shorter than `min` bytes
/// (the part every version of the line has).
///
/// # Safety
/// `p` points at a live, initialised table whose first field is a `u32`
/// holding its size, readable for that many bytes; every field of `T` past
/// `min` bytes is valid when all its bytes are zero, and `min` covers at
/// least the `size` field.
pub unsafe fn read_table<T: Copy>(p: *const T, min: usize) -> Option<T> {
    // SAFETY: the contract says the table starts with its u32 size.
    let size = unsafe { p.cast::<u32>().read_unaligned() } as usize;
    if size < min {
        return None;
    }
    let n = size.min(size_of::<T>());
    let mut out = MaybeUninit::<T>::zeroed();
    // SAFETY: the peer's table is readable for `size >= n` bytes, `out` is
    // writable for `size_of::<T>() >= n`, and they do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(p.cast::<u8>(), out.as_mut_ptr().cast::<u8>(), n) };
    // SAFETY: the first `n >= min` bytes are a valid prefix of `T` (the
    // peer's table of the same line), the rest are zero, valid per contract.
    Some(unsafe { out.assume_init() })
}

/// The size of a table as its maker states it in its first field.
///
/// # Safety
/// `p` points at a live table whose first field is its `u32` size.
#[inline]
pub unsafe fn table_size<T>(p: *const T) -> usize {
    // SAFETY: per the contract.
    unsafe { p.cast::<u32>().read_unaligned() as usize }
}

/// `size_of::<T>()` as the `u32` a table's `size` field holds.
pub const fn size_u32<T>() -> u32 {
    size_of::<T>() as u32
}

/// A byte range inside [`RawRequest::head`]: `start .. start + len`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// Offset of the first byte.
    pub start: u32,
    /// Number of bytes.
    pub len: u32,
}

impl Span {
    /// The span of `part`, which must be a sub-slice of `whole`.
    ///
    /// # Panics
    /// If `part` does not lie inside `whole` (a bug in the caller).
    pub fn of(whole: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize)
            .checked_sub(whole.as_ptr() as usize)
            .expect("span part lies before the buffer");
        assert!(
            start + part.len() <= whole.len(),
            "span part lies past the buffer"
        );
        Span {
            start: start as u32,
            len: part.len() as u32,
        }
    }

    /// The bytes this span covers in `buf`, or an empty slice if it lies outside.
    #[inline]
    pub fn get(self, buf: &[u8]) -> &[u8] {
        let start = self.start as usize;
        buf.get(start..start + self.len as usize).unwrap_or(&[])
    }
}

/// One request header: where its name and its value lie in the head.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderSpan {
    /// The field name, as received (original case).
    pub name: Span,
    /// The field value, without surrounding whitespace.
    pub value: Span,
}

/// A request as the host hands it to the app: valid for one call of `handle`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawRequest<'a> {
    /// `size_of::<RawRequest>()` as the host was built.
    pub size: u32,
    /// The minor HTTP version: `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub version_minor: u8,
    /// Reserved, zero.
    pub _reserved: [u8; 3],
    /// The raw bytes of the request head; every [`Span`] points into them.
    pub head: RSlice<'a, u8>,
    /// The method token.
    pub method: Span,
    /// The request-target exactly as received.
    pub target: Span,
    /// The path part of the target (before `?`).
    pub path: Span,
    /// The query part of the target (after `?`, without it); empty when absent.
    pub query: Span,
    /// The header fields in the order received.
    pub headers: RSlice<'a, HeaderSpan>,
    /// The body length when known (Content-Length), `-1` when chunked, `0` when none.
    pub content_length: i64,
    /// The client's address: `ip:port`, `[ipv6]:port`, or a bare IP when
    /// a trusted proxy named the client; empty for Unix sockets.
    pub remote_addr: RStr<'a>,
    /// The address the connection arrived on (`ip:port` or `unix:/path`).
    pub local_addr: RStr<'a>,
    /// `http` or `https`.
    pub scheme: RStr<'a>,
    /// The request id (from the request's id header, or made up by the host); may be empty.
    pub request_id: RStr<'a>,
    // ---- revision 1 (app-sdk 0.2.1) ----
    /// The TLS facts of the connection the request arrived on: null on a
    /// plain connection (and from a host older than revision 1, whose
    /// shorter table reads as zero). When not null, it points at a
    /// [`RawTls`] live for the call, at least [`RAW_TLS_MIN`] bytes long;
    /// read it with [`read_table`] (a newer reader's `RawTls` may be longer).
    pub tls: *const RawTls<'a>,
}

/// The size of the part of [`RawRequest`] every 0.2 host sends (revision 0's
/// whole table).
pub const RAW_REQUEST_MIN: usize = std::mem::offset_of!(RawRequest<'static>, tls);

/// What a request learns of its connection's TLS session (revision 1):
/// pointed at by [`RawRequest::tls`], valid for one call of `handle`.
///
/// A table of its own, rather than fields appended to [`RawRequest`], for
/// three reasons: a plain request pays one null pointer instead of five
/// strings; "no TLS" needs no flag of its own (the null pointer says it);
/// and the TLS facts can grow (a certificate chain, a resumption flag)
/// without growing every request.
///
/// Every field is text the host checked is UTF-8; an empty one means "not
/// sent" (no SNI name, no ALPN protocol, no client certificate).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawTls<'a> {
    /// `size_of::<RawTls>()` as the host was built.
    pub size: u32,
    /// Reserved, zero.
    pub _reserved: u32,
    /// The protocol version: `TLSv1.2` or `TLSv1.3`.
    pub version: RStr<'a>,
    /// The cipher suite's IANA name, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: RStr<'a>,
    /// The server name the client asked for (SNI); empty when none.
    pub sni: RStr<'a>,
    /// The application protocol agreed by ALPN (`http/1.1`); empty when none.
    pub alpn: RStr<'a>,
    /// The client certificate's subject (RFC 4514 form); empty when the
    /// client sent no certificate.
    pub client_subject: RStr<'a>,
}

/// The size of the part of [`RawTls`] every host that sends one sends.
pub const RAW_TLS_MIN: usize = size_of::<RawTls<'static>>();

/// The opaque host-side state for one request, passed back to [`HostFns`]
/// calls; the lifetime keeps it inside the call it was made for.
///
/// Only the host makes one, and only the host looks behind it.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct HostCtx<'a> {
    ptr: *mut c_void,
    _call: PhantomData<&'a mut c_void>,
}

impl<'a> HostCtx<'a> {
    /// Wraps the host's pointer to its state for one request.
    ///
    /// # Safety
    /// For all of `'a`, calling the host's [`HostFns`] functions with this
    /// context, from the thread that made it and one call at a time, is sound.
    #[inline]
    pub unsafe fn new(ptr: *mut c_void) -> HostCtx<'a> {
        HostCtx {
            ptr,
            _call: PhantomData,
        }
    }

    /// The host's pointer.
    #[inline]
    pub fn as_ptr(self) -> *mut c_void {
        self.ptr
    }
}

/// The result of a host I/O call: a count on success, a message on failure.
pub type IoResult = RResult<usize, RString>;

/// The most verbose log level the host writes: `0` off, `1` error, `2`
/// warn, `3` info, `4` debug, `5` trace (the `log` crate's numbering).
pub type LogLevel = u32;

/// One log line an app sends to the host (see [`HostFns::log`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LogRecord<'a> {
    /// `size_of::<LogRecord>()` as the app was built.
    pub size: u32,
    /// Its level, numbered as [`LogLevel`] (1 error … 5 trace).
    pub level: LogLevel,
    /// The module path or target the record names.
    pub target: RStr<'a>,
    /// The message, formatted.
    pub message: RStr<'a>,
    /// The id of the request being handled on this thread; empty outside one.
    pub request_id: RStr<'a>,
}

/// The size of the part of [`LogRecord`] every 0.2 app sends.
pub const LOG_RECORD_MIN: usize = size_of::<LogRecord<'static>>();

/// The host's functions and facts, given to the app once, at `init`, and
/// valid for the life of the process.
///
/// Response calls follow one order: `set_status` and `add_header` any
/// number of times, then at most one of `send_body`, `send_file`, or a
/// sequence of `write_chunk`. The first body call commits the status line
/// and headers. (The host checks the order and refuses calls out of it
/// with an error.)
///
/// # Safety
/// Every function taking a [`HostCtx`] dereferences it, so each is `unsafe`
/// to call: a caller must pass the context of the `handle` call that is
/// running, on the thread running it. Calls must not overlap (none of them
/// calls back into the app, so sequential calls never do). [`HostIo`]'s
/// safe methods uphold this.
///
/// ```compile_fail,E0133
/// use app_sdk::abi::{HostCtx, HostFns};
///
/// // Calling a host function is unsafe: the context could be anything.
/// fn forge(table: &HostFns, ctx: HostCtx<'_>) {
///     let _ = (table.set_status)(ctx, 200);
/// }
/// ```
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HostFns {
    /// `size_of::<HostFns>()` as the host was built.
    pub size: u32,
    /// The host's [`ABI_LINE`].
    pub abi_line: u16,
    /// The host's [`ABI_REVISION`].
    pub abi_revision: u16,
    /// The [`Feature`] bits the host provides.
    pub provides: u64,
    /// The host's app-sdk version, e.g. `0.2.0`.
    pub sdk_version: RStr<'static>,
    /// The most verbose level the host writes ([`LogLevel`]).
    pub max_log_level: LogLevel,
    /// Reserved, zero.
    pub _reserved: u32,
    /// Reads decoded request body bytes into the buffer; `Ok(0)` means the body ended.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostFns`]).
    pub read_body: unsafe extern "C" fn(HostCtx<'_>, RSliceMut<'_, u8>) -> IoResult,
    /// Sets the status code (200..=999) of the response not yet committed;
    /// refused (an error) outside that range or once the head is sent.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostFns`]).
    pub set_status: unsafe extern "C" fn(HostCtx<'_>, u16) -> IoResult,
    /// Adds a response header; refused (an error, which the host also logs)
    /// when the name or value is invalid, the header is the host's to set,
    /// or the head is committed.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostFns`]).
    pub add_header: unsafe extern "C" fn(HostCtx<'_>, RSlice<'_, u8>, RSlice<'_, u8>) -> IoResult,
    /// Sends the whole body (framed with Content-Length) and ends the response.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostFns`]).
    pub send_body: unsafe extern "C" fn(HostCtx<'_>, RSlice<'_, u8>) -> IoResult,
    /// Sends one part of a streamed body; an empty part is ignored.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostFns`]).
    pub write_chunk: unsafe extern "C" fn(HostCtx<'_>, RSlice<'_, u8>) -> IoResult,
    /// Sends `len` bytes of the open file `fd` from `offset` as the whole body.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostFns`]); besides, `fd`
    /// is a descriptor the caller owns or borrows, open for the whole call.
    pub send_file: unsafe extern "C" fn(HostCtx<'_>, i32, u64, u64) -> IoResult,
    /// Writes one record to the host's error log, from any thread, at any
    /// time after `init` (the host adds the time, worker and level filter).
    ///
    /// # Safety
    /// The pointer is a live [`LogRecord`] for the call.
    pub log: unsafe extern "C" fn(*const LogRecord<'_>),
    // ---- revision 2 (app-sdk 0.2.2) ----
    /// Accepts the request's WebSocket handshake, with the subprotocol
    /// (empty: none) the host names in its answer. Returns the new
    /// connection's id; once `handle` returns the host answers `101`, and
    /// the connection's events go to [`AppRoot::on_websocket`]. Headers
    /// added before or after (a cookie) go into the `101`; a status or a
    /// body is refused. Refused when the request is not a valid WebSocket
    /// handshake, the response has begun, or the app has no
    /// `on_websocket`. `None` from a host older than revision 2.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostFns`]).
    pub websocket_accept: Option<unsafe extern "C" fn(HostCtx<'_>, RSlice<'_, u8>) -> IoResult>,
    /// Queues a message of kind [`WS_TEXT`], [`WS_BINARY`] or [`WS_CLOSE`]
    /// (the data is then the close code, two bytes big-endian, and the
    /// reason) for each WebSocket connection of this worker whose id is
    /// given; the host sends them when the call returns. Callable in
    /// `handle` and in `on_websocket`. Returns how many ids were queued
    /// for; an id of a closed connection is skipped without error. Refused
    /// for text that is not UTF-8, a kind it does not know, or past
    /// the host's limit of bytes queued in one call. `None` from a host
    /// older than revision 2.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostFns`]); `ctx` may
    /// also be the context of an `on_websocket` call.
    pub websocket_send:
        Option<unsafe extern "C" fn(HostCtx<'_>, RSlice<'_, u64>, u32, RSlice<'_, u8>) -> IoResult>,
    /// Answers `101 Switching Protocols` with `Upgrade:` the protocol given
    /// (and the headers added before), and makes the connection a raw
    /// byte stream for the rest of the call: `read_body` then reads what
    /// the client sends (`Ok(0)` once it closes its side), `write_chunk`
    /// writes bytes as they are, at once. The connection closes when
    /// `handle` returns. Refused when the request asked for no upgrade to
    /// that protocol (or it is `websocket`, which the host runs itself),
    /// the response has begun, the app set a `Content-Length`, or part of
    /// the request body is unread (see [`crate::upgrade`]). `None` from a
    /// host older than revision 2.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostFns`]).
    pub upgrade: Option<unsafe extern "C" fn(HostCtx<'_>, RSlice<'_, u8>) -> IoResult>,
}

/// The size of the part of [`HostFns`] every 0.2 host gives.
pub const HOST_FNS_MIN: usize = std::mem::offset_of!(HostFns, websocket_accept);

/// The host side of one request: the context and the functions that act on it.
///
/// Only the SDK makes one (with the `unsafe` [`HostIo::new`]); its methods
/// are the safe way to call the host, because the lifetime `'a` keeps it
/// inside the `handle` call it was given to and it is neither `Send` nor
/// `Sync`.
#[derive(Clone, Copy)]
pub struct HostIo<'a> {
    ctx: HostCtx<'a>,
    fns: &'a HostFns,
}

impl<'a> HostIo<'a> {
    /// Pairs a context with the table whose functions act on it.
    ///
    /// # Safety
    /// `ctx` came with `fns`' host for the `handle` call running on this
    /// thread (see [`HostFns`]'s contract), and lives no longer than it.
    #[inline]
    pub unsafe fn new(ctx: HostCtx<'a>, fns: &'a HostFns) -> HostIo<'a> {
        HostIo { ctx, fns }
    }

    /// Reads decoded request body bytes into `buf`; `Ok(0)` means the body ended.
    #[inline]
    pub fn read_body(&self, buf: &mut [u8]) -> IoResult {
        // SAFETY: `new`'s contract: `ctx` is valid for this table during 'a,
        // on this thread (HostIo is neither Send nor Sync).
        unsafe { (self.fns.read_body)(self.ctx, RSliceMut::from_mut_slice(buf)) }
    }

    /// Sets the status code of the response not yet committed.
    #[inline]
    pub fn set_status(&self, code: u16) -> IoResult {
        // SAFETY: as in `read_body`.
        unsafe { (self.fns.set_status)(self.ctx, code) }
    }

    /// Adds a response header.
    #[inline]
    pub fn add_header(&self, name: &[u8], value: &[u8]) -> IoResult {
        // SAFETY: as in `read_body`.
        unsafe {
            (self.fns.add_header)(
                self.ctx,
                RSlice::from_slice(name),
                RSlice::from_slice(value),
            )
        }
    }

    /// Sends `body` as the whole body and ends the response.
    #[inline]
    pub fn send_body(&self, body: &[u8]) -> IoResult {
        // SAFETY: as in `read_body`.
        unsafe { (self.fns.send_body)(self.ctx, RSlice::from_slice(body)) }
    }

    /// Sends one part of a streamed body.
    #[inline]
    pub fn write_chunk(&self, data: &[u8]) -> IoResult {
        // SAFETY: as in `read_body`.
        unsafe { (self.fns.write_chunk)(self.ctx, RSlice::from_slice(data)) }
    }

    /// Sends `len` bytes of the file `fd` from `offset` as the whole body.
    #[inline]
    pub fn send_file(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> IoResult {
        // SAFETY: as in `read_body`; `fd` is borrowed, so open for the call.
        unsafe { (self.fns.send_file)(self.ctx, fd.as_raw_fd(), offset, len) }
    }

    /// Accepts the request's WebSocket handshake with `protocol` (empty:
    /// none): the new connection's id. `None` from a host without it.
    #[inline]
    pub fn websocket_accept(&self, protocol: &[u8]) -> Option<IoResult> {
        let f = self.fns.websocket_accept?;
        // SAFETY: as in `read_body`.
        Some(unsafe { f(self.ctx, RSlice::from_slice(protocol)) })
    }

    /// Queues a message for WebSocket connections `ids` (see
    /// [`HostFns::websocket_send`]). `None` from a host without it.
    #[inline]
    pub fn websocket_send(&self, ids: &[u64], kind: u32, data: &[u8]) -> Option<IoResult> {
        // SAFETY: as in `read_body`.
        unsafe { websocket_send(self.fns, self.ctx, ids, kind, data) }
    }

    /// Answers `101` with `Upgrade: protocol` and makes the connection a
    /// raw stream (see [`HostFns::upgrade`]). `None` from a host without it.
    #[inline]
    pub fn upgrade(&self, protocol: &[u8]) -> Option<IoResult> {
        let f = self.fns.upgrade?;
        // SAFETY: as in `read_body`.
        Some(unsafe { f(self.ctx, RSlice::from_slice(protocol)) })
    }
}

/// The host side of one WebSocket event: the context of an
/// [`AppRoot::on_websocket`] call, on which only
/// [`HostFns::websocket_send`] may be called.
///
/// Only the SDK makes one; like [`HostIo`] it is neither `Send` nor `Sync`
/// and lives no longer than the call.
#[derive(Clone, Copy)]
pub struct EventIo<'a> {
    ctx: HostCtx<'a>,
    fns: &'a HostFns,
}

impl<'a> EventIo<'a> {
    /// Pairs the context of an `on_websocket` call with its host's table.
    ///
    /// # Safety
    /// `ctx` came with `fns`' host for the `on_websocket` call running on
    /// this thread, and lives no longer than it.
    #[inline]
    pub unsafe fn new(ctx: HostCtx<'a>, fns: &'a HostFns) -> EventIo<'a> {
        EventIo { ctx, fns }
    }

    /// Queues a message for WebSocket connections `ids` (see
    /// [`HostFns::websocket_send`]). `None` from a host without it.
    #[inline]
    pub fn websocket_send(&self, ids: &[u64], kind: u32, data: &[u8]) -> Option<IoResult> {
        // SAFETY: `new`'s contract: `ctx` is the host's for the event call
        // running on this thread, which `websocket_send` accepts.
        unsafe { websocket_send(self.fns, self.ctx, ids, kind, data) }
    }
}

/// Calls the host's `websocket_send` through `fns` with `ctx`: `None`
/// from a host without it.
///
/// # Safety
/// `ctx` is the context of the call running on this thread, made by
/// `fns`' host (a `handle` call's or an `on_websocket` call's).
#[inline]
unsafe fn websocket_send(
    fns: &HostFns,
    ctx: HostCtx<'_>,
    ids: &[u64],
    kind: u32,
    data: &[u8],
) -> Option<IoResult> {
    let f = fns.websocket_send?;
    let (ids, data) = (RSlice::from_slice(ids), RSlice::from_slice(data));
    // SAFETY: per the contract.
    Some(unsafe { f(ctx, ids, kind, data) })
}

/// An app instance created by `init`, owned by the host until it hands it to `exit`.
///
/// Neither `Copy` nor `Clone`, and only the SDK makes one: `exit` takes it by
/// value, so an instance is freed at most once and never used afterwards.
///
/// ```compile_fail,E0382
/// use app_sdk::abi::{AppHandle, AppRoot};
///
/// fn exit_twice(root: &AppRoot, app: AppHandle) {
///     // SAFETY: (none could make this sound: the instance is freed twice)
///     unsafe {
///         (root.exit)(app);
///         (root.exit)(app); // the instance was moved into the first call
///     }
/// }
/// ```
///
/// ```compile_fail,E0599
/// use app_sdk::abi::AppHandle;
///
/// fn two_owners(app: AppHandle) -> (AppHandle, AppHandle) {
///     (app.clone(), app)
/// }
/// ```
#[repr(transparent)]
#[must_use = "an app instance is leaked unless it is handed to `exit`"]
pub struct AppHandle(*mut c_void);

impl AppHandle {
    /// An empty handle, for `init` to fill.
    pub const fn null() -> AppHandle {
        AppHandle(std::ptr::null_mut())
    }

    /// Wraps the pointer the SDK's `init` made.
    pub(crate) fn from_raw(app: *mut c_void) -> AppHandle {
        AppHandle(app)
    }

    /// The pointer the SDK's `init` made.
    pub(crate) fn as_ptr(&self) -> *mut c_void {
        self.0
    }
}

/// [`WorkerInfo::flags`] bit: this is the host's probe, which starts the
/// app once to check it boots, serves nothing, and exits.
pub const WORKER_PROBE: u32 = 1;

/// What the host tells an app when a worker starts it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WorkerInfo<'a> {
    /// `size_of::<WorkerInfo>()` as the host was built.
    pub size: u32,
    /// The worker's number (1-based; a replacement gets a new number; `0`
    /// in the probe).
    pub worker_id: u32,
    /// The worker's process id.
    pub pid: u32,
    /// How many threads call `handle` at once (`--threads`).
    pub threads: u32,
    /// The pool generation the worker belongs to (each reload starts one).
    pub generation: u32,
    /// [`WORKER_PROBE`] and later bits.
    pub flags: u32,
    /// The name the app was exported under (the part after `:`).
    pub app_name: RStr<'a>,
}

/// The size of the part of [`WorkerInfo`] every 0.2 host gives.
pub const WORKER_INFO_MIN: usize = size_of::<WorkerInfo<'static>>();

/// [`CallOutcome::kind`]: the call returned normally.
pub const OUTCOME_DONE: u32 = 0;
/// [`CallOutcome::kind`]: the call panicked; the message says where and why.
pub const OUTCOME_PANICKED: u32 = 1;
/// [`CallOutcome::kind`]: the app returned an error; the message is its text.
/// (A host reads any kind it does not know as this one.)
pub const OUTCOME_FAILED: u32 = 2;

/// How a call into the app ended.
#[repr(C)]
pub struct CallOutcome {
    /// [`OUTCOME_DONE`], [`OUTCOME_PANICKED`] or [`OUTCOME_FAILED`].
    pub kind: u32,
    /// Empty when done; else what went wrong (made by the app, freed by
    /// whoever drops it: `RString` carries its own deallocator).
    pub message: RString,
}

impl CallOutcome {
    /// A call that returned normally.
    pub const fn done() -> CallOutcome {
        CallOutcome {
            kind: OUTCOME_DONE,
            message: RString::new(),
        }
    }

    /// A call that failed in the way `kind` says.
    pub fn failed(kind: u32, message: impl Into<RString>) -> CallOutcome {
        CallOutcome {
            kind,
            message: message.into(),
        }
    }
}

/// [`AppRoot::flags`] bit: the app was built with `panic = "abort"`, so a
/// panic kills the worker instead of being answered with a 500.
pub const ROOT_PANIC_ABORT: u64 = 1;

/// What an app library exports under the name the author chose: the root
/// the host finds with `dlsym` and reads with [`read_table`].
///
/// `init`, `handle` and `exit` are `unsafe` to call: they trust the
/// pointers and the instance they are given. The host wraps them in safe
/// calls on the instance it owns.
///
/// ```compile_fail,E0133
/// use app_sdk::abi::{AppHandle, AppRoot};
///
/// fn stop(root: &AppRoot, app: AppHandle) {
///     let _ = (root.exit)(app);
/// }
/// ```
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AppRoot {
    /// `size_of::<AppRoot>()` as the app was built.
    pub size: u32,
    /// The app's [`ABI_LINE`].
    pub abi_line: u16,
    /// The app's [`ABI_REVISION`].
    pub abi_revision: u16,
    /// [`ABI_MAGIC`].
    pub magic: [u8; 8],
    /// The [`Feature`] bits the app cannot run without.
    pub requires: u64,
    /// [`ROOT_PANIC_ABORT`] and later bits.
    pub flags: u64,
    /// The app's app-sdk version, e.g. `0.2.0`.
    pub sdk_version: RStr<'static>,
    /// Every feature the app's SDK knows, so a host can name one it lacks.
    pub features: RSlice<'static, Feature>,
    /// Creates the app for one worker, writing it to the last argument; an
    /// outcome other than done stops the worker's boot.
    ///
    /// # Safety
    /// The pointers are live for the call: the host's table (which stays
    /// valid for the life of the process) and the worker's facts; the
    /// handle is writable.
    pub init:
        unsafe extern "C" fn(*const HostFns, *const WorkerInfo<'_>, *mut AppHandle) -> CallOutcome,
    /// Handles one request.
    ///
    /// # Safety
    /// The [`AppHandle`] was made by this root's `init` (not another
    /// root's); the request is live for the call, and `ctx` is the host's for
    /// it (see [`HostFns`]). With `--threads`, calls on one instance may
    /// overlap.
    pub handle: unsafe extern "C" fn(&AppHandle, *const RawRequest<'_>, HostCtx<'_>) -> CallOutcome,
    /// Runs the app's exit hook and drops the instance.
    ///
    /// # Safety
    /// The [`AppHandle`] was made by this root's `init`, and no `handle`
    /// call on it is running (taking it by value ensures it is freed once).
    pub exit: unsafe extern "C" fn(AppHandle) -> CallOutcome,
    // ---- revision 2 (app-sdk 0.2.2) ----
    /// Handles one event of a WebSocket connection the app accepted
    /// ([`HostFns::websocket_accept`]): its opening, a message, its close.
    /// `None` in an app older than revision 2 (the host then refuses to
    /// accept a handshake for it).
    ///
    /// # Safety
    /// As for `handle`: the [`AppHandle`] was made by this root's `init`,
    /// the event is live for the call, and `ctx` is the host's for it
    /// (only [`HostFns::websocket_send`] takes it).
    pub on_websocket:
        Option<unsafe extern "C" fn(&AppHandle, *const RawWsEvent<'_>, HostCtx<'_>) -> CallOutcome>,
}

/// The size of the part of [`AppRoot`] every 0.2 app exports.
pub const APP_ROOT_MIN: usize = std::mem::offset_of!(AppRoot, on_websocket);

/// [`RawWsEvent::kind`]: the `101` is sent; the connection is open.
pub const WS_OPEN: u32 = 1;
/// [`RawWsEvent::kind`] and a [`HostFns::websocket_send`] kind: a text
/// message (UTF-8, which the host checked).
pub const WS_TEXT: u32 = 2;
/// [`RawWsEvent::kind`] and a [`HostFns::websocket_send`] kind: a binary message.
pub const WS_BINARY: u32 = 3;
/// [`RawWsEvent::kind`]: the connection closed (the last event of a
/// connection); a [`HostFns::websocket_send`] kind: close it.
pub const WS_CLOSE: u32 = 4;

/// One event of a WebSocket connection, as the host hands it to
/// [`AppRoot::on_websocket`]: valid for one call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawWsEvent<'a> {
    /// `size_of::<RawWsEvent>()` as the host was built.
    pub size: u32,
    /// [`WS_OPEN`], [`WS_TEXT`], [`WS_BINARY`] or [`WS_CLOSE`] (a host
    /// never sends a kind newer than the app's revision).
    pub kind: u32,
    /// The connection's id, as [`HostFns::websocket_accept`] returned it.
    pub conn: u64,
    /// The message ([`WS_TEXT`]: UTF-8), or the close reason ([`WS_CLOSE`]).
    pub data: RSlice<'a, u8>,
    /// The close code ([`WS_CLOSE`]): the peer's, `1005` when its close
    /// frame had none, `1006` when the connection ended without one; `0`
    /// for other kinds.
    pub code: u16,
    /// Reserved, zero.
    pub _reserved: [u8; 6],
}

/// The size of the part of [`RawWsEvent`] every host that sends one sends.
pub const RAW_WS_EVENT_MIN: usize = size_of::<RawWsEvent<'static>>();

/// The bytes a loader reads to tell an export of this ABI (or another line
/// of it) from anything else: `size`, line, revision and magic.
pub const APP_ROOT_HEAD: usize = std::mem::offset_of!(AppRoot, requires);

// SAFETY: an `AppRoot` is immutable data (integers, `'static` text and
// slices, function pointers), so sharing it between threads is sound; the
// raw pointers inside `RStr`/`RSlice` point at `'static` data.
unsafe impl Sync for AppRoot {}

/// How an app-sdk 0.1 export begins: abi_stable's library header magic.
const SDK_01_MAGIC: [u8; 32] = abi_stable::library::AbiHeader::VALUE.magic_string;

/// Why a symbol cannot be served as an app by a host built with this SDK
/// (what [`read_root`] found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootError {
    /// An app-sdk 0.1 export (an abi_stable library header), whose ABI could not grow.
    Sdk01,
    /// Not an app root at all: why.
    NotARoot(&'static str),
    /// A root of another ABI line (a breaking change apart).
    OtherLine(u16),
    /// A root that requires features this SDK does not provide.
    MissingFeatures {
        /// The app's app-sdk version.
        app_sdk: String,
        /// The missing features, as the app's SDK names them.
        missing: String,
    },
}

impl std::fmt::Display for RootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootError::Sdk01 => write!(
                f,
                "built against app-sdk 0.1, which app-sdk {SDK_VERSION} no longer loads; rebuild it"
            ),
            RootError::NotARoot(why) => write!(f, "not an app exported with app-sdk ({why})"),
            RootError::OtherLine(line) => write!(
                f,
                "built against app-sdk 0.{line}.x (ABI line {line}); app-sdk {SDK_VERSION} serves 0.{ABI_LINE}.x"
            ),
            RootError::MissingFeatures { app_sdk, missing } => write!(
                f,
                "built against app-sdk {app_sdk} and needs {missing}, which app-sdk {SDK_VERSION} lacks"
            ),
        }
    }
}

impl std::error::Error for RootError {}

/// Reads and checks the app root at `address`, as a host built with this
/// SDK serves it: an app-sdk export of this ABI line (not 0.1, not another
/// line), no longer than the symbol, requiring nothing this SDK lacks. The
/// root is cut or zero-filled to this SDK's size of it.
///
/// # Safety
/// `address` points at a live data object of a loaded library, readable for
/// `symbol_size` bytes (at least [`APP_ROOT_HEAD`] when `None`).
pub unsafe fn read_root(
    address: *const c_void,
    symbol_size: Option<usize>,
) -> Result<AppRoot, RootError> {
    if symbol_size.is_some_and(|n| n < APP_ROOT_HEAD) {
        return Err(RootError::NotARoot("it is too small to be an app root"));
    }
    // SAFETY: readable for APP_ROOT_HEAD bytes (the contract).
    let head = unsafe { std::slice::from_raw_parts(address.cast::<u8>(), APP_ROOT_HEAD) };
    // The first bytes of abi_stable's magic are enough to tell a 0.1 export.
    if head == &SDK_01_MAGIC[..APP_ROOT_HEAD] {
        return Err(RootError::Sdk01);
    }
    // SAFETY: readable for APP_ROOT_HEAD bytes, which hold these fields.
    let (size, line, magic) = unsafe {
        let p = address.cast::<u8>();
        (
            p.cast::<u32>().read_unaligned() as usize,
            p.add(4).cast::<u16>().read_unaligned(),
            p.add(8).cast::<[u8; 8]>().read_unaligned(),
        )
    };
    if magic != ABI_MAGIC {
        return Err(RootError::NotARoot("it does not start like an app root"));
    }
    if symbol_size.is_some_and(|n| size > n) {
        return Err(RootError::NotARoot(
            "its root claims to be larger than the symbol",
        ));
    }
    if line != ABI_LINE {
        // Another line's root may differ past its head: nothing more is read.
        return Err(RootError::OtherLine(line));
    }
    // SAFETY: a root of this line, `size` bytes long (checked against the
    // symbol when its size is known), whose fields past APP_ROOT_MIN are all
    // valid when zero.
    let root = unsafe { read_table(address.cast::<AppRoot>(), APP_ROOT_MIN) }.ok_or(
        RootError::NotARoot("its root is shorter than app-sdk 0.2's"),
    )?;
    let missing = root.requires & !PROVIDES;
    if missing != 0 {
        return Err(RootError::MissingFeatures {
            app_sdk: root.sdk_version.as_str().to_owned(),
            missing: feature_names(&root, missing),
        });
    }
    Ok(root)
}

/// The names of the feature bits in `missing`, as the app's SDK names them.
fn feature_names(root: &AppRoot, missing: u64) -> String {
    let features = root.features.as_slice();
    let mut names: Vec<String> = features
        .iter()
        .filter(|f| f.bit & missing != 0)
        .map(|f| f.name.as_str().to_owned())
        .collect();
    let named = features.iter().fold(0, |bits, f| bits | f.bit);
    let unnamed = missing & !named;
    if unnamed != 0 {
        names.push(format!("features {unnamed:#x} its SDK does not name"));
    }
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use std::mem::{align_of, offset_of};

    use super::*;

    /// Pins the layout of the first 0.2 ABI (x86_64 and aarch64 Linux).
    /// A release may append fields (and a test line for each), never move one:
    /// if this fails, the change breaks every deployed app.
    #[test]
    fn the_frozen_layout_of_the_0_2_tables() {
        assert_eq!((size_of::<Span>(), align_of::<Span>()), (8, 4));
        assert_eq!(size_of::<HeaderSpan>(), 16);
        assert_eq!(size_of::<RStr<'_>>(), 16);
        assert_eq!(size_of::<RString>(), 32);

        let r = [
            offset_of!(RawRequest<'_>, size),
            offset_of!(RawRequest<'_>, version_minor),
            offset_of!(RawRequest<'_>, head),
            offset_of!(RawRequest<'_>, method),
            offset_of!(RawRequest<'_>, target),
            offset_of!(RawRequest<'_>, path),
            offset_of!(RawRequest<'_>, query),
            offset_of!(RawRequest<'_>, headers),
            offset_of!(RawRequest<'_>, content_length),
            offset_of!(RawRequest<'_>, remote_addr),
            offset_of!(RawRequest<'_>, local_addr),
            offset_of!(RawRequest<'_>, scheme),
            offset_of!(RawRequest<'_>, request_id),
        ];
        assert_eq!(r, [0, 4, 8, 24, 32, 40, 48, 56, 72, 80, 96, 112, 128]);
        assert_eq!(RAW_REQUEST_MIN, 144);

        let h = [
            offset_of!(HostFns, size),
            offset_of!(HostFns, abi_line),
            offset_of!(HostFns, abi_revision),
            offset_of!(HostFns, provides),
            offset_of!(HostFns, sdk_version),
            offset_of!(HostFns, max_log_level),
            offset_of!(HostFns, read_body),
            offset_of!(HostFns, set_status),
            offset_of!(HostFns, add_header),
            offset_of!(HostFns, send_body),
            offset_of!(HostFns, write_chunk),
            offset_of!(HostFns, send_file),
            offset_of!(HostFns, log),
        ];
        assert_eq!(h, [0, 4, 6, 8, 16, 32, 40, 48, 56, 64, 72, 80, 88]);
        assert_eq!(HOST_FNS_MIN, 96);

        let w = [
            offset_of!(WorkerInfo<'_>, size),
            offset_of!(WorkerInfo<'_>, worker_id),
            offset_of!(WorkerInfo<'_>, pid),
            offset_of!(WorkerInfo<'_>, threads),
            offset_of!(WorkerInfo<'_>, generation),
            offset_of!(WorkerInfo<'_>, flags),
            offset_of!(WorkerInfo<'_>, app_name),
        ];
        assert_eq!(w, [0, 4, 8, 12, 16, 20, 24]);
        assert_eq!(WORKER_INFO_MIN, 40);

        let l = [
            offset_of!(LogRecord<'_>, size),
            offset_of!(LogRecord<'_>, level),
            offset_of!(LogRecord<'_>, target),
            offset_of!(LogRecord<'_>, message),
            offset_of!(LogRecord<'_>, request_id),
        ];
        assert_eq!(l, [0, 4, 8, 24, 40]);
        assert_eq!(LOG_RECORD_MIN, 56);

        let a = [
            offset_of!(AppRoot, size),
            offset_of!(AppRoot, abi_line),
            offset_of!(AppRoot, abi_revision),
            offset_of!(AppRoot, magic),
            offset_of!(AppRoot, requires),
            offset_of!(AppRoot, flags),
            offset_of!(AppRoot, sdk_version),
            offset_of!(AppRoot, features),
            offset_of!(AppRoot, init),
            offset_of!(AppRoot, handle),
            offset_of!(AppRoot, exit),
        ];
        assert_eq!(a, [0, 4, 6, 8, 16, 24, 32, 48, 64, 72, 80]);
        assert_eq!(APP_ROOT_MIN, 88);
        assert_eq!(APP_ROOT_HEAD, 16);

        assert_eq!(offset_of!(CallOutcome, message), 8);
        assert_eq!(size_of::<CallOutcome>(), 40);
        assert_eq!(size_of::<Feature>(), 24);
    }

    /// Pins what each later revision appended, where it appended it.
    #[test]
    fn what_later_revisions_appended() {
        // Revision 2: WebSocket and raw upgrades.
        let h2 = [
            offset_of!(HostFns, websocket_accept),
            offset_of!(HostFns, websocket_send),
            offset_of!(HostFns, upgrade),
        ];
        assert_eq!(h2, [96, 104, 112]);
        assert_eq!(size_of::<HostFns>(), 120);
        assert_eq!(offset_of!(AppRoot, on_websocket), 88);
        assert_eq!(size_of::<AppRoot>(), 96);
        let e = [
            offset_of!(RawWsEvent<'_>, size),
            offset_of!(RawWsEvent<'_>, kind),
            offset_of!(RawWsEvent<'_>, conn),
            offset_of!(RawWsEvent<'_>, data),
            offset_of!(RawWsEvent<'_>, code),
        ];
        assert_eq!(e, [0, 4, 8, 16, 32]);
        assert_eq!(RAW_WS_EVENT_MIN, 40);
        assert_eq!(PROVIDES, FEATURE_WEBSOCKET | FEATURE_UPGRADE);

        // Revision 1: the request's TLS facts, behind a pointer.
        assert_eq!(offset_of!(RawRequest<'_>, tls), RAW_REQUEST_MIN);
        assert_eq!(size_of::<RawRequest<'_>>(), 152);
        let t = [
            offset_of!(RawTls<'_>, size),
            offset_of!(RawTls<'_>, _reserved),
            offset_of!(RawTls<'_>, version),
            offset_of!(RawTls<'_>, cipher),
            offset_of!(RawTls<'_>, sni),
            offset_of!(RawTls<'_>, alpn),
            offset_of!(RawTls<'_>, client_subject),
        ];
        assert_eq!(t, [0, 4, 8, 24, 40, 56, 72]);
        assert_eq!(RAW_TLS_MIN, 88);
        assert_eq!(ABI_REVISION, 2);
    }

    /// What a newer peer's appended field looks like to this side, and
    /// what this side's appended field looks like to an older peer.
    #[test]
    fn a_shorter_table_reads_as_absent_and_a_longer_one_is_cut() {
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct V0 {
            size: u32,
            a: u32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct V1 {
            size: u32,
            a: u32,
            hook: Option<extern "C" fn() -> u32>,
        }
        extern "C" fn hook() -> u32 {
            7
        }
        let old = V0 { size: 8, a: 5 };
        // SAFETY: `old` starts with its size; V1's tail is an Option<fn>.
        let seen = unsafe { read_table(&old as *const V0 as *const V1, 8) }.unwrap();
        assert_eq!(seen.a, 5);
        assert!(seen.hook.is_none());

        let new = V1 {
            size: size_u32::<V1>(),
            a: 6,
            hook: Some(hook),
        };
        // SAFETY: `new` starts with its size and is larger than V0.
        let seen = unsafe { read_table(&new as *const V1 as *const V0, 8) }.unwrap();
        assert_eq!(seen.a, 6);

        let short = V0 { size: 4, a: 0 };
        // SAFETY: as above; the size is below the minimum, so nothing is read.
        assert!(unsafe { read_table(&short as *const V0, 8) }.is_none());
    }
}
