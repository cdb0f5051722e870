#!/usr/bin/env python3
"""Worker starts per minute in a crash loop after boot (issue 14, item 5).

    python3 bench/crash_loop.py                      # 15 s, target/debug/host
    python3 bench/crash_loop.py --seconds 20 --host /path/to/older/host

Runs `host -w 2` on the `crash` example app with `CRASH_AFTER_BOOT_MS=20`
(every worker aborts 20 ms after its init returned), for `--seconds`, then
reads the master's own count of forked workers from `/metrics`
(`host_worker_spawns_total`) and prints it with the figure extrapolated to
a minute, the log lines and bytes the run wrote, and the master's CPU time.
With the restart back-off the starts come in a few bursts (the pause grows
from 100 ms to 30 s), so a longer run extrapolates to fewer per minute: the
back-off caps a steady loop at 2 starts per 30 s per pool.

`--host` runs another build of the host (an older one, to compare) with the
same app (`target/debug/libcrash.so`, built by `cargo build --workspace`).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import hostbench
from hostbench import ROOT, cpu_seconds, free_port


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--host", default=str(ROOT / "target/debug/host"))
    ap.add_argument("--after-boot-ms", default="20")
    args = ap.parse_args()
    app = ROOT / "target/debug/libcrash.so"
    hostbench.require_built(args.host, app)
    mport = free_port()
    env = dict(os.environ, CRASH_AFTER_BOOT_MS=args.after_boot_ms)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [args.host, "-w", "2", "-b", f"127.0.0.1:{free_port()}",
             "--metrics-bind", f"127.0.0.1:{mport}", f"{app}:app"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            time.sleep(args.seconds)  # the measured window (not a synchronisation)
            text = hostbench.text(hostbench.get(mport, "/metrics", timeout=5))
            cpu = cpu_seconds(proc.pid)
            alive = proc.poll() is None
        finally:
            hostbench.stop(proc)
        log.seek(0)
        lines = log.read().decode(errors="replace").splitlines()
    spawns = hostbench.metric(text, "host_worker_spawns_total")
    if spawns is None:
        sys.exit("no host_worker_spawns_total in /metrics: did the host start?")
    per_minute = spawns * 60.0 / args.seconds
    loop_lines = sum("crash-looping" in l for l in lines)
    print(f"host: {args.host}")
    print(f"window: {args.seconds:.0f} s, -w 2, CRASH_AFTER_BOOT_MS={args.after_boot_ms}")
    print(f"worker starts: {spawns:.0f} ({per_minute:,.0f} per minute extrapolated)")
    print(f"log: {len(lines)} lines, {sum(len(l) + 1 for l in lines):,} bytes; "
          f"{loop_lines} crash-loop lines")
    print(f"master CPU: {cpu:.2f} s; master still running: {alive}")


if __name__ == "__main__":
    main()
