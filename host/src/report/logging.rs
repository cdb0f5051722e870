//! The error log, behind the `log` facade.
//!
//! Lines have Gunicorn's shape, `[2026-11-24 20:22:38 +0000] [pid] [LEVEL]
//! message`, and go to standard error with one `write` each, so lines from
//! the master and its workers never interleave. `--error-logfile` points
//! standard error itself at the file (in the master, before it forks).
//! Whatever an app prints to stdout or stderr goes through pipes to the
//! master, which logs each line tagged with the worker (or the probe) and
//! the stream; what it logs through the host (`HostFns::log`) is written by
//! the worker itself, tagged `worker N: app …` (see
//! `crate::worker::host_fns`). `USR1` reopens the file after logrotate moved it.

use std::{
    fs::OpenOptions,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicI32, Ordering},
        Mutex,
    },
};

use time::{format_description::FormatItem, macros::format_description, OffsetDateTime};

/// The timestamp format of error-log lines.
const ERROR_LOG_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second] +0000");

/// The logger behind `log::info!` and friends.
struct ErrorLog;

impl log::Log for ErrorLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = OffsetDateTime::now_utc()
            .format(ERROR_LOG_TIME)
            .unwrap_or_default();
        let level = match record.level() {
            log::Level::Error => "ERROR",
            log::Level::Warn => "WARNING",
            log::Level::Info => "INFO",
            log::Level::Debug => "DEBUG",
            log::Level::Trace => "TRACE",
        };
        let line = format!(
            "[{now}] [{}] [{level}] {}\n",
            std::process::id(),
            record.args()
        );
        if TAPPING.load(Ordering::Relaxed) && record.target().starts_with(TAPPED_TARGET) {
            if let Ok(mut tapped) = TAPPED.lock() {
                tapped.push(line.trim_end().to_owned());
            }
        }
        // One write per line: the log is shared by every process of the server.
        let fd = LOG_FD.load(Ordering::Relaxed);
        // SAFETY: LOG_FD is an open descriptor for the life of the process.
        let _ = nix::unistd::write(unsafe { BorrowedFd::borrow_raw(fd) }, line.as_bytes());
    }

    fn flush(&self) {}
}

/// The master's own lines (its modules' target), which clients of the
/// control socket following a change (`host ctl reload --wait`) receive.
const TAPPED_TARGET: &str = "host::master";

/// Whether the master's lines are kept for [`take_tapped`].
static TAPPING: AtomicBool = AtomicBool::new(false);

/// The master's lines kept since the last [`take_tapped`].
static TAPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Starts or stops keeping the master's log lines (while a control client
/// follows a change); off in every forked child.
pub fn tap(on: bool) {
    TAPPING.store(on, Ordering::Relaxed);
    if !on {
        drop(take_tapped());
    }
}

/// The master's lines logged since the last call (while tapping).
pub fn take_tapped() -> Vec<String> {
    TAPPED
        .lock()
        .map(|mut lines| std::mem::take(&mut *lines))
        .unwrap_or_default()
}

/// Installs the error log with the given lowest level.
pub fn init(level: log::LevelFilter) {
    static LOGGER: ErrorLog = ErrorLog;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Where this process writes its log lines: standard error, except in a
/// worker, whose standard error is a pipe to the master (see [`capture_output`]).
static LOG_FD: AtomicI32 = AtomicI32::new(libc::STDERR_FILENO);

/// Points the error log (standard error of the master, the log descriptor of
/// a worker) at `path`, opened for appending; `-` leaves it as it is.
pub fn reopen(path: &Path) -> io::Result<()> {
    if path == Path::new("-") {
        return Ok(());
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    nix::unistd::dup2(file.as_raw_fd(), LOG_FD.load(Ordering::Relaxed))?;
    Ok(())
}

/// In a worker, before the app loads: keeps the error log on a descriptor of
/// its own for the worker's lines, and points standard output and standard
/// error at the pipes the master reads, so what the app prints reaches the
/// error log tagged with the worker and the stream.
pub fn capture_output(stdout: OwnedFd, stderr: OwnedFd) -> nix::Result<()> {
    let log = nix::fcntl::fcntl(
        libc::STDERR_FILENO,
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(LOG_FD_FLOOR),
    )?;
    LOG_FD.store(log, Ordering::Relaxed);
    nix::unistd::dup2(stdout.as_raw_fd(), libc::STDOUT_FILENO)?;
    nix::unistd::dup2(stderr.as_raw_fd(), libc::STDERR_FILENO)?;
    Ok(())
}

/// Lowest descriptor number for a worker's private log descriptor.
const LOG_FD_FLOOR: i32 = 10;

/// Longest line of app output the master passes on whole; longer ones are split.
pub const MAX_OUTPUT_LINE: usize = 8192;

/// The master's end of one worker stream (stdout or stderr).
#[derive(Debug)]
pub struct OutputPipe {
    fd: OwnedFd,
    partial: Vec<u8>,
    /// The worker closed its end: nothing more to poll for.
    closed: bool,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
}

impl OutputPipe {
    /// The master's end of a pipe (non-blocking).
    pub fn new(fd: OwnedFd, stream: &'static str) -> OutputPipe {
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        OutputPipe {
            fd,
            partial: Vec::new(),
            closed: false,
            stream,
        }
    }

    /// The descriptor to poll, until the worker closed its end.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        (!self.closed).then(|| self.fd.as_fd())
    }

    /// Logs every complete line that arrived, as `tag stream: line`; with
    /// `last`, the unfinished line too.
    pub fn drain(&mut self, tag: &str, last: bool) {
        let mut buf = [0u8; 8192];
        loop {
            match nix::unistd::read(self.fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => self.partial.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        while let Some(end) = self
            .partial
            .iter()
            .position(|&b| b == b'\n')
            .or((self.partial.len() >= MAX_OUTPUT_LINE).then_some(MAX_OUTPUT_LINE))
        {
            let line: Vec<u8> = self.partial.drain(..end.min(self.partial.len())).collect();
            if self.partial.first() == Some(&b'\n') {
                self.partial.remove(0);
            }
            log::info!(
                "{tag} {}: {}",
                self.stream,
                String::from_utf8_lossy(&line).trim_end()
            );
        }
        if last && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            log::info!(
                "{tag} {}: {}",
                self.stream,
                String::from_utf8_lossy(&line).trim_end()
            );
        }
    }
}
