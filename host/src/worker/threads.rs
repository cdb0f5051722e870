//! The handler threads of a worker run with `--threads T` (T > 1).
//!
//! The event loop stays the one thread that accepts, reads request heads and
//! times connections, so a slow client never holds a thread. Once a request
//! is complete (head, and a small body), the loop lends its connection to
//! the pool: the first free handler thread calls the app with it, writes the
//! response, and gives the connection back through a channel, waking the
//! loop with an eventfd. T requests run at once; further complete requests
//! wait in the channel, in arrival order, for the next free thread.
//!
//! Each thread has a lane in the scoreboard and a [`LaneWatch`] the loop
//! acts through when the master finds the lane's request past `--timeout`
//! ([`Pool::give_up`]). The threads inherit the loop thread's signal mask,
//! in which the timeout signal is blocked: only the loop reads it.

use std::{
    io,
    os::fd::{AsFd, BorrowedFd},
    sync::Arc,
    thread::JoinHandle,
};

use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::{
    app::LoadedApp,
    http::parse::RequestHead,
    report::access_log::AccessLogTarget,
    worker::call::{Called, Caller},
    worker::conn::Conn,
    worker::outcome::Flags,
    worker::serving::Serving,
    worker::timeout::{GaveUp, LaneWatch, Watch},
};

/// A complete request lent to the pool with its connection (and, in it,
/// its read-ahead body).
pub struct Job {
    /// The connection, out of the event loop's hands until it comes back.
    pub conn: Conn,
    /// The parsed head of the request at the start of its input.
    pub head: RequestHead,
    /// The worker's state when the loop took the request.
    pub flags: Flags,
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
    jobs: Option<Sender<Job>>,
    done: Receiver<Finished>,
    wake: Arc<EventFd>,
    /// One per thread (and lane), shared with it.
    watches: Arc<[LaneWatch]>,
    threads: Vec<JoinHandle<()>>,
    /// Connections lent and not yet given back.
    lent: usize,
}

impl Pool {
    /// Starts one handler thread per lane of `serving`, each calling `app`.
    pub fn start(serving: &Arc<Serving>, app: &Arc<LoadedApp>) -> io::Result<Pool> {
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        let (jobs, job_queue) = crossbeam_channel::unbounded::<Job>();
        let (finished, done) = crossbeam_channel::unbounded::<Finished>();
        let watches: Arc<[LaneWatch]> =
            serving.lanes.iter().map(|_| LaneWatch::default()).collect();
        let mut threads = Vec::with_capacity(serving.lanes.len());
        for index in 0..serving.lanes.len() {
            let queue = job_queue.clone();
            let finished = finished.clone();
            let wake = Arc::clone(&wake);
            let serving = Arc::clone(serving);
            let watches = Arc::clone(&watches);
            let app = Arc::clone(app);
            let thread = std::thread::Builder::new()
                .name(format!("handler-{}", index + 1))
                .spawn(move || {
                    let Some(watch) = watches.get(index) else {
                        return;
                    };
                    let Some(mut caller) = Caller::new(&serving, app, index, Watch::Loop(watch))
                    else {
                        return;
                    };
                    for mut job in queue.iter() {
                        let log = job.log.as_deref().or(serving.access_log.as_ref());
                        let called = caller.call(&mut job.conn, &job.head, job.flags, log);
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
            threads.push(thread);
        }
        Ok(Pool {
            jobs: Some(jobs),
            done,
            wake,
            watches,
            threads,
            lent: 0,
        })
    }

    /// The eventfd that becomes readable when a connection comes back.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Lends a request's connection to the first free thread.
    pub fn submit(&mut self, job: Job) {
        if self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok())
        {
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

    /// Gives up on the request in lane `index` (see [`LaneWatch::give_up`]).
    pub fn give_up(&self, serving: &Serving, index: usize) -> Option<GaveUp> {
        let lane = serving.lanes.get(index)?;
        self.watches.get(index)?.give_up(serving.slot, lane)
    }

    /// Ends the threads, once every connection lent came back: they finish
    /// when the queue closes, and are joined.
    pub fn join(mut self) {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
