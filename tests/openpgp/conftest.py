"""Fixtures for the OpenPGP adapter tests: real keys, a real gpg, a fresh keyring."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.openpgp.gpgkeys import kill_agents, pgp
from transcoder.openpgp.keyring import Keyring

__all__ = ["keyring", "pgp"]


@pytest.fixture
def keyring(tmp_path: Path) -> Iterator[Keyring]:
    """A fresh server keyring under ``tmp_path`` (its home is checked for agents on exit)."""
    ring = Keyring(tmp_path / "data" / "gnupg")
    yield ring
    kill_agents(ring.home)  # none should exist; see test_keyring's agent tests
