#!/usr/bin/env python3
"""TLS benchmark: `host --bind tls://` against nginx, with the same certificate and ciphers.

    python3 bench/tls.py                  # builds release, 3 interleaved rounds of 5 s per case
    python3 bench/tls.py --smoke --no-build --profile dev   # a second per case; what CI runs

Issue 17's targets, measured and never asserted: server CPU per request over
a kept-alive TLS connection, per new connection with a full handshake, and
per resumed connection, host against nginx (target: host <= nginx); beside
them requests/s, latency, and what TLS costs each server over plain HTTP.

Both servers get one certificate made here with the `openssl` CLI (ECDSA
P-256, self-signed) and answer `200 text/plain` "Hello, World!" (host's
`hello` app; nginx's `return 200`, as bench/run.py runs it) on two loopback
ports each, one plain and one TLS, with the same worker count, pinned to one
CPU with `taskset` and the clients to the other (bench/run.py's pinning):

- host:  `host -w N -b 127.0.0.1:P -b tls://127.0.0.1:T --certfile C
         --keyfile K --tls-min-version 1.3 libhello.so`
- nginx: bench/run.py's configuration plus `listen ... ssl`, `ssl_protocols
         TLSv1.3`, `ssl_ecdh_curve X25519`, `ssl_conf_command Ciphersuites
         TLS_AES_256_GCM_SHA384`, session tickets on (nginx's default)

The TLS 1.3 parameters are X25519 and TLS_AES_256_GCM_SHA384 on both. AES-256
rather than AES-128 because that is what every OpenSSL client here (wrk,
Python's ssl, `openssl s_client`) offers first and rustls follows the
client's order by default, so host negotiates it with no flag to pin it; with
AES-NI the two cost the same for 13-byte bodies anyway. nginx is pinned to
exactly that; host is not pinned (it has no flag for it) and the run checks
with `openssl s_client -brief` what each server negotiates and prints it.
`--ciphersuite TLS_AES_128_GCM_SHA256` measures the other one: nginx is
pinned to it and the clients offer only it (an OPENSSL_CONF of our own with
`Ciphersuites`, which wrk, Python and s_client read), so host picks it too.

Cases, each measured on both servers in interleaved rounds, so a noisy
moment hits both alike:

- keep-alive  http / tls:  `wrk -t1 -c32` (OpenSSL 3 in wrk: TLS 1.3)
- close       http / tls-resumed:  the same with `-H 'Connection: close'`.
              wrk keeps its TLS session across reconnections (SSL_clear), so
              these are RESUMED handshakes, not full ones: bench/ssl_resumed.c,
              preloaded into wrk (built with `cc` when there is one), counts
              the handshakes and the resumed ones on the client's side
- new-conn    http / tls-full / tls-resumed: CLIENT_PROCESSES Python
              processes, each opening one connection at a time, sending one
              GET with `Connection: close` and reading to the close; tls-full
              never offers a session, tls-resumed offers the session its last
              connection got (counted with `SSLSocket.session_reused`). Python
              is slower than wrk but the server's CPU per connection is what
              is compared, and the client is the same for both servers.

CPU per request is the servers' CPU time (every thread of every process,
/proc/PID/task/TID/schedstat, as bench/run.py) over the run divided by the
requests (one per connection in the close and new-conn cases). The report
(results.md and results.json in --out) shows medians over rounds, host's CPU
against nginx's as the median of the rounds' ratios, and per server the TLS
cost: CPU per request with TLS minus the same case in plain HTTP.
"""

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hostbench import ROOT, free_port
from run import Server, cpu_ns, median, nginx_conf, run_meta, run_wrk

# The pinned TLS 1.3 parameters (see the module's doc): nginx is configured with
# them; host's negotiated ones are checked against them.
CIPHERSUITE = "TLS_AES_256_GCM_SHA384"
# The suites --ciphersuite offers (both servers' AES-GCM ones).
CIPHERSUITES = ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"]
GROUP = "X25519"
# The certificate's name (and the SNI the clients send).
SERVER_NAME = "localhost"
# Python client processes of the new-conn cases (each one connection at a time).
CLIENT_PROCESSES = 4
# How long `openssl s_client` gets to report a handshake, in seconds.
S_CLIENT_TIMEOUT = 20.0
# How long a client connection may take before it counts as an error, in seconds.
CLIENT_TIMEOUT = 10.0
# Bytes read per recv by the Python clients.
READ_SIZE = 65536
# The LD_PRELOAD shim that counts wrk's resumed handshakes.
SHIM_SOURCE = ROOT / "bench" / "ssl_resumed.c"

