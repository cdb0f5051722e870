//! nginx in front of the host, for the tests that check the host behind a
//! real reverse proxy: one place writes the configuration every such nginx
//! needs to run unprivileged from a scratch directory (no daemon, its pid,
//! error log and temporary files inside the directory), starts it in the
//! foreground, waits until it listens, and stops it when dropped.
//!
//! The tests using it are `#[ignore = "needs nginx"]` and call
//! [`crate::require_tool`]`("nginx", "-v")` first.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{eventually, parse_one, Scratch};

/// The `http` block of nginx in front of host instances on `upstreams`:
/// keep-alive to them (`keepalive 16`, HTTP/1.1, `Connection` cleared),
/// listening on `listen`, with `next_upstream`: the directives saying when
/// a request goes on to the next instance (`proxy_next_upstream …`).
pub fn upstream_http(listen: u16, upstreams: &[u16], next_upstream: &str) -> String {
    let servers: String = upstreams
        .iter()
        .map(|p| format!("        server 127.0.0.1:{p} max_fails=0;\n"))
        .collect();
    format!(
        "    upstream hosts {{
{servers}        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://hosts;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            {next_upstream}
        }}
    }}
"
    )
}

/// Sends `request` on a keep-alive connection to nginx in front of the
/// `echo` app: the pid of the worker that answered and whether nginx
/// closes the connection after it, or why it failed (a status other than
/// 200 included).
pub fn echo_through(stream: &mut TcpStream, request: &[u8]) -> Result<(i64, bool), String> {
    stream
        .write_all(request)
        .map_err(|e| format!("send: {e}"))?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some((resp, _)) = parse_one(&data) {
            if resp.status != 200 {
                return Err(format!("status {}: {}", resp.status, resp.text()));
            }
            let close = resp.header("connection") == Some("close");
            let pid = resp.json()["pid"]
                .as_i64()
                .ok_or_else(|| "no pid".to_owned())?;
            return Ok((pid, close));
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err("nginx closed the connection".into()),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// nginx running in the foreground from a configuration in a scratch
/// directory. Dropping it stops nginx gracefully (`SIGQUIT`) and waits for
/// it; if the test is failing, nginx's error log is printed first.
pub struct Nginx {
    child: Child,
    dir: Scratch,
}

impl Nginx {
    /// Writes `dir/nginx.conf`: the preamble (a single worker process
    /// with `worker_connections` connections, `user root;` when run as root,
    /// `daemon off;`, the pid file, `logs/error.log` and the temporary
    /// paths in `dir`, no access log), then `http`, the rest of the `http`
    /// block (upstreams and servers; it may name files in `dir`). Starts
    /// nginx with `-p dir -c dir/nginx.conf` and waits until it accepts
    /// connections on `127.0.0.1:listen`, which `http` must listen on.
    pub fn start(dir: Scratch, listen: u16, worker_connections: u32, http: &str) -> Nginx {
        std::fs::create_dir_all(dir.join("logs")).expect("create nginx's logs directory");
        let user = if nix::unistd::Uid::effective().is_root() {
            "user root;"
        } else {
            ""
        };
        let conf = format!(
            "{user}
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{http}}}
",
            d = dir.path().display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
        let child = Command::new("nginx")
            .args(["-p", &dir.file(""), "-c", &dir.file("nginx.conf")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let addr = SocketAddr::from(([127, 0, 0, 1], listen));
        eventually("nginx to listen", || TcpStream::connect(addr).ok());
        Nginx { child, dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGQUIT);
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default();
            eprintln!("--- nginx error log:\n{log}");
        }
    }
}
