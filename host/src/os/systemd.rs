//! systemd integration: socket activation (`LISTEN_FDS`) and readiness
//! notification (`sd_notify`, for `Type=notify` units).
//!
//! Both are plain protocols, implemented here without libsystemd: activation
//! passes listening sockets as descriptors 3, 4, … with `LISTEN_PID` naming
//! the process meant to take them (and `LISTEN_FDNAMES` naming each);
//! notification sends `KEY=value` lines as one datagram to the Unix socket
//! named by `NOTIFY_SOCKET`. A binary upgrade (`USR2`) uses the same
//! activation protocol to hand the listeners to the new master
//! ([`crate::os::handover`]), which then tells the manager it is the main
//! process (`MAINPID=`) when it takes over.

use std::{
    cell::Cell,
    ffi::OsString,
    os::{
        fd::{FromRawFd, OwnedFd, RawFd},
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixDatagram},
    },
    time::Duration,
};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The name `sd_listen_fds_with_names` gives a descriptor `LISTEN_FDNAMES` does not name.
pub const UNNAMED: &str = "unknown";

/// Takes the sockets systemd (or a master handing over, see
/// [`crate::os::handover`]) passed this process, if any, each with its name
/// from `LISTEN_FDNAMES` ([`UNNAMED`] when it has none), and clears the
/// variables so no child takes them again.
pub fn take_listen_fds() -> Vec<(String, OwnedFd)> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<RawFd>().ok())
        .unwrap_or(0);
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // Single-threaded at start-up: nothing reads the environment meanwhile.
        std::env::remove_var(var);
    }
    if !for_us {
        return Vec::new();
    }
    let mut names = names.split(':').filter(|n| !n.is_empty());
    (LISTEN_FDS_START..LISTEN_FDS_START + count.max(0))
        .map(|fd| {
            let name = names.next().unwrap_or(UNNAMED).to_owned();
            // SAFETY: systemd passed these descriptors to this process to own.
            (name, unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect()
}

/// Tells the service manager about the server's state, if it listens.
pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    /// `NOTIFY_SOCKET` as this process found it, for a new master started
    /// by a binary upgrade (children do not see the variable).
    original: Option<OsString>,
    /// A new master taking over from an old one: silent until it has taken
    /// over (the old master still speaks for the service), then its first
    /// `READY=1` says `MAINPID=` too.
    successor: Cell<Successor>,
}

/// Where a master started by a binary upgrade stands with the manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Successor {
    /// Not started by an upgrade.
    No,
    /// Not taken over yet: nothing is sent.
    Waiting,
    /// Took over: the next `READY=1` carries `MAINPID=`.
    TookOver,
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
        let original = std::env::var_os("NOTIFY_SOCKET");
        // Workers must not talk to the manager in the master's name.
        std::env::remove_var("NOTIFY_SOCKET");
        Notifier {
            socket,
            original,
            successor: Cell::new(Successor::No),
        }
    }

    /// `NOTIFY_SOCKET` as this process was started with (to pass on to a new
    /// master on a binary upgrade).
    pub fn original_socket(&self) -> Option<&OsString> {
        self.original.as_ref()
    }

    /// This master was started by a binary upgrade: it says nothing to the
    /// manager until [`Notifier::took_over`].
    pub fn hold_until_taken_over(&mut self) {
        self.successor.set(Successor::Waiting);
    }

    /// This master has taken over from the old one: it speaks for the
    /// service now, and its next [`Notifier::ready`] names it the main process.
    pub fn took_over(&mut self) {
        if self.successor.get() == Successor::Waiting {
            self.successor.set(Successor::TookOver);
        }
    }

    /// Closes the socket to the manager (in a forked child: only the master
    /// speaks for the service).
    pub fn close(&mut self) {
        self.socket = None;
    }

    /// Sends `KEY=value` lines; failures are logged, never fatal.
    pub fn send(&self, message: &str) {
        if self.successor.get() == Successor::Waiting {
            return;
        }
        if let Some((socket, addr)) = &self.socket {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                log::warn!("sd_notify failed: {e}");
            }
        }
    }

    /// `READY=1` with a status line; after a take-over, the first one also
    /// names this process the service's main process (`MAINPID=`: the unit
    /// needs `NotifyAccess=all`, as the old master started this one).
    pub fn ready(&self, status: &str) {
        if self.successor.get() == Successor::TookOver {
            self.successor.set(Successor::No);
            let pid = std::process::id();
            self.send(&format!("MAINPID={pid}\nREADY=1\nSTATUS={status}"));
        } else {
            self.send(&format!("READY=1\nSTATUS={status}"));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_master_is_silent_until_it_takes_over_then_names_itself_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let manager = UnixDatagram::bind(&path).unwrap();
        manager.set_nonblocking(true).unwrap();
        let mut notifier = Notifier {
            socket: Some((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            )),
            original: None,
            successor: Cell::new(Successor::No),
        };
        let next = || {
            let mut buf = [0u8; 256];
            let n = manager.recv(&mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        notifier.hold_until_taken_over();
        notifier.ready("booting");
        notifier.stopping("failed");
        assert_eq!(next(), None, "nothing before the take-over");
        notifier.took_over();
        notifier.ready("2 worker(s)");
        let pid = std::process::id();
        let want = format!("MAINPID={pid}\nREADY=1\nSTATUS=2 worker(s)");
        assert_eq!(next().as_deref(), Some(want.as_str()));
        notifier.ready("reloaded");
        assert_eq!(next().as_deref(), Some("READY=1\nSTATUS=reloaded"));
        // A master not started by an upgrade never says MAINPID.
        notifier.took_over();
        notifier.ready("again");
        assert_eq!(next().as_deref(), Some("READY=1\nSTATUS=again"));
    }
}
