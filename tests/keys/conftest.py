"""Key-test helpers, re-exported from :mod:`tests.keyfactory` for older imports.

The ``pgp_keys`` session fixture is defined in :mod:`tests.keyfactory` and
registered for the whole suite in ``tests/conftest.py``, so that the protocol
and integration tests share the one set of generated keys.

The keystore tests run against both engines: ``engine`` is ``sqlite`` (a
file in the test's directory) or ``postgresql`` (a fresh database on the
session's real PostgreSQL server, :mod:`tests.postgres`); ``open_store``
opens the test's keystore -- again, for the tests that reopen it or open a
second connection as ``transcoder-admin`` does.
"""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.keyfactory import UID_ALICE, GpgHome, PgpKeys
from transcoder.keys.keystore import KeyStore, KeyStoreBase

__all__ = ["UID_ALICE", "GpgHome", "PgpKeys"]

OpenStore = Callable[..., KeyStoreBase]


@pytest.fixture
def audit_log() -> list[dict[str, Any]]:
    """The audit records the store writes."""
    return []


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> str:
    """The keystore engine under test."""
    return str(request.param)


@pytest.fixture
def open_store(request: pytest.FixtureRequest, engine: str, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens the test's keystore (``audit=`` as KeyStore takes it); all closed at the end."""
    opened: list[KeyStoreBase] = []
    if engine == "sqlite":
        path = tmp_path / "keys.db"

        def make(**kwargs: Any) -> KeyStoreBase:
            return KeyStore(path, **kwargs)

    else:
        from transcoder.keys.pg_keystore import PgKeyStore

        dsn = request.getfixturevalue("postgresql").new_database()

        def make(**kwargs: Any) -> KeyStoreBase:
            return PgKeyStore(dsn, **kwargs)

    def opener(**kwargs: Any) -> KeyStoreBase:
        store = make(**kwargs)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: OpenStore, audit_log: list[dict[str, Any]]) -> KeyStoreBase:
    """A keystore in a fresh file or database, auditing into ``audit_log``."""
    return open_store(audit=audit_log.append)
