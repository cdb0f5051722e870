//! The error log (through the `log` facade) and the access log.
//!
//! The error log goes to stderr in Gunicorn's shape,
//! `[2026-11-24 20:22:38 +0000] [pid] [LEVEL] message`, one `write` per line so
//! lines from the master and its workers never interleave. The access log is
//! opened by the master before it forks (workers inherit the descriptor, in
//! append mode) and written one line per request, in Apache's combined format.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::fd::{AsRawFd, BorrowedFd},
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

/// Where access-log lines go.
#[derive(Debug)]
pub enum AccessLogTarget {
    /// Standard output (`--access-logfile -`).
    Stdout,
    /// A file opened for appending.
    File(File),
}

impl AccessLogTarget {
    /// Opens `--access-logfile PATH` (`-` is stdout).
    pub fn open(path: &Path) -> io::Result<AccessLogTarget> {
        if path == Path::new("-") {
            return Ok(AccessLogTarget::Stdout);
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(AccessLogTarget::File)
    }

    /// Writes one whole line with a single `write` (atomic for O_APPEND files).
    pub fn write_line(&self, line: &[u8]) {
        let fd = match self {
            AccessLogTarget::Stdout => io::stdout().as_raw_fd(),
            AccessLogTarget::File(f) => f.as_raw_fd(),
        };
        // SAFETY: the descriptor stays open for the life of the process.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = nix::unistd::write(fd, line);
    }
}

/// What the access log records of one request.
pub struct AccessEntry<'a> {
    /// The client address (`-` when unknown).
    pub remote: &'a str,
    /// The request line as received, e.g. `GET /x HTTP/1.1`.
    pub method: &'a [u8],
    /// The request-target.
    pub target: &'a [u8],
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: &'a str,
    /// The response status.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// The `Referer` header, if any.
    pub referer: Option<&'a [u8]>,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<&'a [u8]>,
}

/// Appends `entry` to `out` in Apache's combined format, with its newline.
///
/// `clf_time` is the time in Common Log Format, e.g. `24/Nov/2026:20:22:38 +0000`.
pub fn format_combined(out: &mut Vec<u8>, entry: &AccessEntry<'_>, clf_time: &[u8]) {
    out.extend_from_slice(if entry.remote.is_empty() {
        b"-"
    } else {
        entry.remote.as_bytes()
    });
    out.extend_from_slice(b" - - [");
    out.extend_from_slice(clf_time);
    out.extend_from_slice(b"] \"");
    escape_into(out, entry.method);
    out.push(b' ');
    escape_into(out, entry.target);
    out.push(b' ');
    out.extend_from_slice(entry.version.as_bytes());
    out.extend_from_slice(b"\" ");
    out.extend_from_slice(itoa::Buffer::new().format(entry.status).as_bytes());
    out.push(b' ');
    if entry.bytes == 0 {
        out.push(b'-');
    } else {
        out.extend_from_slice(itoa::Buffer::new().format(entry.bytes).as_bytes());
    }
    for field in [entry.referer, entry.user_agent] {
        out.extend_from_slice(b" \"");
        match field {
            Some(v) => escape_into(out, v),
            None => out.push(b'-'),
        }
        out.push(b'"');
    }
    out.push(b'\n');
}

/// Copies `bytes`, escaping quotes, backslashes and non-printable bytes so a
/// client cannot forge log lines.
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push(b'\\');
                out.push(b);
            }
            0x20..=0x7e => out.push(b),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_format() {
        let mut out = Vec::new();
        format_combined(
            &mut out,
            &AccessEntry {
                remote: "127.0.0.1",
                method: b"GET",
                target: b"/x?\"y\"",
                version: "HTTP/1.1",
                status: 200,
                bytes: 13,
                referer: None,
                user_agent: Some(b"curl/8\n"),
            },
            b"24/Nov/2026:20:22:38 +0000",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1 - - [24/Nov/2026:20:22:38 +0000] \"GET /x?\\\"y\\\" HTTP/1.1\" 200 13 \"-\" \"curl/8\\x0a\"\n"
        );
    }
}
