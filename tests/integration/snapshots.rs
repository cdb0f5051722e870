//! Build snapshots and the directory they live in (issue 14): a removed
//! snapshot directory (`systemd-tmpfiles`, a `/tmp` cleaner, an operator)
//! must not break later spawns or reloads (item 7), and a snapshot directory
//! that cannot be made is a start-up error, not an app error (item 9b).

use std::path::{Path, PathBuf};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use tests::{app_lib, eventually, install, Host, Scratch};

/// `exit_code::STARTUP` in the host.
const STARTUP_FAILED: i32 = 1;

/// The snapshot directories under `run` (`host-<pid>-builds-*`).
fn snapshot_dirs(run: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(run)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().contains("-builds-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The descriptors of `pid` that point into a snapshot directory.
fn snapshot_fds(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .filter(|t| t.contains("-builds-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_removed_snapshot_directory_breaks_neither_respawns_nor_reloads() {
    let scratch = Scratch::new("snapshots-removed");
    let run = scratch.join("run");
    std::fs::create_dir(&run).unwrap();
    let lib = scratch.join("libapp.so");
    install(&app_lib("hello"), &lib);
    let app = format!("{}:app", lib.display());
    let mut host = Host::spawn_env(
        &["-w", "1", &app],
        &[("XDG_RUNTIME_DIR", run.to_str().unwrap())],
    );
    host.wait_listening_addr();
    host.wait_for_log("ready in", 1);
    let dirs = snapshot_dirs(&run);
    assert_eq!(dirs.len(), 1, "one snapshot directory: {dirs:?}");
    std::fs::remove_dir_all(&dirs[0]).unwrap();

    // A respawn loads the build the master holds.
    let worker = eventually("the worker", || host.children().first().copied());
    kill(Pid::from_raw(worker), Signal::SIGKILL).unwrap();
    host.wait_for_log("ready in", 2);
    assert_eq!(host.get("/").text(), "Hello, World!");

    // A reload to a new build makes a new directory and serves the new build.
    install(&app_lib("echo"), &lib);
    host.signal(Signal::SIGHUP);
    host.wait_for_log("generation 2 complete", 1);
    let echoed = host.get("/echo-me");
    assert_eq!(echoed.status, 200);
    assert!(echoed.text().contains("/echo-me"), "{}", echoed.text());
    let dirs = snapshot_dirs(&run);
    assert_eq!(dirs.len(), 1, "a new snapshot directory: {dirs:?}");
    assert_eq!(host.count_log("was removed; new snapshots go to"), 1);

    // The new worker holds its own build only; no line names a descriptor.
    let worker = eventually("the new worker", || {
        host.children()
            .into_iter()
            .find(|pid| *pid != worker && snapshot_fds(*pid).len() == 1)
    });
    let fds = snapshot_fds(worker);
    assert!(
        fds[0].starts_with(&dirs[0].display().to_string()),
        "{fds:?}"
    );
    host.signal(Signal::SIGTERM);
    assert_eq!(host.wait_exit().code(), Some(0));
    let lines = host.log_lines();
    assert!(
        !lines.iter().any(|l| l.contains("/proc/self/fd")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("cannot load")),
        "{lines:#?}"
    );
    assert!(snapshot_dirs(&run).is_empty(), "removed at exit");
}

#[test]
fn an_unwritable_runtime_dir_is_a_startup_error_naming_it() {
    let scratch = Scratch::new("snapshots-unwritable");
    // A directory this process cannot create anything in: one without write
    // permission, or for root (whom permissions do not stop) /proc.
    let dir = if nix::unistd::Uid::effective().is_root() {
        PathBuf::from("/proc")
    } else {
        use std::os::unix::fs::PermissionsExt;
        let ro = scratch.join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        ro
    };
    let app = tests::app_arg("hello");
    for extra in [None, Some("--check-config")] {
        let mut args = vec![app.as_str()];
        args.extend(extra);
        let mut host = Host::spawn_env(&args, &[("XDG_RUNTIME_DIR", dir.to_str().unwrap())]);
        assert_eq!(host.wait_exit().code(), Some(STARTUP_FAILED), "{extra:?}");
        let want = format!(
            "cannot create the build snapshot directory in {} ($XDG_RUNTIME_DIR)",
            dir.display()
        );
        assert_eq!(host.count_log(&want), 1, "{:#?}", host.log_lines());
    }
}
