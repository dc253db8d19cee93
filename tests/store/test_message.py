"""Stored messages: lazy file access, headers, body and MIME parts (IMessage / IMessagePart)."""

from __future__ import annotations

import io

import pytest
from twisted.mail.imap4 import MessageSet

from tests.store.helpers import append
from transcoder.files import FileSlice
from transcoder.store import MaildirAccount, MaildirMessage

MULTIPART = (
    b"From: bob@example.org\r\n"
    b"Subject: parts\r\n"
    b"subject: second\r\n"
    b'Content-Type: multipart/mixed; boundary="XyZ"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--XyZ\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"first part\r\n"
    b"--XyZ\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--XyZ--\r\n"
)


def stored(account: MaildirAccount, data: bytes) -> MaildirMessage:
    uid = append(account, data)
    session = account.select("INBOX")
    assert session is not None
    ((_, msg),) = session.fetch(MessageSet(uid), uid=True)
    return msg


def test_file_slice_reads_window() -> None:
    """FileSlice reads, seeks and tells within its window only."""
    f = io.BufferedReader(FileSlice(io.BytesIO(b"0123456789"), 2, 7))
    assert f.read() == b"23456"
    f.seek(1)
    assert f.read(2) == b"34"
    assert f.tell() == 3
    f.seek(-1, io.SEEK_END)
    assert f.read() == b"6"


def test_file_slice_closes_its_file_unless_told_not_to() -> None:
    """Closing a slice closes the file under it; with close_file=False the file stays open."""
    owned, lent = io.BytesIO(b"0123456789"), io.BytesIO(b"0123456789")
    FileSlice(owned, 2, 7).close()
    FileSlice(lent, 2, 7, close_file=False).close()
    assert owned.closed and not lent.closed


def test_headers(account: MaildirAccount) -> None:
    """getHeaders gives lowercase names -> unfolded values; negate drops the named ones."""
    msg = stored(account, MULTIPART)
    assert msg.getHeaders(False, "SUBJECT", b"from") == {
        "subject": "parts",
        "from": "bob@example.org",
    }
    assert set(msg.getHeaders(True, "subject")) == {"from", "content-type"}


def test_body_and_size(account: MaildirAccount) -> None:
    """getBodyFile is the octets after the blank line; getSize the whole message."""
    msg = stored(account, MULTIPART)
    assert msg.getSize() == len(MULTIPART) == msg.size
    assert msg.getBodyFile().read() == MULTIPART.split(b"\r\n\r\n", 1)[1]
    with msg.open() as f:
        assert f.read() == MULTIPART


def test_parts(account: MaildirAccount) -> None:
    """Sub-parts are numbered from 0; a message/rfc822 part's parts are its message's."""
    msg = stored(account, MULTIPART)
    assert msg.isMultipart()
    first = msg.getSubPart(0)
    assert first.getBodyFile().read() == b"first part"
    assert first.getSize() == len(b"first part")
    assert first.getHeaders(False, "content-type") == {"content-type": "text/plain"}
    assert not first.isMultipart()
    inner = msg.getSubPart(1).getSubPart(0)
    assert inner.getBodyFile().read() == b"inner body"  # the CRLF before a boundary is its own
    with pytest.raises(IndexError):
        msg.getSubPart(2)
    with pytest.raises(TypeError):
        first.getSubPart(0)


def test_entity_is_cached(account: MaildirAccount) -> None:
    """entity() parses once: the same tree comes back, also to a new message object."""
    msg = stored(account, MULTIPART)
    tree = msg.entity()
    assert tree is msg.entity()
    session = account.select("INBOX")
    assert session is not None
    ((_, again),) = session.fetch(MessageSet(msg.uid), uid=True)
    assert again.entity() is tree
    assert tree.end == len(MULTIPART)


def test_single_part(account: MaildirAccount) -> None:
    """A non-multipart message has no sub-parts."""
    msg = stored(account, b"Subject: x\r\n\r\nhello\r\n")
    assert not msg.isMultipart()
    with pytest.raises(TypeError):
        msg.getSubPart(0)
    assert msg.getBodyFile().read() == b"hello\r\n"
