"""FETCH BINARY, BINARY.PEEK, BINARY.SIZE (RFC 3516) at the protocol level; APPEND of a literal8."""

from __future__ import annotations

import base64
import email
import email.message
import re
from email import policy
from pathlib import Path

import pytest

from tests.imap.harness import make_session
from tests.imap.harness import selected_session as selected
from tests.mime.test_binary import LATIN, OCTETS, attachment_message

TEXT_QP = (
    b"From: a@example.org\r\nSubject: qp\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Caf=C3=A9 au lait, tr=C3=A8s =\r\nbon.\r\n"
)
UNKNOWN = (
    b"From: a@example.org\r\nSubject: uu\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n`\r\nend\r\n"
)
DAMAGED = (
    b"From: a@example.org\r\nSubject: bad\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nAAEC*AME\r\n"
)
_LITERAL = re.compile(rb"(~?)\{(\d+)\}\r\n")


def value_after(out: bytes, label: bytes) -> tuple[bytes, bytes]:
    """(``b"~"`` for a literal8 or ``b""``, the octets) of the literal after ``label``."""
    at = out.index(label + b" ") + len(label) + 1
    match = _LITERAL.match(out, at)
    assert match, (label, out[at : at + 40])
    start = match.end()
    return match.group(1), out[start : start + int(match.group(2))]


def number_after(out: bytes, label: bytes) -> int:
    """The number after ``label`` (``BINARY.SIZE[2] 512``)."""
    match = re.search(re.escape(label) + rb" (\d+)", out)
    assert match, (label, out)
    return int(match.group(1))


def email_part(raw: bytes, index: int) -> bytes:
    """Python's email decoding of top-level part ``index`` (0-based)."""
    part = email.message_from_bytes(raw, policy=policy.compat32).get_payload()[index]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def test_capability_lists_binary(tmp_path: Path) -> None:
    """CAPABILITY lists BINARY (RFC 3516 section 4.1)."""
    session = make_session(tmp_path)
    untagged, done = session.command(b"CAPABILITY")
    assert b" OK" in done
    assert b"BINARY" in b" ".join(untagged).split()


def test_base64_attachment_is_decoded_as_literal8(tmp_path: Path) -> None:
    """BINARY.PEEK[2] of a base64 attachment is email's decoding, sent ~{n} as it holds NUL."""
    raw = attachment_message()
    session = selected(tmp_path, raw)
    session.send(b"a FETCH 1 (BINARY.PEEK[2])\r\n")
    out = session.output()
    assert value_after(out, b"BINARY[2]") == (b"~", email_part(raw, 1))
    assert email_part(raw, 1) == OCTETS
    assert out.endswith(b"a OK FETCH completed\r\n")


def test_quoted_printable_part_is_decoded_as_plain_literal(tmp_path: Path) -> None:
    """BINARY.PEEK[1] of a QP part is email's decoding, a plain literal (no NUL: RFC 3516 4.3)."""
    raw = attachment_message()
    session = selected(tmp_path, raw)
    session.send(b"a FETCH 1 (BINARY.PEEK[1])\r\n")
    marker, value = value_after(session.output(), b"BINARY[1]")
    assert (marker, value) == (b"", email_part(raw, 0))
    assert LATIN.split("\r\n")[0].encode() in value


def test_rfc3516_example_single_part(tmp_path: Path) -> None:
    """RFC 3516's example shape: BINARY[1] and BINARY.SIZE[1] of a one-part QP message."""
    session = selected(tmp_path, TEXT_QP)
    session.send(b"a FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])\r\n")
    out = session.output()
    decoded = "Café au lait, très bon.\r\n".encode()
    assert value_after(out, b"BINARY[1]") == (b"", decoded)
    assert number_after(out, b"BINARY.SIZE[1]") == len(decoded)


