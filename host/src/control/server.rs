//! The master's side of the control socket: accepts, checks the peer, reads
//! one request per connection, and writes answers, all without blocking,
//! inside the master's loop.
//!
//! The master polls [`ControlServer::poll_set`], then each turn calls
//! [`ControlServer::service`] to take the requests that arrived, answers
//! each ([`ControlServer::reply`]) or parks it on a change
//! ([`ControlServer::wait`]), passes its log lines to the parked ones
//! ([`ControlServer::progress`]) and their outcomes when changes end
//! ([`ControlServer::finish`]). Bounds: at most [`MAX_CLIENTS`] connections,
//! [`MAX_REQUEST`] bytes and [`REQUEST_TIMEOUT`] for a request, and
//! [`MAX_PENDING_ANSWER`] bytes held for a client that does not read; past
//! any of them the connection is closed. A parked client has no deadline (a
//! canary rollout takes minutes) but is dropped when it hangs up; the
//! change goes on.
//!
//! The socket file is made mode 0600 before it appears at its path (see
//! `Listener::bind`), and each peer's user is checked with `SO_PEERCRED`:
//! the master's own user or root. A live master already answering at the
//! path is never displaced: binding fails with `AddrInUse`. The file is
//! removed when the server is dropped, unless it was handed over to a new
//! master or another socket has taken its place.

use std::{
    io::{self, Read, Write},
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    os::unix::fs::{DirBuilderExt, MetadataExt},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{poll::PollFlags, sys::socket::sockopt::PeerCredentials, unistd::Uid};
use slab::Slab;

use crate::{
    control::{Answer, Request},
    master::changes::Outcome,
    os::listener::{BindAddr, InheritedFds, Listener, SocketOptions},
};

/// Most control connections held at once; more are closed as they come.
pub const MAX_CLIENTS: usize = 32;
/// Longest request line, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;
/// How long a client has, from its accept, to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most answer bytes held for one client that does not read them.
pub const MAX_PENDING_ANSWER: usize = 1024 * 1024;
/// The control socket's listen backlog.
const BACKLOG: i32 = 64;
/// The socket file's mode: the owner only.
const SOCKET_MODE: u32 = 0o600;
/// The mode of a runtime directory the server makes for the socket.
const DIR_MODE: u32 = 0o700;

/// Where one connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sending its request line, until the deadline.
    Reading(Instant),
    /// Its request waits on the change with this ticket.
    Waiting(crate::master::changes::Ticket),
    /// Its answer is complete: close once written.
    Closing,
}

/// One connection.
struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    phase: Phase,
}

/// The control socket and its clients.
pub struct ControlServer {
    listener: Listener,
    path: PathBuf,
    /// The socket file's identity (device, inode), to remove only our own.
    file: Option<(u64, u64)>,
    /// The process that bound it (a forked child never removes the file).
    owner: u32,
    /// Handed to a new master (binary upgrade): the file is its now.
    handed_over: bool,
    /// Whether new connections are taken (not while another master of a
    /// binary upgrade is the one answering).
    accepting: bool,
    clients: Slab<Client>,
}

