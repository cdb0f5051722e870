#!/usr/bin/env python3
"""Chaos run: load the real `host` while reloading, resizing and killing its workers.

Starts `host` with the `echo` example app (which answers with the pid of the
worker that served it), runs client threads that send requests over keep-alive
connections, and meanwhile sends the master HUP, TTIN and TTOU, SIGKILLs
random workers, and through `host ctl` deploys good and broken builds, rolls
back and upgrades the host binary (a new master takes the sockets over). At the end it reports how many requests succeeded and failed,
and which failures were unavoidable: a request in flight on a connection held
by a worker that was killed. Every other failure is a bug; the script exits 1
if there was one.

    cargo build --release --workspace
    python3 tests/chaos.py --seconds 30 --workers 4 --clients 8
    python3 tests/chaos.py --actions hup,kill,deploy,deploy-bad,rollback,upgrade

Only loopback addresses are used, and the run stops by itself.
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# hup, ttin, ttou: signals to the master; kill: SIGKILL a random worker;
# deploy: `host ctl deploy` the other good build, from a new path;
# deploy-bad: `host ctl deploy --wait` a file that is not a library (refused);
# rollback: `host ctl rollback`; upgrade: `host ctl upgrade` (USR2).
ALL_ACTIONS = ("hup", "ttin", "ttou", "kill", "deploy", "deploy-bad", "rollback", "upgrade")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="release", help="cargo profile to take host from")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the run")
    p.add_argument("--workers", type=int, default=4, help="initial worker count")
    p.add_argument("--clients", type=int, default=8, help="client threads")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between chaos actions")
    p.add_argument("--seed", type=int, default=None, help="random seed (for a repeatable run)")
    p.add_argument("--actions", default="hup,ttin,ttou,kill",
                   help="comma-separated actions to draw from: " + ", ".join(ALL_ACTIONS))
    p.add_argument("--swap-builds", action="store_true",
                   help="before each HUP, install the other of two builds (echo, hello) "
                        "in the served path, so every reload changes the code")
    p.add_argument(
        "--kill-grace",
        type=float,
        default=2.0,
        help="seconds after a kill in which a failure on a new connection counts as unavoidable",
    )
    return p.parse_args()


class Host:
    """The host process, its address, and its workers."""

    def __init__(self, profile, workers):
        target = os.path.join(ROOT, "target", profile)
        binary = os.path.join(target, "host")
        self.builds = [os.path.join(target, "libecho.so"), os.path.join(target, "libhello.so")]
        self.swaps = 0
        self.tmp = tempfile.mkdtemp(prefix="host-chaos-")
        app = os.path.join(self.tmp, "libapp.so")
        for path in [binary] + self.builds:
            if not os.path.exists(path):
                sys.exit(f"{path} is missing: run `cargo build --{profile} --workspace` first"
                         if profile == "release" else f"{path} is missing: run cargo build first")
        self.app = app
        self.binary = binary
        self.control = os.path.join(self.tmp, "control.sock")
        self.pid_file = os.path.join(self.tmp, "host.pid")
        self.deploys = 0
        self.install(self.builds[0])
        self.log_lines = []
        # stdout and stderr are the same pipe: a new master of an upgrade
        # inherits it, so its lines arrive here too.
        self.proc = subprocess.Popen(
            [binary, "-w", str(workers), "-b", "127.0.0.1:0", "--graceful-timeout", "10",
             "--control", self.control, "--pid", self.pid_file, app + ":app"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )
        self.port = None
        ready = threading.Event()

        def read_log():
            for line in self.proc.stderr:
                self.log_lines.append(line.rstrip("\n"))
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    ready.set()

        threading.Thread(target=read_log, daemon=True).start()
        if not ready.wait(30):
            self.proc.kill()
            sys.exit("host did not start:\n" + "\n".join(self.log_lines))

    def install(self, build):
        """Puts `build` at the served path the safe way: copy beside it, rename."""
        tmp = self.app + ".tmp"
        shutil.copyfile(build, tmp)
        os.replace(tmp, self.app)

    def swap_build(self):
        self.swaps += 1
        self.install(self.builds[self.swaps % 2])

    def master(self):
        """The master's pid: after an upgrade, the new master's (its pid file)."""
        try:
            with open(self.pid_file) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return self.proc.pid

    def signal(self, sig):
        try:
            os.kill(self.master(), sig)
        except ProcessLookupError:
            pass

    def ctl(self, *args):
        """Runs `host ctl --control SOCKET ARGS`; its exit code and last output line."""
        out = subprocess.run([self.binary, "ctl", "--control", self.control, *args],
                             capture_output=True, text=True, timeout=300)
        lines = (out.stdout + out.stderr).strip().splitlines()
        return out.returncode, lines[-1] if lines else ""

    def next_deploy_path(self, good=True):
        """A new file to deploy: the other good build, or a file that is not a library."""
        self.deploys += 1
        path = os.path.join(self.tmp, f"deploy-{self.deploys}.so")
        if good:
            shutil.copyfile(self.builds[self.deploys % 2], path)
        else:
            with open(path, "wb") as f:
                f.write(b"not a library " + str(self.deploys).encode())
        return path

    def workers(self):
        """Pids of the master's children (workers, and now and then a probe)."""
        try:
            out = subprocess.run(["pgrep", "-P", str(self.master())], capture_output=True,
                                 text=True).stdout
        except FileNotFoundError:
            return []
        return [int(p) for p in out.split()]

    def stop(self):
        """TERMs the master (whichever it is by now); 0 once it is gone, None if it lingers."""
        master = self.master()
        try:
            os.kill(master, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if master == self.proc.pid:
                    if self.proc.poll() is not None:
                        return self.proc.returncode
                else:
                    try:
                        os.kill(master, 0)
                    except ProcessLookupError:
                        return 0
                time.sleep(0.05)
            os.kill(master, signal.SIGKILL)
            return None
        except ProcessLookupError:
            return None
        finally:
            if self.proc.poll() is None:
                self.proc.wait(30)
            shutil.rmtree(self.tmp, ignore_errors=True)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.unavoidable = 0
        self.failures = []  # (seconds taken, error, pid of the connection's worker)
        self.killed = {}  # pid -> time killed

    def record_ok(self):
        with self.lock:
            self.ok += 1

    def record_failure(self, err, pid, started):
        """Counts a failed request, unavoidable if its worker was killed."""
        now = time.monotonic()
        with self.lock:
            if pid is not None and pid in self.killed:
                self.unavoidable += 1
            elif pid is None and any(now - t <= ARGS.kill_grace for t in self.killed.values()):
                # A new connection accepted by a worker that was then killed.
                self.unavoidable += 1
            else:
                self.failures.append((now - started, repr(err), pid))


def client(host, stats, stop_at, index):
    conn = None
    pid = None
    i = 0
    while time.monotonic() < stop_at:
        i += 1
        started = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=15)
                pid = None
            conn.request("GET", f"/chaos/{index}/{i}")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"status {resp.status}")
            # The echo build names its worker; the hello build does not.
            pid = json.loads(body)["pid"] if body.startswith(b"{") else pid
            stats.record_ok()
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException, RuntimeError, ValueError, KeyError) as err:
            # A keep-alive connection the server closed between requests is not
            # a failed request: clients retry those (RFC 9112 9.3.1), but only
            # when nothing of the response arrived.
            if isinstance(err, (http.client.RemoteDisconnected, ConnectionResetError,
                                BrokenPipeError)) and pid is not None and pid not in stats.killed:
                conn.close()
                conn = None
                continue
            stats.record_failure(err, pid, started)
            if conn is not None:
                conn.close()
            conn = None


