"""The Maildir on disk: UID persistence, external delivery, flags in file names, crash safety."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.mail.imap4 import MessageSet

from tests.store.helpers import (
    ADDRESS,
    NOW,
    append,
    deliver_like_postfix,
    make_store,
    message,
    result_of,
)
from transcoder.errors import InvalidAccount, MailboxNotFound, MailboxNotFoundTryCreate
from transcoder.store import MaildirAccount, MaildirMessage, MaildirStore


def inbox_dir(store: MaildirStore) -> Path:
    return store.root / ADDRESS


def only(found: list[tuple[int, MaildirMessage]]) -> MaildirMessage:
    assert len(found) == 1
    return found[0][1]


def test_account_layout(store: MaildirStore) -> None:
    """An account is <root>/<address lowercased>/ with INBOX's cur/new/tmp created on first use."""
    account = store.account("Alice@Example.ORG")
    assert account.address == ADDRESS
    assert {p.name for p in (store.root / ADDRESS).iterdir()} >= {"cur", "new", "tmp"}


@pytest.mark.parametrize(
    "bad", ["", "../etc", "a/b", ".hidden", "a\\b", "a b", "a\x00b", "x" * 300]
)
def test_unsafe_account_names_are_refused(store: MaildirStore, bad: str) -> None:
    """Addresses that are not one safe path component raise InvalidAccount."""
    with pytest.raises(InvalidAccount):
        store.account(bad)


def test_uids_and_uidvalidity_persist(
    tmp_path: Path, clock: Clock, account: MaildirAccount
) -> None:
    """A new store on the same directory sees the same UIDs, UIDVALIDITY and UIDNEXT."""
    uids = [append(account, message(f"m{i}")) for i in range(3)]
    session = account.select("INBOX")
    assert session is not None
    before = (session.getUIDValidity(), session.getUIDNext(), list(session.uids))
    assert uids == [1, 2, 3]
    assert before[0] == int(clock.seconds())

    again = make_store(tmp_path / "mail", clock).account(ADDRESS).select("INBOX")
    assert again is not None
    assert (again.getUIDValidity(), again.getUIDNext(), list(again.uids)) == before


def test_uids_are_never_reused(account: MaildirAccount, tmp_path: Path, clock: Clock) -> None:
    """After an expunge and a restart, the next message gets a higher UID than any before."""
    append(account, message("a"))
    append(account, message("b"))
    session = account.select("INBOX")
    assert session is not None
    session.store(MessageSet(2), ["\\Deleted"], 1, uid=True)
    session.expunge()
    account2 = make_store(tmp_path / "mail", clock).account(ADDRESS)
    assert append(account2, message("c")) == 3


def test_external_delivery_appears_after_poll(store: MaildirStore, account: MaildirAccount) -> None:
    """A file dropped into new/ with LF line ends gets a fresh UID at the next poll, served CRLF."""
    session = account.select("INBOX")
    assert session is not None
    raw = message("postfix", body="line one\nline two\n", eol="\n")
    deliver_like_postfix(inbox_dir(store), "1700000000.V801I2M3.mx", raw)

    updates = session.poll()
    assert (updates.exists, updates.recent) == (1, 1)
    msg = only(session.fetch(MessageSet(1), uid=False))
    expected = raw.replace(b"\n", b"\r\n")
    with msg.open() as f:
        assert f.read() == expected
    assert msg.size == len(expected)
    assert msg.uid == 1 and "\\Recent" in msg.flags
    assert os.listdir(inbox_dir(store) / "new") == []
    assert os.listdir(inbox_dir(store) / "cur") == ["1700000000.V801I2M3.mx:2,"]


def test_deliver_writes_new_without_uid(store: MaildirStore, account: MaildirAccount) -> None:
    """store.deliver() puts the message into new/ (no UID yet); the next SELECT numbers it."""
    name = store.deliver(ADDRESS, io.BytesIO(message("delivered", eol="\n")))
    assert os.listdir(inbox_dir(store) / "new") == [name]
    assert (
        not (inbox_dir(store) / "transcoder-uidlist").exists()
        or b"delivered" not in (inbox_dir(store) / "transcoder-uidlist").read_bytes()
    )
    session = account.select("INBOX")
    assert session is not None
    assert session.getMessageCount() == 1 and session.getUID(1) == 1


