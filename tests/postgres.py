"""A real PostgreSQL for the tests: :class:`transcoder.cluster.postgres.PostgresServer`.

The start and stop code is shared with ``examples/cluster/`` and
``benchmarks/cluster.py`` (:mod:`transcoder.cluster.postgres`: initdb into a
temporary directory, unprivileged, on loopback, started and stopped by PID);
here a missing PostgreSQL is a skip (which ``CI=true`` turns into a failure).

``postgresql`` (session) is one server for the whole run; tests take a
fresh database of it each (:meth:`PostgresServer.new_database`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from transcoder.cluster import postgres as _shared
from transcoder.cluster.postgres import INITDB_OPTIONS, SERVER_OPTIONS, postgres_bin


class PostgresServer(_shared.PostgresServer):
    """The shared :class:`~transcoder.cluster.postgres.PostgresServer`; skips when missing."""

    def __init__(self, primary: _shared.PostgresServer | None = None) -> None:
        try:
            super().__init__(primary)
        except _shared.PostgresMissing as missing:
            pytest.skip(str(missing))


@pytest.fixture(scope="session")
def postgresql() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the test run (started on first use)."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


__all__ = ["INITDB_OPTIONS", "SERVER_OPTIONS", "PostgresServer", "postgres_bin", "postgresql"]
