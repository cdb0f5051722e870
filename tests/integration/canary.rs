//! Canary rollouts (`--rollout canary`): a new build serves on one worker
//! of four beside the old build, then on growing shares, and is rolled back
//! by itself when its 5xx share, its crashes or its p99 latency fail their
//! checks, while the old build serves every request.
//!
//! The builds are variants of the `flaky` example app ([`flaky_build`]):
//! each answers with its settings in `X-Flaky-Build`, so a client can tell
//! which build answered. The load opens a new connection per request, as
//! browsers behind a proxy do, so every worker (old and new) takes a share
//! from the one accept queue.

use std::{
    io::Write,
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread,
};

use nix::sys::signal::Signal;
use tests::{
    app_lib, connect, eventually, flaky_build, get, install, metrics_addr, parse_responses,
    read_to_close, Host, Scratch,
};

/// These tests load the machine (four clients, four workers each) and one
/// of them judges latency: they take turns, so one's load is not another's
/// latency.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The pause of each load client between its requests.
const PACE: std::time::Duration = std::time::Duration::from_millis(2);

/// What one request got: (status, the answering build's `X-Flaky-Build`,
/// and whether it read its settings from a trailer), or what went wrong.
type Outcome = Result<(u16, String, bool), String>;

/// Clients sending `GET /` on a new connection each, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, outcomes) = (stop.clone(), outcomes.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = one_request(addr);
                        outcomes.lock().unwrap().push(outcome);
                        // Paced (not a synchronisation): a few hundred
                        // requests a second per client leave the CPUs to
                        // the host, so latency figures are the app's.
                        thread::sleep(PACE);
                    }
                })
            })
            .collect();
        Load {
            stop,
            outcomes,
            threads,
        }
    }

    /// Requests answered so far.
    fn answered(&self) -> usize {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.is_ok())
            .count()
    }

    fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let outcomes = self.outcomes.lock().unwrap().clone();
        outcomes
    }
}

/// One `GET /` on a new connection.
fn one_request(addr: SocketAddr) -> Outcome {
    let mut stream = connect(addr);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let bytes = read_to_close(&mut stream);
    let resp = parse_responses(&bytes)
        .into_iter()
        .next()
        .ok_or_else(|| format!("no response: {:?}", String::from_utf8_lossy(&bytes)))?;
    let build = resp.header("X-Flaky-Build").unwrap_or_default().to_owned();
    let trailer = resp.text().contains("(from the build trailer)");
    Ok((resp.status, build, trailer))
}

/// The `X-Flaky-Build` of a build with these settings.
fn settings(errors: f64, latency_ms: u64, crash: f64) -> String {
    format!("errors={errors} latency_ms={latency_ms} crash={crash}")
}

/// A host with four workers serving `first` (installed as `served`), canary
/// steps every second, judged over the last 3 s once it served 20 requests;
/// and its status endpoint.
///
/// The load's thousands of connections take ephemeral ports, so the free
/// port picked for `--metrics-bind` may be taken by the time the host binds
/// it: then the host exits at once, saying so, and another port is tried.
fn start(first: &Path, served: &Path) -> (Host, SocketAddr) {
    start_with(first, served, "1")
}

/// As [`start`], with canary steps every `interval` seconds.
fn start_with(first: &Path, served: &Path, interval: &str) -> (Host, SocketAddr) {
    install(first, served);
    let app = format!("{}:app", served.display());
    for _ in 0..5 {
        let metrics = metrics_addr();
        let bind = metrics.to_string();
        let mut host = Host::spawn(&[
            "-w",
            "4",
            "--rollout",
            "canary",
            "--canary-interval",
            interval,
            "--canary-min-requests",
            "20",
            "--canary-window",
            "3",
            "--metrics-bind",
            &bind,
            &app,
        ]);
        let listening = eventually("the host listening, or refused its port", || {
            if host.count_log("listening on http://") > 0 {
                Some(true)
            } else if host.count_log("(--metrics-bind): Address already in use") > 0 {
                Some(false)
            } else {
                None
            }
        });
        if listening {
            host.wait_listening_addr();
            host.wait_for_log("ready in", 4);
            return (host, metrics);
        }
        host.wait_exit();
    }
    panic!("no free port for --metrics-bind in 5 tries");
}

/// The generation of every worker, from /status.json.
fn worker_generations(metrics: SocketAddr) -> Vec<u64> {
    let status = get(metrics, "/status.json").json();
    status["workers"]
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w["generation"].as_u64()).collect())
        .unwrap_or_default()
}

