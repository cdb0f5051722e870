//! Command-line options: what the operator asks for, checked before anything starts.
//!
//! Flags follow Gunicorn's names where one exists (`-w`, `-b`, `--keep-alive`,
//! `--graceful-timeout`, `--limit-request-*`), so an operator's habits carry over.

pub mod sources;

use crate::websocket::settings::WsOptions;
use std::{path::PathBuf, time::Duration};

use clap::{builder::TypedValueParser, Parser, ValueEnum};

use crate::{
    app::AppSpec,
    http::forwarded::{ForwardedHeaders, TrustedProxies},
    http::parse::Limits,
    os::listener::{Bind, BindAddr, SocketOptions},
    report::access_log::AccessFormat,
    tls::settings::{ClientCert, MinVersion, TlsOptions},
};

/// Default address when no `--bind` is given.
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";
/// Default listen backlog (Gunicorn's).
pub const DEFAULT_BACKLOG: i32 = 2048;
/// Default `TCP_DEFER_ACCEPT` on TCP listeners, in seconds: a connection is
/// handed to a worker when its first bytes arrive, or after this long.
pub const DEFAULT_DEFER_ACCEPT: u32 = 1;
/// Default keep-alive idle timeout, in seconds.
pub const DEFAULT_KEEP_ALIVE: u64 = 5;
/// Default bound on a graceful stop, in seconds, after which workers are killed.
pub const DEFAULT_GRACEFUL_TIMEOUT: u64 = 30;
/// Longest `--drain-delay`, in seconds (an hour: a delay is meant to
/// outlast a load balancer's health checks, not to park a server).
pub const MAX_DRAIN_DELAY: u64 = 3600;
/// Most workers one master runs (the size of the scoreboard).
pub const MAX_WORKERS: usize = 1024;
/// Default time a worker may stay idle before the adaptive pool shrinks, in seconds.
pub const DEFAULT_IDLE_TIMEOUT: u64 = 60;
/// Default bound on one request's handling, in seconds.
pub const DEFAULT_TIMEOUT: u64 = 30;
/// Default bound on loading and initialising the app, in seconds.
pub const DEFAULT_BOOT_TIMEOUT: u64 = 30;
/// Default time a client has to send a request head (and a buffered body), in seconds.
pub const DEFAULT_HEADER_TIMEOUT: u64 = 30;
/// Default size of the body read and checked before the app is called, in bytes.
pub const DEFAULT_BODY_BUFFER: usize = 64 * 1024;
/// Default lowest rate a request body may arrive at once it streams, in bytes per second.
pub const DEFAULT_BODY_MIN_RATE: u64 = 500;
/// Default header carrying request ids.
pub const DEFAULT_REQUEST_ID_HEADER: &str = "X-Request-Id";
/// Default most connections one worker holds.
pub const DEFAULT_WORKER_CONNECTIONS: usize = 1024;
/// Default most bytes of a complete response one connection holds for a
/// client that does not take them yet (see `worker::held`).
pub const DEFAULT_MAX_PENDING_OUTPUT: usize = 8 * 1024 * 1024;
/// Default most bytes of complete responses one worker holds for such
/// clients, across its connections and threads.
pub const DEFAULT_MAX_WORKER_PENDING_OUTPUT: u64 = 64 * 1024 * 1024;

const EXAMPLES: &str = "\
Examples:
  host target/release/libhello.so                  serve the app `app` on 127.0.0.1:8000
  host -w 4 -b 0.0.0.0:8000 libmyapp.so:app        four workers on every IPv4 address
  host -b unix:/run/myapp.sock libmyapp.so:admin   the app `admin` on a Unix socket
  host --access-logfile - libmyapp.so              access log on stdout

  host --reload -w 2 target/debug/libmyapp.so       swap in each new build as cargo writes it
  host -c host.toml --check-config                 check a config file and the app it names

  host new myapp                                   write a new app crate in ./myapp (host new --help)
  host status 127.0.0.1:9100                       the worker table of a server's --metrics-bind
  host ctl reload --wait                           reload through the control socket, wait for the end (host ctl --help)

Settings come from the command line, then HOST_ARGS, PORT and WEB_CONCURRENCY
in the environment, then the -c file, then the defaults (first one wins).

