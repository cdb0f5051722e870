//! Integration tests: each module starts the real `host` binary and checks one
//! area through HTTP, signals and the log. Run `cargo build --workspace` first.

mod conformance;
mod crash;
mod errors;
mod field_rules;
mod fork_boundary;
mod hardening;
mod inherited_fds;
mod lifecycle;
mod load_errors;
mod logs;
mod nginx;
mod pool;
mod process;
mod reload;
mod reload_descriptors;
mod serve;
mod settings;
mod slow_clients;
mod snapshots;
mod startup_cleanup;
mod status;
mod systemd;
mod thread_timeout;
mod threads;
mod unix_socket;
