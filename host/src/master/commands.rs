//! What each request on the control socket does to the master (the
//! protocol itself is in [`crate::control`]).
//!
//! Each turn of the loop, [`Master::serve_control`] takes the requests that
//! arrived and runs them: a question is answered at once; a change is
//! started through the same path its signal takes (a reload as HUP does),
//! and a request with `wait` is parked on the change's ticket.
//! [`Master::answer_control`] then passes the master's log lines to parked
//! clients and answers each once its change ended.

use std::time::Instant;

use crate::{
    config::MAX_WORKERS,
    control::{Answer, Request},
    master::{changes::Ticket, drain, Master},
    report::{logging, metrics},
};

/// The master's answer to one request.
enum Reply {
    /// Answered now.
    Now(Answer),
    /// Parked until the change with this ticket ends, with a first line.
    Wait(Ticket, String),
}

/// Who asks, as the master's log says it.
const WHO: &str = "host ctl";

impl Master {
    /// Takes the control socket's requests and answers or parks each. The
    /// control server stays in place while they run (a binary upgrade
    /// hands its listener over).
    pub(super) fn serve_control(&mut self) {
        let Some(control) = &mut self.io.control else {
            return;
        };
        let requests = control.service(Instant::now());
        let replies: Vec<(usize, Reply)> = requests
            .into_iter()
            .map(|(key, request)| {
                let reply = match request {
                    Ok(request) => self.command(request),
                    Err(why) => Reply::Now(Answer::result(false, why)),
                };
                (key, reply)
            })
            .collect();
        let Some(control) = &mut self.io.control else {
            return;
        };
        for (key, reply) in replies {
            match reply {
                Reply::Now(answer) => control.reply(key, answer),
                Reply::Wait(ticket, first) => {
                    control.wait(key, ticket, &first);
                    logging::tap(true);
                }
            }
        }
        control.flush();
    }

    /// Passes the master's log lines to the parked clients, answers those
    /// whose change ended (all of them once the server stops), and writes.
    pub(super) fn answer_control(&mut self) {
        let outcomes = self.changes.take_done();
        let serving = self.phase() == drain::Phase::Serving;
        let Some(control) = &mut self.io.control else {
            return;
        };
        control.progress(&logging::take_tapped());
        control.finish(&outcomes);
        if !serving {
            // No change starts or completes while the server drains or stops.
            control.finish_all(false, "the server is stopping");
        }
        control.flush();
        logging::tap(control.has_waiting());
    }

    /// Runs one request.
    fn command(&mut self, request: Request) -> Reply {
        let stopping = self.phase() != drain::Phase::Serving;
        let waits = request.waits();
        match request {
            Request::Status => self.state_answer(self.rollout_line()),
            Request::Workers => self.state_answer(self.status_line()),
            Request::Drain => Reply::Now(match self.begin_drain(WHO) {
                Ok(line) => Answer::result(true, line),
                Err(why) => Answer::result(false, why),
            }),
            _ if stopping => Reply::Now(Answer::result(false, "the server is stopping")),
            Request::Scale { workers } => Reply::Now(self.scale(workers)),
            Request::Reload { .. } => {
                let ticket = waits.then(|| self.changes.ticket());
                self.request_reload(WHO, ticket);
                self.change_reply(ticket, "reload")
            }
            Request::Deploy { path, rollout, .. } => {
                if let Some(path) = path {
                    if let Err(why) = self.deploy_path(path) {
                        return Reply::Now(Answer::result(false, why));
                    }
                }
                let ticket = waits.then(|| self.changes.ticket());
                log::info!(
                    "{WHO}: deploying {}",
                    self.settings.config.app.path.display()
                );
                self.ask_deploy("host ctl deploy", ticket, rollout);
                // The file as it is now, even if its stamp was seen.
                self.rollout.seen_stamp = None;
                self.change_reply(ticket, "deploy")
            }
            Request::Upgrade { .. } => {
                let ticket = waits.then(|| self.changes.ticket());
                match self.begin_upgrade(ticket) {
                    Ok(line) => match ticket {
                        Some(ticket) => Reply::Wait(ticket, line),
                        None => Reply::Now(Answer::result(true, line)),
                    },
                    Err(why) => Reply::Now(Answer::result(false, why)),
                }
            }
            Request::Promote => Reply::Now(match self.promote() {
                Ok(line) => Answer::result(true, line),
                Err(why) => Answer::result(false, why),
            }),
            Request::Rollback { .. } => {
                let ticket = waits.then(|| self.changes.ticket());
                match self.rollback(ticket) {
                    Ok(line) => match ticket {
                        Some(ticket) => Reply::Wait(ticket, line),
                        None => Reply::Now(Answer::result(true, line)),
                    },
                    Err(why) => Reply::Now(Answer::result(false, why)),
                }
            }
            Request::ReopenLogs => {
                self.reopen_logs();
                Reply::Now(Answer::result(true, "log files reopened"))
            }
        }
    }

