//! Test support: start the real `host` binary, talk to it, and explain failures.
//!
//! Tests never call the server's code directly: they spawn `target/<profile>/host`
//! on a free loopback port (learned from its "listening on" log line), talk to
//! it with raw bytes or curl, and read its log. A [`Host`] kills its whole
//! process group when dropped, and if the test is failing it prints the
//! command, the exit status and everything the host logged.
//!
//! Build first: `cargo build --workspace` (cargo does not build the binary or
//! the example libraries for this crate's tests).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

pub mod haproxy;
pub mod nginx;
pub mod tls;
pub mod websocket;

/// How long a test waits for anything the host should do "soon".
pub const WAIT: Duration = Duration::from_secs(30);
/// How long raw reads wait for more bytes before giving up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `target/<profile>/`, where `host` and the example libraries are built.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The `host` binary.
pub fn host_bin() -> PathBuf {
    let path = target_dir().join("host");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// The example app library `lib<name>.so`.
pub fn app_lib(name: &str) -> PathBuf {
    let path = target_dir().join(format!("lib{}.so", name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// `lib<name>.so:app` as a command-line argument.
pub fn app_arg(name: &str) -> String {
    format!("{}:app", app_lib(name).display())
}

/// A running `host` process.
pub struct Host {
    child: Child,
    command: String,
    log: Arc<Mutex<Vec<String>>>,
    /// One message from each output reader when its stream ends.
    output_closed: mpsc::Receiver<()>,
    /// Output streams still open.
    open_outputs: usize,
    addr: Option<SocketAddr>,
    exit: Option<ExitStatus>,
    /// Its own runtime directory (where its control socket is by default),
    /// removed on drop; `None` when the test chose one.
    runtime: Option<PathBuf>,
    /// Its control socket.
    control: PathBuf,
}

impl Host {
    /// Starts `host` with `args` and waits until it listens. Adds
    /// `--bind 127.0.0.1:0` unless the args bind somewhere themselves (or
    /// give a config file).
    pub fn start(args: &[&str]) -> Host {
        let mut host = Host::spawn(args);
        host.addr = host.wait_listening();
        host
    }

    /// Starts the example app `name` with extra `args`.
    pub fn app(name: &str, args: &[&str]) -> Host {
        let app = app_arg(name);
        let mut all: Vec<&str> = args.to_vec();
        all.push(&app);
        Host::start(&all)
    }

    /// Spawns `host` without waiting for anything (for start-up failures).
    pub fn spawn(args: &[&str]) -> Host {
        Host::spawn_env(args, &[])
    }

    /// Like [`Host::spawn`], with extra environment variables.
    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Host {
        Host::spawn_with(args, env, None)
    }

    /// Like [`Host::start`], with the open-files limit (`RLIMIT_NOFILE`)
    /// set to `soft` and `hard` for the host (as `prlimit --nofile` would).
    pub fn start_nofile(args: &[&str], soft: u64, hard: u64) -> Host {
        let mut host = Host::spawn_with(args, &[], Some((soft, hard)));
        host.addr = host.wait_listening();
        host
    }

    /// Like [`Host::spawn`], running `bin` (a copy of the `host` binary)
    /// instead of the one built.
    pub fn spawn_binary(bin: &Path, args: &[&str]) -> Host {
        Host::spawn_from(bin.to_path_buf(), args, &[], None)
    }

    fn spawn_with(args: &[&str], env: &[(&str, &str)], nofile: Option<(u64, u64)>) -> Host {
        Host::spawn_from(host_bin(), args, env, nofile)
    }

    fn spawn_from(
        bin: PathBuf,
        args: &[&str],
        env: &[(&str, &str)],
        nofile: Option<(u64, u64)>,
    ) -> Host {
        let mut all: Vec<String> = Vec::new();
        // A free loopback port, unless the test binds itself, names a config
        // file (which binds), or only checks or prints the settings.
        let binds_itself = args.iter().any(|a| {
            [
                "-b",
                "--bind",
                "-c",
                "--config",
                "--print-config",
                "--check-config",
            ]
            .contains(a)
                || a.starts_with("--bind=")
        });
        if !binds_itself {
            all.extend(["--bind".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        all.extend(args.iter().map(|s| s.to_string()));
        let command = format!("{} {}", bin.display(), all.join(" "));
        let mut command_line = Command::new(&bin);
        command_line
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .envs(env.iter().copied())
            .process_group(0);
        if let Some((soft, hard)) = nofile {
            use nix::sys::resource::{setrlimit, Resource};
            // SAFETY: setrlimit is async-signal-safe, and the closure
            // allocates nothing.
            unsafe {
                command_line.pre_exec(move || {
                    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(std::io::Error::from)
                });
            }
        }
        Host::launch(command_line, command)
    }

    /// Starts `host` with `args` as systemd would for a socket unit: with
    /// `listener` as descriptor 3, `LISTEN_FDS=1` and `LISTEN_PID` naming it
    /// (a shell sets that to its own pid, then `exec`s the host), and waits
    /// until it listens.
    pub fn start_socket_activated(listener: &std::net::TcpListener, args: &[&str]) -> Host {
        let bin = host_bin();
        let command = format!("LISTEN_FDS=1 {} {}", bin.display(), args.join(" "));
        let mut command_line = Command::new("sh");
        command_line
            .args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\""])
            .arg(&bin)
            .args(args)
            .env_remove("LISTEN_FDNAMES")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let fd = listener.as_raw_fd();
        // SAFETY: dup2 and fcntl are async-signal-safe, and the closure
        // allocates nothing; descriptor 3 of the child is then the listener,
        // without close-on-exec, as systemd passes it.
        unsafe {
            command_line.pre_exec(move || {
                let done = if fd == 3 {
                    // dup2 onto itself would leave close-on-exec set.
                    nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
                } else {
                    nix::libc::dup2(fd, 3)
                };
                if done < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut host = Host::launch(command_line, command);
        host.addr = host.wait_listening();
        host
    }

    /// Spawns `command_line` (described as `command` when a test fails) and
    /// collects its output.
    fn launch(mut command_line: Command, command: String) -> Host {
        // Each host gets its own runtime directory, so hosts of tests running
        // at once never meet at one default control socket.
        let chosen = command_line
            .get_envs()
            .find(|(k, _)| *k == "RUNTIME_DIRECTORY")
            .and_then(|(_, v)| v.map(PathBuf::from));
        let runtime = match chosen {
            Some(_) => None,
            None => {
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dir =
                    std::env::temp_dir().join(format!("host-test-run-{}-{n}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("create a runtime directory");
                command_line.env("RUNTIME_DIRECTORY", &dir);
                Some(dir)
            }
        };
        let args: Vec<String> = command_line
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let control = args
            .iter()
            .position(|a| a == "--control")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
            .or_else(|| chosen.clone().map(|d| d.join("control.sock")))
            .or_else(|| runtime.as_ref().map(|d| d.join("control.sock")))
            .expect("a control socket path");
        let mut child = command_line
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (closed_tx, output_closed) = mpsc::channel();
        let mut open_outputs = 0;
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = Arc::clone(&log);
            let closed = closed_tx.clone();
            open_outputs += 1;
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line);
                }
                let _ = closed.send(());
            });
        }
        Host {
            child,
            command,
            log,
            output_closed,
            open_outputs,
            addr: None,
            exit: None,
            runtime,
            control,
        }
    }

    /// The master's control socket.
    pub fn control_path(&self) -> &Path {
        &self.control
    }

    /// Runs `host ctl --control SOCKET ARGS` to completion: its exit code
    /// and its standard output and error.
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(host_bin())
            .arg("ctl")
            .arg("--control")
            .arg(&self.control)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run host ctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Sets the address to talk to (for a host whose log goes to a file).
    pub fn set_addr(&mut self, addr: SocketAddr) {
        self.addr = Some(addr);
    }

    /// Waits until a host made with [`Host::spawn`] listens; returns where.
    pub fn wait_listening_addr(&mut self) -> SocketAddr {
        self.addr = self.wait_listening();
        self.addr()
    }

    fn wait_listening(&mut self) -> Option<SocketAddr> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(addr) = self.log_lines().iter().find_map(|l| {
                let (_, rest) = l
                    .split_once("listening on http://")
                    .or_else(|| l.split_once("listening on https://"))?;
                rest.split_whitespace().next()?.parse().ok()
            }) {
                return Some(addr);
            }
            if self
                .log_lines()
                .iter()
                .any(|l| l.contains("listening on unix:"))
            {
                // Unix sockets only: there is no TCP address (`addr()` panics).
                return None;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                panic!("host exited with {status} before listening");
            }
            assert!(Instant::now() < deadline, "host did not start listening");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TCP address the host listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("the host listens on TCP")
    }

    /// The master's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything logged so far (stderr and stdout), line by line.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// How many log lines contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log_lines()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until at least `count` log lines contain `needle`.
    pub fn wait_for_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + WAIT;
        while self.count_log(needle) < count {
            assert!(
                Instant::now() < deadline,
                "waited {WAIT:?} for {count} log line(s) containing {needle:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the master.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal)
            .expect("signal the master");
    }

    /// Waits for the master to exit, then for its output to end, so
    /// [`Host::log_lines`] holds everything it logged.
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let status = self.wait_master_exit();
        self.wait_output_closed(WAIT);
        status
    }

    /// Waits for the master to exit, but not for its output to end: after
    /// a binary upgrade the new master (and its workers) still hold it.
    pub fn wait_master_exit(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                return status;
            }
            assert!(Instant::now() < deadline, "host did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to `limit`) until the readers of the host's stdout and
    /// stderr reach the end of their streams: every line is then in the log.
    /// The streams end when every process holding them has exited (the
    /// master, its workers, and whatever the app started).
    fn wait_output_closed(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.open_outputs > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output_closed.recv_timeout(left) {
                Ok(()) => self.open_outputs -= 1,
                // A process outlives the master and holds the output open:
                // the log has what arrived so far.
                Err(_) => return,
            }
        }
    }

    /// The master's child processes (its workers, and any probe in flight).
    pub fn children(&self) -> Vec<i32> {
        let path = format!("/proc/{}/task/{}/children", self.pid(), self.pid());
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// A GET of `path` on a new connection; returns the parsed response.
    pub fn get(&self, path: &str) -> Response {
        get(self.addr(), path)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(dir) = &self.runtime {
            let _ = std::fs::remove_dir_all(dir);
        }
        let running = matches!(self.child.try_wait(), Ok(None));
        if running {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pid()),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = self.child.wait();
        }
        if thread::panicking() {
            // Everything the killed group logged, for the dump below.
            self.wait_output_closed(READ_TIMEOUT);
            eprintln!("--- host command: {}", self.command);
            match self.exit {
                Some(status) => eprintln!("--- exit: {status} (signal {:?})", status.signal()),
                None => eprintln!("--- exit: still running, killed by the test"),
            }
            eprintln!("--- host log:");
            for line in self.log_lines() {
                eprintln!("{line}");
            }
        }
    }
}

/// Connects to `addr` with the read timeout set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

/// A `GET path` that asks the server to close the connection after it.
fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
}

/// A GET of `path` to `addr` (the app's listener or the status endpoint)
/// on a new connection; returns the one response, and fails the test
/// unless exactly one came.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    let bytes = raw(addr, get_request(path).as_bytes());
    let mut responses = parse_responses(&bytes);
    assert_eq!(
        responses.len(),
        1,
        "one response to GET {path}, got {:?}",
        String::from_utf8_lossy(&bytes)
    );
    responses.remove(0)
}

/// A GET of `path` on `stream`, a connection made by the caller (with the
/// read timeout it wants); returns the first response, or `None` when the
/// request could not be sent or no complete response came before the
/// server closed (or the read timed out). For endpoints that may not answer.
pub fn try_get(mut stream: TcpStream, path: &str) -> Option<Response> {
    stream.write_all(get_request(path).as_bytes()).ok()?;
    parse_responses(&read_to_close(&mut stream))
        .into_iter()
        .next()
}

/// A free loopback address (a port nothing listened on a moment ago), for
/// `--metrics-bind`.
pub fn metrics_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The value of the first sample in Prometheus text `text` whose line starts
/// with `line_start` (the metric's name, with its labels if it has any; end
/// it with a space to match that name exactly).
pub fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

/// Puts `src` at `dest` the way a deploy should: copy it beside `dest`
/// (to `dest` with the extension `tmp`), then rename it over `dest`, so
/// whoever opens `dest` sees the old file or the new one, never a part.
pub fn install(src: &Path, dest: &Path) {
    let tmp = dest.with_extension("tmp");
    std::fs::copy(src, &tmp)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), tmp.display()));
    std::fs::rename(&tmp, dest)
        .unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), dest.display()));
}

