"""Charset conversions of text parts and of encoded words in headers (RFC 5259 section 7.1).

Sans-IO: no twisted import.

* :func:`recode_into` (and :func:`recode_text` over bytes) -- the content
  of a ``text/plain`` or ``text/html`` part, piece by piece, from its
  ``charset`` to another: the ISO-8859 family RFC 5259 section 7.1 lists
  (1 to 8 and 15), US-ASCII and UTF-8, in every direction.  A character
  the target cannot represent fails the conversion (``ERROR
  BADPARAMETERS`` naming the ``charset`` parameter) unless
  ``unknown-character-replacement`` gives a string to put in its place; a
  replacement the target cannot represent itself fails naming that
  parameter (section 7.1).  Line breaks and every other octet of meaning
  are kept: only the encoding of characters changes.  An HTML part's
  ``<meta charset>`` is not rewritten (a client reads the charset from the
  MIME header, which is).
* :func:`recode_header_words` -- ``BODY[HEADER]``, ``BODY[n.HEADER]`` and
  ``BODY[n.MIME]`` with ``CHARSET`` (section 6): each RFC 2047 encoded word
  in a known charset is decoded and written again in the requested one
  (pure US-ASCII text as it is, which the RFC allows); a word it cannot
  decode, or whose text the target cannot represent, is left as it is.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import io
import quopri
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from transcoder.convert.model import (
    BADPARAMETERS,
    MISSINGPARAMETERS,
    ConversionFailed,
    ConversionRequest,
)

#: The charsets converted, by their MIME names (RFC 5259 section 7.1's list, US-ASCII, UTF-8).
CHARSETS: tuple[str, ...] = (
    "us-ascii",
    "utf-8",
    "iso-8859-1",
    "iso-8859-2",
    "iso-8859-3",
    "iso-8859-4",
    "iso-8859-5",
    "iso-8859-6",
    "iso-8859-7",
    "iso-8859-8",
    "iso-8859-15",
)
#: Aliases a sender may write for those (matched lower-cased).
_ALIASES = {"ascii": "us-ascii", "utf8": "utf-8", "latin1": "iso-8859-1", "latin-1": "iso-8859-1"}
#: The longest replacement string accepted, in characters.
MAX_REPLACEMENT = 16
#: The parameters a text conversion understands.
TEXT_PARAMETERS = ("charset", "unknown-character-replacement")
_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")


def charset_name(value: str | None) -> str | None:
    """The MIME name of a charset this module converts, or ``None``."""
    if value is None:
        return None
    name = value.strip().strip('"').lower()
    name = _ALIASES.get(name, name)
    return name if name in CHARSETS else None


def _codec(charset: str) -> str:
    return "ascii" if charset == "us-ascii" else charset


def recode_text(content: bytes, source_charset: str | None, request: ConversionRequest) -> bytes:
    """``content`` in the request's ``charset``; raises ConversionFailed (module doc)."""
    out = io.BytesIO()
    recode_into((content,), source_charset, request, out)
    return out.getvalue()


@dataclass(frozen=True)
class Recoded:
    """What :func:`recode_into` wrote: whether it was all US-ASCII, whether it held a NUL."""

    ascii_only: bool
    has_nul: bool


def recode_into(
    chunks: Iterable[bytes], source_charset: str | None, request: ConversionRequest, out: BinaryIO
) -> Recoded:
    """Write the text in ``chunks`` (cut anywhere) to ``out`` in the request's ``charset``,
    piece by piece.  Raises ConversionFailed (module doc), possibly after writing part of
    it."""
    wanted = request.get("charset")
    if wanted is None:
        raise ConversionFailed(
            "CHARSET must be specified for text conversions",
            MISSINGPARAMETERS,
            missing=("charset",),
        )
    target = charset_name(wanted)
    if target is None:
        raise ConversionFailed("This charset is not converted to", params=(("charset", wanted),))
    source = charset_name(source_charset or "us-ascii")
    if source is None:
        raise ConversionFailed(
            "The part's charset is not converted from", params=(("charset", wanted),)
        )
    decoder = codecs.getincrementaldecoder(_codec(source))()
    replacement = request.get("unknown-character-replacement")
    ascii_only, has_nul = True, False
    for chunk, final in _with_last(chunks):
        try:
            text = decoder.decode(chunk, final)
        except UnicodeDecodeError:
            raise ConversionFailed(
                "The part is not valid in its own charset", params=(("charset", wanted),)
            ) from None
        try:
            encoded = text.encode(_codec(target))
        except UnicodeEncodeError:
            if replacement is None:
                raise ConversionFailed(
                    "Source text has characters the charset cannot represent",
                    params=(("charset", wanted),),
                ) from None
            encoded = _replaced(text, target, replacement)
        ascii_only = ascii_only and encoded.isascii()
        has_nul = has_nul or b"\0" in encoded
        out.write(encoded)
    return Recoded(ascii_only, has_nul)


