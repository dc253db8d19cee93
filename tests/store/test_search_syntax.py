"""SEARCH criteria parsing (RFC 3501 section 6.4.4, section 9 ``search``)."""

from __future__ import annotations

import contextlib
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transcoder.errors import BadCommand, ClientError
from transcoder.store.search import (
    SearchSyntaxError,
    UnsupportedCharsetError,
    parse_search,
    parse_search_arguments,
    pending_literal,
)
from transcoder.store.search_query import (
    All,
    And,
    Body,
    Flag,
    Header,
    InternalDate,
    Larger,
    Not,
    Or,
    SentDate,
    Sequence,
    SequenceSet,
    Smaller,
    Text,
    Uid,
)


def key(data: bytes):
    """The key tree of ``data`` parsed as SEARCH arguments."""
    return parse_search_arguments(data).key


def test_rfc_example_parses_to_and_of_keys() -> None:
    """RFC 3501's example ``FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"`` is an AND of three keys."""
    assert key(b'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == And(
        (
            Flag("\\flagged"),
            InternalDate("since", date(1994, 2, 1)),
            Not(Header("from", "Smith")),
        )
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"ALL", All()),
        (b"ANSWERED", Flag("\\answered")),
        (b"UNANSWERED", Not(Flag("\\answered"))),
        (b"DELETED", Flag("\\deleted")),
        (b"UNDELETED", Not(Flag("\\deleted"))),
        (b"DRAFT", Flag("\\draft")),
        (b"UNDRAFT", Not(Flag("\\draft"))),
        (b"FLAGGED", Flag("\\flagged")),
        (b"UNFLAGGED", Not(Flag("\\flagged"))),
        (b"SEEN", Flag("\\seen")),
        (b"UNSEEN", Not(Flag("\\seen"))),
        (b"RECENT", Flag("\\recent")),
        (b"OLD", Not(Flag("\\recent"))),
        (b"NEW", And((Flag("\\recent"), Not(Flag("\\seen"))))),
        (b"KEYWORD $Forwarded", Flag("$forwarded")),
        (b"UNKEYWORD Junk", Not(Flag("junk"))),
        (b"BCC x", Header("bcc", "x")),
        (b"CC x", Header("cc", "x")),
        (b"FROM x", Header("from", "x")),
        (b"TO x", Header("to", "x")),
        (b'SUBJECT "a b"', Header("subject", "a b")),
        (b'HEADER X-Mailer ""', Header("X-Mailer", "")),
        (b"BODY x", Body("x")),
        (b"TEXT x", Text("x")),
        (b"BEFORE 1-Jan-2020", InternalDate("before", date(2020, 1, 1))),
        (b'ON "31-dec-1999"', InternalDate("on", date(1999, 12, 31))),
        (b"SENTBEFORE 2-Mar-2021", SentDate("before", date(2021, 3, 2))),
        (b"SENTON 2-Mar-2021", SentDate("on", date(2021, 3, 2))),
        (b"SENTSINCE 2-Mar-2021", SentDate("since", date(2021, 3, 2))),
        (b"LARGER 100", Larger(100)),
        (b"SMALLER 5000000000", Smaller(5_000_000_000)),
        (b"UID 1:*", Uid(SequenceSet(((1, None),)))),
        (b"2,4:7,9,12:*", Sequence(SequenceSet(((2, 2), (4, 7), (9, 9), (12, None))))),
        (b"*:4", Sequence(SequenceSet(((None, 4),)))),
        (b"OR SEEN FLAGGED", Or(Flag("\\seen"), Flag("\\flagged"))),
        (b"NOT NOT SEEN", Not(Not(Flag("\\seen")))),
        (b"seen", Flag("\\seen")),
    ],
)
def test_every_rfc3501_key_parses(text: bytes, expected: object) -> None:
    """Each search key of RFC 3501 section 6.4.4 parses to the key it names, in any case."""
    assert key(text) == expected


def test_parentheses_and_nesting() -> None:
    """Parenthesised lists nest inside OR and NOT; a list ANDs its keys."""
    assert key(b"OR (SEEN 1:3) NOT (UID 5 DELETED)") == Or(
        And((Flag("\\seen"), Sequence(SequenceSet(((1, 3),))))),
        Not(And((Uid(SequenceSet(((5, 5),))), Flag("\\deleted")))),
    )


def test_cheap_keys_are_evaluated_first() -> None:
    """An AND puts flag/size keys before header keys before body keys, whatever the order."""
    assert key(b"BODY x SUBJECT y SEEN LARGER 3") == And(
        (Flag("\\seen"), Larger(3), Header("subject", "y"), Body("x"))
    )


def test_literals_inside_criteria() -> None:
    """Literals in wire form (``{n}`` CRLF octets) are astrings, even holding CRLF or ``)``."""
    data = b"CHARSET UTF-8 (SUBJECT {5}\r\n\xc3\xbcber TEXT {4}\r\na\r\n)) SEEN"
    query = parse_search_arguments(data)
    assert query.charset == "UTF-8"
    assert query.key == And((Flag("\\seen"), Header("subject", "über"), Text("a\r\n)")))


