"""Key-test helpers, re-exported from :mod:`tests.keyfactory` for older imports.

The ``pgp_keys`` session fixture is defined in :mod:`tests.keyfactory` and
registered for the whole suite in ``tests/conftest.py``, so that the protocol
and integration tests share the one set of generated keys.
"""

from pathlib import Path
from typing import Any

import pytest

from tests.keyfactory import UID_ALICE, GpgHome, PgpKeys
from transcoder.keys.keystore import KeyStore

__all__ = ["UID_ALICE", "GpgHome", "PgpKeys"]


@pytest.fixture
def audit_log() -> list[dict[str, Any]]:
    """The audit records the store writes."""
    return []


@pytest.fixture
def store(tmp_path: Path, audit_log: list[dict[str, Any]]) -> KeyStore:
    """A keystore in a fresh file, auditing into ``audit_log``."""
    return KeyStore(tmp_path / "keys.db", audit=audit_log.append)
