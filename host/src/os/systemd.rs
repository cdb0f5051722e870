//! systemd integration: socket activation (`LISTEN_FDS`) and readiness
//! notification (`sd_notify`, for `Type=notify` units).
//!
//! Both are plain protocols, implemented here without libsystemd: activation
//! passes listening sockets as descriptors 3, 4, … with `LISTEN_PID` naming
//! the process meant to take them; notification sends `KEY=value` lines as one
//! datagram to the Unix socket named by `NOTIFY_SOCKET`.

use std::{
    os::{
        fd::{FromRawFd, OwnedFd, RawFd},
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixDatagram},
    },
    time::Duration,
};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Takes the sockets systemd passed this process, if any, and clears the
/// variables so no child takes them again.
pub fn take_listen_fds() -> Vec<OwnedFd> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<RawFd>().ok())
        .unwrap_or(0);
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // Single-threaded at start-up: nothing reads the environment meanwhile.
        std::env::remove_var(var);
    }
    if !for_us {
        return Vec::new();
    }
    (LISTEN_FDS_START..LISTEN_FDS_START + count.max(0))
        // SAFETY: systemd passed these descriptors to this process to own.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

/// Tells the service manager about the server's state, if it listens.
pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// Connects to `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
                None => SocketAddr::from_pathname(&path).ok()?,
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        // Workers must not talk to the manager in the master's name.
        std::env::remove_var("NOTIFY_SOCKET");
        Notifier { socket }
    }

    /// Closes the socket to the manager (in a forked child: only the master
    /// speaks for the service).
    pub fn close(&mut self) {
        self.socket = None;
    }

    /// Sends `KEY=value` lines; failures are logged, never fatal.
    pub fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.socket {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                log::warn!("sd_notify failed: {e}");
            }
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// `RELOADING=1`, stamped as systemd asks (`MONOTONIC_USEC`).
    pub fn reloading(&self, status: &str) {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| Duration::from(t).as_micros())
            .unwrap_or(0);
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={now}\nSTATUS={status}"
        ));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }

    /// `STATUS=...` alone.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }
}
