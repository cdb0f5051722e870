//! The operating system's side of the server: listening sockets, systemd's
//! protocols (and the binary upgrade's hand-over, which speaks them),
//! signals, resource limits, and what the server does to its own processes.

pub mod handover;
pub mod limits;
pub mod listener;
pub mod process;
pub mod signals;
pub mod systemd;
