//! A worker process: the hand-over after fork, and its boot.
//!
//! The master forks and hands the child its [`WorkerArgs`] by value; [`run`]
//! sets the worker up (signals, the master's death, its title and output,
//! its user), loads and initialises the app, sets up its event loop(s), reports
//! ready (only then: a ready worker can serve), then serves in its event loop ([`event_loop`]) until it stops, and returns its exit
//! code ([`crate::exit_code`]). The pieces:
//!
//! - [`event_loop`]: epoll, accept and back-pressure, the worker's lifecycle;
//! - [`accept_pause`]: pacing `accept` when descriptors run out;
//! - [`conn`]: one connection, its buffers and read-ahead body;
//! - [`stage`]: bytes → a complete request;
//! - [`call`]: the call into the app; [`exchange`]: the host side of it;
//! - [`held`]: the rest of a complete response a slow reader has not taken,
//!   handed to the event loop, and its budgets;
//! - [`outcome`]: what an exchange came to, and close-or-keep;
//! - [`refused`]: the access-log line of a request refused before the app;
//! - [`threads`]: the loops of `--threads` > 1, one per thread, and what
//!   they share; [`supervisor`]: the main thread of such a worker, which
//!   reads its signals;
//! - [`timeout`]: a request past `--timeout`;
//! - [`serving`]: the small view per-request code has of its worker.

pub mod accept_pause;
pub mod call;
pub mod conn;
pub mod event_loop;
pub mod exchange;
pub mod held;
pub mod host_fns;
pub mod outcome;
pub mod refused;
pub mod serving;
pub mod stage;
pub mod stream;
pub mod supervisor;
pub mod threads;
pub mod timeout;

use std::{os::fd::OwnedFd, path::PathBuf, sync::Arc, time::Instant};

use abi_stable::std_types::RStr;
use app_sdk::abi::{size_u32, WorkerInfo};

use crate::{
    app::{self, AppSpec, LoadedApp},
    config::ServeOptions,
    exit_code,
    os::listener::Listener,
    os::process::Identity,
    os::signals,
    report::access_log::AccessLogTarget,
    scoreboard::{Scoreboard, State},
    worker::{
        event_loop::{EventLoop, Life},
        serving::Serving,
        supervisor::Duties,
        threads::Team,
    },
};

/// Everything a worker is born with, handed over by value after fork.
pub struct WorkerArgs {
    /// The worker's number (1-based).
    pub id: u32,
    /// The pool generation it belongs to (the app is told).
    pub generation: u32,
    /// The app to load.
    pub spec: AppSpec,
    /// The shared listeners (the worker's own: it closes them when it stops).
    pub listeners: Vec<Listener>,
    /// How to serve connections.
    pub serve: ServeOptions,
    /// The scoreboard (a handle to the shared mapping).
    pub scoreboard: Scoreboard,
    /// This worker's index in it (its slot, claimed by the master).
    pub slot_index: usize,
    /// Where access-log lines go, if anywhere.
    pub access_log: Option<AccessLogTarget>,
    /// What TLS listeners serve with (certificates the master read).
    pub tls: Option<Arc<crate::tls::settings::TlsServer>>,
    /// The access log's path, to reopen it on USR1.
    pub access_log_path: Option<PathBuf>,
    /// The error log's path (`-`: stderr as inherited), to reopen it on USR1.
    pub error_log_path: PathBuf,
    /// Requests after which the worker asks to be replaced.
    pub max_requests: Option<u64>,
    /// Resident memory (KiB) past which the worker asks to be replaced (0: no limit).
    pub max_memory_kib: u64,
    /// Who to become before loading the app (`--user`, `--group`).
    pub identity: Option<Identity>,
    /// The process title (`host: worker 3 gen 2 [libapp.so:app]`).
    pub title: String,
    /// The write ends of the pipes the master reads the worker's stdout and stderr from.
    pub output: Option<(OwnedFd, OwnedFd)>,
    /// When the master forked this worker.
    pub spawned_at: Instant,
    /// The master's pid, to notice its death.
    pub master_pid: nix::unistd::Pid,
}

/// The worker's main, in the child after fork: returns its exit code (the
/// caller leaves with it without unwinding into the master's frames).
pub fn run(args: WorkerArgs) -> i32 {
    match serve(args) {
        Ok(()) => exit_code::OK,
        Err(code) => code,
    }
}

