"""The sans-IO helpers of the wire mixin: tags, literal announcements, skipping, resp-text, ID."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transcoder.imap.wire_syntax import (
    HUGE_LITERAL,
    CommandSkipper,
    IdSyntaxError,
    command_name,
    complete_status,
    id_pairs,
    is_tag,
    literal_at_end,
    split_id_value,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"a LOGIN {5}", (5, False)),
        (b"a APPEND INBOX (\\Seen) {310+}", (310, True)),
        (b"{0}", (0, False)),
        (b"a LOGIN {abc}", (-1, False)),
        (b"a LOGIN {-5}", (-1, False)),
        (b"a LOGIN { 5}", (-1, False)),
        (b"a LOGIN {5++}", (-1, False)),
        (b"a LOGIN {" + b"9" * 30 + b"}", (HUGE_LITERAL, False)),
        (b"a NOOP", None),
        (b"a SEARCH KEYWORD x}", None),
        (b"a X {1}}", None),
        (b"", None),
    ],
)
def test_literal_at_end(line: bytes, expected: tuple[int, bool] | None) -> None:
    """A trailing ``{n}`` / ``{n+}`` is read as a literal, anything else in braces as malformed."""
    assert literal_at_end(line) == expected


def test_tags_and_command_names() -> None:
    """Tags are 7-bit ASTRING-CHARs without "+"; command names are ASCII atoms."""
    assert is_tag(b"A001") and is_tag(b"a.b]c") and is_tag(b"~!")
    assert not any(is_tag(t) for t in (b"", b"a+", b"a(", b"\xe9", b"a*", b'"a"', b"a b"))
    assert command_name(b"uid") == "UID" and command_name(b"X-FOO") == "X-FOO"
    assert command_name(b"NO\xffOP") is None and command_name(b"__CLASS__") is None


def test_skipper_skips_literal_then_line() -> None:
    """The skipper drops the literal octets and the rest of the line, returning what follows."""
    skipper = CommandSkipper(5)
    assert skipper.feed(b"ab") is None
    assert skipper.feed(b"cde rest of") is None
    assert skipper.feed(b" line\r") is None
    assert skipper.feed(b"\nb NOOP\r\n") == b"b NOOP\r\n"


def test_skipper_follows_chained_nonsync_literals() -> None:
    """A skipped line ending in ``{n+}`` means n more octets of the same command."""
    skipper = CommandSkipper(3)
    assert skipper.feed(b"abc {4+}\r\nx\r\ny {2}\r\nb NOOP\r\n") == b"b NOOP\r\n"


def test_skipper_to_end_of_line() -> None:
    """Without a literal, the skipper drops everything up to and including the next CRLF."""
    skipper = CommandSkipper(None, b"tail of a long line")
    assert skipper.feed(b"more\r\nnext") == b"next"


@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=20))
def test_skipper_same_result_for_any_chunking(cuts: list[int]) -> None:
    """How the octets are split into reads does not change what the skipper returns."""
    data = b"0123456789 {12+}\r\n" + b"x" * 12 + b" end\r\nb NOOP\r\n"
    skipper = CommandSkipper(10)
    out, pos = None, 0
    for cut in [*cuts, len(data)]:
        chunk, pos = data[pos : pos + cut], pos + cut
        if out is None:
            out = skipper.feed(chunk)
        else:
            out += chunk
        if pos >= len(data):
            break
    assert out == b"b NOOP\r\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((b"OK", None, b"[UIDVALIDITY 5]"), (b"OK", b"[UIDVALIDITY 5] UIDs valid")),
        ((b"OK", b"a", b""), (b"OK", b"Completed")),
        ((b"NO", b"a", None), (b"NO", b"Failed")),
        ((b"[READ-ONLY]", None, None), (b"OK", b"[READ-ONLY] Mailbox is read-only")),
        ((b"OK [UIDNEXT 3]", None, None), (b"OK", b"[UIDNEXT 3] Predicted next UID")),
        ((b"NO", b"a", b"[TOOBIG] Too big"), (b"NO", b"[TOOBIG] Too big")),
        ((b"OK", b"a", b"[X-NEW]"), (b"OK", b"[X-NEW] Completed")),
        ((b"3 EXISTS", None, None), (b"3 EXISTS", None)),
        ((b"CAPABILITY IMAP4rev1", None, None), (b"CAPABILITY IMAP4rev1", None)),
    ],
)
def test_complete_status(
    args: tuple[bytes, bytes | None, bytes | None], expected: tuple[bytes, bytes | None]
) -> None:
    """Status responses get text after a lone response code; other responses are untouched."""
    assert complete_status(*args) == expected


def test_id_values_and_pairs() -> None:
    """ID values are quoted strings (with escapes) or NIL; pairs obey RFC 2971's limits."""
    assert split_id_value(b'"a \\"b\\"" rest') == (b'a "b"', b" rest")
    assert split_id_value(b"nil)") == (None, b")")
    with pytest.raises(IdSyntaxError):
        split_id_value(b"NILS")
    assert id_pairs([b"name", b"x", b"os", None]) == [(b"name", b"x"), (b"os", None)]
    for items in ([b"name"], [None, b"x"], [b"f" * 31, b"x"], [b"f", b"v" * 1025]):
        with pytest.raises(IdSyntaxError):
            id_pairs(items)
