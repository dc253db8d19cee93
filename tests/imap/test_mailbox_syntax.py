"""Wire syntax of mailbox commands: names, strings, flags, date-time, uid sets (pure functions)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transcoder.errors import BadCommand, InvalidMailboxName
from transcoder.imap.mailbox_syntax import (
    LIST_CHARS,
    LiteralAhead,
    decode_mailbox_name,
    format_mailbox,
    format_string,
    format_uid_set,
    parse_date_time,
    split_flag_list,
    split_status_items,
    split_string_argument,
)


def test_decode_canonical_modified_utf7() -> None:
    """Canonical modified UTF-7 decodes; &- is a literal ampersand."""
    assert decode_mailbox_name(b"&AOk-t&AOk-") == "été"
    assert decode_mailbox_name(b"a&-b") == "a&b"
    assert decode_mailbox_name(b"x&2D3eAQ-") == "x\U0001f601"


@pytest.mark.parametrize(
    "raw", [b"&AOk", b"a&b", b"&AGE-", b"&AOk-&AOk-", b"caf\xc3\xa9", b"&ZZZ-"]
)
def test_decode_refuses_non_canonical(raw: bytes) -> None:
    """Unterminated shifts, encoded ASCII, split shifts and raw 8-bit are refused."""
    with pytest.raises(InvalidMailboxName):
        decode_mailbox_name(raw)


def test_inbox_is_case_insensitive() -> None:
    """Any case of INBOX names INBOX (RFC 3501 5.1)."""
    assert decode_mailbox_name(b"iNbOx") == "INBOX"
    assert decode_mailbox_name(b"inbox/x") == "inbox/x"


def test_split_string_argument_forms() -> None:
    """Atoms, quoted strings with escapes and literals are recognised."""
    assert split_string_argument(b"a!#$&-'+,-.b rest") == (b"a!#$&-'+,-.b", b"rest")
    assert split_string_argument(b'"a \\"b\\" \\\\" rest') == (b'a "b" \\', b"rest")
    assert split_string_argument(b"{12}") == LiteralAhead(12)
    assert split_string_argument(b"{12+}") == LiteralAhead(12, True)
    assert split_string_argument(b"a%*", LIST_CHARS) == (b"a%*", b"")


@pytest.mark.parametrize("line", [b'"open', b'"bad \\x"', b"a%b", b"a(b", b"{12", b'"a"b'])
def test_split_string_argument_refuses_bad_syntax(line: bytes) -> None:
    """Unterminated or badly escaped strings and atom specials are syntax errors."""
    with pytest.raises(BadCommand):
        split_string_argument(line)


@given(
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30).filter(
        lambda s: s.upper() != "INBOX"
    )
)
def test_name_round_trip(name: str) -> None:
    """format_mailbox, then parsing, then decoding gives back the name."""
    wire = format_mailbox(name)
    if wire.startswith(b"{"):
        raw = wire.split(b"\r\n", 1)[1]
    else:
        parsed = split_string_argument(wire)
        assert not isinstance(parsed, LiteralAhead)
        raw, rest = parsed
        assert rest == b""
    assert decode_mailbox_name(raw) == name


def test_format_string_uses_literal_for_line_breaks() -> None:
    """Strings that cannot be quoted become literals."""
    assert format_string(b"a\r\nb") == b"{4}\r\na\r\nb"
    assert format_string(b'a"b') == b'"a\\"b"'


def test_flag_list() -> None:
    """System flags are canonicalised, keywords kept, duplicates dropped."""
    assert split_flag_list(b'(\\seen $Label \\SEEN) "date"') == (["\\Seen", "$Label"], b'"date"')
    assert split_flag_list(b"() {3}") == ([], b"{3}")


@pytest.mark.parametrize("line", [b"(\\Recent) {1}", b"(\\*) {1}", b"(\\Foo) {1}", b"(a{b) {1}"])
def test_flag_list_refuses_unsettable_flags(line: bytes) -> None:
    """\\Recent, \\* and unknown system flags cannot be set by a client."""
    with pytest.raises(BadCommand):
        split_flag_list(line)


def test_date_time() -> None:
    """RFC 3501 date-time parses to an aware datetime, one-digit days included."""
    assert parse_date_time(b"22-Feb-2008 17:06:23 +0100") == datetime(
        2008, 2, 22, 17, 6, 23, tzinfo=timezone(timedelta(hours=1))
    )
    assert parse_date_time(b" 2-feb-2008 17:06:23 -0830").utcoffset() == -timedelta(
        hours=8, minutes=30
    )


@pytest.mark.parametrize(
    "raw", [b"31-Feb-2008 17:06:23 +0000", b"22-Foo-2008 17:06:23 +0000", b"22-Feb-2008", b""]
)
def test_date_time_refuses_invalid(raw: bytes) -> None:
    """Impossible dates, unknown months and partial date-times are syntax errors."""
    with pytest.raises(BadCommand):
        parse_date_time(raw)


def test_uid_set_is_compact_and_ordered() -> None:
    """Consecutive UIDs collapse to ranges; order is kept (RFC 4315)."""
    assert format_uid_set([1, 2, 3, 5, 7, 8]) == b"1:3,5,7:8"
    assert format_uid_set([4]) == b"4"


def test_status_items() -> None:
    """STATUS items are upper-cased; unknown ones are refused."""
    assert split_status_items(b"(messages uidnext)") == (["MESSAGES", "UIDNEXT"], b"")
    with pytest.raises(BadCommand):
        split_status_items(b"(MESSAGES SIZE)")
    with pytest.raises(BadCommand):
        split_status_items(b"()")
