//! A build that passes its probe but does not boot in workers (issue 14,
//! item 4): the pool never shrinks. The generation is abandoned, the old
//! build's workers keep (and refill) the pool, /status says why, the
//! unchanged file is not retried, a changed one is.

use std::net::SocketAddr;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tests::{app_lib, eventually, get, install, metrics_addr, parse_responses, raw, Host, Scratch};

/// The pids in the "worker N (pid P) ready in" lines logged so far.
fn ready_pids(host: &Host) -> Vec<i32> {
    host.log_lines()
        .iter()
        .filter(|l| l.contains("ready in"))
        .filter_map(|l| l.split_once("(pid ")?.1.split_once(')')?.0.parse().ok())
        .collect()
}

/// Workers /status.json shows serving (idle or busy) on `generation`.
fn serving_on(maddr: SocketAddr, generation: u64) -> usize {
    let status = get(maddr, "/status.json").json();
    status["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter(|w| w["generation"] == generation)
                .filter(|w| w["state"] == "idle" || w["state"] == "busy")
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_build_that_boots_only_in_the_probe_is_abandoned_and_the_pool_kept() {
    let dir = Scratch::new("badbuild");
    let lib = dir.join("app.so");
    install(&app_lib("hello"), &lib);
    // The crash build's init fails in workers (not in the probe) while this exists.
    let flag = dir.join("fail-init");
    std::fs::write(&flag, "").unwrap();
    let maddr = metrics_addr();
    let (m, app) = (maddr.to_string(), format!("{}:app", lib.display()));
    let mut host = Host::spawn_env(
        &["-w", "2", "--metrics-bind", &m, &app],
        &[("CRASH_INIT_FAIL", flag.to_str().unwrap())],
    );
    let addr = host.wait_listening_addr();
    host.wait_for_log("ready in", 2);
    let old = ready_pids(&host);
    let hello = host.get("/").text();

    install(&app_lib("crash"), &lib);
    host.signal(Signal::SIGHUP);
    host.wait_for_log("abandoned after", 1);
    let lines = host.log_lines();
    let line = lines
        .iter()
        .find(|l| l.contains("abandoned after"))
        .unwrap();
    assert!(line.contains("generation 2 (build "), "{line}");
    assert!(
        line.contains("init fails while"),
        "the worker's failure: {line}"
    );
    assert!(line.contains("back to generation 1"), "{line}");

    // The old build's workers die (a crash, an OOM kill): the pool is
    // refilled on the old build.
    for pid in &old {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    eventually("two workers of generation 1 serving again", || {
        (serving_on(maddr, 1) == 2 && ready_pids(&host).len() >= 4).then_some(())
    });
    for _ in 0..5 {
        let bytes = raw(
            addr,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(parse_responses(&bytes)[0].text(), hello);
    }
    assert_eq!(get(maddr, "/ready").status, 200);

    // /status shows the abandoned build and why; /metrics counts it.
    let status = get(maddr, "/status.json").json();
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(status["abandoned_builds"], 1, "{status}");
    let abandoned = &status["abandoned"][0];
    assert_eq!(abandoned["generation"], 2, "{status}");
    assert_eq!(abandoned["marked_bad"], true, "{status}");
    assert!(
        abandoned["reason"]
            .as_str()
            .is_some_and(|r| r.contains("init fails while")),
        "{status}"
    );
    let page = get(maddr, "/status").text();
    assert!(page.contains("abandoned builds 1"), "{page}");
    assert!(page.contains("init fails while"), "{page}");
    let metrics = get(maddr, "/metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "host_abandoned_builds_total 1"),
        "{metrics}"
    );

    // A HUP to the same, unchanged file does not try it again.
    host.signal(Signal::SIGHUP);
    host.wait_for_log("reload (SIGHUP) refused", 1);
    assert_eq!(host.count_log("probing build"), 1, "not probed again");
    assert_eq!(host.count_log("abandoned after"), 1);

    // A changed file is tried, and rolls out.
    install(&app_lib("echo"), &lib);
    host.signal(Signal::SIGHUP);
    host.wait_for_log("generation 3 complete: 2 worker(s)", 1);
    assert!(
        host.get("/").text().starts_with('{'),
        "the echo build answers"
    );
}

#[test]
fn old_workers_that_die_while_the_new_build_boots_are_replaced_on_the_old_build() {
    let dir = Scratch::new("slowbuild");
    let lib = dir.join("app.so");
    install(&app_lib("hello"), &lib);
    // The crash build's workers (not its probe) wait in init while this exists.
    let hold = dir.join("hold-init");
    std::fs::write(&hold, "").unwrap();
    let maddr = metrics_addr();
    let (m, app) = (maddr.to_string(), format!("{}:app", lib.display()));
    let mut host = Host::spawn_env(
        &["-w", "2", "--metrics-bind", &m, &app],
        &[("CRASH_INIT_WAIT", hold.to_str().unwrap())],
    );
    host.wait_listening_addr();
    host.wait_for_log("ready in", 2);
    let old = ready_pids(&host);
    let hello = host.get("/").text();

    install(&app_lib("crash"), &lib);
    host.signal(Signal::SIGHUP);
    host.wait_for_log("generation 2: build", 1);
    for pid in &old {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    // While the new build's workers are still booting, the dead old ones
    // are replaced on the old build: the pool never shrinks.
    eventually("two workers of generation 1 serving again", || {
        (serving_on(maddr, 1) == 2 && ready_pids(&host).len() >= 4).then_some(())
    });
    assert_eq!(host.get("/").text(), hello);
    assert_eq!(host.count_log("generation 2 complete"), 0);

    // Once the new build boots, the rollout completes as usual.
    std::fs::remove_file(&hold).unwrap();
    host.wait_for_log("generation 2 complete: 2 worker(s)", 1);
    assert_eq!(host.get("/").text(), "ok\n");
}