def ctl_in_background(host, outcomes, action, *args):
    """Runs `host ctl ARGS` in a thread; records (action, exit code, last line)."""
    def run():
        code, line = host.ctl(*args)
        with outcomes_lock:
            outcomes.append((action, code, line))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


outcomes_lock = threading.Lock()


def chaos(host, stats, stop_at, rng, counts, initial, outcomes, waits):
    target = initial
    while time.monotonic() < stop_at:
        time.sleep(ARGS.interval)
        action = rng.choice(ACTIONS)
        if action == "hup":
            if ARGS.swap_builds:
                host.swap_build()
            host.signal(signal.SIGHUP)
        elif action == "ttin" and target < initial * 2:
            host.signal(signal.SIGTTIN)
            target += 1
        elif action == "ttou" and target > 1:
            host.signal(signal.SIGTTOU)
            target -= 1
        elif action == "deploy":
            waits.append(ctl_in_background(host, outcomes, action, "deploy",
                                           host.next_deploy_path(), "--wait"))
        elif action == "deploy-bad":
            waits.append(ctl_in_background(host, outcomes, action, "deploy",
                                           host.next_deploy_path(good=False), "--wait"))
        elif action == "rollback":
            waits.append(ctl_in_background(host, outcomes, action, "rollback"))
        elif action == "upgrade":
            # One at a time: the answer comes once the new master took over.
            code, line = host.ctl("upgrade", "--wait")
            with outcomes_lock:
                outcomes.append((action, code, line))
        elif action == "kill":
            pids = host.workers()
            if not pids:
                continue
            victim = rng.choice(pids)
            with stats.lock:
                stats.killed[victim] = time.monotonic()
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                continue
        else:
            continue
        counts[action] = counts.get(action, 0) + 1


