//! The master ("arbiter"): binds, forks workers, watches them, rolls builds, stops.
//!
//! One thread, one loop. Each turn it waits for a signal (read from a
//! signalfd), a probe's report, or a tick; handles the signals in order; reaps
//! exited children; settles a probe of a new build; stops workers past their
//! deadlines; and brings the pool to its target on the current build. It never
//! loads app code: a probe child checks each build before a worker uses it.
//!
//! Builds and generations: each accepted build starts a generation. Workers of
//! older generations are retired one for one as new ones report ready, so the
//! pool never shrinks below its target during a reload, and a build that fails
//! its probe is refused while the running generation keeps serving.

pub mod autoscale;
pub mod signals;

use std::{
    collections::BTreeMap,
    io,
    os::fd::AsFd,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::{
        signal::{kill, Signal},
        signalfd::SignalFd,
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{fork, ForkResult, Pid},
};

use crate::{
    app::builds::{Build, FileStamp, Snapshots},
    app::probe::{self, Probe},
    config::sources::{self, Sources},
    config::{Config, ReloadStrategy, MAX_WORKERS},
    exit_code,
    master::autoscale::{Autoscaler, Decision, Load},
    master::signals::MasterAction,
    os::listener::Listener,
    os::listener::{BindAddr, SocketOptions},
    os::process::{self, Identity},
    os::signals as os_signals,
    os::systemd::{self, Notifier},
    report::access_log::AccessLogTarget,
    report::logging,
    report::metrics::{Backlog, Snapshot, WorkerView},
    report::status_server::StatusServer,
    scoreboard::{self, RetireReason, Scoreboard, State},
    worker::{self, WorkerArgs},
};

/// The longest the master sleeps between turns of its loop.
const TICK: Duration = Duration::from_secs(1);
/// The tick while `--reload` watches the library file or `--workers-max` sizes the pool.
const WATCH_TICK: Duration = Duration::from_millis(250);
/// How long the library file must stay unchanged before `--reload` takes it
/// (cargo replaces it in steps).
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(500);
/// First delay before respawning after a worker failed to boot.
const BOOT_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest delay between boot attempts.
const BOOT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a quick stop waits for workers before it kills them.
const QUICK_STOP_GRACE: Duration = Duration::from_secs(2);
/// Boot failures in a row, with no worker ever ready, after which start-up is abandoned.
const STARTUP_BOOT_ATTEMPTS: u32 = 5;
/// How long a timed-out worker gets to answer 504 and exit before SIGKILL.
const TIMEOUT_KILL_GRACE: Duration = Duration::from_secs(2);

/// Why a worker is on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retire {
    /// Its generation is no longer current.
    Outdated,
    /// The pool shrank (TTOU).
    Shrink,
    /// It asked to be replaced.
    Asked(RetireReason),
}

impl Retire {
    fn describe(self) -> &'static str {
        match self {
            Retire::Outdated => "its build was replaced",
            Retire::Shrink => "the pool shrank (TTOU)",
            Retire::Asked(r) => r.describe(),
        }
    }
}

/// A worker the master forked.
struct WorkerRec {
    id: u32,
    slot: usize,
    generation: u32,
    spawned: Instant,
    ready: bool,
    /// Set when the worker should go once the pool can spare it.
    retire: Option<Retire>,
    /// When it was told to stop (TERM or the timeout signal).
    signalled: Option<Instant>,
    /// It was sent SIGKILL.
    killed: bool,
    /// It was stopped for running past --timeout.
    timed_out: bool,
    /// Its stdout and stderr, which the master logs line by line.
    output: Vec<logging::OutputPipe>,
}

/// A stop in progress.
struct Stop {
    deadline: Instant,
    quick: bool,
    killed: bool,
}

/// A probe of a candidate build.
struct PendingProbe {
    probe: Probe,
    build: Build,
    cause: &'static str,
}

/// `--reload`'s view of the library file.
struct Watch {
    /// A changed stamp seen, and since when it has been stable.
    candidate: Option<(FileStamp, Instant)>,
}

struct Master {
    config: Config,
    /// Who workers run as (`--user`, `--group`).
    identity: Option<Identity>,
    /// Removed when the master is dropped.
    _pid_file: Option<process::PidFile>,
    /// Where the settings came from, to re-read them on HUP.
    sources: Sources,
    /// The settings in effect, as `--print-config` shows them (to report changes).
    effective: String,
    listeners: Vec<Listener>,
    access_log: Option<AccessLogTarget>,
    scoreboard: Scoreboard,
    sigfd: SignalFd,
    snapshots: Snapshots,
    /// The current generation's number and build.
    generation: u32,
    build: Build,
    /// Builds of older generations that still have workers.
    old_builds: BTreeMap<u32, Build>,
    /// The stamp of the last version of the file considered (accepted or refused).
    seen_stamp: Option<FileStamp>,
    reload_requested: Option<&'static str>,
    probe: Option<PendingProbe>,
    watch: Option<Watch>,
    workers: BTreeMap<Pid, WorkerRec>,
    target: usize,
    boot_failures: u32,
    next_spawn: Instant,
    stop: Option<Stop>,
    pid: Pid,
    refused_builds: u64,
    /// When the current generation's rollout began, until it completes.
    rollout_started: Option<Instant>,
    /// A worker has been ready at least once since start-up.
    ever_ready: bool,
    /// The /metrics and /status endpoint, if asked for.
    status: Option<StatusServer>,
    /// When the master started.
    started: Instant,
    /// Workers forked.
    spawns: u64,
    /// Workers gone, by cause.
    exits: BTreeMap<&'static str, u64>,
    /// Reloads that started a generation.
    reloads: u64,
    /// Requests counted by workers that are gone.
    retired_totals: scoreboard::RequestTotals,
    /// The adaptive pool (`--workers-max`).
    autoscaler: Option<Autoscaler>,
    /// The service manager (systemd), if it listens.
    notifier: Notifier,
    /// Listeners came from systemd; binds in the settings do not apply.
    socket_activated: bool,
}

