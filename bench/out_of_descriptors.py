#!/usr/bin/env python3
"""A worker out of descriptors: its CPU time and the log's growth.

    python3 bench/out_of_descriptors.py                    # target/release (else debug)
    python3 bench/out_of_descriptors.py --host /work/main/target/release/host \\
        --app /work/main/target/release/libhello.so       # another build, to compare

Starts `host -w 1 libhello.so` under `prlimit --nofile=64:64` (a 64-descriptor
limit, soft and hard), connects 120 clients that send nothing (the worker
accepts what its descriptors allow; then `accept` fails with EMFILE while
the rest wait in the listen queue), and measures over --seconds (3): the
CPU time the worker used (utime + stime from /proc/PID/stat) and how many
bytes the log grew. Then it closes the clients and times how long a normal
request takes to be served (serving resumes by itself). Prints one JSON
object. Only loopback addresses are used; nothing is checked against a
target: the script measures.
"""

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hostbench
from hostbench import children, cpu_seconds, free_port


def get(port, timeout=10.0):
    """A GET / on a new connection; True when it is answered 200."""
    return hostbench.get(port, "/", timeout=timeout).status == 200


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    hostbench.add_build_options(parser, "libhello.so")
    parser.add_argument("--clients", type=int, default=120)
    parser.add_argument("--nofile", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    host, app = hostbench.build_paths(args, "libhello.so")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "host.log"
        with open(log_path, "wb") as log:
            argv = ["prlimit", f"--nofile={args.nofile}:{args.nofile}", str(host),
                    "-w", "1", "--threads", str(args.threads), "--keep-alive", "300",
                    "-b", f"127.0.0.1:{port}", f"{app}:app"]
            master = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        clients = []
        try:
            deadline = time.monotonic() + 30
            while not get(port, timeout=1.0):
                if time.monotonic() > deadline or master.poll() is not None:
                    raise SystemExit(f"error: the host did not serve; see {log_path}")
                time.sleep(0.05)
            workers = children(master.pid)
            if len(workers) != 1:
                raise SystemExit(f"error: expected one worker, found {workers}")
            worker = workers[0]
            for _ in range(args.clients):
                clients.append(socket.create_connection(("127.0.0.1", port)))
            cpu0, log0, t0 = cpu_seconds(worker), log_path.stat().st_size, time.monotonic()
            time.sleep(args.seconds)  # the measurement window, not a synchronisation
            cpu1, log1, t1 = cpu_seconds(worker), log_path.stat().st_size, time.monotonic()
            for c in clients:
                c.close()
            clients = []
            r0 = time.monotonic()
            served = get(port, timeout=30.0)
            recovered_ms = (time.monotonic() - r0) * 1000
            lines = sum(1 for line in open(log_path, "rb") if b"accept" in line)
            print(json.dumps({
                "host": str(host),
                "nofile": args.nofile,
                "clients": args.clients,
                "threads": args.threads,
                "seconds": round(t1 - t0, 2),
                "worker_cpu_s": round(cpu1 - cpu0, 3),
                "log_growth_bytes": log1 - log0,
                "accept_log_lines": lines,
                "served_after_clients_left": served,
                "recovered_ms": round(recovered_ms, 1),
            }))
        finally:
            for c in clients:
                c.close()
            hostbench.stop(master, group=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
