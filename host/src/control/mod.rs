//! The control socket: how an operator, a deploy script or another tool
//! asks a running master for something and gets an answer (`host ctl`).
//!
//! Signals ask without an answer: a HUP cannot say whether the build it
//! loaded was refused. The control socket answers, and `--wait` follows a
//! change to its end (complete, refused or rolled back), which is what a
//! deploy script needs to pass or fail.
//!
//! The protocol, for other tools to speak (the README has it too):
//! - A Unix stream socket (`--control PATH`; default [`default_path`]), mode
//!   0600; the master answers only peers running as its own user or root
//!   (`SO_PEERCRED`).
//! - One request per connection: a JSON object on one line, e.g.
//!   `{"cmd":"reload","wait":true}` ([`Request`] lists them).
//! - Answers are JSON lines: any number of `{"type":"progress","line":…}`
//!   (the master's log lines while a change asked with `wait` runs), then
//!   one `{"type":"result","ok":…,"message":…}`, with `"data"` for
//!   `status` and `workers`; then the master closes the connection.
//!
//! `server` is the master's side (non-blocking, in its loop), `client` is
//! `host ctl`. The master's meaning of each command is in
//! `crate::master::commands`.

pub mod client;
pub mod server;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ReloadStrategy;

/// File name of the control socket in the runtime directory.
pub const SOCKET_NAME: &str = "control.sock";

/// One request, as `{"cmd": "...", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The server's state: app, generation, build, workers, rollout (data: as `/status.json`).
    Status,
    /// The worker table (data: as `/status.json`).
    Workers,
    /// Sets the pool's size.
    Scale {
        /// Workers wanted.
        workers: u32,
    },
    /// Reloads the library file as it is now (as HUP does).
    Reload {
        /// Answer when the new generation serves on every worker, or was refused.
        #[serde(default)]
        wait: bool,
    },
    /// Deploys a build: the library at `path` (from now on the served file)
    /// or, without it, the configured file as it is now.
    Deploy {
        /// The library to serve from now on.
        #[serde(default)]
        path: Option<PathBuf>,
        /// How this deploy rolls out (`all`, `chain`, `canary`), instead of `--rollout`.
        #[serde(default)]
        rollout: Option<ReloadStrategy>,
        /// Answer when the rollout completed, or was refused or rolled back.
        #[serde(default)]
        wait: bool,
    },
    /// A canary in progress goes to the whole pool at once.
    Promote,
    /// Rolls back: a rollout under way is abandoned; after one completed, the
    /// previous kept build (`--keep-builds`) serves again.
    Rollback {
        /// Answer when the rollback's own rollout completed.
        #[serde(default)]
        wait: bool,
    },
    /// Drains and stops the server (as TERM does): `/ready` answers 503
    /// for `--drain-delay`, then a graceful stop.
    Drain,
    /// Upgrades the `host` binary (as USR2 does): a new master takes the
    /// sockets over, this one stops once the new one is ready.
    Upgrade {
        /// Answer when the new master took over, or failed.
        #[serde(default)]
        wait: bool,
    },
    /// Reopens the log files (as USR1 does).
    ReopenLogs,
}

impl Request {
    /// Whether the answer waits for the change to end.
    pub fn waits(&self) -> bool {
        match self {
            Request::Reload { wait }
            | Request::Deploy { wait, .. }
            | Request::Rollback { wait }
            | Request::Upgrade { wait } => *wait,
            Request::Promote
            | Request::Status
            | Request::Workers
            | Request::Scale { .. }
            | Request::Drain
            | Request::ReopenLogs => false,
        }
    }
}

/// One line of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Answer {
    /// A log line of the master while the change runs.
    Progress {
        /// The line as the error log has it.
        line: String,
    },
    /// The last line: how the request ended.
    Result {
        /// Done (or, for a change asked with `wait`, complete).
        ok: bool,
        /// One line saying what happened.
        message: String,
        /// The state asked for (`status`, `workers`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<serde_json::Value>,
    },
}

