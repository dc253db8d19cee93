"""The MIME splitter agrees with Python's email package on a built corpus."""

from __future__ import annotations

import email
import email.message
import io
from collections.abc import Iterator
from email import policy

import pytest

from tests.mime.corpus import CORPUS, crlf
from transcoder.mime import Entity, parse_disposition, parse_message

CASES = [
    (f"{name}-{eol}", conv(msg))
    for name, msg in CORPUS.items()
    for eol, conv in (("lf", bytes), ("crlf", crlf))
]


def _pairs(
    entity: Entity, msg: email.message.Message
) -> Iterator[tuple[Entity, email.message.Message]]:
    """Walk our tree and email's together (a message/rfc822's payload is its message)."""
    yield entity, msg
    if msg.is_multipart():
        subs = msg.get_payload()
        assert isinstance(subs, list)
        assert len(entity.children) == len(subs)
        for child, sub in zip(entity.children, subs, strict=True):
            yield from _pairs(child, sub)
    else:
        assert entity.children == ()


def _raw_payload(msg: email.message.Message) -> bytes:
    # The parser stores the body text decoded ascii/surrogateescape: this restores its octets.
    payload = msg._payload  # get_payload() would re-decode 8-bit
    assert isinstance(payload, str)
    return payload.encode("ascii", "surrogateescape")


def _unfold(value: str) -> str:
    return value.replace("\r\n", "").replace("\n", "").strip(" \t\r")


def _parse_both(data: bytes) -> list[tuple[Entity, email.message.Message]]:
    entity = parse_message(io.BytesIO(data))
    msg = email.message_from_bytes(data, policy=policy.compat32)
    return list(_pairs(entity, msg))


@pytest.mark.parametrize(("name", "data"), CASES)
def test_tree_shape_and_types_match_email(name: str, data: bytes) -> None:
    """Every entity has the type, subtype and children email finds (digest defaults included)."""
    for entity, msg in _parse_both(data):
        assert (entity.content_type.maintype, entity.content_type.subtype) == (
            msg.get_content_maintype(),
            msg.get_content_subtype(),
        ), name


@pytest.mark.parametrize(("name", "data"), CASES)
def test_leaf_bodies_at_offsets_equal_email_payloads(name: str, data: bytes) -> None:
    """The octets between body_start and end of every leaf are email's payload."""
    for entity, msg in _parse_both(data):
        if not msg.is_multipart():
            assert data[entity.body_start : entity.end] == _raw_payload(msg), name


@pytest.mark.parametrize(("name", "data"), CASES)
def test_header_fields_match_email(name: str, data: bytes) -> None:
    """Field names and unfolded values agree with email's, and raw fields rebuild the header."""
    for entity, msg in _parse_both(data):
        ours = [(f.name, f.value) for f in entity.header]
        theirs = [(k, _unfold(v)) for k, v in msg._headers]  # the raw source values
        theirs = [(k, v.encode("ascii", "surrogateescape").decode("latin-1")) for k, v in theirs]
        assert ours == theirs, name
        raw = b"".join(f.raw for f in entity.header)
        header = data[entity.header_start : entity.body_start]
        assert header in (raw, raw + b"\n", raw + b"\r\n"), name


@pytest.mark.parametrize(("name", "data"), CASES)
def test_parameters_match_email(name: str, data: bytes) -> None:
    """Boundary, charset and RFC 2231 filenames decode as email decodes them."""
    for entity, msg in _parse_both(data):
        assert entity.content_type.param("boundary") == msg.get_boundary(), name
        if entity.content_type.maintype == "text":
            charset = entity.content_type.param("charset") or "us-ascii"
            assert charset.lower() == msg.get_content_charset("us-ascii"), name
        disposition = entity.get("content-disposition")
        if disposition is not None:
            parsed = parse_disposition(disposition)
            assert parsed is not None
            assert dict(parsed[1]).get("filename") == msg.get_filename(), name


def test_rfc2231_continuation_with_charset_matches_email() -> None:
    """name*0*/name*1* with a charset joins and decodes as collapse_rfc2231_value does."""
    data = crlf(CORPUS["rfc2231"])
    (_, _), (entity, msg), _ = _parse_both(data)[:3]
    expected = email.utils.collapse_rfc2231_value(msg.get_param("name"))
    assert entity.content_type.param("name") == expected == "\u20ac price list.txt"
