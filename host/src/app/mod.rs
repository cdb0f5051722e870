//! Loading an app library and resolving `PATH:NAME` to a checked app module.
//!
//! Only workers and the short-lived probe child call [`load`]; the master never
//! loads app code. Loading goes through `abi_stable`, which checks the SDK
//! version and the layout of every type that crosses the boundary, and turns
//! each way a load can fail into a [`LoadError`] whose message is one line.
//! [`LoadedApp`] is the instance a worker creates from the loaded module, and
//! the only way the host calls an app.

pub mod builds;
mod instance;
pub mod probe;

pub use instance::LoadedApp;

use std::{
    ffi::{c_void, CStr, CString},
    fmt,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use abi_stable::library::{AbiHeaderRef, LibHeader, LibraryError};
use app_sdk::abi::{AppModRef, SDK_VERSION};

/// `PATH:NAME` from the command line: the library and the exported app's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    /// The library file.
    pub path: PathBuf,
    /// The exported name after `:` (default [`DEFAULT_APP_NAME`]).
    pub name: String,
}

/// The export name used when the spec has no `:NAME`.
pub const DEFAULT_APP_NAME: &str = "app";

impl std::str::FromStr for AppSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The name is a Rust identifier, so a `:` followed by one ends the path.
        let (path, name) = match s.rsplit_once(':') {
            Some((path, name)) if is_identifier(name) && !path.is_empty() => (path, name),
            Some((_, name)) if !name.contains('/') && !name.is_empty() => {
                return Err(format!(
                    "`{name}` is not a valid app name (expected an identifier such as `app`)"
                ))
            }
            _ => (s, DEFAULT_APP_NAME),
        };
        if path.is_empty() {
            return Err("the library path is empty".into());
        }
        Ok(AppSpec {
            path: PathBuf::from(path),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for AppSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.name)
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Why an app could not be loaded. Each message is a single line.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The library file does not exist.
    #[error("no such file")]
    NotFound,
    /// The dynamic loader refused the file.
    #[error("not a loadable library: {reason}")]
    NotALibrary {
        /// What the dynamic loader said.
        reason: String,
    },
    /// The library exports nothing under the name.
    #[error(
        "no app named `{name}` is exported (export it with app_sdk::export_app!({name} = ...))"
    )]
    NoSuchSymbol {
        /// The export name.
        name: String,
    },
    /// The name resolves to something that is not an app exported by this library.
    #[error("`{name}` is not an app exported with app-sdk ({why})")]
    NotAnApp {
        /// The export name.
        name: String,
        /// What it is instead.
        why: &'static str,
    },
    /// The app was built against an app-sdk this host cannot load.
    #[error("`{name}` was built against an incompatible app-sdk: {detail} (this host uses app-sdk {host}; rebuild the app against it)")]
    IncompatibleSdk {
        /// The export name.
        name: String,
        /// The host's app-sdk version.
        host: &'static str,
        /// What differs.
        detail: String,
    },
    /// The app's init hook failed or panicked.
    #[error("app `{name}` failed to initialise: {reason}")]
    InitFailed {
        /// The export name.
        name: String,
        /// The app's message.
        reason: String,
    },
}

/// Environment variable that makes a layout mismatch print abi_stable's whole report.
pub const DEBUG_ABI_ENV: &str = "HOST_DEBUG_ABI";

/// `dladdr1` flag asking for the ELF symbol table entry (glibc's `RTLD_DL_SYMENT`).
const RTLD_DL_SYMENT: libc::c_int = 1;
/// ELF symbol type of a data object (`STT_OBJECT`): what `export_app!` emits.
const STT_OBJECT: u8 = 1;

