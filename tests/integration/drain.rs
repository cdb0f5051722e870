//! Stopping without dropping anyone (issue 16 §4): `--drain-delay` keeps
//! serving while `/ready` tells load balancers to go, and a graceful stop
//! serves the connections already in the kernel's accept queue instead of
//! resetting them when the last listener copy closes.

use std::{
    collections::BTreeSet,
    io::Write,
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
};

use nix::sys::signal::Signal;
use tests::{
    app_arg, connect, eventually, free_port, get, metrics_addr, nginx::Nginx, parse_responses,
    read_response, read_to_close, sample, Host, Scratch,
};

/// `GET /ready` on the status endpoint at `maddr`: (status, body).
fn ready(maddr: SocketAddr) -> (u16, String) {
    let r = get(maddr, "/ready");
    (r.status, r.text())
}

#[test]
fn term_with_a_drain_delay_answers_503_on_ready_and_keeps_serving_then_exits_0() {
    let maddr = metrics_addr();
    let m = maddr.to_string();
    let mut host = Host::app("echo", &["--drain-delay", "3", "--metrics-bind", &m]);
    host.wait_for_log("ready in", 1);
    eventually("/ready to answer 200", || {
        (ready(maddr).0 == 200).then_some(())
    });
    // A keep-alive connection made before the TERM.
    let mut kept = connect(host.addr());
    let request = b"GET /kept HTTP/1.1\r\nHost: t\r\n\r\n";
    kept.write_all(request).unwrap();
    assert_eq!(read_response(&mut kept).status, 200);

    host.signal(Signal::SIGTERM);
    host.wait_for_log(
        "SIGTERM: draining for 3 s (/ready answers 503), then stopping (graceful, up to 30 s)",
        1,
    );
    // At once: the log line comes after the flag is set.
    let (status, body) = ready(maddr);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    // Meanwhile the app answers as usual: on the kept connection (kept
    // alive), and on a new one.
    kept.write_all(request).unwrap();
    let resp = read_response(&mut kept);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), None, "{:?}", resp.headers);
    assert_eq!(host.get("/new").status, 200);

    assert_eq!(host.wait_exit().code(), Some(0));
    assert_eq!(host.count_log("drain over: shutting down (graceful"), 1);
    assert_eq!(host.count_log("shutdown complete"), 1);
}

#[test]
fn a_second_term_ends_the_drain_at_once() {
    let mut host = Host::app("hello", &["--drain-delay", "600"]);
    host.wait_for_log("ready in", 1);
    host.signal(Signal::SIGTERM);
    host.wait_for_log("SIGTERM: draining for 600 s", 1);
    host.signal(Signal::SIGTERM);
    // Far sooner than 600 s: the wait gives up after 30.
    assert_eq!(host.wait_exit().code(), Some(0));
    assert_eq!(host.count_log("SIGTERM again while draining"), 1);
}

#[test]
fn quit_during_the_drain_stops_quickly() {
    let mut host = Host::app("hello", &["--drain-delay", "600"]);
    host.wait_for_log("ready in", 1);
    host.signal(Signal::SIGTERM);
    host.wait_for_log("SIGTERM: draining for 600 s", 1);
    host.signal(Signal::SIGQUIT);
    assert_eq!(host.wait_exit().code(), Some(0));
    assert_eq!(host.count_log("SIGQUIT: shutting down (quick"), 1);
}

#[test]
fn the_service_manager_hears_stopping_at_the_term() {
    let dir = Scratch::new("drain-notify");
    let path = dir.join("notify.sock");
    let manager = tests::ServiceManager::bind(&path);
    let next = || manager.next();
    let app = app_arg("hello");
    let mut host = Host::spawn_env(
        &["--drain-delay", "600", &app],
        &[("NOTIFY_SOCKET", manager.path())],
    );
    host.wait_listening_addr();
    assert!(next().starts_with("READY=1\n"));
    host.signal(Signal::SIGTERM);
    // At the TERM, not when the delay ends.
    assert_eq!(next(), "STOPPING=1\nSTATUS=draining for 600 s");
    host.signal(Signal::SIGTERM);
    assert_eq!(next(), "STATUS=stopping (graceful)");
    assert_eq!(host.wait_exit().code(), Some(0));
}

/// Sends `GET target` on a new connection and returns it.
fn send(addr: SocketAddr, target: &str) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    s
}

/// With its only worker(s) busy, `queued` connections that sent a whole
/// request wait in the accept queue when TERM comes: each gets its whole
/// response (with `Connection: close`), none a reset. `args` adds to `-w 1`.
fn queued_connections_are_served_on_term(args: &[&str], busy: usize, queued: usize) {
    let maddr = metrics_addr();
    let m = maddr.to_string();
    let mut all = vec!["-w", "1", "--log-level", "debug", "--metrics-bind", &m];
    all.extend_from_slice(args);
    let mut host = Host::app("slow", &all);
    host.wait_for_log("ready in", 1);
    // Occupy every handler with a long request (the queue below must be
    // made in far less time than this).
    let occupiers: Vec<TcpStream> = (0..busy).map(|_| send(host.addr(), "/?ms=5000")).collect();
    host.wait_for_log("handling \"GET /?ms=5000\"", busy);
    let waiting: Vec<TcpStream> = (0..queued)
        .map(|i| send(host.addr(), &format!("/?ms=10&n={i}")))
        .collect();
    eventually("the connections to wait in the accept queue", || {
        let metrics = get(maddr, "/metrics").text();
        let line = format!("host_listen_queue{{listener=\"http://{}\"}}", host.addr());
        let n = sample(&metrics, &line)?;
        (n as usize >= queued).then_some(())
    });
    host.signal(Signal::SIGTERM);
    for (i, mut s) in occupiers.into_iter().chain(waiting).enumerate() {
        let reply = read_to_close(&mut s);
        let resps = parse_responses(&reply);
        assert_eq!(
            resps.len(),
            1,
            "connection {i}: {:?}",
            String::from_utf8_lossy(&reply)
        );
        assert_eq!(resps[0].status, 200);
        assert_eq!(resps[0].header("connection"), Some("close"));
    }
    assert_eq!(host.wait_exit().code(), Some(0));
    assert!(
        host.count_log("queued connection(s)") >= 1,
        "no worker said it took the queue"
    );
}

