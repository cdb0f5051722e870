//! A host table for the SDK's own unit tests: every request function
//! refuses, `log` drops the record. A test overrides the functions it
//! exercises (`HostFns { read_body: mine, ..test_host::refusing() }`), so
//! each test spells out only what its host does. (Apps test through
//! `app_sdk::testing`, whose recording host keeps the real host's rules.)

use abi_stable::std_types::{RResult, RSlice, RSliceMut, RStr};

use crate::abi::{
    size_u32, HostCtx, HostFns, IoResult, LogRecord, ABI_LINE, ABI_REVISION, SDK_VERSION,
};

/// What every refusing function answers.
const REFUSAL: &str = "refused by the test host";

/// The host table whose functions all refuse.
pub(crate) fn refusing() -> HostFns {
    unsafe extern "C" fn read(_: HostCtx<'_>, _: RSliceMut<'_, u8>) -> IoResult {
        RResult::RErr(REFUSAL.into())
    }
    unsafe extern "C" fn status(_: HostCtx<'_>, _: u16) -> IoResult {
        RResult::RErr(REFUSAL.into())
    }
    unsafe extern "C" fn header(_: HostCtx<'_>, _: RSlice<'_, u8>, _: RSlice<'_, u8>) -> IoResult {
        RResult::RErr(REFUSAL.into())
    }
    unsafe extern "C" fn bytes(_: HostCtx<'_>, _: RSlice<'_, u8>) -> IoResult {
        RResult::RErr(REFUSAL.into())
    }
    unsafe extern "C" fn file(_: HostCtx<'_>, _: i32, _: u64, _: u64) -> IoResult {
        RResult::RErr(REFUSAL.into())
    }
    unsafe extern "C" fn log(_: *const LogRecord<'_>) {}
    HostFns {
        size: size_u32::<HostFns>(),
        abi_line: ABI_LINE,
        abi_revision: ABI_REVISION,
        provides: 0,
        sdk_version: RStr::from_str(SDK_VERSION),
        max_log_level: 0,
        _reserved: 0,
        read_body: read,
        set_status: status,
        add_header: header,
        send_body: bytes,
        write_chunk: bytes,
        send_file: file,
        log,
        websocket_accept: None,
        websocket_send: None,
        upgrade: None,
    }
}