Signals: HUP reload (new build, rolling), TERM graceful stop (after --drain-delay;
a second TERM ends the delay), INT/QUIT quick stop,
TTIN/TTOU one worker more/fewer, USR1 reopen the access log, USR2 upgrade the
host binary (a new master takes the sockets over). `host ctl` asks the same
through the control socket, with answers.";

/// What `host --version` says: the host's version, and which apps it serves.
fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        use app_sdk::abi::{ABI_LINE, ABI_REVISION, SDK_VERSION};
        format!(
            "{}\nbuilt with app-sdk {SDK_VERSION} (ABI line {ABI_LINE}, revision {ABI_REVISION}): \
             serves apps built against app-sdk 0.{ABI_LINE}.x up to {SDK_VERSION}, and newer \
             0.{ABI_LINE}.x apps that need nothing this host lacks",
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// A pre-forking application server for Rust apps built as shared libraries.
#[derive(Debug, Parser)]
#[command(name = "host", version, long_version = long_version(), about, after_help = EXAMPLES)]
pub struct Config {
    /// The app to serve: PATH to the library, then `:NAME` of the exported app (default `app`).
    #[arg(value_name = "PATH[:NAME]")]
    pub app: AppSpec,

    /// Read settings from this TOML file; its keys are the long flags (`workers = 4`, `bind = ["127.0.0.1:8000"]`).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the settings and that the app loads (in a probe), print what was checked, exit 0 or 4.
    #[arg(long = "check-config")]
    pub check_config: bool,

    /// Print the effective settings as TOML (a config file), then exit.
    #[arg(long = "print-config")]
    pub print_config: bool,

    /// Number of worker processes.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_WORKERS as i64))]
    pub workers: u32,

    /// Handler threads per worker: each worker calls the app from this many threads at once.
    #[arg(long, value_name = "T", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=crate::scoreboard::MAX_THREADS as i64))]
    pub threads: u32,

    /// Addresses to listen on: `HOST:PORT`, `[V6]:PORT` or `unix:/path`;
    /// `tls://` before one makes its connections TLS.
    #[arg(
        short,
        long = "bind",
        value_name = "ADDR",
        default_value = DEFAULT_BIND,
        help = "Address to listen on: HOST:PORT, [V6]:PORT, unix:/path or fd://N; tls:// before one for TLS (tls://0.0.0.0:443). Repeat for several"
    )]
    pub binds: Vec<Bind>,

    /// Set SO_REUSEPORT on TCP listeners (several servers may bind the same port).
    #[arg(long = "reuse-port")]
    pub reuse_port: bool,

    /// The mode of Unix socket files, in octal (e.g. 660).
    #[arg(long = "socket-mode", value_name = "MODE", value_parser = crate::os::process::parse_umask)]
    pub socket_mode: Option<u32>,

    /// The owner of Unix socket files: USER or USER:GROUP.
    #[arg(long = "socket-owner", value_name = "USER[:GROUP]")]
    pub socket_owner: Option<String>,

    /// Hand a TCP connection to a worker only once its first bytes arrived, waiting up to SECS (0: at once).
    #[arg(long = "defer-accept", value_name = "SECS", default_value_t = DEFAULT_DEFER_ACCEPT, value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub defer_accept: u32,

    /// Maximum number of pending connections per listener.
    #[arg(long, default_value_t = DEFAULT_BACKLOG, value_parser = clap::value_parser!(i32).range(1..))]
    pub backlog: i32,

    /// Seconds an idle keep-alive connection is kept open (0 disables keep-alive).
    #[arg(long = "keep-alive", value_name = "SECS", default_value_t = DEFAULT_KEEP_ALIVE)]
    pub keep_alive: u64,

    /// Seconds workers get to finish in-flight requests on a graceful stop.
    #[arg(long = "graceful-timeout", value_name = "SECS", default_value_t = DEFAULT_GRACEFUL_TIMEOUT)]
    pub graceful_timeout: u64,

    /// On TERM, seconds to keep serving while /ready answers 503 (load
    /// balancers take the server out), before the graceful stop begins (0: stop at once).
    #[arg(long = "drain-delay", value_name = "SECS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_DRAIN_DELAY))]
    pub drain_delay: u64,

    /// Let the pool grow up to this many workers when all are busy and requests wait (-w is the floor).
    #[arg(long = "workers-max", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_WORKERS as i64))]
    pub workers_max: Option<u32>,

    /// With --workers-max: retire a worker (down to -w) after this many seconds without a request.
    #[arg(long = "idle-timeout", value_name = "SECS", default_value_t = DEFAULT_IDLE_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,

    /// Seconds one request may run; a worker past it is stopped (504) and replaced (0: no limit).
    #[arg(short, long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT)]
    pub timeout: u64,

    /// Seconds a worker (or a probe of a new build) may take to load and initialise the app.
    #[arg(long = "boot-timeout", value_name = "SECS", default_value_t = DEFAULT_BOOT_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    pub boot_timeout: u64,

    /// Watch the library file and roll workers onto each new build.
    #[arg(long)]
    pub reload: bool,

    /// How workers move to a new build: `all` start at once, `chain` one at
    /// a time, `canary` a few first, growing by --canary-steps while their
    /// figures pass the checks, rolled back by themselves when they do not.
    /// (`--reload-strategy` is the old name and still works.)
    #[arg(long = "rollout", alias = "reload-strategy", value_enum, value_name = "STRATEGY", default_value_t = ReloadStrategy::All)]
    pub reload_strategy: ReloadStrategy,

    /// With --rollout canary: workers a new build starts on beside the old ones.
    #[arg(long = "canary-workers", value_name = "N", default_value_t = DEFAULT_CANARY_WORKERS, value_parser = clap::value_parser!(u32).range(1..=MAX_WORKERS as i64))]
    pub canary_workers: u32,

    /// The canary's later steps, as shares of the pool (`25%,50%,100%`); it ends at 100% in any case.
    #[arg(long = "canary-steps", value_name = "SHARES", default_value = DEFAULT_CANARY_STEPS, value_parser = parse_canary_steps)]
    pub canary_steps: CanarySteps,

    /// Seconds the canary stays on each step (its checks passing) before the next.
    #[arg(long = "canary-interval", value_name = "SECS", default_value_t = DEFAULT_CANARY_INTERVAL, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub canary_interval: u64,

    /// Seconds of figures the canary's checks look at (default: --canary-interval).
    #[arg(long = "canary-window", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub canary_window: Option<u64>,

    /// Requests the new build must have served in the window before its shares and latency are judged.
    #[arg(long = "canary-min-requests", value_name = "N", default_value_t = DEFAULT_CANARY_MIN_REQUESTS)]
    pub canary_min_requests: u64,

    /// Canary check: most 5xx responses, in percent of the new build's requests.
    #[arg(long = "canary-max-5xx", value_name = "PERCENT", default_value_t = crate::master::canary::DEFAULT_MAX_5XX_PERCENT, value_parser = parse_percent)]
    pub canary_max_5xx: f64,

    /// Canary check: most worker crashes, in percent of the new build's requests.
    #[arg(long = "canary-max-crashes", value_name = "PERCENT", default_value_t = crate::master::canary::DEFAULT_MAX_CRASH_PERCENT, value_parser = parse_percent)]
    pub canary_max_crashes: f64,

    /// Canary check: most caught app panics, in percent of the new build's requests.
    #[arg(long = "canary-max-panics", value_name = "PERCENT", default_value_t = crate::master::canary::DEFAULT_MAX_PANIC_PERCENT, value_parser = parse_percent)]
    pub canary_max_panics: f64,

    /// Canary check: most requests past --timeout, in percent of the new build's requests.
    #[arg(long = "canary-max-timeouts", value_name = "PERCENT", default_value_t = crate::master::canary::DEFAULT_MAX_TIMEOUT_PERCENT, value_parser = parse_percent)]
    pub canary_max_timeouts: f64,

    /// Canary check: highest p99 latency of the new build, in milliseconds (0: no absolute limit).
    #[arg(long = "canary-max-p99-ms", value_name = "MS", default_value_t = 0)]
    pub canary_max_p99_ms: u64,

    /// Canary check: the most the new build's p99 may be, as a multiple of the old build's (beyond a small noise floor).
    #[arg(long = "canary-max-p99-ratio", value_name = "X", default_value_t = crate::master::canary::DEFAULT_MAX_P99_RATIO, value_parser = parse_ratio)]
    pub canary_max_p99_ratio: f64,

    /// Keep the snapshots of the last N builds that completed a rollout, for a rollback (`host ctl rollback`).
    #[arg(long = "keep-builds", value_name = "N", default_value_t = DEFAULT_KEEP_BUILDS, value_parser = clap::value_parser!(u32).range(1..=MAX_KEEP_BUILDS as i64))]
    pub keep_builds: u32,

    /// Replace a worker after it served this many requests (0: never).
    #[arg(long = "max-requests", value_name = "N", default_value_t = 0)]
    pub max_requests: u64,

    /// Add up to this many requests, chosen per worker, to --max-requests (spreads restarts).
    #[arg(long = "max-requests-jitter", value_name = "N", default_value_t = 0)]
    pub max_requests_jitter: u64,

    /// Replace a worker whose resident memory passes this many MiB after a request (0: never).
    #[arg(long = "max-worker-memory", value_name = "MIB", default_value_t = 0)]
    pub max_worker_memory: u64,

    /// What a worker does after the app panicked in a request (answered
    /// 500 either way): `retire` is replaced gracefully, finishing what it
    /// holds (a panic may leave the app's state broken: a poisoned Mutex
    /// answers 500 for ever); `serve` goes on serving.
    #[arg(long = "panic-policy", value_enum, value_name = "POLICY", default_value_t = PanicPolicy::Retire)]
    pub panic_policy: PanicPolicy,

    /// Seconds a client has to send a whole request head (and a body up to
    /// --body-buffer) once it started one; then 408 and close.
    #[arg(long = "header-timeout", value_name = "SECS", default_value_t = DEFAULT_HEADER_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,

    /// Bodies up to this many bytes are read and checked before the app is called; larger ones stream.
    #[arg(long = "body-buffer", value_name = "BYTES", default_value_t = DEFAULT_BODY_BUFFER)]
    pub body_buffer: usize,

    /// Lowest rate (bytes/s) a streamed body may arrive at, after a 20 s grace (0: no minimum).
    #[arg(long = "body-min-rate", value_name = "BYTES", default_value_t = DEFAULT_BODY_MIN_RATE)]
    pub body_min_rate: u64,

    /// Most connections one worker holds; past it, it stops accepting until one closes.
    #[arg(long = "worker-connections", value_name = "N", default_value_t = DEFAULT_WORKER_CONNECTIONS, value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub worker_connections: usize,

    /// Most bytes of a complete response one connection holds for a client
    /// that does not take them yet, so the worker goes on serving (0: none;
    /// a response whose rest does not fit is written with the worker waiting).
    #[arg(long = "max-pending-output", value_name = "BYTES", default_value_t = DEFAULT_MAX_PENDING_OUTPUT)]
    pub max_pending_output: usize,

    /// Most bytes of complete responses one worker holds for such clients, across its connections.
    #[arg(long = "max-worker-pending-output", value_name = "BYTES", default_value_t = DEFAULT_MAX_WORKER_PENDING_OUTPUT)]
    pub max_worker_pending_output: u64,

    /// Proxies (addresses, networks, or `*`) whose forwarding headers (the family
    /// --forwarded-headers names) set the request's remote address and scheme.
    #[arg(long = "forwarded-allow-ips", value_name = "LIST", default_value = crate::http::forwarded::DEFAULT_TRUSTED)]
    pub forwarded_allow_ips: crate::http::forwarded::TrustedProxies,

    /// The one family of forwarding headers read from those proxies; the other
    /// is ignored (and reaches the app as sent). Match what your proxy sets
    /// and make it clear the other.
    #[arg(long = "forwarded-headers", value_enum, value_name = "FAMILY", default_value_t = ForwardedHeaders::XForwarded)]
    pub forwarded_headers: ForwardedHeaders,

    /// Serve /metrics (Prometheus), /status.json and /status (HTML) from the master here.
    #[arg(long = "metrics-bind", value_name = "ADDR")]
    pub metrics_bind: Option<BindAddr>,

    /// Show query strings of requests in progress on /status and /status.json
    /// (and in the master's log); off: the query shows as `?…`, since it may carry tokens.
    #[arg(long = "status-show-query")]
    pub status_show_query: bool,

    /// The control socket `host ctl` talks to [default: control.sock in
    /// $RUNTIME_DIRECTORY, else $XDG_RUNTIME_DIR/host, else /run/host
    /// (root) or /tmp/host-UID].
    #[arg(long = "control", value_name = "PATH", conflicts_with = "no_control")]
    pub control: Option<PathBuf>,

    /// Run without a control socket.
    #[arg(long = "no-control")]
    pub no_control: bool,

    /// Write the master's pid to this file (atomically; removed on exit).
    #[arg(long = "pid", value_name = "FILE")]
    pub pid: Option<PathBuf>,

    /// Run workers (and the app) as this user, by name or id; the master binds first.
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,

    /// Run workers as this group (default: the user's group).
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub group: Option<String>,

    /// Change to this directory before doing anything else.
    #[arg(long = "chdir", value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// The file mode creation mask of the server's processes, in octal (e.g. 022).
    #[arg(long = "umask", value_name = "MASK", value_parser = crate::os::process::parse_umask)]
    pub umask: Option<u32>,

    /// Set an environment variable for the app: KEY=VALUE. Repeat for several.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = crate::os::process::parse_env)]
    pub env: Vec<(String, String)>,

    /// Lowest level of the error log.
    #[arg(long = "log-level", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Write an access log to this file; `-` for stdout.
    #[arg(long = "access-logfile", value_name = "PATH")]
    pub access_logfile: Option<PathBuf>,

    /// The access log's format: Gunicorn-style atoms (`%(h)s %(r)s %(s)s %(D)s
    /// %({x-request-id}i)s` ...), or `json` for JSON lines. Default: Apache combined.
    #[arg(long = "access-logformat", value_name = "FORMAT", default_value = crate::report::access_log::COMBINED)]
    pub access_logformat: crate::report::access_log::AccessFormat,

    /// Write the error log to this file; `-` for stderr. Apps' stdout and stderr go there too.
    #[arg(long = "error-logfile", value_name = "PATH", default_value = "-")]
    pub error_logfile: PathBuf,

    /// The header that carries request ids: taken from the request when present
    /// (else made up), given to the app, and sent back. Empty: no request ids.
    #[arg(long = "request-id-header", value_name = "NAME", default_value = DEFAULT_REQUEST_ID_HEADER, value_parser = parse_header_name)]
    pub request_id_header: String,

    /// Longest request line, in bytes (longer: 414).
    #[arg(long = "limit-request-line", value_name = "BYTES", default_value_t = crate::http::parse::DEFAULT_MAX_REQUEST_LINE)]
    pub limit_request_line: usize,

    /// Most header fields in a request (more: 431).
    #[arg(long = "limit-request-fields", value_name = "N", default_value_t = crate::http::parse::DEFAULT_MAX_HEADERS, value_parser = parse_header_count)]
    pub limit_request_fields: usize,

    /// Longest header field line, in bytes (longer: 431).
    #[arg(long = "limit-request-field-size", value_name = "BYTES", default_value_t = crate::http::parse::DEFAULT_MAX_FIELD_SIZE)]
    pub limit_request_field_size: usize,

    /// Largest request body, in bytes (larger: 413).
    #[arg(long = "limit-request-body", value_name = "BYTES", default_value_t = crate::http::parse::DEFAULT_MAX_BODY)]
    pub limit_request_body: u64,

    /// A certificate chain file (PEM, leaf first) for `tls://` listeners. Repeat with --keyfile for several (picked by SNI; the first is the default).
    #[arg(long = "certfile", value_name = "FILE")]
    pub certfiles: Vec<PathBuf>,

    /// The private key file (PEM) of the --certfile in the same position.
    #[arg(long = "keyfile", value_name = "FILE")]
    pub keyfiles: Vec<PathBuf>,

    /// Listeners (a --bind value, or `all`) whose connections from --forwarded-allow-ips peers begin with a PROXY protocol header (v1 or v2).
    #[arg(long = "proxy-protocol", value_name = "BIND")]
    pub proxy_protocol: Vec<String>,

    /// CA certificates (PEM) that vouch for client certificates (with --client-cert).
    #[arg(long = "ca-certs", value_name = "FILE")]
    pub ca_certs: Option<PathBuf>,

    /// Whether TLS clients present a certificate --ca-certs vouches for.
    #[arg(long = "client-cert", value_enum, value_name = "MODE", default_value_t = ClientCert::None)]
    pub client_cert: ClientCert,

    /// The lowest TLS version served.
    #[arg(long = "tls-min-version", value_enum, value_name = "VERSION", default_value_t = MinVersion::Tls12)]
    pub tls_min_version: MinVersion,

    /// Seconds a TLS handshake may take before the connection is closed.
    #[arg(long = "tls-handshake-timeout", value_name = "SECS", default_value_t = crate::tls::settings::DEFAULT_HANDSHAKE_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub tls_handshake_timeout: u64,

    /// TLS handshakes in progress per worker thread; past it a new connection closes the oldest handshake.
    #[arg(long = "tls-max-handshakes", value_name = "N", default_value_t = crate::tls::settings::DEFAULT_MAX_HANDSHAKES, value_parser = clap::value_parser!(u64).range(1..=100_000).map(|n| n as usize))]
    pub tls_max_handshakes: usize,

    /// Largest WebSocket message (and frame) a client may send, in bytes; a larger one closes its connection with 1009.
    #[arg(long = "websocket-max-message", value_name = "BYTES", default_value_t = crate::websocket::settings::DEFAULT_MAX_MESSAGE, value_parser = clap::value_parser!(u64).range(125..=1 << 30).map(|n| n as usize))]
    pub websocket_max_message: usize,

    /// Seconds a WebSocket client may stay silent before the host pings it (0: never).
    #[arg(long = "websocket-ping-interval", value_name = "SECS", default_value_t = crate::websocket::settings::DEFAULT_PING_INTERVAL, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub websocket_ping_interval: u64,

    /// Seconds a pinged WebSocket client has to answer before its connection is closed.
    #[arg(long = "websocket-ping-timeout", value_name = "SECS", default_value_t = crate::websocket::settings::DEFAULT_PING_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub websocket_ping_timeout: u64,

    /// Seconds a stopping or retiring worker keeps its WebSocket connections before closing them with 1001.
    #[arg(long = "websocket-drain", value_name = "SECS", default_value_t = crate::websocket::settings::DEFAULT_DRAIN, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub websocket_drain: u64,
}