fn serve(args: WorkerArgs) -> Result<(), i32> {
    let pid = std::process::id();
    let id = args.id;
    // The mapping is never unmapped, and this handle lives as long as the
    // process: leaking it makes the slot and lanes `'static`, shared with
    // the handler threads (and the timeout handler) without lifetimes.
    let board: &'static Scoreboard = Box::leak(Box::new(args.scoreboard));
    let Some(slot) = board.slot(args.slot_index) else {
        log::error!(
            "worker {id} (pid {pid}): no scoreboard slot {}",
            args.slot_index
        );
        return Err(exit_code::WORKER_BOOT_FAILED);
    };
    let lanes = board.lanes(args.slot_index);
    let threaded = lanes.len() > 1;
    timeout::set_worker_identity(id, if threaded { None } else { lanes.first() });
    host_fns::set_log_identity(id);
    // Every signal the loop reads is blocked before the app is loaded, so
    // threads the app starts inherit the block: the timeout signal among
    // them (a single-threaded worker unblocks it in its own thread only).
    let read = [
        signals::WORKER_GRACEFUL,
        signals::WORKER_REOPEN_LOGS,
        signals::WORKER_TIMED_OUT,
    ];
    let setup = || -> nix::Result<nix::sys::signalfd::SignalFd> {
        signals::reset_in_child(&read)?;
        #[cfg(debug_assertions)]
        crate::master::fault::pause(
            crate::master::fault::WORKER_SIGNALS_PAUSE,
            "before the worker's signalfd exists",
        );
        nix::sys::prctl::set_pdeathsig(signals::WORKER_PARENT_DIED)?;
        timeout::install_worker_handlers()?;
        signals::signalfd_for(&read)
    };
    let sigfd = setup().map_err(|e| {
        log::error!("worker {id} (pid {pid}): signal set-up failed: {e}");
        exit_code::WORKER_BOOT_FAILED
    })?;
    if nix::unistd::getppid() != args.master_pid {
        // The master died between fork and set_pdeathsig.
        return Ok(());
    }
    crate::os::process::set_title(&args.title);
    // The app's prints go to the master, which logs them tagged (never into
    // an access log on stdout).
    if let Some((stdout, stderr)) = args.output {
        if let Err(err) = crate::report::logging::capture_output(stdout, stderr) {
            log::warn!("worker {id} (pid {pid}): cannot capture its output: {err}");
        }
    }
    if let Some(identity) = &args.identity {
        crate::os::process::drop_to(identity).map_err(|e| {
            log::error!(
                "worker {id} (pid {pid}): cannot switch to user {:?}: {e}",
                identity.name
            );
            exit_code::WORKER_BOOT_FAILED
        })?;
    }

    let module = app::load(&args.spec).map_err(|e| {
        log::error!("worker {id} (pid {pid}) cannot load the app: {e}");
        slot.set_boot_error(&format!("cannot load the app: {e}"));
        exit_code::WORKER_BOOT_FAILED
    })?;
    if module.panic_abort {
        // The probe warned once for the build; each worker only notes it.
        log::debug!("worker {id} (pid {pid}): app built with panic = \"abort\"");
    }
    let info = WorkerInfo {
        size: size_u32::<WorkerInfo<'_>>(),
        worker_id: id,
        pid,
        threads: lanes.len() as u32,
        generation: args.generation,
        flags: 0,
        app_name: RStr::from_str(&args.spec.name),
    };
    let app = LoadedApp::init(&module, host_fns::table(), &info).map_err(|e| {
        log::error!(
            "worker {id} (pid {pid}): app `{}` failed to initialise: {e}",
            args.spec.name
        );
        slot.set_boot_error(&format!(
            "app `{}` failed to initialise: {e}",
            args.spec.name
        ));
        exit_code::WORKER_BOOT_FAILED
    })?;
    let spawned_at = args.spawned_at;
    let serving = Arc::new(Serving {
        id,
        options: args.serve,
        slot,
        lanes,
        locals: args.listeners.iter().map(|l| l.local.clone()).collect(),
        access_log: args.access_log,
        tls: args.tls,
    });
    let app = Arc::new(app);
    let life_master_pid = args.master_pid;
    let life = Life {
        listeners: Arc::from(args.listeners),
        board,
        slot_index: args.slot_index,
        master_pid: args.master_pid,
        max_requests: args.max_requests,
        max_memory_kib: args.max_memory_kib,
        access_log_path: args.access_log_path,
        error_log_path: args.error_log_path,
    };
    let result = if threaded {
        serve_threaded(&serving, &app, sigfd, life, spawned_at)?
    } else {
        // The loop's thread is inside the app when its request times out:
        // the handler answers there (see `timeout`).
        timeout::unblock_in_this_thread().map_err(|e| {
            log::error!("worker {id} (pid {pid}): signal set-up failed: {e}");
            exit_code::WORKER_BOOT_FAILED
        })?;
        let mut event_loop =
            EventLoop::single(&serving, life, Arc::clone(&app), sigfd).map_err(|e| {
                log::error!("worker {id} (pid {pid}) event loop failed: {e}");
                slot.set_boot_error(&format!("cannot set up its event loop: {e}"));
                exit_code::WORKER_LOOP_FAILED
            })?;
        report_ready(&serving, life_master_pid, spawned_at);
        event_loop.run()
    };
    slot.set_state(State::Stopping);
    // Every caller is gone with the loops: the instance has one owner
    // again, and its exit hook runs once.
    match Arc::try_unwrap(app).map(LoadedApp::exit) {
        Ok(Err(failure)) => {
            log::error!("worker {id} (pid {pid}): app exit hook {failure}");
        }
        Ok(Ok(())) => {}
        Err(_) => log::error!(
            "worker {id} (pid {pid}): app still in use at exit; its exit hook is skipped"
        ),
    }
    match result {
        Ok(()) => {
            log::debug!("worker {id} (pid {pid}) exiting");
            Ok(())
        }
        Err(e) => {
            log::error!("worker {id} (pid {pid}) event loop failed: {e}");
            Err(exit_code::WORKER_LOOP_FAILED)
        }
    }
}

