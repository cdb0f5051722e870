//! `flaky`: an app whose failure rate, added latency and crash rate are set
//! per build, to show (and test) canary rollouts and their rollbacks.
//!
//! - A share `errors` of requests is answered `500`.
//! - Every request waits `latency_ms` milliseconds first.
//! - A share `crash` of requests aborts the worker (`std::process::abort`):
//!   the worker dies with the request unanswered.
//! - Otherwise `200`, with the settings and the worker's pid in the body;
//!   every response (500s too) carries the settings in `X-Flaky-Build`.
//!
//! The settings are part of the build's bytes, so distinct builds need no
//! compiler: copy `libflaky.so` and append a trailer line
//!
//! ```text
//! FLAKY errors=0.3 latency_ms=0 crash=0
//! ```
//!
//! (a shared library with bytes after its end loads as before; the content
//! hash, hence the build, differs). At init the app finds its own loaded
//! file with `dladdr` (the host loads a snapshot, possibly through a
//! `/proc/self/fd/N` path: both readable from the worker), reads its last
//! [`TRAILER_TAIL`] bytes and takes the last `FLAKY ` line there. Without
//! one it reads `FLAKY_ERRORS`, `FLAKY_LATENCY_MS` and `FLAKY_CRASH` from
//! the environment, and falls back to a healthy app (0, 0, 0).
//!
//! Serve it with `host -w 4 --rollout canary target/debug/libflaky.so`.

use std::{
    ffi::CStr,
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use app_sdk::{export_app, App, Request, Response, Worker};

/// Bytes at the end of the library searched for the trailer line.
pub const TRAILER_TAIL: u64 = 512;
/// What starts the trailer line.
pub const TRAILER_PREFIX: &str = "FLAKY ";
/// Environment variable: the share of requests answered 500 (without a trailer).
pub const ERRORS_ENV: &str = "FLAKY_ERRORS";
/// Environment variable: milliseconds added to every request (without a trailer).
pub const LATENCY_ENV: &str = "FLAKY_LATENCY_MS";
/// Environment variable: the share of requests that abort the worker (without a trailer).
pub const CRASH_ENV: &str = "FLAKY_CRASH";
/// The longest added latency accepted, in milliseconds.
pub const MAX_LATENCY_MS: u64 = 60_000;

/// How this build misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The share of requests answered 500 (0 to 1).
    pub errors: f64,
    /// Milliseconds every request waits.
    pub latency_ms: u64,
    /// The share of requests that abort the worker (0 to 1).
    pub crash: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            errors: 0.0,
            latency_ms: 0,
            crash: 0.0,
        }
    }
}

impl std::fmt::Display for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "errors={} latency_ms={} crash={}",
            self.errors, self.latency_ms, self.crash
        )
    }
}

/// A share from 0 to 1, if `s` is one.
fn share(s: &str) -> Option<f64> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| (0.0..=1.0).contains(v))
}

/// A latency in milliseconds, if `s` is one.
fn millis(s: &str) -> Option<u64> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|v| *v <= MAX_LATENCY_MS)
}

/// The settings of the last `FLAKY ` line in `tail` (the end of the
/// library); keys not given, or given wrong, are healthy.
pub fn parse_trailer(tail: &[u8]) -> Option<Settings> {
    let text = String::from_utf8_lossy(tail);
    let line = text
        .split('\n')
        .rev()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(TRAILER_PREFIX))?;
    let mut settings = Settings::default();
    for (key, value) in line.split_whitespace().filter_map(|w| w.split_once('=')) {
        match key {
            "errors" => settings.errors = share(value).unwrap_or(0.0),
            "latency_ms" => settings.latency_ms = millis(value).unwrap_or(0),
            "crash" => settings.crash = share(value).unwrap_or(0.0),
            _ => {}
        }
    }
    Some(settings)
}

/// The settings from the environment (`lookup` reads a variable).
pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Settings {
    Settings {
        errors: lookup(ERRORS_ENV).and_then(|v| share(&v)).unwrap_or(0.0),
        latency_ms: lookup(LATENCY_ENV).and_then(|v| millis(&v)).unwrap_or(0),
        crash: lookup(CRASH_ENV).and_then(|v| share(&v)).unwrap_or(0.0),
    }
}

