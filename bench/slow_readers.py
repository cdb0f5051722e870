#!/usr/bin/env python3
"""The next request's latency while K slow readers hold large responses.

    python3 bench/slow_readers.py                    # -w 2, K = 0 2 4 8 16, release build
    python3 bench/slow_readers.py --file             # the responses are files (sendfile)
    python3 bench/slow_readers.py --threads 2 -w 1   # a threaded worker
    python3 bench/slow_readers.py --host OTHER/host  # another build of host (e.g. before a change)

For each K it starts `host -w W --timeout 600 libstream.so:bytes`, opens K
slow readers (a 16 KiB receive buffer, so the kernel cannot absorb the
response for them) that each ask for an 8 MB response, read its head and
then nothing more, and times SAMPLES small requests (`GET /?n=13`, each on a
new connection, one after the other, for at most 35 s in all). A server
whose workers wait on the slow readers answers them only once a worker
gives up on a reader (the 30 s I/O timeout), or never within the cut-off:
those count as "stalled".
Then the slow readers all read their whole responses at once, and the
script checks every byte.

Prints one line per K: how long the slow readers' heads took (the last
one's) and how many came, then the small requests' median, 90th percentile
and worst latency, how many were measured and stalled, and how many slow
readers then got their whole, correct body.
Loopback only; the figures are wall-clock times on a shared machine, for
comparison between builds run the same way, not absolute.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import hostbench
from hostbench import ROOT

# Bytes each slow reader asks for.
SIZE = 8_000_000
# A slow reader's receive buffer (the kernel doubles it).
SLOW_RCVBUF = 16 * 1024
# How long anything may take before it counts as stalled, in seconds: past
# the host's 30 s I/O timeout.
CUT_OFF = 35.0


def start_host(host, app, workers, threads):
    argv = [str(host), "-w", str(workers), "--threads", str(threads), "--timeout", "600",
            "-b", "127.0.0.1:0", app]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)
    port, ready, deadline = None, 0, time.monotonic() + 20
    while (port is None or ready < workers) and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
        if "ready in" in line:
            ready += 1
    if port is None or ready < workers:
        stop_host(proc)
        raise SystemExit(f"error: {' '.join(argv)} did not start")
    # Keep draining its output so it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, port


def stop_host(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def slow_reader(port, query):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET /?n={SIZE}{query} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
    return s


def read_head(s, deadline):
    """Reads until the response head is in (little else); the bytes, or None past the deadline."""
    got = b""
    while b"\r\n\r\n" not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            chunk = s.recv(512)
        except socket.timeout:
            return None
        if not chunk:
            raise SystemExit("error: a slow reader was closed before its head")
        got += chunk
    return got


def small_request(port):
    """Seconds to answer GET /?n=13 on a new connection (None past the cut-off)."""
    reply = hostbench.get(port, "/?n=13", timeout=CUT_OFF)
    return reply.elapsed if reply.status == 200 else None


def finish_reader(s, got):
    """Reads the rest of a slow reader's response and checks every byte."""
    s.settimeout(CUT_OFF)
    head_end = got.index(b"\r\n\r\n") + 4
    body = bytearray(got[head_end:])
    while len(body) < SIZE:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        body += chunk
    expected = bytes(i % 251 for i in range(251)) * (SIZE // 251 + 1)
    return len(body) == SIZE and body == expected[:SIZE]


def run(host, app, workers, threads, readers, samples, query):
    proc, port = start_host(host, app, workers, threads)
    try:
        slow = [slow_reader(port, query) for _ in range(readers)]
        started = time.monotonic()
        heads = [read_head(s, started + CUT_OFF) for s in slow]
        head_wait = time.monotonic() - started
        # One after the other, until SAMPLES or until they have taken the
        # cut-off in all (a stalled server would otherwise take minutes).
        times, sampling = [], time.monotonic()
        while len(times) < samples and time.monotonic() - sampling < CUT_OFF:
            times.append(small_request(port))
        # The readers then read at once, as independent clients would.
        results = [False] * readers

        def finish(i):
            results[i] = heads[i] is not None and finish_reader(slow[i], heads[i])

        finishing = [threading.Thread(target=finish, args=(i,)) for i in range(readers)]
        for t in finishing:
            t.start()
        for t in finishing:
            t.join()
        complete = sum(results)
        for s in slow:
            s.close()
        return head_wait, sum(h is not None for h in heads), times, complete
    finally:
        stop_host(proc)


def fmt(seconds):
    if seconds is None:
        return f"> {CUT_OFF:.0f} s"
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.1f} s"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", type=Path, default=ROOT / "target" / "release" / "host")
    p.add_argument("--app", type=Path, default=ROOT / "target" / "release" / "libstream.so",
                   help="the library exporting `bytes` (the stream example)")
    p.add_argument("-w", "--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--readers", type=int, nargs="+", default=[0, 2, 4, 8, 16])
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--file", action="store_true", help="file bodies (sendfile)")
    args = p.parse_args()
    for path in (args.host, args.app):
        if not path.exists():
            sys.exit(f"error: {path} is missing: run `cargo build --release --workspace`")
    query = "&file=1" if args.file else ""
    print(f"# {args.host} -w {args.workers} --threads {args.threads} {args.app.name}:bytes; "
          f"{SIZE} B {'file' if args.file else 'buffered'} responses; {args.samples} small "
          f"requests per line")
    print(f"{'K':>3}  {'heads in':>9}  {'heads':>5}  {'p50':>9}  {'p90':>9}  {'max':>9}  "
          f"{'sampled':>7}  {'stalled':>7}  bodies ok")
    for k in args.readers:
        head_wait, heads, times, complete = run(args.host, f"{args.app}:bytes", args.workers,
                                                args.threads, k, args.samples, query)
        answered = sorted(t for t in times if t is not None)
        stalled = len(times) - len(answered)
        # Stalled requests sort last: quantiles over every sample.
        ranked = answered + [None] * stalled

        def q(frac):
            return ranked[min(len(ranked) - 1, int(frac * len(ranked)))] if ranked else None

        print(f"{k:>3}  {fmt(head_wait):>9}  {heads:>5}  {fmt(q(0.5)):>9}  {fmt(q(0.9)):>9}  "
              f"{fmt(ranked[-1] if ranked else None):>9}  {len(times):>7}  {stalled:>7}  "
              f"{complete}/{k}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
