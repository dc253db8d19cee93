"""What an OK promises survives a crash: STORE's renames are fsync'ed, once per command.

A flag change renames the message file; only an fsync of ``cur/`` makes a
rename durable.  The store does it once per STORE, after the last rename
and before the caller can answer (issue 10).  The real ``fsync_dir`` runs;
the test only watches when and on what.
"""

from __future__ import annotations

import fcntl
import io
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
    group_fsyncs.clear()
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


def uidlist_uids(account: MaildirAccount) -> list[int]:
    lines = (account.root / "transcoder-uidlist").read_text().splitlines()[1:]
    return [int(line.split(" ", 1)[0]) for line in lines]


def lock_is_free(account: MaildirAccount) -> bool:
    """Whether another process could take the uid list lock now."""
    fd = os.open(account.root / "transcoder-uidlist.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_append_is_answered_and_shown_once_cur_and_the_uid_list_are_durable(
    store: MaildirStore, account: MaildirAccount, group_fsyncs: list[tuple[Path, list[str]]]
) -> None:
    """APPEND: the UID is taken at once, under the lock, which stays held (no other
    process reads a list without it) until cur/ and the list are on disk; only then is the
    APPEND answered and the message shown to sessions.  APPENDs meanwhile share one write."""
    session = five(account)
    group_fsyncs.clear()
    worker = Worker()
    store.run_blocking = worker
    first = fired(account.append("INBOX", io.BytesIO(message("six"))))
    second = fired(account.append("INBOX", io.BytesIO(message("seven"))))
    third = fired(account.append("INBOX", io.BytesIO(message("eight"))))
    worker.run_next()  # the copy of "six" into tmp/: its write of cur/ + uid list starts
    worker.run_next()  # copies of "seven" and "eight": their UIDs taken, they wait
    worker.run_next()
    assert len(worker.calls) == 1 and (first, second, third) == ([], [], [])
    assert not lock_is_free(account) and 6 not in uidlist_uids(account)
    assert session.poll().exists is None  # nothing shown before it is durable
    worker.run_next()  # the first write
    assert first == [6] and uidlist_uids(account)[-1] == 6
    assert session.poll().exists == 6
    assert second == [] and third == [] and not lock_is_free(account)
    worker.run_next()  # one write for both
    assert (second, third) == ([7], [8]) and uidlist_uids(account)[-2:] == [7, 8]
    assert worker.calls == [] and lock_is_free(account)
    assert session.poll().exists == 8
    assert [path.name for path, _ in group_fsyncs] == ["cur", "cur"]


def test_a_write_asked_while_one_runs_follows_it_never_overtakes(
    store: MaildirStore, account: MaildirAccount, clock: Clock
) -> None:
    """A uid list write wanted during a worker's write (here: an expunge's) runs after it,
    with the newer contents: the list on disk never goes back."""
    session = five(account)
    worker = Worker()
    store.run_blocking = worker
    appended = fired(account.append("INBOX", io.BytesIO(message("six"))))
    worker.run_next()
    session.store(MessageSet(1), ["\\Deleted"], 1, uid=False)
    session.expunge()
    session.state.save_list()  # would write now: runs after the APPEND's write instead
    assert len(worker.calls) == 1
    worker.run_next()
    assert appended == [6] and len(worker.calls) == 1
    worker.run_next()
    assert uidlist_uids(account) == [2, 3, 4, 5, 6]
    assert lock_is_free(account)


def test_recent_claims_and_expunged_entries_are_written_by_the_worker_once_it_exists(
    store: MaildirStore, account: MaildirAccount
) -> None:
    """After the first APPEND through the server's path, the uid list's catch-up writes
    (\\Recent claims, expunged entries) run in the worker too, off the reactor thread."""
    session = five(account)
    worker = Worker()
    store.run_blocking = worker
    fired(account.append("INBOX", io.BytesIO(message("six"))))
    worker.run_next()
    worker.run_next()
    assert session.poll().exists == 6  # claims \\Recent for 6 (in memory)
    session.store(MessageSet(1), ["\\Deleted"], 1, uid=False)
    session.expunge()
    session.close()  # what the list lacks is written now: by the worker
    assert len(worker.calls) == 1 and 1 in uidlist_uids(account)
    worker.run_next()
    assert uidlist_uids(account) == [2, 3, 4, 5, 6]
    head = (account.root / "transcoder-uidlist").read_text().split("\n", 1)[0]
    assert " R6 " in head