/// Opens the library and returns the checked root module of the app `spec.name`.
///
/// The library is never unloaded: `abi_stable` does not support it, and a
/// process serves one build for its whole life.
pub fn load(spec: &AppSpec) -> Result<AppModRef, LoadError> {
    let path = &spec.path;
    // An absolute path: dlopen searches the library path for a bare file name.
    let path = &std::path::absolute(path).unwrap_or_else(|_| path.clone());
    if !path.exists() {
        return Err(LoadError::NotFound);
    }
    // RTLD_NOW: an unresolved symbol fails here, not in the middle of a request.
    // SAFETY: loading runs the library's initialisers. That is the contract
    // of serving an app at all: the operator names the library to run, and
    // the probe runs it in a child before any worker does.
    let lib = unsafe {
        libloading::os::unix::Library::open(Some(path), libc::RTLD_NOW | libc::RTLD_LOCAL)
    }
    .map_err(|e| LoadError::NotALibrary {
        reason: dl_reason(&e.to_string(), path),
    })?;
    let symbol = CString::new(spec.name.as_str()).map_err(|_| LoadError::NoSuchSymbol {
        name: spec.name.clone(),
    })?;
    // SAFETY: we only read the symbol's address here; it is checked below
    // before anything dereferences it.
    let address: *const c_void =
        match unsafe { lib.get::<*const c_void>(symbol.as_bytes_with_nul()) } {
            Ok(sym) => *sym,
            Err(_) => {
                return Err(LoadError::NoSuchSymbol {
                    name: spec.name.clone(),
                })
            }
        };
    check_symbol(address, path, spec)?;
    // The library stays loaded for the life of the process.
    std::mem::forget(lib);

    // SAFETY: `address` is a data symbol of this library at least as large as a
    // LibHeader; `upgrade` then checks its magic string and abi_stable version.
    let header: AbiHeaderRef =
        unsafe { std::mem::transmute::<*const c_void, AbiHeaderRef>(address) };
    let header: &'static LibHeader = header.upgrade().map_err(|e| library_error(e, spec, None))?;
    let app_version = header.version_strings().version.as_str().to_owned();
    header
        .init_root_module::<AppModRef>()
        .map_err(|e| library_error(e, spec, Some(&app_version)))
}

