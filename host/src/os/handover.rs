//! Binary upgrade (`USR2`): starting a new master from the configured `host`
//! binary with the listening sockets handed over, and taking them on the
//! new master's side.
//!
//! The hand-over speaks systemd's socket-activation protocol, which the
//! server already reads ([`crate::os::systemd::take_listen_fds`]): the
//! sockets are descriptors 3, 4, … of the new process, with `LISTEN_FDS`,
//! `LISTEN_PID` and `LISTEN_FDNAMES`. The names tell the new master what
//! each one is: [`METRICS_FD_NAME`] and [`CONTROL_FD_NAME`] for the master's
//! own endpoints, `host-bind-ADDRESS` ([`bind_name`]) for an app listener the
//! old master bound from `--bind ADDRESS` (the new master keeps it as that
//! bind, and owns its socket file once it has taken over), and any other
//! name for a socket systemd passed (relayed under systemd's name, so it
//! stays "from systemd"). Only names starting `host-` are special.
//!
//! One more descriptor follows them: the new master's end of a socket pair
//! ([`UPGRADE_FD_VAR`] names its number) on which the two masters agree on
//! the moment of the take-over (see `master::upgrade`). Before any word of
//! that agreement, the old master writes the TLS session-ticket secret on
//! it ([`secret_frame`]), so tickets issued before the upgrade resume on the
//! new master's workers; the new master reads it first thing. It travels on
//! the link, not in the environment or the arguments, which other processes
//! of the same user can read in `/proc`.
//!
//! Descriptors are made inheritable only in the child, between `fork` and
//! `execve`: they are first duplicated above the target range (close-on-exec),
//! then `dup2`ed onto 3, 4, … (which clears close-on-exec on the copies
//! alone). Nothing in the master ever loses close-on-exec.

use std::{
    borrow::Cow,
    ffi::{CString, OsStr, OsString},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use nix::{
    sys::socket::{socketpair, AddressFamily, SockFlag, SockType},
    unistd::{fork, ForkResult, Pid},
};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use zeroize::Zeroizing;

use crate::{
    exit_code,
    os::{listener::BindAddr, process, signals as os_signals, systemd},
    tls::tickets::{TicketSecret, SECRET_LEN},
};

/// The name of the status endpoint's listener (`--metrics-bind`).
pub const METRICS_FD_NAME: &str = "host-metrics";
/// The name of the control socket's listener.
pub const CONTROL_FD_NAME: &str = "host-control";
/// The prefix of an app listener's name: the `--bind` address follows,
/// percent-encoded ([`bind_name`]).
pub const BIND_FD_PREFIX: &str = "host-bind-";
/// The environment variable naming the new master's end of the take-over link.
pub const UPGRADE_FD_VAR: &str = "HOST_UPGRADE_FD";

/// The first byte of the ticket-secret frame on the take-over link.
const SECRET_TAG: u8 = b'T';
/// The frame: [`SECRET_TAG`], the secret in lowercase hex, a newline. Hex
/// keeps the link's one-byte words (`R`, `G`) out of it, so even a new
/// master that does not read the frame (an older binary) never mistakes a
/// byte of the secret for a word.
const SECRET_FRAME_LEN: usize = 1 + 2 * SECRET_LEN + 1;

/// What a bind address keeps as it is in a descriptor name: `LISTEN_FDNAMES`
/// separates names with `:`, and systemd's own names are printable ASCII.
const NAME_KEEPS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'[')
    .remove(b']');

/// The name an app listener bound from `addr` is handed over under.
pub fn bind_name(addr: &BindAddr) -> String {
    let text = addr.to_string();
    format!("{BIND_FD_PREFIX}{}", utf8_percent_encode(&text, NAME_KEEPS))
}

/// The `--bind` address a `host-bind-…` name carries (`None`: another name,
/// or one that does not decode).
pub fn parse_bind_name(name: &str) -> Option<BindAddr> {
    let encoded = name.strip_prefix(BIND_FD_PREFIX)?;
    percent_decode_str(encoded).decode_utf8().ok()?.parse().ok()
}

