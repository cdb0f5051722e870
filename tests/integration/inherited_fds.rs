//! `fd://N` binds: a descriptor handed over at start-up is taken once, and a
//! HUP that drops and later re-adds it gets that same socket back, never
//! whatever descriptor N is by then. (Issue 13, defect 4.)

use std::{
    net::{SocketAddr, TcpListener},
    os::fd::AsRawFd,
};

use nix::sys::signal::Signal;
use tests::{app_arg, connect, free_port, inheritable, try_get, Host, Scratch};

/// The lowest descriptor number the inherited socket gets in this test
/// process (high, so it collides with nothing the test harness opens).
const INHERITED_FD_FLOOR: i32 = 500;

/// A GET of `/` on `addr`; the body.
fn get(addr: SocketAddr) -> String {
    tests::get(addr, "/").text()
}

#[test]
fn an_inherited_socket_is_taken_once_and_survives_hups() {
    let scratch = Scratch::new("fd-binds");
    let config = scratch.join("host.toml");
    let hello = app_arg("hello");
    let port = free_port();
    let write = |binds: &str| {
        std::fs::write(
            &config,
            format!("app = \"{hello}\"\nworkers = 1\nbind = [\"127.0.0.1:{port}\"{binds}]\n"),
        )
        .unwrap();
    };
    // A listening socket on a descriptor without close-on-exec, as a
    // supervisor hands one over; `host` inherits it when spawned.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let inherited_addr = listener.local_addr().unwrap();
    let duplicate = inheritable(&listener, INHERITED_FD_FLOOR);
    let fd = duplicate.as_raw_fd();
    write(&format!(", \"fd://{fd}\""));
    let config_arg = config.display().to_string();
    let host = Host::start(&["-c", &config_arg]);
    // Only `host` holds the socket now.
    drop(duplicate);
    drop(listener);
    host.wait_for_log("ready in", 1);
    assert_eq!(get(inherited_addr), "Hello, World!");

    // Dropped from the binds: no longer served.
    write("");
    host.signal(Signal::SIGHUP);
    host.wait_for_log(
        &format!("no longer listening on http://{inherited_addr}"),
        1,
    );
    host.wait_for_log("generation 2 complete", 1);

    // A descriptor that was not handed over at start-up is refused, with a
    // clear line; the running listeners stay.
    let other = fd + 1;
    write(&format!(", \"fd://{other}\""));
    host.signal(Signal::SIGHUP);
    host.wait_for_log(&format!("cannot listen on fd://{other}"), 1);
    let refused = host
        .log_lines()
        .into_iter()
        .find(|l| l.contains(&format!("cannot listen on fd://{other}")))
        .unwrap();
    assert!(refused.contains("not handed over at start-up"), "{refused}");
    host.wait_for_log("generation 3 complete", 1);
    assert_eq!(host.get("/").text(), "Hello, World!");

    // Re-added: the same socket, served again.
    write(&format!(", \"fd://{fd}\""));
    host.signal(Signal::SIGHUP);
    host.wait_for_log(&format!("listening on http://{inherited_addr}"), 2);
    host.wait_for_log("generation 4 complete", 1);
    assert_eq!(get(inherited_addr), "Hello, World!");
    assert_eq!(host.get("/").text(), "Hello, World!");
}

#[test]
fn the_status_endpoint_serves_an_inherited_socket() {
    /// Apart from the other tests' descriptors.
    const STATUS_FD_FLOOR: i32 = 700;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let status_addr = listener.local_addr().unwrap();
    let duplicate = inheritable(&listener, STATUS_FD_FLOOR);
    let metrics_bind = format!("fd://{}", duplicate.as_raw_fd());
    let host = Host::app("hello", &["--metrics-bind", &metrics_bind]);
    // Only `host` holds the socket now.
    drop(duplicate);
    drop(listener);
    host.wait_for_log("ready in", 1);
    let ready = tests::eventually("/ready on the inherited socket", || {
        try_get(connect(status_addr), "/ready").filter(|r| r.status == 200)
    });
    assert_eq!(ready.status, 200);
}
