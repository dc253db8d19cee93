"""The keystore on PostgreSQL (issue 14, part 1): its cost next to SQLite's, and propagation.

Starts a PostgreSQL of its own (initdb into a temporary directory, as the
tests do: :mod:`tests.postgres`) and measures, in the same run:

1. What a command pays for the keystore, SQLite (``keys.db``) and PostgreSQL
   side by side: ``view_inputs(with_keys=False)`` (the epoch check a
   selected-state command makes when the keystore changed), ``view_inputs``
   with keys (every FETCH command) and ``put`` (XKEY PUT): median and 95th
   percentile over ``--operations`` calls, and the ratio PostgreSQL / SQLite;
   for PostgreSQL also the round trips one call makes (counted in libpq's
   protocol trace: each turn from sending to receiving is one).
2. Commit to notification: a key stored through one keystore until another
   process's listener (:class:`~transcoder.keys.pg_keystore.ChangeListener`)
   hears it -- the delay before other fronts drop views and re-read epochs.
3. XKEY PUT through front A to the first FETCH on front B that uses the key
   (two ``twistd -n transcoder --keystore`` processes): from the PUT's OK to
   the FETCH's answer, the FETCH in a fresh SELECT; each view is then opened
   with ``openssl cms -decrypt`` and the new key (issue target: < 100 ms).

The load average is printed with the figures: other processes on the
machine make them noisy.

    python benchmarks/keystore_pg.py [--operations 500] [--notifications 200] [--puts 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import (
    ENCRYPTED,
    REPO,
    Server,
    add_account,
    check_ok,
    load_note,
    login,
    make_smime_certificate,
    small_message,
    work_directory,
)

sys.path.insert(0, str(REPO))

import itertools

from psycopg import pq

from tests.keys.factories import ALICE, T0, key, later
from tests.postgres import PostgresServer
from transcoder.client import XKeyClient
from transcoder.keys.keystore import KeyStore, KeyStoreBase
from transcoder.keys.model import PolicyMode
from transcoder.keys.pg_keystore import ChangeListener, PgKeyStore


def ms(values: list[float]) -> str:
    """Median and 95th percentile of ``values`` (seconds), in milliseconds."""
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"median {statistics.median(ordered) * 1000:7.3f} ms  p95 {p95 * 1000:7.3f} ms"


def timed(function: Any, count: int) -> list[float]:
    """``count`` wall-clock durations of ``function(i)``."""
    durations = []
    for i in range(count):
        start = time.perf_counter()
        function(i)
        durations.append(time.perf_counter() - start)
    return durations


def operations(store: KeyStoreBase, count: int) -> dict[str, list[float]]:
    """The three operations' durations on ``store`` (an account with a key, MODE ALWAYS)."""
    store.put(ALICE, key("first"), T0)
    store.set_policy(ALICE, T0, mode=PolicyMode.ALWAYS)
    return {
        "epoch check (view_inputs, no keys)": timed(
            lambda i: store.view_inputs(ALICE, T0, with_keys=False), count
        ),
        "FETCH read (view_inputs, keys)": timed(lambda i: store.view_inputs(ALICE, T0), count),
        "XKEY PUT (put)": timed(lambda i: store.put(ALICE, key(f"k{i}"), later(i + 1)), count),
    }


def round_trips(store: PgKeyStore, function: Any) -> int:
    """How many times ``function()`` waits for PostgreSQL (``store`` has one connection).

    libpq's trace lists the messages sent (``F``) and received (``B``); a
    round trip is a turn from sending to receiving, so pipelined statements
    count once.
    """
    pool = store._connections()
    with tempfile.TemporaryFile("w+") as trace:
        connection = pool.getconn()
        connection.pgconn.trace(trace.fileno())
        connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        pool.putconn(connection)
        function()
        connection = pool.getconn()
        connection.pgconn.untrace()
        pool.putconn(connection)
        trace.seek(0)
        sides = [line[0] for line in trace if line[:2] in ("F\t", "B\t")]
    return sum(1 for a, b in itertools.pairwise(sides) if a == "F" and b == "B")


def trips_per_operation(store: PgKeyStore) -> dict[str, int]:
    """Round trips of one call of each operation (after :func:`operations` ran)."""
    return {
        "epoch check (view_inputs, no keys)": round_trips(
            store, lambda: store.view_inputs(ALICE, T0, with_keys=False)
        ),
        "FETCH read (view_inputs, keys)": round_trips(store, lambda: store.view_inputs(ALICE, T0)),
        "XKEY PUT (put)": round_trips(store, lambda: store.put(ALICE, key("rt"), later(10**6))),
    }


