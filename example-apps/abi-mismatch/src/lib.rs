//! `abi-mismatch`: a test fixture that exports two apps the host must refuse.
//!
//! It does not use app-sdk. It mimics what `export_app!` emits with root
//! modules that do not match the host's:
//!
//! - `app`: claims the host's SDK version but its `AppMod` has other fields,
//!   as an app built against a changed SDK would: abi_stable's layout check
//!   fails, and the host says the SDK is incompatible.
//! - `old`: claims app-sdk 0.0.1, which this host's SDK is not compatible
//!   with: the version check fails, and the host names both versions.
//!
//! `host target/debug/libabi_mismatch.so:app` must exit with code 4 and one
//! line saying so; `tests/` checks both.

use abi_stable::{
    declare_root_module_statics,
    library::{CheckTypeLayout, LibHeader, RootModule, RootModuleResult},
    package_version_strings,
    prefix_type::PrefixTypeTrait,
    sabi_types::VersionStrings,
    std_types::RString,
    StableAbi,
};

/// A root module shaped unlike app-sdk's (different fields).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = AppModRef)))]
#[sabi(missing_field(panic))]
pub struct AppMod {
    /// Takes and returns other types than the real `init`.
    pub init: extern "C" fn(u64) -> RString,
    /// Not in the real module.
    #[sabi(last_prefix_field)]
    pub extra: extern "C" fn() -> u32,
}

impl RootModule for AppModRef {
    declare_root_module_statics! {AppModRef}
    const BASE_NAME: &'static str = "app";
    const NAME: &'static str = "app";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// A root module that claims an old SDK version.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = OldModRef)))]
#[sabi(missing_field(panic))]
pub struct OldMod {
    /// Anything: the version check fails before the layout is compared.
    #[sabi(last_prefix_field)]
    pub init: extern "C" fn(u64) -> RString,
}

impl RootModule for OldModRef {
    declare_root_module_statics! {OldModRef}
    const BASE_NAME: &'static str = "app";
    const NAME: &'static str = "app";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.0.1");
}

extern "C" fn init(n: u64) -> RString {
    RString::from(n.to_string())
}

extern "C" fn extra() -> u32 {
    0
}

extern "C" fn load_app() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(|| AppMod { init, extra }.leak_into_prefix())
}

extern "C" fn load_old() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(|| OldMod { init }.leak_into_prefix())
}

/// Exported as `app`: wrong layout.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static app: LibHeader =
    // SAFETY: `load_app` returns an `AppModRef`.
    unsafe { LibHeader::from_constructor::<AppModRef>(load_app, CheckTypeLayout::Yes) };

/// Exported as `old`: wrong version.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static old: LibHeader =
    // SAFETY: `load_old` returns an `OldModRef`.
    unsafe { LibHeader::from_constructor::<OldModRef>(load_old, CheckTypeLayout::Yes) };
