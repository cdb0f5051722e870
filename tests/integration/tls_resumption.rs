//! TLS session resumption across workers: a session ticket one worker
//! issued resumes on another worker process (here: the one forked after the
//! first retired), after a HUP reload, and on the workers of a new master
//! after a binary upgrade (USR2). The client is `openssl s_client`, which
//! saves the session (`-sess_out`) and offers it again (`-sess_in`) and
//! says `Reused` or `New` for each connection.

use std::{
    io::Write,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
};

use nix::{sys::signal::Signal, unistd::Pid};
use tests::{
    require_tool,
    tls::{Pair, Pki},
    Host, Scratch,
};

/// Kills the new master's process group when dropped: after an upgrade it
/// and its workers outlive the `Host` the test started.
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

/// What one `openssl s_client` connection saw.
struct Session {
    /// `Reused` or `New`, with the protocol (`Reused, TLSv1.3`).
    handshake: String,
    /// The worker's pid, from the echo app's answer.
    pid: i64,
    /// Everything s_client printed, for failure messages.
    output: String,
}

/// One connection with `openssl s_client` to `addr`: offers the session in
/// `sess` if the file exists, saves the session it ends with there, sends
/// one GET and reads the answer to the end. `extra`: more s_client flags.
fn connect(addr: SocketAddr, ca: &Path, sess: &Path, extra: &[&str]) -> Session {
    let mut args = vec![
        "s_client".to_owned(),
        "-connect".to_owned(),
        addr.to_string(),
        "-servername".to_owned(),
        "localhost".to_owned(),
        "-CAfile".to_owned(),
        ca.display().to_string(),
        "-verify_return_error".to_owned(),
        // Keeps reading after the request is sent, to the server's close.
        "-ign_eof".to_owned(),
    ];
    if sess.exists() {
        args.extend(["-sess_in".to_owned(), sess.display().to_string()]);
    }
    args.extend(["-sess_out".to_owned(), sess.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut child = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .expect("its stdin")
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let out = child.wait_with_output().expect("s_client's output");
    let output = format!(
        "openssl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let handshake = output
        .lines()
        .find(|l| l.starts_with("Reused,") || l.starts_with("New,"))
        .unwrap_or_else(|| panic!("no handshake line:\n{output}"));
    let handshake = handshake
        .split(", Cipher")
        .next()
        .unwrap_or_default()
        .to_owned();
    let pid = output
        .split_once("\"pid\":")
        .and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no answer from the app:\n{output}"));
    Session {
        handshake,
        pid,
        output,
    }
}

/// Sends one request on a first connection (`New`), waits until the worker
/// that served it (`--max-requests 1`) is replaced and gone, and returns the
/// first session.
fn first_then_recycled(host: &Host, ca: &Path, sess: &Path, extra: &[&str], n: usize) -> Session {
    let first = connect(host.addr(), ca, sess, extra);
    assert!(first.handshake.starts_with("New,"), "{}", first.output);
    host.wait_for_log("asks to be replaced: it reached --max-requests", n);
    host.wait_for_log(&format!("(pid {}) exited with status 0", first.pid), 1);
    first
}

/// Starts the echo app on `tls://127.0.0.1:0` serving `pair`, with one
/// worker and `extra` flags.
fn start(pair: &Pair, extra: &[&str]) -> Host {
    let mut args = vec!["-w", "1"];
    args.extend_from_slice(extra);
    tests::tls::host("echo", pair, &args)
}

/// One worker that serves one request: each connection (of one request)
/// is served by a new worker process.
const ONE_REQUEST_EACH: &[&str] = &["--max-requests", "1"];

fn resumes_on_another_worker(version: &str, flag: &str) {
    require_tool("openssl", "version");
    let dir = Scratch::new(&format!("tls-resume-{version}"));
    let pki = Pki::new(dir.path());
    let host = start(&pki.server(&["localhost"]), ONE_REQUEST_EACH);
    let sess = dir.join("session.pem");
    let first = first_then_recycled(&host, &pki.ca, &sess, &[flag], 1);
    let second = connect(host.addr(), &pki.ca, &sess, &[flag]);
    assert_eq!(
        second.handshake,
        format!("Reused, {version}"),
        "{}",
        second.output
    );
    assert_ne!(second.pid, first.pid, "served by another worker process");
}

#[test]
#[ignore = "needs openssl"]
fn a_tls13_ticket_resumes_on_another_worker() {
    resumes_on_another_worker("TLSv1.3", "-tls1_3");
}

#[test]
#[ignore = "needs openssl"]
fn a_tls12_ticket_resumes_on_another_worker() {
    resumes_on_another_worker("TLSv1.2", "-tls1_2");
}

#[test]
#[ignore = "needs openssl"]
fn a_ticket_resumes_after_a_hup_reload() {
    require_tool("openssl", "version");
    let dir = Scratch::new("tls-resume-hup");
    let pki = Pki::new(dir.path());
    let host = start(&pki.server(&["localhost"]), ONE_REQUEST_EACH);
    let sess = dir.join("session.pem");
    let first = first_then_recycled(&host, &pki.ca, &sess, &[], 1);
    // The replacement, then the reload's worker, which alone serves.
    let replacement = ready_worker_pid(&host, 2);
    host.signal(Signal::SIGHUP);
    host.wait_for_log("generation 2 complete", 1);
    host.wait_for_log(&format!("(pid {replacement}) exited"), 1);
    let second = connect(host.addr(), &pki.ca, &sess, &[]);
    assert_eq!(second.handshake, "Reused, TLSv1.3", "{}", second.output);
    assert_ne!(second.pid, first.pid);
    assert_ne!(second.pid, replacement);
}

/// The pid of worker `id`, from its "ready" line.
fn ready_worker_pid(host: &Host, id: u32) -> i64 {
    let prefix = format!("worker {id} (pid ");
    host.wait_for_log(&prefix, 1);
    host.log_lines()
        .iter()
        .find_map(|l| {
            let rest = l.split_once(&prefix)?.1;
            rest.split(')').next()?.parse().ok()
        })
        .expect("the worker's pid")
}

#[test]
#[ignore = "needs openssl"]
fn a_ticket_resumes_on_the_new_master_after_a_binary_upgrade() {
    require_tool("openssl", "version");
    let dir = Scratch::new("tls-resume-usr2");
    let pki = Pki::new(dir.path());
    // No --max-requests: the upgrade itself replaces every worker.
    let mut host = start(&pki.server(&["localhost"]), &[]);
    let _group = Group(host.pid());
    let sess = dir.join("session.pem");
    let first = connect(host.addr(), &pki.ca, &sess, &[]);
    assert!(first.handshake.starts_with("New,"), "{}", first.output);
    host.signal(Signal::SIGUSR2);
    host.wait_for_log("upgrade: took over from the old master", 1);
    host.wait_for_log(
        "TLS session tickets continue with the old master's secret",
        1,
    );
    assert_eq!(host.wait_master_exit().code(), Some(0));
    let second = connect(host.addr(), &pki.ca, &sess, &[]);
    assert_eq!(second.handshake, "Reused, TLSv1.3", "{}", second.output);
    assert_ne!(second.pid, first.pid, "a worker of the new master");
}