def notification_latency(dsn: str, count: int) -> list[float]:
    """Commit of a put (on return) to the listener hearing it, ``count`` times."""
    heard = threading.Event()
    up = threading.Event()
    listener = ChangeListener(dsn, lambda account: heard.set(), lambda ok: ok and up.set())
    listener.start()
    delays = []
    try:
        if not up.wait(30):
            raise RuntimeError("listener did not connect")
        with PgKeyStore(dsn) as store:
            for i in range(count):
                heard.clear()
                store.put(ALICE, key(f"n{i}"), later(i + 1))
                committed = time.perf_counter()
                if not heard.wait(10):
                    raise RuntimeError("notification not heard")
                delays.append(time.perf_counter() - committed)
    finally:
        listener.stop()
    return delays


def put_to_fetch(root: Path, dsn: str, puts: int) -> list[float]:
    """XKEY PUT through front A, then SELECT + FETCH on front B: OK of the PUT to the view."""
    secret = root / "view-secret"
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o600)
    fronts = []
    for name in ("a", "b"):
        data = root / name / "data"
        add_account(data, ENCRYPTED)
        mail = data / "mail" / ENCRYPTED / "new"
        (mail / "1.bench").write_bytes(small_message(1))
        front = Server(data, ("--keystore", dsn, "--view-secret", str(secret)))
        front.start()
        fronts.append(front)
    a, b = fronts
    delays = []
    try:
        writer = XKeyClient(login(a, ENCRYPTED))
        reader = login(b, ENCRYPTED)
        for i in range(puts):
            keydir = root / f"key{i}"
            keydir.mkdir()
            cert, private = make_smime_certificate(keydir, ENCRYPTED, 2048)
            writer.provision(cert.read_bytes())
            if i == 0:
                writer.set_policy(mode="always", format="smime")
            done = time.perf_counter()
            check_ok(reader.select("INBOX"), "SELECT")
            data = check_ok(reader.uid("FETCH", "1:*", "(BODY.PEEK[])"), "FETCH")
            delays.append(time.perf_counter() - done)
            view = next(part[1] for part in data if isinstance(part, tuple))
            (keydir / "view.eml").write_bytes(view)
            opened = subprocess.run(
                [
                    *("openssl", "cms", "-decrypt", "-in", str(keydir / "view.eml")),
                    *("-recip", str(cert), "-inkey", str(private)),
                ],
                capture_output=True,
                check=False,
            )
            if opened.returncode != 0 or b"benchmark message 1" not in opened.stdout:
                raise RuntimeError(f"view {i} does not open with the new key")
            reader.unselect()
        reader.logout()
    finally:
        for front in fronts:
            front.stop()
    return delays


def main() -> None:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=500)
    parser.add_argument("--notifications", type=int, default=200)
    parser.add_argument("--puts", type=int, default=10)
    args = parser.parse_args()
    postgres = PostgresServer()
    postgres.start()
    try:
        with work_directory("keystore-pg") as root:
            print(load_note())
            print(f"1. keystore operations, {args.operations} each (same run)")
            sqlite = operations(KeyStore(root / "keys.db"), args.operations)
            with PgKeyStore(postgres.new_database(), pool_size=1) as pg:
                shared = operations(pg, args.operations)
                trips = trips_per_operation(pg)
            for name, durations in sqlite.items():
                ratio = statistics.median(shared[name]) / statistics.median(durations)
                print(f"   {name}")
                print(f"     SQLite      {ms(durations)}")
                print(
                    f"     PostgreSQL  {ms(shared[name])}   ratio {ratio:5.1f}x"
                    f"   {trips[name]} round trips"
                )
            delays = notification_latency(postgres.new_database(), args.notifications)
            print(f"2. commit -> another process's listener, {len(delays)} changes")
            print(f"   {ms(delays)}  max {max(delays) * 1000:.3f} ms")
            delays = put_to_fetch(root, postgres.new_database(), args.puts)
            print(f"3. XKEY PUT OK on front A -> SELECT + FETCH answered on front B, {len(delays)}")
            print(f"   {ms(delays)}  max {max(delays) * 1000:.3f} ms  (target < 100 ms)")
            print(load_note())
    finally:
        postgres.remove()


if __name__ == "__main__":
    main()
