//! The host functions an app calls during a request, and the context they act on.
//!
//! The app reaches the host only through [`VTABLE`]: each function receives
//! the opaque context made by [`ctx_of`], finds the worker's [`Exchange`]
//! behind it, and turns the result into the ABI's [`IoResult`].

use std::ffi::c_void;

use abi_stable::std_types::{RResult, RSlice, RSliceMut, RString};
use app_sdk::abi::{HostCtx, HostVTable, IoResult};

use crate::worker::exchange::Exchange;

/// The exchange behind a context pointer.
///
/// # Safety
/// `ctx` is the pointer the worker passed for the call in progress.
unsafe fn exchange<'x>(ctx: HostCtx) -> &'x mut Exchange<'x> {
    // SAFETY: per the contract above, the worker's Exchange outlives the app call.
    unsafe { &mut *(ctx.0 as *mut Exchange<'x>) }
}

fn to_abi(result: Result<usize, String>) -> IoResult {
    match result {
        Ok(n) => RResult::ROk(n),
        Err(e) => RResult::RErr(RString::from(e)),
    }
}

extern "C" fn read_body(ctx: HostCtx, buf: RSliceMut<'_, u8>) -> IoResult {
    let ex = unsafe { exchange(ctx) };
    let mut buf = buf;
    to_abi(ex.read_body(buf.as_mut_slice(), true))
}

extern "C" fn set_status(ctx: HostCtx, status: u16) -> IoResult {
    to_abi(unsafe { exchange(ctx) }.set_status(status).map(|()| 0))
}

extern "C" fn add_header(ctx: HostCtx, name: RSlice<'_, u8>, value: RSlice<'_, u8>) -> IoResult {
    to_abi(
        unsafe { exchange(ctx) }
            .add_header(name.as_slice(), value.as_slice())
            .map(|()| 0),
    )
}

extern "C" fn send_body(ctx: HostCtx, body: RSlice<'_, u8>) -> IoResult {
    to_abi(unsafe { exchange(ctx) }.send_body(body.as_slice()))
}

extern "C" fn write_chunk(ctx: HostCtx, data: RSlice<'_, u8>) -> IoResult {
    to_abi(unsafe { exchange(ctx) }.write_chunk(data.as_slice()))
}

extern "C" fn send_file(ctx: HostCtx, fd: i32, offset: u64, len: u64) -> IoResult {
    to_abi(unsafe { exchange(ctx) }.send_file(fd, offset, len))
}

/// The functions every app call receives.
pub static VTABLE: HostVTable = HostVTable {
    read_body,
    set_status,
    add_header,
    send_body,
    write_chunk,
    send_file,
};

/// Wraps a pointer to the exchange for the app.
pub fn ctx_of(ex: &mut Exchange<'_>) -> HostCtx {
    HostCtx(ex as *mut Exchange<'_> as *mut c_void)
}
