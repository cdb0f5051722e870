//! Loading an app library and resolving `PATH:NAME` to a checked app root.
//!
//! Only workers and the short-lived probe child call [`load`]; the master never
//! loads app code. The export is an [`AppRoot`] of the app-sdk ABI (see
//! `app_sdk::abi` for the compatibility rule): [`load`] checks that the
//! symbol is a data object of this very library, reads the root with
//! `read_table` (so a newer app's longer root is cut to what this host knows,
//! and an older one's is zero-filled), and refuses, in one line that says what
//! to do, an app of another ABI line (or app-sdk 0.1) or one that requires a
//! feature this host lacks. [`LoadedApp`] is the instance a worker creates
//! from the loaded root, and the only way the host calls an app.

pub mod builds;
pub mod instance;
pub mod probe;

pub use instance::LoadedApp;

use std::{
    ffi::{c_void, CStr, CString},
    fmt,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use app_sdk::abi::{self, AppRoot, RootError, ABI_LINE, ROOT_PANIC_ABORT, SDK_VERSION};

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
    /// The app was built against app-sdk 0.1, whose ABI could not grow.
    #[error("`{name}` was built against app-sdk 0.1, which this host no longer loads; rebuild it against app-sdk 0.{ABI_LINE} (this host is built with app-sdk {SDK_VERSION})")]
    Sdk01 {
        /// The export name.
        name: String,
    },
    /// The app was built against another line of app-sdk (a breaking change apart).
    #[error("`{name}` was built against app-sdk 0.{line}.x (ABI line {line}); this host serves apps built against app-sdk 0.{ABI_LINE}.x (it is built with {SDK_VERSION}); rebuild the app against app-sdk 0.{ABI_LINE}")]
    OtherLine {
        /// The export name.
        name: String,
        /// The app's ABI line.
        line: u16,
    },
    /// The app needs something this host does not provide.
    #[error("`{name}` was built against app-sdk {app_sdk} and needs {missing}, which this host (app-sdk {SDK_VERSION}) lacks; upgrade the host")]
    MissingFeatures {
        /// The export name.
        name: String,
        /// The app's app-sdk version.
        app_sdk: String,
        /// The missing features, named as the app's SDK names them.
        missing: String,
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

/// `dladdr1` flag asking for the ELF symbol table entry (glibc's `RTLD_DL_SYMENT`).
const RTLD_DL_SYMENT: libc::c_int = 1;
/// ELF symbol type of a data object (`STT_OBJECT`): what `export_app!` emits.
const STT_OBJECT: u8 = 1;
/// An app's root as this host reads it, and what it says about the app.
#[derive(Clone, Copy)]
pub struct AppModule {
    /// The root, cut or zero-filled to this host's size of it.
    pub root: AppRoot,
    /// Built with `panic = "abort"`: a panic kills the worker.
    pub panic_abort: bool,
}

/// Opens the library and returns the checked root of the app `spec.name`.
///
/// The library is never unloaded: a process serves one build for its whole
/// life, and the app may have threads running its code.
pub fn load(spec: &AppSpec) -> Result<AppModule, LoadError> {
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
    let symbol_size = check_symbol(address, path, spec)?;
    // The library stays loaded for the life of the process.
    std::mem::forget(lib);
    // SAFETY: `check_symbol` proved `address` is a data object of this
    // library at least `symbol_size` bytes long; `read_root` reads no more.
    unsafe { read_root(address, symbol_size, &spec.name) }
}

/// Reads and checks the root at `address`, a data object `symbol_size`
/// bytes long (`None` when the ELF entry does not say), with the SDK's own
/// check, and names what is wrong in terms of the app `name`.
///
/// # Safety
/// As for [`app_sdk::abi::read_root`].
unsafe fn read_root(
    address: *const c_void,
    symbol_size: Option<usize>,
    name: &str,
) -> Result<AppModule, LoadError> {
    let name = name.to_owned();
    // SAFETY: this function's contract is `read_root`'s.
    let root = unsafe { abi::read_root(address, symbol_size) }.map_err(|e| match e {
        RootError::Sdk01 => LoadError::Sdk01 { name },
        RootError::NotARoot(why) => LoadError::NotAnApp { name, why },
        RootError::OtherLine(line) => LoadError::OtherLine { name, line },
        RootError::MissingFeatures { app_sdk, missing } => LoadError::MissingFeatures {
            name,
            app_sdk,
            missing,
        },
    })?;
    Ok(AppModule {
        root,
        panic_abort: root.flags & ROOT_PANIC_ABORT != 0,
    })
}

/// Refuses symbols that are not data objects defined by this very library
/// (a dependency's `malloc`, a function). Returns the object's size when
/// the loader's symbol table says it.
fn check_symbol(
    address: *const c_void,
    path: &Path,
    spec: &AppSpec,
) -> Result<Option<usize>, LoadError> {
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
    if sym.is_null() {
        return Ok(None);
    }
    // SAFETY: with RTLD_DL_SYMENT, `sym` points at the symbol's ELF entry.
    let entry = unsafe { &*(sym as *const libc::Elf64_Sym) };
    if entry.st_info & 0xf != STT_OBJECT {
        return Err(not_an_app("it is a function, not an exported app"));
    }
    Ok(Some(entry.st_size as usize))
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
    fn loader_reason_drops_the_path() {
        let p = Path::new("/tmp/x.so");
        assert_eq!(
            dl_reason("/tmp/x.so: invalid ELF header", p),
            "invalid ELF header"
        );
    }
}
