//! The master's settings: what is in effect, re-reading them on HUP, binding
//! the new addresses, and reopening log files on USR1.
//!
//! A HUP with a config file re-reads every source, says what changed, and
//! applies it: new binds are opened before anything changes (all or nothing),
//! the pool's size and the log level change at once, and new workers get the
//! rest as the reload rolls. `--threads` needs a restart (the scoreboard's
//! lanes are sized at start).

use std::{path::Path, sync::Arc, time::Duration};

use nix::sys::signal::kill;

use crate::{
    config::sources::{self, Sources},
    config::Config,
    master::Master,
    os::listener::{BindAddr, Listener, SocketOptions},
    os::process::Identity,
    os::signals as os_signals,
    report::access_log::AccessLogTarget,
    report::logging,
    tls::settings::TlsServer,
};

/// The settings in effect.
pub(super) struct Settings {
    /// The resolved settings.
    pub config: Config,
    /// Who workers run as (`--user`, `--group`).
    pub identity: Option<Identity>,
    /// Where the settings came from, to re-read them on HUP.
    pub sources: Sources,
    /// The settings in effect, as `--print-config` shows them (to report changes).
    pub effective: String,
    /// Listeners came from systemd; binds in the settings do not apply.
    pub socket_activated: bool,
    /// What TLS listeners serve with: read at start and on each HUP; a
    /// worker is forked with the one current then.
    pub tls: Option<Arc<TlsServer>>,
}

impl Settings {
    /// The app as process titles show it: the library's file name and the export.
    pub fn app_title(&self) -> String {
        app_title(&self.config)
    }
}

/// The app as process titles show it: the library's file name and the export.
pub(super) fn app_title(config: &Config) -> String {
    let file = config
        .app
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{file}:{}", config.app.name)
}

/// `--boot-timeout` as a duration.
pub(super) fn boot_timeout(config: &Config) -> Duration {
    Duration::from_secs(config.boot_timeout)
}

/// Opens `--access-logfile`, if set.
pub(super) fn open_access_log(path: Option<&Path>) -> std::io::Result<Option<AccessLogTarget>> {
    path.map(AccessLogTarget::open).transpose()
}

/// Reads and checks the certificates the settings name, when a listener
/// serves TLS, and logs what they are.
pub(super) fn load_tls(config: &Config) -> Result<Option<Arc<TlsServer>>, String> {
    let Some(options) = config.tls_options() else {
        return Ok(None);
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let server = TlsServer::load(&options, now).map_err(|e| format!("TLS: {e}"))?;
    for line in server.describe() {
        log::info!("{line}");
    }
    Ok(Some(Arc::new(server)))
}

/// Which of `binds` need a new socket: those no current listener serves.
pub(super) fn new_binds<'a>(binds: &'a [BindAddr], current: &[BindAddr]) -> Vec<&'a BindAddr> {
    binds.iter().filter(|a| !current.contains(a)).collect()
}

