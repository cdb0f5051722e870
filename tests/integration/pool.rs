//! The adaptive pool: `-w 1 --workers-max 4` grows under load and shrinks
//! back when idle. These check structure (it grows, it shrinks), not speed.

use std::thread;

use tests::{eventually, parse_responses, raw, Host};

#[test]
fn the_pool_grows_under_load_and_shrinks_when_idle() {
    let host = Host::app(
        "slow",
        &["-w", "1", "--workers-max", "4", "--idle-timeout", "1"],
    );
    host.wait_for_log("ready in", 1);
    let addr = host.addr();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                raw(
                    addr,
                    b"GET /?ms=1500 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                )
            })
        })
        .collect();
    host.wait_for_log("growing the pool to", 1);
    for c in clients {
        let reply = c.join().unwrap();
        assert_eq!(parse_responses(&reply)[0].text(), "slept 1500 ms\n");
    }
    assert!(host.count_log("ready in") >= 2, "the pool grew");
    host.wait_for_log("shrinking the pool to 1", 1);
    eventually("one worker left", || {
        (host.children().len() == 1).then_some(())
    });
}

#[test]
fn workers_max_below_workers_is_refused() {
    let app = tests::app_arg("hello");
    let mut host = Host::spawn(&["-w", "4", "--workers-max", "2", &app]);
    assert_eq!(host.wait_exit().code(), Some(2));
    assert!(host.log_lines().iter().any(|l| l.contains("--workers-max")));
}

#[test]
fn a_busy_worker_lets_waiting_clients_go_to_an_idle_one() {
    use std::io::Write;
    // One worker holds four keep-alive clients, each asking for 500 ms.
    let host = Host::app("slow", &["-w", "1"]);
    host.wait_for_log("ready in", 1);
    let addr = host.addr();
    let mut streams: Vec<_> = (0..4).map(|_| tests::connect(addr)).collect();
    // The only worker accepts all four: each has been answered once (a
    // connection is accepted once its first bytes arrive).
    for s in &mut streams {
        s.write_all(b"GET /?ms=0 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(tests::read_response(s).status, 200);
    }
    for s in &mut streams {
        s.write_all(b"GET /?ms=500 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
    }
    // A second worker joins while they wait in line.
    host.signal(nix::sys::signal::Signal::SIGTTIN);
    host.wait_for_log("ready in", 2);
    let replies: Vec<_> = streams
        .into_iter()
        .map(|mut s| thread::spawn(move || tests::read_response(&mut s)))
        .collect();
    let responses: Vec<_> = replies.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(responses.iter().all(|r| r.status == 200));
    // The busy worker answers clients that waited with `Connection: close`
    // while the new one idles, so they would reconnect to it.
    assert!(
        responses
            .iter()
            .any(|r| r.header("connection") == Some("close")),
        "{:?}",
        responses
            .iter()
            .map(|r| r.header("connection"))
            .collect::<Vec<_>>()
    );
}
