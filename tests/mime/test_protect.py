"""Header protection (RFC 9788) for the transcoded view: transcoder.mime.protect."""

from __future__ import annotations

import email
import email.policy
import hashlib
import io
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.mime.corpus import CORPUS, crlf
from transcoder.mime.entity import Entity, parse_message
from transcoder.mime.protect import (
    InnerEntityReader,
    ProtectedParts,
    open_inner,
    parse_top_level,
    protect,
    write_inner,
)

HEADER = (
    b"Received: from mx.example.net by mail.example.org;\r\n"
    b"\tMon, 1 Jan 2024 10:00:01 +0000\r\n"
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: quarterly numbers\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed;\r\n"
    b' boundary="=_b"\r\n'
    b"content-transfer-encoding: 7bit\r\n"
)
BODY = (
    b"--=_b\r\nContent-Type: text/plain\r\n\r\nthe numbers\r\n"
    b"--=_b\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: carol@example.net\r\nSubject: forwarded\r\n\r\ninner body\r\n"
    b"--=_b--\r\n"
)
MESSAGE = HEADER + b"\r\n" + BODY
OUTER_FIELDS = [
    b"Received: from mx.example.net by mail.example.org;\r\n\tMon, 1 Jan 2024 10:00:01 +0000\r\n",
    b"From: Alice <alice@example.org>\r\n",
    b"To: bob@example.org\r\n",
    b"Subject: quarterly numbers\r\n",
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n",
    b"Message-ID: <1@example.org>\r\n",
]


def protected(message: bytes, obscure_subject: bool = False) -> tuple[ProtectedParts, bytes]:
    """The parts for ``message`` and its inner entity as written by write_inner."""
    src = io.BytesIO(message)
    parts = protect(parse_message(src), obscure_subject)
    dst = io.BytesIO()
    assert write_inner(src, parts, dst) == parts.inner_size
    return parts, dst.getvalue()


def inner_entity(inner: bytes) -> Entity:
    """The inner entity parsed back."""
    return parse_message(io.BytesIO(inner))


def test_outer_header_is_the_original_minus_structural_fields() -> None:
    """The outer header keeps every non-Content-*/MIME-Version field, byte for byte, in order."""
    parts, _ = protected(MESSAGE)
    assert parts.outer_header == b"".join(OUTER_FIELDS)


def test_inner_entity_is_original_header_plus_hp_and_body() -> None:
    """The inner entity is the original header (hp added), HP-Outer records, the original body."""
    parts, inner = protected(MESSAGE)
    hp_outer = b"".join(b"HP-Outer: " + f for f in OUTER_FIELDS)
    expected_header = HEADER.replace(b'boundary="=_b"\r\n', b'boundary="=_b";\r\n hp="cipher"\r\n')
    assert inner == expected_header + hp_outer + b"\r\n" + BODY
    assert parts.inner_size == len(inner)
    assert (parts.body_start, parts.body_end) == (len(HEADER) + 2, len(MESSAGE))


def test_inner_content_type_carries_hp_cipher() -> None:
    """The inner Content-Type gains hp="cipher" and keeps its boundary (RFC 9788 section 2.1)."""
    _, inner = protected(MESSAGE)
    entity = inner_entity(inner)
    assert entity.content_type.param("hp") == "cipher"
    assert entity.content_type.param("boundary") == "=_b"
    parsed = email.message_from_bytes(inner, policy=email.policy.default)
    assert parsed.get_param("hp") == "cipher"
    assert parsed.get_boundary() == "=_b"


def test_hp_outer_names_each_outer_field_with_its_outer_value() -> None:
    """One HP-Outer per outer field, "<name>: <value>" as shown outside (RFC 9788 section 2.2)."""
    parts, inner = protected(MESSAGE)
    outer = parse_message(io.BytesIO(parts.outer_header + b"\r\n"))
    recorded = inner_entity(inner).get_all("HP-Outer")
    assert recorded == [f"{f.name}: {f.value}" for f in outer.header]


