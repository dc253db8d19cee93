"""One front vs two fronts behind HAProxy, the same load in the same run (issue 14).

Run:  .venv/bin/python benchmarks/cluster.py [--clients N] [--seconds S] [--rounds R] [--quick]
      .venv/bin/python benchmarks/cluster.py --sessions 250,500 [--hold 30]

Starts the whole stack on loopback (:class:`transcoder.cluster.stack.Stack`:
Dovecot, PostgreSQL, two fronts, an HAProxy before both) plus a second
HAProxy before front1 alone; the user has a key and MODE ALWAYS, so each
FETCH is served as S/MIME.  Then, alternating in each round so that both
see the same machine load, ``--clients`` concurrent sessions (spread over
two load processes, :mod:`transcoder.cluster.load`: LOGIN, SELECT, FETCH,
STORE, APPEND, LOGOUT in a loop) run for ``--seconds`` through the one-front
balancer, then through the two-front one.  Printed: commands per second,
sessions, protocol errors for each, the CPU each part used meanwhile
(PostgreSQL's only as far as its ended sessions), the two-over-one ratio per round and of the
medians, and ``os.getloadavg()`` before and after.

``--sessions N,M,...`` measures sessions held instead: N idle sessions
(LOGIN, SELECT INBOX, then a NOOP every 5 s, :func:`~transcoder.cluster.load.hold_sessions`)
held for ``--hold`` seconds through the one-front balancer, then through the
two-front one; printed: sessions held, errors, the NOOP round trip while all
are held, and each front's resident memory (so the memory per session).

``--pin`` gives each front a CPU of its own (``sched_setaffinity``: front1
on CPU 0, front2 on CPU 1) and leaves Dovecot, PostgreSQL, HAProxy and the
load generator free to use both: one front is then held to one CPU in both
measurements, and a second front can add at most the second CPU minus what
the rest takes there.  Worth running only on a machine nothing else uses.

Each measurement starts from the same mailbox: what the previous one
APPENDed is expunged in Dovecot first (:func:`reset_mailbox`).  Without it
the mailbox grew by a few thousand messages a round, SELECT and SEARCH grew
with it, and whichever balancer was measured second ran on a bigger mailbox
(rates fell by half over three rounds, the two-front side always behind).

Read the ratio with the machine in mind: every process -- the fronts,
Dovecot, PostgreSQL, HAProxy and the load generator itself -- shares the
same CPUs (two here, shared with other jobs), so a second front can only
help as far as one front, not the rest, was what limited the rate.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import secrets
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transcoder.client import XKeyClient
from transcoder.client.identity import new_smime_identity
from transcoder.cluster.load import LoadResult, hold_sessions, run_load
from transcoder.cluster.stack import Stack

USER = "bench@example.org"
#: Messages in the mailbox at the start of every measurement.
MESSAGES = 20


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


def reset_mailbox(stack: Stack, password: str, keep: int) -> None:
    """Expunge, straight in Dovecot, every message after the first ``keep`` (the load's APPENDs)."""
    assert stack.dovecot is not None
    imap = imaplib.IMAP4("127.0.0.1", stack.dovecot.port)
    try:
        imap.login(USER, password)
        typ, data = imap.select("INBOX")
        assert typ == "OK", data
        if int(data[0]) > keep:
            imap.store(f"{keep + 1}:*", "+FLAGS.SILENT", r"(\Deleted)")
            imap.expunge()
    finally:
        imap.logout()


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its reaped children (Dovecot's imap processes), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime, stime, cutime, cstime: fields 14-17 of proc(5), 12-15 after "pid (comm) state".
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def cpu_shares(pids: dict[str, int], before: dict[str, float], wall: float) -> str:
    """Each part's CPU use since ``before``, in CPUs (1.0: one CPU busy all along)."""
    return ", ".join(
        f"{name} {(cpu_seconds(pid) - before[name]) / wall:.2f}" for name, pid in pids.items()
    )


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (0 when gone)."""
    try:
        for text in Path(f"/proc/{pid}/status").read_text().splitlines():
            if text.startswith("VmRSS:"):
                return int(text.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def held(stack: Stack, one_port: int, password: str, counts: list[int], seconds: float) -> None:
    """Sessions held through one front, then two (see the module doc)."""
    fronts = {name: pid for name, pid in stack.pids().items() if name.startswith("front")}
    for count in counts:
        for label, port in (("1 front", one_port), ("2 fronts", stack.port)):
            before = {name: rss_mib(pid) for name, pid in fronts.items()}
            result = hold_sessions(port, USER, password, count, seconds)
            # Read after the hold: the sessions were closed, the memory stays mapped.
            grown = ", ".join(
                f"{name} +{rss_mib(pid) - before[name]:.1f} MiB" for name, pid in fronts.items()
            )
            print(
                f"  {label:<9} {result.held:5d}/{count} sessions held  {result.errors} errors"
                f"  NOOP median {result.noop_median * 1000:.1f} ms ({result.noops})  RSS {grown}"
            )
            for failure in result.failures:
                print(f"    error: {failure}")


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
    parser.add_argument("--pin", action="store_true", help="front1 on CPU 0, front2 on CPU 1")
    parser.add_argument("--sessions", help="N,M,...: measure sessions held instead")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds each hold lasts")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.sessions.split(",")] if args.sessions else []
    if args.quick:
        args.clients, args.seconds, args.rounds = 4, 3.0, 1
    password = secrets.token_urlsafe(12)
    print(f"load average before: {os.getloadavg()}  (CPUs: {os.cpu_count()}, shared)")
    limit = max([4 * args.clients, *(n + 50 for n in counts)])
    # Every load session comes from 127.0.0.1: the per-address cap (50) would be what is measured.
    per_address = ("--max-connections-per-address", str(limit))
    with Stack({USER: password}, fronts=2, client_limit=limit, front_options=per_address) as stack:
        one = stack.balancer_for(["front1"], "haproxy-one")
        one.start()
        try:
            prepare(stack, password, MESSAGES, not args.plain)
            if args.pin:
                for cpu, name in enumerate(("front1", "front2")):
                    os.sched_setaffinity(stack.pids()[name], {cpu % (os.cpu_count() or 1)})
                print("front1 pinned to CPU 0, front2 to CPU 1; the rest unpinned")
            if counts:
                print(f"sessions held for {args.hold:.0f} s, a NOOP every 5 s each")
                held(stack, one.port, password, counts, args.hold)
                return 0
            print(
                f"{args.clients} clients x {args.seconds:.0f} s per measurement, "
                f"{args.rounds} rounds, FETCH {'plain' if args.plain else 'S/MIME (MODE ALWAYS)'}"
            )
            run_load(one.port, USER, password, 2, 1.0, 1)  # warm the view caches
            singles, doubles = [], []
            pids = {**stack.pids(), "haproxy-one": one.pid}
            for r in range(1, args.rounds + 1):
                print(f"round {r}:")
                for label, port, results in (
                    ("1 front", one.port, singles),
                    ("2 fronts", stack.port, doubles),
                ):
                    reset_mailbox(stack, password, MESSAGES)
                    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    ours = os.times()
                    result = run_load(
                        port, USER, password, args.clients, args.seconds, args.processes
                    )
                    after = os.times()
                    load = sum(after[:4]) - sum(ours[:4])  # this process and its load workers
                    results.append(result)
                    print(line(label, result))
                    shares = cpu_shares(pids, before, result.seconds)
                    print(f"    CPUs used: {shares}, load generator {load / result.seconds:.2f}")
                single, double = singles[-1], doubles[-1]
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
