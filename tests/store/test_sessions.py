"""Sessions on a mailbox: own sequence numbers, polling, \\Recent, FETCH/STORE/EXPUNGE/COPY."""

from __future__ import annotations

import io
import os

import pytest
from twisted.internet.task import Clock
from twisted.mail.imap4 import MessageSet

from tests.store.helpers import append, message, result_of
from transcoder.errors import MailboxReadOnly, MessageNotFound
from transcoder.store import MailboxSession, MailboxUpdates, MaildirAccount
from transcoder.store.flags import InvalidFlag
from transcoder.store.mailbox import LIST_SAVE_DELAY


def select(account: MaildirAccount, name: str = "INBOX", rw: bool = True) -> MailboxSession:
    session = account.select(name, rw)
    assert session is not None
    return session


def seqs_uids(session: MailboxSession, messages: MessageSet, uid: bool) -> list[tuple[int, int]]:
    return [(seq, msg.uid) for seq, msg in session.fetch(messages, uid)]


@pytest.fixture
def five(account: MaildirAccount) -> MaildirAccount:
    """An account whose INBOX holds five messages, UIDs 1..5."""
    for i in range(5):
        append(account, message(f"m{i}"))
    return account


def test_expunge_in_one_session_reaches_the_other(five: MaildirAccount) -> None:
    """EXPUNGE in A: A gets descending seqs; B sees them at its poll, in its own numbering."""
    a, b = select(five), select(five)
    a.store(MessageSet(2) + MessageSet(4), ["\\Deleted"], 1, uid=False)
    assert a.expunge() == [4, 2]
    assert list(a.uids) == [1, 3, 5]
    assert list(b.uids) == [1, 2, 3, 4, 5]  # B was not told yet
    updates = b.poll()
    assert updates.expunged == (4, 2)
    assert list(b.uids) == [1, 3, 5]
    assert a.poll() == MailboxUpdates()  # nothing echoed back to A


def test_append_in_one_session_is_exists_in_the_other(five: MaildirAccount) -> None:
    """A message APPENDed through A appears in B (and in A) as EXISTS at their next poll."""
    a, b = select(five), select(five)
    uid = result_of(a.addMessage(io.BytesIO(message("new")), ["\\Seen"], None))
    assert uid == 6
    assert b.poll().exists == 6
    assert a.poll().exists == 6
    assert b.getUID(6) == 6


def test_flag_change_in_one_session_reaches_the_other(five: MaildirAccount) -> None:
    """STORE in A shows up as FLAGS in B's poll, and is not echoed back to A."""
    a, b = select(five), select(five)
    a.poll(), b.poll()
    a.store(MessageSet(3), ["\\Flagged"], 1, uid=True)
    assert b.poll().flags == ((3, 3, ("\\Flagged",)),)
    assert a.poll().flags == ()
    assert b.poll().flags == ()  # reported once


def test_flags_use_sequence_numbers_after_expunges(five: MaildirAccount) -> None:
    """Flag updates are numbered after the same poll's expunges."""
    a, b = select(five), select(five)
    a.store(MessageSet(1), ["\\Deleted"], 1, uid=True)
    a.expunge()
    a.store(MessageSet(5), ["\\Seen"], 1, uid=True)
    updates = b.poll()
    assert updates.expunged == (1,)
    assert updates.flags == ((4, 5, ("\\Seen",)),)


def test_no_expunge_while_forbidden(five: MaildirAccount) -> None:
    """poll(allow_expunge=False) keeps expunged messages (fetch skips them) until a later poll."""
    a, b = select(five), select(five)
    a.store(MessageSet(2), ["\\Deleted"], 1, uid=True)
    a.expunge()
    append(five, message("late"))
    updates = b.poll(allow_expunge=False)
    assert updates.expunged == ()
    assert updates.exists == 6  # EXISTS may be sent; the old message still counts
    assert b.getMessageCount() == 6
    assert seqs_uids(b, MessageSet(1, 3), uid=False) == [(1, 1), (3, 3)]  # seq 2 vanished
    assert b.store(MessageSet(2), ["\\Seen"], 1, uid=False) == {}
    later = b.poll()
    assert later.expunged == (2,)
    assert later.exists == 5
    assert list(b.uids) == [1, 3, 4, 5, 6]


def test_recent_goes_to_the_first_session(five: MaildirAccount) -> None:
    """\\Recent belongs to the first read-write session that sees a message (RFC 3501 2.3.2)."""
    examine = select(five, rw=False)
    assert examine.getRecentCount() == 5  # EXAMINE sees them but does not claim them
    first = select(five)
    assert first.getRecentCount() == 5
    second = select(five)
    assert second.getRecentCount() == 0
    append(five, message("six"))
    assert second.poll().recent == 1
    assert first.poll().recent is None
    assert "\\Recent" in second.fetch(MessageSet(6), uid=True)[0][1].flags
    assert "\\Recent" not in first.fetch(MessageSet(6), uid=True)[0][1].flags