impl ControlServer {
    /// Listens at `path`, or adopts `inherited` (a new master taking over
    /// from an upgraded one). `AddrInUse` when a live master answers there.
    pub fn bind(path: &Path, inherited: Option<OwnedFd>) -> io::Result<ControlServer> {
        let listener = match inherited {
            Some(fd) => Listener::inherited(fd)?,
            None => {
                prepare_dir(path)?;
                if answers(path) {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "another master answers there",
                    ));
                }
                let opts = SocketOptions {
                    backlog: BACKLOG,
                    unix_mode: Some(SOCKET_MODE),
                    ..SocketOptions::default()
                };
                Listener::bind(
                    &BindAddr::Unix(path.to_path_buf()),
                    &opts,
                    &InheritedFds::default(),
                )?
            }
        };
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            file: std::fs::symlink_metadata(path)
                .ok()
                .map(|m| (m.dev(), m.ino())),
            owner: std::process::id(),
            handed_over: false,
            accepting: true,
            clients: Slab::new(),
        })
    }

    /// The listening socket (to hand over to a new master).
    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The socket was handed to a new master: take no new connection (the
    /// new master answers them; those held are answered to the end), and
    /// leave its file alone on exit.
    pub fn handed_over(&mut self) {
        self.handed_over = true;
        self.accepting = false;
    }

    /// Takes new connections or not (a new master of a binary upgrade
    /// leaves them to the old one until it has taken over).
    pub fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
    }

    /// What the master polls: the listener while below the cap, each client
    /// for its request, its hang-up, or room for its answer.
    pub fn poll_set(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let mut set = Vec::with_capacity(self.clients.len() + 1);
        if self.accepting {
            set.push((self.listener.as_fd(), PollFlags::POLLIN));
        }
        for (_, c) in &self.clients {
            let mut flags = PollFlags::POLLIN;
            if !c.out.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            set.push((c.stream.as_fd(), flags));
        }
        set
    }

    /// How long until the nearest request deadline.
    pub fn next_wake(&self, now: Instant) -> Option<Duration> {
        self.clients
            .iter()
            .filter_map(|(_, c)| match c.phase {
                Phase::Reading(deadline) => Some(deadline.saturating_duration_since(now)),
                _ => None,
            })
            .min()
    }

    /// Accepts new connections, reads requests, writes what is pending and
    /// closes what is done; returns the requests that arrived (by client
    /// key), each parsed or with a one-line error.
    pub fn service(&mut self, now: Instant) -> Vec<(usize, Result<Request, String>)> {
        self.accept_pending(now);
        let mut requests = Vec::new();
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(client) = self.clients.get_mut(key) else {
                continue;
            };
            match client.phase {
                Phase::Reading(deadline) => match read_request(client) {
                    Ok(Some(request)) => requests.push((key, request)),
                    Ok(None) if now >= deadline => {
                        self.reply(key, Answer::result(false, "no request line in time"));
                    }
                    Ok(None) => {}
                    Err(_) => {
                        self.clients.remove(key);
                    }
                },
                // A parked or finished client only ever sends a hang-up.
                Phase::Waiting(_) | Phase::Closing => {
                    if hung_up(client) {
                        self.clients.remove(key);
                    }
                }
            }
        }
        self.flush();
        requests
    }

    /// Answers client `key` with `answer`, its last line.
    pub fn reply(&mut self, key: usize, answer: Answer) {
        if let Some(client) = self.clients.get_mut(key) {
            client.out.extend(answer.to_line());
            client.phase = Phase::Closing;
        }
    }

    /// Parks client `key` until the change with `ticket` ends, with a first
    /// progress line.
    pub fn wait(&mut self, key: usize, ticket: crate::master::changes::Ticket, first: &str) {
        if let Some(client) = self.clients.get_mut(key) {
            client.out.extend(
                Answer::Progress {
                    line: first.to_owned(),
                }
                .to_line(),
            );
            client.phase = Phase::Waiting(ticket);
        }
    }

    /// Whether a client waits on a change (so the master's log lines are wanted).
    pub fn has_waiting(&self) -> bool {
        self.clients
            .iter()
            .any(|(_, c)| matches!(c.phase, Phase::Waiting(_)))
    }

    /// Passes the master's log `lines` to every parked client.
    pub fn progress(&mut self, lines: &[String]) {
        for (_, client) in self.clients.iter_mut() {
            if matches!(client.phase, Phase::Waiting(_)) {
                for line in lines {
                    client
                        .out
                        .extend(Answer::Progress { line: line.clone() }.to_line());
                }
            }
        }
    }

    /// Answers the clients parked on the changes that ended.
    pub fn finish(&mut self, outcomes: &[Outcome]) {
        for outcome in outcomes {
            for (_, client) in self.clients.iter_mut() {
                if client.phase == Phase::Waiting(outcome.ticket) {
                    client
                        .out
                        .extend(Answer::result(outcome.ok, outcome.message.clone()).to_line());
                    client.phase = Phase::Closing;
                }
            }
        }
    }

    /// Answers every parked client with `ok` and `message` (the server stops).
    pub fn finish_all(&mut self, ok: bool, message: &str) {
        for (_, client) in self.clients.iter_mut() {
            if matches!(client.phase, Phase::Waiting(_)) {
                client.out.extend(Answer::result(ok, message).to_line());
                client.phase = Phase::Closing;
            }
        }
    }

    /// Writes what each client can take; closes those done, and those that
    /// let too much pile up.
    pub fn flush(&mut self) {
        let mut gone = Vec::new();
        for (key, client) in self.clients.iter_mut() {
            let failed = write_some(client).is_err() || client.out.len() > MAX_PENDING_ANSWER;
            let done = client.out.is_empty() && client.phase == Phase::Closing;
            if failed || done {
                gone.push(key);
            }
        }
        for key in gone {
            self.clients.remove(key);
        }
    }

    /// Accepts every connection waiting, checking each peer.
    fn accept_pending(&mut self, now: Instant) {
        while self.accepting {
            let socket = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("control socket: accept failed: {e}");
                    return;
                }
            };
            let stream = UnixStream::from(OwnedFd::from(socket));
            if self.clients.len() >= MAX_CLIENTS {
                continue; // dropped: closed at once
            }
            let mut client = Client {
                stream,
                inbuf: Vec::new(),
                out: Vec::new(),
                phase: Phase::Reading(now + REQUEST_TIMEOUT),
            };
            if let Err(why) = check_peer(&client.stream) {
                client.out = Answer::result(false, why).to_line();
                client.phase = Phase::Closing;
            }
            self.clients.insert(client);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if std::process::id() != self.owner || self.handed_over {
            return;
        }
        // Only the file we made: a successor may have bound its own there.
        let same = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if same.is_some() && same == self.file {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Makes the socket's directory if it is missing (mode 0700), and refuses
/// one that another user owns (in `/tmp`, someone could have made it first).
fn prepare_dir(path: &Path) -> io::Result<()> {
    let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to another user (uid {})",
                dir.display(),
                meta.uid()
            ),
        ));
    }
    Ok(())
}

