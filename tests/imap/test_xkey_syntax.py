"""XKEY's sans-IO syntax: arguments to requests, keys and policies to response data and back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transcoder.errors import BadCommand
from transcoder.imap.xkey_syntax import (
    DeleteKey,
    KeyListing,
    KeyLiteralAhead,
    ListKeys,
    PolicyListing,
    PutKey,
    ResponseSyntaxError,
    SetPolicy,
    ShowPolicy,
    imap_string,
    key_response,
    parse_arguments,
    parse_response,
    policy_response,
)
from transcoder.keys.model import KeyFormat, KeyStatus, KeyUsage, PolicyMode

FPR = "ab" * 32
LISTING = KeyListing(
    format=KeyFormat.SMIME,
    fingerprint=FPR,
    addresses=("a@b.example",),
    not_after=datetime(2027, 1, 31, tzinfo=UTC),
    usages=frozenset({KeyUsage.ENCRYPT}),
    status=KeyStatus.ACTIVE,
)


@pytest.mark.parametrize(
    ("line", "request_"),
    [
        (b"LIST", ListKeys()),
        (b"list", ListKeys()),
        (b"POLICY", ShowPolicy()),
        (b"POLICY MODE ALWAYS", SetPolicy(mode=PolicyMode.ALWAYS)),
        (b"policy mode off", SetPolicy(mode=PolicyMode.OFF)),
        (b"POLICY FORMAT SMIME", SetPolicy(format=KeyFormat.SMIME)),
        (b"POLICY FORMAT OpenPGP", SetPolicy(format=KeyFormat.OPENPGP)),
        (b"DELETE " + FPR.upper().encode(), DeleteKey(FPR)),
        (b'DELETE "AB:CD:EF"', DeleteKey("abcdef")),
        (b'PUT "key \\"material\\" \\\\ here"', PutKey(b'key "material" \\ here')),
        (b"PUT {1234}", KeyLiteralAhead(1234)),
        (b"put {7+}", KeyLiteralAhead(7, non_synchronizing=True)),
    ],
)
def test_requests_parse(line: bytes, request_: object) -> None:
    """Each XKEY form of DESIGN.md parses to its request, keywords in any case."""
    assert parse_arguments(line) == request_


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"FROB",
        b"LIST ALL",
        b"PUT",
        b"PUT atom",
        b'PUT "unterminated',
        b'PUT "two" "args"',
        b"PUT {12",
        b"PUT {12} trailing",
        b"DELETE",
        b"DELETE not-hex",
        b"DELETE " + b"a" * 129,
        b"DELETE aa bb",
        b"POLICY MODE",
        b"POLICY MODE SOMETIMES",
        b"POLICY FORMAT PGP",
        b"POLICY COLOUR BLUE",
        b"POLICY MODE ALWAYS FORMAT SMIME",
    ],
)
def test_syntax_errors_are_bad(line: bytes) -> None:
    """Malformed arguments raise BadCommand (answered BAD)."""
    with pytest.raises(BadCommand):
        parse_arguments(line)


def test_key_response_matches_design() -> None:
    """The untagged key response is exactly DESIGN.md's example."""
    assert key_response(LISTING) == (
        b'XKEY (FORMAT SMIME FINGERPRINT "' + FPR.encode() + b'" ADDRESSES ("a@b.example")'
        b' NOT-AFTER "2027-01-31T00:00:00Z" USAGE (ENCRYPT) STATUS ACTIVE)'
    )


def test_key_without_expiry_and_both_usages() -> None:
    """NOT-AFTER is NIL for a key that never expires; usages are listed ENCRYPT first."""
    listing = KeyListing(
        KeyFormat.OPENPGP,
        "0a" * 20,
        ("x@y.example", "z@y.example"),
        None,
        frozenset({KeyUsage.SIGN, KeyUsage.ENCRYPT}),
        KeyStatus.RETIRED,
    )
    assert key_response(listing) == (
        b'XKEY (FORMAT OPENPGP FINGERPRINT "' + b"0a" * 20 + b'" ADDRESSES ("x@y.example"'
        b' "z@y.example") NOT-AFTER NIL USAGE (ENCRYPT SIGN) STATUS RETIRED)'
    )


