#!/usr/bin/env python3
"""WebSocket benchmark: idle connections' cost, and echo round trips against Gunicorn's ASGI worker.

    python3 bench/websocket.py            # release build; 3 rounds of 5 s; about 7 minutes
    python3 bench/websocket.py --smoke --no-build --profile dev --out /tmp/ws   # seconds; what CI runs

Issue 18's two figures, measured and never asserted:

1. idle: `host -w 2 libchat.so:app` holding 10,000 idle WebSocket
   connections (`/echo`). Memory per connection: the workers' resident
   memory (RssAnon and VmRSS of /proc/PID/status, summed over workers) with
   them open, minus before they opened, over their number; beside it the
   kernel's TCP memory (/proc/net/sockstat `mem`, both ends of each loopback
   connection). And an ordinary HTTP request's latency while they are open:
   `wrk -t1 -c4 GET /` (the chat page) with none open, with 10,000 idle
   WebSocket connections, and with 10,000 idle keep-alive HTTP connections
   (each sent one `GET /nope` and read its answer). Each state gets a fresh
   host (so one state's freed memory does not make the next one's look
   cheaper), which serves 1 s of wrk before anything is measured. The host
   runs with `--worker-connections` above the count, `--keep-alive 3600`
   (else the idle HTTP connections close after 5 s), and the default
   `--websocket-ping-interval` (20 s): the holder answers pings, and the
   report says how many it saw and whether the server closed any (a state
   lasts less than 20 s, so none come unless `--ping-interval` is lower).
   One more state, host only, pings them all the time: `ws-ping`, with
   `--websocket-ping-interval 2` (about 5,000 pings a second).
   The same states are measured on Gunicorn's ASGI worker (bench/echo_asgi.py,
   `--worker-connections` and `--keep-alive` raised alike), for scale.
2. echo: 100 clients, each sending a 16-byte text message to `/echo`,
   waiting for the echo and sending the next: round trips per second, p50
   and p99 (send to echo), and the server's CPU per round trip (every
   thread of every process, /proc/PID/task/TID/schedstat, as bench/run.py).
   host serves `libchat.so:app`; Gunicorn 27's ASGI worker
   (`gunicorn -k asgi`, asyncio, or uvloop if installed) serves
   bench/echo_asgi.py, with the same worker counts (-w 1 and -w 2), in
   interleaved rounds so a noisy moment hits both alike.

Servers are pinned to one CPU with `taskset` and the clients to the other
(bench/run.py's convention). The client is `ws-load` (bench/ws-load, built
with the workspace): one thread, one epoll loop, hand-written framing, so it
costs less per round trip than the servers it drives (its doc says why a
Python client would not do). Idle connections come from 8 loopback source
addresses (127.0.0.2-9), so ephemeral ports and TIME_WAIT never run out; the
script raises its open-files limit (inherited by servers and clients) to fit.
Only loopback addresses are used. Results: results.md and results.json in
--out (docs/bench/websocket by default).
"""

import argparse
import json
import os
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hostbench import ROOT, free_port
from run import Server, cpu_ns, median, process_tree, run_meta, run_wrk

BENCH = ROOT / "bench"
# Idle WebSocket (and keep-alive HTTP) connections of the idle part.
IDLE_CONNECTIONS = 10_000
# Workers of the idle part.
IDLE_WORKERS = 2
# wrk connections measuring HTTP latency in the idle part: a few, as ordinary traffic.
LATENCY_CONNECTIONS = 4
# Loopback source addresses the idle connections come from (8: 8 × 28k ports).
IDLE_SOURCES = [f"127.0.0.{n}" for n in range(2, 10)]
# Clients of the echo part.
ECHO_CLIENTS = 100
# Bytes of each echo message.
MESSAGE_SIZE = 16
# The idle states, in the order measured: what is held open while wrk runs
# (ws-ping: WebSocket connections pinged every PING_STATE_INTERVAL; host only).
STATES = ["none", "ws", "ws-ping", "http"]
# host's --websocket-ping-interval in the ws-ping state, in seconds: the
# connections open within a few seconds, so this is about N / 2 pings a
# second (10x what 10,000 connections opened at random times would get at
# the default 20 s).
PING_STATE_INTERVAL = 2
# How long the holder gets to open its connections, in seconds.
OPEN_TIMEOUT = 300.0
# How long the holder gets to report and exit after its stdin closes, in seconds.
HOLDER_EXIT_TIMEOUT = 60.0
# Descriptors the script keeps beyond the connections it opens (clients, pipes, files).
FD_HEADROOM = 4096
# Length of the warm-up runs (wrk before the idle part's measurements; echo before the rounds), in seconds.
WARMUP_SECONDS = 1