def test_inner_structure_and_bodies_match_the_original() -> None:
    """A multipart with an attached message parses to the same tree with the same octets."""
    _, inner = protected(MESSAGE)
    original = parse_message(io.BytesIO(MESSAGE))
    again = inner_entity(inner)

    def leaves(entity: Entity, data: bytes) -> list[tuple[str, bytes]]:
        if not entity.children:
            ct = entity.content_type
            return [(f"{ct.maintype}/{ct.subtype}", data[entity.body_start : entity.end])]
        return [leaf for child in entity.children for leaf in leaves(child, data)]

    assert leaves(again, inner) == leaves(original, MESSAGE)
    attached = again.children[1].children[0]
    assert attached.get("Subject") == "forwarded"  # only the top level is protected
    assert attached.get("HP-Outer") is None


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_bodies_survive_byte_exact(name: str) -> None:
    """For every corpus message the inner entity ends with the original body, byte for byte."""
    message = crlf(CORPUS[name])
    entity = parse_message(io.BytesIO(message))
    _, inner = protected(message)
    assert inner.endswith(b"\r\n\r\n" + message[entity.body_start :])
    assert inner_entity(inner).content_type.param("hp") == "cipher"


def test_obscure_subject_applies_hcp_baseline() -> None:
    """obscure_subject: outer Subject is "[...]", Comments/Keywords removed; all stay inside."""
    message = (
        b"From: a@example.org\r\nSubject: secret plans\r\nKeywords: merger\r\n"
        b"Comments: internal\r\nTo: b@example.org\r\n\r\nbody\r\n"
    )
    parts, inner = protected(message, obscure_subject=True)
    assert parts.outer_header == (b"From: a@example.org\r\nSubject: [...]\r\nTo: b@example.org\r\n")
    entity = inner_entity(inner)
    assert entity.get("Subject") == "secret plans"
    assert entity.get("Keywords") == "merger"
    assert entity.get("Comments") == "internal"
    assert entity.get_all("HP-Outer") == [
        "From: a@example.org",
        "Subject: [...]",
        "To: b@example.org",
    ]
    assert b"secret" not in parts.outer_header


def test_default_policy_keeps_every_field_in_clear() -> None:
    """Without obscure_subject Subject, Keywords and Comments stay on the outer header."""
    message = b"Subject: s\r\nKeywords: k\r\nComments: c\r\n\r\nbody\r\n"
    parts, _ = protected(message)
    assert parts.outer_header == b"Subject: s\r\nKeywords: k\r\nComments: c\r\n"


def test_missing_content_type_gets_the_rfc2045_default_with_hp() -> None:
    """No Content-Type: the inner entity states text/plain; us-ascii with hp="cipher"."""
    _, inner = protected(b"Subject: plain\r\n\r\nhello\r\n")
    assert inner == (
        b"Subject: plain\r\n"
        b'Content-Type: text/plain; charset=us-ascii; hp="cipher"\r\n'
        b"HP-Outer: Subject: plain\r\n\r\nhello\r\n"
    )


def test_existing_hp_parameter_is_left_alone() -> None:
    """A Content-Type that already has hp is not given a second one."""
    message = b'Content-Type: text/plain; hp="cipher"\r\n\r\nx\r\n'
    _, inner = protected(message)
    assert inner.startswith(b'Content-Type: text/plain; hp="cipher"\r\n\r\n')
    assert inner.count(b"hp=") == 1


def test_trailing_semicolon_does_not_double() -> None:
    """A Content-Type ending in ";" gets hp without an empty parameter."""
    _, inner = protected(b"Content-Type: text/plain; charset=utf-8;  \r\n\r\nx")
    assert inner.startswith(b'Content-Type: text/plain; charset=utf-8;\r\n hp="cipher"\r\n')
    assert inner_entity(inner).content_type.param("charset") == "utf-8"