/// How a reload moves workers onto the new build (`--rollout`, and
/// `"rollout"` in the control socket's `deploy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadStrategy {
    /// Start every new worker at once; retire an old one as each new one is ready.
    All,
    /// One at a time: start one new worker, retire one old when it is ready, repeat.
    Chain,
    /// `--canary-workers` first, then `--canary-steps` of the pool every
    /// `--canary-interval`, judged all along; rolled back on a failed check.
    Canary,
}

/// `--proxy-protocol all`: every listener takes PROXY protocol headers.
pub const PROXY_ALL: &str = "all";

/// Default `--canary-workers`.
pub const DEFAULT_CANARY_WORKERS: u32 = 1;
/// Default `--canary-steps`.
pub const DEFAULT_CANARY_STEPS: &str = "25%,50%,100%";
/// Default `--canary-interval`, in seconds.
pub const DEFAULT_CANARY_INTERVAL: u64 = 30;
/// Default `--canary-min-requests`.
pub const DEFAULT_CANARY_MIN_REQUESTS: u64 = 100;
/// Default `--keep-builds`.
pub const DEFAULT_KEEP_BUILDS: u32 = 3;
/// Most builds `--keep-builds` keeps (each is a snapshot file and a descriptor).
pub const MAX_KEEP_BUILDS: u32 = 32;
/// Most steps `--canary-steps` may list.
pub const MAX_CANARY_STEPS: usize = 16;