/// How this server was started, captured at start-up to start it again on
/// an upgrade.
#[derive(Debug, Clone)]
pub struct Relaunch {
    /// The binary's path as the server was started by ([`binary_path`]).
    pub exe: PathBuf,
    /// The original arguments, `argv[0]` first.
    pub args: Vec<OsString>,
    /// The working directory at start, before `--chdir`: relative paths in
    /// the arguments were resolved from there.
    pub cwd: Option<PathBuf>,
}

impl Relaunch {
    /// Captures the binary, arguments and working directory. Call it first
    /// thing at start-up: the process title later overwrites the memory the
    /// arguments are read from.
    pub fn capture() -> Relaunch {
        let args: Vec<OsString> = std::env::args_os().collect();
        let cwd = std::env::current_dir().ok();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let exe = binary_path(args.first().map(OsString::as_os_str), cwd.as_deref(), &path)
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("host"));
        Relaunch { exe, args, cwd }
    }
}

/// The path this binary was started by, resolved the way it was at start:
/// `argv[0]` if it holds a `/` (made absolute against `cwd`), else the first
/// file of that name in the directories of `path` (`$PATH`, as the shell
/// looked it up). Symbolic links are kept, not resolved: a deploy that
/// points a link at a new version (`/usr/local/bin/host` →
/// `/opt/host-1.3/host`) is upgraded to the new version, where
/// `/proc/self/exe` (`current_exe`) would name the old one. `None` when
/// neither finds it (the caller falls back to `current_exe`).
pub fn binary_path(argv0: Option<&OsStr>, cwd: Option<&Path>, path: &OsStr) -> Option<PathBuf> {
    let argv0 = Path::new(argv0.filter(|a| !a.is_empty())?);
    let absolute = |p: &Path| match cwd {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    };
    if argv0.as_os_str().as_bytes().contains(&b'/') {
        return Some(absolute(argv0));
    }
    std::env::split_paths(path)
        .map(|dir| absolute(&dir.join(argv0)))
        .find(|candidate| candidate.is_file())
}

/// What a master received from the process that started it.
#[derive(Debug, Default)]
pub struct Received {
    /// App listeners, each with its name (systemd's, or `host-bind-…`).
    pub app: Vec<(String, OwnedFd)>,
    /// The status endpoint's listener ([`METRICS_FD_NAME`]).
    pub metrics: Option<OwnedFd>,
    /// The control socket's listener ([`CONTROL_FD_NAME`]).
    pub control: Option<OwnedFd>,
    /// The take-over link to the old master, when started by an upgrade.
    pub link: Option<OwnedFd>,
    /// The TLS session-ticket secret the old master handed over on the link.
    pub ticket_secret: Option<TicketSecret>,
}

/// Takes every descriptor passed to this process (systemd's sockets, or an
/// old master's), sorted by name, all close-on-exec from here on.
/// Call it once, first thing at start-up.
pub fn receive() -> Received {
    let link = take_link();
    let ticket_secret = link.as_ref().and_then(|link| read_secret(link.as_fd()));
    let mut received = Received {
        link,
        ticket_secret,
        ..Received::default()
    };
    for (name, fd) in systemd::take_listen_fds() {
        if let Err(e) = socket2::SockRef::from(&fd).set_cloexec(true) {
            log::warn!(
                "descriptor {} ({name}): cannot set close-on-exec: {e}",
                fd.as_raw_fd()
            );
        }
        match name.as_str() {
            METRICS_FD_NAME => received.metrics = Some(fd),
            CONTROL_FD_NAME => received.control = Some(fd),
            _ => received.app.push((name, fd)),
        }
    }
    received
}

