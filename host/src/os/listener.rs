//! Listening sockets: parsing `--bind` addresses and binding them in the master.
//!
//! The master binds every listener before it forks, so all workers share the
//! same sockets and the kernel queues connections while workers come and go.
//! Sockets are non-blocking: workers wait on them with epoll and a worker that
//! loses the race to `accept` gets `EAGAIN`, not a stall.
//!
//! Two owning types keep the master's descriptors sound:
//! - [`InheritedFds`]: the descriptors named by `fd://N` are taken once, at
//!   start-up; a listener made from one is a duplicate, so a HUP that drops
//!   `fd://N` and later adds it back gets the same socket again, never
//!   whatever descriptor N is by then.
//! - [`Listeners`]: the master's listeners; the Unix socket files the master
//!   made are removed when it drops them, on every way out of start-up or the
//!   loop (but never in a forked child).

use std::{
    collections::BTreeMap,
    fmt,
    net::{SocketAddr, ToSocketAddrs},
    ops::Deref,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd},
        unix::fs::{FileTypeExt, PermissionsExt},
    },
    path::PathBuf,
    str::FromStr,
};

use socket2::{Domain, SockAddr, Socket, Type};

/// Prefix that marks a Unix-socket address in `--bind`.
const UNIX_PREFIX: &str = "unix:";
/// Prefix that marks an inherited listening descriptor in `--bind`.
const FD_PREFIX: &str = "fd://";

/// Prefix of the private directory a Unix socket is bound in before it is
/// renamed to its path (`.host` and six random characters, beside the path).
const STAGING_DIR_PREFIX: &str = ".host";
/// The socket's name inside that directory: short, as socket paths are.
const STAGED_NAME: &str = "s";
/// The longest path a Unix socket address holds (`sun_path`, less its NUL).
const MAX_UNIX_PATH: usize = 107;

/// How listening sockets are set up.
#[derive(Debug, Clone, Default)]
pub struct SocketOptions {
    /// Pending connections per listener.
    pub backlog: i32,
    /// `SO_REUSEPORT` on TCP listeners.
    pub reuse_port: bool,
    /// `TCP_DEFER_ACCEPT` on TCP listeners, in seconds (0: off).
    pub defer_accept: u32,
    /// The mode of Unix socket files.
    pub unix_mode: Option<u32>,
    /// The owner (and group) of Unix socket files.
    pub unix_owner: Option<(nix::unistd::Uid, Option<nix::unistd::Gid>)>,
}

/// One `--bind` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    /// `HOST:PORT` or `[V6]:PORT`; HOST may be a name, resolved at bind time.
    Tcp(String),
    /// `unix:/path`.
    Unix(PathBuf),
    /// `fd://N`: a listening socket inherited as descriptor N.
    Fd(RawFd),
}

impl FromStr for BindAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(fd) = s.strip_prefix(FD_PREFIX) {
            return fd
                .parse::<RawFd>()
                .ok()
                .filter(|fd| *fd >= 0)
                .map(BindAddr::Fd)
                .ok_or_else(|| format!("`{s}`: fd:// needs a descriptor number, e.g. fd://3"));
        }
        if let Some(path) = s.strip_prefix(UNIX_PREFIX) {
            if path.is_empty() {
                return Err("unix: needs a socket path, e.g. unix:/run/app.sock".into());
            }
            return Ok(BindAddr::Unix(PathBuf::from(path)));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is not HOST:PORT, [V6]:PORT or unix:/path"))?;
        port.parse::<u16>()
            .map_err(|_| format!("`{port}` is not a port number (0-65535)"))?;
        if host.is_empty() {
            return Err(format!(
                "`{s}` has no host; use 0.0.0.0:{port} for every IPv4 address"
            ));
        }
        Ok(BindAddr::Tcp(s.to_owned()))
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(s) => f.write_str(s),
            BindAddr::Unix(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
            BindAddr::Fd(fd) => write!(f, "{FD_PREFIX}{fd}"),
        }
    }
}

/// The prefix of a `--bind` value whose connections are TLS (`tls://HOST:PORT`,
/// `tls://unix:/path`, `tls://fd://N`).
pub const TLS_PREFIX: &str = "tls://";

