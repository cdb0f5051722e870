#!/usr/bin/env python3
"""Bad-descriptor warnings at reloads under load (issue 14, item 9c).

    python3 bench/reload_bad_descriptors.py                     # target/debug/host
    python3 bench/reload_bad_descriptors.py --host /path/to/older/host
    python3 bench/reload_bad_descriptors.py --strace            # also count EBADF calls

Starts `host -w 2` on the `hello` app (a copy in a scratch directory), puts
it under load with `wrk` (new connection per request, so the listeners are
readable throughout), and sends `--reloads` HUPs, each once the previous
generation is complete. It then stops the host and prints how many workers
stopped, how many log lines name a bad descriptor (`Bad file descriptor`,
`EBADF`) and, with `--strace` (the master and every process it starts
traced), how many system calls on a descriptor failed with `EBADF`.

Before commit ca87212 a worker stopping under load logged `accept failed:
Bad file descriptor`: it closed its listeners, then served the listener
events already returned by the same `epoll_wait`.

`--host` runs another build of the host; the app library is taken from the
same directory (`lib{hello}.so` of that build: the app ABI changes between
builds).
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hostbench import ROOT, children, free_port


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default=str(ROOT / "target/debug/host"))
    ap.add_argument("--reloads", type=int, default=20)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--strace", action="store_true")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("needs wrk")
    if args.strace and not shutil.which("strace"):
        sys.exit("needs strace")
    host = Path(args.host).resolve()
    work = Path(tempfile.mkdtemp(prefix="reload-bad-descriptors-"))
    lib = work / "libapp.so"
    shutil.copy(host.parent / "libhello.so", lib)
    port = free_port()
    log_path = work / "log"
    trace = work / "trace"
    command = [str(host), "-w", "2", "-b", f"127.0.0.1:{port}", f"{lib}:app"]
    if args.strace:
        # -Z: only failed calls; -f: every process the master starts.
        command = ["strace", "-f", "-Z", "-qq", "-e", "trace=%desc,%network",
                   "-o", str(trace)] + command
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=subprocess.STDOUT)

    def log():
        return log_path.read_text(errors="replace")

    def wait_for(needle, limit=60):
        deadline = time.monotonic() + limit
        while needle not in log():
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit(f"gave up waiting for {needle!r}; log in {log_path}")
            time.sleep(0.02)

    wait_for("generation 1 complete")
    master = proc.pid
    if args.strace:
        master = children(proc.pid)[0]
    load = subprocess.Popen(
        ["wrk", "-t2", f"-c{args.connections}", "-d600s", "-H", "Connection: close",
         f"http://127.0.0.1:{port}/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for generation in range(2, args.reloads + 2):
            os.kill(master, signal.SIGHUP)
            wait_for(f"generation {generation} complete")
    finally:
        load.terminate()
        load.wait()
    os.kill(master, signal.SIGTERM)
    proc.wait(timeout=60)
    text = log()
    stops = sum(1 for l in text.splitlines() if "worker" in l and "exited" in l)
    bad = [l for l in text.splitlines() if "Bad file descriptor" in l or "EBADF" in l]
    print(f"host: {host}")
    print(f"reloads: {args.reloads}, workers exited: {stops}, "
          f"log lines naming a bad descriptor: {len(bad)}")
    for line in bad[:5]:
        print("  ", line)
    if args.strace:
        calls = [l for l in trace.read_text(errors="replace").splitlines() if "EBADF" in l]
        print(f"system calls failed with EBADF: {len(calls)}")
        for line in calls[:5]:
            print("  ", line)
    print(f"log: {log_path}")


if __name__ == "__main__":
    main()
