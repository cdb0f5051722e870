//! What the server tells its operators: the error log, the access log, the
//! metrics and status page, and the `host status` command that reads them.

pub mod access_log;
pub mod logging;
pub mod metrics;
pub mod status_command;
pub mod status_server;
