//! What crosses a fork: a child of the master (a worker or a probe) never
//! runs the master's code or destructors, and keeps none of its private
//! descriptors; a process the app starts holds nothing the master waits on.
//! (Issue 13, defects 1 and 2.)

use std::{collections::BTreeSet, path::Path};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use tests::{app_arg, eventually, Host, Scratch};

/// Where each open descriptor of `pid` points (`socket:[123]`, `pipe:[45]`,
/// `anon_inode:[signalfd]`, a path), with its number.
fn descriptors(pid: i32) -> Vec<(String, String)> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            target.display().to_string(),
        ));
    }
    out
}

/// The targets of `pid`'s descriptors that start with `kind` (`socket:`, `pipe:`).
fn targets(pid: i32, kind: &str) -> BTreeSet<String> {
    descriptors(pid)
        .into_iter()
        .map(|(_, target)| target)
        .filter(|t| t.starts_with(kind))
        .collect()
}

/// The `sigmask:` line of each signalfd `pid` holds.
fn signalfd_masks(pid: i32) -> Vec<String> {
    descriptors(pid)
        .into_iter()
        .filter(|(_, target)| target == "anon_inode:[signalfd]")
        .filter_map(|(fd, _)| {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
            info.lines()
                .find(|l| l.starts_with("sigmask:"))
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn a_panic_in_a_worker_leaves_the_master_whole() {
    let scratch = Scratch::new("worker-panic");
    let switch = scratch.join("panic");
    let fault = format!("worker-panic:{}", switch.display());
    let app = app_arg("hello");
    let mut host = Host::spawn_env(&["-w", "1", &app], &[("HOST_FAULT", &fault)]);
    host.wait_listening_addr();
    host.wait_for_log("ready in", 1);
    // From now on a new worker panics in host code right after the fork.
    std::fs::write(&switch, b"").unwrap();
    let worker = eventually("the worker", || host.children().first().copied());
    kill(Pid::from_raw(worker), Signal::SIGKILL).unwrap();
    host.wait_for_log("with status 23", 1);
    let panic = host
        .log_lines()
        .into_iter()
        .find(|l| l.contains("injected fault worker-panic"))
        .expect("the panic is logged");
    assert!(panic.contains("[ERROR]"), "{panic}");
    assert!(panic.contains("panicked at "), "{panic}");
    assert!(panic.contains("fault.rs:"), "the location: {panic}");
    assert_eq!(
        host.count_log("injected fault worker-panic"),
        host.count_log("with status 23"),
        "one line per panic"
    );
    // The master's snapshots survived: the next worker boots and serves.
    std::fs::remove_file(&switch).unwrap();
    host.wait_for_log("ready in", 2);
    assert_eq!(host.get("/").text(), "Hello, World!");
    // And a reload still takes a snapshot and rolls onto it.
    host.signal(Signal::SIGHUP);
    host.wait_for_log("generation 2 complete", 1);
    assert_eq!(host.get("/").text(), "Hello, World!");
    host.signal(Signal::SIGTERM);
    assert_eq!(host.wait_exit().code(), Some(0));
}

#[test]
fn workers_hold_no_master_only_descriptors() {
    let app = app_arg("hello");
    let host = Host::start(&["-w", "2", "--metrics-bind", "127.0.0.1:0", &app]);
    host.wait_for_log("ready in", 2);
    let master = host.pid();
    let workers = eventually("two workers", || {
        let children = host.children();
        (children.len() == 2).then_some(children)
    });
    let master_masks = signalfd_masks(master);
    assert_eq!(master_masks.len(), 1, "the master's signalfd");
    let master_sockets = targets(master, "socket:");
    assert_eq!(
        master_sockets.len(),
        3,
        "the master holds the listener, the metrics listener and the control socket"
    );
    for &worker in &workers {
        assert!(
            !signalfd_masks(worker).contains(&master_masks[0]),
            "worker {worker} holds the master's signalfd"
        );
        let shared: Vec<_> = targets(worker, "socket:")
            .intersection(&master_sockets)
            .cloned()
            .collect();
        assert_eq!(
            shared.len(),
            1,
            "worker {worker} shares only the listener with the master: {shared:?}"
        );
    }
    // A worker's standard output and error are its pipes to the master; no
    // other worker holds the master's end of them.
    for (&worker, &other) in [(&workers[0], &workers[1]), (&workers[1], &workers[0])] {
        let own: BTreeSet<String> = descriptors(other)
            .into_iter()
            .filter(|(fd, _)| fd == "1" || fd == "2")
            .map(|(_, target)| target)
            .collect();
        assert!(own.iter().all(|t| t.starts_with("pipe:")), "{own:?}");
        let held: Vec<_> = targets(worker, "pipe:")
            .intersection(&own)
            .cloned()
            .collect();
        assert!(
            held.is_empty(),
            "worker {worker} holds the master's end of worker {other}'s output pipes: {held:?}"
        );
    }
}

#[test]
fn a_process_started_by_init_does_not_hold_up_the_probe() {
    let app = app_arg("crash");
    let mut host = Host::spawn_env(
        &["--boot-timeout", "10", &app],
        &[("CRASH_INIT_SPAWN", "sleep 20")],
    );
    // The probe's init leaves `sleep 20` running; its report pipe must not
    // stay open in it, or the master waits for the sleep and refuses the app.
    host.wait_listening_addr();
    host.wait_for_log("ready in", 1);
    assert_eq!(host.get("/").text(), "ok\n");
    assert!(Path::new("/proc").join(host.pid().to_string()).exists());
}

/// A stop asked for while a worker is being set up waits for the worker to
/// read it: the worker's signals stay blocked from the fork on, so `TERM`
/// never kills it by the default action (it did, between the reset of its
/// signal mask and its signalfd, and was logged as an error).
#[test]
fn a_stop_during_a_workers_signal_setup_is_graceful() {
    let scratch = Scratch::new("signal-setup");
    let switch = scratch.join("pause");
    std::fs::write(&switch, b"").unwrap();
    let fault = format!("worker-signals-pause:{}", switch.display());
    let app = app_arg("hello");
    let mut host = Host::spawn_env(&["-w", "1", &app], &[("HOST_FAULT", &fault)]);
    host.wait_listening_addr();
    host.wait_for_log("fault worker-signals-pause: paused", 1);
    host.signal(Signal::SIGTERM);
    host.wait_for_log("SIGTERM: shutting down", 1);
    std::fs::remove_file(&switch).unwrap();
    assert_eq!(host.wait_exit().code(), Some(0), "{:#?}", host.log_lines());
    assert_eq!(
        host.count_log("killed by SIGTERM"),
        0,
        "{:#?}",
        host.log_lines()
    );
}