# (mode, transport, client): every case, in the order measured and reported.
CASES = [
    ("keep-alive", "http", "wrk"),
    ("keep-alive", "tls", "wrk"),
    ("close", "http", "wrk"),
    ("close", "tls-resumed", "wrk"),
    ("new-conn", "http", "python"),
    ("new-conn", "tls-full", "python"),
    ("new-conn", "tls-resumed", "python"),
]
# The plain-HTTP case each TLS case is compared with for "the cost of TLS".
PLAIN_OF = {
    ("keep-alive", "tls"): ("keep-alive", "http"),
    ("close", "tls-resumed"): ("close", "http"),
    ("new-conn", "tls-full"): ("new-conn", "http"),
    ("new-conn", "tls-resumed"): ("new-conn", "http"),
}


def make_certificate(workdir):
    """A self-signed ECDSA P-256 certificate for SERVER_NAME and 127.0.0.1: (cert, key) paths."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={SERVER_NAME}",
         "-addext", f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


def nginx_tls_lines(tls_port, cert, key, ciphersuite=CIPHERSUITE):
    """The `server` block lines of nginx's TLS listener, pinned to `ciphersuite` and GROUP."""
    return f"""        listen 127.0.0.1:{tls_port} ssl reuseport;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_ecdh_curve {GROUP};
        ssl_conf_command Ciphersuites {ciphersuite};
        ssl_session_tickets on;
"""


def parse_brief(text):
    """What `openssl s_client -brief` reports of a handshake: protocol, cipher, group, signature."""
    fields = {"Protocol version": "protocol", "Ciphersuite": "cipher", "Peer Temp Key": "group",
              "Server Temp Key": "group", "Signature type": "signature",
              "Peer signature type": "signature"}
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() in fields:
            # "X25519, 253 bits": the group's name only.
            out[fields[name.strip()]] = value.strip().split(",")[0]
    return out


def negotiated(port):
    """The TLS parameters an `openssl s_client` negotiates with the server on `port`."""
    try:
        out = subprocess.run(
            ["openssl", "s_client", "-brief", "-connect", f"127.0.0.1:{port}", "-servername", SERVER_NAME],
            input=b"", capture_output=True, timeout=S_CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": "openssl s_client timed out"}
    info = parse_brief((out.stdout + out.stderr).decode(errors="replace"))
    return info or {"error": (out.stdout + out.stderr).decode(errors="replace")[-500:]}


def clients_offer_only(ciphersuite):
    """Re-executes this script with an OPENSSL_CONF that makes every OpenSSL client (wrk,
    Python's ssl, s_client) offer only `ciphersuite`; returns when that is done already."""
    if os.environ.get("HOST_TLS_BENCH_CIPHERSUITE") == ciphersuite:
        return
    conf = Path(tempfile.mkdtemp(prefix="host-tls-bench-conf-")) / "openssl.cnf"
    conf.write_text("openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n"
                    "[ssl_sect]\nsystem_default = system_default_sect\n"
                    f"[system_default_sect]\nCiphersuites = {ciphersuite}\n")
    env = dict(os.environ, OPENSSL_CONF=str(conf), HOST_TLS_BENCH_CIPHERSUITE=ciphersuite)
    # OpenSSL reads its configuration once, when `ssl` is imported: start again.
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def percentile(sorted_values, fraction):
    """The value below which `fraction` of `sorted_values` lie (nearest rank), or None."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def _client(port, transport, seconds, cpu, queue):
    """One client process of `connections`: connects until `seconds` have passed, reports to `queue`."""
    os.sched_setaffinity(0, {cpu})
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    request = f"GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n".encode()
    done = reused = errors = non200 = 0
    latencies = []
    session = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock = raw
                if transport != "http":
                    offer = session if transport == "tls-resumed" else None
                    sock = context.wrap_socket(raw, server_hostname=SERVER_NAME, session=offer)
                sock.sendall(request)
                data = b""
                while chunk := sock.recv(READ_SIZE):
                    data += chunk
                if transport == "tls-resumed":
                    reused += sock.session_reused
                    # TLS 1.3 tickets may be single-use: offer the newest next time.
                    session = sock.session
                if transport != "http":
                    sock.close()
        except (OSError, ssl.SSLError):
            errors += 1
            continue
        latencies.append((time.perf_counter() - start) * 1e6)
        done += 1
        if not data.startswith(b"HTTP/1.1 200 "):
            non200 += 1
    queue.put({"requests": done, "reused": reused, "errors": errors, "non2xx": non200,
               "latencies": latencies})


def connections(port, transport, seconds, cpu, processes=CLIENT_PROCESSES):
    """The new-conn client: `processes` Python processes on `cpu`, one GET per connection.

    Returns run_wrk's fields (requests, rps, p50_us, p99_us, errors, non2xx)
    and `reused`, the connections that resumed a TLS session.
    """
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_client, args=(port, transport, seconds, cpu, queue))
             for _ in range(processes)]
    start = time.monotonic()
    for p in procs:
        p.start()
    reports = [queue.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.monotonic() - start
    latencies = sorted(x for r in reports for x in r["latencies"])
    requests = sum(r["requests"] for r in reports)
    return {
        "requests": requests,
        "rps": requests / elapsed,
        "p50_us": percentile(latencies, 0.50),
        "p99_us": percentile(latencies, 0.99),
        "errors": sum(r["errors"] for r in reports),
        "non2xx": sum(r["non2xx"] for r in reports),
        "reused": sum(r["reused"] for r in reports),
    }


def build_shim(workdir):
    """bench/ssl_resumed.c built into `workdir`, or None without a C compiler (then wrk's
    resumptions go uncounted)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return None
    shim = workdir / "ssl_resumed.so"
    out = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(shim), str(SHIM_SOURCE), "-ldl"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"warning: {SHIM_SOURCE.name} did not build, wrk's resumptions go uncounted:\n{out.stderr}",
              file=sys.stderr)
        return None
    return shim


