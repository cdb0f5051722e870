//! The operating system's side of the server: listening sockets, systemd's
//! protocols, signals, resource limits, and what the server does to its own
//! processes.

pub mod limits;
pub mod listener;
pub mod process;
pub mod signals;
pub mod systemd;