def test_quoted_string_escapes() -> None:
    """Quoted strings unescape ``\\"`` and ``\\\\`` (RFC 3501 section 9, ``quoted``)."""
    assert key(b'SUBJECT "say \\"hi\\" \\\\o/"') == Header("subject", 'say "hi" \\o/')


@pytest.mark.parametrize("name", [b"UTF-8", b"utf-8", b"US-ASCII", b'"us-ascii"', b"{5}\r\nUTF-8"])
def test_supported_charsets(name: bytes) -> None:
    """CHARSET UTF-8 and US-ASCII are accepted, in any case and as any astring."""
    query = parse_search_arguments(b"CHARSET " + name + b" SEEN")
    assert query.charset in ("UTF-8", "US-ASCII")


def test_unsupported_charset_is_no_badcharset() -> None:
    """Another charset is a tagged NO [BADCHARSET (US-ASCII UTF-8)], not a BAD (RFC 3501 6.4.4)."""
    with pytest.raises(UnsupportedCharsetError) as info:
        parse_search_arguments(b"CHARSET KOI8-R SUBJECT x")
    assert info.value.response == "NO"
    assert info.value.code == "BADCHARSET (US-ASCII UTF-8)"
    with pytest.raises(UnsupportedCharsetError):
        parse_search(b"SEEN", "ISO-8859-1")


def test_parse_search_takes_charset_separately() -> None:
    """parse_search parses bare criteria under a CHARSET given apart."""
    assert parse_search(b"SUBJECT caf\xc3\xa9", "utf-8").key == Header("subject", "café")


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"CHARSET UTF-8",
        b"CHARSET",
        b"FOO",
        b"(SEEN",
        b"SEEN)",
        b"()",
        b"SUBJECT",
        b"OR SEEN",
        b"NOT",
        b'SUBJECT "unterminated',
        b'SUBJECT "bad \\q escape"',
        b"SEEN(FLAGGED)",
        b'SUBJECT "a"SEEN',
        b"BEFORE 32-Jan-2020",
        b"BEFORE 1-Foo-2020",
        b"BEFORE 2020-01-01",
        b"LARGER -1",
        b"LARGER x",
        b"LARGER 99999999999999999999",
        b"0",
        b"1:0",
        b"01",
        b"4294967296",
        b"1,,2",
        b"UID x",
        b"KEYWORD",
        b'KEYWORD "quoted"',
        b"SUBJECT {3}",
        b"SUBJECT {3}\r\nab",
        b"SUBJECT {3} SEEN",
        b"SUBJECT \xff\xfe",
        b"HEADER X-Only",
        b"\x00",
    ],
)
def test_syntax_errors_are_bad_clientbug(text: bytes) -> None:
    """Invalid criteria raise a BadCommand with BAD [CLIENTBUG] (never another exception)."""
    with pytest.raises(SearchSyntaxError) as info:
        parse_search_arguments(text)
    assert isinstance(info.value, BadCommand)
    assert (info.value.response, info.value.code) == ("BAD", "CLIENTBUG")


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    """Thousands of nested NOTs or parentheses get BAD, not a crash."""
    with pytest.raises(SearchSyntaxError):
        parse_search_arguments(b"NOT " * 5000 + b"SEEN")
    with pytest.raises(SearchSyntaxError):
        parse_search_arguments(b"(" * 5000 + b"SEEN" + b")" * 5000)


def test_moderate_nesting_is_fine() -> None:
    """Nesting up to the limit (64 levels) parses."""
    assert parse_search_arguments(b"NOT " * 60 + b"SEEN")


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (b"SUBJECT {5}", 5),
        (b"CHARSET UTF-8 SUBJECT {12}", 12),
        (b"CHARSET {5}", 5),
        (b"SUBJECT {5}\r\nabcde FROM {0}", 0),
        (b"SUBJECT x", None),
        (b'SUBJECT "{5}"', None),
        (b"SUBJECT {3}\r\nabc", None),
        (b"SUBJECT {3+}", 3),
    ],
)
def test_pending_literal(data: bytes, size: int | None) -> None:
    """pending_literal reports a literal announced at the very end, and only there."""
    assert pending_literal(data) == size


def test_pending_literal_rejects_hopeless_input() -> None:
    """A line that can never parse (unterminated quote) fails before any continuation is sent."""
    with pytest.raises(SearchSyntaxError):
        pending_literal(b'SUBJECT "abc {5}')


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_parse_or_raise_client_error(data: bytes) -> None:
    """Any input either parses or raises a ClientError: nothing else escapes the parser."""
    with contextlib.suppress(ClientError):
        parse_search_arguments(data)


_WORDS = st.sampled_from(
    [b"SEEN", b"NOT", b"OR", b"(", b")", b"1:*", b"UID", b"SUBJECT", b'"x"', b"{1}\r\nx", b"ALL"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_WORDS, max_size=12))
def test_random_key_sequences_parse_or_raise_client_error(words: list[bytes]) -> None:
    """Random sequences of key words either parse or raise a ClientError."""
    with contextlib.suppress(ClientError):
        parse_search_arguments(b" ".join(words))
