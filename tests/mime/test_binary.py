"""Content-transfer decoding for BINARY (transcoder.mime.binary) against Python's email package."""

from __future__ import annotations

import base64
import email
import email.message
import io
import quopri
from email import policy

import pytest

from tests.mime.corpus import CORPUS, crlf
from transcoder.errors import ClientError, InvalidTransferEncoding, UnknownTransferEncoding
from transcoder.mime.binary import (
    NotALeafPart,
    binary_part,
    decode_into,
    decode_part,
    iter_transfer_decode,
    transfer_decode,
)
from transcoder.mime.entity import parse_message

#: Every octet value, NUL included, twice.
OCTETS = bytes(range(256)) * 2
LATIN = "Grüße, café = 100 % über die Straße\r\nzweite Zeile mit einer sehr langen Zeile " * 3


def attachment_message() -> bytes:
    """A multipart with a QP text part, a base64 attachment and an encapsulated message."""
    msg = email.message.EmailMessage(policy=policy.SMTP)
    msg["From"] = "alice@example.org"
    msg["Subject"] = "binary"
    msg.set_content(LATIN, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_attachment(OCTETS, maintype="application", subtype="octet-stream", filename="b.bin")
    inner = email.message.EmailMessage(policy=policy.SMTP)
    inner["Subject"] = "inner"
    inner.set_content("inner body\r\n")
    msg.add_attachment(inner)
    return msg.as_bytes()


def email_payload(raw: bytes, index: int) -> bytes:
    """Python's decoding of top-level part ``index`` (0-based)."""
    parsed = email.message_from_bytes(raw, policy=policy.compat32)
    part = parsed.get_payload()[index]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def test_base64_attachment_matches_email() -> None:
    """BINARY[2] of a base64 attachment is the octets email decodes, NUL included."""
    raw = attachment_message()
    assert decode_part(raw, (2,)) == email_payload(raw, 1) == OCTETS


def test_quoted_printable_part_matches_email() -> None:
    """BINARY[1] of a quoted-printable part is the octets email decodes."""
    raw = attachment_message()
    decoded = decode_part(raw, (1,))
    assert decoded == email_payload(raw, 0)
    assert "Grüße".encode() in decoded and b"=C3" not in decoded


def test_empty_section_is_the_whole_message() -> None:
    """BINARY[] is the stored message, octet for octet."""
    raw = attachment_message()
    assert decode_part(raw, ()) == raw


def test_non_leaf_parts_are_refused() -> None:
    """BINARY of a multipart or message/rfc822 part is NO [CLIENTBUG] (RFC 9051 6.4.5)."""
    raw = attachment_message()
    with pytest.raises(NotALeafPart) as caught:
        decode_part(raw, (3,))
    assert caught.value.response == "NO" and caught.value.code == "CLIENTBUG"
    assert isinstance(caught.value, ClientError)
    alternative = (
        b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n"
        b"Content-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\nx\r\n--i--\r\n"
        b"--o--\r\n"
    )
    with pytest.raises(NotALeafPart):
        decode_part(alternative, (1,))
    assert decode_part(alternative, (1, 1)) == b"x"


def test_part_inside_an_encapsulated_message() -> None:
    """BINARY[3.1] is the body of the message a message/rfc822 part holds."""
    assert decode_part(attachment_message(), (3, 1)) == b"inner body\r\n"


def test_missing_part_is_empty() -> None:
    """A part that does not exist decodes to nothing, as BODY[9] is empty."""
    assert decode_part(attachment_message(), (9,)) == b""


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_leaves_match_email(name: str) -> None:
    """Every leaf of the parser corpus decodes as email decodes it (CRLF form)."""
    raw = crlf(CORPUS[name])
    entity = parse_message(io.BytesIO(raw))
    parsed = email.message_from_bytes(raw, policy=policy.compat32)
    if entity.content_type.maintype == "multipart" or parsed.is_multipart():
        return  # the multipart cases are covered by the leaves below
    cte = (entity.get("content-transfer-encoding") or "").strip().lower()
    if cte not in ("", "7bit", "8bit", "binary", "base64", "quoted-printable"):
        with pytest.raises(UnknownTransferEncoding):
            decode_part(raw, (1,))
        return
    expected = parsed.get_payload(decode=True)
    assert decode_part(raw, (1,)) == expected


def test_base64_tolerates_layout() -> None:
    """Line breaks, blanks and tabs anywhere in base64 are skipped (RFC 2045 6.8)."""
    text = base64.b64encode(OCTETS)
    spread = b"\r\n".join(text[i : i + 7] for i in range(0, len(text), 7)) + b" \t\r\n"
    assert transfer_decode("base64", spread) == OCTETS


@pytest.mark.parametrize(
    "bad", [b"aGk*", b"aG=k", b"aGk", b"aGk=aGk=", b"a\x00Gk", b"aGk=\r\n!", b"ZZ==Z"]
)
def test_base64_invalid_characters_are_errors(bad: bytes) -> None:
    """Characters outside the alphabet, misplaced padding or a short quantum: NO [PARSE]."""
    with pytest.raises(InvalidTransferEncoding) as caught:
        transfer_decode("base64", bad)
    assert caught.value.code == "PARSE" and caught.value.response == "NO"


@pytest.mark.parametrize("cte", ["x-uuencode", "base-64", "8-bit", "gzip"])
def test_unknown_encodings(cte: str) -> None:
    """An encoding outside RFC 2045's is UnknownTransferEncoding, code UNKNOWN-CTE."""
    with pytest.raises(UnknownTransferEncoding) as caught:
        transfer_decode(cte, b"data")
    assert caught.value.code == "UNKNOWN-CTE"


@pytest.mark.parametrize("cte", ["7bit", "8BIT", "Binary", "", None, " 7bit (comment)"])
def test_identity_encodings(cte: str | None) -> None:
    """7bit, 8bit, binary and an absent field leave the octets as they are."""
    assert transfer_decode(cte, OCTETS) == OCTETS


def test_quoted_printable_matches_quopri() -> None:
    """QP decodes as the standard library's quopri does, soft breaks removed."""
    encoded = quopri.encodestring(LATIN.encode("utf-8").replace(b"\r\n", b"\n"))
    assert transfer_decode("quoted-printable", encoded) == quopri.decodestring(encoded)


@pytest.mark.parametrize("cte", ["base64", "quoted-printable"])
def test_decoding_pieces_cut_anywhere_equals_one_shot(cte: str) -> None:
    """Incremental decoding of chunks cut at every size agrees with the one-shot result."""
    encoded = (
        base64.encodebytes(OCTETS)
        if cte == "base64"
        else quopri.encodestring(LATIN.encode("utf-8"), quotetabs=True)
    )
    whole = transfer_decode(cte, encoded)
    for size in (1, 2, 3, 5, 76, 77, 1000):
        pieces = [encoded[i : i + size] for i in range(0, len(encoded), size)]
        assert b"".join(iter_transfer_decode(cte, pieces)) == whole


def test_decode_into_reports_size_and_nul() -> None:
    """One pass over a part gives its decoded size and whether it holds a NUL."""
    raw = attachment_message()
    fp = io.BytesIO(raw)
    entity = parse_message(fp)
    attachment, text = binary_part(entity, (2,)), binary_part(entity, (1,))
    assert attachment is not None and text is not None
    out = io.BytesIO()
    found = decode_into(fp, attachment, out)
    assert (found.size, found.has_nul, out.getvalue()) == (len(OCTETS), True, OCTETS)
    measured = decode_into(fp, text)
    assert measured.size == len(email_payload(raw, 0)) and not measured.has_nul
