//! `abi-mismatch`: a test fixture that exports apps the host must refuse
//! as built against an app-sdk it cannot serve.
//!
//! It does not use app-sdk's export macro. It mimics what other SDKs emit:
//!
//! - `app`: a root of ABI line 3 (a future, breaking app-sdk 0.3): the host
//!   names the line and says to rebuild against app-sdk 0.2.
//! - `old`: an app-sdk 0.1 export (an abi_stable library header, whose ABI
//!   could not grow): the host says it no longer loads 0.1 apps.
//!
//! `host target/debug/libabi_mismatch.so:app` must exit with code 4 and one
//! line saying so; `tests/` checks both.

use abi_stable::{
    declare_root_module_statics,
    library::{CheckTypeLayout, LibHeader, RootModule, RootModuleResult},
    prefix_type::PrefixTypeTrait,
    sabi_types::VersionStrings,
    std_types::RString,
    StableAbi,
};

/// The head every root of every line starts with (size, line, revision,
/// magic); what follows differs between lines.
#[repr(C)]
pub struct OtherLineRoot {
    /// Its size.
    pub size: u32,
    /// ABI line 3: app-sdk 0.3.x.
    pub abi_line: u16,
    /// Revision 0 of that line.
    pub abi_revision: u16,
    /// The app-sdk magic.
    pub magic: [u8; 8],
    /// Whatever line 3 keeps next.
    pub other: [u64; 8],
}

/// Exported as `app`: a root of another ABI line.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static app: OtherLineRoot = OtherLineRoot {
    size: std::mem::size_of::<OtherLineRoot>() as u32,
    abi_line: 3,
    abi_revision: 0,
    magic: *b"hostapp\0",
    other: [0; 8],
};

/// An app-sdk 0.1 root module (abi_stable prefix type).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = OldModRef)))]
#[sabi(missing_field(panic))]
pub struct OldMod {
    /// Anything: the host stops at the header.
    #[sabi(last_prefix_field)]
    pub init: extern "C" fn(u64) -> RString,
}

impl RootModule for OldModRef {
    declare_root_module_statics! {OldModRef}
    const BASE_NAME: &'static str = "app";
    const NAME: &'static str = "app";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.1.0");
}

extern "C" fn init(n: u64) -> RString {
    RString::from(n.to_string())
}

extern "C" fn load_old() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(|| OldMod { init }.leak_into_prefix())
}

/// Exported as `old`: what app-sdk 0.1's `export_app!` emitted.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static old: LibHeader =
    // SAFETY: `load_old` returns an `OldModRef`.
    unsafe { LibHeader::from_constructor::<OldModRef>(load_old, CheckTypeLayout::Yes) };
