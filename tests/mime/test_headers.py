"""Parsing of MIME parameters (RFC 2045, RFC 2231) and address lists (RFC 5322)."""

from __future__ import annotations

from email.utils import getaddresses

import pytest

from transcoder.mime import (
    Address,
    content_type,
    parse_address_list,
    parse_disposition,
    parse_media_type,
)


def test_media_type_lowercases_names_keeps_values() -> None:
    """Type, subtype and parameter names are lowercased; parameter values keep their case."""
    assert parse_media_type('Multipart/Mixed; BOUNDARY="=_AbC"; X=Yz') == (
        "multipart",
        "mixed",
        (("boundary", "=_AbC"), ("x", "Yz")),
        (("boundary", "=_AbC"), ("x", "Yz")),
    )


def test_quoted_string_unescaping_and_separators() -> None:
    """Quoted values may hold ; and escaped quotes (RFC 5322 section 3.2.4)."""
    parsed = parse_media_type(r'text/plain; name="a \"b\"; c.txt"; charset=utf-8')
    assert parsed is not None
    assert parsed[2] == (("name", 'a "b"; c.txt'), ("charset", "utf-8"))


def test_comments_are_dropped_but_parentheses_in_values_kept() -> None:
    """RFC 822 comments between words go; "file(1).pdf" is a value, not a comment."""
    parsed = parse_media_type("application/pdf (a comment); name=file(1).pdf")
    assert parsed is not None
    assert parsed[:3] == ("application", "pdf", (("name", "file(1).pdf"),))


def test_lenient_unquoted_values() -> None:
    """Unquoted values holding '=' (common boundaries) are accepted whole."""
    parsed = parse_media_type("multipart/mixed; boundary=----=_Part_0_1.2")
    assert parsed is not None
    assert parsed[2] == (("boundary", "----=_Part_0_1.2"),)


@pytest.mark.parametrize("value", ["", "text", "text/", "/plain", "te xt/plain", "text/plain/x"])
def test_invalid_type_is_none_and_defaults_to_text_plain(value: str) -> None:
    """A malformed type/subtype is rejected; content_type() then gives text/plain (RFC 2045 5.2)."""
    assert parse_media_type(value) is None
    assert (content_type(value).maintype, content_type(value).subtype) == ("text", "plain")


def test_rfc2231_charset_value_decoded_and_kept_encoded_for_the_wire() -> None:
    """name*=utf-8''%E2%82%AC decodes to the euro sign; the wire view keeps it encoded."""
    parsed = parse_disposition("attachment; filename*=utf-8'en'%E2%82%AC%20rates.txt")
    assert parsed == (
        "attachment",
        (("filename", "\u20ac rates.txt"),),
        (("filename*", "utf-8'en'%E2%82%AC%20rates.txt"),),
    )


def test_rfc2231_continuations_join_in_index_order() -> None:
    """name*1 after name*0, even when written out of order (RFC 2231 section 3)."""
    parsed = parse_media_type('message/external-body; URL*1="/pub/file"; url*0="ftp://host"')
    assert parsed is not None
    assert parsed[2] == (("url", "ftp://host/pub/file"),)
    assert parsed[3] == (("url", "ftp://host/pub/file"),)


def test_rfc2231_mixed_encoded_and_plain_sections() -> None:
    """A plain section after an encoded one is percent-encoded in the joined wire value."""
    parsed = parse_media_type("text/plain; title*0*=us-ascii'en'This%20is; title*1=\" plain\"")
    assert parsed is not None
    assert parsed[2] == (("title", "This is plain"),)
    assert parsed[3] == (("title*", "us-ascii'en'This%20is%20plain"),)


def test_rfc2231_form_wins_over_plain_fallback() -> None:
    """With both filename and filename*, the decoded RFC 2231 value is the parameter."""
    parsed = parse_disposition("attachment; filename=\"EUR.txt\"; filename*=utf-8''%E2%82%AC.txt")
    assert parsed is not None
    assert dict(parsed[1])["filename"] == "\u20ac.txt"
    assert parsed[2] == (("filename", "EUR.txt"), ("filename*", "utf-8''%E2%82%AC.txt"))