def test_eight_bit_headers_are_byte_exact() -> None:
    """Raw 8-bit octets in header fields reach outer, inner and HP-Outer unchanged."""
    subject = "Subject: Grüße aus Köln\r\n".encode()
    latin = "X-Note: caf\u00e9\r\n".encode("latin-1")
    message = subject + latin + b"Content-Type: text/plain; charset=utf-8\r\n\r\nx\r\n"
    parts, inner = protected(message)
    assert parts.outer_header == subject + latin
    assert inner.startswith(subject + latin)
    assert b"HP-Outer: " + subject in inner and b"HP-Outer: " + latin in inner


def test_folded_fields_stay_folded() -> None:
    """Folded fields keep their folding outside, inside and in HP-Outer, which unfolds right."""
    folded = b"Subject: a long\r\n subject line\r\n"
    parts, inner = protected(folded + b"To: b@example.org\r\n\r\nx\r\n")
    assert parts.outer_header.startswith(folded)
    assert b"HP-Outer: " + folded in inner
    assert inner_entity(inner).get_all("HP-Outer")[0] == "Subject: a long subject line"


def test_rfc2231_boundary_survives() -> None:
    """A boundary split with RFC 2231 continuations still delimits the inner parts."""
    message = crlf(CORPUS["rfc2231"])
    _, inner = protected(message)
    entity = inner_entity(inner)
    assert entity.content_type.param("boundary") == "split-Boundary"
    assert len(entity.children) == 2


def test_bare_lf_header_is_normalised_body_is_not() -> None:
    """Header line ends become CRLF; the body keeps its bare LFs."""
    message = b"Subject: lf\nContent-Type: text/plain\n\nline one\nline two\n"
    parts, inner = protected(message)
    assert parts.outer_header == b"Subject: lf\r\n"
    assert inner.endswith(b'hp="cipher"\r\nHP-Outer: Subject: lf\r\n\r\nline one\nline two\n')
    assert b"\n" not in inner[: inner.index(b"\r\n\r\n")].replace(b"\r\n", b"")


def test_header_without_blank_line() -> None:
    """A message that is all header yields an inner entity with an empty body."""
    parts, inner = protected(b"Subject: only header")
    assert parts.outer_header == b"Subject: only header\r\n"
    assert inner.endswith(b"HP-Outer: Subject: only header\r\n\r\n")
    assert parts.body_start == parts.body_end


def test_stale_hp_outer_fields_are_dropped() -> None:
    """HP-Outer fields of an earlier encryption appear neither outside nor inside."""
    message = b"Subject: s\r\nHP-Outer: Subject: [...]\r\nhp-outer: To: x@example.org\r\n\r\nb"
    parts, inner = protected(message)
    assert parts.outer_header == b"Subject: s\r\n"
    assert inner_entity(inner).get_all("HP-Outer") == ["Subject: s"]


def test_lines_without_colon_stay_inside_only() -> None:
    """A header line with no colon is kept in the inner header and left off the outer one."""
    message = b"Subject: s\r\nthis is not a field\r\nTo: t@example.org\r\n\r\nbody"
    parts, inner = protected(message)
    assert parts.outer_header == b"Subject: s\r\nTo: t@example.org\r\n"
    assert inner.startswith(b"Subject: s\r\nthis is not a field\r\nTo: t@example.org\r\n")


def test_reader_yields_what_write_inner_writes() -> None:
    """InnerEntityReader gives the same octets as write_inner, whatever the read size."""
    parts, inner = protected(MESSAGE)
    for size in (1, 7, len(parts.inner_header), 4096):
        src = io.BytesIO(MESSAGE)
        reader = InnerEntityReader(src, parts)
        pieces = []
        while piece := reader.read(size):
            pieces.append(piece)
            src.seek(0)  # someone else moving the shared file between reads does no harm
        assert b"".join(pieces) == inner
    assert InnerEntityReader(io.BytesIO(MESSAGE), parts).read() == inner


def test_open_inner_is_a_buffered_file_over_the_inner_entity() -> None:
    """open_inner reads like any binary file: read(n), readline, read to the end."""
    parts, inner = protected(MESSAGE)
    fp = open_inner(io.BytesIO(MESSAGE), parts)
    first = fp.readline()
    assert first == inner[: inner.index(b"\r\n") + 2]
    assert first + fp.read(5) + fp.read() == inner