def test_deliver_to_missing_mailbox(store: MaildirStore) -> None:
    """Delivery into a mailbox that does not exist is refused."""
    with pytest.raises(MailboxNotFound):
        store.deliver(ADDRESS, io.BytesIO(message()), mailbox="Nope")


def test_flags_live_in_file_names_and_survive_restart(
    tmp_path: Path, clock: Clock, store: MaildirStore, account: MaildirAccount
) -> None:
    """STORE renames the file with the Maildir info letters; a new store reads them back."""
    append(account, message())
    session = account.select("INBOX")
    assert session is not None
    result = session.store(MessageSet(1), ["\\Seen", "\\Flagged", "\\Answered"], 1, uid=False)
    assert set(result[1]) >= {"\\Seen", "\\Flagged", "\\Answered"}
    (name,) = os.listdir(inbox_dir(store) / "cur")
    assert name.endswith(":2,FRS")
    session.store(MessageSet(1), ["\\Deleted", "\\Draft"], 0, uid=False)
    (name,) = os.listdir(inbox_dir(store) / "cur")
    assert name.endswith(":2,DT")
    clock.advance(1)  # the \\Recent claim is written within a second

    again = make_store(tmp_path / "mail", clock).account(ADDRESS).select("INBOX")
    assert again is not None
    assert set(only(again.fetch(MessageSet(1), uid=False)).flags) == {"\\Deleted", "\\Draft"}


def test_keywords_use_dovecot_letters(
    tmp_path: Path, clock: Clock, store: MaildirStore, account: MaildirAccount
) -> None:
    """Keywords become letters a..z mapped in dovecot-keywords, and survive a restart."""
    append(account, message(), flags=["$Forwarded"])
    session = account.select("INBOX")
    assert session is not None
    session.store(MessageSet(1), ["Work"], 1, uid=True)
    (name,) = os.listdir(inbox_dir(store) / "cur")
    assert name.endswith(":2,ab")
    assert (inbox_dir(store) / "dovecot-keywords").read_text() == "0 $Forwarded\n1 Work\n"
    assert {"$Forwarded", "Work"} <= set(session.getFlags())

    again = make_store(tmp_path / "mail", clock).account(ADDRESS).select("INBOX")
    assert again is not None
    assert set(only(again.fetch(MessageSet(1), uid=False)).flags) >= {"$Forwarded", "Work"}


def test_flag_changes_by_other_programs_are_reported(
    store: MaildirStore, account: MaildirAccount
) -> None:
    """A file renamed by another program (new info letters) shows as a FLAGS update."""
    append(account, message())
    session = account.select("INBOX")
    assert session is not None
    session.poll()
    cur = inbox_dir(store) / "cur"
    (name,) = os.listdir(cur)
    os.rename(cur / name, cur / (name.split(":")[0] + ":2,FS"))
    updates = session.poll()
    assert updates.flags == ((1, 1, ("\\Flagged", "\\Seen", "\\Recent")),)


def test_expunge_by_other_program_is_reported(store: MaildirStore, account: MaildirAccount) -> None:
    """A message file removed by another program is reported as expunged."""
    append(account, message("a"))
    append(account, message("b"))
    session = account.select("INBOX")
    assert session is not None
    first = sorted(os.listdir(inbox_dir(store) / "cur"))[0]
    os.unlink(inbox_dir(store) / "cur" / first)
    assert session.poll().expunged == (1,)
    assert list(session.uids) == [2]


def test_file_left_in_tmp_is_invisible(store: MaildirStore, account: MaildirAccount) -> None:
    """A half-written message in tmp/ (a crash mid-APPEND) is never shown."""
    (inbox_dir(store) / "tmp" / "1700000000.crash.host").write_bytes(b"Subject: partial\r\n")
    session = account.select("INBOX")
    assert session is not None
    assert session.getMessageCount() == 0
    assert session.poll().exists is None