def raise_open_files(connections):
    """Raises this process's open-files limit (inherited by the servers and clients) to fit
    `connections` plus headroom; returns the soft limit in force."""
    want = connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        # Not root: as far as the hard limit goes.
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def status_kb(pid, field):
    """A `field:` of /proc/PID/status in kB (VmRSS, RssAnon), or 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def tcp_mem_pages():
    """The kernel's TCP buffer memory in pages (/proc/net/sockstat `TCP: ... mem N`)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1])
    return 0


def memory(server):
    """The server's workers' memory now: summed RssAnon and VmRSS (kB), descriptors, kernel TCP pages."""
    workers = server.pids()[1:]
    return {
        "rss_anon_kb": sum(status_kb(p, "RssAnon") for p in workers),
        "vm_rss_kb": sum(status_kb(p, "VmRSS") for p in workers),
        "fds": sum(open_fds(p) for p in workers),
        "tcp_mem_pages": tcp_mem_pages(),
        "workers": len(workers),
    }


class Holder:
    """`ws-load hold`: `connections` idle connections of `kind` (ws or http) until stopped."""

    def __init__(self, client, port, kind, connections, cpu):
        path = "/echo" if kind == "ws" else "/nope"
        argv = ["taskset", "-c", str(cpu), str(client), "hold", "--addr", f"127.0.0.1:{port}",
                "--path", path, "--kind", kind, "--connections", str(connections),
                "--sources", ",".join(IDLE_SOURCES)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + OPEN_TIMEOUT
        line = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                line = self.proc.stdout.readline()
                break
            if self.proc.poll() is not None:
                break
        if not line.startswith("ready "):
            self.proc.kill()
            _, err = self.proc.communicate()
            raise SystemExit(f"error: ws-load hold did not open its connections: {line!r} {err.strip()}")
        self.opened = int(line.split()[1])

    def stop(self):
        """Closes the connections; returns the holder's report (pings seen, closed by the server)."""
        try:
            out, err = self.proc.communicate(input="", timeout=HOLDER_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise SystemExit(f"error: ws-load hold reported nothing: {err.strip()}") from None


def idle_state(args, target, client, kind, state, workdir, server_cpu, client_cpu):
    """One idle-part measurement of `state` (none, ws, http) on a fresh server of `kind`."""
    port = free_port()
    ping_interval = PING_STATE_INTERVAL if state == "ws-ping" else args.ping_interval
    if kind == "host":
        argv = [str(target / "host"), "-w", str(IDLE_WORKERS), "-b", f"127.0.0.1:{port}",
                "--worker-connections", str(args.idle_connections + 1024), "--keep-alive", "3600",
                "--websocket-ping-interval", str(ping_interval), f"{target / 'libchat.so'}:app"]
    else:
        argv = gunicorn_argv(IDLE_WORKERS, port) + [
            "--worker-connections", str(args.idle_connections + 1024), "--keep-alive", "3600"]
    server = Server(f"{kind}-idle-{state}", argv, port, server_cpu, workdir)
    server.start()
    holder = None
    try:
        url = f"http://127.0.0.1:{port}/"
        run_wrk(url, WARMUP_SECONDS, client_cpu, "keep-alive", connections=LATENCY_CONNECTIONS)
        before = memory(server)
        if state != "none":
            holder = Holder(client, port, "http" if state == "http" else "ws", args.idle_connections,
                            client_cpu)
        held = memory(server)
        result = run_wrk(url, args.seconds, client_cpu, "keep-alive", connections=LATENCY_CONNECTIONS,
                         timeout="10s")
        after = memory(server)
        report = holder.stop() if holder else {}
        holder = None
    finally:
        if holder:
            holder.proc.kill()
            holder.proc.wait()
        server.stop()
    n = args.idle_connections if state != "none" else 0
    result.update(
        server=kind,
        state=state,
        ping_interval=ping_interval,
        connections=n,
        before=before,
        held=held,
        after=after,
        holder=report,
        rss_anon_per_conn=(held["rss_anon_kb"] - before["rss_anon_kb"]) * 1024 / n if n else None,
        vm_rss_per_conn=(held["vm_rss_kb"] - before["vm_rss_kb"]) * 1024 / n if n else None,
        tcp_mem_per_conn=(held["tcp_mem_pages"] - before["tcp_mem_pages"]) * os.sysconf("SC_PAGE_SIZE") / n
        if n else None,
    )
    return result


def gunicorn_argv(workers, port):
    """Gunicorn's ASGI worker serving bench/echo_asgi.py."""
    return [shutil.which("gunicorn"), "-k", "asgi", "-w", str(workers), "-b", f"127.0.0.1:{port}",
            "--chdir", str(BENCH), "--log-level", "warning", "echo_asgi:app"]


def echo_servers(args, target, workdir, server_cpu):
    """The echo part's servers (not started): host and Gunicorn at each worker count."""
    servers = []
    for workers in args.echo_workers:
        for name in args.servers:
            port = free_port()
            if name == "host":
                argv = [str(target / "host"), "-w", str(workers), "-b", f"127.0.0.1:{port}",
                        f"{target / 'libchat.so'}:app"]
            elif name == "gunicorn":
                argv = gunicorn_argv(workers, port)
            else:
                raise SystemExit(f"error: unknown server {name!r}")
            server = Server(f"{name}-w{workers}", argv, port, server_cpu, workdir)
            server.kind, server.workers = name, workers
            servers.append(server)
    return servers


def echo_run(client, server, clients, seconds, size, cpu):
    """One `ws-load echo` run against `server`; adds its CPU µs per round trip."""
    pids = process_tree(server.proc.pid)
    before = cpu_ns(pids)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = ["taskset", "-c", str(cpu), str(client), "echo", "--addr", f"127.0.0.1:{server.port}",
            "--path", "/echo", "--connections", str(clients), "--seconds", str(seconds), "--size", str(size)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + OPEN_TIMEOUT)
    used = cpu_ns(pids) - before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"error: ws-load echo against {server.name} failed: {out.stderr.strip()}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    messages = result["messages"]
    # The client's CPU (its handshakes included, a few ms) and the server's, per round trip.
    client_s = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    result["cpu_us_per_msg"] = used / 1000 / messages if messages else None
    result["client_cpu_us_per_msg"] = client_s * 1e6 / messages if messages else None
    # How busy each was over the run: near 100 % is the bottleneck (or a CPU shared with other load).
    result["server_busy"] = used / 1e9 / seconds
    result["client_busy"] = client_s / seconds
    result.update(server=server.name, kind=server.kind, workers=server.workers)
    return result


def fmt(value, digits=0, unit=""):
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def write_report(out, idle, echo, meta):
    lines = [
        "# WebSocket benchmark",
        "",
        f"Run on {meta['date']} by `{meta['command']}` at commit `{meta['commit']}`.",
        f"Machine: {meta['machine']}. Servers pinned to CPU {meta['server_cpu']}, clients "
        f"(`ws-load`, wrk) to CPU {meta['client_cpu']}. Load average before / after: "
        f"{meta['load_before']} / {meta['load_after']}. {meta['rounds']} round(s), medians shown.",
        "",
    ]
    if idle:
        n = meta["idle_connections"]
        lines += [
            f"## Idle connections: {n:,} on {IDLE_WORKERS} workers",
            "",
            f"host: `host -w {IDLE_WORKERS} --worker-connections {n + 1024} --keep-alive 3600 "
            f"--websocket-ping-interval {meta['ping_interval']} libchat.so:app`; gunicorn: `gunicorn -k asgi "
            f"-w {IDLE_WORKERS} --worker-connections {n + 1024} --keep-alive 3600 echo_asgi:app`; a fresh "
            f"server per state and round. Held open by `ws-load hold` from {len(IDLE_SOURCES)} loopback "
            "source addresses: `WebSocket` = handshakes on `/echo`, then silence (pings answered; "
            f"`pinged every {PING_STATE_INTERVAL} s`: host with `--websocket-ping-interval "
            f"{PING_STATE_INTERVAL}`, about {meta['idle_connections'] // PING_STATE_INTERVAL:,} pings a second); "
            "`keep-alive HTTP` = one `GET /nope` each, then silence. Memory: the workers' RssAnon (and "
            "VmRSS), summed, with the connections open minus before, per connection; kernel TCP "
            "buffers: /proc/net/sockstat `mem` (both ends of each loopback connection; idle sockets "
            "hold none, their kernel structures are not in it). HTTP: "
            f"`wrk -t1 -c{LATENCY_CONNECTIONS} -d{meta['seconds']}s GET /` while they are open (host: "
            f"the chat page, {meta.get('page_bytes', '?')} bytes; gunicorn: `Hello, World!`).",
            "",
            "| server | held open | RssAnon / conn | VmRSS / conn | kernel TCP buffers / conn | HTTP req/s "
            "| p50 | p99 | errors | pings answered | closed by server |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        kinds = []
        for r in idle:
            if r.get("server", "host") not in kinds:
                kinds.append(r.get("server", "host"))
        for kind in kinds:
            for state in STATES:
                runs = [r for r in idle if r["state"] == state and r.get("server", "host") == kind]
                if not runs:
                    continue
                label = {"none": "nothing", "ws": f"{n:,} WebSocket",
                         "ws-ping": f"{n:,} WebSocket, pinged every {PING_STATE_INTERVAL} s",
                         "http": f"{n:,} keep-alive HTTP"}[state]
                per = lambda key: median([r[key] for r in runs])  # noqa: E731
                pings = sum(r["holder"].get("pings", 0) for r in runs) if state.startswith("ws") else "–"
                closed = sum(r["holder"].get("closed_by_server", 0) for r in runs) if state != "none" else "–"
                lines.append(
                    f"| {kind} | {label} | {fmt(per('rss_anon_per_conn'), unit=' B')} "
                    f"| {fmt(per('vm_rss_per_conn'), unit=' B')} | {fmt(per('tcp_mem_per_conn'), unit=' B')} "
                    f"| {fmt(per('rps'))} | {fmt(per('p50_us'), unit=' µs')} | {fmt(per('p99_us'), unit=' µs')} "
                    f"| {sum(r['errors'] + r['non2xx'] for r in runs)} | {pings} | {closed} |")
        lines += ["", "Workers' memory per round (kB, RssAnon summed over workers: before → held → after wrk):",
                  ""]
        for r in idle:
            lines.append(f"- {r.get('server', 'host')} {r['state']}, round {r['round']}: "
                         f"{r['before']['rss_anon_kb']:,} → {r['held']['rss_anon_kb']:,} → "
                         f"{r['after']['rss_anon_kb']:,} (descriptors {r['before']['fds']:,} → "
                         f"{r['held']['fds']:,})")
        lines.append("")
    if echo:
        lines += [
            f"## Echo: {meta['echo_clients']} clients, {meta['size']}-byte text messages",
            "",
            f"Each client sends a message, waits for its echo, sends the next, for {meta['seconds']} s "
            "(`ws-load echo`). host: `host -w N libchat.so:app` on `/echo`; gunicorn: "
            f"`gunicorn -k asgi -w N echo_asgi:app` (Gunicorn {meta.get('gunicorn', '?')}, "
            f"{meta.get('asgi_loop', '?')} loop). Latency from send to echo; CPU: the server's, all "
            "its processes, per round trip; busy: CPU seconds over the run's seconds (a CPU near 100 % "
            "is the bottleneck; other load on the machine shares the CPUs too). The client's CPU "
            "includes most of loopback TCP's work for the messages it sends.",
            "",
            "| server | workers | round trips/s | vs gunicorn | p50 | p99 | server CPU µs / round trip "
            "| server CPU busy | client CPU µs / round trip | client CPU busy | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        keys = []
        for r in echo:
            if (r["kind"], r["workers"]) not in keys:
                keys.append((r["kind"], r["workers"]))
        for kind, workers in sorted(keys, key=lambda k: (k[1], k[0] != "host")):
            runs = [r for r in echo if r["kind"] == kind and r["workers"] == workers]
            gun = [r for r in echo if r["kind"] == "gunicorn" and r["workers"] == workers]
            rate = median([r["rate"] for r in runs])
            vs = rate / median([r["rate"] for r in gun]) if gun and median([r["rate"] for r in gun]) else None
            lines.append(
                f"| {kind} | {workers} | {fmt(rate)} | {fmt(vs, 2, '×')} | {fmt(median([r['p50_us'] for r in runs]), unit=' µs')} "
                f"| {fmt(median([r['p99_us'] for r in runs]), unit=' µs')} "
                f"| {fmt(median([r['cpu_us_per_msg'] for r in runs]), 1)} "
                f"| {fmt(median([100 * r['server_busy'] for r in runs]), unit=' %')} "
                f"| {fmt(median([r['client_cpu_us_per_msg'] for r in runs]), 1)} "
                f"| {fmt(median([100 * r['client_busy'] for r in runs]), unit=' %')} "
                f"| {sum(r['errors'] + r['unanswered'] for r in runs)} |")
        lines.append("")
    (out / "results.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps({"meta": meta, "idle": idle, "echo": echo}, indent=1))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "websocket", help="where results go")
    p.add_argument("--seconds", type=int, default=5, help="length of each measured run")
    p.add_argument("--rounds", type=int, default=3, help="rounds (interleaved servers / states)")
    p.add_argument("--parts", default="idle,echo", help="which parts: idle, echo")
    p.add_argument("--idle-connections", type=int, default=IDLE_CONNECTIONS, help="idle connections held")
    p.add_argument("--ping-interval", type=int, default=20, help="host's --websocket-ping-interval in the idle part")
    p.add_argument("--echo-clients", type=int, default=ECHO_CLIENTS, help="echo clients")
    p.add_argument("--echo-workers", default="1,2", help="worker counts of the echo part, comma-separated")
    p.add_argument("--size", type=int, default=MESSAGE_SIZE, help="bytes per echo message")
    p.add_argument("--servers", default="host,gunicorn", help="echo part's servers, comma-separated")
    p.add_argument("--idle-servers", default="host,gunicorn", help="idle part's servers, comma-separated")
    p.add_argument("--profile", default="release", help="cargo profile of the host build")
    p.add_argument("--no-build", action="store_true", help="use the existing build")
    p.add_argument("--smoke", action="store_true",
                   help="one round of a second, 200 idle connections, 10 echo clients: checks it runs")
    p.add_argument("--report", type=Path, metavar="JSON", help="only rewrite results.md from a results.json")
    args = p.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text())
        args.out.mkdir(parents=True, exist_ok=True)
        print(write_report(args.out, saved["idle"], saved["echo"], saved["meta"]))
        return
    if args.smoke:
        args.seconds, args.rounds, args.idle_connections, args.echo_clients = 1, 1, 200, 10
    args.echo_workers = [int(w) for w in args.echo_workers.split(",") if w.strip()]
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.idle_servers = [s.strip() for s in args.idle_servers.split(",") if s.strip()]
    for name in args.servers + args.idle_servers:
        if name not in ("host", "gunicorn"):
            raise SystemExit(f"error: unknown server {name!r}")
    parts = {s.strip() for s in args.parts.split(",") if s.strip()}
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"error: {tool} is not installed")
    if ("echo" in parts and "gunicorn" in args.servers) or ("idle" in parts and "gunicorn" in args.idle_servers):
        if not shutil.which("gunicorn"):
            raise SystemExit("error: gunicorn is not installed: python3 -m pip install gunicorn")

    flag = ["--release"] if args.profile == "release" else ["--profile", args.profile]
    if not args.no_build:
        subprocess.run(["cargo", "build", "-p", "host", "-p", "chat", "-p", "ws-load", *flag, "--quiet"],
                       cwd=ROOT, check=True)
    target = ROOT / "target" / ("debug" if args.profile == "dev" else args.profile)
    client = target / "ws-load"
    for path in (target / "host", target / "libchat.so", client):
        if not path.exists():
            raise SystemExit(f"error: {path} is missing: build first (cargo build -p host -p chat -p ws-load)")
    limit = raise_open_files(args.idle_connections if "idle" in parts else args.echo_clients)
    if "idle" in parts and limit < args.idle_connections + 256:
        raise SystemExit(f"error: the open-files limit is {limit}: too low for {args.idle_connections} connections")

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (cpus[0], cpus[0])
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    workdir = Path(tempfile.mkdtemp(prefix="host-ws-bench-"))
    idle, echo, servers = [], [], []
    try:
        if "idle" in parts:
            for rnd in range(args.rounds):
                for kind, state in ((k, st) for k in args.idle_servers for st in STATES
                                    if k == "host" or st != "ws-ping"):
                    r = idle_state(args, target, client, kind, state, workdir, server_cpu, client_cpu)
                    r["round"] = rnd + 1
                    idle.append(r)
                    mem = f"{r['rss_anon_per_conn']:,.0f} B/conn anon" if r["connections"] else "baseline"
                    print(f"idle round {rnd + 1} {kind:8} {state:5} {mem:>20}  wrk {r['rps']:>9,.0f} req/s "
                          f"p50 {fmt(r['p50_us'])} µs p99 {fmt(r['p99_us'])} µs  holder {r['holder']}", flush=True)
        if "echo" in parts:
            servers = echo_servers(args, target, workdir, server_cpu)
            for s in servers:
                s.start()
            for s in servers:
                echo_run(client, s, args.echo_clients, WARMUP_SECONDS, args.size, client_cpu)
            for rnd in range(args.rounds):
                for s in servers:
                    r = echo_run(client, s, args.echo_clients, args.seconds, args.size, client_cpu)
                    r["round"] = rnd + 1
                    echo.append(r)
                    print(f"echo round {rnd + 1} {s.name:12} {r['rate']:>9,.0f} msg/s p50 {r['p50_us']} µs "
                          f"p99 {r['p99_us']} µs {fmt(r['cpu_us_per_msg'], 1)} µs CPU/msg errors "
                          f"{r['errors'] + r['unanswered']}", flush=True)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    try:
        import gunicorn
        gunicorn_version = gunicorn.__version__
    except ImportError:
        gunicorn_version = None
    try:
        import uvloop  # noqa: F401
        asgi_loop = "uvloop"
    except ImportError:
        asgi_loop = "asyncio"
    meta = {
        **run_meta("websocket.py"),
        "server_cpu": server_cpu,
        "client_cpu": client_cpu,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "idle_connections": args.idle_connections,
        "ping_interval": args.ping_interval,
        "echo_clients": args.echo_clients,
        "size": args.size,
        "page_bytes": (ROOT / "example-apps" / "chat" / "src" / "page.html").stat().st_size,
        "gunicorn": gunicorn_version,
        "asgi_loop": asgi_loop,
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    print(write_report(args.out, idle, echo, meta))
    print(f"wrote {args.out}/results.md, results.json")


if __name__ == "__main__":
    sys.exit(main())
