#!/usr/bin/env python3
"""A client that pipelines and never reads: the worker's memory.

    python3 bench/pipelining_memory.py                     # target/release (else debug)
    python3 bench/pipelining_memory.py --host /work/main/target/release/host \\
        --app /work/main/target/release/libecho.so        # another build, to compare

Starts `host -w 1 libecho.so`, and one client that writes --requests (16,384)
pipelined requests, each with --pad (4,000) bytes of header that the echo app
sends back (about 4 KB a response, small enough to be buffered), and never
reads. Samples the worker's VmRSS every 50 ms until the client has been stuck
for a second (or wrote everything), and prints one JSON object: the worker's
memory before, its peak, and whether the client could write everything (a
server that reads without bound lets it). Runs --rounds (5) times: the
read loop and the client race, so one run can differ from the next. Only
loopback addresses are used; nothing is checked against a target.
"""

import argparse
import json
import socket
import subprocess
import sys
import threading
import time

import hostbench
from hostbench import children, free_port


def served(port):
    return hostbench.get(port, "/", timeout=1.0).status == 200


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def one_round(host, app, requests, pad):
    port = free_port()
    master = subprocess.Popen([str(host), "-w", "1", "--keep-alive", "300",
                               "-b", f"127.0.0.1:{port}", f"{app}:app"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not served(port):
            if time.monotonic() > deadline or master.poll() is not None:
                raise SystemExit("error: the host did not serve")
            time.sleep(0.05)
        worker = children(master.pid)[0]
        before = rss_kib(worker)
        request = b"GET /p HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"p" * pad + b"\r\n\r\n"
        batch = request * 256
        progress = {"written": 0, "done": False}
        client = socket.create_connection(("127.0.0.1", port))

        def write():
            try:
                for _ in range(requests // 256):
                    client.sendall(batch)
                    progress["written"] += len(batch)
            except OSError:
                pass
            progress["done"] = True

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        peak, last, still_since = before, -1, time.monotonic()
        while not progress["done"]:
            peak = max(peak, rss_kib(worker))
            if progress["written"] != last:
                last, still_since = progress["written"], time.monotonic()
            elif time.monotonic() - still_since > 1.0:
                break
            time.sleep(0.05)
        peak = max(peak, rss_kib(worker))
        return {"before_kib": before, "peak_kib": peak, "growth_kib": peak - before,
                "client_wrote_everything": progress["done"],
                "written_mb": round(progress["written"] / 1e6, 1)}
    finally:
        hostbench.stop(master, group=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    hostbench.add_build_options(parser, "libecho.so")
    parser.add_argument("--requests", type=int, default=16384)
    parser.add_argument("--pad", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    host, app = hostbench.build_paths(args, "libecho.so")
    rounds = [one_round(host, app, args.requests, args.pad) for _ in range(args.rounds)]
    print(json.dumps({"host": str(host), "rounds": rounds,
                      "max_growth_kib": max(r["growth_kib"] for r in rounds)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