/// The canary's steps after its first workers, as shares of the pool, rising.
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySteps(pub Vec<f64>);

/// Parses `--canary-steps`: shares such as `25%,50%,100%` (or `0.25,0.5,1`),
/// each above 0 and at most 100%, rising.
pub fn parse_canary_steps(s: &str) -> Result<CanarySteps, String> {
    let mut shares = Vec::new();
    for part in s.split(',').map(str::trim) {
        let share = match part.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
            None => part.parse::<f64>(),
        }
        .map_err(|_| format!("`{part}` is not a share (like 25%)"))?;
        if !(share > 0.0 && share <= 1.0) {
            return Err(format!("`{part}`: a share is above 0% and at most 100%"));
        }
        if shares.last().is_some_and(|last| share <= *last) {
            return Err(format!("`{part}`: the shares must rise"));
        }
        shares.push(share);
    }
    if shares.len() > MAX_CANARY_STEPS {
        return Err(format!("at most {MAX_CANARY_STEPS} steps"));
    }
    Ok(CanarySteps(shares))
}

/// Parses a percentage from 0 to 100.
fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a percentage from 0 to 100")),
    }
}

/// Parses a ratio of at least 1.
fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (1.0..=1000.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a ratio from 1 to 1000")),
    }
}

/// What a worker does after the app panicked in a request (`--panic-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PanicPolicy {
    /// Go on serving: the next request meets the app as the panic left it.
    Serve,
    /// Ask to be replaced, as `--max-requests` does: take nothing new,
    /// finish what it holds, leave once a new worker is ready.
    Retire,
}

