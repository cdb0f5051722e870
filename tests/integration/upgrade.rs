//! Binary upgrade (USR2): a new master from the configured binary takes
//! the listening sockets over, the old one stops once the new one is ready,
//! and a new master that fails leaves the old one serving.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::net::UnixStream,
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
};

use nix::{sys::signal::Signal, unistd::Pid};
use tests::{
    app_arg, eventually, get, host_bin, metrics_addr, parse_one, sample, Host, Scratch,
    READ_TIMEOUT,
};

/// Kills a process group when dropped (a negative number: that one
/// process): after an upgrade the new master and its workers outlive the
/// `Host` the test started (in its group).
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = match self.0 {
            group @ 1.. => nix::sys::signal::killpg(Pid::from_raw(group), Signal::SIGKILL),
            pid => nix::sys::signal::kill(Pid::from_raw(-pid), Signal::SIGKILL),
        };
    }
}

/// The new master's pid, from the old master's "ready" line.
fn new_master_pid(host: &Host) -> i32 {
    host.wait_for_log("upgrade: new master (pid ", 1);
    host.log_lines()
        .iter()
        .find_map(|l| {
            let rest = l.split_once("upgrade: new master (pid ")?.1;
            rest.split(')').next()?.parse().ok()
        })
        .expect("the new master's pid")
}

/// The parent of process `pid` (from /proc).
fn parent_of(pid: i64) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: skip it.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The worker pid the echo app reports for a GET on a new connection.
fn worker_pid(addr: SocketAddr) -> i64 {
    get(addr, "/").json()["pid"].as_i64().expect("pid")
}

/// The value of `host_requests_total{status="2xx"}` on the status endpoint.
fn served_2xx(metrics: SocketAddr) -> Option<f64> {
    let stream = TcpStream::connect(metrics).ok()?;
    stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    let resp = tests::try_get(stream, "/metrics")?;
    sample(&resp.text(), "host_requests_total{status=\"2xx\"} ")
}

/// Requests in a loop until told to stop, as a client would: half on a
/// keep-alive connection (reconnecting when the server says
/// `Connection: close`, or closes it before a request was sent: a client
/// retries a request that never reached the server), half on a new
/// connection each. Counts answered and failed requests.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    /// `per_kind` clients of each kind, asking for `path`.
    fn start(addr: SocketAddr, path: &'static str, per_kind: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for keep_alive in (0..per_kind).flat_map(|_| [true, false]) {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            threads.push(thread::spawn(move || {
                let mut conn: Option<TcpStream> = None;
                while !stop.load(Ordering::Relaxed) {
                    match one_request(addr, path, &mut conn, keep_alive) {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
            }));
        }
        Load {
            stop,
            ok,
            failures,
            threads,
        }
    }

    fn answered(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients; the failures they saw.
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// One GET; on a reused keep-alive connection the server closed while it
/// was idle (no byte of an answer came), the request is sent again on a new
/// connection, as HTTP clients do for idempotent requests.
fn one_request(
    addr: SocketAddr,
    path: &str,
    conn: &mut Option<TcpStream>,
    keep_alive: bool,
) -> Result<(), String> {
    let close = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{close}\r\n");
    let request = request.as_bytes();
    let reused = conn.is_some();
    let mut stream = match conn.take() {
        Some(s) => s,
        None => {
            let s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
            s
        }
    };
    let mut data = Vec::new();
    let sent = stream.write_all(request);
    let mut buf = [0u8; 16384];
    let outcome = loop {
        if sent.is_err() {
            break Err(format!("send: {sent:?}"));
        }
        if let Some((resp, _)) = parse_one(&data) {
            break Ok(resp);
        }
        match stream.read(&mut buf) {
            Ok(0) => break Err(format!("closed after {} byte(s)", data.len())),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) => break Err(format!("read after {} byte(s): {e}", data.len())),
        }
    };
    match outcome {
        Ok(resp) if resp.status == 200 => {
            let close = resp
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            if keep_alive && !close {
                *conn = Some(stream);
            }
            Ok(())
        }
        Ok(resp) => Err(format!("status {}", resp.status)),
        // Closed while idle, before any byte of an answer: retry on a new one.
        Err(_) if reused && data.is_empty() => one_request(addr, path, conn, keep_alive),
        Err(e) => Err(e),
    }
}

