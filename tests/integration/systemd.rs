//! systemd: socket activation (with Debian's `systemd-socket-activate`) and
//! readiness notification (`NOTIFY_SOCKET`).

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
};

use nix::sys::signal::Signal;
use tests::{app_arg, host_bin, read_response, Host};

#[test]
#[ignore = "needs systemd-socket-activate"]
fn socket_activation_serves_on_the_socket_systemd_passes() {
    tests::require_tool("systemd-socket-activate", "--help");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new("systemd-socket-activate")
        .args(["-l", &addr])
        .arg(host_bin())
        .arg(app_arg("echo"))
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .take_while(|l| !l.contains("ready in"))
            .collect::<Vec<_>>()
    });
    // systemd-socket-activate starts the server on the first connection.
    let mut stream = tests::eventually("the activation socket", || {
        std::net::TcpStream::connect(&addr).ok()
    });
    stream.set_read_timeout(Some(tests::WAIT)).unwrap();
    stream
        .write_all(b"GET /activated HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut stream);
    assert_eq!(resp.json()["path"], "/activated");
    let lines = log.join().unwrap();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGKILL,
    );
    let _ = child.wait();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("listening on http://{addr} (socket from systemd)"))),
        "{lines:#?}"
    );
}

#[test]
fn readiness_reload_and_stop_are_notified() {
    let dir = std::env::temp_dir().join(format!("host-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let manager = tests::ServiceManager::bind(&path);
    let next = || manager.next();
    let app = app_arg("hello");
    let mut host = Host::spawn_env(&["-w", "2", &app], &[("NOTIFY_SOCKET", manager.path())]);
    host.wait_listening_addr();
    let ready = next();
    assert!(
        ready.starts_with("READY=1\nSTATUS=2 worker(s), generation 1 (build "),
        "{ready}"
    );
    host.signal(Signal::SIGHUP);
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let ready = next();
    assert!(
        ready.starts_with("READY=1\n") && ready.contains("generation 2"),
        "{ready}"
    );
    host.signal(Signal::SIGTERM);
    assert_eq!(next(), "STOPPING=1\nSTATUS=stopping (graceful)");
    assert_eq!(host.wait_exit().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
