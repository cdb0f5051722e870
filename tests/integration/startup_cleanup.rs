//! Start-up that fails after binding leaves nothing behind: the Unix socket
//! files the master made are removed on every way out. (Issue 13, defect 5.)

use tests::{app_arg, Host, Scratch};

#[test]
fn a_failed_start_removes_its_unix_socket() {
    let scratch = Scratch::new("startup-cleanup");
    let socket = scratch.join("app.sock");
    let bind = format!("unix:{}", socket.display());
    // The access log is opened after the listeners are bound; its directory
    // does not exist.
    let access_log = scratch.file("missing/access.log");
    let app = app_arg("hello");
    let mut host = Host::spawn(&["-b", &bind, "--access-logfile", &access_log, &app]);
    assert_eq!(host.wait_exit().code(), Some(1));
    host.wait_for_log("cannot open the access log", 1);
    assert!(
        !socket.exists(),
        "{} was left behind by a failed start",
        socket.display()
    );
}
