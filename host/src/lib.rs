//! The `host` application server as a library: the `host` binary is a thin
//! shell over it (command line → [`config::Config`] → [`master::run`]), and
//! the fuzz targets and benchmarks reach its parsers through it.
//!
//! - [`master`]: the arbiter loop (signals, reaping, generations, rollouts).
//! - [`worker`]: a worker process and its epoll loop; [`exchange`] is the host
//!   side of one request's call into the app; [`conn`] one connection.
//! - [`http`]: request-head parsing, body decoding, response heads.
//! - [`app`], [`builds`], [`probe`]: loading apps, snapshotting and probing builds.
//! - [`process`]: pid file, user and group, chdir, umask, environment, titles.
//! - [`config`] (the options) and [`layers`] (file, environment, command line).
//! - [`logging`] (the error log) and [`access_log`].
//! - [`scoreboard`], [`signals`], [`listener`], [`systemd`], [`exit_code`].

pub mod access_log;
pub mod app;
pub mod autoscale;
pub mod builds;
pub mod config;
pub mod conn;
pub mod dispatch;
pub mod exchange;
pub mod exit_code;
pub mod handlers;
pub mod http;
pub mod layers;
pub mod listener;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod probe;
pub mod process;
pub mod scoreboard;
pub mod signals;
pub mod status_command;
pub mod status_server;
pub mod systemd;
pub mod worker;
