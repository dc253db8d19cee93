"""Fixtures for the Maildir store tests: real Maildirs under tmp_path, a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from tests.store.helpers import ADDRESS, NOW, make_store
from transcoder.store import MaildirAccount, MaildirStore


@pytest.fixture
def clock() -> Clock:
    """A fake reactor clock set to NOW."""
    c = Clock()
    c.advance(NOW)
    return c


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> MaildirStore:
    """A fresh store under tmp_path/mail."""
    return make_store(tmp_path / "mail", clock)


@pytest.fixture
def account(store: MaildirStore) -> MaildirAccount:
    """Alice's account."""
    return store.account(ADDRESS)