def test_size_equals_whole_equals_reassembled_partials(tmp_path: Path) -> None:
    """BINARY.SIZE[n] == len(BINARY[n]) == the partials <o.n> joined, counted in decoded octets."""
    raw = attachment_message()
    session = selected(tmp_path, raw)
    for part in (b"", b"1", b"2"):
        session.send(b"a FETCH 1 (BINARY.SIZE[%s] BINARY.PEEK[%s])\r\n" % (part, part))
        out = session.output()
        _, whole = value_after(out, b"BINARY[%s]" % part)
        assert number_after(out, b"BINARY.SIZE[%s]" % part) == len(whole)
        pieces = []
        for origin in range(0, len(whole) + 100, 100):
            session.send(b"b FETCH 1 (BINARY.PEEK[%s]<%d.100>)\r\n" % (part, origin))
            pieces.append(value_after(session.output(), b"BINARY[%s]<%d>" % (part, origin))[1])
        assert b"".join(pieces) == whole
    assert whole == OCTETS


def test_whole_message_is_the_stored_octets(tmp_path: Path) -> None:
    """BINARY[] is the message as BODY[] sends it, BINARY.SIZE[] its RFC822.SIZE."""
    raw = attachment_message()
    session = selected(tmp_path, raw)
    session.send(b"a FETCH 1 (BODY.PEEK[] BINARY.PEEK[] BINARY.SIZE[] RFC822.SIZE)\r\n")
    out = session.output()
    body = value_after(out, b"BODY[]")[1]
    assert value_after(out, b"BINARY[]") == (b"", body)
    assert number_after(out, b"BINARY.SIZE[]") == number_after(out, b"RFC822.SIZE") == len(body)


def test_binary_sets_seen_and_peek_does_not(tmp_path: Path) -> None:
    """BINARY sets \\Seen like BODY[] (FLAGS reported); BINARY.PEEK and BINARY.SIZE do not."""
    session = selected(tmp_path, TEXT_QP, TEXT_QP)
    session.send(b"a FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])\r\n")
    session.output()
    session.send(b"b FETCH 1:2 (FLAGS)\r\n")
    assert b"\\Seen" not in session.output()
    session.send(b"c FETCH 2 (BINARY[1])\r\n")
    out = session.output()
    assert b"\\Seen" in out and b"BINARY[1] {" in out
    session.send(b"d FETCH 1:2 (FLAGS)\r\n")
    flags = session.output()
    first, second = (line for line in flags.split(b"\r\n") if line.startswith(b"* "))
    assert b"\\Seen" not in first and b"\\Seen" in second


def test_unknown_cte_is_no_unknown_cte_and_keeps_unseen(tmp_path: Path) -> None:
    """An unknown encoding: tagged NO [UNKNOWN-CTE], nothing of that message sent, \\Seen unset."""
    session = selected(tmp_path, UNKNOWN)
    _, done = session.command(b"FETCH 1 (BINARY[1])")
    assert re.match(rb"t\d+ NO \[UNKNOWN-CTE\]", done), done
    untagged, _ = session.command(b"FETCH 1 (FLAGS)")
    assert b"\\Seen" not in b"".join(untagged)
    _, size_done = session.command(b"FETCH 1 (BINARY.SIZE[1])")
    assert b"NO [UNKNOWN-CTE]" in size_done
    untagged, ok = session.command(b"FETCH 1 (BODY.PEEK[1])")  # BODY is not decoded
    assert b" OK " in ok and b"begin 644" in b"\r\n".join(untagged)


def test_damaged_base64_is_no_unknown_cte(tmp_path: Path) -> None:
    """base64 with a character outside its alphabet cannot be decoded: NO [PARSE], as Dovecot."""
    session = selected(tmp_path, DAMAGED)
    _, done = session.command(b"FETCH 1 (BINARY.PEEK[1])")
    assert b"NO [PARSE]" in done


def test_non_leaf_part_is_refused(tmp_path: Path) -> None:
    """BINARY[3] of a message/rfc822 part: NO [CLIENTBUG] (RFC 9051 6.4.5); BINARY[3.1] works."""
    session = selected(tmp_path, attachment_message())
    _, done = session.command(b"FETCH 1 (BINARY.PEEK[3])")
    assert b"NO [CLIENTBUG]" in done
    untagged, ok = session.command(b"FETCH 1 (BINARY.PEEK[3.1])")
    assert b" OK " in ok and b"inner body" in b"\r\n".join(untagged)


