//! The handler threads of a worker run with `--threads T` (T > 1).
//!
//! The event loop stays the one thread that accepts, reads request heads and
//! times connections, so a slow client never holds a thread. Once a request
//! is complete (head, and a small body), the loop lends its connection to
//! the pool: the first free handler thread calls the app with it, writes the
//! response, and gives the connection back through a channel, waking the
//! loop with an eventfd. T requests run at once; further complete requests
//! wait in the channel, in arrival order, for the next free thread.

use std::{
    io,
    os::fd::{AsFd, BorrowedFd},
    sync::Arc,
    thread::Scope,
};

use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::{
    http::parse::RequestHead,
    report::access_log::AccessLogTarget,
    scoreboard::Lane,
    worker::call::{CallFlags, Called, Caller, LoadedApp, PreBody},
    worker::conn::Conn,
    worker::WorkerArgs,
};

/// A complete request lent to the pool with its connection.
pub struct Job {
    /// The connection, out of the event loop's hands until it comes back.
    pub conn: Conn,
    /// The parsed head of the request at the start of its input.
    pub head: RequestHead,
    /// Its chunked body, read ahead.
    pub prebody: Option<PreBody>,
    /// What the loop decided about the connection.
    pub flags: CallFlags,
    /// The access log reopened after USR1, if it was.
    pub log: Option<Arc<AccessLogTarget>>,
}

/// A connection given back after its request.
pub struct Finished {
    /// The connection, ready for its next request or closing.
    pub conn: Conn,
    /// The head, for reuse.
    pub head: RequestHead,
    /// What became of the call.
    pub called: Called,
}

/// The handler threads, seen from the event loop.
pub struct Pool {
    jobs: Sender<Job>,
    done: Receiver<Finished>,
    wake: Arc<EventFd>,
    /// Connections lent and not yet given back.
    lent: usize,
}

impl Pool {
    /// Starts one handler thread per lane in `scope`.
    pub fn start<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        args: &'env WorkerArgs<'env>,
        app: &'env LoadedApp,
        lanes: &'env [Lane],
    ) -> io::Result<Pool> {
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        let (jobs, job_queue) = crossbeam_channel::unbounded::<Job>();
        let (finished, done) = crossbeam_channel::unbounded::<Finished>();
        for (index, lane) in lanes.iter().enumerate() {
            let queue = job_queue.clone();
            let finished = finished.clone();
            let wake = Arc::clone(&wake);
            std::thread::Builder::new()
                .name(format!("handler-{}", index + 1))
                .spawn_scoped(scope, move || {
                    let mut caller = Caller::new(args, app, lane, index);
                    for mut job in queue.iter() {
                        let log = job.log.as_deref().or(args.access_log);
                        let called =
                            caller.call(&mut job.conn, &job.head, job.prebody, job.flags, log);
                        // Send the response now; what the socket cannot take
                        // yet, the loop writes when it can.
                        let _ = job.conn.flush();
                        let back = Finished {
                            conn: job.conn,
                            head: job.head,
                            called,
                        };
                        if finished.send(back).is_err() {
                            return;
                        }
                        let _ = wake.write(1);
                    }
                })?;
        }
        Ok(Pool {
            jobs,
            done,
            wake,
            lent: 0,
        })
    }

    /// The eventfd that becomes readable when a connection comes back.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Lends a request's connection to the first free thread.
    pub fn submit(&mut self, job: Job) {
        if self.jobs.send(job).is_ok() {
            self.lent += 1;
        }
    }

    /// Clears the wake-up, before taking what came back.
    pub fn acknowledge(&self) {
        let _ = self.wake.read();
    }

    /// A connection given back, if one is waiting.
    pub fn take(&mut self) -> Option<Finished> {
        let finished = self.done.try_recv().ok()?;
        self.lent -= 1;
        Some(finished)
    }

    /// Connections lent and not yet given back.
    pub fn lent(&self) -> usize {
        self.lent
    }
}