def test_fetch_star_and_ranges(five: MaildirAccount) -> None:
    """'*' is the last message / highest UID; n:* with n beyond the end still includes the last."""
    s = select(five)
    assert seqs_uids(s, MessageSet(None), uid=False) == [(5, 5)]
    assert seqs_uids(s, MessageSet(4, None), uid=False) == [(4, 4), (5, 5)]
    assert seqs_uids(s, MessageSet(9, None), uid=False) == [(5, 5)]
    assert seqs_uids(s, MessageSet(100, None), uid=True) == [(5, 5)]
    assert seqs_uids(s, MessageSet(2, 3) + MessageSet(5), uid=True) == [(2, 2), (3, 3), (5, 5)]
    assert seqs_uids(s, MessageSet(6, 10), uid=True) == []
    assert seqs_uids(s, MessageSet(1, 2**32 - 1), uid=True) == [(i, i) for i in range(1, 6)]


def test_uid_ranges_after_expunge(five: MaildirAccount) -> None:
    """UID FETCH maps UIDs to the session's sequence numbers, gaps included."""
    s = select(five)
    s.store(MessageSet(2, 3), ["\\Deleted"], 1, uid=True)
    s.expunge()
    assert seqs_uids(s, MessageSet(1, None), uid=True) == [(1, 1), (2, 4), (3, 5)]
    assert seqs_uids(s, MessageSet(2, 4), uid=True) == [(2, 4)]


def test_empty_mailbox_fetch(account: MaildirAccount) -> None:
    """FETCH of '*' or 1:* in an empty mailbox returns nothing."""
    s = select(account)
    assert s.fetch(MessageSet(1, None), uid=False) == []
    assert s.fetch(MessageSet(None), uid=True) == []


def test_store_modes(five: MaildirAccount) -> None:
    """STORE +FLAGS adds, -FLAGS removes, FLAGS replaces; the result maps seq -> new flags."""
    s = select(five, rw=True)
    s.poll()
    assert s.store(MessageSet(1, 2), ["\\Seen", "Work"], 1, uid=False) == {
        1: ["\\Seen", "Work", "\\Recent"],
        2: ["\\Seen", "Work", "\\Recent"],
    }
    assert s.store(MessageSet(1), ["work"], -1, uid=False) == {1: ["\\Seen", "\\Recent"]}
    assert s.store(MessageSet(2), ["\\Answered"], 0, uid=False) == {2: ["\\Answered", "\\Recent"]}
    assert s.store(MessageSet(3), ["\\Recent"], 1, uid=False) == {3: ["\\Recent"]}


def test_store_refuses_bad_flags_and_readonly(five: MaildirAccount) -> None:
    """STORE of an unknown system flag is refused; an EXAMINEd mailbox refuses any STORE."""
    with pytest.raises(InvalidFlag):
        select(five).store(MessageSet(1), ["\\Bogus"], 1, uid=False)
    with pytest.raises(MailboxReadOnly):
        select(five, rw=False).store(MessageSet(1), ["\\Seen"], 1, uid=False)
    with pytest.raises(MailboxReadOnly):
        select(five, rw=False).expunge()


def test_uid_expunge_only_named(five: MaildirAccount) -> None:
    """UID EXPUNGE removes only the \\Deleted messages among the given UIDs (RFC 4315)."""
    s = select(five)
    s.store(MessageSet(1, 3), ["\\Deleted"], 1, uid=True)
    assert s.uid_expunge([2, 3, 4]) == [3, 2]
    assert list(s.uids) == [1, 4, 5]


def test_counts_and_status(five: MaildirAccount) -> None:
    """UNSEEN, first unseen, STATUS items and PERMANENTFLAGS reflect the mailbox."""
    s = select(five)
    s.store(MessageSet(1, 2), ["\\Seen"], 1, uid=False)
    assert s.getUnseenCount() == 3
    assert s.first_unseen() == 3
    status = select(five, rw=False).requestStatus(["MESSAGES", b"unseen", "UIDNEXT", "RECENT"])
    assert status == {"MESSAGES": 5, "UNSEEN": 3, "UIDNEXT": 6, "RECENT": 0}
    assert s.permanent_flags()[-1] == "\\*"
    assert select(five, rw=False).permanent_flags() == []
    assert s.getUIDNext() == 6 and s.getHierarchicalDelimiter() == "/"
    with pytest.raises(MessageNotFound):
        s.getUID(6)