def wrk_counted(url, seconds, cpu, mode, shim):
    """run_wrk, with `reused` (and `handshakes`) counted by the shim when there is one."""
    if not shim:
        return run_wrk(url, seconds, cpu, mode)
    counts = shim.parent / "ssl_resumed.out"
    counts.unlink(missing_ok=True)
    env = dict(os.environ, LD_PRELOAD=str(shim), SSL_RESUMED_OUT=str(counts))
    result = run_wrk(url, seconds, cpu, mode, env=env)
    try:
        handshakes, reused = (int(x) for x in counts.read_text().split())
    except (OSError, ValueError):
        return result
    result.update(handshakes=handshakes, reused=reused)
    return result


def measure(server, mode, transport, client, seconds, client_cpu, shim=None):
    """One case against one server; adds the server's CPU µs per request."""
    port = server.port if transport == "http" else server.tls_port
    pids = server.pids()
    before = cpu_ns(pids)
    if client == "wrk" and transport == "http":
        result = run_wrk(f"http://127.0.0.1:{port}/", seconds, client_cpu, mode)
    elif client == "wrk":
        result = wrk_counted(f"https://127.0.0.1:{port}/", seconds, client_cpu, mode, shim)
    else:
        result = connections(port, transport, seconds, client_cpu)
    used = cpu_ns(pids) - before
    result["cpu_us_per_req"] = used / 1000 / result["requests"] if result["requests"] else None
    result.update(server=server.name, mode=mode, transport=transport, client=client)
    return result


def fmt(value, digits=0, unit=""):
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def summarise(results):
    """{(server, mode, transport): medians over rounds and totals}."""
    by = {}
    for r in results:
        by.setdefault((r["server"], r["mode"], r["transport"]), []).append(r)
    summary = {}
    for key, runs in by.items():
        summary[key] = {
            "rps": median([r["rps"] for r in runs]),
            "cpu": median([r["cpu_us_per_req"] for r in runs]),
            "p50": median([r["p50_us"] for r in runs]),
            "p99": median([r["p99_us"] for r in runs]),
            "errors": sum(r["errors"] + r.get("non2xx", 0) for r in runs),
            "requests": sum(r["requests"] for r in runs),
            "reused": sum(r["reused"] for r in runs) if all("reused" in r for r in runs) else None,
            # Handshakes the client completed: wrk's (counted by the shim) may exceed its
            # requests by the connections open when it stopped.
            "handshakes": sum(r.get("handshakes", r["requests"]) for r in runs),
        }
    return by, summary