/// A duplicate of `listener` at descriptor number `floor` or above, without
/// close-on-exec (`F_DUPFD` leaves the flag clear), so a host spawned while
/// it is open inherits it, as from a supervisor handing over a socket
/// (`fd://N`). Drop it once the host has started: only the host holds the
/// socket then.
///
/// Tests run as threads of one process and every spawned child inherits
/// every such descriptor, so each test takes its own `floor`, far from the
/// others' (and from what the harness opens).
pub fn inheritable(listener: &impl AsFd, floor: i32) -> OwnedFd {
    // SAFETY: F_DUPFD on a descriptor we own (borrowed for the call) returns
    // a new descriptor or -1; it reads no memory of ours.
    let fd = unsafe { nix::libc::fcntl(listener.as_fd().as_raw_fd(), nix::libc::F_DUPFD, floor) };
    assert!(fd >= floor, "{}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just returned by F_DUPFD: open, and owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Sends `request`, then reads until the server closes (or the read timeout).
pub fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(request).expect("send");
    read_to_close(&mut stream)
}

/// Sends `request` and half-closes, then reads until the server closes.
pub fn raw_shutdown(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(request).expect("send");
    let _ = stream.shutdown(Shutdown::Write);
    read_to_close(&mut stream)
}

/// Reads until EOF, a reset, or the read timeout.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one complete response from a keep-alive connection.
pub fn read_response(stream: &mut TcpStream) -> Response {
    let mut data = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Some((resp, _)) = parse_one(&data) {
            return resp;
        }
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "connection closed mid-response: {:?}",
                String::from_utf8_lossy(&data)
            ),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "reading a response: {e}; got {:?}",
                String::from_utf8_lossy(&data)
            ),
        }
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the body was chunked.
    pub chunked: bool,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// Parses every complete response in `bytes`, in order (1xx included).
