//! Reloads close no descriptor twice (issue 14, item 9c: `EBADF` warnings
//! were reported at each reload).
//!
//! A double close is silent when it goes well and closes someone else's
//! descriptor when it goes badly; the log shows it only when an error is
//! logged. So one test reads the log, and one watches every `close` of the
//! master, its probes and its workers through reloads with `strace` (a
//! `close` that fails with `EBADF` is a descriptor closed twice, or never
//! opened).

use std::{
    path::Path,
    process::{Command, Stdio},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use tests::{app_lib, eventually, require_tool, Host, Scratch};

/// Installs the example library `name` at `path` as a deploy would.
fn install(name: &str, path: &Path) {
    let tmp = path.with_extension("tmp");
    std::fs::copy(app_lib(name), &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Reloads `host` three ways (same build, a new build through its probe, a
/// worker killed and respawned), serving between, then stops it.
fn reload_every_way(host: &mut Host, lib: &Path) {
    host.signal(Signal::SIGHUP);
    host.wait_for_log("generation 2 complete", 1);
    assert_eq!(host.get("/").status, 200);
    install("echo", lib);
    host.signal(Signal::SIGHUP);
    host.wait_for_log("generation 3 complete", 1);
    assert_eq!(host.get("/").status, 200);
    let worker = eventually("a worker", || host.children().first().copied());
    kill(Pid::from_raw(worker), Signal::SIGKILL).unwrap();
    host.wait_for_log("killed by SIGKILL", 1);
    assert_eq!(host.get("/").status, 200);
    host.signal(Signal::SIGTERM);
    assert_eq!(host.wait_exit().code(), Some(0));
}

/// Starts a host on a copy of the hello app, with a status listener, so
/// every kind of descriptor the master keeps is there.
fn start(scratch: &Scratch) -> (Host, std::path::PathBuf) {
    let lib = scratch.join("libapp.so");
    install("hello", &lib);
    let app = format!("{}:app", lib.display());
    let host = Host::start(&["-w", "2", "--metrics-bind", "127.0.0.1:0", &app]);
    host.wait_for_log("ready in", 2);
    (host, lib)
}

#[test]
fn reloads_log_no_bad_descriptor() {
    let scratch = Scratch::new("reload-ebadf-log");
    let (mut host, lib) = start(&scratch);
    reload_every_way(&mut host, &lib);
    let bad: Vec<String> = host
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("Bad file descriptor") || l.contains("EBADF"))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
#[ignore = "needs strace"]
fn reloads_close_no_descriptor_twice() {
    require_tool("strace", "-V");
    let scratch = Scratch::new("reload-ebadf-strace");
    let (mut host, lib) = start(&scratch);
    let trace = scratch.join("trace");
    let mut strace = Command::new("strace")
        .args(["-f", "-Z", "-qq", "-e", "trace=close,close_range", "-o"])
        .arg(&trace)
        .args(["-p", &host.pid().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start strace");
    // Attached once the master names a tracer.
    let status = format!("/proc/{}/status", host.pid());
    eventually("strace to attach to the master", || {
        std::fs::read_to_string(&status)
            .ok()?
            .lines()
            .find(|l| l.starts_with("TracerPid:"))
            .filter(|l| l.split_whitespace().nth(1) != Some("0"))
            .map(|_| ())
    });
    reload_every_way(&mut host, &lib);
    // strace ends once every process it traced has.
    let ended = strace.wait().expect("wait for strace");
    assert!(ended.success(), "strace: {ended}");
    let text = std::fs::read_to_string(&trace).unwrap();
    let twice: Vec<&str> = text.lines().filter(|l| l.contains("EBADF")).collect();
    assert!(
        twice.is_empty(),
        "descriptors closed twice (or never opened): {twice:#?}"
    );
}
