#!/usr/bin/env python3
"""Canary rollouts under load: how fast a bad build is rolled back, how much it served.

    cargo build --release -p host -p flaky
    python3 bench/rollout.py                 # target/release (else debug)
    python3 bench/rollout.py --interval 5 --window 10 --latency-ms 5

Starts `host -w 4 --rollout canary` on a build of the `flaky` example app
(each build's behaviour is a trailer line appended to a copy of
`libflaky.so`, as `tests/support`'s `flaky_build` does), under `wrk` load
with `Connection: close` (so every request goes through the one accept
queue the workers share, and the canary gets the share the kernel gives
it). Then it deploys, one after another (copy beside, rename over, HUP):

- a build answering 30% of requests with 500,
- a build whose worker aborts on 5% of requests,
- a build 3x slower (the baseline waits `--latency-ms` per request),
- a good build,

and reports for each: the seconds from the HUP to the rollback (or, for the
good build, to its rollout's completion), the requests the new build
answered (from `/metrics`' per-generation series), its crashes, and the
share of requests each generation served during the canary (from the
host's log line). Nothing is checked against a target: the script measures.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hostbench
from hostbench import free_port

# (name, errors, latency factor, crash): the deploys, in order.
DEPLOYS = [
    ("30% 500s", 0.3, 1, 0.0),
    ("5% crashes", 0.0, 1, 0.05),
    ("3x slower", 0.0, 3, 0.0),
    ("good", 0.0, 1, 0.0),
]


def flaky_build(lib, dest, errors, latency_ms, crash, label):
    """A copy of `lib` with the trailer line the `flaky` app reads (`label` makes the bytes unique)."""
    data = Path(lib).read_bytes()
    trailer = f"\nFLAKY errors={errors} latency_ms={latency_ms} crash={crash} build={label}\n"
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(data + trailer.encode())
    os.rename(tmp, dest)


def generation_figures(mport, generation):
    """(requests answered, crashes) of `generation`, from /metrics."""
    text = hostbench.text(hostbench.get(mport, "/metrics"))
    answered = crashes = 0
    for line in text.splitlines():
        if f'generation="{generation}"' not in line:
            continue
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith("host_generation_requests_total"):
            answered += value
        elif line.startswith("host_generation_worker_crashes_total"):
            crashes += value
    return int(answered), int(crashes)


def wait_log(log, pattern, after, timeout):
    """Waits for a log line matching `pattern` past byte `after`; (match, seconds waited)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        text = log.read_text(errors="replace")[after:]
        found = re.search(pattern, text)
        if found:
            return found, time.monotonic() - start
        time.sleep(0.02)
    return None, time.monotonic() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    hostbench.add_build_options(ap, "libflaky.so")
    ap.add_argument("--interval", type=int, default=2, help="--canary-interval, seconds")
    ap.add_argument("--window", type=int, default=6, help="--canary-window, seconds")
    ap.add_argument("--min-requests", type=int, default=50, help="--canary-min-requests")
    ap.add_argument("--latency-ms", type=int, default=20, help="the baseline's latency per request")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections")
    ap.add_argument("--timeout", type=float, default=120.0, help="longest wait per deploy, seconds")
    args = ap.parse_args()
    host, lib = hostbench.build_paths(args, "libflaky.so")
    hostbench.require_built(host, lib)
    if not shutil.which("wrk"):
        sys.exit("this script needs wrk")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        app, log = tmp / "libflaky.so", tmp / "host.log"
        flaky_build(lib, app, 0.0, args.latency_ms, 0.0, "baseline")
        port, mport = free_port(), free_port()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(host), "-w", "4", "-b", f"127.0.0.1:{port}", "--rollout", "canary",
                 "--canary-interval", str(args.interval), "--canary-window", str(args.window),
                 "--canary-min-requests", str(args.min_requests),
                 "--metrics-bind", f"127.0.0.1:{mport}", f"{app}:app"],
                stdout=out, stderr=subprocess.STDOUT)
        wrk = None
        try:
            if not wait_log(log, r"generation 1 complete", 0, 30)[0]:
                sys.exit(f"the host did not start:\n{log.read_text()}")
            wrk = subprocess.Popen(
                ["wrk", "-t1", f"-c{args.connections}", "-d", "3600s", "-H", "Connection: close",
                 f"http://127.0.0.1:{port}/"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2)  # the baseline serves a while before the first deploy
            generation = 1
            for n, (name, errors, factor, crash) in enumerate(DEPLOYS):
                generation += 1
                flaky_build(lib, app, errors, args.latency_ms * factor, crash, f"deploy-{n}")
                mark = len(log.read_bytes())
                proc.send_signal(signal.SIGHUP)
                end, seconds = wait_log(
                    log, rf"(canary failed its (?P<check>[a-z0-9 ]+) check)|"
                         rf"(generation {generation} complete)", mark, args.timeout)
                if name == "good" and end and end.group("check") is None:
                    outcome = "completed"
                elif end and end.group("check"):
                    outcome = f"rolled back ({end.group('check')})"
                else:
                    outcome = "no verdict in time"
                text = log.read_text(errors="replace")[mark:]
                share = re.search(r"generation \d+ served ([\d.]+)% of requests \((\d+)\), "
                                  r"older generations ([\d.]+)%", text)
                time.sleep(1)  # the rolled-back workers' counts reach /metrics when reaped
                answered, crashes = generation_figures(mport, generation)
                results.append((name, outcome, seconds, answered, crashes,
                                f"{share.group(1)}% / {share.group(3)}%" if share else "-"))
                time.sleep(2)  # the old generation serves alone again
        finally:
            if wrk:
                wrk.terminate()
                wrk.wait()
            hostbench.stop(proc)
        lines = [l for l in log.read_text(errors="replace").splitlines() if "canary" in l]
    print(f"host: {host}; -w 4 --rollout canary --canary-interval {args.interval} "
          f"--canary-window {args.window} --canary-min-requests {args.min_requests}; "
          f"baseline {args.latency_ms} ms per request; "
          f"wrk -c{args.connections} Connection: close")
    print(f"{'deploy':<12} {'outcome':<32} {'seconds':>8} {'answered':>9} {'crashes':>8}  "
          f"served during the canary (new / old)")
    for name, outcome, seconds, answered, crashes, share in results:
        print(f"{name:<12} {outcome:<32} {seconds:>8.2f} {answered:>9} {crashes:>8}  {share}")
    print("\nthe host's canary lines:")
    for line in lines:
        print("  " + line)


if __name__ == "__main__":
    main()