def test_missing_part_is_empty(tmp_path: Path) -> None:
    """A part that does not exist is the empty string, like BODY[9]."""
    session = selected(tmp_path, TEXT_QP)
    session.send(b"a FETCH 1 (BINARY.PEEK[9] BINARY.SIZE[9])\r\n")
    out = session.output()
    assert value_after(out, b"BINARY[9]") == (b"", b"")
    assert number_after(out, b"BINARY.SIZE[9]") == 0


@pytest.mark.parametrize(
    "items",
    [
        b"BINARY",
        b"BINARY.PEEK",
        b"BINARY.SIZE",
        b"BINARY[1.TEXT]",
        b"BINARY[HEADER]",
        b"BINARY[1.MIME]",
        b"BINARY[0]",
        b"BINARY[1.]",
        b"BINARY.SIZE[1]<0.5>",
        b"BINARY[1]<0>",
        b"BINARY[1]<0.0>",
        b"(BINARY[1]",
        b"BINARY[1 2]",
    ],
)
def test_malformed_binary_is_bad_clientbug(tmp_path: Path, items: bytes) -> None:
    """BINARY items outside RFC 3516's grammar are BAD [CLIENTBUG]."""
    session = selected(tmp_path, TEXT_QP)
    _, done = session.command(b"FETCH 1 " + items)
    assert re.match(rb"t\d+ BAD \[CLIENTBUG\]", done), done


def test_uid_fetch_binary(tmp_path: Path) -> None:
    """UID FETCH carries BINARY items too, with the UID."""
    session = selected(tmp_path, TEXT_QP)
    session.send(b"a UID FETCH 1:* (BINARY.PEEK[1]<0.4>)\r\n")
    out = session.output()
    assert b"UID 1" in out and value_after(out, b"BINARY[1]<0>") == (b"", b"Caf\xc3")


def test_large_base64_part_decodes_through_a_spool(tmp_path: Path) -> None:
    """A 300 KB base64 part (over the in-memory spool) decodes whole and in slices."""
    payload = bytes((i * 7 + i // 251) % 256 for i in range(300_000))
    msg = email.message.EmailMessage(policy=policy.SMTP)
    msg["Subject"] = "large"
    msg.set_content(payload, maintype="application", subtype="octet-stream")
    session = selected(tmp_path, msg.as_bytes())
    session.send(b"a FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] BINARY.PEEK[1]<299990.100>)\r\n")
    out = session.output()
    assert number_after(out, b"BINARY.SIZE[1]") == len(payload)
    assert value_after(out, b"BINARY[1]") == (b"~", payload)
    assert value_after(out, b"BINARY[1]<299990>") == (b"~", payload[299990:])


def test_append_literal8_stores_octets_as_sent(tmp_path: Path) -> None:
    """APPEND with ~{n} (RFC 3516 4.4) stores the octets, NUL included; BINARY gives them back."""
    session = selected(tmp_path)
    body = b"\x00\x01binary\x00\r\n\xff"
    message = (
        b"Subject: bin\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n" + body
    )
    session.send(b"a APPEND INBOX ~{%d}\r\n" % len(message))
    assert session.output().startswith(b"+ ")
    session.send(message + b"\r\n")
    assert b"a OK [APPENDUID" in session.output()
    session.send(b"b NOOP\r\n")
    session.output()
    session.send(b"c FETCH 1 (BODY.PEEK[] BINARY.PEEK[1])\r\n")
    out = session.output()
    assert value_after(out, b"BODY[]")[1] == message
    assert value_after(out, b"BINARY[1]") == (b"~", body)


def test_append_non_synchronizing_literal8(tmp_path: Path) -> None:
    """APPEND ~{n+} (LITERAL+ with literal8) is read without a continuation request."""
    session = selected(tmp_path)
    message = b"Subject: x\r\n\r\n" + base64.b64encode(b"\x00") + b"\r\n"
    session.send(b"a APPEND INBOX ~{%d+}\r\n" % len(message) + message + b"\r\n")
    out = session.output()
    assert b"+ " not in out and b"a OK [APPENDUID" in out
