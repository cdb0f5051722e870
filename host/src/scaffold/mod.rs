//! `host new NAME`: writes a new app crate that builds and serves as it is.
//!
//! Starting an app by hand means knowing four things that are easy to get
//! wrong: the `cdylib` crate type, the SDK dependency, the export macro and
//! the name of the library the host loads. This command writes them down
//! once: `Cargo.toml` (with the SDK's minimum Rust), `src/lib.rs` (a small
//! handler using the request helpers), `.gitignore` and a `README.md` with
//! the build and serve commands. The templates are in `template/`.
//!
//! Which SDK the crate depends on: `--sdk-path DIR` or `--sdk-version REQ`
//! when given; otherwise the app-sdk this host was built from, by path, when
//! that directory is still there with the same version (a host built from a
//! checkout makes apps that build offline against exactly its SDK), else the
//! registry's `app-sdk` at this host's SDK version.
//!
//! `new` is taken as this command only as the first argument, as `status`
//! is; an app library that is really named `new` is served as `host ./new`.
//! It never overwrites anything: the directory must be absent or empty, and
//! each file is created exclusively.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use clap::Parser;

use crate::exit_code;

/// Longest crate name accepted (crates.io's limit).
pub const MAX_NAME_LEN: usize = 64;

/// Names that cannot be a crate's: Rust keywords (a library's name is an
/// identifier), the crates every build already has, and the SDK itself.
const RESERVED_NAMES: &[&str] = &[
    "abstract",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "return",
    "self",
    "Self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    "alloc",
    "core",
    "proc_macro",
    "std",
    "test",
    "app_sdk",
];

/// Type names the template's `src/lib.rs` already uses: an app type named
/// like one of them gets `App` appended.
const TAKEN_TYPE_NAMES: &[&str] = &["App", "BodyError", "Request", "Response"];

/// The app-sdk this host was built from, if it is still where it was.
const BUILT_SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../app-sdk");

const CARGO_TOML: &str = include_str!("template/Cargo.toml.in");
const LIB_RS: &str = include_str!("template/lib.rs.in");
const README: &str = include_str!("template/README.md.in");
const GITIGNORE: &str = include_str!("template/gitignore.in");

/// Write a new app crate: Cargo.toml, src/lib.rs, .gitignore and a README.
#[derive(Debug, Parser)]
#[command(
    name = "host new",
    after_help = "Example:\n  host new myapp && cd myapp && cargo build && host target/debug/libmyapp.so"
)]
struct NewArgs {
    /// The crate's name: ASCII letters, digits, `-` and `_`, starting with a letter.
    #[arg(value_name = "NAME")]
    name: String,

    /// The directory to write (default: ./NAME); it must not exist, or be empty.
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,

    /// Depend on the app-sdk crate in this directory (default: the one this
    /// host was built from, when it is still there).
    #[arg(long = "sdk-path", value_name = "DIR", conflicts_with = "sdk_version")]
    sdk_path: Option<PathBuf>,

    /// Depend on app-sdk from the registry, at this version requirement.
    #[arg(long = "sdk-version", value_name = "REQ")]
    sdk_version: Option<String>,
}

/// Why `host new` wrote nothing, or not everything.
enum Failure {
    /// The command line asks for something impossible: exit 2.
    Usage(String),
    /// Writing failed: exit 1.
    Io(String),
}

/// Runs `host new ARGS`; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let parsed = match NewArgs::try_parse_from(
        std::iter::once("host new".to_owned()).chain(args.iter().cloned()),
    ) {
        Ok(parsed) => parsed,
        Err(e) => {
            let code = if e.use_stderr() {
                exit_code::USAGE
            } else {
                exit_code::OK
            };
            let _ = e.print();
            return code;
        }
    };
    match create(&parsed) {
        Ok(report) => {
            print!("{report}");
            exit_code::OK
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: host new: {message}");
            exit_code::USAGE
        }
        Err(Failure::Io(message)) => {
            eprintln!("error: host new: {message}");
            exit_code::STARTUP
        }
    }
}