def main():
    seed = ARGS.seed if ARGS.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    host = Host(ARGS.profile, ARGS.workers)
    stats = Stats()
    counts = {}
    outcomes, waits = [], []
    stop_at = time.monotonic() + ARGS.seconds
    threads = [threading.Thread(target=client, args=(host, stats, stop_at, i))
               for i in range(ARGS.clients)]
    threads.append(threading.Thread(
        target=chaos, args=(host, stats, stop_at, rng, counts, ARGS.workers, outcomes, waits)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in waits:
        t.join(120)
    code = host.stop()
    total = stats.ok + stats.unavoidable + len(stats.failures)
    print(f"chaos run: {ARGS.seconds:.0f} s, {ARGS.workers} workers, {ARGS.clients} clients, seed {seed}")
    print("actions: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"requests: {total}, ok: {stats.ok}, failed: {stats.unavoidable + len(stats.failures)} "
          f"(unavoidable, held by a killed worker: {stats.unavoidable}; other: {len(stats.failures)})")
    print(f"host exit status after TERM: {code}")
    bad_outcomes = []
    if outcomes:
        summary = {}
        for action, status, line in outcomes:
            summary.setdefault(action, {}).setdefault(status, 0)
            summary[action][status] += 1
            # A broken build is always refused; an upgrade always completes.
            if (action == "deploy-bad" and status != 6) or (action == "upgrade" and status != 0):
                bad_outcomes.append((action, status, line))
        print("host ctl exit codes: " + "; ".join(
            f"{a} " + ", ".join(f"{c}: {n}" for c, n in sorted(codes.items()))
            for a, codes in sorted(summary.items())))
    for action, status, line in bad_outcomes[:10]:
        print(f"  unexpected: {action} exited {status}: {line}")
    rollouts = [int(m.group(1)) for m in
                (re.search(r"complete: .* (\d+) ms after it began", l) for l in host.log_lines)
                if m]
    refused = sum("refused" in l for l in host.log_lines)
    if rollouts:
        rollouts.sort()
        print(f"reloads completed: {len(rollouts)}, HUP to whole pool on the new build: "
              f"median {rollouts[len(rollouts) // 2]} ms, max {rollouts[-1]} ms; builds refused: {refused}")
    for took, err, pid in stats.failures[:20]:
        print(f"  failure after {took:.2f} s: {err} (worker pid {pid})")
    if stats.failures or code != 0 or bad_outcomes:
        print("--- host log (last 40 lines) ---")
        print("\n".join(host.log_lines[-40:]))
        return 1
    return 0


if __name__ == "__main__":
    ARGS = parse_args()
    ACTIONS = [a for a in ARGS.actions.split(",") if a]
    if not ACTIONS or any(a not in ALL_ACTIONS for a in ACTIONS):
        sys.exit("--actions takes a comma-separated list of " + ", ".join(ALL_ACTIONS))
    sys.exit(main())