def test_copy_hard_links_and_keeps_flags_and_date(five: MaildirAccount) -> None:
    """COPY links the file into the target, keeps flags (not \\Recent) and INTERNALDATE."""
    five.create("Archive")
    s = select(five)
    s.store(MessageSet(2), ["\\Flagged", "Work"], 1, uid=True)
    source = s.fetch(MessageSet(2), uid=True)[0][1]
    target = select(five, "Archive")
    new_uid = result_of(target.copy(source))
    assert new_uid == 1
    copied = select(five, "Archive").fetch(MessageSet(1), uid=True)[0][1]
    assert {"\\Flagged", "Work"} <= set(copied.flags)
    assert copied.internal_date == source.internal_date
    assert os.stat(copied.path()).st_ino == os.stat(source.path()).st_ino
    with copied.open() as a, source.open() as b:
        assert a.read() == b.read()


def test_copy_of_expunged_message_fails(five: MaildirAccount) -> None:
    """COPY of a message whose file is gone fails with MessageNotFound."""
    s = select(five)
    source = s.fetch(MessageSet(1), uid=True)[0][1]
    os.unlink(source.path())
    with pytest.raises(MessageNotFound):
        result_of(select(five).copy(source))


def test_readonly_session_refuses_add(five: MaildirAccount) -> None:
    """addMessage and copy on an EXAMINEd mailbox fail with READ-ONLY."""
    ro = select(five, rw=False)
    with pytest.raises(MailboxReadOnly):
        result_of(ro.addMessage(io.BytesIO(message()), [], None))


def test_open_follows_flag_renames_by_other_programs(five: MaildirAccount) -> None:
    """A message object still opens after another program renamed its file (flag change)."""
    s = select(five)
    msg = s.fetch(MessageSet(1), uid=True)[0][1]
    path = msg.path()
    os.rename(path, path.split(":")[0] + ":2,S")
    with msg.open() as f:
        assert f.read(5) == b"From:"


def test_open_of_expunged_message_raises(five: MaildirAccount) -> None:
    """Opening a message expunged meanwhile raises FileNotFoundError (FETCH reports it vanished)."""
    s = select(five)
    msg = s.fetch(MessageSet(1), uid=True)[0][1]
    os.unlink(msg.path())
    with pytest.raises(FileNotFoundError):
        msg.open()


def test_listeners(five: MaildirAccount) -> None:
    """removeListener of an unknown listener raises ValueError, as IMailbox says."""
    s = select(five)
    listener = object()
    s.addListener(listener)
    s.removeListener(listener)
    with pytest.raises(ValueError):
        s.removeListener(listener)


def test_destroy_marks_noselect(five: MaildirAccount) -> None:
    """destroy() gives the session the \\Noselect attribute (IMailbox contract)."""
    s = select(five)
    s.destroy()
    assert "\\Noselect" in s.getFlags()


def recent_on_disk(account: MaildirAccount) -> int:
    """The ``R`` field of INBOX's uid list: the highest UID some session was told of."""
    head = (account.root / "transcoder-uidlist").read_text().split("\n", 1)[0]
    (field,) = [word for word in head.split() if word.startswith("R")]
    return int(field[1:])


def test_recent_claims_are_written_within_a_second_or_at_close(
    clock: Clock, five: MaildirAccount
) -> None:
    """A \\Recent claim holds in this process at once; the uid list gets it within
    LIST_SAVE_DELAY or when the session closes, whichever comes first (issue 10)."""
    first = select(five)
    assert first.getRecentCount() == 5
    assert recent_on_disk(five) == 0  # not written yet, one fsync'ed rewrite spared
    assert select(five).getRecentCount() == 0  # yet no other session here gets them
    clock.advance(LIST_SAVE_DELAY)
    assert recent_on_disk(five) == 5
    append(five, message("six"))
    assert first.poll().recent == 6
    assert recent_on_disk(five) == 5
    first.close()
    assert recent_on_disk(five) == 6
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(2, 4, [2, 3, 4]), (3, None, [3, 4, 5]), (7, None, [5]), (6, 9, []), (5, 5, [5])],
)
def test_one_range_resolves_as_any_set(
    five: MaildirAccount, low: int, high: int | None, expected: list[int]
) -> None:
    """A single sequence range (the fast path) names what the general path names:
    ``n:*`` past the end is ``*:n`` (RFC 3501 9, seq-range), beyond the end is nothing."""
    session = select(five)
    single = [seq for seq, _ in seqs_uids(session, MessageSet(low, high), uid=False)]
    assert single == expected
    # UIDs 1..5 are sequence numbers 1..5 here; UID sets always take the general path.
    assert [seq for seq, _ in seqs_uids(session, MessageSet(low, high), uid=True)] == expected