/// One `--bind` value: an address, and whether its connections are TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Where to listen.
    pub addr: BindAddr,
    /// Connections are TLS (`tls://` before the address).
    pub tls: bool,
}

impl FromStr for Bind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix(TLS_PREFIX) {
            Some(rest) => Ok(Bind {
                addr: rest.parse()?,
                tls: true,
            }),
            None => Ok(Bind {
                addr: s.parse()?,
                tls: false,
            }),
        }
    }
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            f.write_str(TLS_PREFIX)?;
        }
        self.addr.fmt(f)
    }
}

/// A bound, listening, non-blocking socket.
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    /// The `--bind` value it was made from.
    pub addr: BindAddr,
    /// The address as requests report it (`ip:port` or `unix:/path`).
    pub local: String,
    /// Whether this is a Unix socket (no peer address).
    pub is_unix: bool,
    /// The Unix socket path to remove on exit.
    unix_path: Option<PathBuf>,
    /// The name it was handed to this process under (`LISTEN_FDNAMES`), to
    /// pass it on under the same name on a binary upgrade.
    pub fd_name: Option<String>,
    /// Connections are TLS (`--bind tls://…`; the master sets it from the settings).
    pub tls: bool,
    /// Connections from trusted peers begin with a PROXY protocol header
    /// (`--proxy-protocol`; the master sets it from the settings).
    pub proxy_protocol: bool,
}

impl Listener {
    /// Binds and listens on `addr`; an `fd://N` address takes a duplicate of
    /// descriptor N from `inherited`.
    pub fn bind(
        addr: &BindAddr,
        opts: &SocketOptions,
        inherited: &InheritedFds,
    ) -> std::io::Result<Listener> {
        let mut listener = match addr {
            BindAddr::Tcp(spec) => Self::bind_first(spec, opts),
            BindAddr::Unix(path) => Self::bind_unix(path, opts),
            BindAddr::Fd(fd) => inherited.listener(*fd),
        }?;
        listener.addr = addr.clone();
        Ok(listener)
    }

    /// Adopts a listening socket this process inherited (systemd), or a
    /// duplicate of one (fd://N).
    pub fn inherited(fd: OwnedFd) -> std::io::Result<Listener> {
        let raw = fd.as_raw_fd();
        let socket = Socket::from(fd);
        if !socket.is_listener().unwrap_or(false) {
            // Give the descriptor back untouched: it is not ours to close.
            let _ = socket.into_raw_fd();
            return Err(not_a_listener(raw));
        }
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        let local = socket.local_addr()?;
        let (local, is_unix) = match (local.as_socket(), local.as_pathname()) {
            (Some(sa), _) => {
                // As for sockets we bind: accepted ones inherit it.
                socket.set_nodelay(true)?;
                (sa.to_string(), false)
            }
            (None, Some(path)) => (format!("{UNIX_PREFIX}{}", path.display()), true),
            (None, None) => (format!("{UNIX_PREFIX}(unnamed)"), true),
        };
        Ok(Listener {
            socket,
            addr: BindAddr::Fd(raw),
            local,
            is_unix,
            unix_path: None,
            fd_name: None,
            tls: false,
            proxy_protocol: false,
        })
    }

    /// Gives a listener handed over by an old master (binary upgrade) the
    /// `--bind` address it was made from, and for a Unix socket the path it
    /// is known by (the kernel reports the private path it was bound at
    /// before it was renamed into place).
    pub fn restore_addr(&mut self, addr: BindAddr) {
        if let BindAddr::Unix(path) = &addr {
            self.local = format!("{UNIX_PREFIX}{}", path.display());
        }
        self.addr = addr;
    }

    /// Makes this process the owner of the socket file of a Unix listener
    /// bound at `--bind unix:PATH` (it removes the file on exit): a new
    /// master takes this over from the old one once it has taken over.
    pub fn claim_file(&mut self) {
        if let BindAddr::Unix(path) = &self.addr {
            self.unix_path = Some(path.clone());
        }
    }

