//! The `host` application server as a library: the `host` binary is a thin
//! shell over it (command line → [`Config`] → [`run`]). Its modules are
//! crate-private; what the binary calls is re-exported here, and what the
//! benchmarks, the fuzz targets and the floor example reach is in the hidden
//! `internals` module (not an API).
//!
//! The folders are the architecture:
//! - `config`: the options, and the sources they come from (file,
//!   environment, command line).
//! - `control`: the control socket's protocol, the master's side of it, and
//!   `host ctl`.
//! - `master`: the arbiter loop (signals, reaping, generations, rollouts).
//! - `worker`: a worker process, its epoll loop, its connections and the
//!   call into the app for one request.
//! - `app`: loading `path:name`, snapshotting builds, probing them.
//! - `http`: request-head parsing, body decoding, response heads.
//! - `os`: listeners, systemd, signals, and what the server does to its
//!   own processes.
//! - `report`: the error log, the access log, metrics and the status server
//!   and command.
//! - `scaffold`: `host new`, which writes a new app crate.
//! - `tls`: TLS termination (rustls sessions in the worker's loop, the
//!   certificates the master loads, session tickets shared by workers).
//! - `websocket`: WebSocket connections (the handshake, the framing in the
//!   worker's loop, what the app sends during a call).
//! - `scoreboard` (the shared worker table) and [`exit_code`].

// The modules' docs are for the server's developers and link to each other
// freely: read them with `cargo doc -p host --document-private-items`, where
// every link resolves.
#![allow(rustdoc::private_intra_doc_links)]

pub(crate) mod app;
pub(crate) mod config;
pub(crate) mod control;
pub mod exit_code;
pub(crate) mod http;
pub(crate) mod master;
pub(crate) mod os;
pub(crate) mod report;
pub(crate) mod scaffold;
pub(crate) mod scoreboard;
pub(crate) mod tls;
pub(crate) mod websocket;
pub(crate) mod worker;

pub use config::{
    sources::{resolve, to_toml, LayerError, Sources},
    Config,
};
pub use control::client::run as run_ctl_command;
pub use master::{check, run};
pub use report::{logging::init as init_logging, status_command::run as run_status_command};
pub use scaffold::run as run_new_command;

#[doc(hidden)]
pub mod internals {
    //! Not an API: the parts the benchmarks (`benches/hot_path.rs`), the fuzz
    //! targets (`fuzz/`) and the floor example (`examples/floor.rs`) drive
    //! directly, under the paths they have in the crate.

    /// Loading an app.
    pub mod app {
        pub use crate::app::{instance::Failure, load, AppSpec, LoadedApp};
    }
    /// The HTTP parsers and the response head.
    pub mod http {
        pub use crate::http::{body, parse, proxy_protocol, response};
    }
    /// Listening sockets.
    pub mod os {
        pub use crate::os::listener;
    }
    /// The shared worker table.
    pub mod scoreboard {
        pub use crate::scoreboard::Scoreboard;
    }
    /// TLS sessions as workers drive them.
    pub mod tls {
        pub use crate::tls::session;
    }
    /// The request path of a worker.
    pub mod worker {
        pub use crate::worker::{call, exchange, held, host_fns, outcome, stream, timeout};
    }
    /// A loop's WebSocket side, as a call of the app sees it.
    pub mod websocket {
        pub use crate::websocket::port;
    }
}