def _with_last(chunks: Iterable[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Each chunk with whether it is the last (an empty last one when there are none)."""
    previous: bytes | None = None
    for chunk in chunks:
        if previous is not None:
            yield previous, False
        previous = chunk
    yield previous or b"", True


def _replaced(text: str, target: str, replacement: str) -> bytes:
    """``text`` in ``target`` with ``replacement`` for each character it cannot represent."""
    param = (("unknown-character-replacement", replacement),)
    if len(replacement) > MAX_REPLACEMENT:
        raise ConversionFailed(
            f"UNKNOWN-CHARACTER-REPLACEMENT limited to {MAX_REPLACEMENT} characters", params=param
        )
    codec = _codec(target)
    try:
        encoded_replacement = replacement.encode(codec)
    except UnicodeEncodeError:
        raise ConversionFailed(
            "The replacement cannot be represented in the charset", params=param
        ) from None
    out = bytearray()
    for char in text:
        try:
            out += char.encode(codec)
        except UnicodeEncodeError:
            out += encoded_replacement
    return bytes(out)


def check_text_parameters(request: ConversionRequest) -> None:
    """BADPARAMETERS for every parameter a text conversion does not know (RFC 5259 section 9:
    all unrecognized parameters must be listed, none ignored)."""
    unknown = tuple((k, v) for k, v in request.params if k not in TEXT_PARAMETERS)
    if unknown:
        raise ConversionFailed("Unknown conversion parameters", BADPARAMETERS, params=unknown)


def _decode_word(charset: bytes, kind: bytes, text: bytes) -> str | None:
    """The text of one encoded word (RFC 2047 section 4), or ``None`` when it cannot be decoded."""
    name = charset.decode("ascii", "replace").split("*", 1)[0]  # RFC 2231 language suffix
    try:
        codec = codecs.lookup(_codec(charset_name(name) or name.lower())).name
        if kind.upper() == b"B":
            raw = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
        else:
            raw = quopri.decodestring(text.replace(b"_", b" "), header=False)
        return raw.decode(codec)
    except (LookupError, ValueError, binascii.Error):
        return None


def _encode_word(text: str, charset: str) -> bytes | None:
    """``text`` as encoded words in ``charset`` (plain when ASCII); ``None``: unrepresentable."""
    if text.isascii() and "=?" not in text:
        return text.encode("ascii")
    try:
        raw = text.encode(_codec(charset))
    except UnicodeEncodeError:
        return None
    # RFC 2047 section 2: at most 75 characters a word; 45 octets give 60 base64 characters.
    words = [
        b"=?" + charset.upper().encode("ascii") + b"?B?" + base64.b64encode(raw[i : i + 45]) + b"?="
        for i in range(0, len(raw), 45)
    ]
    return _utf8_words(text) if charset == "utf-8" else b" ".join(words)


def _utf8_words(text: str) -> bytes:
    """UTF-8 encoded words never splitting a character (RFC 2047 section 5)."""
    words, chunk = [], ""
    for char in text:
        if len((chunk + char).encode("utf-8")) > 45:
            words.append(chunk)
            chunk = ""
        chunk += char
    words.append(chunk)
    return b" ".join(
        b"=?UTF-8?B?" + base64.b64encode(w.encode("utf-8")) + b"?=" for w in words if w
    )


def recode_header_words(header: bytes, request: ConversionRequest) -> bytes:
    """``header`` with its encoded words in the request's ``CHARSET`` (module doc)."""
    wanted = request.get("charset")
    if wanted is None:
        raise ConversionFailed(
            "CHARSET must be specified for header conversions",
            MISSINGPARAMETERS,
            missing=("charset",),
        )
    unknown = tuple((k, v) for k, v in request.params if k != "charset")
    target = charset_name(wanted)
    if unknown or target is None:
        bad = unknown or (("charset", wanted),)
        raise ConversionFailed("Parameters not valid for a header conversion", params=bad)

    def recode(match: re.Match[bytes]) -> bytes:
        text = _decode_word(match.group(1), match.group(2), match.group(3))
        if text is None:
            return match.group(0)
        encoded = _encode_word(text, target)
        return match.group(0) if encoded is None else encoded

    return _ENCODED_WORD.sub(recode, header)


__all__ = [
    "CHARSETS",
    "MAX_REPLACEMENT",
    "TEXT_PARAMETERS",
    "Recoded",
    "charset_name",
    "check_text_parameters",
    "recode_header_words",
    "recode_into",
    "recode_text",
]