/// Error-log levels, Gunicorn's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything, including each connection's fate.
    Debug,
    /// Startup, workers, signals.
    Info,
    /// Things that may need attention.
    Warning,
    /// Failures.
    Error,
    /// Only failures that stop the server.
    Critical,
}

impl LogLevel {
    /// The `log` crate's filter for this level.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Warning => log::LevelFilter::Warn,
            LogLevel::Error | LogLevel::Critical => log::LevelFilter::Error,
        }
    }
}

/// Parses `--request-id-header`: a header name (or nothing) that is not
/// one the host writes itself (framing, `Connection`, `Date`, `Server`).
fn parse_header_name(s: &str) -> Result<String, String> {
    use crate::http::response::{check_header, HeaderCheck};
    if s.is_empty() {
        return Ok(String::new());
    }
    if !crate::http::token::is_token(s.as_bytes()) {
        return Err(format!("`{s}` is not a header name"));
    }
    match check_header(s.as_bytes(), b"") {
        HeaderCheck::Keep => Ok(s.to_owned()),
        _ => Err(format!("`{s}` is a header the host writes itself")),
    }
}

/// Parses `--limit-request-fields`: 1 up to what the parser can hold.
fn parse_header_count(s: &str) -> Result<usize, String> {
    let cap = crate::http::parse::MAX_HEADERS_CAP;
    match s.parse::<usize>() {
        Ok(n) if (1..=cap).contains(&n) => Ok(n),
        _ => Err(format!("expected a number from 1 to {cap}")),
    }
}

