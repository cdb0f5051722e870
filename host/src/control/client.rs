//! `host ctl`: asks a running master through its control socket and prints
//! the answer; with `--wait`, follows the change to its end.
//!
//! Exit codes: [`exit_code::OK`] when the master did it (with `--wait`: the
//! change completed), [`exit_code::CTL_REFUSED`] when it refused or the
//! change failed (a build refused by its probe, a rollout abandoned or
//! rolled back, a bad request), [`exit_code::CTL_UNREACHABLE`] when no
//! master answered, [`exit_code::USAGE`] for a bad command line.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::Duration,
};

use clap::{Parser, Subcommand};

use crate::{
    config::ReloadStrategy,
    control::{default_path, Answer, Request},
    exit_code,
    report::status_command::summary_and_table,
};

/// How long `host ctl` waits for the master to take its request, and for
/// an answer to a request that does not wait on a change.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Talk to a running host master through its control socket.
#[derive(Debug, Parser)]
#[command(
    name = "host ctl",
    about = "Talk to a running host master through its control socket",
    after_help = "Exit codes: 0 done (with --wait: the change completed), 6 refused or failed \
                  (a build refused, a rollout rolled back), 7 no master answered, 2 usage."
)]
struct Ctl {
    /// The master's control socket (default: as the master's own default,
    /// in $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/host, /run/host or /tmp/host-UID).
    #[arg(long, value_name = "PATH", global = true)]
    control: Option<PathBuf>,

    /// Print the answer's JSON lines as they come, not text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The server's state and its worker table.
    Status,
    /// The worker table.
    Workers,
    /// Sets the number of workers.
    Scale {
        /// Workers wanted.
        #[arg(value_parser = clap::value_parser!(u32).range(1..=crate::config::MAX_WORKERS as i64))]
        workers: u32,
    },
    /// Reloads the library file as it is now (as SIGHUP does).
    Reload {
        /// Follow the reload until every worker serves the new build (exit 0),
        /// or it is refused or rolled back (exit 6).
        #[arg(long)]
        wait: bool,
    },
    /// Deploys a build: PATH becomes the served library (or, without it, the
    /// configured file as it is now).
    Deploy {
        /// The library to serve from now on.
        path: Option<PathBuf>,
        /// How this deploy rolls out, instead of the server's --rollout.
        #[arg(long, value_enum, value_name = "HOW", conflicts_with = "canary")]
        rollout: Option<ReloadStrategy>,
        /// Roll out as a canary (--rollout canary): a few workers first, rolled
        /// back by itself if its figures are worse than the old build's.
        #[arg(long)]
        canary: bool,
        /// Follow the rollout until it completes (exit 0), or is refused or rolled back (exit 6).
        #[arg(long)]
        wait: bool,
    },
    /// A canary in progress goes to the whole pool at once.
    Promote,
    /// Rolls back: abandons a rollout under way, or after one completed,
    /// serves the previous kept build again (--keep-builds).
    Rollback {
        /// Follow the rollback's rollout until it completes.
        #[arg(long)]
        wait: bool,
    },
    /// Drains and stops the server, as SIGTERM does: /ready answers 503
    /// for --drain-delay while workers serve, then a graceful stop.
    Drain,
    /// Upgrades the host binary, as SIGUSR2 does: a new master from the path
    /// the server was started by takes the sockets over; this one stops
    /// gracefully once the new one is ready.
    Upgrade {
        /// Follow it until the new master took over (exit 0) or failed (exit 6).
        #[arg(long)]
        wait: bool,
    },
    /// Reopens the log files (as SIGUSR1 does).
    ReopenLogs,
}

impl Command {
    /// The request it sends.
    fn request(self) -> Result<Request, String> {
        Ok(match self {
            Command::Status => Request::Status,
            Command::Workers => Request::Workers,
            Command::Scale { workers } => Request::Scale { workers },
            Command::Reload { wait } => Request::Reload { wait },
            Command::Deploy {
                path,
                rollout,
                canary,
                wait,
            } => Request::Deploy {
                // The master's working directory is not ours.
                path: path
                    .map(std::path::absolute)
                    .transpose()
                    .map_err(|e| e.to_string())?,
                rollout: if canary {
                    Some(ReloadStrategy::Canary)
                } else {
                    rollout
                },
                wait,
            },
            Command::Promote => Request::Promote,
            Command::Rollback { wait } => Request::Rollback { wait },
            Command::Drain => Request::Drain,
            Command::Upgrade { wait } => Request::Upgrade { wait },
            Command::ReopenLogs => Request::ReopenLogs,
        })
    }
}

/// Runs `host ctl ARGS`; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let ctl = match Ctl::try_parse_from(
        std::iter::once("host ctl".to_owned()).chain(args.iter().cloned()),
    ) {
        Ok(ctl) => ctl,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit_code::USAGE
            } else {
                exit_code::OK
            };
        }
    };
    let path = ctl.control.clone().unwrap_or_else(default_path);
    let show = match &ctl.command {
        Command::Status => Show::Status,
        Command::Workers => Show::Table,
        _ => Show::Message,
    };
    let request = match ctl.command.request() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit_code::USAGE;
        }
    };
    let stream = match send(&path, &request) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: no master answers at {} ({e}); is it running, and is that its --control?",
                path.display()
            );
            return exit_code::CTL_UNREACHABLE;
        }
    };
    read_answers(stream, ctl.json, show, &path)
}

/// What to print of a successful result.
#[derive(Debug, Clone, Copy)]
enum Show {
    Message,
    Status,
    Table,
}

/// Connects and sends `request`; the stream to read answers from.
fn send(path: &std::path::Path, request: &Request) -> std::io::Result<UnixStream> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    match stream.write_all(&line) {
        // The master answers a peer it refuses before reading its request,
        // then closes: the answer is there to read.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    // A change followed with --wait may take minutes (a canary rollout);
    // anything else is answered at once.
    let timeout = (!request.waits()).then_some(ANSWER_TIMEOUT);
    stream.set_read_timeout(timeout)?;
    Ok(stream)
}

/// Prints the answer's lines as they come; the exit code from its result.
fn read_answers(stream: UnixStream, json: bool, show: Show, path: &std::path::Path) -> i32 {
    for line in BufReader::new(stream).lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: reading the answer from {}: {e}", path.display());
                return exit_code::CTL_UNREACHABLE;
            }
        };
        if json {
            println!("{line}");
        }
        let answer: Answer = match serde_json::from_str(&line) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: an answer that is not the protocol's ({e}): {line}");
                return exit_code::CTL_UNREACHABLE;
            }
        };
        match answer {
            Answer::Progress { line } if !json => println!("{line}"),
            Answer::Progress { .. } => {}
            Answer::Result { ok, message, data } => {
                if !json {
                    print_result(ok, &message, data.as_ref(), show);
                }
                return if ok {
                    exit_code::OK
                } else {
                    exit_code::CTL_REFUSED
                };
            }
        }
    }
    eprintln!(
        "error: the master at {} closed the connection without a result (did it stop?)",
        path.display()
    );
    exit_code::CTL_UNREACHABLE
}

/// Prints a result as text.
fn print_result(ok: bool, message: &str, data: Option<&serde_json::Value>, show: Show) {
    if !ok {
        eprintln!("error: {message}");
        return;
    }
    let rendered = data.map(summary_and_table);
    match (show, rendered) {
        (Show::Status, Some(Ok((summary, table)))) => print!("{summary}\n{message}\n{table}"),
        (Show::Table, Some(Ok((_, table)))) => print!("{table}"),
        _ => println!("{message}"),
    }
}