/// The link named by [`UPGRADE_FD_VAR`], if the variable is meant for this
/// process (`LISTEN_PID` names it) and names an open descriptor; clears
/// the variable either way.
fn take_link() -> Option<OwnedFd> {
    let value = std::env::var(UPGRADE_FD_VAR).ok();
    // Single-threaded at start-up: nothing reads the environment meanwhile.
    std::env::remove_var(UPGRADE_FD_VAR);
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let n = value?
        .parse::<RawFd>()
        .ok()
        .filter(|n| *n >= systemd::LISTEN_FDS_START)?;
    if !for_us {
        return None;
    }
    // SAFETY: F_GETFD only asks whether the number is open.
    if unsafe { libc::fcntl(n, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the old master passed this descriptor to this process (the
    // variable is meant for it: LISTEN_PID), and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(n) };
    let sock = socket2::SockRef::from(&fd);
    if sock.set_cloexec(true).is_err() || sock.set_nonblocking(true).is_err() {
        return None;
    }
    Some(fd)
}

/// The frame that carries `secret` on the take-over link.
pub fn secret_frame(secret: &TicketSecret) -> Zeroizing<[u8; SECRET_FRAME_LEN]> {
    let mut frame = Zeroizing::new([0u8; SECRET_FRAME_LEN]);
    frame[0] = SECRET_TAG;
    data_encoding::HEXLOWER.encode_mut(secret.expose(), &mut frame[1..SECRET_FRAME_LEN - 1]);
    frame[SECRET_FRAME_LEN - 1] = b'\n';
    frame
}

/// The secret a frame carries; `None` if it is not a whole, well-formed one.
fn parse_secret_frame(frame: &[u8]) -> Option<TicketSecret> {
    let hex = frame
        .strip_prefix(&[SECRET_TAG])?
        .strip_suffix(b"\n")
        .filter(|hex| hex.len() == 2 * SECRET_LEN)?;
    let mut bytes = Zeroizing::new([0u8; SECRET_LEN]);
    data_encoding::HEXLOWER
        .decode_mut(hex, &mut bytes[..])
        .ok()?;
    TicketSecret::from_bytes(&bytes[..])
}

/// Reads the ticket secret at the head of the take-over link, without
/// blocking. The old master wrote it before it forked this process, so it
/// is there already, whole, or not at all (an old master that sends none:
/// this master makes its own, and tickets issued before the upgrade do
/// not resume).
fn read_secret(link: BorrowedFd<'_>) -> Option<TicketSecret> {
    let mut frame = Zeroizing::new([0u8; SECRET_FRAME_LEN]);
    let link = socket2::SockRef::from(&link);
    let read = loop {
        match std::io::Read::read(&mut &*link, &mut frame[..]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    match read {
        Ok(n) if n == SECRET_FRAME_LEN => {
            let secret = parse_secret_frame(&frame[..]);
            if secret.is_none() {
                log::warn!("upgrade: the TLS ticket secret from the old master is malformed; making a new one");
            }
            secret
        }
        Ok(0) => None,
        Ok(n) => {
            log::warn!("upgrade: the TLS ticket secret from the old master is cut short ({n} bytes); making a new one");
            None
        }
        Err(_) => None,
    }
}

/// Starts a new master: forks, and in the child puts `fds` at 3, 4, …
/// (named in `LISTEN_FDNAMES`) and the new master's end of a fresh link
/// after them, restores the working directory and default signal handling,
/// and executes the binary with the original arguments. `notify_socket` is
/// passed on as `NOTIFY_SOCKET`; `secret` (the TLS ticket secret) is
/// written on the link first. Returns the child's pid and the master's
/// end of the link (non-blocking, close-on-exec).
pub fn start_successor(
    relaunch: &Relaunch,
    fds: &[(Cow<'static, str>, BorrowedFd<'_>)],
    notify_socket: Option<&OsStr>,
    secret: &TicketSecret,
) -> Result<(Pid, OwnedFd), String> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("cannot make the take-over link: {e}"))?;
    socket2::SockRef::from(&ours)
        .set_nonblocking(true)
        .map_err(|e| format!("cannot make the take-over link non-blocking: {e}"))?;
    // A few dozen bytes into an empty socket pair: written whole at once,
    // and waiting for the new master when it starts.
    let link = socket2::SockRef::from(&ours);
    std::io::Write::write_all(&mut &*link, &secret_frame(secret)[..])
        .map_err(|e| format!("cannot write the TLS ticket secret on the take-over link: {e}"))?;
    // Everything the child needs, made before the fork.
    let cstring =
        |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| format!("{s:?} contains a NUL byte"));
    let path = cstring(relaunch.exe.as_os_str())?;
    let argv = relaunch
        .args
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>, _>>()?;
    let names: Vec<&str> = fds.iter().map(|(name, _)| name.as_ref()).collect();
    let link_number = systemd::LISTEN_FDS_START + fds.len() as RawFd;
    let mut env = environment(notify_socket, fds.len(), &names.join(":"), link_number)?;
    let sources: Vec<RawFd> = fds
        .iter()
        .map(|(_, fd)| fd.as_raw_fd())
        .chain([theirs.as_raw_fd()])
        .collect();
    let cwd = relaunch.cwd.clone();
    // SAFETY: the master is single-threaded, so the child inherits a
    // consistent state; it only arranges descriptors and executes.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => process::leave_child(|| {
            let failed = (|| -> nix::Result<std::convert::Infallible> {
                os_signals::reset_in_child(&[])?;
                place_descriptors(&sources)?;
                if let Some(dir) = &cwd {
                    nix::unistd::chdir(dir.as_path())?;
                }
                let pid = std::process::id();
                env.push(CString::new(format!("LISTEN_PID={pid}")).unwrap_or_default());
                nix::unistd::execve(&path, &argv, &env)
            })();
            let Err(e) = failed;
            log::error!("upgrade: cannot execute {}: {e}", path.to_string_lossy());
            exit_code::SUCCESSOR_EXEC_FAILED
        }),
        Ok(ForkResult::Parent { child }) => {
            drop(theirs);
            Ok((child, ours))
        }
        Err(e) => Err(format!("cannot fork the new master: {e}")),
    }
}

