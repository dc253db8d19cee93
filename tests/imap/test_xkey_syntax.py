"""XKEY's sans-IO syntax: arguments to requests, keys and policies to response data.

Responses are read back with the client library's parser
(:mod:`transcoder.client.syntax`), so the server's formatter is checked
against the parser real clients use.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transcoder.client import KeyInfo, PolicyInfo
from transcoder.client.syntax import parse_xkey_responses
from transcoder.errors import BadCommand
from transcoder.imap.xkey_syntax import (
    DeleteKey,
    KeyListing,
    KeyLiteralAhead,
    ListKeys,
    PolicyListing,
    PutKey,
    SetPolicy,
    ShowPolicy,
    imap_string,
    key_response,
    parse_arguments,
    policy_response,
)
from transcoder.keys.model import KeyFormat, KeyStatus, KeyUsage, Policy, PolicyMode

FPR = "ab" * 32
LISTING = KeyListing(
    format=KeyFormat.SMIME,
    fingerprint=FPR,
    addresses=("a@b.example",),
    not_after=datetime(2027, 1, 31, tzinfo=UTC),
    usages=frozenset({KeyUsage.ENCRYPT}),
    status=KeyStatus.ACTIVE,
)


def parsed_by_client(response: bytes) -> KeyInfo | PolicyInfo:
    """The one key or policy the client library reads from an untagged ``response``."""
    assert response.startswith(b"XKEY ")
    keys, policies = parse_xkey_responses([response[len(b"XKEY ") :]])
    found: list[KeyInfo | PolicyInfo] = [*keys, *policies]
    assert len(found) == 1, found
    return found[0]


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
    """Each XKEY form of docs/design.md parses to its request, keywords in any case."""
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
    """The untagged key response is exactly docs/design.md's example."""
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
    """The policy response names MODE, FORMAT (NIL when there is none) and SIGN."""
    assert (
        policy_response(PolicyListing(PolicyMode.ALWAYS, KeyFormat.SMIME, True))
        == b"XKEY POLICY (MODE ALWAYS FORMAT SMIME SIGN ON)"
    )
    assert policy_response(PolicyListing(PolicyMode.OFF, None)) == (
        b"XKEY POLICY (MODE OFF FORMAT NIL SIGN OFF)"
    )


def test_policy_listing_resolves_the_server_sign_default() -> None:
    """SIGN shown is the account's own, else the server's default."""
    assert PolicyListing.of(Policy(sign=None), sign_default=True).sign
    assert not PolicyListing.of(Policy(sign=False), sign_default=True).sign
    assert PolicyListing.of(Policy(sign=True)).sign


def test_policy_sign_parses() -> None:
    """XKEY POLICY SIGN ON|OFF (any case) sets SIGN alone; another word is BAD."""
    assert parse_arguments(b"POLICY SIGN on") == SetPolicy(sign=True)
    assert parse_arguments(b"policy sign OFF") == SetPolicy(sign=False)
    with pytest.raises(BadCommand):
        parse_arguments(b"POLICY SIGN maybe")


def test_strings_quote_or_become_literals() -> None:
    """Printable ASCII is quoted (escaping quote and backslash); anything else is a literal."""
    assert imap_string('a"b\\c') == b'"a\\"b\\\\c"'
    assert imap_string("jörg@example.org") == b"{17}\r\nj\xc3\xb6rg@example.org"
    assert imap_string("a\r\nb") == b"{4}\r\na\r\nb"


def test_client_reads_design_example() -> None:
    """The client library reads docs/design.md's key response back to the key's fields."""
    assert parsed_by_client(key_response(LISTING)) == KeyInfo(
        format="SMIME",
        fingerprint=FPR,
        addresses=("a@b.example",),
        not_after=datetime(2027, 1, 31, tzinfo=UTC),
        usage=("ENCRYPT",),
        status="ACTIVE",
    )


@pytest.mark.parametrize("mode", PolicyMode)
@pytest.mark.parametrize("fmt", [*KeyFormat, None])
@pytest.mark.parametrize("sign", [False, True])
def test_policy_responses_round_trip(mode: PolicyMode, fmt: KeyFormat | None, sign: bool) -> None:
    """Every policy response reads back, through the client library, to its mode, format
    and SIGN."""
    parsed = parsed_by_client(policy_response(PolicyListing(mode, fmt, sign)))
    assert parsed == PolicyInfo(mode.value, None if fmt is None else fmt.value, sign)


_ADDRESS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)


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
    """Whatever the addresses hold (quotes, non-ASCII, CRLF), the client reads back each field."""
    listing = KeyListing(fmt, fingerprint, addresses, not_after, usages, status)
    assert parsed_by_client(key_response(listing)) == KeyInfo(
        format=fmt.value,
        fingerprint=fingerprint,
        addresses=addresses,
        not_after=not_after,
        usage=tuple(u.value for u in KeyUsage if u in usages),
        status=status.value,
    )
