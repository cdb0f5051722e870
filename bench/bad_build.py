#!/usr/bin/env python3
"""The pool's size through a bad build (issue 14, item 4).

    python3 bench/bad_build.py                       # target/debug/host
    python3 bench/bad_build.py --host /path/to/older/host

Starts `host -w 4` on the `hello` app (a copy in a scratch directory), then
deploys a build that passes its probe but whose workers fail in `init`
(the `crash` app with `CRASH_INIT_FAIL=<file>`, the file present) and sends
HUP. It then kills the four workers of the old build, one every
`--kill-every` seconds (SIGKILL, as a crash or an OOM kill would), and for
`--seconds` samples `/status.json` and `/ready` on the metrics endpoint
every 20 ms. It prints the fewest workers serving (idle or busy) in any
sample, how many samples had none, and how many of those `/ready` still
answered 200 to. (The old workers have served for more than 5 s when they
are killed: young workers dying one after another would be a crash loop,
which the host paces on purpose.)

`--host` runs another build of the host (an older one, to compare) with the
same apps (`target/debug/lib{hello,crash}.so`, from `cargo build --workspace`).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hostbench
from hostbench import ROOT, free_port


def get(port, path):
    """(status, body) of GET `path`, or (0, '') if nothing answers."""
    reply = hostbench.get(port, path, timeout=2)
    return reply.status or 0, hostbench.text(reply)


def install(src, dest):
    tmp = dest.with_suffix(".tmp")
    shutil.copy(src, tmp)
    os.rename(tmp, dest)


def serving(status):
    return [w for w in status.get("workers", []) if w["state"] in ("idle", "busy")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--kill-every", type=float, default=1.0)
    ap.add_argument("--host", default=str(ROOT / "target/debug/host"))
    args = ap.parse_args()
    libs = {n: ROOT / f"target/debug/lib{n}.so" for n in ("hello", "crash")}
    hostbench.require_built(args.host, *libs.values())
    with tempfile.TemporaryDirectory() as tmp:
        app, flag = Path(tmp) / "app.so", Path(tmp) / "fail-init"
        install(libs["hello"], app)
        flag.write_text("")
        mport = free_port()
        proc = subprocess.Popen(
            [args.host, "-w", "4", "-b", f"127.0.0.1:{free_port()}",
             "--metrics-bind", f"127.0.0.1:{mport}", f"{app}:app"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, CRASH_INIT_FAIL=str(flag)))
        try:
            deadline = time.monotonic() + 30
            while len(serving(json.loads(get(mport, "/status.json")[1] or "{}"))) < 4:
                if time.monotonic() > deadline:
                    sys.exit("the host did not start 4 workers")
                time.sleep(0.05)
            old = [w["pid"] for w in serving(json.loads(get(mport, "/status.json")[1]))]
            time.sleep(6)  # the old workers have served a while (not early deaths)
            install(libs["crash"], app)
            proc.send_signal(signal.SIGHUP)
            samples, empty, ready_when_empty, kills = 0, 0, 0, 0
            fewest = 4
            start = time.monotonic()
            next_kill = start + args.kill_every
            while time.monotonic() - start < args.seconds:
                status, body = get(mport, "/status.json")
                if status == 200:
                    workers = serving(json.loads(body))
                    samples += 1
                    fewest = min(fewest, len(workers))
                    if not workers:
                        empty += 1
                        if get(mport, "/ready")[0] == 200:
                            ready_when_empty += 1
                    if time.monotonic() >= next_kill and old:
                        try:
                            os.kill(old.pop(), signal.SIGKILL)
                            kills += 1
                        except ProcessLookupError:
                            pass
                        next_kill += args.kill_every
                time.sleep(0.02)
            final = json.loads(get(mport, "/status.json")[1] or "{}")
        finally:
            hostbench.stop(proc)
    print(f"host: {args.host}")
    print(f"-w 4, bad build deployed, {kills} old workers killed, sampled for {args.seconds:.0f} s")
    print(f"samples: {samples}; fewest serving: {fewest}; samples with none serving: {empty} "
          f"(/ready said 200 in {ready_when_empty} of them)")
    print(f"at the end: generation {final.get('generation')}, "
          f"{len(serving(final))} serving, abandoned builds {final.get('abandoned_builds', 'n/a')}")


if __name__ == "__main__":
    main()