/// Applies --chdir, --umask and --env to this process and resolves --user and
/// --group; an exit code and a one-line error when one is wrong.
fn prepare_process(config: &Config) -> Result<Option<Identity>, (i32, String)> {
    if let Some(dir) = &config.chdir {
        std::env::set_current_dir(dir).map_err(|e| {
            (
                exit_code::STARTUP,
                format!("cannot change to {}: {e}", dir.display()),
            )
        })?;
    }
    if let Some(mask) = config.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    for (key, value) in &config.env {
        // The master is single-threaded: nothing reads the environment meanwhile.
        std::env::set_var(key, value);
    }
    process::identity(config.user.as_deref(), config.group.as_deref())
        .map_err(|e| (exit_code::USAGE, e))
}

/// Snapshots and probes the configured app: the first build, or a one-line error.
fn first_build(config: &Config, identity: Option<&Identity>) -> Result<(Snapshots, Build), String> {
    let snapshots =
        Snapshots::new().map_err(|e| format!("cannot create the build snapshot directory: {e}"))?;
    let build = take_snapshot(&snapshots, config)
        .map_err(|message| format!("cannot load {}: {message}", config.app))?;
    probe::check(&build.spec(&config.app), config.boot_timeout(), identity).map_err(|message| {
        format!(
            "cannot load {}: {}",
            config.app,
            unsnapshot(&message, &build, config)
        )
    })?;
    Ok((snapshots, build))
}

/// `--check-config`: the settings parsed; now checks that the app loads.
pub fn check(config: &Config) -> i32 {
    let identity = match prepare_process(config) {
        Ok(identity) => identity,
        Err((code, message)) => {
            eprintln!("error: {message}");
            return code;
        }
    };
    match first_build(config, identity.as_ref()) {
        Ok((_, build)) => {
            let binds: Vec<String> = config.binds.iter().map(ToString::to_string).collect();
            println!(
                "ok: {} (build {}) loads and initialises; {} worker(s) would listen on {}",
                config.app,
                build.hash,
                config.workers,
                binds.join(", ")
            );
            exit_code::OK
        }
        Err(message) => {
            eprintln!("error: {message}");
            exit_code::APP_LOAD
        }
    }
}

/// Runs the server until it stops; returns the process exit code.
///
/// `sources` are kept to re-read the settings on HUP.
pub fn run(config: Config, sources: Sources) -> i32 {
    // Block the signals first: a child exiting before the loop starts must not be missed.
    let sigfd = match os_signals::signalfd_for(&signals::MASTER_SIGNALS) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("error: cannot set up signal handling: {e}");
            return exit_code::STARTUP;
        }
    };
    let identity = match prepare_process(&config) {
        Ok(identity) => identity,
        Err((code, message)) => {
            eprintln!("error: {message}");
            return code;
        }
    };
    if let Err(e) = logging::reopen(&config.error_logfile) {
        eprintln!(
            "error: cannot open the error log {}: {e}",
            config.error_logfile.display()
        );
        return exit_code::STARTUP;
    }
    process::set_title(&format!("host: master [{}]", app_title(&config)));
    let (snapshots, build) = match first_build(&config, identity.as_ref()) {
        Ok(first) => first,
        Err(message) => {
            eprintln!("error: {message}");
            return exit_code::APP_LOAD;
        }
    };
    let socket_options = match config.socket_options() {
        Ok(opts) => opts,
        Err(message) => {
            eprintln!("error: {message}");
            return exit_code::USAGE;
        }
    };
    let notifier = Notifier::from_env();
    let activated = systemd::take_listen_fds();
    let socket_activated = !activated.is_empty();
    let mut listeners = Vec::new();
    if socket_activated {
        // systemd holds the addresses; --bind does not apply.
        for fd in activated {
            match Listener::inherited(fd) {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    eprintln!("error: cannot use a socket systemd passed (LISTEN_FDS): {e}");
                    return exit_code::BIND;
                }
            }
        }
    } else {
        for addr in &config.binds {
            match Listener::bind(addr, &socket_options) {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    eprintln!("error: cannot listen on {addr}: {e}");
                    listeners.iter().for_each(Listener::cleanup);
                    return exit_code::BIND;
                }
            }
        }
    }
    let access_log = match config.access_logfile.as_deref().map(AccessLogTarget::open) {
        None => None,
        Some(Ok(target)) => Some(target),
        Some(Err(e)) => {
            eprintln!("error: cannot open the access log: {e}");
            return exit_code::STARTUP;
        }
    };
    let status = match config.metrics_bind.as_ref().map(StatusServer::bind) {
        None => None,
        Some(Ok(server)) => {
            log::info!("metrics on {}/metrics, status on {0}/status", server.url());
            Some(server)
        }
        Some(Err(e)) => {
            eprintln!(
                "error: cannot listen on {} (--metrics-bind): {e}",
                config
                    .metrics_bind
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            );
            listeners.iter().for_each(Listener::cleanup);
            return exit_code::BIND;
        }
    };
    let pid_file = match config.pid.as_deref().map(process::PidFile::create) {
        None => None,
        Some(Ok(file)) => Some(file),
        Some(Err(message)) => {
            eprintln!("error: {message}");
            listeners.iter().for_each(Listener::cleanup);
            return exit_code::STARTUP;
        }
    };
    let scoreboard = match Scoreboard::new(MAX_WORKERS, config.threads as usize) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot map the scoreboard: {e}");
            return exit_code::STARTUP;
        }
    };
    log::info!(
        "host {} serving {} with {} worker(s)",
        env!("CARGO_PKG_VERSION"),
        config.app,
        config.workers
    );
    for l in &listeners {
        let from = if socket_activated {
            " (socket from systemd)"
        } else {
            ""
        };
        log::info!("listening on {}{from}", l.url());
    }
    log::info!("generation 1: build {}", build.hash);
    let effective = sources::to_toml(&sources).unwrap_or_default();
    let autoscaler = config.workers_max.map(|max| {
        Autoscaler::new(
            config.workers as usize,
            max as usize,
            Duration::from_secs(config.idle_timeout),
        )
    });
    let mut master = Master {
        identity,
        _pid_file: pid_file,
        sources,
        effective,
        target: config.workers as usize,
        watch: config.reload.then_some(Watch { candidate: None }),
        seen_stamp: Some(build.stamp),
        config,
        listeners,
        access_log,
        scoreboard,
        sigfd,
        snapshots,
        generation: 1,
        build,
        old_builds: BTreeMap::new(),
        reload_requested: None,
        probe: None,
        workers: BTreeMap::new(),
        boot_failures: 0,
        next_spawn: Instant::now(),
        stop: None,
        pid: nix::unistd::getpid(),
        refused_builds: 0,
        rollout_started: Some(Instant::now()),
        ever_ready: false,
        status,
        started: Instant::now(),
        spawns: 0,
        exits: BTreeMap::new(),
        reloads: 0,
        retired_totals: scoreboard::RequestTotals::default(),
        autoscaler,
        notifier,
        socket_activated,
    };
    let code = master.run_loop();
    master.listeners.iter().for_each(Listener::cleanup);
    if code == exit_code::OK {
        log::info!("shutdown complete");
    }
    code
}

