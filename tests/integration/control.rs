//! The control socket and `host ctl`: questions answered, changes made and
//! followed to their end with `--wait` (exit 0 complete, 6 refused), bad
//! requests and strangers refused, an absent master reported (exit 7).

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    os::unix::process::CommandExt,
};

use tests::{app_lib, eventually, install, Host, Scratch};

/// `host ctl` exit codes (see `host::exit_code`).
const OK: i32 = 0;
const USAGE: i32 = 2;
const REFUSED: i32 = 6;
const UNREACHABLE: i32 = 7;

/// A host serving a copy of the `hello` build at `scratch/app.so`.
fn hello_host(scratch: &Scratch, args: &[&str]) -> (Host, std::path::PathBuf) {
    let path = scratch.join("app.so");
    install(&app_lib("hello"), &path);
    let app = format!("{}:app", path.display());
    let mut all = args.to_vec();
    all.push(&app);
    (Host::start(&all), path)
}

/// The status as JSON, through `host ctl --json status`.
fn status(host: &Host) -> serde_json::Value {
    let (code, out, err) = host.ctl(&["--json", "status"]);
    assert_eq!(code, OK, "{out}{err}");
    let result: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(result["type"], "result");
    result["data"].clone()
}

#[test]
fn status_and_workers_answer_with_the_worker_table() {
    let scratch = Scratch::new("ctl-status");
    let (host, _) = hello_host(&scratch, &["-w", "2"]);
    host.wait_for_log("control socket at", 1);
    eventually("two workers serve", || {
        (status(&host)["workers"].as_array().map(Vec::len) == Some(2)).then_some(())
    });
    let (code, out, _) = host.ctl(&["status"]);
    assert_eq!(code, OK);
    assert!(out.contains("generation 1 (build"), "{out}");
    assert!(out.contains("serves on every worker"), "{out}");
    let (code, out, _) = host.ctl(&["workers"]);
    assert_eq!(code, OK);
    assert!(out.contains("pid") && out.lines().count() == 3, "{out}");
    let mode = std::fs::metadata(host.control_path())
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("the socket file");
    assert_eq!(mode, 0o600);
}

#[test]
fn scale_sets_the_pool_size() {
    let scratch = Scratch::new("ctl-scale");
    let (host, _) = hello_host(&scratch, &["-w", "1"]);
    let (code, out, _) = host.ctl(&["scale", "3"]);
    assert_eq!(code, OK, "{out}");
    assert!(out.contains("workers now 3 (were 1)"), "{out}");
    eventually("three workers serve", || {
        let s = status(&host);
        s["workers"]
            .as_array()
            .is_some_and(|w| w.iter().filter(|w| w["state"] == "idle").count() == 3)
            .then_some(())
    });
    let (code, ..) = host.ctl(&["scale", "1"]);
    assert_eq!(code, OK);
    eventually("back to one worker", || {
        (status(&host)["workers"].as_array().map(Vec::len) == Some(1)).then_some(())
    });
    let (code, _, err) = host.ctl(&["scale", "0"]);
    assert_eq!(code, USAGE, "{err}");
}

#[test]
fn reload_wait_follows_the_rollout_to_its_end() {
    let scratch = Scratch::new("ctl-reload");
    let (host, path) = hello_host(&scratch, &["-w", "2"]);
    assert_eq!(host.get("/").status, 200);
    install(&app_lib("echo"), &path);
    let (code, out, err) = host.ctl(&["reload", "--wait"]);
    assert_eq!(code, OK, "{out}{err}");
    // Progress lines are the master's own log lines, then the result.
    assert!(out.contains("reload started"), "{out}");
    assert!(out.contains("probing build"), "{out}");
    assert!(out.contains("generation 2 complete"), "{out}");
    assert!(
        host.get("/").body.starts_with(b"{"),
        "the echo build serves"
    );

    // A build that cannot load is refused: exit 6, and the old one serves on.
    std::fs::write(&path, b"not a library").unwrap();
    let (code, out, err) = host.ctl(&["reload", "--wait"]);
    assert_eq!(code, REFUSED, "{out}{err}");
    assert!(
        err.contains("refused") && err.contains("keeps serving"),
        "{err}"
    );
    assert!(host.get("/").body.starts_with(b"{"));
    // Without --wait, the answer comes at once.
    let (code, out, _) = host.ctl(&["reload"]);
    assert_eq!(code, OK);
    assert!(out.contains("reload started"), "{out}");
}

