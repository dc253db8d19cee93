"""What an OK promises survives a crash: STORE's renames are fsync'ed, once per command.

A flag change renames the message file; only an fsync of ``cur/`` makes a
rename durable.  The store does it once per STORE, after the last rename
and before the caller can answer (issue 10).  The real ``fsync_dir`` runs;
the test only watches when and on what.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.mail.imap4 import MessageSet
from twisted.python.failure import Failure

from tests.store.helpers import ADDRESS, Worker, append, make_store, message
from transcoder import files
from transcoder.store import MailboxSession, MaildirAccount, MaildirStore
from transcoder.store import group_sync as group_sync_module
from transcoder.store import mailbox as mailbox_module
from transcoder.store.mailbox import LIST_SAVE_DELAY


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, list[str]]]:
    """Each directory fsync'ed by the mailbox state, with what ``cur/`` held at that moment."""
    seen: list[tuple[Path, list[str]]] = []

    def watched(path: Path) -> None:
        seen.append((path, sorted(os.listdir(path)) if path.name == "cur" else []))
        files.fsync_dir(path)

    monkeypatch.setattr(mailbox_module, "fsync_dir", watched)
    return seen


@pytest.fixture
def group_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, list[str]]]:
    """The same, for the fsyncs run by the group commit (in the worker)."""
    seen: list[tuple[Path, list[str]]] = []

    def watched(path: Path) -> None:
        seen.append((path, sorted(os.listdir(path))))
        files.fsync_dir(path)

    monkeypatch.setattr(group_sync_module, "fsync_dir", watched)
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


def fired(d: defer.Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def test_stores_meanwhile_share_one_fsync_that_starts_after_them(
    store: MaildirStore, account: MaildirAccount, group_fsyncs: list[tuple[Path, list[str]]]
) -> None:
    """Group commit: a STORE is answered only after an fsync begun after its rename;
    STOREs that arrive during an fsync share the next one."""
    a = five(account)
    b = account.select("INBOX")
    assert b is not None
    worker = Worker()
    store.run_blocking = worker
    first = fired(a.store_durably(MessageSet(1), ["\\Seen"], 1, uid=False))
    assert first == [] and len(worker.calls) == 1
    second = fired(b.store_durably(MessageSet(2), ["\\Flagged"], 1, uid=False))
    third = fired(a.store_durably(MessageSet(3), ["\\Seen"], 1, uid=False))
    assert len(worker.calls) == 1  # the first fsync is still running: they wait
    worker.run_next()
    assert first == [{1: ["\\Seen", "\\Recent"]}]
    assert second == [] and third == []
    assert len(worker.calls) == 1  # one fsync for both
    worker.run_next()
    assert second == [{2: ["\\Flagged"]}] and third == [{3: ["\\Seen", "\\Recent"]}]
    assert worker.calls == []
    cur = account.root / "cur"
    assert [path for path, _ in group_fsyncs] == [cur, cur]
    assert sum(n.endswith(":2,S") or n.endswith(":2,F") for n in group_fsyncs[1][1]) == 3
    # Nothing renamed since, nothing running: no fsync to wait for.
    assert fired(a.flags_durable()) == [None] and worker.calls == []


def test_a_failed_group_fsync_fails_every_store_of_its_batch(
    store: MaildirStore, account: MaildirAccount
) -> None:
    """The fsync itself fails (the directory went away): the STORE is not answered OK."""
    a = five(account)
    worker = Worker()
    store.run_blocking = worker
    outcome = fired(a.store_durably(MessageSet(1), ["\\Seen"], 1, uid=False))
    cur = account.root / "cur"
    cur.rename(account.root / "cur.away")
    try:
        worker.run_next()
    finally:
        (account.root / "cur.away").rename(cur)
    (failure,) = outcome
    assert isinstance(failure, Failure) and failure.check(FileNotFoundError)


def uidlist_bases(account: MaildirAccount) -> list[str]:
    lines = (account.root / "transcoder-uidlist").read_text().splitlines()[1:]
    return [line.split(" ", 1)[1] for line in lines]


def test_expunge_answers_after_a_shared_fsync_and_never_reuses_uids(
    tmp_path: Path, clock: Clock, store: MaildirStore, account: MaildirAccount
) -> None:
    """EXPUNGE: durable when answered; the uid list drops the entry within a second,
    and a crash before that never gives the UID out again."""
    a = five(account)
    worker = Worker()
    store.run_blocking = worker
    a.store(MessageSet(5), ["\\Deleted"], 1, uid=False)
    base = a.state.records[5].base
    outcome = fired(a.expunge_durably())
    assert outcome == [] and not any(n.startswith(base) for n in os.listdir(account.root / "cur"))
    worker.run_next()  # the fsync of cur/
    assert outcome == [[5]]
    assert base in uidlist_bases(account)  # not rewritten for the expunge alone
    # A crash now: another process reads the list as it is.
    other = make_store(tmp_path / "mail", clock, seed=7).account(ADDRESS)
    assert append(other, message("after")) == 6
    clock.advance(LIST_SAVE_DELAY)
    assert base not in uidlist_bases(account)
    assert clock.getDelayedCalls() == []


def test_uid_expunge_durably_removes_only_the_named_messages(account: MaildirAccount) -> None:
    """UID EXPUNGE through the durable path keeps RFC 4315's rule: only \\Deleted among the UIDs."""
    a = five(account)
    a.store(MessageSet(1, 5), ["\\Deleted"], 1, uid=False)
    assert fired(a.expunge_durably([2, 4])) == [[4, 2]]
    assert list(a.uids) == [1, 3, 5]
