//! Slow and idle clients: deadlines, the per-worker connection cap, and
//! slow-loris clients that must not hold up anyone else.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use tests::{connect, parse_responses, read_response, read_to_close, Host};

#[test]
fn a_head_not_finished_in_time_gets_408() {
    let host = Host::app("hello", &["--header-timeout", "1"]);
    let mut s = connect(host.addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    let reply = read_to_close(&mut s);
    let resps = parse_responses(&reply);
    assert_eq!(resps.len(), 1, "{:?}", String::from_utf8_lossy(&reply));
    assert_eq!(resps[0].status, 408);
    assert_eq!(resps[0].header("connection"), Some("close"));
}

#[test]
fn a_body_not_sent_in_time_gets_408_and_never_reaches_the_app() {
    let host = Host::app("echo", &["--header-timeout", "1"]);
    let mut s = connect(host.addr());
    s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let resps = parse_responses(&read_to_close(&mut s));
    assert_eq!(resps.len(), 1);
    assert_eq!(resps[0].status, 408);
}

#[test]
fn slow_loris_clients_do_not_delay_a_normal_request() {
    let host = Host::app("hello", &["-w", "2"]);
    host.wait_for_log("ready in", 2);
    // 60 clients that each send a byte of their head now and then, and never finish.
    let mut lorises: Vec<_> = (0..60).map(|_| connect(host.addr())).collect();
    for s in &mut lorises {
        s.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let dripping = Arc::clone(&stop);
    let drip = thread::spawn(move || {
        while !dripping.load(Ordering::Relaxed) {
            for s in &mut lorises {
                s.write_all(b"a").expect("a slow client was dropped");
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    // Normal requests are answered while every slow client still holds its
    // half-sent head: a worker that waited on one would never answer (the
    // read timeout would fail the test).
    for _ in 0..20 {
        assert_eq!(host.get("/").status, 200);
    }
    assert!(!drip.is_finished(), "the slow clients are still sending");
    stop.store(true, Ordering::Relaxed);
    drip.join().unwrap();
}

#[test]
fn worker_connections_caps_what_one_worker_holds() {
    let host = Host::app("hello", &["--worker-connections", "2"]);
    let mut held: Vec<_> = (0..2)
        .map(|_| {
            let mut s = connect(host.addr());
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            assert_eq!(read_response(&mut s).status, 200);
            s
        })
        .collect();
    host.wait_for_log("pausing accept", 1);
    // A third connection waits in the listen queue, unanswered...
    let mut third = connect(host.addr());
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        std::io::Read::read(&mut third, &mut buf).is_err(),
        "the capped worker must not take a third connection"
    );
    // ...until a held one closes.
    held.pop();
    third.set_read_timeout(Some(tests::READ_TIMEOUT)).unwrap();
    assert_eq!(read_response(&mut third).status, 200);
    drop(held);
}

#[test]
fn a_silent_connection_takes_no_worker_slot_until_it_sends() {
    // One connection per worker. A client that connects and says nothing
    // is held back by the kernel (`--defer-accept`), so the next client's
    // request is answered at once instead of after --header-timeout.
    let host = Host::app(
        "hello",
        &[
            "--worker-connections",
            "1",
            "--defer-accept",
            "5",
            "--header-timeout",
            "60",
        ],
    );
    let mut silent = connect(host.addr());
    let mut next = connect(host.addr());
    next.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut next).status, 200);
    // The silent one is served too once it speaks (whether or not its
    // deferral ran out meanwhile).
    silent
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut silent).status, 200);
}

#[test]
fn a_client_that_waits_before_sending_is_still_served() {
    // Past the kernel's deferral (1 s by default) the connection is handed
    // over anyway; with --defer-accept 0 it is taken at once.
    for flags in [&[][..], &["--defer-accept", "0"][..]] {
        let host = Host::app("hello", flags);
        let mut s = connect(host.addr());
        thread::sleep(Duration::from_millis(1500));
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s).status, 200, "{flags:?}");
    }
}
