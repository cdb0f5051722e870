//! Exit codes: one protocol for every process of the server, no number reused.
//!
//! The `host` process (the master, and the `host status`, `host new` and
//! `host ctl` commands) exits with 0–7; whoever runs it (systemd, a script, a test)
//! reads them. Its children exit with 20 and up, or 124; the master reads
//! those and logs what each means, and operators see them in "worker N
//! exited with status S" lines.

/// A clean stop (after TERM, INT or QUIT); also a worker's clean exit.
pub const OK: i32 = 0;
/// Start-up failed for another reason (signal set-up, access log, scoreboard);
/// `host new` could not write the crate.
pub const STARTUP: i32 = 1;
/// The command line is invalid (clap's own code for usage errors); for
/// `host new`, also an invalid crate name or a directory that is not empty.
pub const USAGE: i32 = 2;
/// A listening address could not be bound.
pub const BIND: i32 = 3;
/// The app could not be loaded or initialised at start-up.
pub const APP_LOAD: i32 = 4;
/// The app passed its probe, but no worker could boot since start-up.
pub const WORKER_BOOT: i32 = 5;
/// `host ctl`: the master refused the request, or the change it asked for
/// failed (a build refused, a rollout abandoned or rolled back).
pub const CTL_REFUSED: i32 = 6;
/// `host ctl`: no master answered at the control socket (or it closed the
/// connection without a result).
pub const CTL_UNREACHABLE: i32 = 7;

/// A probe child found a problem with a build (its message is in the pipe).
pub const PROBE_FAILED: i32 = 20;
/// A worker could not load or initialise the app, or set itself up (the
/// master counts a boot failure).
pub const WORKER_BOOT_FAILED: i32 = 21;
/// A worker's event loop failed after it booted (epoll, signalfd).
pub const WORKER_LOOP_FAILED: i32 = 22;
/// Host code panicked in a child (a worker or a probe): a bug, logged with
/// its message; the child leaves without running any destructor.
pub const CHILD_PANICKED: i32 = 23;
/// A binary upgrade's new master could not be executed (the child between
/// `fork` and `execve` logs why); the old master keeps serving.
pub const SUCCESSOR_EXEC_FAILED: i32 = 24;
/// A worker stopped for running past `--timeout` (as `timeout(1)` exits).
pub const WORKER_TIMED_OUT: i32 = 124;