    /// Binds the first address `spec` resolves to that can be bound.
    fn bind_first(spec: &str, opts: &SocketOptions) -> std::io::Result<Listener> {
        let mut last_error = None;
        for sa in spec.to_socket_addrs()? {
            match Self::bind_tcp(sa, opts) {
                Ok(l) => return Ok(l),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "the host name has no address")
        }))
    }

    fn bind_tcp(sa: SocketAddr, opts: &SocketOptions) -> std::io::Result<Listener> {
        let socket = Socket::new(Domain::for_address(sa), Type::STREAM.cloexec(), None)?;
        socket.set_reuse_address(true)?;
        if opts.reuse_port {
            socket.set_reuse_port(true)?;
        }
        if sa.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        // Accepted sockets inherit it: no system call per connection.
        socket.set_nodelay(true)?;
        if opts.defer_accept > 0 {
            set_defer_accept(&socket, opts.defer_accept)?;
        }
        socket.bind(&sa.into())?;
        socket.listen(opts.backlog)?;
        socket.set_nonblocking(true)?;
        let local = socket
            .local_addr()?
            .as_socket()
            .map(|a| a.to_string())
            .unwrap_or_default();
        Ok(Listener {
            socket,
            addr: BindAddr::Tcp(String::new()),
            local,
            is_unix: false,
            unix_path: None,
            fd_name: None,
            tls: false,
            proxy_protocol: false,
        })
    }

    /// Binds a Unix socket at `path` with its mode and owner already set.
    ///
    /// The socket is bound in a private directory beside `path` (mode 0700,
    /// this process's alone, on the same filesystem), given its mode and
    /// owner there, made to listen, and only then renamed to `path`. Setting
    /// them on `path` itself after `bind` (as this did) follows whatever the
    /// path names by then: in a shared directory, a symlink swapped in makes a
    /// root master chmod and chown the link's target. Inside the private
    /// directory nobody else can swap anything, and the rename never follows
    /// a link. This covers mode and owner with one mechanism, with no change
    /// to the process-wide umask, and the socket appears at its path only
    /// complete: no client ever finds it with the default mode. The rename
    /// refuses to replace anything at `path` (as `bind` itself would).
    fn bind_unix(path: &std::path::Path, opts: &SocketOptions) -> std::io::Result<Listener> {
        // A socket file left by a previous run that died would make bind fail.
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(path)?;
            }
        }
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if path.file_name().is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path names no file",
            ));
        }
        let private = tempfile::Builder::new()
            .prefix(STAGING_DIR_PREFIX)
            .tempdir_in(parent)?;
        let staged = private.path().join(STAGED_NAME);
        let address = SockAddr::unix(&staged).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "the path is too long to bind safely ({} bytes with the private directory it is bound in first; a socket path has at most {MAX_UNIX_PATH})",
                    staged.as_os_str().len()
                ),
            )
        })?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
        socket.bind(&address)?;
        #[cfg(debug_assertions)]
        crate::master::fault::pause(
            crate::master::fault::UNIX_BIND_PAUSE,
            &format!("after binding {}", path.display()),
        );
        if let Some(mode) = opts.unix_mode {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        }
        if let Some((uid, gid)) = opts.unix_owner {
            nix::unistd::fchownat(
                None,
                &staged,
                Some(uid),
                gid,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        socket.listen(opts.backlog)?;
        socket.set_nonblocking(true)?;
        publish(&staged, path)?;
        // The private directory is empty now; dropping it removes it.
        drop(private);
        Ok(Listener {
            socket,
            addr: BindAddr::Unix(path.to_path_buf()),
            local: format!("{UNIX_PREFIX}{}", path.display()),
            is_unix: true,
            unix_path: Some(path.to_path_buf()),
            fd_name: None,
            tls: false,
            proxy_protocol: false,
        })
    }

    /// Where to reach this listener, for the log: `http://ip:port` or `unix:/path`.
    pub fn url(&self) -> String {
        match (self.is_unix, self.tls) {
            (true, false) => self.local.clone(),
            (true, true) => format!("{} (TLS)", self.local),
            (false, false) => format!("http://{}", self.local),
            (false, true) => format!("https://{}", self.local),
        }
    }

    /// Accepts one connection, non-blocking and close-on-exec from the start
    /// (`accept4`). The listener is non-blocking: `WouldBlock` when none waits.
    pub fn accept(&self) -> std::io::Result<Socket> {
        use nix::sys::socket::{accept4, SockFlag};
        let fd = accept4(
            self.socket.as_raw_fd(),
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )?;
        // SAFETY: accept4 returned a new descriptor we now own.
        Ok(unsafe { Socket::from_raw_fd(fd) })
    }

    /// The accept queue of a TCP listener: (waiting, most allowed), from `TCP_INFO`.
    pub fn queue(&self) -> Option<(u32, u32)> {
        if self.is_unix {
            return None;
        }
        // SAFETY: `tcp_info` is a C struct of integers, for which all zero
        // bytes are a valid value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: info and len describe a valid buffer for TCP_INFO.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        // On a listener, Linux reports the accept queue in unacked, its limit in sacked.
        (rc == 0).then_some((info.tcpi_unacked, info.tcpi_sacked))
    }

    /// Removes the socket file of a Unix listener (the master calls this on exit).
    pub fn cleanup(&self) {
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl std::os::fd::AsFd for Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The error for a descriptor that is not a listening socket.
fn not_a_listener(fd: RawFd) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("descriptor {fd} is not a listening socket"),
    )
}

