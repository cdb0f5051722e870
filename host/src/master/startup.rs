//! Start-up: from settings to a running loop ([`run`]), or to a verdict on
//! the app ([`check`], `--check-config`).
//!
//! In order: capture how the server was started (for a binary upgrade),
//! take the descriptors handed over (systemd's or an old master's,
//! `fd://N`), block the master's signals, prepare the process (`--chdir`,
//! `--umask`, `--env`, `--user`), point the error log, raise the
//! open-files limit to the hard limit ([`crate::os::limits`]), take and
//! probe the first build, bind, open the access log, the status endpoint,
//! the pid file (a new master of an upgrade: when it takes over) and the
//! scoreboard. Each failure is one line and an exit code from
//! [`crate::exit_code`]. Clean-up is structural: what was made so far is
//! owned by values ([`Listeners`] removes its socket files, the pid file and
//! the snapshots remove themselves), so every early return leaves nothing
//! behind.

use std::{
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use crate::{
    app::builds::{Build, Snapshots},
    app::probe,
    config::sources::{self, Sources},
    config::{Config, MAX_WORKERS},
    control::{self, server::ControlServer},
    exit_code,
    master::{
        autoscale::Autoscaler,
        pool::Pool,
        rollout::{self, Rollout},
        settings::{self, Settings},
        signals,
        upgrade::Upgrade,
        Counters, Io, Master,
    },
    os::handover::{self, Relaunch},
    os::limits,
    os::listener::{InheritedFds, Listener, Listeners},
    os::process::{self, Identity},
    os::signals as os_signals,
    os::systemd::Notifier,
    report::logging,
    report::status_server::StatusServer,
    scoreboard::Scoreboard,
};

/// A start-up failure: the exit code and the one-line message.
type Failure = (i32, String);

/// Applies --chdir, --umask and --env to this process and resolves --user and
/// --group; an exit code and a one-line error when one is wrong.
fn prepare_process(config: &Config) -> Result<Option<Identity>, Failure> {
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

/// Snapshots and probes the configured app: the first build, or an exit code
/// and a one-line error ([`exit_code::STARTUP`] when the snapshot directory
/// cannot be made: the environment is wrong, not the app;
/// [`exit_code::APP_LOAD`] when the app does not load). `close_in_child`
/// closes the master-only descriptors in the probe.
fn first_build(
    config: &Config,
    identity: Option<&Identity>,
    close_in_child: impl FnOnce(),
) -> Result<(Snapshots, Build), Failure> {
    let snapshots = Snapshots::new().map_err(|message| (exit_code::STARTUP, message))?;
    let build = rollout::take_snapshot(&snapshots, config).map_err(|message| {
        let message = format!("cannot load {}: {message}", config.app);
        (exit_code::APP_LOAD, message)
    })?;
    let timeout = settings::boot_timeout(config);
    let probe_as = probe::ProbeAs {
        threads: config.threads,
        generation: 1,
    };
    probe::check(
        &build.spec(&config.app),
        probe_as,
        timeout,
        identity,
        close_in_child,
    )
    .map_err(|message| {
        let message = format!(
            "cannot load {}: {}",
            config.app,
            rollout::unsnapshot(&message, &build, config)
        );
        (exit_code::APP_LOAD, message)
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
    match settings::load_tls(config) {
        Ok(Some(tls)) => {
            for line in tls.describe() {
                println!("ok: {line}");
            }
        }
        Ok(None) => {}
        Err(message) => {
            eprintln!("error: {message}");
            return exit_code::STARTUP;
        }
    }
    match first_build(config, identity.as_ref(), || {}) {
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
        Err((code, message)) => {
            eprintln!("error: {message}");
            code
        }
    }
}

/// The control socket, unless `--no-control`: the one an old master handed
/// over (`inherited`, on a binary upgrade), else bound. A socket `--control`
/// names must be bound; at the default path, a failure (another master
/// answers there) is a warning and the server runs without one.
fn bind_control(
    config: &Config,
    inherited: Option<OwnedFd>,
) -> Result<Option<ControlServer>, Failure> {
    if config.no_control {
        return Ok(None);
    }
    let path = config.control.clone().unwrap_or_else(control::default_path);
    match ControlServer::bind(&path, inherited) {
        Ok(server) => {
            log::info!("control socket at {} (host ctl)", path.display());
            Ok(Some(server))
        }
        Err(e) if config.control.is_some() => Err((
            exit_code::BIND,
            format!("cannot listen on {} (--control): {e}", path.display()),
        )),
        Err(e) => {
            log::warn!(
                "no control socket: cannot listen on {} ({e}); give --control PATH for one, or --no-control",
                path.display()
            );
            Ok(None)
        }
    }
}

/// Runs the server until it stops; returns the process exit code.
///
/// `sources` are kept to re-read the settings on HUP.
pub fn run(config: Config, sources: Sources) -> i32 {
    match start(config, sources) {
        Ok(mut master) => {
            let code = master.run_loop();
            if code == exit_code::OK {
                log::info!("shutdown complete");
            }
            code
        }
        Err((code, message)) => {
            eprintln!("error: {message}");
            code
        }
    }
}

/// Everything before the loop: a ready master, or why not.
fn start(config: Config, sources: Sources) -> Result<Master, Failure> {
    // First, before the process title overwrites the arguments' memory.
    let relaunch = Relaunch::capture();
    // Descriptors handed over are taken first, before this process opens
    // any: systemd's sockets, or an old master's on a binary upgrade.
    let received = handover::receive();
    let mut link = received.link;
    let mut control = received.control;
    // A new master started by a binary upgrade (USR2).
    let successor = link.is_some();
    let mut listeners = Listeners::new();
    // App listeners an old master bound from --bind, by address.
    let mut restored = Vec::new();
    let mut socket_activated = false;
    for (name, fd) in received.app {
        let mut l = Listener::inherited(fd).map_err(|e| {
            let message = format!("cannot use a socket passed as {name} (LISTEN_FDS): {e}");
            (exit_code::BIND, message)
        })?;
        match handover::parse_bind_name(&name) {
            Some(addr) => {
                l.restore_addr(addr);
                restored.push(l);
            }
            None => {
                socket_activated = true;
                l.fd_name = Some(name);
                listeners.push(l);
            }
        }
    }
    // systemd holds the listeners' addresses (--bind does not apply); the
    // status endpoint's `--metrics-bind fd://N` is taken either way. A new
    // master takes no `fd://N`: its descriptors were all handed over, and
    // the numbers name other things in this process.
    let bind_addrs = config.bind_addrs();
    let binds = if socket_activated || successor {
        &[][..]
    } else {
        &bind_addrs[..]
    };
    let metrics_bind = config
        .metrics_bind
        .as_ref()
        .filter(|_| received.metrics.is_none() && !successor);
    // SAFETY: once, at start-up, before the master opens a descriptor.
    let mut inherited = unsafe { InheritedFds::take(binds.iter().chain(metrics_bind)) };
    // Block the signals before any child exists: a child exiting before the
    // loop starts must not be missed.
    let mut sigfd = Some(
        os_signals::signalfd_for(&signals::MASTER_SIGNALS).map_err(|e| {
            let message = format!("cannot set up signal handling: {e}");
            (exit_code::STARTUP, message)
        })?,
    );
    let identity = prepare_process(&config)?;
    // Read as the master's user, before any worker drops to --user: a key
    // file may be readable by root alone.
    let tls = settings::load_tls(&config).map_err(|message| (exit_code::STARTUP, message))?;
    logging::reopen(&config.error_logfile).map_err(|e| {
        let path = config.error_logfile.display();
        (
            exit_code::STARTUP,
            format!("cannot open the error log {path}: {e}"),
        )
    })?;
    process::set_title(&format!("host: master [{}]", settings::app_title(&config)));
    // Before any child: the probe and every worker inherit it.
    match limits::raise_open_files() {
        Ok((before, after)) => log::info!("{}", limits::describe(before, after)),
        Err(e) => log::warn!("cannot raise the open files limit to the hard limit: {e}"),
    }
    let (snapshots, build) = first_build(&config, identity.as_ref(), || {
        drop(sigfd.take());
        drop(std::mem::take(&mut inherited));
        drop(link.take());
        drop(control.take());
    })?;
    let socket_options = config
        .socket_options()
        .map_err(|message| (exit_code::USAGE, message))?;
    let mut notifier = Notifier::from_env();
    if successor {
        // The old master speaks for the service until this one takes over.
        notifier.hold_until_taken_over();
    }
    if !socket_activated {
        for addr in &bind_addrs {
            // A socket the old master handed over for this address, or a new one.
            let l = match restored.iter().position(|l| &l.addr == addr) {
                Some(i) => restored.swap_remove(i),
                None => Listener::bind(addr, &socket_options, &inherited)
                    .map_err(|e| (exit_code::BIND, format!("cannot listen on {addr}: {e}")))?,
            };
            listeners.push(l);
        }
    }
    for l in restored {
        log::info!(
            "not listening on {}: the old master's --bind {} is no longer in the settings",
            l.url(),
            l.addr
        );
    }
    let access_log = settings::open_access_log(config.access_logfile.as_deref()).map_err(|e| {
        (
            exit_code::STARTUP,
            format!("cannot open the access log: {e}"),
        )
    })?;
    // The old master's status endpoint socket, if the settings still ask
    // for one (a changed --metrics-bind address takes a restart).
    let status = match (&config.metrics_bind, received.metrics) {
        (None, Some(fd)) => {
            drop(fd);
            log::info!(
                "no --metrics-bind in the settings: not serving the old master's metrics socket"
            );
            None
        }
        (Some(_), Some(fd)) => {
            let server = StatusServer::adopt(fd).map_err(|e| {
                let message = format!("cannot use the status endpoint's socket handed over: {e}");
                (exit_code::BIND, message)
            })?;
            log::info!("metrics on {}/metrics (handed over)", server.url());
            Some(server)
        }
        (None, None) => None,
        (Some(addr), None) => {
            let server = StatusServer::bind(addr, &inherited).map_err(|e| {
                let message = format!("cannot listen on {addr} (--metrics-bind): {e}");
                (exit_code::BIND, message)
            })?;
            log::info!(
                "metrics on {}/metrics, status on {0}/status (at most {} connections)",
                server.url(),
                server.limit()
            );
            Some(server)
        }
    };
    let mut control = bind_control(&config, control)?;
    if let Some(control) = control.as_mut().filter(|_| successor) {
        // The old master answers until this one has taken over.
        control.set_accepting(false);
    }
    let pid_file = match config.pid.as_deref() {
        // A new master writes it when it takes over.
        _ if successor => None,
        None => None,
        Some(path) => {
            Some(process::PidFile::create(path).map_err(|message| (exit_code::STARTUP, message))?)
        }
    };
    let scoreboard = Scoreboard::new(MAX_WORKERS, config.threads as usize).map_err(|e| {
        (
            exit_code::STARTUP,
            format!("cannot map the scoreboard: {e}"),
        )
    })?;
    log::info!(
        "host {} serving {} with {} worker(s)",
        env!("CARGO_PKG_VERSION"),
        config.app,
        config.workers
    );
    let from = if socket_activated {
        " (socket from systemd)"
    } else if successor {
        " (handed over)"
    } else {
        ""
    };
    config.mark_listeners(&mut listeners);
    for l in listeners.iter() {
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
    Ok(Master {
        rollout: Rollout::new(snapshots, build, config.reload),
        pool: Pool {
            workers: Default::default(),
            target: config.workers as usize,
            failures: 0,
            last_failure: None,
            current_booted: false,
            next_spawn: Instant::now(),
            ever_ready: false,
            take_turns: false,
            scoreboard,
            autoscaler,
        },
        io: Io {
            listeners,
            inherited,
            access_log,
            sigfd,
            status,
            control,
            notifier,
            upgrade: Upgrade::new(relaunch, link),
        },
        settings: Settings {
            config,
            identity,
            sources,
            effective,
            socket_activated,
            tls,
        },
        counters: Counters::default(),
        changes: Default::default(),
        stop: None,
        drain: None,
        pid: nix::unistd::getpid(),
        started: Instant::now(),
        _pid_file: pid_file,
    })
}
