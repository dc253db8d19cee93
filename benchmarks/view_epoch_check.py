"""What the view-epoch check costs each command of the selected state (issue 9).

    python benchmarks/view_epoch_check.py               # 2,000 commands per row
    python benchmarks/view_epoch_check.py --commands 100

Issue 9 ("A view that changes is announced"): before every command of the
selected state the server makes sure the account's view epoch has not
moved, and ends the session with BYE if it has.  While nothing was committed
to ``keys.db`` (``PRAGMA data_version`` on a connection of its own) and no
key of the account expired, the epoch read last stands; otherwise it is read
again: one SQLite transaction in the key layer's thread pool.

Part 1, in this process on a scratch keystore: what each step costs --
one ``data_version`` and one epoch read (without the thread hop).

Part 2, the real server (``twistd -n transcoder``, one account, one
message): latency from sending to reading the tagged OK with
:mod:`imaplib` (loopback, plaintext) and server CPU per command, for
``NOOP`` after ``UNSELECT`` (no check, no mailbox poll), ``NOOP`` with INBOX
selected (check from the last reading, and the mailbox poll every
selected-state command makes), the same with a commit to ``keys.db`` by
another connection before each command (so every check reads the keystore
in the pool), and ``UID FETCH 1 (FLAGS)``.  A script to run by hand, not a
timed test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import Server, add_account, check_ok, load_note, login, machine, work_directory
from measure import server_cpu

from transcoder.keys.keystore import KeyStore
from transcoder.keys.view_epochs import KeystoreWatch

ACCOUNT = "epoch@example.org"
MESSAGE = b"From: a@example.org\r\nSubject: x\r\n\r\nhello\r\n"


def timed(server: Server, count: int, command: Callable[[], Any]) -> tuple[list[float], float]:
    """Latencies of ``count`` runs of ``command`` and the server's CPU seconds per run."""
    cpu = server_cpu(server.pid)
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        command()
        latencies.append(time.perf_counter() - start)
    return latencies, (server_cpu(server.pid) - cpu) / count


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def row(name: str, latencies: Sequence[float], cpu: float) -> str:
    """One line of the table, in milliseconds."""
    figures = (statistics.median(latencies), percentile(latencies, 0.95), cpu)
    return f"{name:44} " + " ".join(f"{value * 1000:9.3f}" for value in figures)


def steps(scratch: Path, count: int) -> tuple[float, float]:
    """Microseconds of one ``data_version`` and of one epoch read (no thread hop)."""
    with KeyStore(scratch / "keys.db") as store:
        watch = KeystoreWatch(scratch / "keys.db")
        start = time.perf_counter()
        for _ in range(count):
            watch.version()
        version = (time.perf_counter() - start) / count
        now = datetime.now(UTC)
        start = time.perf_counter()
        for _ in range(count):
            store.view_inputs(ACCOUNT, now, with_keys=False)
        read = (time.perf_counter() - start) / count
        watch.close()
    return version * 1e6, read * 1e6


def server_rows(data: Path, count: int) -> dict[str, tuple[list[float], float]]:
    """The four rows of part 2."""
    add_account(data, ACCOUNT)
    rows = {}
    with Server(data) as server:
        imap = login(server, ACCOUNT)
        check_ok(imap.append("INBOX", None, None, MESSAGE), "APPEND")
        check_ok(imap.select("INBOX"), "SELECT")
        noop = lambda: check_ok(imap.noop(), "NOOP")  # noqa: E731
        rows["NOOP, selected"] = timed(server, count, noop)
        with KeyStore(data / "keys.db") as other:

            def commit_then_noop() -> None:
                with other._transaction() as db:  # a commit changing nothing
                    db.execute("UPDATE server_views SET changed_at = changed_at")
                noop()

            rows["NOOP, selected, keys.db committed before each"] = timed(
                server, count, commit_then_noop
            )
        fetch = lambda: check_ok(imap.uid("FETCH", "1", "(FLAGS)"), "FETCH")  # noqa: E731
        rows["UID FETCH 1 (FLAGS), selected"] = timed(server, count, fetch)
        check_ok(imap.unselect(), "UNSELECT")
        rows["NOOP, authenticated (no check, no poll)"] = timed(server, count, noop)
        imap.logout()
    return rows


def main() -> None:
    """Parse the options, run both parts, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=2000, help="commands per row")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    options = parser.parse_args()
    with work_directory("view-epoch-", options.keep) as scratch:
        version_us, read_us = steps(scratch, options.commands)
        rows = server_rows(scratch / "data", options.commands)
    print(f"{machine()}; {load_note()}\n")
    print(f"one data_version: {version_us:.1f} us; one epoch read: {read_us:.1f} us (+ thread hop)")
    print(f"\n{options.commands} commands per row, one connection, loopback, imaplib\n")
    print(f"{'per command, ms':44} {'p50':>9} {'p95':>9} {'CPU':>9}")
    for name, (latencies, cpu) in rows.items():
        print(row(name, latencies, cpu))
    reread = statistics.median(rows["NOOP, selected, keys.db committed before each"][0])
    cached = statistics.median(rows["NOOP, selected"][0])
    print(f"\na check that reads the keystore in the pool: +{(reread - cached) * 1000:.3f} ms p50")


if __name__ == "__main__":
    main()