/// The descriptors the operator handed over with `fd://N`, taken once at
/// start-up and owned for the life of the master (close-on-exec).
#[derive(Debug, Default)]
pub struct InheritedFds {
    /// Listening sockets, by the number they were handed over as.
    listening: BTreeMap<RawFd, OwnedFd>,
    /// Numbers named at start-up that are not listening sockets (left
    /// untouched: not ours), with why.
    refused: BTreeMap<RawFd, String>,
}

impl InheritedFds {
    /// Takes every descriptor an `fd://N` in `binds` names, once.
    ///
    /// # Safety
    ///
    /// Call it once, at start-up, before this process opens any descriptor of
    /// its own that an `fd://N` could name: each listening socket found is
    /// owned from then on.
    pub unsafe fn take<'a>(binds: impl IntoIterator<Item = &'a BindAddr>) -> InheritedFds {
        let mut table = InheritedFds::default();
        for addr in binds {
            let BindAddr::Fd(n) = addr else { continue };
            let n = *n;
            if table.listening.contains_key(&n) || table.refused.contains_key(&n) {
                continue;
            }
            // SAFETY: F_GETFD only asks whether the number is open.
            if unsafe { libc::fcntl(n, libc::F_GETFD) } < 0 {
                let e = std::io::Error::last_os_error();
                table.refused.insert(n, format!("descriptor {n}: {e}"));
                continue;
            }
            // SAFETY: `n` is open (just checked), and nothing closes it while borrowed.
            let borrowed = unsafe { BorrowedFd::borrow_raw(n) };
            if !socket2::SockRef::from(&borrowed)
                .is_listener()
                .unwrap_or(false)
            {
                table.refused.insert(n, not_a_listener(n).to_string());
                continue;
            }
            // SAFETY: the operator handed this listening socket over with
            // fd://N, and this table is its only owner (see the contract).
            let fd = unsafe { OwnedFd::from_raw_fd(n) };
            if let Err(e) = socket2::SockRef::from(&fd).set_cloexec(true) {
                log::warn!("fd://{n}: cannot set close-on-exec: {e}");
            }
            table.listening.insert(n, fd);
        }
        table
    }

    /// A listener on a duplicate of the descriptor handed over as `n`.
    pub fn listener(&self, n: RawFd) -> std::io::Result<Listener> {
        if let Some(reason) = self.refused.get(&n) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                reason.clone(),
            ));
        }
        let Some(fd) = self.listening.get(&n) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "descriptor {n} was not handed over at start-up (fd:// binds are taken once, when the master starts)"
                ),
            ));
        };
        let mut listener = Listener::inherited(fd.try_clone()?)?;
        listener.addr = BindAddr::Fd(n);
        Ok(listener)
    }
}