def round_ratios(results, server, mode, transport, base_server="nginx"):
    """The median over rounds of `server`'s CPU per request over `base_server`'s, same case and round."""
    base = {r["round"]: r["cpu_us_per_req"] for r in results
            if (r["server"], r["mode"], r["transport"]) == (base_server, mode, transport)}
    return median([r["cpu_us_per_req"] / base[r["round"]] for r in results
                   if (r["server"], r["mode"], r["transport"]) == (server, mode, transport)
                   and r["cpu_us_per_req"] and base.get(r["round"])])


def tls_cost(results, server, mode, transport):
    """Median over rounds of (CPU µs/req with TLS - the plain case's) for `server`, and the ratio."""
    plain_mode, plain_transport = PLAIN_OF[(mode, transport)]
    plain = {r["round"]: r["cpu_us_per_req"] for r in results
             if (r["server"], r["mode"], r["transport"]) == (server, plain_mode, plain_transport)}
    runs = [r for r in results if (r["server"], r["mode"], r["transport"]) == (server, mode, transport)
            and r["cpu_us_per_req"] and plain.get(r["round"])]
    return (median([r["cpu_us_per_req"] - plain[r["round"]] for r in runs]),
            median([r["cpu_us_per_req"] / plain[r["round"]] for r in runs]))


