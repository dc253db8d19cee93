"""One front vs two fronts behind HAProxy, the same load in the same run (issue 14).

Run:  .venv/bin/python benchmarks/cluster.py [--clients N] [--seconds S] [--rounds R] [--quick]

Starts the whole stack on loopback (:class:`transcoder.cluster.stack.Stack`:
Dovecot, PostgreSQL, two fronts, an HAProxy before both) plus a second
HAProxy before front1 alone; the user has a key and MODE ALWAYS, so each
FETCH is served as S/MIME.  Then, alternating in each round so that both
see the same machine load, ``--clients`` concurrent sessions (spread over
two load processes, :mod:`transcoder.cluster.load`: LOGIN, SELECT, FETCH,
STORE, APPEND, LOGOUT in a loop) run for ``--seconds`` through the one-front
balancer, then through the two-front one.  Printed: commands per second,
sessions, protocol errors for each, the two-over-one ratio per round and of
the medians, and ``os.getloadavg()`` before and after.

Read the ratio with the machine in mind: every process -- the fronts,
Dovecot, PostgreSQL, HAProxy and the load generator itself -- shares the
same CPUs (two here, shared with other jobs), so a second front can only
help as far as one front, not the rest, was what limited the rate.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transcoder.client import XKeyClient
from transcoder.client.identity import new_smime_identity
from transcoder.cluster.load import LoadResult, run_load
from transcoder.cluster.stack import Stack

USER = "bench@example.org"


def prepare(stack: Stack, password: str, messages: int, transcoded: bool) -> None:
    """Mail in Dovecot; with ``transcoded`` a key and MODE ALWAYS through the balancer."""
    assert stack.dovecot is not None
    for n in range(messages):
        body = f"From: a@example.org\r\nSubject: bench {n}\r\n\r\n" + "line of text\r\n" * 200
        stack.dovecot.drop(USER, body.encode())
    if not transcoded:
        return
    folder = stack.root / "identity"
    folder.mkdir()
    new_smime_identity(USER, folder, datetime.now(UTC), secrets.token_urlsafe(12))
    with XKeyClient.connect("127.0.0.1", stack.port, USER, password, "plain") as client:
        client.provision((folder / f"{USER}.crt").read_bytes())
        client.set_policy(mode="always")


def line(label: str, result: LoadResult) -> str:
    """One result as a line."""
    return (
        f"  {label:<11} {result.rate:8.1f} commands/s  {result.commands:6d} commands"
        f"  {result.sessions:5d} sessions  {result.errors} errors"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--plain", action="store_true", help="MODE OFF: no transcoding")
    parser.add_argument("--quick", action="store_true", help="4 clients, 3 s, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.seconds, args.rounds = 4, 3.0, 1
    password = secrets.token_urlsafe(12)
    print(f"load average before: {os.getloadavg()}  (CPUs: {os.cpu_count()}, shared)")
    with Stack({USER: password}, fronts=2, client_limit=4 * args.clients) as stack:
        one = stack.balancer_for(["front1"], "haproxy-one")
        one.start()
        try:
            prepare(stack, password, 20, not args.plain)
            print(
                f"{args.clients} clients x {args.seconds:.0f} s per measurement, "
                f"{args.rounds} rounds, FETCH {'plain' if args.plain else 'S/MIME (MODE ALWAYS)'}"
            )
            run_load(one.port, USER, password, 2, 1.0, 1)  # warm the view caches
            singles, doubles = [], []
            for r in range(1, args.rounds + 1):
                single = run_load(
                    one.port, USER, password, args.clients, args.seconds, args.processes
                )
                double = run_load(
                    stack.port, USER, password, args.clients, args.seconds, args.processes
                )
                singles.append(single)
                doubles.append(double)
                print(f"round {r}:")
                print(line("1 front", single))
                print(line("2 fronts", double))
                for failure in single.failures + double.failures:
                    print(f"    error: {failure}")
                ratio = double.rate / single.rate if single.rate else float("nan")
                print(f"  ratio 2/1   {ratio:.2f}  (load average {os.getloadavg()})")
            median_one = statistics.median(r.rate for r in singles)
            median_two = statistics.median(r.rate for r in doubles)
            errors = sum(r.errors for r in singles + doubles)
            print(
                f"median: 1 front {median_one:.1f}/s, 2 fronts {median_two:.1f}/s, ratio "
                f"{median_two / median_one:.2f} (target >= 1.7); protocol errors: {errors}"
            )
        finally:
            one.stop()
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
