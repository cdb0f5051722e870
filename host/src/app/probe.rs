//! Checking that an app build loads, in a short-lived child, before any worker uses it.
//!
//! The master never loads app code: a crash in an app's loader or init must not
//! take it down, and it must stay free of app state across forks. So it forks a
//! probe child that loads the library, runs abi_stable's checks and the app's
//! init and exit hooks, and reports through a pipe: nothing on success, a
//! one-line message on failure. A [`Probe`] runs alongside the master's loop
//! (reloads never stall it); [`check`] waits for one (start-up).
//!
//! The report pipe is close-on-exec: a process the app's init starts (a
//! helper daemon, a `sleep`) must not hold it open, or the master would wait
//! for that process instead of the probe.
//!
//! What the app prints in the probe goes, as a worker's does, through pipes
//! to the master, which logs each line tagged `probe (pid N) stdout:` (or
//! `stderr:`), so a line from the probe's `init` is told from a worker's and
//! never lands untagged in the master's stderr or in an access log on
//! stdout. The master polls those pipes with the report (a full pipe would
//! stall the probe) but never waits for them to close: the app's helpers
//! may hold them.
//!
//! The child closes the master-only descriptors it inherited (the caller
//! says which), and leaves through [`crate::os::process::leave_child`].

use std::{
    fs::File,
    io::Read,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    time::{Duration, Instant},
};

use abi_stable::std_types::RStr;
use app_sdk::abi::{size_u32, WorkerInfo, WORKER_PROBE};
use nix::{
    fcntl::{fcntl, FcntlArg, OFlag},
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::{
        signal::{kill, Signal},
        wait::{waitpid, WaitStatus},
    },
    unistd::{fork, pipe2, ForkResult, Pid},
};

use crate::{
    app::AppSpec,
    exit_code,
    os::process::{self, Identity},
    os::signals,
    report::logging::OutputPipe,
};

/// A probe child in flight.
pub struct Probe {
    /// The child's pid.
    pub pid: Pid,
    pipe: File,
    /// The probe's stdout and stderr, logged as lines arrive.
    output: Vec<OutputPipe>,
    report: Vec<u8>,
    eof: bool,
    status: Option<WaitStatus>,
    /// When it was forked.
    pub started: Instant,
}

/// What the probe tells the app about the worker it stands for.
#[derive(Debug, Clone, Copy)]
pub struct ProbeAs {
    /// The workers' `--threads`.
    pub threads: u32,
    /// The generation the build would start.
    pub generation: u32,
}

impl Probe {
    /// Forks a probe of `spec`; `close_in_child` runs first thing in the
    /// child, to close the master-only descriptors it inherited.
    pub fn start(
        spec: &AppSpec,
        probe_as: ProbeAs,
        identity: Option<&Identity>,
        close_in_child: impl FnOnce(),
    ) -> Result<Probe, String> {
        let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"));
        let (read_end, write_end) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        // SAFETY: the master is single-threaded; the child only loads the app and exits.
        match unsafe { fork() }.map_err(|e| format!("cannot fork: {e}"))? {
            ForkResult::Child => {
                drop((read_end, out_r, err_r));
                close_in_child();
                process::leave_child(|| {
                    probe_child(spec, probe_as, identity, write_end, (out_w, err_w))
                })
            }
            ForkResult::Parent { child } => {
                drop((write_end, out_w, err_w));
                let _ = fcntl(read_end.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
                Ok(Probe {
                    pid: child,
                    pipe: File::from(read_end),
                    output: vec![
                        OutputPipe::new(out_r, "stdout"),
                        OutputPipe::new(err_r, "stderr"),
                    ],
                    report: Vec::new(),
                    eof: false,
                    status: None,
                    started: Instant::now(),
                })
            }
        }
    }

    /// The pipes to poll: the report's, then the output's still open.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        std::iter::once(self.pipe.as_fd()).chain(self.output.iter().filter_map(OutputPipe::fd))
    }

    /// Logs what the probe printed so far (`last`: all of it, even an
    /// unfinished line).
    fn drain_output(&mut self, last: bool) {
        let tag = format!("probe (pid {})", self.pid);
        for pipe in &mut self.output {
            pipe.drain(&tag, last);
        }
    }

