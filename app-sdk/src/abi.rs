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
//!
//! Every function pointer whose callee trusts a pointer it is given (the
//! host's [`HostVTable`], the app's `handle` and `exit`) is an
//! `unsafe extern "C" fn` with a `# Safety` contract, and each side calls the
//! other only through safe wrappers that uphold it: [`HostIo`]'s methods in
//! the app, the host's own wrapper around [`AppModRef`]. An [`AppHandle`] has
//! one owner, so an app instance is freed once.

use std::{
    ffi::c_void,
    os::fd::{AsRawFd, BorrowedFd},
};

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
///
/// Only the host makes one, and only the host looks behind it.
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
/// (The host checks the order and refuses calls out of it with an error.)
///
/// # Safety
/// Every function dereferences its [`HostCtx`], so each is `unsafe` to call.
/// A caller must pass the context of a [`HostIo`] it received together with
/// this table, for the request whose `handle` call is running, on the thread
/// running it, and never after that call returned. Calls must not overlap
/// (none of them calls back into the app, so sequential calls never do).
/// [`HostIo`]'s safe methods uphold this; apps use them through
/// [`Request`](crate::Request) and [`Response`](crate::Response).
///
/// ```compile_fail,E0133
/// use app_sdk::abi::{HostCtx, HostVTable};
///
/// // Calling a host function is unsafe: the context could be anything.
/// fn forge(table: &HostVTable) {
///     let _ = (table.set_status)(HostCtx(std::ptr::null_mut()), 200);
/// }
/// ```
#[repr(C)]
#[derive(StableAbi)]
pub struct HostVTable {
    /// Reads decoded request body bytes into the buffer; `Ok(0)` means the body ended.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostVTable`]).
    pub read_body: unsafe extern "C" fn(HostCtx, RSliceMut<'_, u8>) -> IoResult,
    /// Sets the status code (100..=999) of the response not yet committed.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostVTable`]).
    pub set_status: unsafe extern "C" fn(HostCtx, u16) -> IoResult,
    /// Adds a response header; refused when the name or value is invalid or the head is committed.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostVTable`]).
    pub add_header: unsafe extern "C" fn(HostCtx, RSlice<'_, u8>, RSlice<'_, u8>) -> IoResult,
    /// Sends the whole body (framed with Content-Length) and ends the response.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostVTable`]).
    pub send_body: unsafe extern "C" fn(HostCtx, RSlice<'_, u8>) -> IoResult,
    /// Sends one part of a streamed body (chunked on HTTP/1.1); an empty part is ignored.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostVTable`]).
    pub write_chunk: unsafe extern "C" fn(HostCtx, RSlice<'_, u8>) -> IoResult,
    /// Sends `len` bytes of the open file `fd` from `offset` as the whole body.
    ///
    /// # Safety
    /// As for every function of the table (see [`HostVTable`]); besides, `fd`
    /// is a descriptor the caller owns or borrows, open for the whole call.
    pub send_file: unsafe extern "C" fn(HostCtx, i32, u64, u64) -> IoResult,
}

/// The host side of one request: the context and the functions that act on it.
///
/// Only the host makes one (with the `unsafe` [`HostIo::new`]); its methods are
/// the safe way to call the host, because the lifetime `'a` keeps it inside
/// the `handle` call it was given to and it is neither `Send` nor `Sync`.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostIo<'a> {
    /// The host's state for this request.
    ctx: HostCtx,
    /// The host's functions.
    vtable: &'a HostVTable,
}

impl<'a> HostIo<'a> {
    /// Pairs a context with the table whose functions act on it.
    ///
    /// # Safety
    /// For all of `'a`, calling any function of `vtable` with `ctx`, from the
    /// thread this value stays on and one call at a time, must be sound: in
    /// the host, `ctx` points at the state of the request in progress, which
    /// nothing else touches until `'a` ends.
    #[inline]
    pub unsafe fn new(ctx: HostCtx, vtable: &'a HostVTable) -> HostIo<'a> {
        HostIo { ctx, vtable }
    }

    /// Reads decoded request body bytes into `buf`; `Ok(0)` means the body ended.
    #[inline]
    pub fn read_body(&self, buf: &mut [u8]) -> IoResult {
        // SAFETY: `new`'s contract: `ctx` is valid for this table during 'a,
        // on this thread (HostIo is neither Send nor Sync).
        unsafe { (self.vtable.read_body)(self.ctx, RSliceMut::from_mut_slice(buf)) }
    }

    /// Sets the status code of the response not yet committed.
    #[inline]
    pub fn set_status(&self, code: u16) -> IoResult {
        // SAFETY: as in `read_body`.
        unsafe { (self.vtable.set_status)(self.ctx, code) }
    }

    /// Adds a response header.
    #[inline]
    pub fn add_header(&self, name: &[u8], value: &[u8]) -> IoResult {
        // SAFETY: as in `read_body`.
        unsafe {
            (self.vtable.add_header)(
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
        unsafe { (self.vtable.send_body)(self.ctx, RSlice::from_slice(body)) }
    }

    /// Sends one part of a streamed body.
    #[inline]
    pub fn write_chunk(&self, data: &[u8]) -> IoResult {
        // SAFETY: as in `read_body`.
        unsafe { (self.vtable.write_chunk)(self.ctx, RSlice::from_slice(data)) }
    }

    /// Sends `len` bytes of the file `fd` from `offset` as the whole body.
    #[inline]
    pub fn send_file(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> IoResult {
        // SAFETY: as in `read_body`; `fd` is borrowed, so open for the call.
        unsafe { (self.vtable.send_file)(self.ctx, fd.as_raw_fd(), offset, len) }
    }
}

/// An app instance created by `init`, owned by the host until it hands it to `exit`.
///
/// Neither `Copy` nor `Clone`, and only the SDK makes one: `exit` takes it by
/// value, so an instance is freed at most once and never used afterwards.
///
/// ```compile_fail,E0382
/// use app_sdk::abi::{AppHandle, AppModRef};
///
/// fn exit_twice(module: AppModRef, app: AppHandle) {
///     // SAFETY: (none could make this sound: the instance is freed twice)
///     unsafe {
///         (module.exit())(app);
///         (module.exit())(app); // the instance was moved into the first call
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
#[derive(StableAbi)]
#[must_use = "an app instance is leaked unless it is handed to `exit`"]
pub struct AppHandle(*mut c_void);

impl AppHandle {
    /// Wraps the pointer the SDK's `init` made.
    pub(crate) fn from_raw(app: *mut c_void) -> AppHandle {
        AppHandle(app)
    }

    /// The pointer the SDK's `init` made.
    pub(crate) fn as_ptr(&self) -> *mut c_void {
        self.0
    }
}

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
///
/// `handle` and `exit` are `unsafe` to call: they trust the instance they are
/// given. The host wraps them in safe calls on the instance it owns.
///
/// ```compile_fail,E0133
/// use app_sdk::abi::{AppHandle, AppModRef};
///
/// fn stop(module: AppModRef, app: AppHandle) {
///     let _ = (module.exit())(app);
/// }
/// ```
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = AppModRef)))]
#[sabi(missing_field(panic))]
pub struct AppMod {
    /// Creates the app for one worker; an error stops the worker's boot.
    pub init: extern "C" fn(&WorkerInfo<'_>) -> RResult<AppHandle, RString>,
    /// Handles one request.
    ///
    /// # Safety
    /// The [`AppHandle`] was returned by this module's `init` (not another
    /// module's), and `io` is what the host made for this request (see
    /// [`HostIo::new`]). With `--threads`, calls on one instance may overlap.
    pub handle: unsafe extern "C" fn(&AppHandle, &RawRequest<'_>, HostIo<'_>) -> HandleOutcome,
    /// Runs the app's exit hook and drops the instance.
    ///
    /// # Safety
    /// The [`AppHandle`] was returned by this module's `init`, and no `handle`
    /// call on it is running (taking it by value ensures it is freed once).
    #[sabi(last_prefix_field)]
    pub exit: unsafe extern "C" fn(AppHandle) -> HandleOutcome,
}

impl RootModule for AppModRef {
    declare_root_module_statics! {AppModRef}
    const BASE_NAME: &'static str = "app";
    const NAME: &'static str = "app";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The app-sdk version the host was built with, as `abi_stable` compares it.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
