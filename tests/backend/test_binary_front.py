"""BINARY (RFC 3516) through the backend front for a policy-OFF user, against Dovecot's own answers.

A policy-OFF user's FETCH of RFC 3501 items is relayed to the backend
(:mod:`transcoder.backend.fetch_relay`); BINARY items take the IMAP layer's
path, which decodes the octets the front loads from Dovecot.  The decoded
octets of every leaf part, their BINARY.SIZE and partials must then be
exactly what Dovecot itself answers to the same BINARY FETCH (Dovecot
implements RFC 3516); the literal's form may differ (Dovecot sends ``~{n}``
for every part, RFC 3516 section 4.3 asks for a plain literal when there is
no NUL).  UNKNOWN-CTE is answered the same way, and an APPEND of a literal8
through the front reaches Dovecot's store octet for octet.

Where the two differ by design (docs/design.md, BINARY): ``BINARY[]`` is
the stored message here (Dovecot rewrites every part as binary), and a
``message/rfc822`` part is refused with ``NO [CLIENTBUG]`` (RFC 9051
section 6.4.5: leaf parts only; Dovecot serves it).
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.backend.front import direct_login, front_login, running_front
from tests.imap.test_binary import DAMAGED, TEXT_QP, UNKNOWN
from tests.integration.conftest import RunningServer
from tests.integration.transcoding import with_attachment
from tests.mime.test_binary import attachment_message
from transcoder.backend.dovecot import DovecotInstance

pytestmark = pytest.mark.integration

ALICE = "alice@example.org"
#: The leaf parts compared, per message (uid order of delivery below).
LEAVES = {1: ("1", "2", "3.1"), 2: ("1", "2", "3"), 3: ("1",)}


@pytest.fixture(scope="module")
def front(dovecot: DovecotInstance) -> Iterator[RunningServer]:
    """A front before the module's Dovecot, alice's INBOX holding the test messages."""
    for message in (
        attachment_message(),
        with_attachment("FRONT-BINARY"),
        TEXT_QP,
        UNKNOWN,
        DAMAGED,
    ):
        dovecot.drop(ALICE, message)
    with running_front(dovecot) as server:
        yield server


def literal(data: list[Any], label: bytes) -> bytes:
    """The octets of the literal (``{n}`` or ``~{n}``) labelled ``label`` in imaplib's data."""
    for item in data:
        if isinstance(item, tuple) and re.search(re.escape(label) + rb" ~?\{\d+\}$", item[0]):
            return bytes(item[1])
    raise AssertionError((label, data))


def size(data: list[Any], label: bytes) -> int:
    """The number after ``label`` in imaplib's data."""
    text = b" ".join(i[0] if isinstance(i, tuple) else i for i in data)
    match = re.search(re.escape(label) + rb" (\d+)", text)
    assert match, (label, data)
    return int(match.group(1))


def uid_fetch(imap: imaplib.IMAP4, uid: int, items: str) -> list[Any]:
    """``UID FETCH``, which must succeed."""
    typ, data = imap.uid("FETCH", str(uid), items)
    assert typ == "OK", data
    return data


def test_front_advertises_binary(front: RunningServer) -> None:
    """The front lists BINARY after login."""
    imap = front_login(front, ALICE)
    try:
        assert "BINARY" in imap.capabilities or "BINARY" in imap.capability()[1][0].decode()
    finally:
        imap.logout()


@pytest.mark.parametrize("uid", sorted(LEAVES))
def test_leaf_parts_match_dovecot(front: RunningServer, dovecot: DovecotInstance, uid: int) -> None:
    """BINARY.PEEK[n], BINARY.SIZE[n] and a partial of every leaf: the front's are Dovecot's."""
    ours, theirs = front_login(front, ALICE), direct_login(dovecot, ALICE)
    try:
        for part in LEAVES[uid]:
            items = f"(BINARY.PEEK[{part}] BINARY.SIZE[{part}] BINARY.PEEK[{part}]<7.100>)"
            mine, dovecots = uid_fetch(ours, uid, items), uid_fetch(theirs, uid, items)
            label = f"BINARY[{part}]".encode()
            assert literal(mine, label) == literal(dovecots, label), part
            assert literal(mine, label + b"<7>") == literal(dovecots, label + b"<7>"), part
            size_label = f"BINARY.SIZE[{part}]".encode()
            assert size(mine, size_label) == size(dovecots, size_label) == len(literal(mine, label))
    finally:
        ours.logout()
        theirs.logout()


