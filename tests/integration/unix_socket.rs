//! Unix socket files: `--socket-mode` and `--socket-owner` apply to the
//! socket the master bound, never to whatever its path names a moment later
//! (issue 14, item 6: a path swapped for a symlink in a shared directory made
//! a root master chmod and chown the link's target).
//!
//! The window between `bind` and setting the mode is microseconds wide; the
//! debug-only fault `unix-bind-pause` (host/src/master/fault.rs) holds the
//! master in it until the test has swapped the path, so the race is hit on
//! every run instead of once in many.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use tests::{app_arg, eventually, Host, Scratch};

/// The exit code of a bind failure (`exit_code::BIND` in the host).
const BIND_FAILED: i32 = 3;
/// The victim's mode before the attack: no one else may read it.
const VICTIM_MODE: u32 = 0o600;

/// What the victim file looked like: (mode bits, owner, group).
fn stat(path: &std::path::Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

/// Starts a host binding `unix:<scratch>/s.sock` with `extra` arguments,
/// holds it between bind and chmod, replaces the socket's path with a
/// symlink to a victim file, lets it go on, and checks that the victim is
/// untouched and that the host either serves on a socket at the path or
/// refuses to start with the bind error.
fn symlink_swap_leaves_the_victim_alone(name: &str, extra: &[&str]) {
    let scratch = Scratch::new(name);
    let victim = scratch.join("victim");
    std::fs::write(&victim, b"secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(VICTIM_MODE)).unwrap();
    let before = stat(&victim);
    let sock = scratch.join("s.sock");
    let switch = scratch.join("pause");
    std::fs::write(&switch, b"").unwrap();
    let fault = format!("unix-bind-pause:{}", switch.display());
    let bind = format!("unix:{}", sock.display());
    let app = app_arg("hello");
    let mut args = vec!["-b", &bind, "--socket-mode", "666"];
    args.extend(extra);
    args.push(&app);
    let mut host = Host::spawn_env(&args, &[("HOST_FAULT", &fault)]);
    host.wait_for_log("paused after binding", 1);
    // The attacker's move: the socket's path now names the victim.
    let link = scratch.join("link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    std::fs::rename(&link, &sock).unwrap();
    std::fs::remove_file(&switch).unwrap();
    let listening = eventually("the host to listen or give up", || {
        let lines = host.log_lines();
        if lines.iter().any(|l| l.contains("listening on unix:")) {
            Some(true)
        } else if lines.iter().any(|l| l.contains("cannot listen on")) {
            Some(false)
        } else {
            None
        }
    });
    assert_eq!(
        stat(&victim),
        before,
        "the victim's mode and owner must not change: {:#?}",
        host.log_lines()
    );
    if listening {
        let m = std::fs::symlink_metadata(&sock).unwrap();
        assert!(
            std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()),
            "the host listens on a socket file at the path, not through the link"
        );
    } else {
        assert_eq!(host.wait_exit().code(), Some(BIND_FAILED));
        let line = host
            .log_lines()
            .into_iter()
            .find(|l| l.contains("cannot listen on"))
            .unwrap();
        assert!(line.contains(&sock.display().to_string()), "{line}");
        let m = std::fs::symlink_metadata(&sock).unwrap();
        assert!(m.file_type().is_symlink(), "the link is left as it was");
    }
    // Nothing of the host's is left beside the socket (no private directory).
    drop(host);
    let mut left: Vec<String> = std::fs::read_dir(scratch.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert!(
        left.iter().all(|n| n == "victim" || n == "s.sock"),
        "left behind: {left:?}"
    );
}

#[test]
fn socket_mode_is_never_applied_through_a_swapped_symlink() {
    symlink_swap_leaves_the_victim_alone("unix-swap-mode", &[]);
}

#[test]
#[ignore = "needs root (to give the socket to another user)"]
fn socket_owner_is_never_applied_through_a_swapped_symlink() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root to change owners; run it as root (CI does) or without --include-ignored"
    );
    symlink_swap_leaves_the_victim_alone("unix-swap-owner", &["--socket-owner", "nobody"]);
}

#[test]
fn a_unix_socket_gets_its_mode_and_owner_and_no_stray_files() {
    let scratch = Scratch::new("unix-mode");
    let sock = scratch.join("a-rather-long-socket-name-for-the-test.sock");
    let bind = format!("unix:{}", sock.display());
    let host = Host::app("hello", &["-b", &bind, "--socket-mode", "640"]);
    let m = std::fs::symlink_metadata(&sock).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
    assert_eq!(m.permissions().mode() & 0o777, 0o640);
    let names: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "only the socket: {names:?}");
    drop(host);
}
