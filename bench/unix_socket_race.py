#!/usr/bin/env python3
"""Races a symlink swap against `host` binding a Unix socket (issue 14, item 6).

Starts `host -b unix:DIR/s.sock --socket-mode 666` again and again. Meanwhile a
separate process (a few lines of C, built with `cc`) spins on the socket's path: the moment a socket file appears
there, it renames a symlink to a victim file (mode 0600) over it, as an
attacker sharing the directory would. A host that sets the mode (or owner) on
the path after `bind` then changes the victim. Prints how many starts changed
the victim's mode; the victim is reset after each start.

    cargo build --workspace
    python3 bench/unix_socket_race.py --starts 300
    python3 bench/unix_socket_race.py --host /path/to/old/host --starts 300

Without the debug-only fault hook (tests/integration/unix_socket.rs uses it to
hit the window every time), the window is a few microseconds: this measures
how often an unaided attacker wins, on this machine. On the 2-core box of
issue 14 the host from before the fix lost its victim's mode in 0 of 200
starts: the window is real (the hooked test shows it every time) but too
narrow for this attacker there; the figure to expect after the fix is 0 on
any machine, since the path is never chmod-ed or chown-ed at all.
"""

import argparse
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import hostbench
from hostbench import ROOT


# The attacker, in C: Python is far too slow to win a window of microseconds.
SWAPPER_C = r"""
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *sock = argv[1], *victim = argv[2], *link = argv[3];
    struct stat st;
    symlink(victim, link);
    for (;;) {
        /* A socket file at the path: put the ready link in its place at once. */
        if (lstat(sock, &st) == 0 && S_ISSOCK(st.st_mode) && rename(link, sock) == 0)
            symlink(victim, link);
    }
}
"""


def build_swapper(work):
    """Compiles the swapper with cc; returns its path."""
    src = os.path.join(work, "swap.c")
    exe = os.path.join(work, "swap")
    with open(src, "w") as f:
        f.write(SWAPPER_C)
    subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
    return exe


def one_start(host, app, work, swap):
    """One start of the host under the race; True if the victim's mode changed."""
    sock = os.path.join(work, "s.sock")
    victim = os.path.join(work, "victim")
    for p in (sock, sock + ".link"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    with open(victim, "w") as f:
        f.write("secret")
    os.chmod(victim, 0o600)
    racer = subprocess.Popen([swap, sock, victim, sock + ".link"])
    proc = subprocess.Popen(
        [host, "-w", "1", "-b", "unix:" + sock, "--socket-mode", "666", app],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Listening (or failed): the mode has been set by then either way.
    for line in proc.stderr:
        if "listening on" in line or "error:" in line:
            break
    racer.kill()
    racer.wait()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    return stat.S_IMODE(os.lstat(victim).st_mode) != 0o600


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=os.path.join(ROOT, "target", "debug", "host"))
    p.add_argument("--app", default=os.path.join(ROOT, "target", "debug", "libhello.so") + ":app")
    p.add_argument("--starts", type=int, default=300)
    args = p.parse_args()
    hostbench.require_built(args.host)
    work = tempfile.mkdtemp(prefix="host-unix-race-")
    try:
        started = time.time()
        swap = build_swapper(work)
        changed = sum(one_start(args.host, args.app, work, swap) for _ in range(args.starts))
        print(f"{args.host}: victim's mode changed in {changed} of {args.starts} starts "
              f"({time.time() - started:.0f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
