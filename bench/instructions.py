#!/usr/bin/env python3
"""User-space instructions per request in a host worker (and in nginx), counted by callgrind.

    python3 bench/instructions.py            # keep-alive and close, release build

On a shared VM, timings of one binary vary by ±20% from run to run, which
hides a change of a few percent in the request path. An instruction count
does not vary: this runs `host -w 1` (the `hello` app) under valgrind's
callgrind, sends N and then N + EXTRA requests in two runs, and divides the
difference in the worker's instruction total by EXTRA, so start-up and
shutdown cancel out. It counts the worker's own code, libc and the app, never
the kernel (see bench/run.py for whole-server CPU time). nginx (`return 200`,
one process: `master_process off`) is counted the same way when installed.

The TLS modes (`--modes tls-keep-alive,tls-full,tls-resumed`) do the same
over TLS 1.3 on a second listener of each server (host `-b tls://`, nginx
`listen ... ssl` as bench/tls.py configures it, the certificate made by
bench/tls.py): one kept-alive connection, a new connection with a full
handshake per request, or a new connection per request resuming the last
session. Under valgrind, aws-lc and OpenSSL may pick other assembly than on
the bare CPU (valgrind hides some CPUID features): the counts compare the
two servers' code paths, not their speed.

Needs valgrind and a release build (`cargo build --release --workspace`).
"""

import argparse
import glob
import ssl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hostbench import ROOT, free_port
from run import nginx_conf

# Requests in the short run; the long run sends EXTRA more.
BASE = 500
EXTRA = 4000
GREETING = b"Hello, World!"
MODES = ["keep-alive", "close", "tls-keep-alive", "tls-full", "tls-resumed"]


def one(sock, request):
    sock.sendall(request)
    data = b""
    while not data.endswith(GREETING):
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("error: the server closed the connection early")
        data += chunk


def send(port, count, mode):
    """`count` GETs to `port` in `mode` (one of MODES; the tls- modes need a TLS port)."""
    close = mode in ("close", "tls-full", "tls-resumed")
    request = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n"
               % (port, b"Connection: close\r\n" if close else b"User-Agent: bench\r\n"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sock = session = None
    for _ in range(count):
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", port))
            if mode.startswith("tls-"):
                sock = context.wrap_socket(sock, server_hostname="localhost",
                                           session=session if mode == "tls-resumed" else None)
        one(sock, request)
        if close:
            if mode == "tls-resumed":
                # Read to the close: the session tickets came before the answer.
                while sock.recv(4096):
                    pass
                session = sock.session
            sock.close()
            sock = None
    if sock:
        sock.close()


def host_argv(target, port, out_dir, tls=None):
    """tls: (tls_port, cert, key) for a second, TLS listener."""
    tls_flags = []
    if tls:
        tls_port, cert, key = tls
        tls_flags = ["-b", f"tls://127.0.0.1:{tls_port}", "--certfile", str(cert), "--keyfile", str(key),
                     "--tls-min-version", "1.3"]
    return [str(target / "host"), "-w", "1", "-b", f"127.0.0.1:{port}", *tls_flags,
            "--pid", str(out_dir / "server.pid"), str(target / "libhello.so")]


def nginx_argv(target, port, out_dir, tls=None):
    """tls: (tls_port, cert, key) for a second, TLS listener."""
    import tls as tls_bench

    extra = tls_bench.nginx_tls_lines(*tls) if tls else ""
    conf = nginx_conf(out_dir, port, 1, "server", single_process=True, server_extra=extra)
    return ["nginx", "-p", str(out_dir), "-e", "stderr", "-c", str(conf)]


# Which profile is the serving process's: host's worker is the one that
# called the app; nginx runs as one process.
PICK = {"host": "as app_sdk::App>::handle", "nginx": "ngx_http_process_request"}
ARGV = {"host": host_argv, "nginx": nginx_argv}


def worker_instructions(server, target, mode, count, workdir):
    """Runs server under callgrind, sends count requests, returns the serving process's total."""
    out_dir = Path(tempfile.mkdtemp(dir=workdir))
    port = free_port()
    tls = None
    if mode.startswith("tls-"):
        import tls as tls_bench

        tls = (free_port(), *tls_bench.make_certificate(out_dir))
    pid_file = out_dir / "server.pid"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/out.%p",
         *ARGV[server](target, port, out_dir, tls)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # host's workers go with its process group if it hangs; nginx alone
        # (in a session of its own it ignores TERM under valgrind).
        start_new_session=server == "host")
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                send(port, 1, "close")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"error: {server} did not start under valgrind")
                time.sleep(0.2)
        send(tls[0] if tls else port, count, mode)
        master = int(pid_file.read_text().strip())
        os.kill(master, signal.SIGTERM)
        # A signal that lands while nginx (slow under valgrind) is between
        # its flag check and epoll_wait is seen only at the next event: give
        # it one, as the same for both runs.
        for _ in range(240):
            try:
                proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    pass
    finally:
        if proc.poll() is None:
            print(f"warning: {server} did not stop; killed", file=sys.stderr)
            if server == "host":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait()
    totals = []
    for path in glob.glob(f"{out_dir}/out.*"):
        text = Path(path).read_text(errors="replace")
        m = re.search(r"^summary: (\d+)", text, re.M)
        if m and PICK[server] in text:
            totals.append(int(m.group(1)))
    if len(totals) != 1:
        raise SystemExit(f"error: expected one {server} profile, found {len(totals)}")
    return totals[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="release", help="cargo profile of the host build")
    p.add_argument("--modes", default="keep-alive,close", help=f"comma-separated, of {', '.join(MODES)}")
    args = p.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("error: valgrind is not installed (apt-get install valgrind)")
    target = ROOT / "target" / ("debug" if args.profile == "dev" else args.profile)
    if not (target / "host").exists() or not (target / "libhello.so").exists():
        raise SystemExit(f"error: build first: cargo build --{args.profile} --workspace")
    modes = args.modes.split(",")
    if set(modes) - set(MODES):
        raise SystemExit(f"error: unknown mode(s) {', '.join(set(modes) - set(MODES))}")
    for mode, server, count in count_all(target, modes):
        print(f"{mode:10} {server:5}: {count:,.0f} user-space instructions per request "
              f"({EXTRA} requests)", flush=True)


def count_all(target, modes=("keep-alive", "close")):
    """(mode, server, instructions per request) for host and, if installed, nginx."""
    servers = ["host"] + (["nginx"] if shutil.which("nginx") else [])
    workdir = Path(tempfile.mkdtemp(prefix="host-instructions-"))
    try:
        for mode in modes:
            for server in servers:
                short = worker_instructions(server, target, mode, BASE, workdir)
                long = worker_instructions(server, target, mode, BASE + EXTRA, workdir)
                yield mode, server, (long - short) / EXTRA
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
