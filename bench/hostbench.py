"""Helpers the bench scripts share: finding the build, ports, one GET, stopping a host.

Every script under `bench/` starts the real `host` binary on loopback and
talks to it over plain sockets (no HTTP library: the scripts measure the
server, and must run on a bare Python 3). The same few steps came back in
each of them; they live here once so a fix to one (say, how a host is
stopped when it hangs) reaches all of them.

A script imports this module as `import hostbench`: Python puts the
directory of the script it runs on `sys.path`, so this works from the repo
root or anywhere else (`python3 bench/X.py`, `python3 /path/to/bench/X.py`).
Nothing here checks a figure against a target: the scripts measure.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

# The repository's root (the parent of `bench/`).
ROOT = Path(__file__).resolve().parent.parent
# How long a stopped host gets to exit after SIGTERM before it is killed, in seconds.
STOP_TIMEOUT = 30.0


def default_target(lib, profiles=("release", "debug")):
    """The first `target/<profile>` holding both `host` and `lib` (e.g. "libhello.so")."""
    for profile in profiles:
        target = ROOT / "target" / profile
        if (target / "host").exists() and (target / lib).exists():
            return target
    raise SystemExit("error: no host build: run cargo build --workspace [--release] first")


def add_build_options(parser, lib):
    """Adds --host and --app (`lib`, e.g. "libhello.so") to `parser`; see `build_paths`."""
    parser.add_argument("--host", help="the host binary (default: target/release, else debug)")
    parser.add_argument("--app", help=f"{lib} (default: beside the host binary)")


def build_paths(args, lib):
    """(host, app) from --host and --app: by default target/release's, else target/debug's."""
    host = Path(args.host) if args.host else default_target(lib) / "host"
    app = Path(args.app) if args.app else host.parent / lib
    return host, app


def require_built(*paths):
    """Exits with a hint to build when any of `paths` is missing."""
    for path in paths:
        if not Path(path).exists():
            sys.exit(f"{path} is missing: run cargo build --workspace first")


def free_port():
    """A loopback TCP port free at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# One response: `status` is None when nothing answered (or the head did not
# parse); `body` the bytes after the head; `elapsed` the seconds from before
# connecting until the server closed; `raw` the whole response.
Reply = namedtuple("Reply", "status body elapsed raw")


def get(port, path="/", timeout=10.0):
    """GET `path` on a new loopback connection (`Connection: close`), read to close."""
    start = time.perf_counter()
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return Reply(None, b"", time.perf_counter() - start, data)
    elapsed = time.perf_counter() - start
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return Reply(None, b"", elapsed, data)
    return Reply(status, body, elapsed, data)


def text(reply):
    """A reply's body as text ('' when nothing answered)."""
    return reply.body.decode(errors="replace")


def metric(text, name):
    """The value of the unlabelled sample `name` in Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def children(pid):
    """The pids of `pid`'s children (its workers, for a host master), from /proc."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pid):
    """User + system CPU time of process `pid` so far, every thread, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc, group=False, timeout=STOP_TIMEOUT):
    """Stops a host: SIGTERM, up to `timeout` s to exit, then SIGKILL.

    With `group`, the signals go to the process group (a host started with
    `start_new_session=True`), so workers left behind go too.
    """

    def send(sig):
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()
