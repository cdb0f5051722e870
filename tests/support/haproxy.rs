//! HAProxy in front of the host as an L4 (`mode tcp`) balancer that sends
//! the PROXY protocol header, for the tests that check the host reads the
//! client's address from a real sender: one place writes the configuration
//! (a frontend on a free loopback port, one backend server with
//! `send-proxy-v2` or `send-proxy`), starts haproxy in the foreground from a
//! scratch directory, waits until it listens, and stops it when dropped.
//!
//! Being `mode tcp`, it passes TLS through untouched: the same balancer
//! fronts a `tls://` listener.
//!
//! The tests using it are `#[ignore = "needs haproxy"]` and call
//! [`crate::require_tool`]`("haproxy", "-v")` first.

use std::{
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{eventually, free_port, Scratch};

/// Which PROXY protocol header haproxy sends the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendProxy {
    /// Version 1, the text line (`send-proxy`).
    V1,
    /// Version 2, binary (`send-proxy-v2`).
    V2,
}

impl SendProxy {
    /// The `server` keyword.
    fn keyword(self) -> &'static str {
        match self {
            SendProxy::V1 => "send-proxy",
            SendProxy::V2 => "send-proxy-v2",
        }
    }
}

/// haproxy running in the foreground (`-db`) from `dir/haproxy.cfg`.
/// Dropping it stops haproxy (`SIGTERM`, its hard stop) and waits for it;
/// if the test is failing, what haproxy printed is shown first.
pub struct Haproxy {
    child: Child,
    dir: Scratch,
    addr: SocketAddr,
}

impl Haproxy {
    /// Starts haproxy with a `mode tcp` frontend on a free loopback port
    /// whose one backend server is `backend`, sent the header `send`; waits
    /// until the frontend accepts connections.
    ///
    /// Readiness is polled on a second frontend that refuses every
    /// connection (`tcp-request connection reject`), bound in the same
    /// start-up as the first, so polling sends the host nothing.
    pub fn start(dir: Scratch, backend: SocketAddr, send: SendProxy) -> Haproxy {
        let port = free_port();
        let ready = free_port();
        let conf = format!(
            "global
    maxconn 256
defaults
    mode tcp
    timeout connect 10s
    timeout client 60s
    timeout server 60s
frontend ready
    bind 127.0.0.1:{ready}
    tcp-request connection reject
frontend front
    bind 127.0.0.1:{port}
    default_backend hosts
backend hosts
    server s1 {backend} {send}
",
            send = send.keyword()
        );
        std::fs::write(dir.join("haproxy.cfg"), conf).expect("write haproxy.cfg");
        let log = std::fs::File::create(dir.join("haproxy.log")).expect("create haproxy.log");
        let child = Command::new("haproxy")
            .args(["-f", &dir.file("haproxy.cfg"), "-db"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let mut haproxy = Haproxy {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let ready = SocketAddr::from(([127, 0, 0, 1], ready));
        eventually("haproxy to listen", || {
            if let Ok(Some(status)) = haproxy.child.try_wait() {
                panic!("haproxy exited at start-up ({status})");
            }
            TcpStream::connect(ready).ok()
        });
        haproxy
    }

    /// The frontend's address: connect here to reach the host through haproxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default();
            eprintln!("--- haproxy's output:\n{log}");
        }
    }
}