/// The master's listeners, in `--bind` order. When dropped in the process
/// that made them, it removes the Unix socket files it bound, so every way
/// out of start-up and of the loop leaves nothing behind; a forked child,
/// which never runs the master's destructors anyway, would not remove them.
#[derive(Debug)]
pub struct Listeners {
    list: Vec<Listener>,
    /// The process that bound them.
    owner: u32,
}

impl Listeners {
    /// Each listener, to change how it serves (TLS, PROXY protocol).
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Listener> {
        self.list.iter_mut()
    }

    /// No listeners yet, owned by this process.
    pub fn new() -> Listeners {
        Listeners {
            list: Vec::new(),
            owner: std::process::id(),
        }
    }

    /// Adds one.
    pub fn push(&mut self, listener: Listener) {
        self.list.push(listener);
    }

    /// Takes them all out (their files stay; the caller cleans up those it drops).
    pub fn take(&mut self) -> Vec<Listener> {
        std::mem::take(&mut self.list)
    }

    /// Leaves the socket files in place on exit: a new master took the
    /// listeners over (binary upgrade) and owns the files now.
    pub fn keep_files(&mut self) {
        for l in &mut self.list {
            l.unix_path = None;
        }
    }

    /// Makes this process the owner of its Unix listeners' socket files
    /// (see [`Listener::claim_file`]).
    pub fn claim_files(&mut self) {
        self.list.iter_mut().for_each(Listener::claim_file);
    }

    /// Closes every listener and removes its socket file (stop accepting).
    pub fn close_all(&mut self) {
        for l in self.list.drain(..) {
            l.cleanup();
        }
    }
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners::new()
    }
}

impl Deref for Listeners {
    type Target = [Listener];

    fn deref(&self) -> &[Listener] {
        &self.list
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        if std::process::id() == self.owner {
            self.close_all();
        }
    }
}