/// Serves with one event loop per lane, each on its own thread, while this
/// thread reads the worker's signals ([`supervisor`]). Returns once every
/// loop has ended and its thread is joined; a thread still in the app after
/// `--timeout` can be neither joined nor told to stop, so the worker then
/// leaves with [`exit_code::WORKER_TIMED_OUT`] (the caller leaves without
/// unwinding, and the app's exit hook does not run under it).
fn serve_threaded(
    serving: &Arc<Serving>,
    app: &Arc<LoadedApp>,
    mut sigfd: nix::sys::signalfd::SignalFd,
    life: Life,
    spawned_at: Instant,
) -> Result<nix::Result<()>, i32> {
    let (id, pid) = (serving.id, std::process::id());
    let duties = Duties {
        master_pid: life.master_pid,
        access_log_path: life.access_log_path.clone(),
        error_log_path: life.error_log_path.clone(),
    };
    // Each loop gets its own copy of `life`; this thread keeps none (so no
    // listener), and the listeners close once every loop has let go.
    let started = Team::new(serving.lanes.len()).and_then(|team| {
        let team = Arc::new(team);
        let threads = threads::start(serving, app, &team, life)?;
        Ok((team, threads))
    });
    let (team, threads) = started.map_err(|e| {
        log::error!("worker {id} (pid {pid}): cannot start its threads: {e}");
        serving
            .slot
            .set_boot_error(&format!("cannot start its threads: {e}"));
        exit_code::WORKER_BOOT_FAILED
    })?;
    // Every loop exists (`threads::start` waits for them): it can serve.
    report_ready(serving, duties.master_pid, spawned_at);
    let supervised = supervisor::supervise(serving, &team, &mut sigfd, &duties);
    if supervised.is_err() {
        team.stop();
    }
    let stuck = team.stuck();
    if stuck > 0 {
        log::error!(
            "worker {id} (pid {pid}) exiting with {stuck} request(s) still in the app after --timeout"
        );
        return Err(exit_code::WORKER_TIMED_OUT);
    }
    for thread in threads {
        let _ = thread.join();
    }
    if team.failed() {
        return Ok(Err(nix::Error::EIO));
    }
    Ok(supervised)
}

/// Marks the worker ready in the scoreboard and tells the master, once it
/// can serve: the app is initialised *and* its event loop exists (epoll set
/// up, listeners added). An app that breaks the worker in `init` (closing
/// descriptors, say) so fails before it is ready, a boot failure the master
/// paces, rather than a ready worker dying at once.
fn report_ready(serving: &Serving, master_pid: nix::unistd::Pid, spawned_at: Instant) {
    let (id, pid) = (serving.id, std::process::id());
    serving.slot.mark_ready();
    if let Some(kib) = rss_kib() {
        serving.slot.set_rss_kib(kib);
    }
    // Tell the master now rather than at its next tick: a reload waits on this.
    let _ = nix::sys::signal::kill(master_pid, signals::MASTER_NUDGE);
    log::info!(
        "worker {id} (pid {pid}) ready in {:.1} ms",
        spawned_at.elapsed().as_secs_f64() * 1000.0
    );
}

/// This process's resident memory in KiB, from `/proc/self/statm`.
fn rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()? / 1024)
}