/// Snapshots the configured library, as a one-line error.
fn take_snapshot(snapshots: &Snapshots, config: &Config) -> Result<Build, String> {
    snapshots
        .take(&config.app.path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => "no such file".to_owned(),
            _ => e.to_string(),
        })
}

/// A probe's message with the snapshot's path replaced by the operator's.
fn unsnapshot(message: &str, build: &Build, config: &Config) -> String {
    message.replace(
        &build.snapshot.display().to_string(),
        &config.app.path.display().to_string(),
    )
}

impl Config {
    fn boot_timeout(&self) -> Duration {
        Duration::from_secs(self.boot_timeout)
    }
}

impl Master {
    /// Runs until the server stops; returns the exit code.
    fn run_loop(&mut self) -> i32 {
        loop {
            self.wait();
            if let Some(mut status) = self.status.take() {
                status.service(|| self.snapshot());
                self.status = Some(status);
            }
            for (pid, rec) in self.workers.iter_mut() {
                let tag = format!("worker {} (pid {pid})", rec.id);
                for pipe in &mut rec.output {
                    pipe.drain(&tag, false);
                }
            }
            for signal in os_signals::drain(&mut self.sigfd) {
                self.handle_signal(signal);
            }
            if let Some(p) = &mut self.probe {
                p.probe.read_ready();
            }
            self.reap_workers();
            self.settle_probe();
            if !self.ever_ready && self.boot_failures >= STARTUP_BOOT_ATTEMPTS {
                log::error!(
                    "no worker could boot in {STARTUP_BOOT_ATTEMPTS} attempts since start-up; giving up"
                );
                self.signal_all(Signal::SIGKILL);
                if let Some(p) = &self.probe {
                    p.probe.kill();
                }
                while waitpid(None, None).is_ok() {}
                return exit_code::WORKER_BOOT;
            }
            if let Some(stop) = &mut self.stop {
                if self.workers.is_empty() {
                    if let Some(p) = &self.probe {
                        p.probe.kill();
                    }
                    return exit_code::OK;
                }
                if Instant::now() >= stop.deadline && !stop.killed {
                    stop.killed = true;
                    log::warn!(
                        "{} worker(s) still running after the {} stop timeout; killing them",
                        self.workers.len(),
                        if stop.quick { "quick" } else { "graceful" }
                    );
                    self.signal_all(Signal::SIGKILL);
                }
                continue;
            }
            self.watch_file();
            self.start_reload();
            self.check_workers();
            self.manage_workers();
        }
    }