/// Whether a master answers at `path` (a connection is taken or queued);
/// a socket file nobody listens on is stale.
fn answers(path: &Path) -> bool {
    use socket2::{Domain, SockAddr, Socket, Type};
    let Ok(addr) = SockAddr::unix(path) else {
        return false;
    };
    let Ok(socket) = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None) else {
        return false;
    };
    if socket.set_nonblocking(true).is_err() {
        return false;
    }
    match socket.connect(&addr) {
        Ok(()) => true,
        // A full backlog: alive, busy.
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}

/// Checks that the peer runs as this process's user or as root.
fn check_peer(stream: &UnixStream) -> Result<(), String> {
    let creds = nix::sys::socket::getsockopt(stream, PeerCredentials)
        .map_err(|e| format!("cannot tell who is asking: {e}"))?;
    let (peer, me) = (Uid::from_raw(creds.uid()), nix::unistd::geteuid());
    if peer == me || peer.is_root() {
        Ok(())
    } else {
        log::warn!(
            "control socket: refused a request from uid {peer} (pid {}): not the server's user (uid {me}) or root",
            creds.pid()
        );
        Err(format!(
            "permission denied: uid {peer} is not the server's user (uid {me}) or root"
        ))
    }
}

/// Reads what the client sent; its request once a whole line arrived.
/// `Err` when the connection is gone.
fn read_request(client: &mut Client) -> io::Result<Option<Result<Request, String>>> {
    let mut buf = [0u8; 4096];
    loop {
        match client.stream.read(&mut buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                client.inbuf.extend_from_slice(&buf[..n]);
                if let Some(end) = memchr::memchr(b'\n', &client.inbuf) {
                    return Ok(Some(parse(&client.inbuf[..end])));
                }
                if client.inbuf.len() > MAX_REQUEST {
                    return Ok(Some(Err(format!(
                        "request line longer than {MAX_REQUEST} bytes"
                    ))));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One request line as a request, or what is wrong with it.
fn parse(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))
}

/// Whether a client that has nothing more to say hung up.
fn hung_up(client: &mut Client) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match client.stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // ignored: one request per connection
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return e.kind() != io::ErrorKind::WouldBlock,
        }
    }
}

/// Writes as much of the client's answer as it takes now.
fn write_some(client: &mut Client) -> io::Result<()> {
    while !client.out.is_empty() {
        match client.stream.write(&client.out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                client.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_answered_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/control.sock");
        let mut server = ControlServer::bind(&path, None).expect("bind");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        // A second server at the same path is refused while this one lives.
        let err = ControlServer::bind(&path, None).err().expect("in use");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);

        let mut ok = UnixStream::connect(&path).unwrap();
        ok.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
        let mut bad = UnixStream::connect(&path).unwrap();
        bad.write_all(b"{\"cmd\":\"nope\"}\n").unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < 2 && Instant::now() < deadline {
            got.extend(server.service(Instant::now()));
        }
        got.sort_by_key(|(k, _)| *k);
        assert_eq!(got[0].1, Ok(Request::Status));
        assert!(got[1].1.as_ref().unwrap_err().contains("bad request"));
        server.reply(got[0].0, Answer::result(true, "fine"));
        server.flush();
        let mut answer = String::new();
        ok.read_to_string(&mut answer).unwrap();
        assert_eq!(
            answer,
            "{\"type\":\"result\",\"ok\":true,\"message\":\"fine\"}\n"
        );
        drop(server);
        assert!(!path.exists(), "the socket file is removed on drop");
    }

    #[test]
    fn a_stale_socket_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists() && !answers(&path));
        let _server = ControlServer::bind(&path, None).expect("stale file replaced");
        assert!(answers(&path));
    }
}
