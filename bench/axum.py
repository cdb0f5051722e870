#!/usr/bin/env python3
"""host serving an axum Router against the same Router on `axum::serve`.

    python3 bench/axum.py                # builds release, 5 rounds of 5 s
    python3 bench/axum.py --smoke        # seconds, to check it runs

The axum example app (`example-apps/axum-app`, exported through app-sdk's
`tower` bridge) is served two ways, each pinned to one CPU with wrk on the
other, as bench/run.py does:

- host:       `host -w 1 libaxum_app.so` (one worker, one handler thread)
- axum-serve: `bench/axum-serve`, the same `axum_app::router()` on
              `axum::serve` with a tokio current-thread runtime: what an
              axum author runs on one core

and measured in keep-alive and `Connection: close` modes (`wrk -t1 -c32`),
in interleaved rounds, on two routes: `/` (a handler whose future is ready
at once: the host bridge polls it once and never enters the runtime) and
`/yield` (pending once, so host's bridge goes through `block_on`). Reported:
the median over rounds of requests/s and server CPU time per request (every
thread of every process of the server, from /proc/*/task/*/schedstat), and
host's CPU against axum-serve's as the median of the rounds' ratios. Only
loopback addresses are used; nothing is checked against a target.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from hostbench import ROOT, free_port
from run import Server, cpu_ns, median, run_wrk

MODES = ["keep-alive", "close"]
PATHS = ["/", "/yield"]


def measure(server, path, mode, seconds, wrk_cpu):
    """One wrk run against `server`'s `path`; adds CPU µs per request."""
    pids = server.pids()
    before = cpu_ns(pids)
    result = run_wrk(f"http://127.0.0.1:{server.port}{path}", seconds, wrk_cpu, mode)
    used = cpu_ns(pids) - before
    result["cpu_us_per_req"] = used / 1000 / result["requests"] if result["requests"] else None
    result.update(server=server.name, path=path, mode=mode)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--smoke", action="store_true", help="1 round of 1 s")
    parser.add_argument("--no-build", action="store_true", help="use the existing build")
    parser.add_argument("--profile", default="release", help="cargo profile to build and run")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--wrk-cpu", type=int, default=1)
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rounds = 1, 1
    if not args.no_build:
        subprocess.run(["cargo", "build", "--profile", args.profile, "-p", "host", "-p", "axum-app",
                        "-p", "axum-serve"], cwd=ROOT, check=True)
    target = ROOT / "target" / ("debug" if args.profile == "dev" else args.profile)
    for path in ("host", "libaxum_app.so", "axum-serve"):
        if not (target / path).exists():
            sys.exit(f"{target / path} is missing: run without --no-build")

    workdir = Path(tempfile.mkdtemp(prefix="axum-bench-"))
    port_h, port_a = free_port(), free_port()
    servers = [
        Server("host", [str(target / "host"), "-w", "1", "-b", f"127.0.0.1:{port_h}",
                        str(target / "libaxum_app.so")], port_h, args.server_cpu, workdir),
        Server("axum-serve", [str(target / "axum-serve"), f"127.0.0.1:{port_a}"],
               port_a, args.server_cpu, workdir),
    ]
    results = []
    try:
        for server in servers:
            server.start()
        for rnd in range(args.rounds):
            for path in PATHS:
                for mode in MODES:
                    for server in servers:
                        r = measure(server, path, mode, args.seconds, args.wrk_cpu)
                        r["round"] = rnd
                        results.append(r)
                        print(f"round {rnd + 1}/{args.rounds} {server.name:10} {path:7} {mode:10} "
                              f"{r['rps']:>10,.0f} req/s {r['cpu_us_per_req'] or 0:7.2f} µs CPU/req "
                              f"errors {r['errors']} non-2xx {r['non2xx']}", file=sys.stderr)
    finally:
        for server in servers:
            server.stop()

    base = {(r["path"], r["mode"], r["round"]): r["cpu_us_per_req"]
            for r in results if r["server"] == "axum-serve"}
    print(f"`python3 bench/axum.py --seconds {args.seconds} --rounds {args.rounds}`: servers on CPU "
          f"{args.server_cpu}, `wrk -t1 -c32 -d{args.seconds}s` on CPU {args.wrk_cpu}, "
          f"{args.rounds} interleaved round(s), medians.\n")
    print("| path | mode | server | req/s | CPU µs/req | CPU vs axum-serve | errors |")
    print("|---|---|---|---|---|---|---|")
    for path in PATHS:
        for mode in MODES:
            for server in servers:
                runs = [r for r in results if (r["server"], r["path"], r["mode"]) == (server.name, path, mode)]
                ratio = median([r["cpu_us_per_req"] / base[(path, mode, r["round"])]
                                for r in runs if r["cpu_us_per_req"] and base.get((path, mode, r["round"]))])
                rps = median([r["rps"] for r in runs])
                cpu = median([r["cpu_us_per_req"] for r in runs])
                errors = sum(r["errors"] + r["non2xx"] for r in runs)
                print(f"| `{path}` | {mode} | {server.name} | {rps:,.0f} | {cpu:.2f} | {ratio:.2f}× | {errors} |")


if __name__ == "__main__":
    main()
