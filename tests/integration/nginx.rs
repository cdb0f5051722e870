//! nginx in front: two host instances behind a real nginx (keep-alive
//! upstream), restarted one after the other while clients send requests
//! through nginx: no request may fail.

use std::{
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
};

use nix::sys::signal::Signal;
use tests::{app_arg, connect, eventually, free_port, nginx::Nginx, Host, Scratch};

/// nginx in front of the host instances on `upstreams` (a keep-alive
/// upstream that tries the next instance on errors), listening on `listen`.
fn start_nginx(listen: u16, upstreams: &[u16]) -> Nginx {
    let next = "proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 4;
            proxy_connect_timeout 2s;";
    let http = tests::nginx::upstream_http(listen, upstreams, next);
    Nginx::start(Scratch::new("nginx"), listen, 512, &http)
}

/// Starts one host instance on `port`, sharing it with a successor (--reuse-port).
fn instance(port: u16) -> Host {
    let bind = format!("127.0.0.1:{port}");
    let app = app_arg("echo");
    let host = Host::start(&["-w", "2", "--reuse-port", "-b", &bind, &app]);
    host.wait_for_log("ready in", 2);
    host
}

/// One GET through nginx on a keep-alive connection: the worker pid and
/// whether nginx closes the connection after it, or why it failed.
fn request(stream: &mut TcpStream) -> Result<(u64, bool), String> {
    let request = b"GET /through-nginx HTTP/1.1\r\nHost: t\r\n\r\n";
    tests::nginx::echo_through(stream, request).map(|(pid, close)| (pid as u64, close))
}

#[test]
#[ignore = "needs nginx"]
fn rolling_restart_behind_nginx_fails_no_request() {
    tests::require_tool("nginx", "-v");
    let (port_a, port_b, port_n) = (free_port(), free_port(), free_port());
    let mut a = instance(port_a);
    let mut b = instance(port_b);
    let _nginx = start_nginx(port_n, &[port_a, port_b]);
    let front: SocketAddr = format!("127.0.0.1:{port_n}").parse().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let pids = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failures, pids) =
                (stop.clone(), ok.clone(), failures.clone(), pids.clone());
            thread::spawn(move || {
                let mut stream = connect(front);
                while !stop.load(Ordering::Relaxed) {
                    match request(&mut stream) {
                        Ok((pid, close)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            pids.lock().unwrap().insert(pid);
                            if close {
                                // nginx ends a client connection after 1000 requests.
                                stream = connect(front);
                            }
                        }
                        Err(e) => {
                            failures.lock().unwrap().push(e);
                            stream = connect(front);
                        }
                    }
                }
            })
        })
        .collect();

    // Restart A, then B: the successor starts on the same port, then the old
    // instance stops gracefully.
    for (old, port) in [(&mut a, port_a), (&mut b, port_b)] {
        let before = ok.load(Ordering::Relaxed);
        eventually("requests flowing", || {
            (ok.load(Ordering::Relaxed) > before + 50).then_some(())
        });
        let successor = instance(port);
        old.signal(Signal::SIGTERM);
        assert_eq!(old.wait_exit().code(), Some(0));
        *old = successor;
    }
    let before = ok.load(Ordering::Relaxed);
    eventually("requests flowing after the restarts", || {
        (ok.load(Ordering::Relaxed) > before + 50).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests through nginx: {failures:?}",
        failures.len()
    );
    // The new instances served too (each instance has two workers).
    assert!(
        pids.lock().unwrap().len() >= 6,
        "pids seen: {:?}",
        pids.lock().unwrap()
    );
}
