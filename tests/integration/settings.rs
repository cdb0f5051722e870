//! Settings: the config file, the environment, the command line, and which wins;
//! `--check-config`, `--print-config`, and HUP re-reading the file.

use nix::sys::signal::Signal;
use tests::{app_arg, eventually, free_port, Host};

/// A scratch directory with a `host.toml`, removed on drop.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        let dir = std::env::temp_dir().join(format!("host-settings-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = ConfigFile(dir);
        file.write(text);
        file
    }

    fn path(&self) -> String {
        self.0.join("host.toml").display().to_string()
    }

    fn write(&self, text: &str) {
        std::fs::write(self.0.join("host.toml"), text).unwrap();
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `host` with `args` and `env` to completion; (exit code, all output).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut host = Host::spawn_env(args, env);
    let code = host.wait_exit().code().unwrap_or(-1);
    (code, host.log_lines().join("\n"))
}

#[test]
fn precedence_is_command_line_then_environment_then_file() {
    let app = app_arg("hello");
    let file = ConfigFile::new(
        "precedence",
        &format!("workers = 3\nkeep_alive = 2\ntimeout = 11\nbind = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\napp = \"{app}\"\n"),
    );
    let path = file.path();
    // The file alone.
    let (code, out) = run(&["-c", &path, "--print-config"], &[]);
    assert_eq!(code, 0, "{out}");
    for line in [
        "workers = 3",
        "keep-alive = 2",
        "timeout = 11",
        "bind = [\"127.0.0.1:1\", \"127.0.0.1:2\"]",
    ] {
        assert!(out.contains(line), "{line} in {out}");
    }
    // The environment over the file; the command line over both, a list replaced whole.
    let (code, out) = run(
        &[
            "-c",
            &path,
            "--print-config",
            "--timeout",
            "12",
            "-b",
            "127.0.0.1:3",
        ],
        &[
            ("WEB_CONCURRENCY", "5"),
            ("HOST_ARGS", "--keep-alive 9 --timeout 99"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    for line in [
        "workers = 5",
        "keep-alive = 9",
        "timeout = 12",
        "bind = [\"127.0.0.1:3\"]",
    ] {
        assert!(out.contains(line), "{line} in {out}");
    }
    // PORT binds every IPv4 address when nothing else sets --bind.
    let (_, out) = run(&[&app, "--print-config"], &[("PORT", "7777")]);
    assert!(out.contains("bind = [\"0.0.0.0:7777\"]"), "{out}");
}

#[test]
fn bad_settings_name_their_source() {
    let file = ConfigFile::new("bad", "wrokers = 3\n");
    let path = file.path();
    let (code, out) = run(&["-c", &path, "x.so"], &[]);
    assert_eq!(code, 2);
    assert!(
        out.contains(&format!("error: {path}: unknown key `wrokers`")),
        "{out}"
    );

    file.write("workers = \"many\"\n");
    let (code, out) = run(&["-c", &path, "x.so"], &[]);
    assert_eq!(code, 2);
    assert!(out.contains("key `workers`: invalid value 'many'"), "{out}");

    file.write("workers = [\n");
    let (code, out) = run(&["-c", &path, "x.so"], &[]);
    assert_eq!(code, 2);
    assert!(out.contains("not valid TOML"), "{out}");

    let (code, out) = run(&["x.so"], &[("WEB_CONCURRENCY", "lots")]);
    assert_eq!(code, 2);
    assert!(out.contains("WEB_CONCURRENCY=lots"), "{out}");

    let (code, out) = run(&["x.so"], &[("HOST_ARGS", "--no-such-flag")]);
    assert_eq!(code, 2);
    assert!(
        out.contains("HOST_ARGS: unexpected argument '--no-such-flag'"),
        "{out}"
    );
}

#[test]
fn check_config_probes_the_app() {
    let app = app_arg("hello");
    let file = ConfigFile::new("check", &format!("app = \"{app}\"\nworkers = 2\n"));
    let (code, out) = run(&["-c", &file.path(), "--check-config"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("loads and initialises; 2 worker(s)"), "{out}");
    let (code, out) = run(&["--check-config", "/nonexistent/libx.so"], &[]);
    assert_eq!(code, 4);
    assert!(
        out.contains("error: cannot load /nonexistent/libx.so:app: no such file"),
        "{out}"
    );
}

#[test]
fn hup_rereads_the_config_file() {
    let hello = app_arg("hello");
    let echo = app_arg("echo");
    let (first, second) = (free_port(), free_port());
    let file = ConfigFile::new(
        "hup",
        &format!("app = \"{hello}\"\nworkers = 1\nbind = [\"127.0.0.1:{first}\"]\n"),
    );
    let host = Host::start(&["-c", &file.path()]);
    host.wait_for_log("ready in", 1);
    assert_eq!(host.get("/").text(), "Hello, World!");
    file.write(&format!(
        "app = \"{echo}\"\nworkers = 2\nbind = [\"127.0.0.1:{first}\", \"127.0.0.1:{second}\"]\n"
    ));
    host.signal(Signal::SIGHUP);
    host.wait_for_log("settings changed", 1);
    let line = host
        .log_lines()
        .into_iter()
        .find(|l| l.contains("settings changed"))
        .unwrap();
    assert!(line.contains("workers: 1 → 2"), "{line}");
    host.wait_for_log("generation 2 complete: 2 worker(s)", 1);
    // The new app, on the old address and on the new one.
    assert_eq!(host.get("/a").json()["path"], "/a");
    let new_addr: std::net::SocketAddr = format!("127.0.0.1:{second}").parse().unwrap();
    let reply = tests::raw(
        new_addr,
        b"GET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(tests::parse_responses(&reply)[0].json()["path"], "/b");
    // A broken file is refused; the running settings stay.
    file.write("workers = \"x\"\n");
    host.signal(Signal::SIGHUP);
    host.wait_for_log("settings not reloaded", 1);
    eventually("the echo app still serving", || {
        (host.get("/c").json()["path"] == "/c").then_some(())
    });
}

#[test]
fn the_example_config_in_deploy_is_valid() {
    let example = tests::target_dir()
        .parent()
        .and_then(|t| t.parent())
        .unwrap()
        .join("deploy/host.toml");
    let (code, out) = run(&["-c", example.to_str().unwrap(), "--print-config"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("metrics-bind = \"127.0.0.1:9100\""), "{out}");
}

/// `--version` says which apps the host serves; `-V` stays one line.
#[test]
fn version_names_the_app_sdk_it_serves() {
    let long = std::process::Command::new(tests::host_bin())
        .arg("--version")
        .output()
        .expect("host --version");
    assert!(long.status.success());
    let text = String::from_utf8_lossy(&long.stdout);
    // The SDK's own version, from its manifest (it does not inherit the workspace's).
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../app-sdk/Cargo.toml"
    ))
    .expect("app-sdk/Cargo.toml");
    let sdk = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("a version line in app-sdk/Cargo.toml");
    assert!(
        text.starts_with("host ")
            && text.contains(&format!("built with app-sdk {sdk}"))
            && text.contains(&format!(
                "serves apps built against app-sdk {}.x",
                &sdk[..sdk.rfind('.').unwrap_or(0)]
            )),
        "{text}"
    );
    let short = std::process::Command::new(tests::host_bin())
        .arg("-V")
        .output()
        .expect("host -V");
    assert_eq!(String::from_utf8_lossy(&short.stdout).lines().count(), 1);
}
