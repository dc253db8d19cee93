"""LOGIN latency of the real server, login cache cold and warm (issue 10 item 7).

    python benchmarks/login.py               # 200 LOGIN/LOGOUT cycles each way, about a minute
    python benchmarks/login.py --cycles 10   # a smoke run

Issue 10 item 7: every LOGIN ran the account's scrypt verification (about
300 ms on the issue's machine, against 8 ms for Dovecot with its auth
cache).  Target: LOGIN p50 under 20 ms on a warm cache.

Starts ``twistd -n transcoder`` twice on a free loopback port with a fresh
data directory holding one account (made with ``transcoder-admin``):

* **cold** -- ``--auth-cache-ttl 0``: no cache, every LOGIN runs scrypt (what
  every LOGIN cost before the cache, and what a first LOGIN still costs);
* **warm** -- the defaults (``--auth-cache-ttl 300``): one LOGIN primes the
  cache, then every LOGIN of the cycles is answered from it.

Each cycle opens a connection (plaintext on loopback, as a local client
may), reads the greeting, then times ``LOGIN`` from sending the command to
reading its tagged OK with :mod:`imaplib`, then sends ``LOGOUT``.  Prints the
median, 95th percentile and maximum LOGIN latency of each run, the server's
CPU time per cycle, and the ratio.  A script to run by hand, not a timed test.
"""

from __future__ import annotations

import argparse
import imaplib
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from common import PASSWORD, Server, add_account, check_ok, load_note, machine, work_directory
from measure import server_cpu

ACCOUNT = "login@example.org"


def timed_login(server: Server) -> float:
    """Seconds one LOGIN took on a fresh connection (connect and LOGOUT not counted)."""
    imap = imaplib.IMAP4("127.0.0.1", server.port, timeout=60)
    try:
        start = time.perf_counter()
        check_ok(imap.login(ACCOUNT, PASSWORD), "LOGIN")
        took = time.perf_counter() - start
    finally:
        imap.logout()
    return took


def cycles(server: Server, count: int) -> tuple[list[float], float]:
    """LOGIN latencies of ``count`` cycles and the server's CPU seconds per cycle."""
    cpu = server_cpu(server.pid)
    latencies = [timed_login(server) for _ in range(count)]
    return latencies, (server_cpu(server.pid) - cpu) / count


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def row(name: str, latencies: Sequence[float], cpu: float) -> str:
    """One line of the table, in milliseconds."""
    p50, p95 = statistics.median(latencies), percentile(latencies, 0.95)
    figures = (p50, p95, max(latencies), cpu)
    return f"{name:28} " + " ".join(f"{value * 1000:9.2f}" for value in figures)


def run(data: Path, count: int) -> None:
    """Both runs on one data directory, then the table."""
    add_account(data, ACCOUNT)
    with Server(data, extra_args=("--auth-cache-ttl", "0")) as server:
        cold, cold_cpu = cycles(server, count)
    with Server(data) as server:
        first = timed_login(server)
        warm, warm_cpu = cycles(server, count)
    print(f"{machine()}; {load_note()}")
    print(f"{count} LOGIN/LOGOUT cycles per run, loopback, imaplib\n")
    print(f"{'LOGIN, ms':28} {'p50':>9} {'p95':>9} {'max':>9} {'CPU/cycle':>9}")
    print(row("cold (--auth-cache-ttl 0)", cold, cold_cpu))
    print(row("warm (cache on, primed)", warm, warm_cpu))
    print(f"{'first LOGIN with cache on':28} {first * 1000:9.2f}")
    ratio = statistics.median(cold) / statistics.median(warm)
    met = "met" if statistics.median(warm) < 0.020 else "NOT met"
    print(f"\nwarm p50 {statistics.median(warm) * 1000:.2f} ms (target < 20 ms: {met});")
    print(f"cold p50 / warm p50 = {ratio:.0f}x")


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=200, help="LOGIN/LOGOUT cycles per run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    options = parser.parse_args()
    with work_directory("login-", options.keep) as scratch:
        run(scratch / "data", options.cycles)


if __name__ == "__main__":
    main()