def test_nul_content_is_literal8_at_the_front(front: RunningServer) -> None:
    """The base64 attachment (NUL inside) goes out as ~{n}; the QP text as a plain literal."""
    imap = front_login(front, ALICE)
    try:
        data = uid_fetch(imap, 1, "(BINARY.PEEK[1] BINARY.PEEK[2])")
        heads = [item[0] for item in data if isinstance(item, tuple)]
        assert any(re.search(rb"BINARY\[2\] ~\{512\}$", h) for h in heads), heads
        assert any(re.search(rb"BINARY\[1\] \{\d+\}$", h) for h in heads), heads
    finally:
        imap.logout()


def test_undecodable_parts_like_dovecot(front: RunningServer, dovecot: DovecotInstance) -> None:
    """x-uuencode: NO [UNKNOWN-CTE]; damaged base64: NO [PARSE] -- at the front as at Dovecot."""
    ours, theirs = front_login(front, ALICE), direct_login(dovecot, ALICE)
    try:
        for imap in (ours, theirs):
            typ, data = imap.uid("FETCH", "4", "(BINARY.PEEK[1])")
            assert typ == "NO" and data[0].startswith(b"[UNKNOWN-CTE]"), data
            typ, data = imap.uid("FETCH", "5", "(BINARY.PEEK[1])")
            assert typ == "NO" and data[0].startswith(b"[PARSE]"), data
    finally:
        ours.logout()
        theirs.logout()


def test_binary_sets_seen_at_dovecot(front: RunningServer, dovecot: DovecotInstance) -> None:
    """BINARY[1] through the front sets \\Seen on Dovecot's copy; BINARY.PEEK did not."""
    imap = front_login(front, ALICE)
    try:
        uid_fetch(imap, 3, "(BINARY.PEEK[1] BINARY.SIZE[1])")
        direct = direct_login(dovecot, ALICE)
        assert b"\\Seen" not in uid_fetch(direct, 3, "(FLAGS)")[0]
        uid_fetch(imap, 3, "(BINARY[1])")
        imap.noop()
        direct.noop()
        assert b"\\Seen" in uid_fetch(direct, 3, "(FLAGS)")[0]
        direct.logout()
    finally:
        imap.logout()


def test_append_literal8_through_the_front(front: RunningServer, dovecot: DovecotInstance) -> None:
    """APPEND ~{n} with NUL through the front reaches Dovecot as a literal8, octets intact.

    Dovecot stores the binary part re-encoded in base64 (RFC 3516 section
    4.4 lets a server change the CTE without loss), so the check is BINARY[1]
    -- Dovecot's own and the front's -- not BODY[].  Sent as a plain literal,
    Dovecot would have replaced each NUL with 0x80.
    """
    message = (
        b"Subject: raw\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01 binary \x00\xff\r\n"
    )
    imap = front_login(front, ALICE)
    try:
        tag = imap._new_tag()
        imap.send(tag + b" APPEND INBOX ~{%d}\r\n" % len(message))
        assert imap.readline().startswith(b"+")
        imap.send(message + b"\r\n")
        answer = imap.readline()
        while answer.startswith(b"* "):
            answer = imap.readline()
        assert answer.startswith(tag + b" OK"), answer
        uid = int(re.search(rb"APPENDUID \d+ (\d+)", answer).group(1))  # type: ignore[union-attr]
    finally:
        imap.logout()
    body = message.partition(b"\r\n\r\n")[2]
    direct, again = direct_login(dovecot, ALICE), front_login(front, ALICE)
    try:
        assert b"Subject: raw" in literal(uid_fetch(direct, uid, "(BODY.PEEK[])"), b"BODY[]")
        assert literal(uid_fetch(direct, uid, "(BINARY.PEEK[1])"), b"BINARY[1]") == body
        assert literal(uid_fetch(again, uid, "(BINARY.PEEK[1])"), b"BINARY[1]") == body
    finally:
        direct.logout()
        again.logout()
