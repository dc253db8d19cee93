"""Charset conversions (RFC 5259 section 7.1) and encoded words in headers (section 6)."""

from __future__ import annotations

import email
import io
from email import policy

import pytest

from tests.convert.support import LATIN1_TEXT, MESSAGE, UTF8_TEXT, convert
from transcoder.convert import ConversionFailed, ConversionRequest
from transcoder.convert.charset import CHARSETS, recode_header_words, recode_into, recode_text

LATIN = (("charset", "iso-8859-1"),)


def request(*params: tuple[str, str], target: str | None = "text/plain") -> ConversionRequest:
    return ConversionRequest(target, tuple(params))


def test_a_latin1_quoted_printable_part_becomes_utf8_as_python_decodes_it() -> None:
    """Part 1 (ISO-8859-1, quoted-printable) to UTF-8: the text Python's email package decodes."""
    converted = convert((1,), request(("charset", "UTF-8")))
    expected = email.message_from_bytes(MESSAGE, policy=policy.default).get_payload()[0]
    assert converted.body.decode("utf-8") == expected.get_content() == LATIN1_TEXT
    assert converted.media_type == "text/plain"
    header = converted.entity[: converted.header_size]
    assert b"charset=utf-8" in header and b"format=flowed" in header


def test_utf8_outside_latin1_fails_naming_charset_without_a_replacement() -> None:
    """UTF-8 with characters latin-1 lacks: ERROR BADPARAMETERS on ("charset" "iso-8859-1")."""
    with pytest.raises(ConversionFailed) as failed:
        convert((3,), request(*LATIN))
    assert failed.value.error == "BADPARAMETERS"
    assert failed.value.params == LATIN
    assert (failed.value.source, failed.value.target) == ("text/plain", "text/plain")


def test_the_replacement_stands_for_each_unrepresentable_character() -> None:
    """With unknown-character-replacement "?" the conversion succeeds, one "?" a character."""
    converted = convert((3,), request(*LATIN, ("unknown-character-replacement", "?")))
    expected = "".join(c if ord(c) < 256 else "?" for c in UTF8_TEXT)
    assert converted.body == expected.encode("latin-1")


def test_a_replacement_the_charset_cannot_represent_fails_naming_it() -> None:
    """A replacement outside the target charset is itself a BADPARAMETERS error."""
    with pytest.raises(ConversionFailed) as failed:
        convert((3,), request(("charset", "us-ascii"), ("unknown-character-replacement", "€")))
    assert failed.value.params == (("unknown-character-replacement", "€"),)


def test_text_conversions_need_a_charset() -> None:
    """A text/plain target without charset: MISSINGPARAMETERS (RFC 5259 section 9's b003)."""
    with pytest.raises(ConversionFailed) as failed:
        convert((1,), request())
    assert failed.value.error == "MISSINGPARAMETERS" and failed.value.missing == ("charset",)


def test_unknown_parameters_are_listed_never_ignored() -> None:
    """RFC 5259 section 9: every unrecognized parameter is listed in BADPARAMETERS."""
    with pytest.raises(ConversionFailed) as failed:
        convert((1,), request(("charset", "utf-8"), ("pix-x", "128")))
    assert failed.value.params == (("pix-x", "128"),)


def test_html_changes_charset_and_the_default_conversion_is_utf8() -> None:
    """text/html to text/html in UTF-8; NIL gives UTF-8 too."""
    for wanted in (request(("charset", "utf-8"), target="text/html"), request(target=None)):
        converted = convert((4,), wanted)
        assert converted.body == "<p>Grüße</p>".encode()
        assert b"text/html; charset=utf-8" in converted.entity


@pytest.mark.parametrize("charset", [c for c in CHARSETS if c.startswith("iso-8859")])
def test_every_listed_iso_8859_charset_round_trips_through_utf8(charset: str) -> None:
    """Each mandatory charset to UTF-8 and back gives the original octets."""
    original = bytes(range(0x20, 0x7F)) + bytes(
        b for b in range(0xA0, 0x100) if _decodes(bytes([b]), charset)
    )
    utf8 = recode_text(original, charset, request(("charset", "utf-8")))
    assert utf8.decode("utf-8") == original.decode(charset)
    assert recode_text(utf8, "utf-8", request(("charset", charset))) == original


def _decodes(data: bytes, charset: str) -> bool:
    try:
        data.decode(charset)
    except UnicodeDecodeError:
        return False
    return True


def test_encoded_words_are_recoded_to_the_requested_charset() -> None:
    """RFC 5259 section 6's D002: a KOI8-R word in UTF-8 (pure ASCII text becomes plain)."""
    header = b"Subject: =?KOI8-R?B?0NLJ18XU?= and =?KOI8-R?Q?why_encode_this?=\r\n\r\n"
    out = recode_header_words(header, request(("charset", "utf-8"), target=None))
    parsed = email.message_from_bytes(out, policy=policy.default)
    assert parsed["Subject"] == "привет and why encode this"
    assert b"=?UTF-8?B?" in out and b"KOI8" not in out


def test_undecodable_encoded_words_stay_as_they_are() -> None:
    """An unknown charset in an encoded word is left alone (RFC 5259 section 6)."""
    header = b"Subject: =?X-UNKNOWN?Q?abc?=\r\n\r\n"
    assert recode_header_words(header, request(("charset", "utf-8"), target=None)) == header


def test_header_conversions_need_charset() -> None:
    """BODY[HEADER] conversion without CHARSET: MISSINGPARAMETERS."""
    with pytest.raises(ConversionFailed) as failed:
        recode_header_words(b"Subject: x\r\n\r\n", request(target=None))
    assert failed.value.error == "MISSINGPARAMETERS"


@pytest.mark.parametrize("cut", [1, 2, 3, 7])
def test_recoding_piece_by_piece_is_recoding_the_whole(cut: int) -> None:
    """Chunks cut anywhere -- inside a UTF-8 sequence too -- recode to what the whole text
    recodes to, replacements included; the ASCII answer is about the output."""
    original = UTF8_TEXT.encode("utf-8")
    wanted = request(("charset", "iso-8859-1"), ("unknown-character-replacement", "?"))
    whole = recode_text(original, "utf-8", wanted)
    out = io.BytesIO()
    chunks = [original[i : i + cut] for i in range(0, len(original), cut)]
    recoded = recode_into(chunks, "utf-8", wanted, out)
    assert out.getvalue() == whole
    assert (recoded.ascii_only, recoded.has_nul) == (whole.isascii(), False)
    ascii_out = io.BytesIO()
    recoded = recode_into(
        [b"plain", b"\0text"], "us-ascii", request(("charset", "utf-8")), ascii_out
    )
    assert ascii_out.getvalue() == b"plain\0text" and recoded.ascii_only and recoded.has_nul
