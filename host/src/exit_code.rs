//! The host's exit codes: a protocol for whoever runs it (systemd, a script, a test).

/// A clean stop (after TERM, INT or QUIT).
pub const OK: i32 = 0;
/// Start-up failed for another reason (signal set-up, access log, scoreboard).
pub const STARTUP: i32 = 1;
/// The command line is invalid (clap's own code for usage errors).
pub const USAGE: i32 = 2;
/// A listening address could not be bound.
pub const BIND: i32 = 3;
/// The app could not be loaded or initialised at start-up.
pub const APP_LOAD: i32 = 4;
/// The app passed its probe, but no worker could boot since start-up.
pub const WORKER_BOOT: i32 = 5;
/// A worker stopped for running past `--timeout` (as `timeout(1)` exits).
pub const WORKER_TIMED_OUT: i32 = 124;