impl Config {
    /// Checks what no single option can: how options relate.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(max) = self.workers_max {
            if max < self.workers {
                return Err(format!(
                    "--workers-max ({max}) must be at least --workers ({})",
                    self.workers
                ));
            }
        }
        if self.certfiles.len() != self.keyfiles.len() {
            return Err(format!(
                "{} --certfile but {} --keyfile: give them in pairs, each key after its certificate",
                self.certfiles.len(),
                self.keyfiles.len()
            ));
        }
        if self.binds.iter().any(|b| b.tls) && self.certfiles.is_empty() {
            return Err("a tls:// listener needs --certfile and --keyfile".into());
        }
        for value in &self.proxy_protocol {
            if value == PROXY_ALL {
                continue;
            }
            let named: Bind = value
                .parse()
                .map_err(|e| format!("--proxy-protocol {value}: {e}"))?;
            if !self.binds.iter().any(|b| b.addr == named.addr) {
                return Err(format!(
                    "--proxy-protocol {value}: no --bind has that address (give one of them, or `all`)"
                ));
            }
        }
        if self.client_cert != ClientCert::None && self.ca_certs.is_none() {
            return Err("--client-cert optional|required needs --ca-certs".into());
        }
        Ok(())
    }

    /// The addresses of `--bind`, without their TLS marks.
    pub fn bind_addrs(&self) -> Vec<BindAddr> {
        self.binds.iter().map(|b| b.addr.clone()).collect()
    }

    /// The TLS settings, when a listener serves TLS.
    pub fn tls_options(&self) -> Option<TlsOptions> {
        if !self.binds.iter().any(|b| b.tls) {
            return None;
        }
        Some(TlsOptions {
            certs: self.certfiles.clone(),
            keys: self.keyfiles.clone(),
            ca_certs: self.ca_certs.clone(),
            client_cert: self.client_cert,
            min_version: self.tls_min_version,
            handshake_timeout: Duration::from_secs(self.tls_handshake_timeout),
            max_handshakes: self.tls_max_handshakes,
        })
    }

    /// Marks each of `listeners` TLS (or not) as its `--bind` says, and as
    /// taking PROXY protocol headers as `--proxy-protocol` says.
    pub fn mark_listeners(&self, listeners: &mut crate::os::listener::Listeners) {
        for l in listeners.iter_mut() {
            l.tls = self.binds.iter().any(|b| b.tls && b.addr == l.addr);
            l.proxy_protocol = self
                .proxy_protocol
                .iter()
                .any(|v| v == PROXY_ALL || v.parse::<Bind>().is_ok_and(|b| b.addr == l.addr));
        }
    }

    /// How to set up listening sockets (resolving --socket-owner).
    pub fn socket_options(&self) -> Result<SocketOptions, String> {
        let unix_owner = match &self.socket_owner {
            None => None,
            Some(spec) => {
                let (user, group) = match spec.split_once(':') {
                    Some((u, g)) => (u, Some(g)),
                    None => (spec.as_str(), None),
                };
                let id = crate::os::process::identity(Some(user), group)
                    .map_err(|e| format!("--socket-owner: {e}"))?
                    .ok_or_else(|| "--socket-owner: no user given".to_owned())?;
                Some((id.uid, group.map(|_| id.gid)))
            }
        };
        Ok(SocketOptions {
            backlog: self.backlog,
            reuse_port: self.reuse_port,
            defer_accept: self.defer_accept,
            unix_mode: self.socket_mode,
            unix_owner,
        })
    }

    /// What workers need to know to serve connections.
    pub fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            limits: self.limits(),
            keep_alive: self.keep_alive(),
            header_timeout: Duration::from_secs(self.header_timeout),
            body_buffer: self.body_buffer,
            body_min_rate: self.body_min_rate,
            max_connections: self.worker_connections,
            max_pending_output: self.max_pending_output,
            max_worker_pending_output: self.max_worker_pending_output,
            trusted: self.forwarded_allow_ips.clone(),
            forwarded_headers: self.forwarded_headers,
            access_format: self.access_logformat.clone(),
            request_id_header: (!self.request_id_header.is_empty())
                .then(|| self.request_id_header.clone()),
            show_query: self.status_show_query,
            panic_policy: self.panic_policy,
            websocket: WsOptions {
                max_message: self.websocket_max_message,
                ping_interval: (self.websocket_ping_interval > 0)
                    .then(|| Duration::from_secs(self.websocket_ping_interval)),
                ping_timeout: Duration::from_secs(self.websocket_ping_timeout),
                drain: Duration::from_secs(self.websocket_drain),
            },
        }
    }

    /// The parser limits the options ask for.
    pub fn limits(&self) -> Limits {
        Limits {
            max_request_line: self.limit_request_line,
            max_headers: self.limit_request_fields,
            max_field_size: self.limit_request_field_size,
            max_body: self.limit_request_body,
        }
    }

    /// The request timeout; `None` when off.
    pub fn timeout(&self) -> Option<Duration> {
        (self.timeout > 0).then(|| Duration::from_secs(self.timeout))
    }

    /// The keep-alive idle timeout; `None` when keep-alive is off.
    pub fn keep_alive(&self) -> Option<Duration> {
        (self.keep_alive > 0).then(|| Duration::from_secs(self.keep_alive))
    }
}