impl Master {
    /// HUP with a config file: reads the settings again, says what changed,
    /// and applies it (new workers get the new settings as the reload rolls).
    pub(super) fn reread_settings(&mut self) {
        let (mut new, new_text) = match (
            sources::resolve(&self.settings.sources),
            sources::to_toml(&self.settings.sources),
        ) {
            (Ok(new), Ok(new_text)) => (new, new_text),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("SIGHUP: settings not reloaded ({e}); keeping the current ones");
                return;
            }
        };
        let changes = sources::diff(&self.settings.effective, &new_text);
        if changes.is_empty() {
            log::info!("SIGHUP: settings unchanged");
        } else {
            log::info!("SIGHUP: settings changed: {}", changes.join("; "));
        }
        let old = &self.settings.config;
        // The certificates first: a broken pair keeps every setting as it is.
        let tls = match load_tls(&new) {
            Ok(tls) => tls,
            Err(e) => {
                log::error!("SIGHUP: {e}; keeping the current settings and certificates");
                return;
            }
        };
        if new.binds != old.binds && self.settings.socket_activated {
            log::warn!("SIGHUP: bind changes do not apply to sockets from systemd");
        } else if new.binds != old.binds {
            let rebound = new
                .socket_options()
                .and_then(|opts| self.rebind(&new.bind_addrs(), &opts));
            if let Err(e) = rebound {
                log::error!("SIGHUP: {e}; keeping the current settings");
                return;
            }
        }
        new.mark_listeners(&mut self.io.listeners);
        self.settings.tls = tls;
        let old = &self.settings.config;
        let log_changed = new.access_logfile != old.access_logfile;
        if new.log_level != old.log_level {
            log::set_max_level(new.log_level.filter());
        }
        if new.workers != old.workers {
            self.pool.target = new.workers as usize;
        }
        if new.threads != old.threads {
            // The scoreboard's lanes were sized at start.
            log::warn!(
                "SIGHUP: --threads changes need a restart; keeping {}",
                old.threads
            );
            new.threads = old.threads;
        }
        self.settings.config = new;
        self.settings.effective = new_text;
        if log_changed {
            self.io.access_log =
                match open_access_log(self.settings.config.access_logfile.as_deref()) {
                    Ok(target) => target,
                    Err(e) => {
                        log::error!("SIGHUP: cannot open the new access log: {e}");
                        None
                    }
                };
        }
    }

    /// HUP without a config file: reads the certificate and key files
    /// again (a renewed certificate is in place); a pair that fails its
    /// checks is refused with a log line, and the running one stays.
    pub(super) fn reload_tls(&mut self) {
        if self.settings.tls.is_none() {
            return;
        }
        match load_tls(&self.settings.config) {
            Ok(tls) => self.settings.tls = tls,
            Err(e) => log::error!("SIGHUP: {e}; keeping the current certificates"),
        }
    }

    /// Listens on `binds`, keeping the sockets already open for addresses
    /// that stay. All or nothing: if one new address fails, nothing changes.
    fn rebind(&mut self, binds: &[BindAddr], opts: &SocketOptions) -> Result<(), String> {
        let current: Vec<BindAddr> = self.io.listeners.iter().map(|l| l.addr.clone()).collect();
        let mut fresh = Vec::new();
        for addr in new_binds(binds, &current) {
            match Listener::bind(addr, opts, &self.io.inherited) {
                Ok(l) => fresh.push(Some(l)),
                Err(e) => {
                    fresh.iter().flatten().for_each(Listener::cleanup);
                    return Err(format!("cannot listen on {addr}: {e}"));
                }
            }
        }
        let mut old: Vec<Option<Listener>> =
            self.io.listeners.take().into_iter().map(Some).collect();
        for addr in binds {
            let found = old
                .iter_mut()
                .chain(fresh.iter_mut())
                .find(|l| l.as_ref().is_some_and(|l| &l.addr == addr))
                .and_then(Option::take);
            if let Some(l) = found {
                self.io.listeners.push(l);
            }
        }
        for l in self.io.listeners.iter() {
            log::info!("listening on {}", l.url());
        }
        for gone in old.into_iter().flatten() {
            log::info!("no longer listening on {}", gone.url());
            gone.cleanup();
        }
        Ok(())
    }

    /// USR1: reopens the error and access logs, and has every worker do the same.
    pub(super) fn reopen_logs(&mut self) {
        let config = &self.settings.config;
        if let Err(e) = logging::reopen(&config.error_logfile) {
            log::error!("SIGUSR1: cannot reopen the error log: {e}");
        }
        match open_access_log(config.access_logfile.as_deref()) {
            Ok(Some(target)) => self.io.access_log = Some(target),
            Ok(None) => {}
            Err(e) => log::error!("SIGUSR1: cannot reopen the access log: {e}"),
        }
        // Signal first, log after: once the line is out, every worker has
        // the signal pending, ahead of any request sent after it.
        for pid in self.pool.workers.keys() {
            let _ = kill(*pid, os_signals::WORKER_REOPEN_LOGS);
        }
        log::info!("SIGUSR1: reopening log files");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_not_yet_served_are_bound() {
        let a: BindAddr = "127.0.0.1:1".parse().unwrap();
        let b: BindAddr = "unix:/tmp/b.sock".parse().unwrap();
        let c = BindAddr::Fd(7);
        let cases: Vec<(Vec<BindAddr>, Vec<BindAddr>, Vec<&BindAddr>)> = vec![
            (vec![], vec![], vec![]),
            (vec![a.clone(), b.clone()], vec![a.clone()], vec![&b]),
            (vec![a.clone()], vec![a.clone(), b.clone()], vec![]),
            (vec![c.clone(), a.clone()], vec![b.clone()], vec![&c, &a]),
        ];
        for (binds, current, want) in cases {
            assert_eq!(
                new_binds(&binds, &current),
                want,
                "{binds:?} over {current:?}"
            );
        }
    }
}