/// The value of the Prometheus sample whose line starts with `start`.
fn sample_starting(text: &str, start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Deploys `bad` over `served` under the load of `clients`, waits for the
/// canary to fail `check` and the old generation to serve on all four
/// workers again; returns what the clients got and the failure's log line.
fn deploy_and_roll_back(
    host: &Host,
    (metrics, clients): (SocketAddr, usize),
    served: &Path,
    bad: &Path,
    check: &str,
) -> (Vec<Outcome>, String) {
    let load = Load::start(host.addr(), clients);
    eventually("requests before the deploy", || {
        (load.answered() > 50).then_some(())
    });
    install(bad, served);
    // Deployed as a deploy script would, following it to its end.
    let control = host.control_path().to_path_buf();
    let deploy = thread::spawn(move || {
        let out = std::process::Command::new(tests::host_bin())
            .arg("ctl")
            .arg("--control")
            .arg(&control)
            .args(["deploy", "--wait"])
            .output()
            .expect("host ctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    });
    host.wait_for_log("canary: generation 2 (build", 1);
    let failed = format!("canary failed its {check} check");
    host.wait_for_log(&failed, 1);
    host.wait_for_log("back to generation 1 (build", 1);
    let (code, err) = deploy.join().expect("the deploy's thread");
    assert_eq!(code, Some(6), "host ctl deploy --wait: {err}");
    assert!(err.contains(&failed), "{err}");
    eventually("every worker back on generation 1", || {
        let gens = worker_generations(metrics);
        (gens.len() == 4 && gens.iter().all(|g| *g == 1)).then_some(())
    });
    let outcomes = load.stop();
    let line = host
        .log_lines()
        .into_iter()
        .find(|l| l.contains(&failed))
        .unwrap_or_default();
    (outcomes, line)
}

/// After a rollback: /metrics counts it under `check`; a reload of the
/// unchanged file is refused; the old build answers.
fn check_aftermath(host: &Host, metrics: SocketAddr, check: &str, old: &str) {
    let text = get(metrics, "/metrics").text();
    assert_eq!(
        sample_starting(&text, &format!("host_rollbacks_total{{check=\"{check}\"}}")),
        Some(1.0),
        "{text}"
    );
    host.signal(Signal::SIGHUP);
    host.wait_for_log("reload (SIGHUP) refused", 1);
    for _ in 0..20 {
        assert_eq!(one_request(host.addr()), Ok((200, old.to_owned(), true)));
    }
    assert_eq!(host.count_log("generation 3"), 0, "no new generation");
}

#[test]
fn a_build_answering_500s_is_rolled_back_while_the_old_one_serves_every_request() {
    let _turn = one_at_a_time();
    let dir = Scratch::new("canary-5xx");
    let served = dir.join("libflaky.so");
    let good = flaky_build(dir.path(), 0.0, 0, 0.0);
    let (host, metrics) = start(&good, &served);
    let bad = flaky_build(dir.path(), 0.3, 0, 0.0);
    let (outcomes, line) = deploy_and_roll_back(&host, (metrics, 4), &served, &bad, "5xx share");

    let failures: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failures.is_empty(), "every request answered: {failures:?}");
    let errors: Vec<&(u16, String, bool)> = outcomes
        .iter()
        .flatten()
        .filter(|(status, ..)| *status != 200)
        .collect();
    assert!(!errors.is_empty(), "the canary served some 500s");
    let bad_settings = settings(0.3, 0, 0.0);
    assert!(
        errors
            .iter()
            .all(|(status, build, _)| *status == 500 && *build == bad_settings),
        "only the bad build answered 500: {errors:?}"
    );
    // The line names the check with its figures and the old build's.
    assert!(
        line.contains("5xx share ")
            && line.contains(" requests) over ")
            && line.contains("limit 5.0% (old generation 0.0%)"),
        "{line}"
    );
    host.wait_for_log("older generations", 1);
    let text = get(metrics, "/metrics").text();
    let bad_5xx = text
        .lines()
        .find(|l| {
            l.starts_with("host_generation_requests_total{generation=\"2\"")
                && l.contains("status=\"5xx\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(bad_5xx.is_some_and(|n| n >= 5.0), "{text}");
    check_aftermath(&host, metrics, "5xx", &settings(0.0, 0, 0.0));
}

#[test]
fn a_build_that_crashes_workers_is_rolled_back() {
    let _turn = one_at_a_time();
    let dir = Scratch::new("canary-crash");
    let served = dir.join("libflaky.so");
    let good = flaky_build(dir.path(), 0.0, 0, 0.0);
    let (host, metrics) = start(&good, &served);
    let bad = flaky_build(dir.path(), 0.0, 0, 0.05);
    let (outcomes, line) =
        deploy_and_roll_back(&host, (metrics, 4), &served, &bad, "worker crashes");
    assert!(
        outcomes.iter().flatten().all(|(status, ..)| *status == 200),
        "the crashing build answers 200 or nothing"
    );
    assert!(
        line.contains("worker crashes ") && line.contains("limit 0.1%"),
        "{line}"
    );
    check_aftermath(&host, metrics, "crash", &settings(0.0, 0, 0.0));
}

#[test]
fn a_build_three_times_slower_at_p99_is_rolled_back() {
    let _turn = one_at_a_time();
    let dir = Scratch::new("canary-p99");
    let served = dir.join("libflaky.so");
    let old = flaky_build(dir.path(), 0.0, 20, 0.0);
    let (host, metrics) = start(&old, &served);
    let slow = flaky_build(dir.path(), 0.0, 60, 0.0);
    let (outcomes, line) = deploy_and_roll_back(&host, (metrics, 4), &served, &slow, "p99 latency");
    let failures: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failures.is_empty(), "every request answered: {failures:?}");
    assert!(
        line.contains("p99 latency ") && line.contains("the old generation's"),
        "{line}"
    );
    check_aftermath(&host, metrics, "p99", &settings(0.0, 20, 0.0));
}

#[test]
fn a_good_build_goes_through_every_step_and_completes() {
    let _turn = one_at_a_time();
    let dir = Scratch::new("canary-good");
    let served = dir.join("libflaky.so");
    // The plain library (healthy by default) and a copy with a trailer
    // saying the same: two builds, as healthy, told apart by the body.
    let (host, metrics) = start(&app_lib("flaky"), &served);
    let load = Load::start(host.addr(), 4);
    eventually("requests before the deploy", || {
        (load.answered() > 50).then_some(())
    });
    install(&flaky_build(dir.path(), 0.0, 0, 0.0), &served);
    host.signal(Signal::SIGHUP);
    host.wait_for_log("canary: generation 2 (build", 1);
    // /status.json shows the canary while it runs.
    let canary = eventually("the canary on /status.json", || {
        let status = get(metrics, "/status.json").json();
        (!status["canary"].is_null()).then(|| status["canary"].clone())
    });
    assert_eq!(canary["generation"], 2, "{canary}");
    assert_eq!(canary["pool"], 4, "{canary}");
    host.wait_for_log(
        "canary: step to 2 of 4 workers: 5xx 0.0% (old 0.0%), p99 ",
        1,
    );
    host.wait_for_log("canary: step to 4 of 4 workers", 1);
    host.wait_for_log("passed every step", 1);
    host.wait_for_log("generation 2 complete: 4 worker(s)", 1);
    let outcomes = load.stop();
    let failures: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failures.is_empty(), "every request answered: {failures:?}");
    assert!(outcomes.iter().flatten().all(|(status, ..)| *status == 200));
    assert!(
        outcomes.iter().flatten().any(|(.., trailer)| *trailer),
        "the new build served"
    );
    assert_eq!(host.count_log("canary failed"), 0);
    assert_eq!(worker_generations(metrics), vec![2, 2, 2, 2]);
    assert!(get(metrics, "/status.json").json()["canary"].is_null());
}

#[test]
fn the_old_name_of_rollout_still_works_in_config_files_and_on_the_command_line() {
    let dir = Scratch::new("canary-alias");
    let config = dir.join("host.toml");
    let app = format!("{}:app", app_lib("flaky").display());
    std::fs::write(
        &config,
        format!("app = \"{app}\"\nreload_strategy = \"chain\"\n"),
    )
    .unwrap();
    let config = config.display().to_string();
    for args in [
        vec!["-c", config.as_str(), "--print-config"],
        vec!["--reload-strategy", "chain", app.as_str(), "--print-config"],
    ] {
        let mut host = Host::spawn(&args);
        assert!(host.wait_exit().success(), "{args:?}");
        let out = host.log_lines().join("\n");
        assert!(out.contains("rollout = \"chain\""), "{out}");
        assert!(out.contains("canary-steps = \"25%,50%,100%\""), "{out}");
    }
}

#[test]
fn host_ctl_deploy_waits_for_the_canary_and_rollback_returns_to_the_kept_build() {
    let _turn = one_at_a_time();
    let dir = Scratch::new("canary-ctl");
    let served = dir.join("libflaky.so");
    let good = flaky_build(dir.path(), 0.0, 0, 0.0);
    let (host, _metrics) = start(&good, &served);
    let load = Load::start(host.addr(), 4);
    eventually("requests before the deploy", || {
        (load.answered() > 50).then_some(())
    });
    // A bad build, deployed by path and waited on: rolled back, exit 6.
    let bad = flaky_build(dir.path(), 0.3, 0, 0.0);
    let (code, out, err) = host.ctl(&["deploy", &bad.display().to_string(), "--wait"]);
    assert_eq!(code, 6, "{out}{err}");
    assert!(out.contains("canary: generation 2 (build"), "{out}");
    assert!(
        err.contains("5xx share") && err.contains("back to generation 1"),
        "{err}"
    );
    // A good one: every step, then exit 0.
    let better = flaky_build(dir.path(), 0.0, 1, 0.0);
    let (code, out, err) = host.ctl(&["deploy", &better.display().to_string(), "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("passed every step"), "{out}");
    assert!(out.contains("generation 3 complete"), "{out}");
    eventually("the new build answers", || {
        (one_request(host.addr()) == Ok((200, settings(0.0, 1, 0.0), true))).then_some(())
    });
    // Rolled back by the operator: the kept build before it serves again.
    let (code, out, err) = host.ctl(&["rollback", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("generation 4 complete"), "{out}");
    for _ in 0..20 {
        assert_eq!(
            one_request(host.addr()),
            Ok((200, settings(0.0, 0, 0.0), true))
        );
    }
    // The build rolled back from is marked bad: deploying its file again is refused.
    let (code, _, err) = host.ctl(&["deploy", "--wait"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("refused"), "{err}");
    let outcomes = load.stop();
    let failures: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failures.is_empty(), "every request answered: {failures:?}");
}

#[test]
fn host_ctl_promotes_a_canary_or_rolls_it_back() {
    let _turn = one_at_a_time();
    let dir = Scratch::new("canary-promote");
    let served = dir.join("libflaky.so");
    let good = flaky_build(dir.path(), 0.0, 0, 0.0);
    // Steps a minute apart: only the operator moves the canary on.
    let (host, metrics) = start_with(&good, &served, "60");
    let (code, _, err) = host.ctl(&["promote"]);
    assert_eq!(code, 6);
    assert!(err.contains("no canary in progress"), "{err}");

    let next = flaky_build(dir.path(), 0.0, 1, 0.0);
    assert_eq!(host.ctl(&["deploy", &next.display().to_string()]).0, 0);
    host.wait_for_log("canary: generation 2 (build", 1);
    let (code, out, _) = host.ctl(&["status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("canary: generation 2 on 1 of 4 workers, step 1 of 3"),
        "{out}"
    );
    let (code, out, err) = host.ctl(&["promote"]);
    assert_eq!(code, 0, "{out}{err}");
    host.wait_for_log("generation 2 complete: 4 worker(s)", 1);
    assert_eq!(worker_generations(metrics), vec![2, 2, 2, 2]);

    // A deploy followed with --wait, rolled back by the operator meanwhile:
    // the deploy exits 6, the rollback 0, and generation 2 serves on.
    let third = flaky_build(dir.path(), 0.0, 2, 0.0);
    let control = host.control_path().to_path_buf();
    let waiter = thread::spawn(move || {
        let out = std::process::Command::new(tests::host_bin())
            .arg("ctl")
            .arg("--control")
            .arg(&control)
            .args(["deploy", &third.display().to_string(), "--wait"])
            .output()
            .expect("host ctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    });
    host.wait_for_log("canary: generation 3 (build", 1);
    let (code, out, err) = host.ctl(&["rollback"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rolled back by the operator"), "{out}");
    let (code, err) = waiter.join().unwrap();
    assert_eq!(code, Some(6), "{err}");
    assert!(err.contains("rolled back by the operator"), "{err}");
    eventually("every worker back on generation 2", || {
        (worker_generations(metrics) == vec![2, 2, 2, 2]).then_some(())
    });
    let text = get(metrics, "/metrics").text();
    assert_eq!(
        sample_starting(&text, "host_rollbacks_total{check=\"operator\"}"),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn a_canary_gets_its_share_of_a_light_load() {
    let _turn = one_at_a_time();
    let dir = Scratch::new("canary-light");
    let served = dir.join("libflaky.so");
    let (host, _metrics) = start(&app_lib("flaky"), &served);
    // One client, one request at a time: every worker waits idle at the
    // listener each time, and the oldest waiters would take them all.
    let load = Load::start(host.addr(), 1);
    eventually("requests before the deploy", || {
        (load.answered() > 50).then_some(())
    });
    install(&flaky_build(dir.path(), 0.0, 0, 0.0), &served);
    host.signal(Signal::SIGHUP);
    host.wait_for_log("canary: generation 2 (build", 1);
    host.wait_for_log("canary: step to 2 of 4 workers", 1);
    host.wait_for_log("generation 2 complete: 4 worker(s)", 1);
    let outcomes = load.stop();
    let failed: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failed.is_empty(), "every request answered: {failed:?}");
    assert!(
        outcomes.iter().flatten().any(|(.., trailer)| *trailer),
        "the canary served"
    );
}