/// The new master's environment: this process's, without the variables of
/// a previous hand-over, with the hand-over's own (`LISTEN_PID` is added in
/// the child, which alone knows its pid).
fn environment(
    notify_socket: Option<&OsStr>,
    count: usize,
    names: &str,
    link: RawFd,
) -> Result<Vec<CString>, String> {
    const REPLACED: [&str; 5] = [
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        UPGRADE_FD_VAR,
    ];
    let mut env = Vec::new();
    for (key, value) in std::env::vars_os() {
        if REPLACED.iter().any(|r| key == OsStr::new(r)) {
            continue;
        }
        let mut entry = key.into_vec_bytes();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        if let Ok(entry) = CString::new(entry) {
            env.push(entry);
        }
    }
    let mut add = |entry: Vec<u8>| {
        CString::new(entry)
            .map(|e| env.push(e))
            .map_err(|_| "an environment value contains a NUL byte".to_owned())
    };
    add(format!("LISTEN_FDS={count}").into_bytes())?;
    add(format!("LISTEN_FDNAMES={names}").into_bytes())?;
    add(format!("{UPGRADE_FD_VAR}={link}").into_bytes())?;
    if let Some(socket) = notify_socket {
        add([b"NOTIFY_SOCKET=", socket.as_bytes()].concat())?;
    }
    Ok(env)
}

/// In the child: puts `sources` at 3, 4, … without close-on-exec. Each is
/// first duplicated above the target range (close-on-exec), so no `dup2`
/// overwrites a source not yet placed.
fn place_descriptors(sources: &[RawFd]) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    let floor = systemd::LISTEN_FDS_START + sources.len() as RawFd;
    let high = sources
        .iter()
        .map(|&fd| fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(floor)))
        .collect::<nix::Result<Vec<RawFd>>>()?;
    for (i, &fd) in high.iter().enumerate() {
        // dup2 onto another number clears close-on-exec on the copy.
        nix::unistd::dup2(fd, systemd::LISTEN_FDS_START + i as RawFd)?;
    }
    Ok(())
}

/// Raw bytes of an `OsString`, by value.
trait IntoVecBytes {
    fn into_vec_bytes(self) -> Vec<u8>;
}

