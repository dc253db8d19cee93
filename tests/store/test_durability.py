"""What an OK promises survives a crash: STORE's renames are fsync'ed, once per command.

A flag change renames the message file; only an fsync of ``cur/`` makes a
rename durable.  The store does it once per STORE, after the last rename
and before the caller can answer (issue 10).  The real ``fsync_dir`` runs;
the test only watches when and on what.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.mail.imap4 import MessageSet

from tests.store.helpers import append, message
from transcoder import files
from transcoder.store import MailboxSession, MaildirAccount
from transcoder.store import mailbox as mailbox_module


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, list[str]]]:
    """Each directory fsync'ed by the mailbox state, with what ``cur/`` held at that moment."""
    seen: list[tuple[Path, list[str]]] = []

    def watched(path: Path) -> None:
        seen.append((path, sorted(os.listdir(path)) if path.name == "cur" else []))
        files.fsync_dir(path)

    monkeypatch.setattr(mailbox_module, "fsync_dir", watched)
    return seen


def five(account: MaildirAccount) -> MailboxSession:
    for i in range(5):
        append(account, message(f"m{i}"))
    session = account.select("INBOX")
    assert session is not None
    return session


def test_store_fsyncs_cur_once_after_every_rename(
    account: MaildirAccount, fsyncs: list[tuple[Path, list[str]]]
) -> None:
    """STORE 1:5 +FLAGS (\\Seen): one fsync of cur/, when all five files carry S."""
    session = five(account)
    fsyncs.clear()
    result = session.store(MessageSet(1, 5), ["\\Seen"], 1, uid=False)
    assert len(result) == 5
    ((path, names),) = fsyncs
    assert path == account.root / "cur"
    assert len(names) == 5 and all(name.endswith(":2,S") for name in names)


def test_store_that_changes_nothing_does_not_fsync(
    account: MaildirAccount, fsyncs: list[tuple[Path, list[str]]]
) -> None:
    """Flags already set: no rename, so nothing to make durable."""
    session = five(account)
    session.store(MessageSet(1, 5), ["\\Seen"], 1, uid=False)
    fsyncs.clear()
    session.store(MessageSet(1, 5), ["\\Seen"], 1, uid=False)
    assert fsyncs == []


def test_a_failed_store_still_fsyncs_what_it_renamed(
    account: MaildirAccount, fsyncs: list[tuple[Path, list[str]]]
) -> None:
    """A STORE cut short (here: a directory in the way of one rename) keeps the others durable."""
    session = five(account)
    fsyncs.clear()
    cur = account.root / "cur"
    last = sorted(os.listdir(cur))[-1]
    blocker = cur / (last.partition(":")[0] + ":2,S")
    blocker.mkdir()  # rename() onto a non-empty directory fails with IsADirectoryError
    (blocker / "x").write_bytes(b"")
    with pytest.raises(IsADirectoryError):
        session.store(MessageSet(1, 5), ["\\Seen"], 1, uid=False)
    ((path, names),) = fsyncs
    assert path == cur
    assert sum(name.endswith(":2,S") and not (cur / name).is_dir() for name in names) == 4
