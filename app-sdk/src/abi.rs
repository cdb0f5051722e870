//! The types that cross the boundary between the host and an app library.
//!
//! Everything here is `#[repr(C)]` and derives [`StableAbi`], so `abi_stable`
//! compares the layout the host was built with against the layout the app was
//! built with when the library is loaded, and refuses a mismatch instead of
//! letting it corrupt memory. App authors never touch these types: they use
//! [`Request`](crate::Request), [`Response`](crate::Response) and
//! [`export_app!`](crate::export_app). The host uses them directly.
//!
//! The request crosses as a *borrowed view*: the raw bytes of the request head
//! plus [`Span`]s (offsets) into them, so the host hands over what it parsed
//! without copying or allocating. The response and the request body go through
//! [`HostIo`], a table of host functions with an opaque context pointer.

use std::ffi::c_void;

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{RResult, RSlice, RSliceMut, RStr, RString},
    StableAbi,
};

/// A byte range inside [`RawRequest::head`]: `start .. start + len`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, Default, PartialEq, Eq)]
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
#[derive(StableAbi, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderSpan {
    /// The field name, as received (original case).
    pub name: Span,
    /// The field value, without surrounding whitespace.
    pub value: Span,
}

/// A request as the host hands it to the app: valid for one call of `handle`.
#[repr(C)]
#[derive(StableAbi)]
pub struct RawRequest<'a> {
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
    /// The minor HTTP version: `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub version_minor: u8,
    /// The header fields in the order received.
    pub headers: RSlice<'a, HeaderSpan>,
    /// The body length when known (Content-Length), `-1` when chunked, `0` when none.
    pub content_length: i64,
    /// The peer address (`ip:port`), empty for Unix sockets.
    pub remote_addr: RStr<'a>,
    /// The address the connection arrived on (`ip:port` or `unix:/path`).
    pub local_addr: RStr<'a>,
    /// `http` or `https`.
    pub scheme: RStr<'a>,
    /// The request id (from the request's id header, or made up by the host); may be empty.
    pub request_id: RStr<'a>,
}

/// The opaque host-side state for one request, passed back to [`HostVTable`] calls.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostCtx(pub *mut c_void);

/// The result of a host I/O call: a count on success, a message on failure.
pub type IoResult = RResult<usize, RString>;

/// Functions the host offers an app during one request.
///
/// Response calls follow one order: `set_status` and `add_header` any number of
/// times, then at most one of `send_body`, `send_file`, or a sequence of
/// `write_chunk`. The first body call commits the status line and headers.
#[repr(C)]
#[derive(StableAbi)]
pub struct HostVTable {
    /// Reads decoded request body bytes into the buffer; `Ok(0)` means the body ended.
    pub read_body: extern "C" fn(HostCtx, RSliceMut<'_, u8>) -> IoResult,
    /// Sets the status code (100..=999) of the response not yet committed.
    pub set_status: extern "C" fn(HostCtx, u16) -> IoResult,
    /// Adds a response header; refused when the name or value is invalid or the head is committed.
    pub add_header: extern "C" fn(HostCtx, RSlice<'_, u8>, RSlice<'_, u8>) -> IoResult,
    /// Sends the whole body (framed with Content-Length) and ends the response.
    pub send_body: extern "C" fn(HostCtx, RSlice<'_, u8>) -> IoResult,
    /// Sends one part of a streamed body (chunked on HTTP/1.1); an empty part is ignored.
    pub write_chunk: extern "C" fn(HostCtx, RSlice<'_, u8>) -> IoResult,
    /// Sends `len` bytes of the open file `fd` from `offset` as the whole body.
    pub send_file: extern "C" fn(HostCtx, i32, u64, u64) -> IoResult,
}

/// The host side of one request: the context and the functions that act on it.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostIo<'a> {
    /// The host's state for this request.
    pub ctx: HostCtx,
    /// The host's functions.
    pub vtable: &'a HostVTable,
}

/// An app instance created by `init`, owned by the host until `exit`.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy)]
pub struct AppHandle(pub *mut c_void);

/// What the host tells an app when a worker starts it.
#[repr(C)]
#[derive(StableAbi)]
pub struct WorkerInfo<'a> {
    /// The worker's number in the pool (1-based).
    pub worker_id: u32,
    /// The worker's process id.
    pub pid: u32,
    /// The name the app was exported under (the part after `:`).
    pub app_name: RStr<'a>,
}

/// How a call to `handle` ended.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub enum HandleOutcome {
    /// The handler returned.
    Done,
    /// The handler panicked; the message says where and why.
    Panicked(RString),
}

/// The root module an app library exports under the name the author chose.
///
/// A prefix type: later SDK versions may append fields after the last one.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = AppModRef)))]
#[sabi(missing_field(panic))]
pub struct AppMod {
    /// Creates the app for one worker; an error stops the worker's boot.
    pub init: extern "C" fn(&WorkerInfo<'_>) -> RResult<AppHandle, RString>,
    /// Handles one request.
    pub handle: extern "C" fn(AppHandle, &RawRequest<'_>, HostIo<'_>) -> HandleOutcome,
    /// Runs the app's exit hook and drops it.
    #[sabi(last_prefix_field)]
    pub exit: extern "C" fn(AppHandle) -> HandleOutcome,
}

impl RootModule for AppModRef {
    declare_root_module_statics! {AppModRef}
    const BASE_NAME: &'static str = "app";
    const NAME: &'static str = "app";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The app-sdk version the host was built with, as `abi_stable` compares it.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