/// The file this library was loaded from, as the loader knows it.
fn own_file() -> Option<PathBuf> {
    let mut info = libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    let here = own_file as *const libc::c_void;
    // SAFETY: `here` is an address inside this library and `info` a valid
    // out-parameter; dladdr only writes to it.
    let found = unsafe { libc::dladdr(here, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr set `dli_fname` to a NUL-terminated string owned by the
    // loader, valid while the library is loaded (it never unloads).
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    Some(PathBuf::from(name.to_string_lossy().into_owned()))
}

/// The last [`TRAILER_TAIL`] bytes of the file at `path`.
fn tail_of(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TRAILER_TAIL)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    Ok(tail)
}

/// This build's settings and where they came from.
fn load_settings() -> (Settings, &'static str) {
    if let Some(settings) = own_file()
        .and_then(|p| tail_of(&p).ok())
        .and_then(|tail| parse_trailer(&tail))
    {
        return (settings, "build trailer");
    }
    let env = |k: &str| std::env::var(k).ok();
    if [ERRORS_ENV, LATENCY_ENV, CRASH_ENV]
        .iter()
        .any(|k| env(k).is_some())
    {
        return (from_env(env), "environment");
    }
    (Settings::default(), "defaults")
}

/// A cheap random number generator (xorshift64*), one state per worker.
struct Rng(AtomicU64);

impl Rng {
    /// A draw in [0, 1).
    fn next(&self) -> f64 {
        // Threads may race on the state: a repeated draw does not matter here.
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.store(x, Ordering::Relaxed);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Misbehaves as its build says.
struct Flaky {
    settings: Settings,
    source: &'static str,
    rng: Rng,
    pid: u32,
}

impl Default for Flaky {
    fn default() -> Self {
        Flaky {
            settings: Settings::default(),
            source: "defaults",
            rng: Rng(AtomicU64::new(0x9E37_79B9_7F4A_7C15)),
            pid: 0,
        }
    }
}

impl App for Flaky {
    fn init(&mut self, worker: &Worker<'_>) -> app_sdk::Result {
        (self.settings, self.source) = load_settings();
        self.pid = worker.pid;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        // Never zero: xorshift would stay there.
        let seed = (u64::from(worker.pid) << 32 | nanos) | 1;
        self.rng = Rng(AtomicU64::new(seed));
        Ok(())
    }

    fn handle(&self, _req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
        let s = self.settings;
        if s.latency_ms > 0 {
            std::thread::sleep(Duration::from_millis(s.latency_ms));
        }
        if s.crash > 0.0 && self.rng.next() < s.crash {
            std::process::abort();
        }
        let build = s.to_string();
        resp.header("Content-Type", "text/plain")
            .header("X-Flaky-Build", &build);
        if s.errors > 0.0 && self.rng.next() < s.errors {
            resp.status(500)
                .body(format!("flaky error ({build}) pid {}\n", self.pid))?;
        } else {
            resp.body(format!(
                "flaky: {build} (from the {}) pid {}\n",
                self.source, self.pid
            ))?;
        }
        Ok(())
    }
}

export_app!(app = Flaky::default());

#[cfg(test)]
mod tests {
    use app_sdk::testing::{self, TestRequest};

    use super::*;

    #[test]
    fn the_last_trailer_line_wins_and_bad_values_are_healthy() {
        let elf = b"\x7fELF\x02\x01\x01\0binary\0bytes\n";
        // (the library's tail, the settings)
        let cases: Vec<(Vec<u8>, Option<Settings>)> = vec![
            (elf.to_vec(), None),
            (
                [&elf[..], b"\nFLAKY errors=0.3 latency_ms=0 crash=0\n"].concat(),
                Some(Settings {
                    errors: 0.3,
                    ..Settings::default()
                }),
            ),
            (
                [
                    &elf[..],
                    b"\nFLAKY errors=0.3\n",
                    b"\nFLAKY latency_ms=30 crash=0.05\n",
                ]
                .concat(),
                Some(Settings {
                    errors: 0.0,
                    latency_ms: 30,
                    crash: 0.05,
                }),
            ),
            (
                b"FLAKY errors=2 latency_ms=-1 crash=x other=1".to_vec(),
                Some(Settings::default()),
            ),
        ];
        for (tail, want) in cases {
            assert_eq!(
                parse_trailer(&tail),
                want,
                "{}",
                String::from_utf8_lossy(&tail)
            );
        }
    }

    #[test]
    fn the_environment_is_the_fallback() {
        let env = |k: &str| match k {
            ERRORS_ENV => Some("0.5".to_owned()),
            LATENCY_ENV => Some("7".to_owned()),
            _ => None,
        };
        assert_eq!(
            from_env(env),
            Settings {
                errors: 0.5,
                latency_ms: 7,
                crash: 0.0
            }
        );
        assert_eq!(from_env(|_| None), Settings::default());
    }

    #[test]
    fn a_healthy_build_answers_with_its_settings() {
        let resp = testing::call(Flaky::default(), TestRequest::get("/"));
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header("X-Flaky-Build"),
            Some("errors=0 latency_ms=0 crash=0")
        );
        assert!(
            resp.text().starts_with("flaky: errors=0"),
            "{}",
            resp.text()
        );
    }

    #[test]
    fn the_draws_spread_over_zero_to_one() {
        let rng = Rng(AtomicU64::new(12345));
        let draws: Vec<f64> = (0..10_000).map(|_| rng.next()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let below = draws.iter().filter(|d| **d < 0.3).count();
        assert!((2_700..3_300).contains(&below), "{below}");
    }
}
