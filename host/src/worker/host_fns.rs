//! The host functions an app calls during a request, and the context they act on.
//!
//! The app reaches the host only through the [`HostIo`] that [`host_io`]
//! makes for one call of the app: a private table of `unsafe extern "C"`
//! functions (`VTABLE`) and an opaque context pointing at the worker's
//! [`Exchange`]. Each function finds the exchange behind the context and
//! turns the result into the ABI's [`IoResult`]. Making the context is the
//! one place the host vouches for it, so the table is not public: nothing
//! else can pair it with a context.

use std::ffi::c_void;

use abi_stable::std_types::{RResult, RSlice, RSliceMut, RString};
use app_sdk::abi::{HostCtx, HostIo, HostVTable, IoResult};

use crate::worker::exchange::Exchange;

/// The host's side of one call of the app: its functions, acting on `ex`.
///
/// The exchange stays mutably borrowed while the returned value lives, so
/// the host cannot touch it while the app may.
#[inline]
pub fn host_io<'a>(ex: &'a mut Exchange<'_>) -> HostIo<'a> {
    let ctx = HostCtx(ex as *mut Exchange<'_> as *mut c_void);
    // SAFETY: `ctx` points at `ex`, which is exclusively borrowed for 'a, so
    // it stays alive and untouched by anything but these calls; `VTABLE`'s
    // functions take exactly such a pointer; `HostIo` is neither Send nor
    // Sync, so the calls come from this thread, one at a time.
    unsafe { HostIo::new(ctx, &VTABLE) }
}

/// The functions every app call receives (only through [`host_io`]).
static VTABLE: HostVTable = HostVTable {
    read_body,
    set_status,
    add_header,
    send_body,
    write_chunk,
    send_file,
};

/// The exchange behind a context pointer.
///
/// # Safety
/// `ctx` was made by [`host_io`] for the call in progress, on this thread,
/// and no other reference to the exchange is in use while the result is.
unsafe fn exchange<'x>(ctx: HostCtx) -> &'x mut Exchange<'x> {
    // SAFETY: per the contract above, the worker's Exchange outlives the app
    // call and nothing else uses it during the call.
    unsafe { &mut *(ctx.0 as *mut Exchange<'x>) }
}

fn to_abi(result: Result<usize, String>) -> IoResult {
    match result {
        Ok(n) => RResult::ROk(n),
        Err(e) => RResult::RErr(RString::from(e)),
    }
}

/// # Safety
/// [`HostVTable`]'s contract: `ctx` comes with this table from [`host_io`].
unsafe extern "C" fn read_body(ctx: HostCtx, buf: RSliceMut<'_, u8>) -> IoResult {
    // SAFETY: this function's contract is `exchange`'s.
    let ex = unsafe { exchange(ctx) };
    let mut buf = buf;
    to_abi(ex.read_body(buf.as_mut_slice(), true))
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn set_status(ctx: HostCtx, status: u16) -> IoResult {
    // SAFETY: this function's contract is `exchange`'s.
    to_abi(unsafe { exchange(ctx) }.set_status(status).map(|()| 0))
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn add_header(
    ctx: HostCtx,
    name: RSlice<'_, u8>,
    value: RSlice<'_, u8>,
) -> IoResult {
    // SAFETY: this function's contract is `exchange`'s.
    let ex = unsafe { exchange(ctx) };
    to_abi(ex.add_header(name.as_slice(), value.as_slice()).map(|()| 0))
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn send_body(ctx: HostCtx, body: RSlice<'_, u8>) -> IoResult {
    // SAFETY: this function's contract is `exchange`'s.
    to_abi(unsafe { exchange(ctx) }.send_body(body.as_slice()))
}

/// # Safety
/// As for [`read_body`].
unsafe extern "C" fn write_chunk(ctx: HostCtx, data: RSlice<'_, u8>) -> IoResult {
    // SAFETY: this function's contract is `exchange`'s.
    to_abi(unsafe { exchange(ctx) }.write_chunk(data.as_slice()))
}

/// # Safety
/// As for [`read_body`]; `fd` is open for the whole call (the app lends it).
unsafe extern "C" fn send_file(ctx: HostCtx, fd: i32, offset: u64, len: u64) -> IoResult {
    // SAFETY: this function's contract is `exchange`'s.
    to_abi(unsafe { exchange(ctx) }.send_file(fd, offset, len))
}
