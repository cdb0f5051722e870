//! `host status ADDR`: the worker table of a running server, in the terminal.
//!
//! It reads `/status.json` from the server's `--metrics-bind` address and
//! prints the same table the HTML status page shows.

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::net::UnixStream,
    time::Duration,
};

use crate::{
    os::listener::BindAddr,
    report::metrics::{self, WorkerView},
};

/// How long `host status` waits for the server.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `host status ADDR`; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let Some(addr) = args.first() else {
        eprintln!(
            "usage: host status ADDR   (the server's --metrics-bind address, e.g. 127.0.0.1:9100)"
        );
        return crate::exit_code::USAGE;
    };
    match fetch(addr).and_then(|body| render(&body)) {
        Ok(text) => {
            print!("{text}");
            crate::exit_code::OK
        }
        Err(e) => {
            eprintln!("error: host status {addr}: {e}");
            crate::exit_code::STARTUP
        }
    }
}

/// GETs `/status.json` from `addr`.
fn fetch(addr: &str) -> Result<Vec<u8>, String> {
    let bind: BindAddr = addr.parse()?;
    let request = b"GET /status.json HTTP/1.1\r\nHost: host\r\nConnection: close\r\n\r\n";
    let mut response = Vec::new();
    let io = |e: std::io::Error| e.to_string();
    match bind {
        BindAddr::Tcp(spec) => {
            let mut s = TcpStream::connect(spec.as_str()).map_err(io)?;
            s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
            s.write_all(request).map_err(io)?;
            s.read_to_end(&mut response).map_err(io)?;
        }
        BindAddr::Unix(path) => {
            let mut s = UnixStream::connect(path).map_err(io)?;
            s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
            s.write_all(request).map_err(io)?;
            s.read_to_end(&mut response).map_err(io)?;
        }
        BindAddr::Fd(_) => return Err("give the address the server listens on".into()),
    }
    let start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP response")?;
    if !response.starts_with(b"HTTP/1.1 200") {
        return Err(String::from_utf8_lossy(&response[..start]).into_owned());
    }
    Ok(response[start + 4..].to_vec())
}

/// The summary line and the worker table from a `/status.json` body.
fn render(body: &[u8]) -> Result<String, String> {
    let j: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let (summary, table) = summary_and_table(&j)?;
    Ok(format!("{summary}\n{table}"))
}

/// The summary line and the worker table of a status (as `/status.json`
/// and the control socket's `status` give it).
pub fn summary_and_table(j: &serde_json::Value) -> Result<(String, String), String> {
    let workers: Vec<WorkerView> = j["workers"]
        .as_array()
        .ok_or("no workers in the status")?
        .iter()
        .map(|w| WorkerView {
            id: w["id"].as_u64().unwrap_or(0) as u32,
            pid: w["pid"].as_i64().unwrap_or(0) as i32,
            state: match w["state"].as_str().unwrap_or("") {
                "booting" => "booting",
                "idle" => "idle",
                "busy" => "busy",
                _ => "stopping",
            },
            generation: w["generation"].as_u64().unwrap_or(0) as u32,
            requests: w["requests"].as_u64().unwrap_or(0),
            current: w["current_request"]
                .as_str()
                .map(|r| (r.to_owned(), w["current_ms"].as_u64().unwrap_or(0))),
            rss_kib: w["rss_kib"].as_u64().unwrap_or(0),
            websockets: w["websockets"].as_u64().unwrap_or(0),
        })
        .collect();
    let summary = format!(
        "{}: generation {} (build {}), up {} s, {} worker(s)",
        j["app"].as_str().unwrap_or("?"),
        j["generation"],
        j["build"].as_str().unwrap_or("?"),
        j["uptime_s"],
        workers.len(),
    );
    Ok((summary, metrics::table(&workers)))
}