/// Refuses symbols that are not data objects defined by this very library
/// (a dependency's `malloc`, a function, something too small to be a header).
fn check_symbol(address: *const c_void, path: &Path, spec: &AppSpec) -> Result<(), LoadError> {
    let not_an_app = |why| LoadError::NotAnApp {
        name: spec.name.clone(),
        why,
    };
    if address.is_null() {
        return Err(not_an_app("its address is null"));
    }
    // SAFETY: `Dl_info` is a C struct of pointers and integers, for which
    // all zero bytes (null pointers) are a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let mut sym: *mut c_void = std::ptr::null_mut();
    // SAFETY: dladdr1 only inspects the loader's tables for this address.
    let found = unsafe { libc::dladdr1(address, &mut info, &mut sym, RTLD_DL_SYMENT) };
    if found == 0 || info.dli_fname.is_null() {
        return Err(not_an_app("the loader cannot say where it is defined"));
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
    let defined_in = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy();
    // The same inode, not the same name: a build is loaded through its
    // descriptor (`/proc/self/fd/N`), and its file may be deleted by now.
    let same_file = match (std::fs::metadata(&*defined_in), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    };
    if !same_file {
        return Err(not_an_app(
            "it is defined by another library this one links to",
        ));
    }
    if !sym.is_null() {
        // SAFETY: with RTLD_DL_SYMENT, `sym` points at the symbol's ELF entry.
        let entry = unsafe { &*(sym as *const libc::Elf64_Sym) };
        if entry.st_info & 0xf != STT_OBJECT {
            return Err(not_an_app("it is a function, not an exported app"));
        }
        if (entry.st_size as usize) < std::mem::size_of::<LibHeader>() {
            return Err(not_an_app("it is too small to be an app header"));
        }
    }
    Ok(())
}

/// The part of a dynamic-loader message after the path it repeats.
fn dl_reason(message: &str, path: &Path) -> String {
    let path = path.display().to_string();
    let message = message.trim();
    match message.find(&path) {
        Some(at) => message[at + path.len()..]
            .trim_start_matches(':')
            .trim()
            .to_owned(),
        None => message.to_owned(),
    }
}

/// Turns abi_stable's errors (whose layout dumps run to kilobytes) into one line.
fn library_error(error: LibraryError, spec: &AppSpec, app_version: Option<&str>) -> LoadError {
    let incompatible = |detail: String| LoadError::IncompatibleSdk {
        name: spec.name.clone(),
        host: SDK_VERSION,
        detail,
    };
    match error {
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => incompatible(format!(
            "it uses app-sdk {actual_version}, this host needs {expected_version}"
        )),
        LibraryError::InvalidAbiHeader(_) => LoadError::NotAnApp {
            name: spec.name.clone(),
            why: "it has no abi_stable header, or one from an incompatible abi_stable",
        },
        LibraryError::AbiInstability(dump) => {
            let dump = dump.to_string();
            // The whole report runs to kilobytes: shown only on request.
            if std::env::var_os(DEBUG_ABI_ENV).is_some() {
                eprintln!("{dump}");
            }
            let first = summarize_layout_error(&dump);
            let version = app_version.unwrap_or("an unknown version");
            incompatible(format!(
                "it uses app-sdk {version} with a different type layout ({first})"
            ))
        }
        LibraryError::RootModule { err, .. } => LoadError::InitFailed {
            name: spec.name.clone(),
            reason: err
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        },
        other => incompatible(
            other
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
    }
}

/// The first `Error:` of abi_stable's layout report, with what it expected and found.
fn summarize_layout_error(dump: &str) -> String {
    let mut lines = dump
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("Error:"));
    let Some(error) = lines.next() else {
        return "the layout of its types differs".to_owned();
    };
    let mut summary = error.trim_start_matches("Error:").trim().to_owned();
    let rest: Vec<&str> = lines.take(6).collect();
    let after = |label: &str| {
        rest.iter()
            .position(|l| *l == label)
            .and_then(|i| rest.get(i + 1))
            .map(|v| v.to_string())
    };
    if let (Some(expected), Some(found)) = (after("Expected:"), after("Found:")) {
        let (expected, found) = (clip(&expected), clip(&found));
        summary = format!("{summary}: expected {expected}, found {found}");
    }
    summary
}

/// Longest type shown for each side of a layout mismatch (a function
/// pointer's signature runs to 100 characters and more); the whole report is
/// behind [`DEBUG_ABI_ENV`].
const LAYOUT_DETAIL_MAX: usize = 40;

/// `text` cut to [`LAYOUT_DETAIL_MAX`] characters, marked with `…` when cut.
fn clip(text: &str) -> String {
    match text.char_indices().nth(LAYOUT_DETAIL_MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parsing() {
        let cases = [
            ("lib.so", "lib.so", "app"),
            ("lib.so:admin", "lib.so", "admin"),
            (
                "./target/x/libfoo.so:app_2",
                "./target/x/libfoo.so",
                "app_2",
            ),
            ("/a:b/lib.so", "/a:b/lib.so", "app"),
        ];
        for (input, path, name) in cases {
            let spec: AppSpec = input.parse().unwrap();
            assert_eq!(spec.path, PathBuf::from(path), "{input}");
            assert_eq!(spec.name, name, "{input}");
        }
        assert!("lib.so:9x".parse::<AppSpec>().is_err());
        assert!(":app".parse::<AppSpec>().is_err());
        assert!("".parse::<AppSpec>().is_err());
    }

    #[test]
    fn layout_errors_are_summarized() {
        let dump = "lots\nof layout\n\nError:mismatched package\nExpected:\n    app-sdk\nFound:\n    other\n";
        assert_eq!(
            summarize_layout_error(dump),
            "mismatched package: expected app-sdk, found other"
        );
        let long = format!(
            "Error:different qualifiers\nExpected:\n{}\nFound:\nx\n",
            "u".repeat(100)
        );
        assert_eq!(
            summarize_layout_error(&long),
            format!(
                "different qualifiers: expected {}…, found x",
                "u".repeat(LAYOUT_DETAIL_MAX)
            )
        );
        assert_eq!(
            summarize_layout_error("no errors"),
            "the layout of its types differs"
        );
    }

    #[test]
    fn loader_reason_drops_the_path() {
        let p = Path::new("/tmp/x.so");
        assert_eq!(
            dl_reason("/tmp/x.so: invalid ELF header", p),
            "invalid ELF header"
        );
    }
}
