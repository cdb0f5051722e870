//! Checking that an app loads, in a short-lived child, before any worker uses it.
//!
//! The master never loads app code (a crash in an app's loader or init must not
//! take the master down, and the master must stay free of app state across
//! forks). So it forks a probe child that loads the library, runs abi_stable's
//! checks and the app's init and exit hooks, and reports back through a pipe:
//! nothing on success, a one-line message on failure.

use std::{
    io::Read,
    os::fd::{AsRawFd, OwnedFd},
    time::{Duration, Instant},
};

use abi_stable::std_types::RStr;
use app_sdk::abi::{HandleOutcome, WorkerInfo};
use nix::{
    poll::PollFlags,
    sys::{
        signal::{kill, Signal},
        wait::{waitpid, WaitStatus},
    },
    unistd::{fork, pipe, ForkResult},
};

use crate::{app::AppSpec, conn::wait_for, signals};

/// How long loading and initialising the app may take in the probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Exit status of a probe that found a problem (the message is in the pipe).
const PROBE_FAILED: i32 = 1;

/// Loads `spec` in a child process; `Err` carries a one-line reason.
pub fn check(spec: &AppSpec) -> Result<(), String> {
    let (read_end, write_end) = pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    // SAFETY: the master is single-threaded; the child only loads the app and exits.
    match unsafe { fork() }.map_err(|e| format!("cannot fork: {e}"))? {
        ForkResult::Child => {
            drop(read_end);
            probe_child(spec, write_end)
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let message = read_report(read_end);
            let status = match &message {
                Err(_) => {
                    let _ = kill(child, Signal::SIGKILL);
                    waitpid(child, None)
                }
                Ok(_) => waitpid(child, None),
            };
            let message = message?;
            match status {
                Ok(WaitStatus::Exited(_, 0)) if message.is_empty() => Ok(()),
                Ok(WaitStatus::Exited(_, _)) if !message.is_empty() => Err(message),
                Ok(WaitStatus::Exited(_, code)) => {
                    Err(format!("the app exited the process with status {code} while loading"))
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    Err(format!("the app crashed while loading ({})", sig.as_str()))
                }
                Ok(other) => Err(format!("the probe ended unexpectedly: {other:?}")),
                Err(e) => Err(format!("cannot wait for the probe: {e}")),
            }
        }
    }
}

fn read_report(read_end: OwnedFd) -> Result<String, String> {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut file = std::fs::File::from(read_end);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        wait_for(file.as_raw_fd(), PollFlags::POLLIN, deadline).map_err(|_| {
            format!(
                "the app took longer than {} s to load and initialise",
                PROBE_TIMEOUT.as_secs()
            )
        })?;
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read the probe's report: {e}")),
        }
    }
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

fn probe_child(spec: &AppSpec, report: OwnedFd) -> ! {
    let _ = signals::reset_in_child();
    let result = crate::app::load(spec)
        .map_err(|e| e.to_string())
        .and_then(|module| {
            let info = WorkerInfo {
                worker_id: 0,
                pid: std::process::id(),
                app_name: RStr::from_str(&spec.name),
            };
            let handle = (module.init())(&info)
                .into_result()
                .map_err(|e| format!("app `{}` failed to initialise: {e}", spec.name))?;
            match (module.exit())(handle) {
                HandleOutcome::Done => Ok(()),
                HandleOutcome::Panicked(m) => Err(format!("app `{}` exit hook panicked: {m}", spec.name)),
            }
        });
    let code = match result {
        Ok(()) => 0,
        Err(message) => {
            let line = message.replace('\n', " ");
            let _ = nix::unistd::write(&report, line.as_bytes());
            PROBE_FAILED
        }
    };
    drop(report);
    // SAFETY: leave without running the master's atexit handlers or destructors.
    unsafe { libc::_exit(code) }
}