pub fn parse_responses(bytes: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some((resp, used)) = parse_one(rest) {
        out.push(resp);
        rest = &rest[used..];
    }
    out
}

/// Parses one response at the start of `bytes`: the response and the bytes it took.
/// A response without length or chunking takes everything (close-delimited).
pub fn parse_one(bytes: &[u8]) -> Option<(Response, usize)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.to_owned(), v.trim().to_owned()))
        })
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
        chunked: false,
    };
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Some((resp, end));
    }
    if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().ok()?;
        if bytes.len() < end + len {
            return None;
        }
        resp.body = bytes[end..end + len].to_vec();
        return Some((resp, end + len));
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        resp.chunked = true;
        let mut pos = end;
        loop {
            let line_end = pos + bytes[pos..].windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&bytes[pos..line_end]).ok()?, 16).ok()?;
            pos = line_end + 2;
            if size == 0 {
                if bytes.len() < pos + 2 {
                    return None;
                }
                return Some((resp, pos + 2));
            }
            if bytes.len() < pos + size + 2 {
                return None;
            }
            resp.body.extend_from_slice(&bytes[pos..pos + size]);
            pos += size + 2;
        }
    }
    resp.body = bytes[end..].to_vec();
    Some((resp, bytes.len()))
}

/// Fails the test unless `program` runs (with `probe_arg`, e.g. `--version`).
///
/// A test that needs a tool is `#[ignore = "needs <tool>"]`, so a plain
/// `cargo test` does not run it; CI installs the tools and runs the ignored
/// tests too (`-- --include-ignored`). Run without its tool, such a test fails
/// here, loudly, instead of passing without having checked anything.
pub fn require_tool(program: &str, probe_arg: &str) {
    let runs = Command::new(program)
        .arg(probe_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        runs,
        "this test needs `{program}`, which is not installed (or `{program} {probe_arg}` failed); \
         install it, as .ci/run does, or run the tests without --include-ignored"
    );
}

