"""FETCH body sections (RFC 3501 section 6.4.5) resolved on real message files."""

from __future__ import annotations

from pathlib import Path

import pytest

from transcoder.errors import BadCommand, StoreError
from transcoder.imap.sections import EMPTY, Section, iter_section, resolve_section, section_bytes
from transcoder.mime import Entity, parse_message


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("ascii")


#: The part layout of RFC 3501 section 6.4.5's example, each body naming its part.
RFC3501_EXAMPLE = _crlf(
    """From: a@example.org
Subject: sections
Content-Type: MULTIPART/MIXED; boundary=top

--top
Content-Type: TEXT/PLAIN

body of 1
--top
Content-Type: APPLICATION/OCTET-STREAM

body of 2
--top
Content-Type: MESSAGE/RFC822

Subject: message 3
Content-Type: MULTIPART/MIXED; boundary=three

--three
Content-Type: TEXT/PLAIN

body of 3.1
--three
Content-Type: APPLICATION/OCTET-STREAM

body of 3.2
--three--
--top
Content-Type: MULTIPART/MIXED; boundary=four

--four
Content-Type: IMAGE/GIF

body of 4.1
--four
Content-Type: MESSAGE/RFC822

Subject: message 4.2
Content-Type: MULTIPART/MIXED; boundary=fourtwo

--fourtwo
Content-Type: TEXT/PLAIN

body of 4.2.1
--fourtwo
Content-Type: MULTIPART/ALTERNATIVE; boundary=alt

--alt
Content-Type: TEXT/PLAIN

body of 4.2.2.1
--alt
Content-Type: TEXT/RICHTEXT

body of 4.2.2.2
--alt--
--fourtwo--
--four--
--top--
"""
)


@pytest.fixture
def example(tmp_path: Path) -> tuple[Path, Entity]:
    path = tmp_path / "message"
    path.write_bytes(RFC3501_EXAMPLE)
    with path.open("rb") as fp:
        return path, parse_message(fp)


