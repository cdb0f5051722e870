//! The `host` application server as a library: the `host` binary is a thin
//! shell over it (command line → [`config::Config`] → [`master::run`]), and
//! the fuzz targets and benchmarks reach its parsers through it.
//!
//! The folders are the architecture:
//! - [`config`]: the options, and the sources they come from (file,
//!   environment, command line).
//! - [`master`]: the arbiter loop (signals, reaping, generations, rollouts).
//! - [`worker`]: a worker process, its epoll loop, its connections and the
//!   call into the app for one request.
//! - [`app`]: loading `path:name`, snapshotting builds, probing them.
//! - [`http`]: request-head parsing, body decoding, response heads.
//! - [`os`]: listeners, systemd, signals, and what the server does to its
//!   own processes.
//! - [`report`]: the error log, the access log, metrics and the status server
//!   and command.
//! - [`scoreboard`] (the shared worker table) and [`exit_code`].

pub mod app;
pub mod config;
pub mod exit_code;
pub mod http;
pub mod master;
pub mod os;
pub mod report;
pub mod scoreboard;
pub mod worker;