impl Answer {
    /// A result line.
    pub fn result(ok: bool, message: impl Into<String>) -> Answer {
        Answer::Result {
            ok,
            message: message.into(),
            data: None,
        }
    }

    /// The answer as one line of JSON, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"type":"result","ok":false,"message":"unencodable answer"}"#.to_vec()
        });
        line.push(b'\n');
        line
    }
}

/// Where the control socket is when `--control` does not say: the service's
/// runtime directory (`$RUNTIME_DIRECTORY`, which systemd's
/// `RuntimeDirectory=` sets), else the user's (`$XDG_RUNTIME_DIR/host`),
/// else `/run/host` for root, else `/tmp/host-UID`. `host ctl` finds it the
/// same way, so on one machine, under one user, neither needs the flag.
pub fn default_path() -> PathBuf {
    let env_dir = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let uid = nix::unistd::geteuid();
    let dir = if let Some(dir) = env_dir("RUNTIME_DIRECTORY") {
        // systemd may list several, separated by colons: the first is ours.
        match dir.to_str().and_then(|d| d.split(':').next()) {
            Some(first) => PathBuf::from(first),
            None => dir,
        }
    } else if let Some(dir) = env_dir("XDG_RUNTIME_DIR") {
        dir.join("host")
    } else if uid.is_root() {
        PathBuf::from("/run/host")
    } else {
        PathBuf::from(format!("/tmp/host-{uid}"))
    };
    dir.join(SOCKET_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_documented() {
        let cases: [(&str, Request); 11] = [
            (r#"{"cmd":"status"}"#, Request::Status),
            (r#"{"cmd":"workers"}"#, Request::Workers),
            (
                r#"{"cmd":"scale","workers":3}"#,
                Request::Scale { workers: 3 },
            ),
            (r#"{"cmd":"reload"}"#, Request::Reload { wait: false }),
            (
                r#"{"cmd":"deploy","path":"/srv/lib.so","wait":true}"#,
                Request::Deploy {
                    path: Some("/srv/lib.so".into()),
                    rollout: None,
                    wait: true,
                },
            ),
            (
                r#"{"cmd":"deploy","rollout":"canary"}"#,
                Request::Deploy {
                    path: None,
                    rollout: Some(ReloadStrategy::Canary),
                    wait: false,
                },
            ),
            (r#"{"cmd":"promote"}"#, Request::Promote),
            (
                r#"{"cmd":"rollback","wait":true}"#,
                Request::Rollback { wait: true },
            ),
            (r#"{"cmd":"drain"}"#, Request::Drain),
            (
                r#"{"cmd":"upgrade","wait":true}"#,
                Request::Upgrade { wait: true },
            ),
            (r#"{"cmd":"reopen-logs"}"#, Request::ReopenLogs),
        ];
        for (text, want) in cases {
            let got: Request = serde_json::from_str(text).expect(text);
            assert_eq!(got, want, "{text}");
            // And back: what `host ctl` sends reads the same.
            let again: Request =
                serde_json::from_slice(&serde_json::to_vec(&got).unwrap()).unwrap();
            assert_eq!(again, want);
        }
        for bad in [
            r#"{"cmd":"explode"}"#,
            r#"{"cmd":"scale"}"#,
            r#"{"cmd":"scale","workers":-1}"#,
            r#"{"cmd":"reload","wiat":true}"#,
            r#"{"cmd":"deploy","rollout":"sideways"}"#,
            r#"[1,2]"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_one_line_each() {
        let line = Answer::Progress {
            line: "a\nb".into(),
        }
        .to_line();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(line.ends_with(b"\n"));
        let result = Answer::result(false, "refused").to_line();
        assert_eq!(
            String::from_utf8(result).unwrap(),
            "{\"type\":\"result\",\"ok\":false,\"message\":\"refused\"}\n"
        );
    }
}