def fetch(
    path: Path, entity: Entity, part: tuple[int, ...], kind: str | None = None, **kw: object
) -> bytes:
    with path.open("rb") as fp:
        return section_bytes(fp, resolve_section(entity, part, kind, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "part",
    [(1,), (2,), (3, 1), (3, 2), (4, 1), (4, 2, 1), (4, 2, 2, 1), (4, 2, 2, 2)],
)
def test_rfc3501_example_leaf_parts(example: tuple[Path, Entity], part: tuple[int, ...]) -> None:
    """Each numbered leaf of RFC 3501's example resolves to that part's body."""
    path, entity = example
    assert fetch(path, entity, part) == b"body of " + ".".join(map(str, part)).encode()


def test_header_and_text_of_encapsulated_messages(example: tuple[Path, Entity]) -> None:
    """n.HEADER / n.TEXT apply to a MESSAGE/RFC822 part's message; BODY[n] is all of it."""
    path, entity = example
    header = fetch(path, entity, (4, 2), "HEADER")
    assert (
        header == b"Subject: message 4.2\r\nContent-Type: MULTIPART/MIXED; boundary=fourtwo\r\n\r\n"
    )
    text = fetch(path, entity, (4, 2), "TEXT")
    assert text.startswith(b"--fourtwo\r\n") and text.endswith(b"--fourtwo--")
    assert fetch(path, entity, (4, 2)) == header + text
    assert fetch(path, entity, (3,), "HEADER").startswith(b"Subject: message 3\r\n")


def test_mime_header_of_a_part(example: tuple[Path, Entity]) -> None:
    """n.MIME is the part's own MIME header, blank line included."""
    path, entity = example
    assert fetch(path, entity, (4, 1), "MIME") == b"Content-Type: IMAGE/GIF\r\n\r\n"


def test_whole_message_header_and_text(example: tuple[Path, Entity]) -> None:
    """BODY[] is every octet; BODY[HEADER] + BODY[TEXT] rebuild it."""
    path, entity = example
    assert fetch(path, entity, ()) == RFC3501_EXAMPLE
    assert fetch(path, entity, (), "HEADER") + fetch(path, entity, (), "TEXT") == RFC3501_EXAMPLE


@pytest.mark.parametrize(
    ("part", "kind"),
    [
        ((5,), None),
        ((0,), None),
        ((1, 1), None),
        ((4, 3), None),
        ((1,), "HEADER"),
        ((4,), "TEXT"),
        ((2,), "MIME"),
    ],
)
def test_nonexistent_parts_are_empty(
    example: tuple[Path, Entity], part: tuple[int, ...], kind: str | None
) -> None:
    """Parts that do not exist, and HEADER/TEXT of non-message parts, give the empty string."""
    _, entity = example
    section = resolve_section(entity, part, kind)
    if part == (2,):  # MIME of an existing part is not empty
        assert section != EMPTY
    else:
        assert section == EMPTY


def test_single_part_message_part_one_is_its_body(tmp_path: Path) -> None:
    """A non-multipart message has exactly part 1: its body; 1.MIME is its header."""
    path = tmp_path / "m"
    path.write_bytes(b"Subject: s\r\n\r\nonly body\r\n")
    with path.open("rb") as fp:
        entity = parse_message(fp)
    assert fetch(path, entity, (1,)) == b"only body\r\n"
    assert fetch(path, entity, (1,), "MIME") == b"Subject: s\r\n\r\n"
    assert resolve_section(entity, (2,), None) == EMPTY
    assert resolve_section(entity, (1, 1), None) == EMPTY


def test_header_fields_subset(example: tuple[Path, Entity]) -> None:
    """HEADER.FIELDS returns matching raw fields, case-insensitively, then a blank line."""
    _, entity = example
    got = resolve_section(entity, (), "HEADER.FIELDS", ("subject", "FROM", "x-missing"))
    assert got == Section(data=b"From: a@example.org\r\nSubject: sections\r\n\r\n")
    got = resolve_section(entity, (), "HEADER.FIELDS", ("from",), negate=True)
    assert got.data == b"Subject: sections\r\nContent-Type: MULTIPART/MIXED; boundary=top\r\n\r\n"
    assert resolve_section(entity, (), "HEADER.FIELDS.NOT", ("from",)) == got
    assert resolve_section(entity, (), "HEADER.FIELDS", ("nothing",)).data == b"\r\n"


def test_header_fields_of_encapsulated_message(example: tuple[Path, Entity]) -> None:
    """n.HEADER.FIELDS looks at the encapsulated message's header."""
    _, entity = example
    assert (
        resolve_section(entity, (3,), "HEADER.FIELDS", ("Subject",)).data
        == b"Subject: message 3\r\n\r\n"
    )
    assert resolve_section(entity, (1,), "HEADER.FIELDS", ("Subject",)) == EMPTY


def test_folded_and_unterminated_fields_keep_line_structure(tmp_path: Path) -> None:
    """A folded field comes back whole; a field cut off at the end of the data gets its CRLF."""
    path = tmp_path / "m"
    path.write_bytes(b"Subject: a\r\n b\r\nTo: x@y")
    with path.open("rb") as fp:
        entity = parse_message(fp)
    assert (
        resolve_section(entity, (), "HEADER.FIELDS", ("subject", "to")).data
        == b"Subject: a\r\n b\r\nTo: x@y\r\n\r\n"
    )


@pytest.mark.parametrize(("part", "kind"), [((), "MIME"), ((1,), "BOGUS")])
def test_invalid_section_text_is_bad(
    example: tuple[Path, Entity], part: tuple[int, ...], kind: str
) -> None:
    """MIME without a part and unknown section texts are syntax errors (tagged BAD)."""
    _, entity = example
    with pytest.raises(BadCommand) as info:
        resolve_section(entity, part, kind)
    assert info.value.response == "BAD"


@pytest.mark.parametrize("offset", [0, 1, 7, 100, 255, 256, 10_000])
@pytest.mark.parametrize("length", [None, 0, 1, 10, 99, 100, 5000])
def test_partial_slices_are_exact(tmp_path: Path, offset: int, length: int | None) -> None:
    """iter_section yields exactly section[offset:offset+length], chunked and clamped."""
    content = bytes(range(256)) * 3
    path = tmp_path / "f"
    path.write_bytes(b"prefix" + content + b"suffix")
    section = Section(6, 6 + len(content))
    want = content[offset:] if length is None else content[offset : offset + length]
    with path.open("rb") as fp:
        chunks = list(iter_section(fp, section, offset, length, chunk=7))
    assert b"".join(chunks) == want
    assert all(0 < len(c) <= 7 for c in chunks)
    data_section = Section(data=content)
    with path.open("rb") as fp:
        assert b"".join(iter_section(fp, data_section, offset, length)) == want


def test_truncated_file_is_a_store_error(tmp_path: Path) -> None:
    """A message file shorter than its structure says raises StoreError, not a short literal."""
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    with path.open("rb") as fp, pytest.raises(StoreError):
        section_bytes(fp, Section(5, 50))
