//! `--panic-policy`: after a panic (answered 500 either way) a worker is
//! replaced gracefully (`retire`, the default), finishing the requests it
//! holds, or serves on (`serve`); panics and app errors are counted in
//! `/metrics`.

use std::thread;

use tests::{eventually, metrics_addr, sample, Host, Scratch};

/// The pid a worker answers `/` with.
fn pid_of(host: &Host) -> String {
    host.get("/").text()
}

/// The value of `name` in `/metrics` at `maddr`, once it reaches `at_least`.
fn metric_reaches(maddr: std::net::SocketAddr, name: &str, at_least: f64) -> f64 {
    eventually(&format!("{name} to reach {at_least}"), || {
        let metrics = tests::get(maddr, "/metrics").text();
        sample(&metrics, &format!("{name} ")).filter(|&n| n >= at_least)
    })
}

#[test]
fn retire_replaces_the_worker_and_finishes_what_it_holds() {
    let maddr = metrics_addr();
    let m = maddr.to_string();
    let host = Host::app(
        "rules",
        &["-w", "1", "--threads", "2", "--metrics-bind", &m],
    );
    host.wait_for_log("ready in", 1);
    let old = pid_of(&host);
    // A request in flight on the worker that will panic.
    let scratch = Scratch::new("panic-retire");
    let (started, release) = (scratch.file("started"), scratch.file("release"));
    let addr = host.addr();
    let request = format!(
        "GET /wait HTTP/1.1\r\nHost: t\r\nX-Started-File: {started}\r\nX-Wait-File: {release}\r\nConnection: close\r\n\r\n"
    );
    let in_flight = thread::spawn(move || tests::raw(addr, request.as_bytes()));
    eventually("the request to be in the app", || {
        std::path::Path::new(&started).exists().then_some(())
    });

    let resp = host.get("/panic");
    assert_eq!(resp.status, 500);
    assert_eq!(
        resp.header("connection"),
        Some("close"),
        "the retiring worker's last response on that connection"
    );
    host.wait_for_log("app panicked: rules boom", 1);
    host.wait_for_log("retires because the app panicked", 1);
    host.wait_for_log("asks to be replaced: the app panicked", 1);
    // The retiring worker takes nothing new: the next request is the new worker's.
    let new = pid_of(&host);
    assert_ne!(new, old, "a new worker serves after the panic");
    assert_eq!(metric_reaches(maddr, "host_app_panics_total", 1.0), 1.0);

    // The request it held is answered, by the old worker, before it leaves.
    std::fs::write(&release, b"").unwrap();
    let reply = in_flight.join().expect("the in-flight client");
    let resps = tests::parse_responses(&reply);
    assert_eq!(resps.len(), 1, "{:?}", String::from_utf8_lossy(&reply));
    assert_eq!((resps[0].status, resps[0].text()), (200, old.clone()));
    host.wait_for_log("retiring worker 1", 1);
    assert_eq!(pid_of(&host), new);
    assert_eq!(host.count_log("killed by"), 0, "{:#?}", host.log_lines());
}

#[test]
fn serve_keeps_the_worker() {
    let host = Host::app("rules", &["-w", "1", "--panic-policy", "serve"]);
    host.wait_for_log("ready in", 1);
    let old = pid_of(&host);
    let resp = host.get("/panic");
    assert_eq!(resp.status, 500);
    host.wait_for_log("app panicked: rules boom", 1);
    assert_eq!(pid_of(&host), old);
    assert_eq!(pid_of(&host), old);
    assert_eq!(host.count_log("retires because"), 0);
    assert_eq!(host.count_log("ready in"), 1, "the worker was not replaced");
}

#[test]
fn metrics_count_panics_and_app_errors() {
    let maddr = metrics_addr();
    let m = maddr.to_string();
    let host = Host::app(
        "rules",
        &["-w", "1", "--panic-policy", "serve", "--metrics-bind", &m],
    );
    assert_eq!(host.get("/panic").status, 500);
    assert_eq!(host.get("/error").status, 500);
    assert_eq!(host.get("/error").status, 500);
    assert_eq!(metric_reaches(maddr, "host_app_errors_total", 2.0), 2.0);
    assert_eq!(metric_reaches(maddr, "host_app_panics_total", 1.0), 1.0);
    let json = tests::get(maddr, "/status.json").json();
    assert_eq!(json["app_panics"], 1, "{json}");
    assert_eq!(json["app_errors"], 2, "{json}");
}

/// The source of an app built with `panic = "abort"`: its own workspace,
/// so its profile can say so (the profile is per workspace).
const ABORT_APP: &str = r#"
use app_sdk::{export_app, App, Request, Response};

struct Abort;

impl App for Abort {
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
        if req.path() == "/panic" {
            panic!("abort boom");
        }
        resp.body("ok\n")?;
        Ok(())
    }
}

export_app!(app = Abort);
"#;

/// An app built with `panic = "abort"` is warned about once, when the probe loads
/// it, and its panic (which kills the worker: no 500 is possible) reaches
/// the log with its message, printed by Rust's own hook.
#[test]
#[ignore = "needs cargo, and builds an app with its dependencies (a minute or two the first time)"]
fn an_app_built_with_panic_abort_is_warned_about_and_its_panic_logged() {
    tests::require_tool("cargo", "--version");
    let scratch = Scratch::new("panic-abort-app");
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../app-sdk");
    let manifest = format!(
        "[package]\nname = \"abortapp\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\napp-sdk = {{ path = {:?} }}\n\n\
         [workspace]\n\n[profile.dev]\npanic = \"abort\"\n",
        sdk.display().to_string()
    );
    std::fs::create_dir_all(scratch.join("src")).unwrap();
    std::fs::write(scratch.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(scratch.join("src/lib.rs"), ABORT_APP).unwrap();
    // The workspace's lock file: the same dependency versions, all in the local cache.
    let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    std::fs::copy(lock, scratch.join("Cargo.lock")).unwrap();
    // A target directory of its own inside the shared one: kept between
    // runs, so only the first builds the dependencies.
    let target = tests::target_dir().join("panic-abort-app");
    let status = std::process::Command::new("cargo")
        .args(["build", "--offline", "--quiet", "--manifest-path"])
        .arg(scratch.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build of the panic=abort app");
    let lib = target.join("debug/libabortapp.so");
    let app = format!("{}:app", lib.display());

    let host = Host::start(&["-w", "1", &app]);
    host.wait_for_log("was built with panic = \"abort\"", 1);
    assert_eq!(host.get("/").text(), "ok\n");
    let reply = tests::raw(
        host.addr(),
        b"GET /panic HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(
        tests::parse_responses(&reply).is_empty(),
        "a worker killed by the panic answers nothing: {:?}",
        String::from_utf8_lossy(&reply)
    );
    host.wait_for_log("abort boom", 1);
    host.wait_for_log("killed by SIGABRT", 1);
    // Replaced; the warning is the build's, logged once (by the probe).
    host.wait_for_log("ready in", 2);
    assert_eq!(host.get("/").text(), "ok\n");
    assert_eq!(host.count_log("was built with panic = \"abort\""), 1);
}
