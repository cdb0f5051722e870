#!/usr/bin/env python3
"""`/ready` latency on the master's status endpoint with 1,000 idle connections open.

    python3 bench/status_idle.py                     # target/debug, 1,000 idle, 100 probes
    python3 bench/status_idle.py --profile release --idle 1000 --probes 100

Starts `target/<profile>/host -w 1 --metrics-bind 127.0.0.1:PORT libhello.so`
(build it first: `cargo build --workspace [--release]`), then in rounds:
opens --idle connections to the status endpoint that send nothing, and
times --probes-per-round `GET /ready` on fresh connections (connect, send,
read to close), until --probes probes were timed. Each round checks that the
idle connections were all still open after its probes (the endpoint closes a
connection that has not sent its head in 5 s, so rounds are short), then
closes them.

Reports p50 / p99 / max of the probe times, the probes that did not answer
200, the endpoint's connection cap and open connections (from /metrics),
and the master's CPU time over the probing (from /proc/PID/stat). For
scale it also times the same probes with no idle connection open.

The endpoint holds at most a quarter of the master's soft descriptor limit
(at most 1,024): run it where `ulimit -n` is 4096 or more to hold all 1,000
(with a lower limit, the oldest idle connections are closed to make room,
which the report shows). Only loopback addresses are used.
"""

import argparse
import resource
import socket
import subprocess
import sys
import time

import hostbench
from hostbench import ROOT, cpu_seconds, free_port


def probe(addr):
    reply = hostbench.get(addr[1], "/ready")
    return reply.status, reply.elapsed


def metric(addr, name):
    return hostbench.metric(hostbench.text(hostbench.get(addr[1], "/metrics")), name)


def still_open(sock):
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # data would be odd; EOF means closed
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def summary(times):
    ms = [t * 1000 for t in times]
    return f"p50 {pct(ms, 50):.2f} ms, p99 {pct(ms, 99):.2f} ms, max {max(ms):.2f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="debug", help="target/<profile>/host (default debug)")
    ap.add_argument("--idle", type=int, default=1000, help="idle connections held (default 1000)")
    ap.add_argument("--probes", type=int, default=100, help="GET /ready timed (default 100)")
    ap.add_argument("--probes-per-round", type=int, default=20)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.idle + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    target = ROOT / "target" / args.profile
    host, lib = target / "host", target / "libhello.so"
    for p in (host, lib):
        if not p.exists():
            sys.exit(f"{p} is missing: run cargo build --workspace" + (" --release" if args.profile == "release" else ""))
    maddr = ("127.0.0.1", free_port())
    cmd = [str(host), "-w", "1", "--bind", "127.0.0.1:0", "--metrics-bind", f"{maddr[0]}:{maddr[1]}", f"{lib}:app"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 30
        while probe(maddr)[0] != 200:
            if time.time() > deadline or proc.poll() is not None:
                sys.exit("host did not become ready")
            time.sleep(0.05)

        baseline = [probe(maddr)[1] for _ in range(args.probes)]

        times, failures, rounds, closed_early, opened_fail = [], 0, 0, 0, 0
        cap = metric(maddr, "host_status_connections_max")
        held_max = 0
        cpu_before, wall_before = cpu_seconds(proc.pid), time.perf_counter()
        while len(times) < args.probes:
            idle = []
            for _ in range(args.idle):
                try:
                    idle.append(socket.create_connection(maddr, timeout=10))
                except OSError:
                    opened_fail += 1
            rounds += 1
            for _ in range(min(args.probes_per_round, args.probes - len(times))):
                status, elapsed = probe(maddr)
                times.append(elapsed)
                failures += status != 200
            held_max = max(held_max, metric(maddr, "host_status_connections") or 0)
            closed_early += sum(not still_open(s) for s in idle)
            for s in idle:
                s.close()
        cpu = cpu_seconds(proc.pid) - cpu_before
        wall = time.perf_counter() - wall_before
    finally:
        hostbench.stop(proc, group=True)

    print(f"command: {' '.join(cmd)}")
    print(f"descriptor limit of the bench (and host): soft {want}, hard {hard}; endpoint cap {cap if cap is None else int(cap)}")
    print(f"no idle connection:  {len(baseline)} x GET /ready: {summary(baseline)}")
    print(
        f"{args.idle} idle connections: {len(times)} x GET /ready in {rounds} round(s): {summary(times)}; "
        f"not 200: {failures}"
    )
    print(
        f"  idle connections the server held at most: {held_max:.0f}; closed by the server before "
        f"their round ended: {closed_early}; could not connect: {opened_fail}"
    )
    print(f"  master CPU over the rounds: {cpu * 1000:.0f} ms in {wall:.2f} s of wall time")


if __name__ == "__main__":
    main()