#[test]
fn usr2_hands_the_socket_to_a_new_master_without_failing_a_request() {
    // Requests of 20 ms: the workers always have some in hand.
    let app = app_arg("slow");
    let mut host = Host::start(&["-w", "2", &app]);
    let _group = Group(host.pid());
    let addr = host.addr();
    let load = Load::start(addr, "/?ms=20", 2);
    eventually("requests under load", || {
        (load.answered() > 20).then_some(())
    });
    host.signal(Signal::SIGUSR2);
    let new_master = new_master_pid(&host);
    assert_ne!(new_master, host.pid());
    assert_eq!(host.wait_master_exit().code(), Some(0));
    // Only the new master's workers are left to answer.
    let served_before = load.answered();
    eventually("requests answered by the new master's workers", || {
        (load.answered() > served_before + 20).then_some(())
    });
    let children =
        std::fs::read_to_string(format!("/proc/{new_master}/task/{new_master}/children"))
            .unwrap_or_default();
    assert_eq!(children.split_whitespace().count(), 2, "{children}");
    let (answered, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{answered} answered; failures: {failures:#?}"
    );
    host.wait_for_log("upgrade: took over from the old master", 1);
}

#[test]
#[ignore = "needs wrk"]
fn usr2_under_wrk_load_has_no_errors() {
    require_wrk();
    let metrics = metrics_addr();
    let m = metrics.to_string();
    let app = app_arg("echo");
    let mut host = Host::start(&["-w", "2", "--metrics-bind", &m, &app]);
    let _group = Group(host.pid());
    let url = format!("http://{}/", host.addr());
    // Long enough for any upgrade; stopped with INT (wrk then reports).
    let wrk = Command::new("wrk")
        .args([
            "-t",
            "1",
            "-c",
            "16",
            "-d",
            "300s",
            "--timeout",
            "30s",
            &url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk");
    let wrk_pid = Pid::from_raw(wrk.id() as i32);
    // wrk runs on if the test fails: stop it then too.
    let _wrk_guard = Group(-wrk_pid.as_raw());
    eventually("wrk's requests", || {
        served_2xx(metrics).filter(|n| *n > 1000.0)
    });
    host.signal(Signal::SIGUSR2);
    let new_master = new_master_pid(&host);
    assert_eq!(host.wait_master_exit().code(), Some(0));
    host.wait_for_log("upgrade: took over from the old master", 1);
    // The status endpoint is the new master's now: its workers' count grows.
    eventually("wrk's requests to the new master's workers", || {
        served_2xx(metrics).filter(|n| *n > 1000.0)
    });
    let _ = nix::sys::signal::kill(wrk_pid, Signal::SIGINT);
    let out = wrk.wait_with_output().expect("wrk's report");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("requests in"), "{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    assert!(new_master > 0);
}

#[test]
fn a_unix_socket_and_the_status_endpoint_survive_an_upgrade() {
    let dir = Scratch::new("upgrade-unix");
    let sock = dir.join("app.sock");
    let bind = format!("unix:{}", sock.display());
    let pid_file = dir.file("host.pid");
    let metrics = metrics_addr();
    let m = metrics.to_string();
    let app = app_arg("echo");
    let mut host = Host::start(&[
        "--bind",
        "127.0.0.1:0",
        "--bind",
        &bind,
        "--metrics-bind",
        &m,
        "--pid",
        &pid_file,
        &app,
    ]);
    let _group = Group(host.pid());
    host.signal(Signal::SIGUSR2);
    let new_master = new_master_pid(&host);
    assert_eq!(host.wait_master_exit().code(), Some(0));
    host.wait_for_log("upgrade: took over from the old master", 1);
    assert!(
        host.count_log(&format!("listening on {bind} (handed over)")) == 1,
        "the new master knows the socket by its path"
    );
    // The socket file stays, and the new master's workers answer on it.
    let mut stream = UnixStream::connect(&sock).expect("the socket file is still there");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
        .write_all(b"GET /unix HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let (resp, _) = parse_one(&bytes).expect("an answer on the Unix socket");
    let worker = resp.json()["pid"].as_i64().unwrap();
    assert_eq!(parent_of(worker), Some(new_master));
    // The status endpoint answers, from the new master (the old one is gone).
    assert!(served_2xx(metrics).is_some(), "/metrics answers");
    // The pid file names the new master.
    let named = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(named.trim(), new_master.to_string());
    // The new master owns the file now: it removes it when it stops.
    nix::sys::signal::kill(Pid::from_raw(new_master), Signal::SIGTERM).unwrap();
    eventually("the socket file removed by the new master", || {
        (!sock.exists() && !Path::new(&pid_file).exists()).then_some(())
    });
}

#[test]
fn a_failed_upgrade_leaves_the_old_master_serving() {
    let dir = Scratch::new("upgrade-failed");
    let bin = dir.join("host");
    point_at_host(&bin);
    let app = app_arg("echo");
    // Started from that path: the binary an upgrade runs.
    let mut host = Host::spawn_binary(&bin, &["-w", "2", &app]);
    let _group = Group(host.pid());
    let addr = host.wait_listening_addr();
    let before = worker_pid(addr);
    // A deploy renames a broken binary over it.
    let broken = dir.join("broken");
    write_script(&broken, "echo 'broken build' >&2; exit 1");
    std::fs::rename(&broken, &bin).unwrap();
    host.signal(Signal::SIGUSR2);
    host.wait_for_log("upgrade failed: the new master (pid ", 1);
    let line = host
        .log_lines()
        .into_iter()
        .find(|l| l.contains("upgrade failed"))
        .unwrap();
    assert!(
        line.contains("exited with status 1 before it took over")
            && line.contains(&format!("this master (pid {}) keeps serving", host.pid())),
        "{line}"
    );
    // Still serving, on the same workers.
    for _ in 0..4 {
        assert_eq!(parent_of(worker_pid(addr)), Some(host.pid()));
    }
    assert!(host.children().contains(&(before as i32)));
    // Restore a good binary: the next upgrade succeeds.
    point_at_host(&bin);
    host.signal(Signal::SIGUSR2);
    let new_master = new_master_pid(&host);
    assert_eq!(host.wait_master_exit().code(), Some(0));
    host.wait_for_log("upgrade: took over from the old master", 1);
    assert_eq!(parent_of(worker_pid(addr)), Some(new_master));
}

#[test]
fn a_new_master_that_never_gets_ready_is_given_up_on() {
    let dir = Scratch::new("upgrade-stuck");
    let bin = dir.join("host");
    point_at_host(&bin);
    let app = app_arg("echo");
    // The deadline is 2 x 1 s + the start-up allowance.
    let mut host = Host::spawn_binary(&bin, &["-w", "2", "--boot-timeout", "1", &app]);
    let _group = Group(host.pid());
    let addr = host.wait_listening_addr();
    // A binary that starts and never says it is ready.
    let stuck = dir.join("stuck");
    write_script(&stuck, "exec sleep 600");
    std::fs::rename(&stuck, &bin).unwrap();
    host.signal(Signal::SIGUSR2);
    host.wait_for_log("upgrade: started a new master (pid ", 1);
    // A second USR2 meanwhile is refused, and changes nothing.
    host.signal(Signal::SIGUSR2);
    host.wait_for_log(
        "SIGUSR2: upgrade refused: one is under way (new master pid ",
        1,
    );
    host.wait_for_log("upgrade failed: the new master (pid ", 1);
    let line = host
        .log_lines()
        .into_iter()
        .find(|l| l.contains("upgrade failed"))
        .unwrap();
    assert!(line.contains("was not ready within 12 s"), "{line}");
    // What is left of it is stopped, and this master serves on.
    host.wait_for_log("upgrade: the failed new master (pid ", 1);
    assert_eq!(parent_of(worker_pid(addr)), Some(host.pid()));
    assert_eq!(host.count_log("upgrade: started a new master"), 1);
}

#[test]
fn a_stop_during_an_upgrade_stops_the_new_master_too() {
    let dir = Scratch::new("upgrade-cancelled");
    let bin = dir.join("host");
    point_at_host(&bin);
    let app = app_arg("echo");
    let mut host = Host::spawn_binary(&bin, &["-w", "1", &app]);
    let _group = Group(host.pid());
    host.wait_listening_addr();
    let stuck = dir.join("stuck");
    write_script(&stuck, "exec sleep 600");
    std::fs::rename(&stuck, &bin).unwrap();
    host.signal(Signal::SIGUSR2);
    host.wait_for_log("upgrade: started a new master (pid ", 1);
    host.signal(Signal::SIGTERM);
    host.wait_for_log(
        "upgrade cancelled: the server is stopping; stopping the new master",
        1,
    );
    assert_eq!(host.wait_master_exit().code(), Some(0));
    let line = host
        .log_lines()
        .into_iter()
        .find(|l| l.contains("upgrade cancelled"))
        .unwrap();
    let pid: i32 = line
        .rsplit_once("(pid ")
        .and_then(|(_, rest)| rest.trim_end_matches(')').parse().ok())
        .expect("the new master's pid");
    eventually("the new master gone", || {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        // Gone, or a zombie: the old master exited without reaping it.
        state
            .is_none_or(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .then_some(())
    });
}

/// Fails the test unless wrk runs (`wrk --version` prints its version but
/// exits 1, so `tests::require_tool` cannot ask it).
fn require_wrk() {
    let out = Command::new("wrk").arg("--version").output();
    assert!(
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("wrk ")),
        "this test needs `wrk`, which is not installed; install it, as .ci/run does, or run the tests without --include-ignored"
    );
}

/// Makes `path` a symbolic link to the built `host`, as a deploy does:
/// a new link renamed over it. (A link, not a copy: a copy being written
/// while another test forks makes its exec fail, ETXTBSY.)
fn point_at_host(path: &Path) {
    let new = path.with_extension("new");
    let _ = std::fs::remove_file(&new);
    std::os::unix::fs::symlink(host_bin(), &new).unwrap();
    std::fs::rename(&new, path).unwrap();
}

/// Writes an executable shell script running `body` at `path`, from
/// another process: a file this (multi-threaded) process held open for
/// writing could be inherited by a child another test forks at that
/// moment, and executing it would then fail (ETXTBSY).
fn write_script(path: &Path, body: &str) {
    let script = format!("#!/bin/sh\n{body}\n");
    let status = Command::new("sh")
        .args(["-c", "printf '%s' \"$1\" > \"$0\" && chmod 755 \"$0\""])
        .arg(path)
        .arg(script)
        .status()
        .unwrap();
    assert!(status.success(), "cannot write {}", path.display());
}

#[test]
fn the_new_master_tells_the_service_manager_it_is_the_main_process() {
    let dir = Scratch::new("upgrade-notify");
    let path = dir.join("notify.sock");
    let manager = tests::ServiceManager::bind(&path);
    let next = || manager.next();
    let app = app_arg("hello");
    let mut host = Host::spawn_env(&["-w", "2", &app], &[("NOTIFY_SOCKET", manager.path())]);
    let _group = Group(host.pid());
    host.wait_listening_addr();
    let ready = next();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    host.signal(Signal::SIGUSR2);
    let taken = next();
    let new_master = new_master_pid(&host);
    assert!(
        taken.starts_with(&format!(
            "MAINPID={new_master}\nREADY=1\nSTATUS=2 worker(s)"
        )),
        "{taken}"
    );
    assert_eq!(host.wait_master_exit().code(), Some(0));
    // The old master said nothing more: no STOPPING=1 for a service that goes on.
    assert_eq!(manager.pending(), None);
    // The new master speaks for the service from now on.
    nix::sys::signal::kill(Pid::from_raw(new_master), Signal::SIGTERM).unwrap();
    assert_eq!(next(), "STOPPING=1\nSTATUS=stopping (graceful)");
}

#[test]
fn host_ctl_upgrade_waits_for_the_new_master_which_keeps_the_control_socket() {
    let app = app_arg("echo");
    let mut host = Host::start(&["-w", "1", &app]);
    let _group = Group(host.pid());
    let old_worker = worker_pid(host.addr());
    let (code, out, err) = host.ctl(&["upgrade", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    let new_master = new_master_pid(&host);
    assert!(
        out.contains(&format!("new master (pid {new_master}) ready")),
        "{out}"
    );
    assert_eq!(host.wait_master_exit().code(), Some(0));
    host.wait_for_log("upgrade: took over from the old master", 1);
    // The same socket file, now answered by the new master: its worker
    // table is the new one's.
    let (code, out, err) = host.ctl(&["--json", "workers"]);
    assert_eq!(code, 0, "{out}{err}");
    let result: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    let pids: Vec<i64> = result["data"]["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["pid"].as_i64())
        .collect();
    assert_eq!(pids.len(), 1, "{result}");
    assert_ne!(pids[0], old_worker);
    assert_eq!(parent_of(pids[0]), Some(new_master));
    assert!(host.control_path().exists());
    // The new master stops on request; its socket file goes with it.
    let _ = nix::sys::signal::kill(Pid::from_raw(new_master), Signal::SIGTERM);
    eventually("the socket file removed", || {
        (!host.control_path().exists()).then_some(())
    });
}