/// Moves the socket file at `staged` to `path`, refusing to replace anything
/// there (`EADDRINUSE`, as `bind` would): `renameat2(RENAME_NOREPLACE)`, or
/// `link` and `unlink` on a filesystem without it. Neither follows a symlink
/// at `path`.
fn publish(staged: &std::path::Path, path: &std::path::Path) -> std::io::Result<()> {
    use nix::{errno::Errno, fcntl::RenameFlags};
    let in_use = || {
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "something else appeared at the path while the socket was being bound (it is left as it is)",
        )
    };
    match nix::fcntl::renameat2(None, staged, None, path, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) => Err(in_use()),
        Err(Errno::EINVAL) => match nix::unistd::linkat(
            None,
            staged,
            None,
            path,
            nix::fcntl::AtFlags::empty(), // a link at `staged` is not followed
        ) {
            Ok(()) => {
                let _ = std::fs::remove_file(staged);
                Ok(())
            }
            Err(Errno::EEXIST) => Err(in_use()),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Sets `TCP_DEFER_ACCEPT`: the kernel completes the handshake but queues
/// the connection for `accept` only once data arrived (or after `secs`, when
/// it is queued anyway). A worker then reads the request in the same wake-up
/// as the accept, instead of registering the socket and waiting again: a
/// `Connection: close` request costs five system calls, not seven. Clients
/// that connect and send nothing wait at most `secs` more to be accepted; an
/// HTTP server never speaks first, so no client waits on that.
fn set_defer_accept(socket: &Socket, secs: u32) -> std::io::Result<()> {
    let value = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid socket, option and `c_int` of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_tcp_sockets_have_nodelay_from_the_listener() {
        let opts = SocketOptions {
            backlog: 16,
            ..SocketOptions::default()
        };
        let l = bind_loopback(&opts);
        let _client = std::net::TcpStream::connect(&l.local).unwrap();
        let accepted = accept_within(&l, 200).expect("a connection to accept");
        assert!(accepted.nodelay().unwrap());
        assert!(accepted.nonblocking().unwrap());
    }

    /// A listener on a free loopback port.
    fn bind_loopback(opts: &SocketOptions) -> Listener {
        Listener::bind(
            &"127.0.0.1:0".parse().unwrap(),
            opts,
            &InheritedFds::default(),
        )
        .unwrap()
    }

    /// Polls `l` for a connection every 10 ms, `tries` times.
    fn accept_within(l: &Listener, tries: usize) -> Option<Socket> {
        (0..tries).find_map(|_| {
            let s = l.accept().ok();
            if s.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            s
        })
    }

    #[test]
    fn deferred_accept_waits_for_the_first_bytes() {
        use std::io::Write;
        let opts = SocketOptions {
            backlog: 16,
            defer_accept: 1,
            ..SocketOptions::default()
        };
        let l = bind_loopback(&opts);
        let mut client = std::net::TcpStream::connect(&l.local).unwrap();
        // Connected, but nothing sent: the kernel holds it back (for a
        // second, until it retransmits its SYN-ACK).
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(200) {
            assert!(l.accept().is_err(), "accepted before any bytes arrived");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let accepted = accept_within(&l, 500).expect("accepted once bytes arrived");
        let mut buf = [std::mem::MaybeUninit::new(0u8); 64];
        let n = accepted.recv(&mut buf).expect("the request is there");
        assert!(n > 0);
    }

    #[test]
    fn inherited_descriptors_are_taken_once_and_lent_as_duplicates() {
        let opts = SocketOptions {
            backlog: 16,
            ..SocketOptions::default()
        };
        let none = InheritedFds::default();
        let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), &opts, &none).unwrap();
        let local = l.local.clone();
        let n = l.socket.into_raw_fd();
        let not_listening = std::fs::File::open("/dev/null").unwrap();
        let m = not_listening.as_raw_fd();
        let addrs = [BindAddr::Fd(n), BindAddr::Fd(m), BindAddr::Fd(n)];
        // SAFETY: `n` was given up above; `m` is left alone (not a listener).
        let table = unsafe { InheritedFds::take(&addrs) };
        for _ in 0..2 {
            let dup = table.listener(n).unwrap();
            assert_ne!(dup.as_raw_fd(), n, "a duplicate, not the original");
            assert_eq!(dup.local, local);
            assert_eq!(dup.addr, BindAddr::Fd(n));
        }
        let refused = table.listener(m).unwrap_err().to_string();
        assert!(refused.contains("not a listening socket"), "{refused}");
        let unknown = table.listener(n + 1000).unwrap_err().to_string();
        assert!(unknown.contains("not handed over at start-up"), "{unknown}");
        drop(table);
        assert!(not_listening.metadata().is_ok(), "not closed by the table");
    }

    #[test]
    fn a_unix_socket_is_published_without_replacing_or_following_anything() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"x").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("s.sock");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let opts = SocketOptions {
            backlog: 4,
            unix_mode: Some(0o666),
            ..SocketOptions::default()
        };
        let addr = BindAddr::Unix(path.clone());
        let refused = Listener::bind(&addr, &opts, &InheritedFds::default()).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::AddrInUse, "{refused}");
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the link's target is untouched");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
        std::fs::remove_file(&path).unwrap();
        let l = Listener::bind(&addr, &opts, &InheritedFds::default()).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o666);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(
            left.len(),
            2,
            "the socket and the victim, no private directory"
        );
        l.cleanup();
    }

    #[test]
    fn parses_bind_addresses() {
        assert_eq!(
            "127.0.0.1:0".parse::<BindAddr>(),
            Ok(BindAddr::Tcp("127.0.0.1:0".into()))
        );
        assert_eq!(
            "[::1]:8000".parse::<BindAddr>(),
            Ok(BindAddr::Tcp("[::1]:8000".into()))
        );
        assert_eq!(
            "unix:/tmp/a.sock".parse::<BindAddr>(),
            Ok(BindAddr::Unix("/tmp/a.sock".into()))
        );
        assert!("8000".parse::<BindAddr>().is_err());
        assert!("localhost:http".parse::<BindAddr>().is_err());
        assert!(":80".parse::<BindAddr>().is_err());
        assert!("unix:".parse::<BindAddr>().is_err());
        assert_eq!("fd://3".parse::<BindAddr>(), Ok(BindAddr::Fd(3)));
        assert!("fd://x".parse::<BindAddr>().is_err());
        assert!("fd://-1".parse::<BindAddr>().is_err());
    }
}
