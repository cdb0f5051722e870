//! Builds and reloads: HUP and --reload roll workers onto a new build without
//! failing a request; a broken build is refused; recycling and timeouts.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
};

use nix::sys::signal::Signal;
use tests::{app_lib, connect, eventually, install, parse_one, Host, Scratch};

/// Which build answered: the `echo` build answers JSON, the `hello` build text.
fn which_build(body: &[u8]) -> &'static str {
    if body.starts_with(b"{") {
        "echo"
    } else {
        "hello"
    }
}

/// Clients that send requests over keep-alive connections until stopped.
///
/// Like every HTTP client (RFC 9112 §9.3.1), a client retries a request once
/// on a new connection when a reused idle connection turns out closed before
/// any byte of a response arrived; anything else is a failure.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    last_build: Arc<Mutex<&'static str>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let last_build = Arc::new(Mutex::new(""));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failures, last_build) = (
                    stop.clone(),
                    ok.clone(),
                    failures.clone(),
                    last_build.clone(),
                );
                thread::spawn(move || {
                    let mut conn: Option<std::net::TcpStream> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let reused = conn.is_some();
                        let stream = conn.get_or_insert_with(|| connect(addr));
                        match one_request(stream) {
                            Ok((body, close)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                *last_build.lock().unwrap() = which_build(&body);
                                if close {
                                    conn = None;
                                }
                            }
                            Err((received, e)) => {
                                conn = None;
                                if !(reused && received == 0) {
                                    failures.lock().unwrap().push(e);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            last_build,
            threads,
        }
    }

    fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// One GET on `stream`: the body and whether the server closes; or the bytes
/// received before the failure and what went wrong.
fn one_request(stream: &mut std::net::TcpStream) -> Result<(Vec<u8>, bool), (usize, String)> {
    use std::io::Read;
    stream
        .write_all(b"GET /load HTTP/1.1\r\nHost: t\r\n\r\n")
        .map_err(|e| (0, format!("send: {e}")))?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some((resp, _)) = parse_one(&data) {
            if resp.status != 200 {
                return Err((data.len(), format!("status {}", resp.status)));
            }
            let close = resp.header("connection") == Some("close");
            return Ok((resp.body, close));
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err((data.len(), "closed before a response".into())),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) => return Err((data.len(), format!("read: {e}"))),
        }
    }
}

#[test]
fn hup_swaps_builds_under_load_without_failing_a_request() {
    let dir = Scratch::new("hup");
    let lib = dir.join("libapp.so");
    install(&app_lib("hello"), &lib);
    let spec = format!("{}:app", lib.display());
    let host = Host::start(&["-w", "2", &spec]);
    host.wait_for_log("ready in", 2);
    let load = Load::start(host.addr(), 4);
    let builds = [
        app_lib("echo"),
        app_lib("hello"),
        app_lib("echo"),
        app_lib("hello"),
    ];
    for (i, build) in builds.iter().enumerate() {
        install(build, &lib);
        host.signal(Signal::SIGHUP);
        let want = which_build(if i % 2 == 0 { b"{" } else { b"H" });
        host.wait_for_log(&format!("generation {}: build", i + 2), 1);
        eventually(&format!("switch {} to the {want} build", i + 1), || {
            let body = host.get("/").body;
            (which_build(&body) == want && *load.last_build.lock().unwrap() == want).then_some(())
        });
    }
    let (ok, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}",
        failures.len()
    );
    assert!(ok > 100, "only {ok} requests were made");
}

#[test]
fn broken_build_is_refused_and_the_old_one_keeps_serving() {
    let dir = Scratch::new("garbage");
    let lib = dir.join("libapp.so");
    install(&app_lib("hello"), &lib);
    let spec = format!("{}:app", lib.display());
    let host = Host::start(&["-w", "2", &spec]);
    host.wait_for_log("ready in", 2);
    let garbage = dir.join("garbage.so");
    std::fs::write(&garbage, vec![0x7fu8, b'E', b'L', b'F', 0, 1, 2, 3]).unwrap();
    install(&garbage, &lib);
    host.signal(Signal::SIGHUP);
    host.wait_for_log("refused", 1);
    let line = host
        .log_lines()
        .into_iter()
        .find(|l| l.contains("refused"))
        .unwrap();
    assert!(line.contains("not a loadable library"), "{line}");
    assert!(line.contains("generation 1"), "{line}");
    // Still served by the first build, with no worker replaced.
    for _ in 0..10 {
        assert_eq!(host.get("/").text(), "Hello, World!");
    }
    assert_eq!(host.count_log("ready in"), 2);
    // A build against an incompatible SDK is refused the same way.
    install(&app_lib("abi-mismatch"), &lib);
    host.signal(Signal::SIGHUP);
    host.wait_for_log("refused", 2);
    assert_eq!(host.get("/").text(), "Hello, World!");
}

#[test]
fn reload_picks_up_a_cargo_build() {
    let target = tests::target_dir().parent().unwrap().join("reload-test");
    let build = |greeting: &str| {
        let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args(["build", "-p", "hello", "--target-dir"])
            .arg(&target)
            .env("HELLO_GREETING", greeting)
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build failed");
    };
    build("first build");
    let lib = target.join("debug/libhello.so");
    let spec = format!("{}:app", lib.display());
    let host = Host::start(&["--reload", "-w", "2", &spec]);
    host.wait_for_log("ready in", 2);
    assert_eq!(host.get("/").text(), "first build");
    let load = Load::start(host.addr(), 2);
    build("second build");
    host.wait_for_log("changed; reloading", 1);
    eventually("the second build to serve", || {
        (host.get("/").text() == "second build").then_some(())
    });
    let (_, failures) = load.stop();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
}

