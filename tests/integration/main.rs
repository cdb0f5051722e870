//! Integration tests: each module starts the real `host` binary and checks one
//! area through HTTP, signals and the log. Run `cargo build --workspace` first.

mod axum_app;
mod bad_build;
mod compat;
mod conformance;
mod crash;
mod crash_loop;
mod errors;
mod field_rules;
mod fork_boundary;
mod forwarded_headers;
mod hardening;
mod inherited_fds;
mod lifecycle;
mod load_errors;
mod logs;
mod nginx;
mod out_of_descriptors;
mod pipelining_bounded;
mod pool;
mod process;
mod refused_requests;
mod reload;
mod reload_descriptors;
mod serve;
mod settings;
mod slow_clients;
mod slow_readers;
mod snapshots;
mod startup_cleanup;
mod status;
mod status_server;
mod systemd;
mod thread_timeout;
mod threads;
mod unix_socket;
