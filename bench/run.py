#!/usr/bin/env python3
"""Benchmark suite: `host` against nginx and Gunicorn on this machine, in one run.

    python3 bench/run.py                 # full run (about 10 minutes), writes docs/bench/
    python3 bench/run.py --smoke --out /tmp/bench   # seconds; what CI runs

It builds the workspace in release mode (unless --no-build), starts three
servers with the same worker count, each answering every request with
`200 text/plain` "Hello, World!":

- host:     `target/<profile>/host -w N libhello.so`
- host-threads: the same with `--threads 2` (handler threads per worker),
            compared with host's one thread round by round
- floor:    `host/examples/floor.rs`, one epoll loop that writes a canned
            response per request with no parsing: the least any server can
            do here (only the system calls), for scale; one process
- nginx:    `return 200` (access log off, keep-alive unlimited)
- nginx-deferred: the same with `listen ... deferred` (TCP_DEFER_ACCEPT, which
            host sets by default), in `Connection: close` mode only: the
            option changes nothing once a connection is open
- Gunicorn: sync workers, `bench/hello_wsgi.py`

Servers are pinned to one CPU and wrk to another (`taskset`), and every
server is measured in each mode (keep-alive, `Connection: close`, pipelined
x16 with `bench/pipeline.lua`) in interleaved rounds, so a noisy moment hits
all servers alike. Reported per server and mode: the median over rounds of
requests/s, server CPU time per request (from /proc/PID/task/*/schedstat of
every process of the server, in nanoseconds), p50 and p99 latency (wrk
--latency), and the ratios against nginx (for CPU, the median of each
round's ratio: a server is compared with nginx measured seconds apart, which
this noisy VM needs). Then, for host only: the `slow`
app's throughput against the ideal, the time from HUP to a whole new
generation, worker boot time, the resident memory of master and worker, and
(with valgrind installed, not in --smoke) user-space instructions per request
of host and nginx from bench/instructions.py, which no noise moves.

It writes results.md (a table with date, machine and commands),
results.json (every run) and chart.png into --out. The numbers are never
checked against targets here: the suite measures, it does not fail on speed.
Only loopback addresses are used.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hostbench import ROOT, free_port

BENCH = ROOT / "bench"

MODES = ["keep-alive", "close", "pipelined"]
# wrk connections per run (and threads: one, on its own CPU).
CONNECTIONS = 32
# Handler threads per worker of the host-threads server.
HOST_THREADS = 2
# How long a server gets to start answering.
START_TIMEOUT = 20.0


def wait_http(port, deadline):
    """Waits until GET / on the port answers 200."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                data = s.recv(64)
                if data.startswith(b"HTTP/1.") and b" 200 " in data[:16]:
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def process_tree(root):
    """The pid and all descendants of root, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_ns(pids):
    """CPU time (ns) of every thread of the given processes so far."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def rss_kb(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class Server:
    """A server under test: a command started pinned, and its process tree."""

    def __init__(self, name, argv, port, cpu, workdir, env=None, modes=MODES):
        self.name, self.argv, self.port, self.cpu = name, argv, port, cpu
        self.modes = modes
        self.log_path = workdir / f"{name}.log"
        self.env = env
        self.proc = None

    def start(self):
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(self.cpu)] + self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        if not wait_http(self.port, time.monotonic() + START_TIMEOUT):
            self.stop()
            raise SystemExit(f"error: {self.name} did not start; see {self.log_path}:\n{self.log()[-2000:]}")
        # Let every worker finish booting.
        time.sleep(0.5)

    def pids(self):
        return process_tree(self.proc.pid)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def parse_duration(text):
    """wrk's '123.45us' / '1.20ms' / '2.00s' in microseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return None
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[unit]


def run_wrk(url, seconds, cpu, mode, connections=CONNECTIONS, timeout="5s", env=None):
    """One wrk run; `env`: wrk's environment (default: ours)."""
    argv = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
            "--latency", f"--timeout={timeout}"]
    if mode == "close":
        argv += ["-H", "Connection: close"]
    elif mode == "pipelined":
        argv += ["-s", str(BENCH / "pipeline.lua")]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, env=env)
    if out.returncode != 0:
        raise SystemExit(f"error: wrk failed: {out.stderr.strip() or out.stdout.strip()}")
    text = out.stdout
    result = {"requests": 0, "rps": 0.0, "p50_us": None, "p99_us": None, "errors": 0, "non2xx": 0}
    m = re.search(r"(\d+) requests in", text)
    if m:
        result["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        result["rps"] = float(m.group(1))
    for pct, key in (("50%", "p50_us"), ("99%", "p99_us")):
        m = re.search(rf"^\s+{re.escape(pct)}\s+(\S+)", text, re.M)
        if m:
            # wrk reports no latencies for pipelined requests (0 µs): none.
            result[key] = parse_duration(m.group(1)) or None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        result["errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        result["non2xx"] = int(m.group(1))
    return result


def measure(server, mode, seconds, wrk_cpu):
    pids = server.pids()
    before = cpu_ns(pids)
    result = run_wrk(f"http://127.0.0.1:{server.port}/", seconds, wrk_cpu, mode)
    used = cpu_ns(pids) - before
    result["cpu_us_per_req"] = used / 1000 / result["requests"] if result["requests"] else None
    result.update(server=server.name, mode=mode)
    return result


def nginx_conf(workdir, port, workers, name="nginx", deferred=False, single_process=False, server_extra=""):
    """nginx answering `return 200` on port; single_process: no master (for valgrind).

    `server_extra`: lines added to the `server` block (bench/tls.py's TLS listener).
    """
    conf = workdir / f"{name}.conf"
    conf.write_text(f"""{"master_process off;" if single_process else ""}
worker_processes {workers};
daemon off;
pid {workdir}/{name}.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    client_body_temp_path {workdir}/nginx-body;
    proxy_temp_path {workdir}/nginx-proxy;
    fastcgi_temp_path {workdir}/nginx-fastcgi;
    uwsgi_temp_path {workdir}/nginx-uwsgi;
    scgi_temp_path {workdir}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port} reuseport{" deferred" if deferred else ""};
{server_extra}        location / {{
            default_type text/plain;
            return 200 "Hello, World!";
        }}
    }}
}}
""")
    return conf


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def host_extras(args, target, workdir, server_cpu, wrk_cpu):
    """slow-app throughput, HUP to new generation, boot time, RSS."""
    extras = {}
    host_bin = str(target / "host")
    # The slow app: 100 ms per request, 64 connections.
    slow_seconds = max(2, args.seconds)
    for label, flags, concurrency in (
        ("-w 4", ["-w", "4"], 4),
        ("-w 4 --threads 4", ["-w", "4", "--threads", "4"], 16),
    ):
        port = free_port()
        server = Server("host-slow", [host_bin, "-b", f"127.0.0.1:{port}", *flags,
                                      str(target / "libslow.so")], port, server_cpu, workdir)
        server.start()
        try:
            r = run_wrk(f"http://127.0.0.1:{port}/?ms=100", slow_seconds, wrk_cpu, "keep-alive",
                        connections=64, timeout="10s")
        finally:
            server.stop()
        extras.setdefault("slow", []).append(
            {"flags": label, "rps": r["rps"], "ideal": concurrency / 0.1, "errors": r["errors"]})
    # HUP to a whole new generation with -w 8, and worker boot times.
    port = free_port()
    server = Server("host-hup", [host_bin, "-w", "8", "-b", f"127.0.0.1:{port}",
                                 str(target / "libhello.so")], port, server_cpu, workdir)
    server.start()
    try:
        hups = []
        for n in range(2, 2 + args.hups):
            server.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            pattern = re.compile(rf"generation {n} complete: .* ([\d.]+) ms after it began")
            while time.monotonic() < deadline:
                m = pattern.search(server.log())
                if m:
                    hups.append(float(m.group(1)))
                    break
                time.sleep(0.05)
            else:
                raise SystemExit(f"error: generation {n} did not complete; see {server.log_path}")
        extras["hup_ms"] = hups
        extras["boot_ms"] = [float(x) for x in re.findall(r"ready in ([\d.]+) ms", server.log())]
        pids = server.pids()
        extras["rss_master_kb"] = rss_kb(pids[0])
        extras["rss_worker_kb"] = sorted(k for k in (rss_kb(p) for p in pids[1:]) if k)
    finally:
        server.stop()
    return extras


def fmt(value, digits=0, unit=""):
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def write_report(out, results, extras, meta):
    by = {}
    for r in results:
        by.setdefault((r["server"], r["mode"]), []).append(r)
    servers = meta["servers"]
    summary = {}
    for (server, mode), runs in by.items():
        summary[(server, mode)] = {
            "rps": median([r["rps"] for r in runs]),
            "cpu": median([r["cpu_us_per_req"] for r in runs]),
            "p50": median([r["p50_us"] for r in runs]),
            "p99": median([r["p99_us"] for r in runs]),
            "errors": sum(r["errors"] for r in runs),
        }
    lines = [
        "# Benchmark results",
        "",
        f"Run on {meta['date']} by `{meta['command']}` at commit `{meta['commit']}`.",
        f"Machine: {meta['machine']}. Servers pinned to CPU {meta['server_cpu']}, wrk to CPU "
        f"{meta['wrk_cpu']}; {meta['workers']} worker(s) each; `wrk -t1 -c{CONNECTIONS} "
        f"-d{meta['seconds']}s --latency` (close: `-H 'Connection: close'`; pipelined: "
        f"`-s bench/pipeline.lua`, 16 requests per write); {meta['rounds']} interleaved round(s), "
        "medians shown (CPU vs nginx: the median of the rounds' ratios). CPU is the servers' CPU "
        "time (all their processes) per request. host sets `TCP_DEFER_ACCEPT` (`--defer-accept 1`, "
        "its default); nginx-deferred is nginx with the same option (`listen ... deferred`); floor is "
        "`host/examples/floor.rs`, an epoll loop that answers a canned response to every request "
        "without parsing it: the system calls alone, the least any server can cost here.",
        "",
        "| mode | server | req/s | vs nginx | CPU µs/req | vs nginx | p50 | p99 | socket errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    # nginx's CPU per request in each round, to compare each server with
    # nginx measured in the same round.
    nginx_cpu = {(r["mode"], r.get("round")): r["cpu_us_per_req"] for r in results if r["server"] == "nginx"}
    for mode in MODES:
        base = summary.get(("nginx", mode), {})
        for server in servers:
            s = summary.get((server, mode))
            if not s:
                continue
            rps_ratio = s["rps"] / base["rps"] if base.get("rps") else None
            cpu_ratio = median([
                r["cpu_us_per_req"] / nginx_cpu[(mode, r.get("round"))]
                for r in by[(server, mode)]
                if r["cpu_us_per_req"] and nginx_cpu.get((mode, r.get("round")))
            ])
            lines.append(
                f"| {mode} | {server} | {fmt(s['rps'])} | {fmt(rps_ratio, 2)}× | {fmt(s['cpu'], 2)} | "
                f"{fmt(cpu_ratio, 2)}× | {fmt(s['p50'], unit=' µs')} | {fmt(s['p99'], unit=' µs')} | {s['errors']} |")
    threads_lines = []
    host_cpu = {(r["mode"], r.get("round")): r["cpu_us_per_req"] for r in results if r["server"] == "host"}
    for mode in MODES:
        ratios = [r["cpu_us_per_req"] / host_cpu[(mode, r.get("round"))]
                  for r in by.get(("host-threads", mode), [])
                  if r["cpu_us_per_req"] and host_cpu.get((mode, r.get("round")))]
        if ratios:
            threads_lines.append(f"{mode} {fmt(median(ratios), 2)}×")
    if threads_lines:
        lines += ["", f"host with `--threads {HOST_THREADS}` against one thread, CPU per request "
                  f"(median of the rounds' ratios): {', '.join(threads_lines)}."]
    if extras:
        lines += ["", "## host only", ""]
        for s in extras.get("slow", []):
            lines.append(f"- `slow?ms=100`, `wrk -c64`, `host {s['flags']}`: {fmt(s['rps'], 1)} req/s "
                         f"(ideal {fmt(s['ideal'])}, {fmt(100 * s['rps'] / s['ideal'], 0)}%)")
        if extras.get("hup_ms"):
            lines.append(f"- HUP → whole new generation, `-w 8`: {', '.join(fmt(x) for x in extras['hup_ms'])} ms")
        if extras.get("boot_ms"):
            b = extras["boot_ms"]
            lines.append(f"- worker boot (fork → ready): median {fmt(median(b), 1)} ms, max {fmt(max(b), 1)} ms "
                         f"over {len(b)} boots")
        if extras.get("instructions"):
            counts = ", ".join(f"{c['mode']} {c['server']} {fmt(c['per_request'])}"
                               for c in extras["instructions"])
            lines.append(f"- user-space instructions per request (callgrind, `bench/instructions.py`): "
                         f"{counts}")
        if extras.get("rss_master_kb"):
            w = extras.get("rss_worker_kb") or [0]
            lines.append(f"- resident memory: master {fmt(extras['rss_master_kb'] / 1024, 1)} MB, "
                         f"worker {fmt(min(w) / 1024, 1)}–{fmt(max(w) / 1024, 1)} MB (`hello`)")
    lines.append("")
    (out / "results.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps({"meta": meta, "runs": results, "extras": extras}, indent=1))
    chart(out / "chart.png", summary, servers, meta)
    return "\n".join(lines)


def chart(path, summary, servers, meta):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(servers)
    colours = {"host": "#2b6cb0", "floor": "#a0aec0", "nginx": "#2f855a", "nginx-deferred": "#9ae6b4", "gunicorn": "#c05621"}
    for ax, key, title in ((axes[0], "rps", "requests/s (higher is better)"),
                           (axes[1], "cpu", "server CPU µs per request (lower is better)")):
        for i, server in enumerate(servers):
            values = [(summary.get((server, m)) or {}).get(key) or 0 for m in MODES]
            xs = [x + (i - (len(servers) - 1) / 2) * width for x in range(len(MODES))]
            ax.bar(xs, values, width, label=server, color=colours.get(server))
        ax.set_xticks(range(len(MODES)), MODES)
        ax.set_title(title)
        ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"hello, {meta['workers']} worker(s), server and wrk pinned to one CPU each ({meta['date']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_meta(script):
    """What every report says of its run: the date, the command (`script`
    with this run's arguments), the commit and the machine."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    return {
        "date": datetime.date.today().isoformat(),
        "command": f"python3 bench/{script}" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "commit": commit,
        "machine": f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}",
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "bench", help="where results go")
    p.add_argument("--seconds", type=int, default=6, help="length of each wrk run")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument("--workers", type=int, default=1, help="workers of each server")
    p.add_argument("--hups", type=int, default=3, help="HUPs timed")
    p.add_argument("--servers", default="host,host-threads,floor,nginx,nginx-deferred,gunicorn",
                   help="which servers, comma-separated")
    p.add_argument("--profile", default="release", help="cargo profile of the host build")
    p.add_argument("--no-build", action="store_true", help="use the existing build")
    p.add_argument("--no-extras", action="store_true", help="skip the host-only measurements")
    p.add_argument("--smoke", action="store_true", help="a few seconds per part: checks the suite runs")
    p.add_argument("--report", type=Path, metavar="JSON",
                   help="only rewrite results.md and chart.png from an earlier results.json")
    args = p.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text())
        args.out.mkdir(parents=True, exist_ok=True)
        print(write_report(args.out, saved["runs"], saved["extras"], saved["meta"]))
        return
    if args.smoke:
        args.seconds, args.rounds, args.hups = 1, 1, 1
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"error: {tool} is not installed")
    servers_wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    if {"nginx", "nginx-deferred"} & set(servers_wanted) and not shutil.which("nginx"):
        raise SystemExit("error: nginx is not installed (or leave it out with --servers)")
    if "gunicorn" in servers_wanted and not shutil.which("gunicorn"):
        raise SystemExit("error: gunicorn is not installed: python3 -m pip install gunicorn")

    flag = ["--release"] if args.profile == "release" else ["--profile", args.profile]
    if not args.no_build:
        subprocess.run(["cargo", "build", "--workspace", *flag, "--quiet"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", "-p", "host", "--example", "floor", *flag, "--quiet"],
                       cwd=ROOT, check=True)
    target = ROOT / "target" / ("debug" if args.profile == "dev" else args.profile)
    if not (target / "host").exists():
        raise SystemExit(f"error: {target}/host is missing: build first (cargo build --workspace)")
    if "floor" in servers_wanted and not (target / "examples" / "floor").exists():
        raise SystemExit(f"error: {target}/examples/floor is missing: build it first "
                         f"(cargo build -p host --example floor {' '.join(flag)}) or leave it out "
                         "with --servers")

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, wrk_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (cpus[0], cpus[0])
    workdir = Path(tempfile.mkdtemp(prefix="host-bench-"))
    servers = []
    try:
        for name in servers_wanted:
            port = free_port()
            if name in ("host", "host-threads"):
                threads = ["--threads", str(HOST_THREADS)] if name == "host-threads" else []
                argv = [str(target / "host"), "-w", str(args.workers), *threads,
                        "-b", f"127.0.0.1:{port}", str(target / "libhello.so")]
                servers.append(Server(name, argv, port, server_cpu, workdir))
            elif name == "floor":
                argv = [str(target / "examples" / "floor"), f"127.0.0.1:{port}"]
                servers.append(Server("floor", argv, port, server_cpu, workdir))
            elif name in ("nginx", "nginx-deferred"):
                deferred = name == "nginx-deferred"
                conf = nginx_conf(workdir, port, args.workers, name, deferred)
                argv = ["nginx", "-p", str(workdir), "-e", "stderr", "-c", str(conf)]
                servers.append(Server(name, argv, port, server_cpu, workdir,
                                      modes=["close"] if deferred else MODES))
            elif name == "gunicorn":
                argv = [shutil.which("gunicorn"), "-w", str(args.workers), "-b", f"127.0.0.1:{port}",
                        "--chdir", str(BENCH), "--log-level", "warning", "hello_wsgi:app"]
                servers.append(Server("gunicorn", argv, port, server_cpu, workdir))
            else:
                raise SystemExit(f"error: unknown server {name!r}")
        for s in servers:
            s.start()
        results = []
        for r in range(args.rounds):
            for mode in MODES:
                for s in (s for s in servers if mode in s.modes):
                    result = measure(s, mode, args.seconds, wrk_cpu)
                    result["round"] = r + 1
                    results.append(result)
                    cpu = result["cpu_us_per_req"]
                    print(f"round {r + 1} {mode:10} {s.name:9} {result['rps']:>11,.0f} req/s "
                          f"{cpu if cpu is None else round(cpu, 2)} µs/req", flush=True)
        for s in servers:
            s.stop()
        extras = {} if args.no_extras or "host" not in servers_wanted else host_extras(
            args, target, workdir, server_cpu, wrk_cpu)
        if extras and shutil.which("valgrind") and not args.smoke:
            import instructions

            extras["instructions"] = [
                {"mode": mode, "server": server, "per_request": round(count)}
                for mode, server, count in instructions.count_all(target)
            ]
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    meta = {
        **run_meta("run.py"),
        "server_cpu": server_cpu,
        "wrk_cpu": wrk_cpu,
        "workers": args.workers,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "servers": [s.name for s in servers],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    print(write_report(args.out, results, extras, meta))
    print(f"wrote {args.out}/results.md, results.json, chart.png")


if __name__ == "__main__":
    main()