def test_crash_between_pickup_and_unlink_does_not_duplicate(
    store: MaildirStore, account: MaildirAccount
) -> None:
    """A new/ file whose base name is already in cur/ is debris: removed, not counted twice."""
    deliver_like_postfix(inbox_dir(store), "1700000000.A.mx", message("x", eol="\n"))
    session = account.select("INBOX")
    assert session is not None and session.getMessageCount() == 1
    # As if the server had died after the rename into cur/ and before unlinking new/:
    (inbox_dir(store) / "new" / "1700000000.A.mx").write_bytes(message("x", eol="\n"))
    assert session.poll().exists is None
    assert session.getMessageCount() == 1
    assert os.listdir(inbox_dir(store) / "new") == []


def test_unknown_file_in_cur_is_canonicalised(store: MaildirStore, account: MaildirAccount) -> None:
    """A file another program put straight into cur/ gets a UID, keeps its flags, and is CRLF."""
    raw = message("mutt", eol="\n")
    path = inbox_dir(store) / "cur" / "1690000000.M1.host:2,S"
    path.write_bytes(raw)
    os.utime(path, (1690000000, 1690000000))
    session = account.select("INBOX")
    assert session is not None
    msg = only(session.fetch(MessageSet(1), uid=True))
    assert msg.flags[0] == "\\Seen"
    assert path.read_bytes() == raw.replace(b"\n", b"\r\n")
    assert msg.internal_date.timestamp() == 1690000000


def test_corrupt_uidlist_gets_new_uidvalidity(
    tmp_path: Path, clock: Clock, store: MaildirStore, account: MaildirAccount
) -> None:
    """A damaged uid list means a new, higher UIDVALIDITY; messages are numbered afresh."""
    append(account, message("a"))
    append(account, message("b"))
    session = account.select("INBOX")
    assert session is not None
    old_validity = session.getUIDValidity()
    (inbox_dir(store) / "transcoder-uidlist").write_bytes(b"transcoder-uidlist 1 V\x00garbage")
    again = make_store(tmp_path / "mail", clock).account(ADDRESS).select("INBOX")
    assert again is not None
    assert again.getUIDValidity() > old_validity
    assert list(again.uids) == [1, 2]


def test_lost_uidlist_never_reuses_uidvalidity(
    tmp_path: Path, clock: Clock, store: MaildirStore, account: MaildirAccount
) -> None:
    """A deleted uid list gets a UIDVALIDITY never used before in this account."""
    append(account, message())
    validity = account.select("INBOX").getUIDValidity()  # type: ignore[union-attr]
    (inbox_dir(store) / "transcoder-uidlist").unlink()
    again = make_store(tmp_path / "mail", clock).account(ADDRESS).select("INBOX")
    assert again is not None and again.getUIDValidity() > validity


def test_two_processes_share_uids(tmp_path: Path, clock: Clock, account: MaildirAccount) -> None:
    """Two stores (as two server processes) on one Maildir never hand out the same UID."""
    other = make_store(tmp_path / "mail", clock, seed=1).account(ADDRESS)
    mine = account.select("INBOX")
    theirs = other.select("INBOX")
    assert mine is not None and theirs is not None
    uids = [append(account, message("a")), append(other, message("b"))]
    uids.append(append(account, message("c")))
    assert uids == [1, 2, 3]
    assert mine.poll().exists == 3
    assert theirs.poll().exists == 3
    assert list(mine.uids) == list(theirs.uids) == [1, 2, 3]


def test_append_sets_internal_date_and_flags(account: MaildirAccount) -> None:
    """APPEND with a date sets the file mtime (INTERNALDATE); flags go into the file name."""
    uid = append(
        account, message(), flags=["\\Seen", "Work"], internal_date=b"22-Feb-2008 17:06:23 +0100"
    )
    session = account.select("INBOX")
    assert session is not None
    msg = only(session.fetch(MessageSet(uid), uid=True))
    assert msg.internal_date.timestamp() == 1203696383
    assert msg.getInternalDate() == "Fri, 22 Feb 2008 16:06:23 +0000"
    assert {"\\Seen", "Work"} <= set(msg.flags)


