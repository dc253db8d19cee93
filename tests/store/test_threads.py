"""APPEND with the real reactor and thread pool: copying off the reactor thread, UIDs on it."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest_twisted
from twisted.internet import defer
from twisted.mail.imap4 import MessageSet

from tests.store.helpers import ADDRESS, message
from transcoder.store import MaildirStore


class RecordingSource(io.BytesIO):
    """A message source that notes which threads read it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.threads: set[str] = set()

    def read(self, n: int | None = -1) -> bytes:
        self.threads.add(threading.current_thread().name)
        return super().read(n)


@pytest_twisted.ensureDeferred
async def test_append_copies_in_a_worker_thread(tmp_path: Path) -> None:
    """The octets are read in a worker thread; the UID arrives on the reactor thread."""
    account = MaildirStore(tmp_path / "mail").account(ADDRESS)
    source = RecordingSource(message("threaded", eol="\n"))
    uid = await account.append("INBOX", source, ["\\Seen"])
    assert uid == 1
    assert source.threads and threading.main_thread().name not in source.threads
    session = account.select("INBOX")
    assert session is not None
    ((_, msg),) = session.fetch(MessageSet(1), uid=True)
    with msg.open() as f:
        assert f.read() == message("threaded")


@pytest_twisted.ensureDeferred
async def test_concurrent_appends_get_distinct_uids(tmp_path: Path) -> None:
    """Many APPENDs in flight at once get distinct, gap-free UIDs and all land on disk."""
    account = MaildirStore(tmp_path / "mail").account(ADDRESS)
    uids = await defer.gatherResults(
        [account.append("INBOX", io.BytesIO(message(f"m{i}"))) for i in range(20)]
    )
    assert sorted(uids) == list(range(1, 21))
    session = account.select("INBOX")
    assert session is not None and session.getMessageCount() == 20