#[test]
fn the_accept_queue_is_served_on_a_graceful_stop() {
    queued_connections_are_served_on_term(&[], 1, 6);
}

#[test]
fn the_accept_queue_is_served_on_a_graceful_stop_of_a_threaded_worker() {
    queued_connections_are_served_on_term(&["--threads", "2"], 2, 6);
}

/// nginx in front of the host instances on `upstreams`: keep-alive to
/// them, and the default `proxy_next_upstream error timeout` (a GET that
/// meets a refused or reset connection goes to the next instance).
fn start_nginx(listen: u16, upstreams: &[u16]) -> Nginx {
    let http = tests::nginx::upstream_http(listen, upstreams, "proxy_next_upstream error timeout;");
    Nginx::start(Scratch::new("nginx-drain"), listen, 512, &http)
}

/// One POST through nginx on a keep-alive connection: the pid of the
/// worker that answered and whether nginx closes the connection after it,
/// or why it failed.
///
/// A POST, not a GET: nginx passes a GET that met a reset connection on to
/// the next instance, which would hide a reset; it never retries a POST it
/// has sent (without `non_idempotent`), so one reset is one failure (a 502).
/// Before the workers took their accept queue on a stop, about one run in
/// four of the test below failed that way.
fn through_nginx(stream: &mut TcpStream) -> Result<(i32, bool), String> {
    let request = b"POST /drain HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi";
    tests::nginx::echo_through(stream, request).map(|(pid, close)| (pid as i32, close))
}

/// Instances A and B behind nginx, 4 clients posting through it; A gets a
/// TERM with `--drain-delay 2`: it serves through the delay, then closes
/// its listeners (nginx moves to B on the refused connections) and serves
/// what it holds. No request fails.
#[test]
#[ignore = "needs nginx"]
fn a_draining_instance_behind_nginx_fails_no_request() {
    tests::require_tool("nginx", "-v");
    let (port_a, port_b, port_n) = (free_port(), free_port(), free_port());
    let instance = |port: u16, extra: &[&str]| {
        let bind = format!("127.0.0.1:{port}");
        let app = app_arg("echo");
        let mut args = vec!["-w", "2", "-b", &bind];
        args.extend_from_slice(extra);
        args.push(&app);
        let host = Host::start(&args);
        host.wait_for_log("ready in", 2);
        host
    };
    let mut a = instance(port_a, &["--drain-delay", "2"]);
    let _b = instance(port_b, &[]);
    let _nginx = start_nginx(port_n, &[port_a, port_b]);
    let front: SocketAddr = format!("127.0.0.1:{port_n}").parse().unwrap();
    let a_pids: BTreeSet<i32> = a.children().into_iter().collect();

    let stop = Arc::new(AtomicBool::new(false));
    let draining = Arc::new(AtomicBool::new(false));
    let (ok, by_a_draining) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, draining, ok, by_a_draining, failures, a_pids) = (
                stop.clone(),
                draining.clone(),
                ok.clone(),
                by_a_draining.clone(),
                failures.clone(),
                a_pids.clone(),
            );
            thread::spawn(move || {
                let mut stream = connect(front);
                while !stop.load(Ordering::Relaxed) {
                    match through_nginx(&mut stream) {
                        Ok((pid, close)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if draining.load(Ordering::Relaxed) && a_pids.contains(&pid) {
                                by_a_draining.fetch_add(1, Ordering::Relaxed);
                            }
                            if close {
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

    let flowing = |what: &str| {
        let before = ok.load(Ordering::Relaxed);
        eventually(what, || {
            (ok.load(Ordering::Relaxed) > before + 50).then_some(())
        });
    };
    flowing("requests flowing through nginx");
    draining.store(true, Ordering::Relaxed);
    let before = ok.load(Ordering::Relaxed);
    a.signal(Signal::SIGTERM);
    a.wait_for_log("SIGTERM: draining for 2 s", 1);
    assert_eq!(a.wait_exit().code(), Some(0));
    draining.store(false, Ordering::Relaxed);
    let during = ok.load(Ordering::Relaxed) - before;
    flowing("requests flowing after A stopped");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let served_by_a = by_a_draining.load(Ordering::Relaxed);
    eprintln!(
        "drain behind nginx: {during} requests from TERM to A's exit, {served_by_a} of them by A; {} failed; {} in all",
        failures.len(),
        ok.load(Ordering::Relaxed)
    );
    assert!(
        failures.is_empty(),
        "{} failed requests through nginx: {failures:?}",
        failures.len()
    );
    // A served during its drain delay (it was not taken out at the TERM).
    assert!(served_by_a > 0, "A served nothing during its drain");
}
