//! The error log, behind the `log` facade.
//!
//! Lines have Gunicorn's shape, `[2026-11-24 20:22:38 +0000] [pid] [LEVEL]
//! message`, and go to standard error with one `write` each, so lines from
//! the master and its workers never interleave. `--error-logfile` points
//! standard error itself at the file (in the master, before it forks), so
//! whatever an app prints to stderr or stdout lands there too; `USR1` reopens
//! it after logrotate moved it.

use std::{
    fs::OpenOptions,
    io::{self, Write},
    os::fd::AsRawFd,
    path::Path,
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
        // One write per line: stderr is shared by every process of the server.
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the error log with the given lowest level.
pub fn init(level: log::LevelFilter) {
    static LOGGER: ErrorLog = ErrorLog;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Points standard error (and, in workers, standard output) at `path`,
/// opened for appending; `-` leaves standard error as it is.
pub fn redirect_stderr(path: &Path) -> io::Result<()> {
    if path == Path::new("-") {
        return Ok(());
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    nix::unistd::dup2(file.as_raw_fd(), libc::STDERR_FILENO)?;
    Ok(())
}

/// In a worker: what the app prints to standard output goes to the error log
/// (the access log, even on `-`, has its own descriptor).
pub fn stdout_to_stderr() {
    let _ = nix::unistd::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
}
