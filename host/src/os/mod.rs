//! The operating system's side of the server: listening sockets, systemd's
//! protocols, signals, and what the server does to its own processes.

pub mod listener;
pub mod process;
pub mod signals;
pub mod systemd;
