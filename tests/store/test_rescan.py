"""Re-scans that compare only what changed: our own changes mixed with other programs'.

A scan of ``cur/`` compares the listing with the names the last scan saw
plus this process's own renames, unlinks and additions since (issue 10), so
whatever another program did in between -- in the same mtime tick as our
own change, even to a file we just renamed -- must still be found.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.task import Clock
from twisted.mail.imap4 import MessageSet

from tests.store.helpers import ADDRESS, append, make_store, message, run_now
from transcoder.store import MailboxSession, MailboxUpdates, MaildirAccount, MaildirStore


def inbox(store: MaildirStore) -> Path:
    return store.root / ADDRESS


def select(account: MaildirAccount) -> MailboxSession:
    session = account.select("INBOX")
    assert session is not None
    return session


def name_of(cur: Path, base: str) -> str:
    (name,) = [n for n in os.listdir(cur) if n.split(":")[0] == base]
    return name


def bases(session: MailboxSession) -> list[str]:
    return [session.state.records[uid].base for uid in session.uids]


def test_other_programs_changes_between_our_own_are_all_found(
    store: MaildirStore, account: MaildirAccount
) -> None:
    """Our STORE and EXPUNGE, then another program's rename, unlink and new file: all seen."""
    for i in range(5):
        append(account, message(f"m{i}"))
    session, other = select(account), select(account)
    cur = inbox(store) / "cur"
    b1, b2, b3, b4, _ = bases(session)
    session.store(MessageSet(1), ["\\Seen"], 1, uid=False)  # our own rename
    session.store(MessageSet(5), ["\\Deleted"], 1, uid=False)
    assert session.expunge() == [5]  # our own unlink
    os.rename(cur / name_of(cur, b2), cur / f"{b2}:2,F")  # theirs
    os.unlink(cur / name_of(cur, b3))
    (cur / "1700000100.M1.mutt:2,S").write_bytes(message("from mutt"))
    updates = session.poll()
    assert updates.expunged == (3,)
    assert updates.exists == 4
    assert updates.flags == ((2, 2, ("\\Flagged", "\\Recent")),)
    assert bases(session)[:3] == [b1, b2, b4]
    assert session.getUID(4) == 6
    # The other session learns of both processes' changes the same way.
    seen = other.poll()
    assert seen.expunged == (5, 3)
    assert seen.exists == 4
    assert {(seq, uid) for seq, uid, _ in seen.flags} == {(1, 1), (2, 2)}
    # And a fresh process reads the same numbering from the uid list.
    again = select(make_store(store.root, Clock(), seed=9).account(ADDRESS))
    assert list(again.uids) == [1, 2, 4, 6]


def test_file_we_renamed_then_renamed_again_elsewhere_is_found(
    store: MaildirStore, account: MaildirAccount
) -> None:
    """A flag change by another program right after ours, on the same message, is reported."""
    append(account, message())
    session = select(account)
    session.poll()
    session.store(MessageSet(1), ["\\Seen"], 1, uid=False)
    cur = inbox(store) / "cur"
    (name,) = os.listdir(cur)
    assert name.endswith(":2,S")
    os.rename(cur / name, cur / (name.split(":")[0] + ":2,FS"))
    assert session.poll().flags == ((1, 1, ("\\Flagged", "\\Seen", "\\Recent")),)


def test_a_second_file_with_a_known_base_name_keeps_the_first_sorted(
    store: MaildirStore, account: MaildirAccount
) -> None:
    """Two files with one base name (a copy left by a broken tool): one message, as before."""
    append(account, message(), flags=["\\Seen"])
    session = select(account)
    session.poll()
    cur = inbox(store) / "cur"
    (name,) = os.listdir(cur)
    base = name.split(":")[0]
    (cur / f"{base}:2,T").write_bytes(b"")  # sorts after ":2,S": ignored
    assert session.poll() == MailboxUpdates()
    (cur / f"{base}:2,D").write_bytes((cur / name).read_bytes())  # sorts before ":2,S"
    updates = session.poll()
    assert updates.exists is None and updates.expunged == ()
    assert updates.flags == ((1, 1, ("\\Draft", "\\Recent")),)
    assert session.getMessageCount() == 1


def test_uid_list_written_by_another_process_is_read_in_full(
    tmp_path: Path, clock: Clock, store: MaildirStore, account: MaildirAccount
) -> None:
    """Another process numbering a file we never listed: the next poll compares every message."""
    append(account, message("a"))
    mine = select(account)
    theirs = make_store(store.root, clock, seed=1).account(ADDRESS)
    append(theirs, message("b"))
    append(account, message("c"))
    assert mine.poll().exists == 3
    assert list(mine.uids) == [1, 2, 3]


def test_rescan_interval_delays_only_other_programs_changes(store: MaildirStore) -> None:
    """Within ``rescan_interval`` of a listing, another program's change waits for the next
    listing; this process's own changes reach every session at once."""
    clock = Clock()
    clock.advance(1_700_000_000)
    live = MaildirStore(store.root, clock, rescan_interval=0.05, run_blocking=run_now)
    account = live.account(ADDRESS)
    append(account, message("one"))
    a, b = select(account), select(account)
    cur = inbox(store) / "cur"
    clock.advance(1)
    assert a.poll() == MailboxUpdates()  # listed now
    (cur / "1700000100.M1.mutt:2,").write_bytes(message("from mutt"))
    a.store(MessageSet(1), ["\\Flagged"], 1, uid=False)  # ours: no listing needed
    append(account, message("two"))
    seen = b.poll()
    assert seen.exists == 2 and seen.flags == ((1, 1, ("\\Flagged",)),)
    clock.advance(0.049)
    assert b.poll() == MailboxUpdates()  # mutt's file: not listed yet
    clock.advance(0.002)
    assert b.poll().exists == 3  # listed again
    assert [a.state.records[uid].base for uid in b.uids][-1] == "1700000100.M1.mutt"


def test_rescan_interval_never_hides_a_file_a_change_needs(store: MaildirStore) -> None:
    """A flag change on a file another program renamed within the interval still lands."""
    clock = Clock()
    clock.advance(1_700_000_000)
    live = MaildirStore(store.root, clock, rescan_interval=60.0, run_blocking=run_now)
    account = live.account(ADDRESS)
    append(account, message("one"))
    session = select(account)
    session.poll()
    cur = inbox(store) / "cur"
    (name,) = os.listdir(cur)
    os.rename(cur / name, cur / (name.split(":")[0] + ":2,F"))
    assert session.store(MessageSet(1), ["\\Seen"], 1, uid=False) == {
        1: ["\\Flagged", "\\Seen", "\\Recent"]
    }
    (name,) = os.listdir(cur)
    assert name.endswith(":2,FS")