def write_report(out, results, meta):
    by, summary = summarise(results)
    lines = [
        "# TLS benchmark: host against nginx",
        "",
        f"Run on {meta['date']} by `{meta['command']}` at commit `{meta['commit']}`.",
        f"Machine: {meta['machine']}. Servers pinned to CPU {meta['server_cpu']}, clients to CPU "
        f"{meta['client_cpu']}; {meta['workers']} worker(s) each; {meta['rounds']} interleaved round(s) "
        f"of {meta['seconds']} s per case, medians shown (CPU vs nginx: the median of the rounds' "
        "ratios). Certificate: ECDSA P-256, self-signed. TLS 1.3; nginx pinned to "
        f"{GROUP} and {meta.get('ciphersuite', CIPHERSUITE)}. CPU is the server's CPU time (all its processes) per request; "
        "in `close` and `new-conn` every request is a new connection.",
        "",
        "Negotiated (`openssl s_client -brief`): " + "; ".join(
            f"{name}: " + ", ".join(f"{v}" for k, v in info.items())
            for name, info in meta["negotiated"].items()) + ".",
        "",
        "Clients: keep-alive: `wrk -t1 -c32`; close: the same with `-H 'Connection: close'`, which "
        "resumes its TLS session on every reconnection (the resumed column: handshakes that resumed "
        "out of all, counted in wrk by `bench/ssl_resumed.c`); new-conn: "
        f"{CLIENT_PROCESSES} Python `ssl` processes, one GET per "
        "connection (tls-full offers no session; tls-resumed offers the last one it got). Latency "
        "in new-conn is the client's connect-to-close time, Python's overhead included.",
        "",
        "| mode | transport | server | req/s | CPU µs/req | CPU vs nginx | TLS cost µs/req (×plain) "
        "| p50 | p99 | resumed | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, transport, _client_name in CASES:
        for server in meta["servers"]:
            s = summary.get((server, mode, transport))
            if not s:
                continue
            ratio = round_ratios(results, server, mode, transport) if server != "nginx" else 1.0
            cost = "–"
            if (mode, transport) in PLAIN_OF:
                extra, times = tls_cost(results, server, mode, transport)
                cost = f"+{fmt(extra, 1)} ({fmt(times, 2)}×)"
            if s["reused"] is not None:
                resumed = f"{s['reused']:,}/{s['handshakes']:,}"
            else:
                resumed = "–"
            lines.append(
                f"| {mode} | {transport} | {server} | {fmt(s['rps'])} | {fmt(s['cpu'], 2)} | "
                f"{fmt(ratio, 2)}× | {cost} | {fmt(s['p50'], unit=' µs')} | {fmt(s['p99'], unit=' µs')} | "
                f"{resumed} | {s['errors']} |")
    lines.append("")
    (out / "results.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps({"meta": meta, "runs": results}, indent=1))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "tls", help="where results go")
    p.add_argument("--seconds", type=int, default=5, help="length of each case's run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--workers", type=int, default=1, help="workers of each server")
    p.add_argument("--servers", default="host,nginx", help="which servers, comma-separated")
    p.add_argument("--profile", default="release", help="cargo profile of the host build")
    p.add_argument("--no-build", action="store_true", help="use the existing build")
    p.add_argument("--smoke", action="store_true", help="one round of a second per case: checks it runs")
    p.add_argument("--ciphersuite", choices=CIPHERSUITES, default=CIPHERSUITE,
                   help="the TLS 1.3 suite nginx is pinned to (and, if not the default, all the clients offer)")
    p.add_argument("--report", type=Path, metavar="JSON", help="only rewrite results.md from a results.json")
    args = p.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text())
        args.out.mkdir(parents=True, exist_ok=True)
        print(write_report(args.out, saved["runs"], saved["meta"]))
        return
    if args.smoke:
        args.seconds, args.rounds = 1, 1
    if args.ciphersuite != CIPHERSUITE:
        clients_offer_only(args.ciphersuite)
    for tool in ("wrk", "taskset", "openssl", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"error: {tool} is not installed")
    servers_wanted = [s.strip() for s in args.servers.split(",") if s.strip()]

    flag = ["--release"] if args.profile == "release" else ["--profile", args.profile]
    if not args.no_build:
        subprocess.run(["cargo", "build", "-p", "host", "-p", "hello", *flag, "--quiet"], cwd=ROOT, check=True)
    target = ROOT / "target" / ("debug" if args.profile == "dev" else args.profile)
    for path in ("host", "libhello.so"):
        if "host" in servers_wanted and not (target / path).exists():
            raise SystemExit(f"error: {target / path} is missing: build first (cargo build -p host -p hello)")

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (cpus[0], cpus[0])
    workdir = Path(tempfile.mkdtemp(prefix="host-tls-bench-"))
    servers = []
    results = []
    try:
        cert, key = make_certificate(workdir)
        shim = build_shim(workdir)
        for name in servers_wanted:
            port, tls_port = free_port(), free_port()
            if name == "host":
                argv = [str(target / "host"), "-w", str(args.workers), "-b", f"127.0.0.1:{port}",
                        "-b", f"tls://127.0.0.1:{tls_port}", "--certfile", str(cert), "--keyfile", str(key),
                        "--tls-min-version", "1.3", str(target / "libhello.so")]
            elif name == "nginx":
                conf = nginx_conf(workdir, port, args.workers, "nginx",
                                  server_extra=nginx_tls_lines(tls_port, cert, key, args.ciphersuite))
                argv = ["nginx", "-p", str(workdir), "-e", "stderr", "-c", str(conf)]
            else:
                raise SystemExit(f"error: unknown server {name!r}")
            server = Server(name, argv, port, server_cpu, workdir)
            server.tls_port = tls_port
            servers.append(server)
        for s in servers:
            s.start()
        found = {s.name: negotiated(s.tls_port) for s in servers}
        for name, info in found.items():
            print(f"{name} negotiates {info}", flush=True)
            if info.get("cipher") != args.ciphersuite or info.get("group") != GROUP:
                print(f"warning: {name} does not negotiate {GROUP} and {args.ciphersuite}", flush=True)
        for rnd in range(args.rounds):
            for mode, transport, client in CASES:
                for s in servers:
                    r = measure(s, mode, transport, client, args.seconds, client_cpu, shim)
                    r["round"] = rnd + 1
                    results.append(r)
                    cpu = r["cpu_us_per_req"]
                    reused = f" resumed {r['reused']}/{r.get('handshakes', r['requests'])}" if "reused" in r else ""
                    print(f"round {rnd + 1} {mode:10} {transport:11} {s.name:6} {r['rps']:>9,.0f} req/s "
                          f"{fmt(cpu, 2)} µs/req errors {r['errors'] + r['non2xx']}{reused}", flush=True)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    meta = {
        **run_meta("tls.py"),
        "server_cpu": server_cpu,
        "client_cpu": client_cpu,
        "workers": args.workers,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "servers": [s.name for s in servers],
        "negotiated": found,
        "ciphersuite": args.ciphersuite,
        "openssl": subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    print(write_report(args.out, results, meta))
    print(f"wrote {args.out}/results.md, results.json")


if __name__ == "__main__":
    main()