#[test]
fn deploy_serves_another_library_from_then_on() {
    let scratch = Scratch::new("ctl-deploy");
    let (host, _) = hello_host(&scratch, &["-w", "1"]);
    let echo = scratch.join("echo-v2.so");
    install(&app_lib("echo"), &echo);
    let echo_arg = echo.display().to_string();
    let (code, out, err) = host.ctl(&["deploy", &echo_arg, "--wait"]);
    assert_eq!(code, OK, "{out}{err}");
    assert!(out.contains("generation 2 complete"), "{out}");
    assert!(host.get("/").body.starts_with(b"{"));
    // The same file again: nothing to do, and it says so.
    let (code, out, _) = host.ctl(&["deploy", "--wait"]);
    assert_eq!(code, OK);
    assert!(out.contains("nothing to do"), "{out}");
    // A missing file is refused at once.
    let missing = scratch.file("missing.so");
    let (code, _, err) = host.ctl(&["deploy", &missing]);
    assert_eq!(code, REFUSED);
    assert!(
        err.contains("cannot deploy") && err.contains("missing.so"),
        "{err}"
    );
}

#[test]
fn bad_requests_get_a_result_saying_why() {
    let scratch = Scratch::new("ctl-bad");
    let (host, _) = hello_host(&scratch, &[]);
    for (request, why) in [
        (&b"{\"cmd\":\"explode\"}\n"[..], "bad request"),
        (b"not json\n", "bad request"),
        (
            b"{\"cmd\":\"scale\",\"workers\":0}\n",
            "workers must be 1 to",
        ),
    ] {
        let mut s = UnixStream::connect(host.control_path()).expect("connect");
        s.write_all(request).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        let answer: serde_json::Value = serde_json::from_str(&line).expect(&line);
        assert_eq!(answer["type"], "result", "{line}");
        assert_eq!(answer["ok"], false, "{line}");
        assert!(answer["message"].as_str().unwrap().contains(why), "{line}");
    }
    assert_eq!(host.get("/").status, 200, "the master serves on");
}

#[test]
fn an_absent_master_and_a_taken_socket_are_reported() {
    let scratch = Scratch::new("ctl-absent");
    let nowhere = scratch.file("nobody.sock");
    let out = std::process::Command::new(tests::host_bin())
        .args(["ctl", "--control", &nowhere, "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(UNREACHABLE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no master answers"));

    // A second master asking for the same socket is refused (exit 3)...
    let (first, _) = hello_host(&scratch, &[]);
    let control = first.control_path().display().to_string();
    let mut second = Host::spawn(&["--control", &control, &tests::app_arg("hello")]);
    let status = second.wait_exit();
    assert_eq!(status.code(), Some(3));
    second.wait_for_log("another master answers there", 1);
    // ...and the first keeps its socket.
    assert_eq!(first.ctl(&["status"]).0, OK);
}

#[test]
#[ignore = "needs root (to ask as another user)"]
fn a_peer_of_another_user_is_refused() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to ask as another user; run it as root (CI does) or without --include-ignored"
    );
    let scratch = Scratch::new("ctl-peer");
    let (host, _) = hello_host(&scratch, &[]);
    // Let anyone reach the socket file: SO_PEERCRED must still refuse.
    let dir = host.control_path().parent().unwrap();
    for p in [dir, host.control_path()] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    let out = std::process::Command::new(tests::host_bin())
        .args(["ctl", "--control"])
        .arg(host.control_path())
        .arg("status")
        .env_clear()
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(REFUSED), "{err}");
    assert!(err.contains("permission denied: uid 65534"), "{err}");
    host.wait_for_log("refused a request from uid 65534", 1);
}

#[test]
fn drain_stops_the_server_as_term_does() {
    let scratch = Scratch::new("ctl-drain");
    let (mut host, _) = hello_host(&scratch, &["--drain-delay", "2"]);
    let (code, out, err) = host.ctl(&["drain"]);
    assert_eq!(code, OK, "{out}{err}");
    assert!(out.contains("host ctl: draining for 2 s"), "{out}");
    // While it drains: no second drain, no change; questions are answered.
    let (code, _, err) = host.ctl(&["drain"]);
    assert_eq!(code, REFUSED);
    assert!(err.contains("already draining"), "{err}");
    let (code, _, err) = host.ctl(&["reload", "--wait"]);
    assert_eq!(code, REFUSED);
    assert!(err.contains("the server is stopping"), "{err}");
    assert_eq!(host.ctl(&["status"]).0, OK);
    assert_eq!(host.wait_exit().code(), Some(0));
}
