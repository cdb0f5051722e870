//! The server's own processes: pid file, user, titles, environment, chdir, umask.

use tests::{app_lib, Host, Scratch};

/// A field of `/proc/PID/status`.
fn status_field(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// What `ps` shows for `pid`.
fn title(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .replace('\0', " ")
}

#[test]
fn pid_file_is_written_refused_while_live_and_removed() {
    let dir = Scratch::new("pid");
    let pid_file = dir.join("host.pid");
    let pid_arg = pid_file.to_str().unwrap().to_owned();
    let mut host = Host::app("hello", &["--pid", &pid_arg]);
    let written: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(written, host.pid());
    // A second server with the same pid file refuses to start.
    let app = tests::app_arg("hello");
    let mut second = Host::spawn(&["--pid", &pid_arg, &app]);
    assert_eq!(second.wait_exit().code(), Some(1));
    assert!(second
        .log_lines()
        .iter()
        .any(|l| l.contains("which is running")));
    host.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(host.wait_exit().code(), Some(0));
    assert!(!pid_file.exists(), "the pid file is removed on exit");
}

#[test]
fn titles_name_the_master_and_each_worker() {
    let host = Host::app("hello", &["-w", "2"]);
    host.wait_for_log("ready in", 2);
    assert_eq!(title(host.pid()), "host: master [libhello.so:app]");
    let mut workers: Vec<String> = host.children().into_iter().map(title).collect();
    workers.sort();
    assert_eq!(
        workers,
        [
            "host: worker 1 gen 1 [libhello.so:app]",
            "host: worker 2 gen 1 [libhello.so:app]"
        ]
    );
}

#[test]
#[ignore = "needs root (to switch users)"]
fn workers_run_as_the_user_asked_for() {
    assert_eq!(
        nix::unistd::Uid::effective().as_raw(),
        0,
        "this test needs root to switch users; run it as root (CI does) or without --include-ignored"
    );
    let host = Host::app("echo", &["-w", "2", "--user", "nobody"]);
    host.wait_for_log("ready in", 2);
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    for worker in host.children() {
        let uids = status_field(worker, "Uid");
        assert!(
            uids.split_whitespace().all(|u| u == nobody.to_string()),
            "worker {worker} runs as {uids}"
        );
    }
    // The master stays root (it may bind again on HUP); the app serves.
    assert!(status_field(host.pid(), "Uid").starts_with("0"));
    assert_eq!(host.get("/u").json()["path"], "/u");
}

#[test]
fn env_chdir_and_umask_apply() {
    let dir = Scratch::new("umask");
    let sock = dir.join("s.sock");
    let bind = format!("unix:{}", sock.display());
    let target = tests::target_dir();
    let lib = app_lib("echo");
    let file_name = lib.file_name().unwrap().to_str().unwrap();
    let host = Host::start(&[
        "-b",
        &bind,
        "--chdir",
        target.to_str().unwrap(),
        "--umask",
        "077",
        "--env",
        "GREETING=hello from the environment",
        file_name,
    ]);
    host.wait_for_log("ready in", 1);
    // --chdir: the relative library path was found in target/<profile>.
    // --umask 077: the socket file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "socket mode {mode:o}");
    // --env: the app sees the variable.
    let (code, out, err) = tests::curl(&[
        "--unix-socket",
        sock.to_str().unwrap(),
        "http://x/?env=GREETING",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["env"], "hello from the environment");
    drop(host);
}