/// Checks everything, writes the crate, and says what it did.
fn create(args: &NewArgs) -> Result<String, Failure> {
    check_name(&args.name).map_err(Failure::Usage)?;
    let dest = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    let (dependency, sdk_said) = sdk_dependency(args)?;
    let lib = args.name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("@NAME@", &args.name)
            .replace("@LIB@", &lib)
            .replace("@STRUCT@", &type_name(&args.name))
            .replace("@RUST_VERSION@", app_sdk::MIN_RUST_VERSION)
            .replace("@SDK_DEPENDENCY@", &dependency)
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        (".gitignore", fill(GITIGNORE)),
        ("README.md", fill(README)),
        ("src/lib.rs", fill(LIB_RS)),
    ];
    write_all(&dest, &files)?;
    let shown = dest.display();
    Ok(format!(
        "created app `{}` in {shown} ({sdk_said})\nnext:\n  cd {shown}\n  cargo build\n  host target/debug/lib{lib}.so\n",
        args.name
    ))
}

/// Checks that `name` can be a crate's (and its library's) name.
fn check_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{name}` is not a valid crate name: {why}"));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad(&format!("it is longer than {MAX_NAME_LEN} characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return bad("it must start with an ASCII letter");
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        return bad(&format!(
            "`{c}` is not allowed (only ASCII letters, digits, `-` and `_`)"
        ));
    }
    if RESERVED_NAMES.contains(&name.replace('-', "_").as_str()) {
        return bad("it is a Rust keyword or a name a build already has");
    }
    Ok(())
}

/// The app type's name: `my-app` is `MyApp`; one the template already uses gets `App` appended.
fn type_name(crate_name: &str) -> String {
    let mut out: String = crate_name
        .split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    if TAKEN_TYPE_NAMES.contains(&out.as_str()) {
        out.push_str("App");
    }
    out
}

/// The `app-sdk = …` line (with a comment saying where it comes from), and a
/// few words on it for the report.
fn sdk_dependency(args: &NewArgs) -> Result<(String, String), Failure> {
    use app_sdk::abi::SDK_VERSION;
    if let Some(req) = &args.sdk_version {
        return Ok(version_dependency(req));
    }
    let dir = match &args.sdk_path {
        Some(dir) => {
            let version = sdk_version_at(dir)
                .map_err(|e| Failure::Usage(format!("--sdk-path {}: {e}", dir.display())))?;
            if version != SDK_VERSION {
                eprintln!(
                    "note: {} is app-sdk {version}; this host was built with {SDK_VERSION}",
                    dir.display()
                );
            }
            dir.clone()
        }
        None => match sdk_version_at(Path::new(BUILT_SDK_DIR)) {
            Ok(version) if version == SDK_VERSION => PathBuf::from(BUILT_SDK_DIR),
            _ => return Ok(version_dependency(SDK_VERSION)),
        },
    };
    let dir = fs::canonicalize(&dir)
        .map_err(|e| Failure::Usage(format!("--sdk-path {}: {e}", dir.display())))?;
    let text = dir
        .to_str()
        .ok_or_else(|| Failure::Usage(format!("{} is not UTF-8", dir.display())))?;
    let line = format!(
        "# The app-sdk this `host` was built from (`host --version` names it). To build\n\
         # without this checkout, use the registry's instead: app-sdk = \"{SDK_VERSION}\"\n\
         app-sdk = {{ path = {} }}",
        toml::Value::String(text.to_owned())
    );
    Ok((line, format!("app-sdk from {text}")))
}

/// A registry dependency on app-sdk at `req`.
fn version_dependency(req: &str) -> (String, String) {
    let line = format!(
        "# The SDK of the host that serves this app (`host --version` names it).\n\
         app-sdk = {}",
        toml::Value::String(req.to_owned())
    );
    (line, format!("app-sdk {req} from the registry"))
}

/// The version of the app-sdk crate in `dir`, or why it is not one.
fn sdk_version_at(dir: &Path) -> Result<String, String> {
    let manifest = dir.join("Cargo.toml");
    let text = fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", manifest.display()))?;
    let package = table.get("package").and_then(toml::Value::as_table);
    let field = |key: &str| {
        package
            .and_then(|p| p.get(key))
            .and_then(toml::Value::as_str)
    };
    if field("name") != Some("app-sdk") {
        return Err(format!("{} is not the app-sdk crate", dir.display()));
    }
    field("version")
        .map(str::to_owned)
        .ok_or_else(|| format!("{} names no version", manifest.display()))
}

/// Makes `dest` (or takes it, if it is an empty directory) and writes
/// `files` into it, never over anything; on failure, removes what it wrote.
fn write_all(dest: &Path, files: &[(&str, String)]) -> Result<(), Failure> {
    let made_dir = match fs::create_dir(dest) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let empty = fs::read_dir(dest)
                .map(|mut entries| entries.next().is_none())
                .unwrap_or(false);
            if !empty {
                return Err(Failure::Usage(format!(
                    "{} already exists and is not an empty directory",
                    dest.display()
                )));
            }
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(|e| io_failure(dest, e))?;
            true
        }
        Err(e) => return Err(io_failure(dest, e)),
    };
    let mut written = Vec::new();
    let result = files.iter().try_for_each(|(name, text)| {
        let path = dest.join(name);
        if let Some(parent) = path.parent() {
            if !parent.exists() {
                fs::create_dir(parent).map_err(|e| io_failure(parent, e))?;
                written.push(parent.to_path_buf());
            }
        }
        let mut file = fs::File::create_new(&path).map_err(|e| io_failure(&path, e))?;
        written.push(path.clone());
        file.write_all(text.as_bytes())
            .map_err(|e| io_failure(&path, e))
    });
    if result.is_err() {
        // Undo, newest first: files, then the directories made for them.
        for path in written.iter().rev() {
            let _ = fs::remove_file(path).or_else(|_| fs::remove_dir(path));
        }
        if made_dir {
            let _ = fs::remove_dir(dest);
        }
    }
    result
}

fn io_failure(path: &Path, e: io::Error) -> Failure {
    Failure::Io(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_are_checked() {
        for good in ["demo", "my-app", "my_app2", "A", &"a".repeat(MAX_NAME_LEN)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "2fast",
            "-x",
            "_x",
            "my app",
            "café",
            "a/b",
            "fn",
            "self",
            "test",
            "std",
            "app-sdk",
            "app_sdk",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            let e = check_name(bad).unwrap_err();
            assert!(e.contains("is not a valid crate name"), "{bad}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn type_names_are_camel_case_and_do_not_clash() {
        assert_eq!(type_name("demo"), "Demo");
        assert_eq!(type_name("my-app_x"), "MyAppX");
        assert_eq!(type_name("app"), "AppApp");
        assert_eq!(type_name("request"), "RequestApp");
    }

    #[test]
    fn the_built_sdk_is_found_and_named() {
        // Tests run from the checkout the host is built from.
        assert_eq!(
            sdk_version_at(Path::new(BUILT_SDK_DIR)).as_deref(),
            Ok(app_sdk::abi::SDK_VERSION)
        );
        let e = sdk_version_at(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_err();
        assert!(e.contains("is not the app-sdk crate"), "{e}");
    }

    #[test]
    fn an_existing_directory_must_be_empty_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let files = [("a.txt", "a".to_owned()), ("src/b.txt", "b".to_owned())];
        // Empty: taken.
        assert!(write_all(dir.path(), &files).is_ok());
        assert_eq!(
            fs::read_to_string(dir.path().join("src/b.txt"))
                .ok()
                .as_deref(),
            Some("b")
        );
        // Not empty: refused, untouched.
        match write_all(dir.path(), &[("a.txt", "new".to_owned())]) {
            Err(Failure::Usage(e)) => assert!(e.contains("not an empty directory"), "{e}"),
            _ => panic!("a non-empty directory was taken"),
        }
        assert_eq!(
            fs::read_to_string(dir.path().join("a.txt")).ok().as_deref(),
            Some("a")
        );
        // Missing parents are made.
        let deep = dir.path().join("x/y/z");
        assert!(write_all(&deep, &files).is_ok());
        assert!(deep.join("src/b.txt").exists());
    }
}