def test_policy_responses() -> None:
    """The policy response names MODE and FORMAT, FORMAT NIL when there is none."""
    assert (
        policy_response(PolicyListing(PolicyMode.ALWAYS, KeyFormat.SMIME))
        == b"XKEY POLICY (MODE ALWAYS FORMAT SMIME)"
    )
    assert policy_response(PolicyListing(PolicyMode.OFF, None)) == (
        b"XKEY POLICY (MODE OFF FORMAT NIL)"
    )


def test_strings_quote_or_become_literals() -> None:
    """Printable ASCII is quoted (escaping quote and backslash); anything else is a literal."""
    assert imap_string('a"b\\c') == b'"a\\"b\\\\c"'
    assert imap_string("jörg@example.org") == b"{17}\r\nj\xc3\xb6rg@example.org"
    assert imap_string("a\r\nb") == b"{4}\r\na\r\nb"


def test_parse_design_examples() -> None:
    """The responses as imaplib hands them over (after ``XKEY``) parse to listings."""
    assert parse_response(key_response(LISTING)[5:]) == LISTING
    assert parse_response(b"POLICY (MODE ALWAYS FORMAT SMIME)") == PolicyListing(
        PolicyMode.ALWAYS, KeyFormat.SMIME
    )
    assert parse_response(b"POLICY (MODE OFF FORMAT NIL)") == PolicyListing(PolicyMode.OFF, None)


def test_parse_skips_unknown_items() -> None:
    """Items a later server adds are ignored, so clients keep working."""
    data = key_response(LISTING)[5:-1] + b' CREATED "2026-01-01T00:00:00Z" EXTRA (A (B)))'
    assert parse_response(data) == LISTING


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"(FORMAT SMIME",
        b"(FORMAT)",
        b"(FORMAT SMIME FINGERPRINT)",
        b'(FORMAT RSA FINGERPRINT "ab" ADDRESSES () NOT-AFTER NIL USAGE () STATUS ACTIVE)',
        b'(FORMAT SMIME FINGERPRINT "ab" ADDRESSES () NOT-AFTER "soon" USAGE () STATUS ACTIVE)',
        b'(FORMAT SMIME FINGERPRINT "ab" ADDRESSES "a" NOT-AFTER NIL USAGE () STATUS ACTIVE)',
        b"POLICY (MODE MAYBE FORMAT NIL)",
        b"POLICY MODE ALWAYS",
        b"(A {5}\r\nab)",
        b"((((((A))))))",
        b"(A B))",
    ],
)
def test_malformed_responses_raise(data: bytes) -> None:
    """Response data breaking the grammar raises ResponseSyntaxError, never another error."""
    with pytest.raises(ResponseSyntaxError):
        parse_response(data)


_ADDRESS = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)


@given(
    fmt=st.sampled_from(KeyFormat),
    fingerprint=st.text("0123456789abcdef", min_size=1, max_size=64),
    addresses=st.lists(_ADDRESS, max_size=4).map(tuple),
    not_after=st.none()
    | st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.replace(microsecond=0)),
    usages=st.frozensets(st.sampled_from(KeyUsage)),
    status=st.sampled_from(KeyStatus),
)
def test_key_responses_round_trip(
    fmt: KeyFormat,
    fingerprint: str,
    addresses: tuple[str, ...],
    not_after: datetime | None,
    usages: frozenset[KeyUsage],
    status: KeyStatus,
) -> None:
    """Whatever the addresses hold (quotes, non-ASCII, CRLF), a response parses back to itself."""
    listing = KeyListing(fmt, fingerprint, addresses, not_after, usages, status)
    assert parse_response(key_response(listing)[5:]) == listing
