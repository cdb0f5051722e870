//! The ABI's compatibility rule, against the real binary: an app built
//! against the first 0.2 SDK (kept frozen in `compat/`) loads and serves on
//! this host, every part of the ABI it uses working; a newer 0.2.y app that
//! needs nothing this host lacks serves too (one that does is refused: see
//! `load_errors`).

use std::path::Path;

use sha2::{Digest, Sha256};
use tests::{app_lib, parse_one, raw, Host};

/// A digest of the frozen SDK's sources, recorded when 0.2.0 was frozen.
/// If this changes, someone edited `compat/app-sdk-0.2.0/src`: put it back.
/// (The fixture must be built against the SDK as it was released.)
const FROZEN_SDK_DIGEST: &str = "d2c0c176f7a937cec78cbfa23c99b2a9f6abe70b3ad4b824d88fa2df1e03fd35";

/// SHA-256 over every file under `dir` (sorted): its relative path, a NUL,
/// its length, its bytes.
fn digest(dir: &Path) -> String {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read the frozen SDK") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let bytes = std::fs::read(&file).expect("read a frozen file");
        hasher.update(file.strip_prefix(dir).unwrap().to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn the_frozen_0_2_0_sdk_is_unchanged() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../compat/app-sdk-0.2.0/src");
    assert_eq!(
        digest(&dir),
        FROZEN_SDK_DIGEST,
        "compat/app-sdk-0.2.0/src differs from app-sdk 0.2.0 as released: restore it \
         (git log compat/) rather than edit it"
    );
}

#[test]
fn an_app_built_against_the_first_0_2_sdk_serves() {
    let spec = format!("{}:app", app_lib("compat-app-0-2-0").display());
    let host = Host::start(&["-w", "1", &spec]);
    host.wait_for_log("ready in", 1);

    let home = host.get("/").text();
    assert!(
        home.starts_with("built against app-sdk 0.2.0\nworker 1 threads 1 generation 1 probe false app app\nGET / HTTP/1.1\n"),
        "{home}"
    );

    let reply = raw(
        host.addr(),
        b"GET /headers HTTP/1.1\r\nHost: t\r\nX-Thing: a\r\nx-thing: b\r\nConnection: close\r\n\r\n",
    );
    let (headers, _) = parse_one(&reply).expect("a response to /headers");
    assert!(
        headers.text().starts_with("a,b from 127.0.0.1:"),
        "{}",
        headers.text()
    );

    let reply = raw(
        host.addr(),
        b"POST /echo?status=201 HTTP/1.1\r\nHost: t\r\nX-Reply: yes\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    let (echo, _) = parse_one(&reply).expect("a response to /echo");
    assert_eq!(echo.status, 201);
    assert_eq!(echo.header("X-Reply"), Some("yes"));
    assert_eq!(echo.body, b"hello");

    let stream = host.get("/stream?n=3");
    assert!(stream.chunked);
    assert_eq!(stream.text(), "part 1\npart 2\npart 3\n");

    let file = host.get("/file");
    assert_eq!(file.body.len(), 64);
    assert_eq!(&file.body[..4], b"\x7fELF");

    assert_eq!(host.get("/error").status, 500);
    host.wait_for_log("app returned an error: No such file or directory", 1);
    assert_eq!(host.get("/panic").status, 500);
    host.wait_for_log("app panicked: compat panic", 1);
    assert_eq!(host.get("/").status, 200, "the worker serves on");
}

#[test]
fn a_newer_app_that_needs_nothing_new_serves() {
    let spec = format!("{}:tolerant", app_lib("abi-future").display());
    let host = Host::start(&["-w", "1", &spec]);
    assert_eq!(host.get("/").text(), "200 from the future\n");
}