@pytest.mark.parametrize(
    "charset", ["x-nonsense", "", "base64", "zlib", "idna", "punycode", "undefined"]
)
def test_unusable_rfc2231_charset_falls_back_to_utf8(charset: str) -> None:
    """Unknown charsets and Python codecs that are not text encodings decode as UTF-8."""
    parsed = parse_media_type(f"text/plain; name*={charset}''%C3%A9")
    assert parsed is not None
    assert parsed[2][0] == ("name", "\xe9")


def test_plain_text_gets_default_charset_only_when_absent() -> None:
    """text/plain without charset is US-ASCII (RFC 2046 section 4.1.2); others are untouched."""
    assert content_type("text/plain").param("charset") == "us-ascii"
    assert content_type("text/plain; charset=UTF-8").param("CHARSET") == "UTF-8"
    assert content_type("text/html").param("charset") is None


def test_simple_addresses() -> None:
    """name-addr and addr-spec split into name, mailbox and host."""
    assert parse_address_list('"Doe, John" <john@example.org>, jane@example.net') == (
        Address("Doe, John", None, "john", "example.org"),
        Address(None, None, "jane", "example.net"),
    )


def test_group_markers() -> None:
    """Groups become start (NIL host, name as mailbox) and end (all NIL) markers (RFC 3501)."""
    assert parse_address_list("Friends: a@x.org, B <b@y.org>;, c@z.org") == (
        Address(None, None, "Friends", None),
        Address(None, None, "a", "x.org"),
        Address("B", None, "b", "y.org"),
        Address(None, None, None, None),
        Address(None, None, "c", "z.org"),
    )
    assert parse_address_list("undisclosed-recipients:;") == (
        Address(None, None, "undisclosed-recipients", None),
        Address(None, None, None, None),
    )


def test_route_comments_and_encoded_words() -> None:
    """Source routes are kept, comments dropped, RFC 2047 words left encoded."""
    assert parse_address_list(
        "=?utf-8?q?J=C3=B6rg?= <@relay.example,@r2.example:joerg@example.de> (home)"
    ) == (Address("=?utf-8?q?J=C3=B6rg?=", "@relay.example,@r2.example", "joerg", "example.de"),)


def test_quoted_local_part_and_missing_domain() -> None:
    """A quoted local part is kept as written; a bare word gets an empty (non-NIL) host."""
    assert parse_address_list('"john doe"@example.org, postmaster') == (
        Address(None, None, '"john doe"', "example.org"),
        Address(None, None, "postmaster", ""),
    )


@pytest.mark.parametrize(
    "value", ["", "<>", ",,,", "<", "@", ";;", ":", "a@", "\xff\xfe<\xe9@\xe8>", '"unterminated']
)
def test_garbage_never_raises(value: str) -> None:
    """Malformed address lists parse to something (possibly nothing) without raising."""
    for address in parse_address_list(value):
        assert isinstance(address, Address)


@pytest.mark.parametrize(
    "value",
    [
        "Alice <alice@example.org>",
        "a@b.example, C D <c@d.example>",
        '"Last, First" <first.last@example.com>',
        "Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>",
        "a@b.example (Real Name), C <c@d.example>",
    ],
)
def test_agrees_with_email_getaddresses_on_plain_lists(value: str) -> None:
    """Without groups or routes, names and addresses match email.utils.getaddresses."""
    ours = [(a.name or "", f"{a.mailbox}@{a.host}") for a in parse_address_list(value)]
    assert ours == getaddresses([value])


def test_rfc2231_value_never_holds_lone_surrogates() -> None:
    """A codec that can produce lone surrogates (raw_unicode_escape) yields encodable text."""
    parsed = parse_media_type("multipart/mixed; boundary*=raw_unicode_escape''%5Cud800x")
    assert parsed is not None
    value = dict(parsed[2])["boundary"]
    assert value.encode("utf-8") and value.endswith("x")