def test_reader_reports_a_truncated_source() -> None:
    """A source shorter than its parsed body raises EOFError instead of a short entity."""
    parts, _ = protected(MESSAGE)
    reader = InnerEntityReader(io.BytesIO(MESSAGE[:-10]), parts)
    with pytest.raises(EOFError):
        reader.read()


def test_parse_top_level_matches_full_parse() -> None:
    """The shallow parse finds the same header and body offsets, also past its first window."""
    long_header = b"".join(b"Received: hop %d\r\n" % i for i in range(20_000))
    samples = [MESSAGE, long_header + MESSAGE, b"Subject: x", b""]
    samples += [crlf(m) for m in CORPUS.values()]
    for message in samples:
        full = parse_message(io.BytesIO(message))
        shallow = parse_top_level(io.BytesIO(message), window=1024)
        assert shallow.header == full.header
        assert (shallow.body_start, shallow.end) == (full.body_start, len(message))
        assert shallow.content_type == full.content_type


_PIECES = st.sampled_from(
    [
        b"Subject: x",
        b"From: a@b",
        b"Content-Type: text/html",
        b"content-type:multipart/mixed;",
        b' boundary="q"',
        b"\tfolded",
        b" ",
        b"no colon",
        b":",
        b"\r\n",
        b"\n",
        b"\r",
        b"--q",
        b"\xff\xfe",
        b"Content-Type: ",
        b"X: y\r\n\r\n",
        b"body",
    ]
)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(_PIECES, max_size=30), window=st.sampled_from([8, 64, 1 << 16]))
def test_the_quick_header_split_is_the_full_parse(pieces: list[bytes], window: int) -> None:
    """Arbitrary header-like octets (bare LF, bare CR, continuations first, no colon, no blank
    line, blank line first): parse_top_level's C-speed split equals the general parser's."""
    message = b"".join(pieces)
    full = parse_message(io.BytesIO(message))
    shallow = parse_top_level(io.BytesIO(message), window=window)
    assert shallow.header == full.header
    assert (shallow.header_start, shallow.body_start, shallow.end) == (
        full.header_start,
        full.body_start,
        len(message),
    )
    assert shallow.content_type == full.content_type
    assert (shallow.children, shallow.body_lines) == ((), 0)


class HashingSink:
    """A write-only file that keeps a SHA-256 and a count, not the data."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.count += len(data)
        return len(data)


def write_big_message(path: Path, megabytes: int) -> bytes:
    """A multipart message with a base64 attachment of ``megabytes`` MiB; returns the header."""
    header = HEADER.replace(b"quarterly numbers", b"big one") + b"\r\n"
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
    block = line * (1024 * 1024 // len(line))
    with path.open("wb") as f:
        f.write(header + b"--=_b\r\nContent-Type: application/octet-stream\r\n")
        f.write(b"Content-Transfer-Encoding: base64\r\n\r\n")
        for _ in range(megabytes):
            f.write(block)
        f.write(b"--=_b--\r\n")
    return header


def test_fifty_megabyte_message_streams_in_constant_memory(tmp_path: Path) -> None:
    """Planning and streaming a 50 MB message allocates well under a megabyte."""
    path = tmp_path / "big.eml"
    write_big_message(path, 50)
    with path.open("rb") as src:
        tracemalloc.start()
        try:
            parts = protect(parse_top_level(src))
            to_sink, via_reader = HashingSink(), HashingSink()
            write_inner(src, parts, to_sink)  # type: ignore[arg-type]
            reader = InnerEntityReader(src, parts)
            while piece := reader.read(1 << 16):
                via_reader.write(piece)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 1 << 20
    expected = hashlib.sha256(parts.inner_header)
    with path.open("rb") as f:
        f.seek(parts.body_start)
        while chunk := f.read(1 << 20):
            expected.update(chunk)
    assert to_sink.count == via_reader.count == parts.inner_size > 50_000_000
    assert to_sink.digest.digest() == via_reader.digest.digest() == expected.digest()