    /// Sleeps until a signal or a probe report arrives, the next spawn is due, or a tick passes.
    fn wait(&self) {
        let now = Instant::now();
        // Watching the library, or sizing the pool, wants a finer tick.
        let mut timeout = if self.watch.is_some() || self.autoscaler.is_some() {
            WATCH_TICK
        } else {
            TICK
        };
        if self.stop.is_none() && self.serving_count() < self.target {
            timeout = timeout.min(self.next_spawn.saturating_duration_since(now));
        }
        if let Some(stop) = &self.stop {
            timeout = timeout.min(stop.deadline.saturating_duration_since(now));
        }
        let millis = timeout.as_millis().min(u16::MAX as u128) as u16;
        let mut fds = vec![PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN)];
        if let Some(p) = &self.probe {
            fds.push(PollFd::new(p.probe.fd(), PollFlags::POLLIN));
        }
        if let Some(status) = &self.status {
            fds.extend(
                status
                    .poll_set()
                    .into_iter()
                    .map(|(fd, flags)| PollFd::new(fd, flags)),
            );
        }
        for rec in self.workers.values() {
            fds.extend(
                rec.output
                    .iter()
                    .filter_map(|p| p.fd())
                    .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
            );
        }
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => log::error!("master: poll failed: {e}"),
        }
    }

    fn handle_signal(&mut self, signal: Signal) {
        let stopping = self.stop.is_some();
        match signals::master_action(signal) {
            MasterAction::GracefulStop => self.begin_stop(false, signal),
            MasterAction::QuickStop => self.begin_stop(true, signal),
            MasterAction::Reload if !stopping => {
                log::info!("SIGHUP: reloading");
                self.notifier.reloading(&self.status_line());
                self.rollout_started.get_or_insert_with(Instant::now);
                if self.config.config.is_some() {
                    self.reread_settings();
                }
                self.reload_requested = Some("SIGHUP");
                self.seen_stamp = None; // a HUP always takes the file as it is now
            }
            MasterAction::AddWorker if !stopping => {
                if self.target < MAX_WORKERS {
                    self.target += 1;
                }
                log::info!("SIGTTIN: workers now {}", self.target);
                self.notifier.status(&self.status_line());
            }
            MasterAction::RemoveWorker if !stopping => {
                if self.target > 1 {
                    self.target -= 1;
                    self.shrink();
                }
                log::info!("SIGTTOU: workers now {}", self.target);
                self.notifier.status(&self.status_line());
            }
            MasterAction::ReopenLogs => self.reopen_logs(),
            MasterAction::Reload
            | MasterAction::AddWorker
            | MasterAction::RemoveWorker
            | MasterAction::ChildExited
            | MasterAction::WorkerNudge
            | MasterAction::Ignore => {}
        }
    }

    /// HUP with a config file: reads the settings again, says what changed,
    /// and applies it (new workers get the new settings as the reload rolls).
    fn reread_settings(&mut self) {
        let (new, new_text) = match (
            sources::resolve(&self.sources),
            sources::to_toml(&self.sources),
        ) {
            (Ok(new), Ok(new_text)) => (new, new_text),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("SIGHUP: settings not reloaded ({e}); keeping the current ones");
                return;
            }
        };
        let changes = sources::diff(&self.effective, &new_text);
        if changes.is_empty() {
            log::info!("SIGHUP: settings unchanged");
        } else {
            log::info!("SIGHUP: settings changed: {}", changes.join("; "));
        }
        if new.binds != self.config.binds && self.socket_activated {
            log::warn!("SIGHUP: bind changes do not apply to sockets from systemd");
        } else if new.binds != self.config.binds {
            let opts = match new.socket_options() {
                Ok(opts) => opts,
                Err(e) => {
                    log::error!("SIGHUP: {e}; keeping the current settings");
                    return;
                }
            };
            match self.rebind(&new.binds, &opts) {
                Ok(()) => {}
                Err(e) => {
                    log::error!("SIGHUP: {e}; keeping the current settings");
                    return;
                }
            }
        }
        let log_changed = new.access_logfile != self.config.access_logfile;
        if new.log_level != self.config.log_level {
            log::set_max_level(new.log_level.filter());
        }
        if new.workers as usize != self.config.workers as usize {
            self.target = new.workers as usize;
        }
        let mut new = new;
        if new.threads != self.config.threads {
            // The scoreboard's lanes were sized at start.
            log::warn!(
                "SIGHUP: --threads changes need a restart; keeping {}",
                self.config.threads
            );
            new.threads = self.config.threads;
        }
        self.config = new;
        self.effective = new_text;
        if log_changed {
            self.access_log = match self
                .config
                .access_logfile
                .as_deref()
                .map(AccessLogTarget::open)
            {
                None => None,
                Some(Ok(target)) => Some(target),
                Some(Err(e)) => {
                    log::error!("SIGHUP: cannot open the new access log: {e}");
                    None
                }
            };
        }
    }

    /// Listens on `binds`, keeping the sockets already open for addresses
    /// that stay. All or nothing: if one new address fails, nothing changes.
    fn rebind(&mut self, binds: &[BindAddr], opts: &SocketOptions) -> Result<(), String> {
        let mut fresh = Vec::new();
        for addr in binds {
            if self.listeners.iter().any(|l| &l.addr == addr) {
                continue;
            }
            match Listener::bind(addr, opts) {
                Ok(l) => fresh.push(l),
                Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
            }
        }
        let mut old: Vec<Option<Listener>> = self.listeners.drain(..).map(Some).collect();
        let mut fresh: Vec<Option<Listener>> = fresh.into_iter().map(Some).collect();
        for addr in binds {
            let found = old
                .iter_mut()
                .chain(fresh.iter_mut())
                .find(|l| l.as_ref().is_some_and(|l| &l.addr == addr))
                .and_then(Option::take);
            if let Some(l) = found {
                self.listeners.push(l);
            }
        }
        for l in &self.listeners {
            log::info!("listening on {}", l.url());
        }
        for gone in old.into_iter().flatten() {
            log::info!("no longer listening on {}", gone.url());
            gone.cleanup();
        }
        Ok(())
    }

    fn reopen_logs(&mut self) {
        if let Err(e) = logging::reopen(&self.config.error_logfile) {
            log::error!("SIGUSR1: cannot reopen the error log: {e}");
        }
        if let Some(path) = &self.config.access_logfile {
            match AccessLogTarget::open(path) {
                Ok(target) => self.access_log = Some(target),
                Err(e) => log::error!("SIGUSR1: cannot reopen the access log: {e}"),
            }
        }
        // Signal first, log after: once the line is out, every worker has
        // the signal pending, ahead of any request sent after it.
        for pid in self.workers.keys() {
            let _ = kill(*pid, os_signals::WORKER_REOPEN_LOGS);
        }
        log::info!("SIGUSR1: reopening log files");
    }

    /// Marks the highest-numbered current worker to retire (TTOU).
    fn shrink(&mut self) {
        let generation = self.generation;
        if let Some(rec) = self
            .workers
            .values_mut()
            .filter(|w| w.retire.is_none() && w.generation == generation)
            .max_by_key(|w| w.id)
        {
            rec.retire = Some(Retire::Shrink);
        }
    }

    fn begin_stop(&mut self, quick: bool, signal: Signal) {
        if self.stop.as_ref().is_some_and(|s| s.quick || !quick) {
            return; // already stopping at least this fast
        }
        let (grace, how) = if quick {
            (QUICK_STOP_GRACE, "quick")
        } else {
            (
                Duration::from_secs(self.config.graceful_timeout),
                "graceful",
            )
        };
        log::info!(
            "{}: shutting down ({how}, up to {} s)",
            signal.as_str(),
            grace.as_secs()
        );
        self.notifier.stopping(&format!("stopping ({how})"));
        // Stop taking connections at once: with the workers' copies closed
        // too, connecting fails fast (or reaches a --reuse-port successor).
        for l in self.listeners.drain(..) {
            l.cleanup();
        }
        self.stop = Some(Stop {
            deadline: Instant::now() + grace,
            quick,
            killed: false,
        });
        self.signal_all(if quick {
            os_signals::WORKER_QUICK
        } else {
            os_signals::WORKER_GRACEFUL
        });
    }

    fn signal_all(&self, signal: Signal) {
        for (pid, rec) in &self.workers {
            if signal == os_signals::WORKER_GRACEFUL {
                if let Some(slot) = self.scoreboard.slot(rec.slot) {
                    slot.request_stop();
                }
            }
            let _ = kill(*pid, signal);
        }
    }

    /// Workers of the current generation not on their way out.
    fn serving_count(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.retire.is_none() && w.generation == self.generation)
            .count()
    }

    /// `--reload`: notices a new version of the library once it stops changing.
    fn watch_file(&mut self) {
        let Some(watch) = &mut self.watch else {
            return;
        };
        // A missing file is normal mid-build (cargo unlinks, then links).
        let Ok(stamp) = FileStamp::of(&self.config.app.path) else {
            watch.candidate = None;
            return;
        };
        if Some(stamp) == self.seen_stamp {
            watch.candidate = None;
            return;
        }
        match watch.candidate {
            Some((seen, since)) if seen == stamp => {
                if since.elapsed() >= RELOAD_DEBOUNCE && self.reload_requested.is_none() {
                    log::info!("{} changed; reloading", self.config.app.path.display());
                    self.reload_requested = Some("file changed");
                    watch.candidate = None;
                }
            }
            _ => watch.candidate = Some((stamp, Instant::now())),
        }
    }

    /// Snapshots the library and starts its probe, if a reload is pending.
    fn start_reload(&mut self) {
        if self.probe.is_some() {
            return; // one probe at a time; the request waits
        }
        let Some(cause) = self.reload_requested else {
            return;
        };
        let build = match self.snapshots.take(&self.config.app.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return, // still being written
            Err(e) => {
                self.reload_requested = None;
                self.refused_builds += 1;
                log::error!(
                    "reload ({cause}) refused: cannot read {}: {e}; generation {} (build {}) keeps serving",
                    self.config.app.path.display(),
                    self.generation,
                    self.build.hash
                );
                return;
            }
        };
        self.reload_requested = None;
        self.seen_stamp = Some(build.stamp);
        if build.hash == self.build.hash && cause != "SIGHUP" {
            return; // same bytes: nothing to do
        }
        if build.hash == self.build.hash {
            // Same build on HUP: already probed; restart the workers on it.
            self.begin_generation(build, cause);
            return;
        }
        match Probe::start(&build.spec(&self.config.app), self.identity.as_ref()) {
            Ok(probe) => {
                log::info!("probing build {} ({cause})", build.hash);
                self.probe = Some(PendingProbe {
                    probe,
                    build,
                    cause,
                });
            }
            Err(e) => log::error!("cannot probe build {}: {e}", build.hash),
        }
    }

    /// Takes a probe's verdict once it has one; kills a probe past the boot timeout.
    fn settle_probe(&mut self) {
        let Some(pending) = &self.probe else {
            return;
        };
        let outcome = match pending.probe.outcome() {
            Some(outcome) => outcome,
            None => {
                if pending.probe.started.elapsed() > self.config.boot_timeout() {
                    pending.probe.kill(); // reaped next turn
                }
                return;
            }
        };
        let Some(PendingProbe { build, cause, .. }) = self.probe.take() else {
            return;
        };
        match outcome {
            Ok(()) => self.begin_generation(build, cause),
            Err(message) => {
                self.refused_builds += 1;
                log::error!(
                    "build {} refused ({cause}): {}; generation {} (build {}) keeps serving [{} refused so far]",
                    build.hash,
                    unsnapshot(&message, &build, &self.config),
                    self.generation,
                    self.build.hash,
                    self.refused_builds
                );
                if build.snapshot != self.build.snapshot
                    && self
                        .old_builds
                        .values()
                        .all(|b| b.snapshot != build.snapshot)
                {
                    self.snapshots.remove(&build);
                }
            }
        }
    }

    /// Makes `build` current and marks every older worker for retirement.
    fn begin_generation(&mut self, build: Build, cause: &'static str) {
        self.reloads += 1;
        let old = std::mem::replace(&mut self.build, build);
        self.old_builds.insert(self.generation, old);
        self.generation += 1;
        self.boot_failures = 0;
        self.next_spawn = Instant::now();
        self.rollout_started = Some(Instant::now());
        let strategy = match self.config.reload_strategy {
            ReloadStrategy::All => "all at once",
            ReloadStrategy::Chain => "one at a time",
        };
        log::info!(
            "generation {}: build {} ({cause}); rolling {} worker(s) {strategy}",
            self.generation,
            self.build.hash,
            self.target
        );
        for rec in self.workers.values_mut() {
            if rec.retire.is_none() {
                rec.retire = Some(Retire::Outdated);
            }
        }
    }

    /// Collects every exited child and says why it exited.
    fn reap_workers(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("master: waitpid failed: {e}");
                    break;
                }
            };
            let Some(pid) = status.pid() else { continue };
            if let Some(p) = &mut self.probe {
                if p.probe.pid == pid {
                    p.probe.exited(status);
                    continue;
                }
            }
            let (cause, clean) = match status {
                WaitStatus::Exited(_, 0) => ("with status 0".to_owned(), true),
                WaitStatus::Exited(_, code) => (format!("with status {code}"), false),
                WaitStatus::Signaled(_, sig, core) => (
                    format!(
                        "killed by {}{}",
                        sig.as_str(),
                        if core { " (core dumped)" } else { "" }
                    ),
                    false,
                ),
                _ => continue,
            };
            let Some(mut rec) = self.workers.remove(&pid) else {
                continue;
            };
            let tag = format!("worker {} (pid {pid})", rec.id);
            for pipe in &mut rec.output {
                pipe.drain(&tag, true);
            }
            let Some(slot) = self.scoreboard.slot(rec.slot) else {
                continue;
            };
            let booted = rec.ready || slot.was_ready();
            let during = self
                .scoreboard
                .oldest_request(rec.slot)
                .and_then(|(lane, start)| {
                    let line = self.scoreboard.lane(rec.slot, lane)?.request_line();
                    Some(format!(
                        " while handling \"{line}\" (for {} ms)",
                        scoreboard::now_ms().saturating_sub(start)
                    ))
                })
                .unwrap_or_default();
            let served = slot.requests();
            self.retired_totals.add(slot);
            let category = match status {
                _ if rec.timed_out => "timeout",
                _ if !(rec.ready || slot.was_ready()) => "boot_failure",
                WaitStatus::Exited(_, 0) => "exit",
                WaitStatus::Signaled(_, Signal::SIGKILL, _) if rec.killed => "killed",
                WaitStatus::Signaled(..) => "crash",
                _ => "error",
            };
            *self.exits.entry(category).or_insert(0) += 1;
            slot.release();
            let expected = self.stop.is_some() || rec.retire.is_some();
            if expected && clean {
                log::info!(
                    "worker {} (pid {pid}) exited {cause} after {served} request(s)",
                    rec.id
                );
            } else if rec.timed_out {
                log::warn!(
                    "worker {} (pid {pid}) exited {cause} after its request timed out",
                    rec.id
                );
            } else if !booted && self.stop.is_none() && rec.generation == self.generation {
                self.boot_failures += 1;
                let delay = BOOT_BACKOFF_BASE
                    .saturating_mul(1 << (self.boot_failures - 1).min(16))
                    .min(BOOT_BACKOFF_MAX);
                self.next_spawn = Instant::now() + delay;
                log::error!(
                    "worker {} (pid {pid}) exited {cause} before it was ready (boot failure {}); next attempt in {:.1} s",
                    rec.id,
                    self.boot_failures,
                    delay.as_secs_f64()
                );
            } else {
                log::error!("worker {} (pid {pid}) exited {cause}{during}", rec.id);
            }
        }
        self.forget_unused_builds();
    }

    /// Deletes snapshots of generations that have no workers left.
    fn forget_unused_builds(&mut self) {
        let live: Vec<u32> = self.workers.values().map(|w| w.generation).collect();
        let unused: Vec<u32> = self
            .old_builds
            .keys()
            .copied()
            .filter(|g| !live.contains(g))
            .collect();
        for g in unused {
            if let Some(build) = self.old_builds.remove(&g) {
                let shared = build.snapshot == self.build.snapshot
                    || self
                        .old_builds
                        .values()
                        .any(|b| b.snapshot == build.snapshot);
                if !shared {
                    self.snapshots.remove(&build);
                }
            }
        }
    }

    /// Reads the scoreboard: readiness, requests to retire, boot and request timeouts.
    fn check_workers(&mut self) {
        let now = Instant::now();
        let boot_timeout = self.config.boot_timeout();
        let timeout = self.config.timeout();
        for (pid, rec) in self.workers.iter_mut() {
            let Some(slot) = self.scoreboard.slot(rec.slot) else {
                continue;
            };
            if !rec.ready && slot.was_ready() {
                rec.ready = true;
                self.ever_ready = true;
                if rec.generation == self.generation {
                    self.boot_failures = 0;
                }
            }
            if rec.retire.is_none() {
                if let Some(reason) = slot.retire_requested() {
                    log::info!(
                        "worker {} (pid {pid}) asks to be replaced: {} ({} requests, {:.1} MiB)",
                        rec.id,
                        reason.describe(),
                        slot.requests(),
                        slot.rss_kib() as f64 / 1024.0
                    );
                    rec.retire = Some(Retire::Asked(reason));
                    if reason == RetireReason::TimedOut {
                        // A threaded worker past --timeout finishes its other
                        // requests: it is stopped gracefully once replaced,
                        // like any retiring worker.
                        rec.signalled = None;
                    }
                }
            }
            if rec.killed {
                continue;
            }
            let graceful = Duration::from_secs(self.config.graceful_timeout);
            let oldest = self.scoreboard.oldest_request(rec.slot);
            let Some(overdue) = overdue(rec, slot, oldest, now, boot_timeout, timeout, graceful)
            else {
                continue;
            };
            let id = rec.id;
            match overdue {
                Overdue::Boot => log::error!(
                    "worker {id} (pid {pid}) not ready after {} s (--boot-timeout); killing it",
                    boot_timeout.as_secs()
                ),
                Overdue::Request(lane, ran) => log::error!(
                    "worker {id} (pid {pid}) timed out: \"{}\" has run {:.1} s (--timeout {}); stopping it",
                    self.scoreboard
                        .lane(rec.slot, lane)
                        .map(|l| l.request_line())
                        .unwrap_or_default(),
                    ran.as_secs_f64(),
                    timeout.map_or(0, |t| t.as_secs())
                ),
                Overdue::Stuck(silent) => log::error!(
                    "worker {id} (pid {pid}) has not looked up from its event loop for {:.1} s (--timeout {}); killing it",
                    silent.as_secs_f64(),
                    timeout.map_or(0, |t| t.as_secs())
                ),
                Overdue::Stop(grace) => log::warn!(
                    "worker {id} (pid {pid}) still running {} s after it was told to stop; killing it",
                    grace.as_secs()
                ),
            }
            if let Overdue::Request(lane, _) = overdue {
                // A catchable signal first: the worker answers 504 and says
                // where it was (a threaded one then finishes its other requests).
                slot.set_timed_out_lane(lane);
                let _ = kill(*pid, os_signals::WORKER_TIMED_OUT);
                rec.timed_out = true;
                rec.signalled = Some(now);
            } else {
                let _ = kill(*pid, Signal::SIGKILL);
                rec.killed = true;
            }
        }
    }

    /// Brings the pool to the target on the current build, retiring old workers
    /// only as new ones are ready.
    fn manage_workers(&mut self) {
        self.autoscale();
        let generation = self.generation;
        let ready_serving = self
            .workers
            .values()
            .filter(|w| w.retire.is_none() && w.generation == generation && w.ready)
            .count();
        // Workers on their way out may stay while the pool needs them.
        let may_stay = self.target.saturating_sub(ready_serving);
        let mut leaving: Vec<(Instant, Pid)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.retire.is_some() && w.signalled.is_none())
            .map(|(pid, w)| (w.spawned, *pid))
            .collect();
        leaving.sort();
        // Keep the newest ones that may stay; stop the rest, oldest first.
        let stop_count = leaving.len().saturating_sub(may_stay);
        for (_, pid) in leaving.into_iter().take(stop_count) {
            if let Some(rec) = self.workers.get_mut(&pid) {
                let reason = rec.retire.map(Retire::describe).unwrap_or("");
                log::info!("retiring worker {} (pid {pid}): {reason}", rec.id);
                if let Some(slot) = self.scoreboard.slot(rec.slot) {
                    slot.request_stop();
                }
                let _ = kill(pid, os_signals::WORKER_GRACEFUL);
                rec.signalled = Some(Instant::now());
            }
        }
        // A respawn notices a build written since the last reload.
        if self.serving_count() < self.target
            && self.reload_requested.is_none()
            && self.probe.is_none()
        {
            if let Ok(stamp) = FileStamp::of(&self.config.app.path) {
                if Some(stamp) != self.seen_stamp {
                    self.reload_requested = Some("file changed before a respawn");
                }
            }
        }
        self.note_rollout_done();
        let chain = self.config.reload_strategy == ReloadStrategy::Chain;
        while self.serving_count() < self.target && Instant::now() >= self.next_spawn {
            let booting = self
                .workers
                .values()
                .any(|w| w.generation == generation && !w.ready && w.retire.is_none());
            let rolling = self.workers.values().any(|w| w.generation != generation);
            if chain && rolling && booting {
                break; // chain reload: one new worker at a time
            }
            if !self.spawn_worker() || self.boot_failures > 0 {
                break; // after a boot failure, one attempt per backoff period
            }
        }
    }

    /// Logs, once, that every worker runs the current generation.
    fn note_rollout_done(&mut self) {
        let Some(started) = self.rollout_started else {
            return;
        };
        let generation = self.generation;
        let ready = self
            .workers
            .values()
            .filter(|w| w.generation == generation && w.ready && w.retire.is_none())
            .count();
        let old = self.workers.values().any(|w| w.generation != generation);
        if ready >= self.target && !old {
            self.rollout_started = None;
            log::info!(
                "generation {generation} complete: {ready} worker(s) on build {}, older ones gone, {:.0} ms after it began",
                self.build.hash,
                started.elapsed().as_secs_f64() * 1000.0
            );
            self.notifier.ready(&self.status_line());
        }
    }

    /// The server's state for /metrics and /status.
    fn snapshot(&self) -> Snapshot {
        let now_ms = scoreboard::now_ms();
        let mut totals = self.retired_totals.clone();
        let mut workers: Vec<WorkerView> =
            self.workers
                .iter()
                .filter_map(|(pid, rec)| {
                    let slot = self.scoreboard.slot(rec.slot)?;
                    totals.add(slot);
                    let state = slot.state();
                    Some(WorkerView {
                        id: rec.id,
                        pid: pid.as_raw(),
                        state: match state {
                            State::Booting => "booting",
                            State::Idle => "idle",
                            State::Busy => "busy",
                            State::Stopping | State::Free => "stopping",
                        },
                        generation: rec.generation,
                        requests: slot.requests(),
                        current: self.scoreboard.oldest_request(rec.slot).and_then(
                            |(lane, start)| {
                                let line = self.scoreboard.lane(rec.slot, lane)?.request_line();
                                Some((line, now_ms.saturating_sub(start)))
                            },
                        ),
                        rss_kib: slot.rss_kib(),
                    })
                })
                .collect();
        workers.sort_by_key(|w| w.id);
        Snapshot {
            app: app_title(&self.config),
            generation: self.generation,
            build: self.build.hash.clone(),
            uptime_s: self.started.elapsed().as_secs(),
            workers,
            totals,
            spawns: self.spawns,
            target: self.target as u64,
            resizes: self
                .autoscaler
                .as_ref()
                .map_or((0, 0), |a| (a.grown, a.shrunk)),
            deaths: self.exits.clone(),
            reloads: self.reloads,
            refused_builds: self.refused_builds,
            backlogs: self
                .listeners
                .iter()
                .filter_map(|l| {
                    let (queued, max) = l.queue()?;
                    Some(Backlog {
                        url: l.url(),
                        queued,
                        max,
                    })
                })
                .collect(),
        }
    }

    /// One line on the server's state, for the service manager.
    fn status_line(&self) -> String {
        format!(
            "{} worker(s), generation {} (build {})",
            self.workers.len(),
            self.generation,
            self.build.hash
        )
    }

    /// `--workers-max`: grows the pool when it is saturated, retires a worker
    /// idle past `--idle-timeout`.
    fn autoscale(&mut self) {
        let generation = self.generation;
        if self.autoscaler.is_none() || self.workers.values().any(|w| w.generation != generation) {
            return; // not asked for, or a rollout is under way
        }
        let mut ready = 0;
        let mut busy = 0;
        let mut idlest: Option<(u64, Pid)> = None;
        for (pid, rec) in &self.workers {
            if rec.retire.is_some() || !rec.ready {
                continue;
            }
            let Some(slot) = self.scoreboard.slot(rec.slot) else {
                continue;
            };
            ready += 1;
            match slot.state() {
                State::Busy => busy += 1,
                State::Idle => {
                    let idle = slot.idle_ms();
                    if idlest.is_none_or(|(most, _)| idle > most) {
                        idlest = Some((idle, *pid));
                    }
                }
                _ => {}
            }
        }
        let queued: u32 = self
            .listeners
            .iter()
            .filter_map(|l| l.queue())
            .map(|(q, _)| q)
            .sum();
        let Some(scaler) = &mut self.autoscaler else {
            return;
        };
        let load = Load {
            ready,
            busy,
            queued,
            target: self.target,
        };
        if let Decision::Grow(to) = scaler.decide(load, Instant::now()) {
            log::info!(
                "all {ready} worker(s) busy, {queued} connection(s) waiting: growing the pool to {to} (--workers-max {})",
                scaler.max
            );
            self.target = to;
            return;
        }
        if let Some((idle_ms, pid)) = idlest {
            let idle = Duration::from_millis(idle_ms);
            if scaler.may_retire(self.target, idle) {
                scaler.shrunk += 1;
                self.target -= 1;
                if let Some(rec) = self.workers.get_mut(&pid) {
                    rec.retire = Some(Retire::Shrink);
                    log::info!(
                        "worker {} (pid {pid}) idle for {:.0} s: shrinking the pool to {} (--idle-timeout)",
                        rec.id,
                        idle.as_secs_f64(),
                        self.target
                    );
                }
            }
        }
    }

    /// Forks one worker on the current build. Returns false if it could not.
    fn spawn_worker(&mut self) -> bool {
        let Some(index) = self.scoreboard.free_index() else {
            log::error!("no free scoreboard slot for another worker");
            return false;
        };
        let Some(slot) = self
            .scoreboard
            .claim(index, self.generation, self.config.threads)
        else {
            return false;
        };
        let id = index as u32 + 1;
        let spec = self.build.spec(&self.config.app);
        let max_requests = match self.config.max_requests {
            0 => None,
            n => Some(n + jitter(self.config.max_requests_jitter)),
        };
        let spawned_at = Instant::now();
        let pipes = match (
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC),
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC),
        ) {
            (Ok(out), Ok(err)) => (out, err),
            (Err(e), _) | (_, Err(e)) => {
                slot.release();
                log::error!("cannot create pipes for a worker's output: {e}");
                self.next_spawn = Instant::now() + BOOT_BACKOFF_BASE;
                return false;
            }
        };
        let ((out_r, out_w), (err_r, err_w)) = pipes;
        // SAFETY: the master is single-threaded, so the child inherits a consistent state.
        match unsafe { fork() } {
            // In the child: the worker owns what it is handed (taken from
            // this copy of the master, which is never used again).
            Ok(ForkResult::Child) => std::process::exit(worker::run(WorkerArgs {
                output: Some((out_w, err_w)),
                id,
                spec: spec.clone(),
                listeners: std::mem::take(&mut self.listeners),
                serve: self.config.serve_options(),
                scoreboard: self.scoreboard.clone(),
                slot_index: index,
                access_log: self.access_log.take(),
                access_log_path: self.config.access_logfile.clone(),
                error_log_path: self.config.error_logfile.clone(),
                max_requests,
                max_memory_kib: self.config.max_worker_memory * 1024,
                identity: self.identity.clone(),
                title: format!(
                    "host: worker {id} gen {} [{}]",
                    self.generation,
                    app_title(&self.config)
                ),
                spawned_at,
                master_pid: self.pid,
            })),
            Ok(ForkResult::Parent { child }) => {
                drop((out_w, err_w));
                let parent_ends = vec![
                    logging::OutputPipe::new(out_r, "stdout"),
                    logging::OutputPipe::new(err_r, "stderr"),
                ];
                self.spawns += 1;
                slot.set_pid(child.as_raw());
                log::debug!(
                    "booting worker {id} (pid {child}) on generation {}",
                    self.generation
                );
                self.workers.insert(
                    child,
                    WorkerRec {
                        id,
                        slot: index,
                        generation: self.generation,
                        spawned: spawned_at,
                        ready: false,
                        retire: None,
                        signalled: None,
                        killed: false,
                        timed_out: false,
                        output: parent_ends,
                    },
                );
                true
            }
            Err(e) => {
                slot.release();
                log::error!("cannot fork a worker: {e}");
                self.next_spawn = Instant::now() + BOOT_BACKOFF_BASE;
                false
            }
        }
    }
}

