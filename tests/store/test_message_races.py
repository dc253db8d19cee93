"""A message file renamed or removed under a reader (issue 10, item 6), on real Maildir files.

A flag change renames ``base:2,`` to ``base:2,FS`` -- in this process, in
Dovecot or in an MDA -- at any moment; the readers here hold a name that has
just gone stale, in the reactor thread and in a worker thread (where
transcoding opens messages).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.mail.imap4 import MessageSet

from tests.store.helpers import ADDRESS, append, make_store, message
from transcoder.store import MaildirAccount, MaildirMessage, MaildirStore
from transcoder.store.message import MessageExpunged

DATA = message("race", "Some text that must come back whole.\r\n")


def stored(account: MaildirAccount) -> MaildirMessage:
    """A message appended to INBOX, as a fresh session's FETCH gets it."""
    uid = append(account, DATA)
    session = account.select("INBOX")
    assert session is not None
    ((_, msg),) = session.fetch(MessageSet(uid), uid=True)
    return msg


def rename_like_dovecot(account: MaildirAccount, info: str = "FS") -> Path:
    """Rename INBOX's only file to new ``:2,`` info, as another program's flag change does."""
    (old,) = (account.root / "cur").iterdir()
    new = old.with_name(old.name.partition(":")[0] + ":2," + info)
    os.rename(old, new)
    return new


def in_worker_thread(action: Callable[[], Any]) -> Any:
    """``action()`` in a real thread other than the reactor's; its result or its exception."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(action())
        except BaseException as e:  # handed back to the test's thread
            outcome.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return outcome[0]


def read_all(msg: MaildirMessage) -> bytes:
    with msg.open() as fp:
        return fp.read()


def test_worker_thread_finds_a_file_another_program_renamed(account: MaildirAccount) -> None:
    """open() in a worker thread after an external flag rename reads the message whole."""
    msg = stored(account)
    rename_like_dovecot(account)
    assert in_worker_thread(lambda: read_all(msg)) == DATA


def test_worker_thread_finds_a_file_another_session_renamed(
    account: MaildirAccount, store: MaildirStore
) -> None:
    """Another session's flag change does not stop a reader holding the old name."""
    msg = stored(account)
    stale = msg.path()
    other = store.account(ADDRESS).select("INBOX")
    assert other is not None
    other.store(MessageSet(1), ["\\Flagged"], 1, uid=True)
    assert msg.path() != stale and not os.path.exists(stale)
    assert in_worker_thread(lambda: read_all(msg)) == DATA


def test_reactor_thread_finds_a_renamed_file_without_rescanning(account: MaildirAccount) -> None:
    """On the reactor thread the file is found by its base name; the shared state is untouched."""
    msg = stored(account)
    before = dict(msg._state.records)
    renamed = rename_like_dovecot(account, "S")
    assert read_all(msg) == DATA
    assert msg._state.records == before  # learnt at the next poll, not behind the session
    assert renamed.exists()


def test_open_file_survives_rename_and_expunge(account: MaildirAccount) -> None:
    """A file once opened is read to its end though renamed, then unlinked, meanwhile."""
    msg = stored(account)
    with msg.open() as fp:
        head = fp.read(10)
        renamed = rename_like_dovecot(account)
        renamed.unlink()
        assert head + fp.read() == DATA


def test_expunged_file_raises_message_expunged(account: MaildirAccount) -> None:
    """A file gone under every name is MessageExpunged (a FileNotFoundError), in any thread."""
    msg = stored(account)
    rename_like_dovecot(account).unlink()
    with pytest.raises(MessageExpunged):
        msg.open()
    error = in_worker_thread(lambda: read_all(msg))
    assert isinstance(error, MessageExpunged) and isinstance(error, FileNotFoundError)


def test_link_to_a_missing_directory_is_not_an_expunge(account: MaildirAccount) -> None:
    """COPY's link into a directory that is gone fails as such, not as an expunged message."""
    msg = stored(account)
    with pytest.raises(FileNotFoundError) as raised:
        msg.link_to(account.root / "no-such-dir" / "copy")
    assert not isinstance(raised.value, MessageExpunged)


def test_link_to_follows_a_renamed_file(account: MaildirAccount, tmp_path: Path) -> None:
    """COPY links the message even when another program renamed it after the lookup."""
    msg = stored(account)
    rename_like_dovecot(account)
    msg.link_to(tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == DATA


def test_another_process_store_sees_the_same_file(tmp_path: Path, clock: Clock) -> None:
    """Two stores on one Maildir (two server processes): one's flag change, the other reads on."""
    first = make_store(tmp_path / "mail", clock).account(ADDRESS)
    msg = stored(first)
    second = make_store(tmp_path / "mail", clock, seed=1).account(ADDRESS).select("INBOX")
    assert second is not None
    second.store(MessageSet(1), ["\\Seen", "\\Flagged"], 0, uid=True)
    assert in_worker_thread(lambda: read_all(msg)) == DATA


def test_readers_never_miss_a_file_renamed_without_pause(account: MaildirAccount) -> None:
    """Two worker threads open a message 1,000 times each while a third renames it non-stop."""
    msg = stored(account)
    stop = threading.Event()

    def renamer() -> None:
        infos = ("S", "FS", "F", "RS", "")
        turn = 0
        while not stop.is_set():
            turn += 1
            (old,) = (account.root / "cur").iterdir()
            os.rename(old, old.with_name(old.name.partition(":")[0] + ":2," + infos[turn % 5]))

    def reads() -> list[bytes | BaseException]:
        out: list[bytes | BaseException] = []
        for _ in range(1000):
            try:
                out.append(read_all(msg))
            except BaseException as e:  # counted, not raised, in the thread
                out.append(e)
        return out

    moving = threading.Thread(target=renamer)
    moving.start()
    try:
        results: list[list[bytes | BaseException]] = []
        readers = [threading.Thread(target=lambda: results.append(reads())) for _ in range(2)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
    finally:
        stop.set()
        moving.join()
    outcomes = [outcome for result in results for outcome in result]
    assert len(outcomes) == 2000 and all(outcome == DATA for outcome in outcomes)
