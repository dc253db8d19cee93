"""The grammar of CONVERSIONS and CONVERT (RFC 5259 section 10) and the responses' formats."""

from __future__ import annotations

import pytest

from transcoder.convert import ConversionFailed, ConversionRequest
from transcoder.convert.registry import ConversionLine
from transcoder.convert.syntax import (
    ConvertItem,
    conversion_response,
    error_phrase,
    mimetype_list,
    parse_conversions,
    parse_convert,
)
from transcoder.errors import BadCommand


def test_rfc_examples_parse() -> None:
    """The RFC's own command lines (after the sequence set) parse as it means them."""
    a001 = parse_convert(b'("APPLICATION/PDF") BINARY[3]')
    assert a001.request == ConversionRequest("application/pdf")
    assert a001.items == (ConvertItem("BINARY", (3,)),)
    b001 = parse_convert(
        b'("text/plain" ("charset" "us-ascii" "unknown-character-replacement" "?")) BINARY[3]'
    )
    assert b001.request.params == (("charset", "us-ascii"), ("unknown-character-replacement", "?"))
    c001 = parse_convert(b'("TEXT/PLAIN" ("CHARSET" "us-ascii")) BINARY[4]<2001.1000>')
    assert c001.items[0].partial == (2001, 1000) and c001.items[0].label() == b"BINARY[4]<2001>"
    assert c001.request.get("charset") == "us-ascii"
    e002 = parse_convert(b'(NIL ("PIX-X" "128" "PIX-Y" "96")) (BINARY[2] BODYPARTSTRUCTURE[2])')
    assert e002.request.target is None and [i.name for i in e002.items] == [
        "BINARY",
        "BODYPARTSTRUCTURE",
    ]
    d012 = parse_convert(b"(NIL) BODY[1.MIME]")
    assert d012.items == (ConvertItem("BODY", (1,), "MIME"),)
    assert d012.items[0].label() == b"BODY[1.MIME]"
    f001 = parse_convert(b"(NIL) (AVAILABLECONVERSIONS[2] UID BINARY.SIZE[] BODY[HEADER])")
    assert [i.label() for i in f001.items] == [
        b"AVAILABLECONVERSIONS[2]",
        b"UID",
        b"BINARY.SIZE[]",
        b"BODY[HEADER]",
    ]
    assert parse_conversions(b'"image/gif" "*"') == ("image/gif", "*")
    # "*" is not an atom character (RFC 5259 section 10): an atom names a concrete type.
    assert parse_conversions(b'TEXT/PLAIN "text/*"') == ("text/plain", "text/*")


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b'("text/plain")',
        b'("text/plain") ',
        b'"text/plain" BINARY[1]',
        b'("text") BINARY[1]',
        b'("*") BINARY[1]',
        b'("text/plain" ()) BINARY[1]',
        b'("text/plain" ("a")) BINARY[1]',
        b'("text/plain" ("a" "b" "a" "c")) BINARY[1]',
        b'("text/plain" ("a" {1}\r\nb)) BINARY[1]',
        b'("text/plain") BINARY[1.0]',
        b'("text/plain") BINARY[01]',
        b'("text/plain") BINARY[1]<1.0>',
        b'("text/plain") BINARY.SIZE[1]<1.2>',
        b'("text/plain") BINARY[TEXT]',
        b'("text/plain") BODY[HEADER]',
        b"(NIL) BODY[TEXT]",
        b"(NIL) BODY[MIME]",
        b"(NIL) (BINARY[1]",
        b"(NIL) (BINARY[1] RFC822)",
        b"(NIL) BINARY[1] BINARY[2]",
        b"(NIL) BINARY[99999999999]",
    ],
)
def test_malformed_arguments_are_bad_commands(line: bytes) -> None:
    """Anything the grammar does not allow is BadCommand (BAD [CLIENTBUG]), nothing else."""
    with pytest.raises(BadCommand):
        parse_convert(line)


@pytest.mark.parametrize("line", [b"", b'"*"', b'"text" "*"', b'"*/x" "*"', b'"*" "*" "*"'])
def test_malformed_conversions_are_bad_commands(line: bytes) -> None:
    """CONVERSIONS needs exactly two media type requests."""
    with pytest.raises(BadCommand):
        parse_conversions(line)


def test_error_phrases_follow_the_abnf() -> None:
    """BADPARAMETERS with the parameters and values, NIL for a missing part, MISSINGPARAMETERS
    with names only, TEMPFAIL bare."""
    bad = ConversionFailed(
        "Source text has non us-ascii",
        source="text/html",
        target="text/plain",
        params=(("charset", "us-ascii"),),
    )
    assert error_phrase(bad) == (
        b'(ERROR "Source text has non us-ascii" BADPARAMETERS "text/html" "text/plain" '
        b'("charset" "us-ascii"))'
    )
    gone = ConversionFailed("No such body part", source=None, target="text/plain")
    assert error_phrase(gone) == b'(ERROR "No such body part" BADPARAMETERS NIL "text/plain")'
    missing = ConversionFailed(
        "CHARSET must be specified",
        "MISSINGPARAMETERS",
        source="text/plain",
        target="text/plain",
        missing=("charset",),
    )
    assert error_phrase(missing).endswith(
        b'MISSINGPARAMETERS "text/plain" "text/plain" ("charset"))'
    )
    assert error_phrase(ConversionFailed("busy", "TEMPFAIL")) == b'(ERROR "busy" TEMPFAIL)'


def test_lists_have_two_levels_and_conversions_their_parameters() -> None:
    """mimetype-list is (( ... )); a CONVERSION line carries its parameter names."""
    assert mimetype_list(["image/jpeg", "application/postscript"]) == (
        b'(("image/jpeg" "application/postscript"))'
    )
    assert mimetype_list([]) == b"(())"
    line = ConversionLine("image/gif", "image/jpeg", ("pix-y", "pix-x"))
    assert conversion_response(line) == b'CONVERSION "image/gif" "image/jpeg" ("pix-y" "pix-x")'
    assert conversion_response(ConversionLine("a/b", "a/b", ())) == b'CONVERSION "a/b" "a/b"'