#[test]
fn max_requests_recycles_the_worker() {
    let host = Host::app("echo", &["--max-requests", "3"]);
    let first = host.get("/").json()["pid"].as_i64().unwrap();
    host.get("/");
    host.get("/");
    host.wait_for_log("asks to be replaced: it reached --max-requests", 1);
    host.wait_for_log("ready in", 2);
    host.wait_for_log(&format!("(pid {first}) exited with status 0"), 1);
    eventually("a new worker to serve", || {
        (host.get("/").json()["pid"].as_i64().unwrap() != first).then_some(())
    });
}

#[test]
fn memory_limit_recycles_the_worker() {
    // Any worker uses more than 1 MiB.
    let host = Host::app("echo", &["--max-worker-memory", "1"]);
    let first = host.get("/").json()["pid"].as_i64().unwrap();
    eventually("the worker to ask for a replacement", || {
        host.get("/");
        (host.count_log("its memory passed --max-worker-memory") > 0).then_some(())
    });
    host.wait_for_log(&format!("(pid {first}) exited with status 0"), 1);
}

#[test]
fn timeout_answers_504_and_replaces_the_worker() {
    let host = Host::app("slow", &["--timeout", "1"]);
    host.wait_for_log("ready in", 1);
    let resp = host.get("/?ms=20000");
    assert_eq!(resp.status, 504);
    host.wait_for_log("timed out: \"GET /?…\"", 1);
    // The worker itself says where it was before it exits.
    host.wait_for_log("timed out handling \"GET /?…\"; answered 504", 1);
    host.wait_for_log("ready in", 2);
    assert_eq!(host.get("/?ms=1").text(), "slept 1 ms\n");
}

#[test]
fn chain_reload_replaces_one_worker_at_a_time() {
    let host = Host::app(
        "hello",
        &[
            "-w",
            "3",
            "--reload-strategy",
            "chain",
            "--log-level",
            "debug",
        ],
    );
    host.wait_for_log("ready in", 3);
    host.signal(Signal::SIGHUP);
    host.wait_for_log("generation 2 complete: 3 worker(s)", 1);
    // In a chain, each new worker boots only after the previous old one was retired.
    let lines = host.log_lines();
    let events: Vec<&str> = lines
        .iter()
        .filter_map(|l| {
            if l.contains("booting worker") && l.contains("generation 2") {
                Some("boot")
            } else if l.contains("retiring worker") {
                Some("retire")
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        events,
        ["boot", "retire", "boot", "retire", "boot", "retire"],
        "{lines:#?}"
    );
}

#[test]
fn workers_that_fail_to_boot_after_a_hup_are_abandoned_while_the_old_ones_serve() {
    let dir = Scratch::new("bootfail");
    let flag = dir.join("fail-init");
    let app = tests::app_arg("crash");
    let mut host = Host::spawn_env(
        &["-w", "2", &app],
        &[("CRASH_INIT_FAIL", flag.to_str().unwrap())],
    );
    let addr = host.wait_listening_addr();
    host.wait_for_log("ready in", 2);
    std::fs::write(&flag, "").unwrap();
    host.signal(Signal::SIGHUP);
    // None of its workers booted: given up at its first failure. The same
    // bytes as the running build: not marked bad.
    host.wait_for_log(
        "abandoned after 1 failure(s), none of its workers ever booted",
        1,
    );
    host.wait_for_log("(the same bytes: not marked bad)", 1);
    // The first generation still serves every request.
    for _ in 0..5 {
        let bytes = tests::raw(
            addr,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(tests::parse_responses(&bytes)[0].text(), "ok\n");
    }
    // Once the cause is gone, a HUP rolls the same build out.
    std::fs::remove_file(&flag).unwrap();
    host.signal(Signal::SIGHUP);
    host.wait_for_log("generation 3 complete: 2 worker(s)", 1);
}

#[test]
fn usr1_reopens_the_access_log() {
    let dir = Scratch::new("usr1");
    let log = dir.join("access.log");
    let host = Host::app("hello", &["--access-logfile", log.to_str().unwrap()]);
    host.get("/before");
    eventually("the first line", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.contains("/before"))
    });
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    host.signal(Signal::SIGUSR1);
    host.wait_for_log("reopening log files", 1);
    eventually("a line in the new file", || {
        host.get("/after");
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.contains("/after"))
    });
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("/after"));
}

#[test]
fn a_reload_is_complete_only_once_the_new_generation_serves() {
    let scratch = Scratch::new("complete");
    let lib = scratch.join("libapp.so");
    let deploy = |name: &str| install(&app_lib(name), &lib);
    deploy("hello");
    let app = format!("{}:app", lib.display());
    let host = Host::start(&["-w", "2", "--metrics-bind", "127.0.0.1:0", &app]);
    host.wait_for_log("generation 1 complete", 1);
    // The same build, then new builds that go through their probe.
    for (generation, name) in [(2, "hello"), (3, "echo"), (4, "hello")] {
        deploy(name);
        host.signal(Signal::SIGHUP);
        host.wait_for_log(&format!("generation {generation} complete"), 1);
    }
    // While a reload's build was probed, the old generation was not
    // "complete" again (nor was the service manager told READY=1).
    for generation in 1..=4 {
        assert_eq!(
            host.count_log(&format!("generation {generation} complete")),
            1,
            "{:#?}",
            host.log_lines()
        );
    }
}
