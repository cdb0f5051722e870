#!/usr/bin/env python3
"""Binary upgrades (USR2) under wrk load: requests, errors, time to take over (issue 16).

    cargo build --workspace [--release]
    python3 bench/upgrade.py                     # 3 upgrades per mode
    python3 bench/upgrade.py --upgrades 10 --connections 64

Starts `host -w 2` on the `hello` app with a pid file, puts wrk on it
(`-t1`, keep-alive, then `Connection: close`), and while wrk runs sends USR2
`--upgrades` times: each time to the master the pid file names, waiting
until the pid file names a new master and the old one is gone (it stops
gracefully once the new one is ready), then `--settle` seconds of load on
the new master before the next. wrk is then stopped (SIGINT: it reports).
Printed per mode: requests, requests/s, wrk's socket errors (connect, read,
write, timeout) and non-2xx answers, and per upgrade the seconds from USR2
until the pid file named the new master (it writes it when it takes over)
and until the old master was gone. Nothing is checked against a target:
the figure to expect is 0 errors and 0 non-2xx.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hostbench

MODES = ["keep-alive", "close"]
# How long to wait for anything the host should do "soon", in seconds.
WAIT = 60.0


def read_pid(path):
    """The pid in the pid file, or None."""
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def gone(pid):
    """Whether process `pid` has exited (absent, or a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


class Timeout(Exception):
    """Something the host should have done did not happen within WAIT seconds."""


def wait_for(what, check):
    """Polls `check` every 10 ms until it is true; raises Timeout after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise Timeout(f"waited {WAIT:.0f} s for {what}")
        time.sleep(0.01)


def parse_wrk(text):
    """requests, rps, errors (sum of wrk's socket errors) and non-2xx from wrk's report."""
    out = {"requests": 0, "rps": 0.0, "errors": 0, "non2xx": 0}
    if m := re.search(r"(\d+) requests in", text):
        out["requests"] = int(m.group(1))
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["rps"] = float(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        out["errors"] = sum(int(x) for x in m.groups())
        out["error_detail"] = m.group(0)
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        out["non2xx"] = int(m.group(1))
    return out


def run_mode(host, app, mode, args):
    """One host, wrk in `mode`, `args.upgrades` upgrades; returns (wrk figures, upgrade timings)."""
    with tempfile.TemporaryDirectory(prefix="host-bench-upgrade-") as tmp:
        pid_file = Path(tmp) / "host.pid"
        port = hostbench.free_port()
        log = open(Path(tmp) / "host.log", "w")
        proc = subprocess.Popen(
            [str(host), "-w", str(args.workers), "--bind", f"127.0.0.1:{port}",
             "--pid", str(pid_file), f"{app}:app"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for("the host to answer", lambda: hostbench.get(port).status == 200)
            wrk_argv = ["wrk", "-t1", f"-c{args.connections}", "-d300s", "--timeout=5s"]
            if mode == "close":
                wrk_argv += ["-H", "Connection: close"]
            wrk = subprocess.Popen(wrk_argv + [f"http://127.0.0.1:{port}/"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(args.settle)
            timings = []
            for _ in range(args.upgrades):
                old = read_pid(pid_file)
                start = time.monotonic()
                os.kill(old, signal.SIGUSR2)
                wait_for("the new master's pid file", lambda: read_pid(pid_file) not in (None, old))
                took_over = time.monotonic() - start
                wait_for("the old master to exit", lambda: gone(old))
                timings.append((took_over, time.monotonic() - start))
                time.sleep(args.settle)
            wrk.send_signal(signal.SIGINT)
            report, _ = wrk.communicate(timeout=60)
        except Timeout as e:
            log.flush()
            tail = (Path(tmp) / "host.log").read_text().splitlines()[-40:]
            sys.exit(f"error: {e}; the host's log ends:\n" + "\n".join(tail))
        finally:
            # Every master since the first is in the same session's group.
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait()
            log.close()
    figures = parse_wrk(report)
    if figures["requests"] == 0:
        sys.exit(f"error: wrk reported no requests:\n{report}")
    return figures, timings


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    hostbench.add_build_options(parser, "libhello.so")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    parser.add_argument("--upgrades", type=int, default=3, help="USR2s per mode")
    parser.add_argument("--modes", default=",".join(MODES), help="keep-alive, close, or both")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds of load before the first upgrade and after each")
    args = parser.parse_args()
    host, app = hostbench.build_paths(args, "libhello.so")
    hostbench.require_built(host, app)
    print(f"host: {host}")
    print(f"wrk -t1 -c{args.connections}, host -w {args.workers}, {args.upgrades} upgrade(s) per mode")
    for mode in args.modes.split(","):
        if mode not in MODES:
            sys.exit(f"error: unknown mode {mode!r} (keep-alive, close)")
        figures, timings = run_mode(host, app, mode, args)
        detail = figures.get("error_detail", "Socket errors: none")
        print(f"{mode:>10}: {figures['requests']} requests, {figures['rps']:.0f}/s; "
              f"{detail}; non-2xx {figures['non2xx']}")
        for i, (took_over, old_gone) in enumerate(timings, 1):
            print(f"{'':>10}  upgrade {i}: new master took over after {took_over:.2f} s, "
                  f"old master gone after {old_gone:.2f} s")


if __name__ == "__main__":
    main()