impl IntoVecBytes for OsString {
    fn into_vec_bytes(self) -> Vec<u8> {
        std::os::unix::ffi::OsStringExt::into_vec(self)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn the_binary_is_found_as_it_was_started() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("host"), b"").unwrap();
        let path = std::env::join_paths(["/nonexistent", bin.to_str().unwrap()]).unwrap();
        let cwd = Path::new("/srv/app");
        // (argv[0], found)
        let cases: [(Option<&str>, Option<PathBuf>); 6] = [
            (
                Some("/usr/local/bin/host"),
                Some("/usr/local/bin/host".into()),
            ),
            (Some("./host"), Some("/srv/app/./host".into())),
            (Some("bin/host"), Some("/srv/app/bin/host".into())),
            (Some("host"), Some(bin.join("host"))),
            (Some("missing"), None),
            (None, None),
        ];
        for (argv0, want) in cases {
            let got = binary_path(argv0.map(OsStr::new), Some(cwd), &path);
            assert_eq!(got, want, "{argv0:?}");
        }
    }

    #[test]
    fn the_ticket_secret_travels_in_a_frame_without_the_links_words() {
        let secret = TicketSecret::generate().unwrap();
        let frame = secret_frame(&secret);
        assert!(!frame.contains(&b'R') && !frame.contains(&b'G'));
        let back = parse_secret_frame(&frame[..]).unwrap();
        assert_eq!(back.expose(), secret.expose());
        let mut upper = *frame;
        upper[1..SECRET_FRAME_LEN - 1].make_ascii_uppercase();
        let cases: [(&str, &[u8]); 6] = [
            ("empty", b""),
            ("cut short", &frame[..SECRET_FRAME_LEN - 1]),
            ("no tag", &frame[1..]),
            ("another tag", &[&b"R"[..], &frame[1..]].concat()),
            ("not hex", &[&frame[..5], b"x", &frame[6..]].concat()),
            ("upper-case hex", &upper[..]),
        ];
        for (what, bad) in cases {
            assert!(parse_secret_frame(bad).is_none(), "{what}");
        }
    }

    #[test]
    fn the_ticket_secret_is_read_from_the_link_without_blocking() {
        let (old, new) = std::os::unix::net::UnixStream::pair().unwrap();
        new.set_nonblocking(true).unwrap();
        assert!(read_secret(new.as_fd()).is_none(), "nothing sent");
        let secret = TicketSecret::generate().unwrap();
        (&old).write_all(&secret_frame(&secret)[..]).unwrap();
        (&old).write_all(b"R").unwrap();
        let read = read_secret(new.as_fd()).unwrap();
        assert_eq!(read.expose(), secret.expose());
        let mut word = [0u8; 4];
        assert_eq!(
            (&new).read(&mut word).unwrap(),
            1,
            "the word after it stays"
        );
        (&old).write_all(b"T0123").unwrap();
        assert!(read_secret(new.as_fd()).is_none(), "cut short");
    }

    #[test]
    fn bind_addresses_travel_in_descriptor_names() {
        let cases = [
            ("127.0.0.1:8000", "host-bind-127.0.0.1%3A8000"),
            ("[::1]:80", "host-bind-[%3A%3A1]%3A80"),
            ("unix:/run/app.sock", "host-bind-unix%3A/run/app.sock"),
            ("unix:/tmp/a b:c%d", "host-bind-unix%3A/tmp/a%20b%3Ac%25d"),
            ("fd://3", "host-bind-fd%3A//3"),
        ];
        for (addr, name) in cases {
            let addr: BindAddr = addr.parse().unwrap();
            assert_eq!(bind_name(&addr), name);
            assert!(!name.contains(':'), "{name}: LISTEN_FDNAMES separator");
            assert_eq!(parse_bind_name(name), Some(addr));
        }
        for other in [
            "host-metrics",
            "host-control",
            "myapp.socket",
            "unknown",
            "host-bind-%FF",
            "host-bind-8000",
        ] {
            assert_eq!(parse_bind_name(other), None, "{other}");
        }
    }
}