    /// The answer to a change started: parked on `ticket`, or done now.
    fn change_reply(&self, ticket: Option<Ticket>, what: &str) -> Reply {
        let now = format!(
            "{what} started; generation {} (build {}) serves meanwhile",
            self.rollout.generation, self.rollout.build.hash
        );
        match ticket {
            Some(ticket) => Reply::Wait(ticket, now),
            None => Reply::Now(Answer::result(true, now)),
        }
    }

    /// The server's state as `/status.json` has it, with `message`.
    fn state_answer(&self, message: String) -> Reply {
        let data = serde_json::from_str(&metrics::json(&self.snapshot())).ok();
        Reply::Now(Answer::Result {
            ok: true,
            message,
            data,
        })
    }

    /// One line on the rollout: complete, under way, or a canary.
    fn rollout_line(&self) -> String {
        let generation = self.rollout.generation;
        if let Some(canary) = self.canary_view() {
            return format!(
                "canary: generation {} on {} of {} workers, step {} of {}, for {:.1} s; checks: {}",
                canary.generation,
                canary.workers.0,
                canary.workers.1,
                canary.step.0,
                canary.step.1,
                canary.elapsed_s,
                canary.verdict
            );
        }
        match self.rollout.started {
            None => format!("generation {generation} serves on every worker"),
            Some(started) => format!(
                "generation {generation} rolling out for {:.1} s: {} of {} worker(s) ready on build {}",
                started.elapsed().as_secs_f64(),
                self.pool.serving(generation).filter(|w| w.ready).count(),
                self.pool.target,
                self.rollout.build.hash
            ),
        }
    }

    /// Sets the pool's size to `workers` (as TTIN and TTOU do, in one step).
    fn scale(&mut self, workers: u32) -> Answer {
        let want = workers as usize;
        if !(1..=MAX_WORKERS).contains(&want) {
            return Answer::result(false, format!("workers must be 1 to {MAX_WORKERS}"));
        }
        let generation = self.rollout.generation;
        let before = self.pool.target;
        self.pool.target = want;
        for _ in want..self.pool.serving_count(generation) {
            self.pool.shrink(generation);
        }
        let line = format!("{WHO}: workers now {want} (were {before})");
        log::info!("{line}");
        self.io.notifier.status(&self.status_line());
        Answer::result(true, line)
    }

    /// Makes `path` the library served from now on (the reload that follows
    /// takes it); refuses a path that is not a readable file.
    fn deploy_path(&mut self, path: std::path::PathBuf) -> Result<(), String> {
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(format!("cannot deploy {}: not a file", path.display())),
            Err(e) => return Err(format!("cannot deploy {}: {e}", path.display())),
        }
        let app = &mut self.settings.config.app;
        if app.path != path {
            log::info!(
                "{WHO}: the app's library is now {} (was {})",
                path.display(),
                app.path.display()
            );
            app.path = path;
        }
        Ok(())
    }
}