    /// Reads what the child reported and printed so far.
    pub fn read_ready(&mut self) {
        self.drain_output(false);
        let mut buf = [0u8; 4096];
        while !self.eof {
            match self.pipe.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.report.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => self.eof = true,
            }
        }
    }

    /// Records how the child exited (the master reaps it with the workers).
    pub fn exited(&mut self, status: WaitStatus) {
        self.status = Some(status);
        self.read_ready();
        self.drain_output(true);
        self.eof = true;
    }

    /// Kills the child (it took too long); the master still reaps it.
    pub fn kill(&self) {
        let _ = kill(self.pid, Signal::SIGKILL);
    }

    /// The verdict, once the child has exited and its report is read.
    pub fn outcome(&self) -> Option<Result<(), String>> {
        let status = self.status?;
        if !self.eof {
            return None;
        }
        let message = String::from_utf8_lossy(&self.report).trim().to_owned();
        Some(match status {
            WaitStatus::Exited(_, exit_code::OK) if message.is_empty() => Ok(()),
            WaitStatus::Exited(_, _) if !message.is_empty() => Err(message),
            WaitStatus::Exited(_, exit_code::CHILD_PANICKED) => {
                Err("the probe panicked in host code (its message is in the log)".into())
            }
            WaitStatus::Exited(_, code) => Err(format!(
                "the app exited the process with status {code} while loading"
            )),
            WaitStatus::Signaled(_, Signal::SIGKILL, _) => {
                Err("the probe was killed (it took too long, or ran out of memory)".into())
            }
            WaitStatus::Signaled(_, sig, _) => {
                Err(format!("the app crashed while loading ({})", sig.as_str()))
            }
            other => Err(format!("the probe ended unexpectedly: {other:?}")),
        })
    }
}

/// Probes `spec` and waits for the verdict, killing the probe after `timeout`
/// (`close_in_child` as for [`Probe::start`]).
pub fn check(
    spec: &AppSpec,
    probe_as: ProbeAs,
    timeout: Duration,
    identity: Option<&Identity>,
    close_in_child: impl FnOnce(),
) -> Result<(), String> {
    let mut probe = Probe::start(spec, probe_as, identity, close_in_child)?;
    let deadline = probe.started + timeout;
    let mut timed_out = false;
    while !probe.eof {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            probe.kill();
            break;
        }
        let mut fds: Vec<PollFd<'_>> = probe
            .fds()
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        let millis = left.as_millis().min(i32::MAX as u128) as i32;
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                probe.kill();
                let _ = waitpid(probe.pid, None);
                return Err(format!("cannot wait for the probe: {e}"));
            }
        }
        drop(fds);
        probe.read_ready();
    }
    let status = waitpid(probe.pid, None).map_err(|e| format!("cannot wait for the probe: {e}"))?;
    probe.exited(status);
    if timed_out {
        return Err(format!(
            "the app took longer than {} s to load and initialise (--boot-timeout)",
            timeout.as_secs()
        ));
    }
    probe
        .outcome()
        .unwrap_or_else(|| Err("the probe gave no verdict".into()))
}

/// The probe child's life: loads and checks the app, writes a failure to
/// `report`; returns the exit code.
fn probe_child(
    spec: &AppSpec,
    probe_as: ProbeAs,
    identity: Option<&Identity>,
    report: OwnedFd,
    (stdout, stderr): (OwnedFd, OwnedFd),
) -> i32 {
    let _ = signals::reset_in_child(&[]);
    process::set_title("host: probe");
    crate::worker::host_fns::set_log_identity(crate::worker::host_fns::PROBE);
    // The app's prints go to the master, which logs them tagged as the probe's.
    if let Err(err) = crate::report::logging::capture_output(stdout, stderr) {
        log::warn!("probe: cannot capture its output: {err}");
    }
    // The probe runs app code, so it runs as the workers will.
    let dropped = match identity {
        Some(id) => {
            process::drop_to(id).map_err(|e| format!("cannot switch to user {:?}: {e}", id.name))
        }
        None => Ok(()),
    };
    let result = dropped
        .and_then(|()| crate::app::load(spec).map_err(|e| e.to_string()))
        .and_then(|module| {
            if module.panic_abort {
                // Once per build (the probe runs once for each), not per worker.
                log::warn!(
                    "app `{}` was built with panic = \"abort\": a panic kills its worker (the \
                     worker's connections are reset) instead of being answered 500; build it \
                     with panic = \"unwind\" (the default)",
                    spec.name
                );
            }
            let info = WorkerInfo {
                size: size_u32::<WorkerInfo<'_>>(),
                worker_id: 0,
                pid: std::process::id(),
                threads: probe_as.threads,
                generation: probe_as.generation,
                flags: WORKER_PROBE,
                app_name: RStr::from_str(&spec.name),
            };
            let app = crate::app::LoadedApp::init(&module, crate::worker::host_fns::table(), &info)
                .map_err(|e| format!("app `{}` failed to initialise: {e}", spec.name))?;
            app.exit()
                .map_err(|e| format!("app `{}` exit hook {e}", spec.name))
        });
    match result {
        Ok(()) => exit_code::OK,
        Err(message) => {
            let line = message.replace('\n', " ");
            let _ = nix::unistd::write(&report, line.as_bytes());
            exit_code::PROBE_FAILED
        }
    }
}