def test_append_canonicalises_line_ends(account: MaildirAccount) -> None:
    """APPENDed octets are stored CRLF-canonical; size is the stored size."""
    append(account, b"Subject: x\n\nbody\n")
    session = account.select("INBOX")
    assert session is not None
    msg = only(session.fetch(MessageSet(1), uid=False))
    with msg.open() as f:
        assert f.read() == b"Subject: x\r\n\r\nbody\r\n"
    assert msg.getSize() == 20


def test_append_to_missing_mailbox_asks_to_create(account: MaildirAccount) -> None:
    """APPEND to a mailbox that does not exist fails with TRYCREATE and leaves nothing behind."""
    with pytest.raises(MailboxNotFoundTryCreate):
        result_of(account.append("Nope", io.BytesIO(message())))


def test_failed_append_leaves_nothing(store: MaildirStore, account: MaildirAccount) -> None:
    """An APPEND whose source fails mid-copy leaves no file in tmp/, new/ or cur/."""

    class Broken(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            raise OSError("connection lost")

    with pytest.raises(OSError):
        result_of(account.append("INBOX", Broken()))
    for sub in ("tmp", "new", "cur"):
        assert os.listdir(inbox_dir(store) / sub) == []


def test_base_name_clash_never_replaces_a_message(
    tmp_path: Path, clock: Clock, account: MaildirAccount
) -> None:
    """Two writers that pick the same base name both keep their message (no overwrite)."""
    twin = make_store(tmp_path / "mail", clock).account(ADDRESS)  # same names as `account`
    append(account, message("first"))
    append(twin, message("second"))
    session = account.select("INBOX")
    assert session is not None
    bodies = []
    for _, msg in session.fetch(MessageSet(1, None), uid=True):
        with msg.open() as f:
            bodies.append(f.read())
    assert bodies == [message("first"), message("second")]


def test_same_tick_change_is_not_missed(store: MaildirStore, account: MaildirAccount) -> None:
    """A delivery right after a scan is found even if new/ keeps the same mtime (same tick)."""
    clock = Clock()
    clock.advance(time.time())  # "now": the directories changed within the last second
    live = make_store(store.root, clock, seed=2).account(ADDRESS)
    session = live.select("INBOX")
    assert session is not None
    new = inbox_dir(store) / "new"
    before = os.stat(new)
    deliver_like_postfix(inbox_dir(store), "1.same.tick", message("tick", eol="\n"))
    os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert session.poll().exists == 1


def test_unchanged_settled_mailbox_is_not_rescanned(store: MaildirStore) -> None:
    """Once the directories are older than a second, a poll only stats them (no listing)."""
    clock = Clock()
    clock.advance(time.time() + 10)
    live = make_store(store.root, clock, seed=3).account(ADDRESS)
    session = live.select("INBOX")
    assert session is not None
    new = inbox_dir(store) / "new"
    before = os.stat(new)
    deliver_like_postfix(inbox_dir(store), "1.hidden", message("hidden", eol="\n"))
    os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert session.poll().exists is None  # directory "unchanged": not listed again
    os.utime(new)
    assert session.poll().exists == 1


def test_stale_tmp_files_are_cleaned(store: MaildirStore, account: MaildirAccount) -> None:
    """Files left in tmp/ for more than 36 hours are removed when a mailbox is opened."""
    tmp = inbox_dir(store) / "tmp"
    old, fresh = tmp / "old.crash", tmp / "fresh.writing"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (NOW - 37 * 3600, NOW - 37 * 3600))
    os.utime(fresh, (NOW - 60, NOW - 60))
    assert account.select("INBOX") is not None
    assert os.listdir(tmp) == ["fresh.writing"]
