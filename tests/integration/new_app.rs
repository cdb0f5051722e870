//! `host new NAME`: the crate it writes builds offline against this
//! checkout's app-sdk and serves with the real host; it refuses bad names and
//! directories that are not empty, with one line and exit code 2.

use std::{
    path::Path,
    process::{Command, Output},
};

use tests::{host_bin, parse_responses, raw, target_dir, Host, Scratch};

/// Runs `host ARGS` in `dir`.
fn host_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(host_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run host")
}

/// The one error line of a failed command, checked to be one line.
fn one_line_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: host new: "), "{stderr}");
    stderr
}

#[test]
fn a_new_app_builds_offline_and_serves() {
    let scratch = Scratch::new("new-app");
    let out = host_in(scratch.path(), &["new", "demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("created app `demo`"), "{stdout}");
    let crate_dir = scratch.join("demo");
    let read = |name: &str| std::fs::read_to_string(crate_dir.join(name)).expect(name);
    let manifest = read("Cargo.toml");
    assert!(manifest.contains("crate-type = [\"cdylib\"]"), "{manifest}");
    assert!(manifest.contains("rust-version = \"1.85\""), "{manifest}");
    // By default, the app-sdk this host was built from, by path.
    assert!(manifest.contains("app-sdk = { path = "), "{manifest}");
    assert_eq!(read(".gitignore"), "/target\n");
    assert!(read("README.md").contains("host target/release/libdemo.so"));

    // Build it as an app author would, offline; the workspace's target
    // directory already holds the SDK's dependencies, so this takes seconds.
    let cargo_target = target_dir()
        .parent()
        .expect("target/<profile> has a parent")
        .to_path_buf();
    let build = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args(["build", "--offline"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &cargo_target)
        .output()
        .expect("run cargo");
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let lib = cargo_target.join("debug/libdemo.so");

    let host = Host::start(&[lib.to_str().expect("a UTF-8 path")]);
    let r = host.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "Hello from demo!\n");
    assert_eq!(host.get("/hello/J%C3%BCrgen").text(), "Hello, Jürgen!\n");
    assert_eq!(host.get("/hello?name=a+b").text(), "Hello, a b!\n");
    assert_eq!(host.get("/nowhere").status, 404);
    let big = "x".repeat(64 * 1024 + 1);
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let responses = parse_responses(&raw(host.addr(), request.as_bytes()));
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].status, 413, "{}", responses[0].text());

    // Again, into the same directory: refused, nothing touched.
    let out = host_in(scratch.path(), &["new", "demo"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains("is not an empty directory"));
    assert_eq!(read(".gitignore"), "/target\n");
}

#[test]
fn bad_names_and_full_directories_are_refused() {
    let scratch = Scratch::new("new-app-refused");
    for name in ["2fast", "my app", "fn", "app-sdk"] {
        let out = host_in(scratch.path(), &["new", name]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(
            one_line_error(&out).contains("is not a valid crate name"),
            "{name}"
        );
    }
    std::fs::write(scratch.join("notes.txt"), "mine").expect("write a file");
    let out = host_in(scratch.path(), &["new", "ok", "--path", "."]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains("is not an empty directory"));
    assert_eq!(
        std::fs::read_dir(scratch.path()).expect("list").count(),
        1,
        "nothing was written"
    );
    // An empty directory is taken; --path need not be named like the crate.
    std::fs::create_dir(scratch.join("empty")).expect("mkdir");
    let out = host_in(
        scratch.path(),
        &["new", "ok", "--path", "empty", "--sdk-version", "0.2"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = std::fs::read_to_string(scratch.join("empty/Cargo.toml")).expect("written");
    assert!(manifest.contains("app-sdk = \"0.2\""), "{manifest}");
    assert!(scratch.join("empty/src/lib.rs").exists());
}