/// The app as process titles show it: the library's file name and the export.
fn app_title(config: &Config) -> String {
    let file = config
        .app
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{file}:{}", config.app.name)
}

/// A deadline a worker has passed.
enum Overdue {
    /// Not ready within --boot-timeout.
    Boot,
    /// The request of this lane has run this long, past --timeout.
    Request(usize, Duration),
    /// Idle, yet its event loop gave no sign of life for this long (past --timeout).
    Stuck(Duration),
    /// Told to stop this grace period ago, and still there.
    Stop(Duration),
}

/// Which deadline, if any, the worker `rec` has passed; `oldest` is its
/// longest-running request (lane, start).
fn overdue(
    rec: &WorkerRec,
    slot: &scoreboard::Slot,
    oldest: Option<(usize, u64)>,
    now: Instant,
    boot_timeout: Duration,
    timeout: Option<Duration>,
    graceful: Duration,
) -> Option<Overdue> {
    if !rec.ready && now.duration_since(rec.spawned) > boot_timeout {
        return Some(Overdue::Boot);
    }
    let now_ms = scoreboard::now_ms();
    if let Some(limit) = timeout.filter(|_| !rec.timed_out) {
        if let Some((lane, start)) = oldest {
            let ran = Duration::from_millis(now_ms.saturating_sub(start));
            if ran > limit {
                return Some(Overdue::Request(lane, ran));
            }
        }
        // A worker's event loop looks up between requests; a threaded one's
        // never stops looking up.
        let looking_up = oldest.is_none() || slot.threads() > 1;
        if rec.ready && looking_up && matches!(slot.state(), State::Idle | State::Busy) {
            let silent = Duration::from_millis(now_ms.saturating_sub(slot.heartbeat_ms()));
            if silent > limit {
                return Some(Overdue::Stuck(silent));
            }
        }
    }
    // A threaded worker that timed out serves its other requests to the end,
    // as in any graceful stop.
    let grace = if rec.timed_out && slot.retire_requested() != Some(RetireReason::TimedOut) {
        TIMEOUT_KILL_GRACE
    } else {
        graceful
    };
    rec.signalled
        .filter(|at| now.duration_since(*at) > grace)
        .map(|_| Overdue::Stop(grace))
}

/// A number from 0 to `max`, different for each call (spreads worker restarts).
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(0);
    // SplitMix64 finaliser: scrambles the clock into a well-spread value.
    let mut z = nanos.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % (max + 1)
}