/// Flags for headless Chromium on this closed network (no sandbox as root,
/// no GPU, no background connections that the network would refuse).
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// The Chromium binary (Debian names it `chromium`, Ubuntu's package
/// `chromium-browser`); panics, saying so, when neither runs.
pub fn chromium() -> &'static str {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or_else(|| {
            panic!(
                "this test needs `chromium` (or `chromium-browser`), which is not installed; \
                 install it, as .ci/run does, or run the tests without --include-ignored"
            )
        })
}

/// Runs curl with `args`; returns (exit status, stdout, stderr).
pub fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl must be installed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A scratch directory under the temp dir, named for the test and this
/// process, emptied when made and removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh, empty scratch directory.
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("host-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A path inside it, as text for a command line.
    pub fn file(&self, name: &str) -> String {
        self.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nothing listened on a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("its address").port()
}

/// Polls `check` until it returns `Some`, for up to [`WAIT`].
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A build of the `flaky` example app that answers a share `errors` of
/// requests with 500, adds `latency_ms` to each, and aborts its worker on a
/// share `crash` of them: a copy of `libflaky.so` in `dir` with the trailer
/// line `FLAKY errors=… latency_ms=… crash=…` appended (the app reads it
/// from its own file; the bytes, hence the build hash, differ per setting).
pub fn flaky_build(dir: &Path, errors: f64, latency_ms: u64, crash: f64) -> PathBuf {
    let mut bytes = std::fs::read(app_lib("flaky")).expect("read libflaky.so");
    let trailer = format!("\nFLAKY errors={errors} latency_ms={latency_ms} crash={crash}\n");
    bytes.extend_from_slice(trailer.as_bytes());
    let path = dir.join(format!("libflaky-e{errors}-l{latency_ms}-c{crash}.so"));
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// A stand-in for the service manager (systemd): the datagram socket
/// `NOTIFY_SOCKET` names, whose notifications a test reads one by one.
pub struct ServiceManager {
    socket: std::os::unix::net::UnixDatagram,
    path: String,
}

impl ServiceManager {
    /// Listens at `path` (a file in the test's scratch directory).
    pub fn bind(path: &Path) -> ServiceManager {
        let _ = std::fs::remove_file(path);
        let socket = std::os::unix::net::UnixDatagram::bind(path).expect("bind NOTIFY_SOCKET");
        socket
            .set_read_timeout(Some(WAIT))
            .expect("set a read timeout");
        ServiceManager {
            socket,
            path: path.display().to_string(),
        }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A notification already sent, if any (without waiting).
    pub fn pending(&self) -> Option<String> {
        self.socket.set_nonblocking(true).expect("non-blocking");
        let mut buf = [0u8; 4096];
        let got = self.socket.recv(&mut buf).ok();
        self.socket.set_nonblocking(false).expect("blocking again");
        got.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The next notification (waits up to [`WAIT`]).
    pub fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}