/// How a worker serves connections (from the command line).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Parser limits.
    pub limits: Limits,
    /// Keep-alive idle timeout; `None` disables keep-alive.
    pub keep_alive: Option<Duration>,
    /// Time to send a whole head (and a buffered body) once a request started.
    pub header_timeout: Duration,
    /// Bodies up to this size are read and checked before the app is called.
    pub body_buffer: usize,
    /// Lowest rate of a streamed body, bytes per second (0: none).
    pub body_min_rate: u64,
    /// Most connections one worker holds.
    pub max_connections: usize,
    /// Most bytes of a complete response one connection holds for a slow reader.
    pub max_pending_output: usize,
    /// Most bytes of complete responses one worker holds for slow readers.
    pub max_worker_pending_output: u64,
    /// Proxies whose forwarding headers are believed.
    pub trusted: TrustedProxies,
    /// The one family of forwarding headers read from them.
    pub forwarded_headers: ForwardedHeaders,
    /// The access log's format.
    pub access_format: AccessFormat,
    /// The header carrying request ids; `None`: no request ids.
    pub request_id_header: Option<String>,
    /// Whether the scoreboard keeps the query of the request in hand (`--status-show-query`).
    pub show_query: bool,
    /// What a worker does after the app panicked (`--panic-policy`).
    pub panic_policy: PanicPolicy,
    /// How WebSocket connections are run.
    pub websocket: WsOptions,
}
