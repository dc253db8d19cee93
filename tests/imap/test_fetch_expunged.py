"""FETCH of messages another session expunged before the FETCH began (RFC 2180 section 4.1).

This session has not been told of the EXPUNGE yet (RFC 3501 section 7.4.1:
not during FETCH), so its sequence numbers still name the message.  The
others are served and the FETCH ends ``NO [EXPUNGEISSUED]`` -- the same
answer as for a message expunged during the FETCH -- never a silent OK.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from twisted.mail import imap4

from tests.imap.harness import Session, second_session, selected_session
from tests.imap.test_fetch_races import MESSAGES, bodies
from transcoder.imap.fetch import named_count


@pytest.fixture
def expunged_elsewhere(tmp_path: Path) -> Session:
    """A session on INBOX (messages 1..3) whose message 2 another session has expunged."""
    session = selected_session(tmp_path, *MESSAGES)
    other = second_session(session)
    other.command(b"SELECT INBOX")
    other.command(b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    _, done = other.command(b"EXPUNGE")
    assert b"OK" in done, done
    return session


def completion(out: bytes) -> bytes:
    match = re.search(rb"^f (OK|NO|BAD).*$", out, re.M)
    assert match, out
    return match.group(0)


@pytest.mark.parametrize(
    ("command", "served"),
    [
        (b"FETCH 1:3 (BODY.PEEK[])", [1, 3]),
        (b"FETCH 2 (BODY.PEEK[])", []),
        (b"FETCH 1:* (BODY.PEEK[])", [1, 3]),
        (b"UID FETCH 1:* (BODY.PEEK[])", [1, 3]),
        (b"UID FETCH 2 (BODY.PEEK[])", []),
        (b"FETCH 2:3 (FLAGS)", None),
    ],
)
def test_a_message_expunged_before_the_fetch_is_expungeissued(
    expunged_elsewhere: Session, command: bytes, served: list[int] | None
) -> None:
    """The others are served, then NO [EXPUNGEISSUED]; the EXPUNGE is told once, not in FETCH."""
    expunged_elsewhere.send(b"f " + command + b"\r\n")
    out = expunged_elsewhere.output()
    assert completion(out).startswith(b"f NO [EXPUNGEISSUED]"), out
    if served is not None:
        assert bodies(out) == {n: MESSAGES[n - 1] for n in served}
    else:
        assert re.findall(rb"^\* (\d) FETCH", out, re.M) == [b"3"]
    lines, _ = expunged_elsewhere.command(b"NOOP")
    # Told at the next command -- or with a UID FETCH's answer (RFC 3501 7.4.1 allows it).
    told = b"\r\n".join(lines) if not command.startswith(b"UID") else out
    assert told.count(b"* 2 EXPUNGE") == 1, (out, lines)


@pytest.mark.parametrize(
    "command", [b"FETCH 1,3 (BODY.PEEK[])", b"UID FETCH 3,7:9 (FLAGS)", b"UID FETCH 4:* (UID)"]
)
def test_sets_not_naming_the_expunged_message_end_ok(
    expunged_elsewhere: Session, command: bytes
) -> None:
    """Messages that are all there (UIDs that never existed name nothing): a plain OK."""
    expunged_elsewhere.send(b"f " + command + b"\r\n")
    assert completion(expunged_elsewhere.output()).startswith(b"f OK")


class Snapshot:
    """A session's message list: UIDs by position, as imap4.IMailbox shows them."""

    def __init__(self, uids: list[int]) -> None:
        self.uids = uids

    def getMessageCount(self) -> int:
        return len(self.uids)

    def getUID(self, seq: int) -> int:
        return self.uids[seq - 1]


@pytest.mark.parametrize(
    ("spec", "uid", "expected"),
    [
        ("1:3", False, 3),
        ("2,2,1:2", False, 2),
        ("5:*", False, 6),
        ("*:5", False, 6),
        ("100:200", False, 0),
        ("1:*", True, 10),
        ("5:12", True, 4),
        ("31:*", True, 1),
        ("11:19,4,4:6", True, 5),
    ],
)
def test_named_count(spec: str, uid: bool, expected: int) -> None:
    """Messages of a snapshot a set names: overlaps once, ``*`` the last, UID gaps skipped."""
    snapshot = Snapshot([2, 4, 6, 8, 10, 12, 14, 16, 20, 30])
    messages = imap4.MessageSet()
    for part in spec.split(","):
        low, _, high = part.partition(":")
        first = None if low == "*" else int(low)
        last = first if not high else None if high == "*" else int(high)
        messages.add(first, last)
    assert named_count(snapshot, messages, uid) == expected
