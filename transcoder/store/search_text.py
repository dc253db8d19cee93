"""Text matching for SEARCH: case-insensitive substrings in headers and bodies (RFC 3501 6.4.4).

RFC 3501 section 6.4.4 asks for a case-insensitive substring match after
undoing content transfer encodings and RFC 2047 encoded-words.  This module
holds the pure pieces of that:

* :func:`decode_header_value` turns an unfolded header value into the text a
  user sees (8-bit UTF-8 octets, RFC 2047 encoded-words);
* :func:`address_texts` reads an address field's value as parsed addresses
  written plainly (``Name <local@domain>``, comments and folding white space
  removed, RFC 5322 section 3.2.2), for the address keys;
* :func:`scan_body` looks for a needle in one MIME body read from a binary
  file in bounded chunks, decoding base64 / quoted-printable (RFC 2045
  section 6) and the part's charset incrementally.  It keeps only
  ``len(needle) - 1`` characters of overlap between chunks, so a 100 MB
  attachment costs one chunk of memory, and it is a generator that yields
  after every chunk so a caller can interleave other work.

No twisted import here.
"""

from __future__ import annotations

import binascii
import codecs
import contextlib
import re
from collections.abc import Generator
from typing import BinaryIO, Protocol

from transcoder.mime.headers import parse_address_list

#: Octets read from a message file per step.
CHUNK_SIZE = 64 * 1024
#: Longest quoted-printable line kept whole while waiting for its end; a
#: longer one is decoded in pieces (RFC 2045 section 6.7 limits lines to 76).
_QP_LINE_LIMIT = 64 * 1024

# RFC 2047 section 2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
# Octets outside the base64 alphabet are ignored by decoders (RFC 2045 section 6.8).
_NOT_BASE64 = bytes(
    b
    for b in range(256)
    if b not in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
)


def fold(text: str) -> str:
    """``text`` in the form compared by SEARCH: case-folded (RFC 3501 6.4.4, case-insensitive)."""
    return text.casefold()


def text_decoder(charset: str | None) -> codecs.IncrementalDecoder:
    """An incremental decoder for ``charset`` that never raises.

    Unknown charsets, and codec names that are not text encodings (``base64``,
    ``rot13`` ...), fall back to UTF-8, which keeps every ASCII match.
    """
    if charset:
        try:
            decoder = codecs.getincrementaldecoder(charset.strip().strip('"'))(errors="replace")
            if isinstance(decoder.decode(b""), str):
                return decoder
        except Exception:  # any codec may refuse errors="replace" or bytes input
            pass
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def _decode_word(charset: str, encoding: str, payload: str) -> str | None:
    """The text of one RFC 2047 encoded-word, or ``None`` when it is malformed."""
    charset = charset.split("*", 1)[0]  # RFC 2231 section 5: charset*language
    data = payload.encode("ascii", "replace")
    try:
        if encoding in "bB":
            raw = binascii.a2b_base64(data + b"=" * (-len(data) % 4), strict_mode=True)
        else:
            raw = binascii.a2b_qp(data, header=True)
    except (binascii.Error, ValueError):
        return None
    return text_decoder(charset).decode(raw, final=True)


def _undo_latin1(value: str) -> str:
    """Header octets the parser kept as latin-1, read as UTF-8 where they are (RFC 6532)."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def decode_header_value(value: str) -> str:
    """The displayed text of an unfolded header value: encoded-words decoded (RFC 2047).

    White space between two adjacent encoded-words is dropped (RFC 2047
    section 6.2); a malformed encoded-word is kept as it is written.
    """
    text = _undo_latin1(value)
    out: list[str] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(text):
        gap = text[pos : match.start()]
        if pos == 0 or gap.strip(" \t\r\n"):
            out.append(gap)
        word = _decode_word(*match.groups())
        out.append(match.group(0) if word is None else word)
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)


#: Fields holding address lists (RFC 5322 sections 3.6.2, 3.6.3 and 3.6.6).
ADDRESS_FIELDS = frozenset(
    f"{prefix}{name}"
    for prefix in ("", "resent-")
    for name in ("from", "sender", "reply-to", "to", "cc", "bcc")
)


def address_texts(value: str) -> list[str]:
    """The addresses of an unfolded address-list value, each as ``Name <local@domain>``.

    Comments and folding white space inside an address are gone (RFC 5322
    section 3.2.2: CFWS is not part of it), so ``<user (c)@ (c) domain.org>``
    reads ``<user@domain.org>``; a name (phrase, or the comment of a bare
    address) is RFC 2047 decoded.  Group markers are skipped, their members kept.
    """
    texts = []
    for address in parse_address_list(value):
        if address.host is None:
            continue
        spec = f"{address.mailbox}@{address.host}" if address.host else f"{address.mailbox}"
        text = f"{address.name} <{spec}>" if address.name else f"<{spec}>"
        texts.append(decode_header_value(text))
    return texts


class _TransferDecoder(Protocol):
    def decode(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Identity:
    """7bit, 8bit, binary and unknown encodings: the octets as they are."""

    def decode(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class _Base64:
    """Incremental base64 decoding (RFC 2045 section 6.8), whole quanta at a time."""

    def __init__(self) -> None:
        self._carry = b""

    def decode(self, data: bytes) -> bytes:
        data = self._carry + data.translate(None, _NOT_BASE64)
        whole = len(data) // 4 * 4
        self._carry = data[whole:]
        return _decode_quanta(data[:whole])

    def flush(self) -> bytes:
        tail, self._carry = self._carry, b""
        return self.decode(tail + b"=" * (-len(tail) % 4)) if tail.strip(b"=") else b""


def _decode_quanta(data: bytes) -> bytes:
    """Decode whole base64 quanta, also when padded quanta occur mid-stream.

    Some encoders pad every line; a plain decoder stops at the first ``=``.
    """
    out = []
    start = 0
    while start < len(data):
        pad = data.find(b"=", start)
        end = len(data) if pad == -1 else start + ((pad - start) // 4 + 1) * 4
        # A malformed quantum decodes to nothing; the rest still counts.
        with contextlib.suppress(binascii.Error):
            out.append(binascii.a2b_base64(data[start:end]))
        start = end
    return b"".join(out)


class _QuotedPrintable:
    """Incremental quoted-printable decoding (RFC 2045 section 6.7), line by line."""

    def __init__(self) -> None:
        self._carry = b""

    def decode(self, data: bytes) -> bytes:
        data = self._carry + data
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) > _QP_LINE_LIMIT:
            # No line end in sight: decode all but a possibly split "=XX" escape.
            cut = len(data) - 2
            equals = data.rfind(b"=", cut - 1)
            cut = equals if equals != -1 else cut
        self._carry = data[cut:]
        return binascii.a2b_qp(data[:cut])

    def flush(self) -> bytes:
        tail, self._carry = self._carry, b""
        return binascii.a2b_qp(tail)


def transfer_decoder(encoding: str | None) -> _TransferDecoder:
    """The incremental decoder for a Content-Transfer-Encoding value (RFC 2045 section 6)."""
    name = (encoding or "").strip().lower()
    if name == "base64":
        return _Base64()
    if name == "quoted-printable":
        return _QuotedPrintable()
    return _Identity()


class SubstringFinder:
    """Finds a case-folded needle in text fed piece by piece, with bounded memory.

    Only the last ``len(needle) - 1`` characters of what was fed are kept, so
    a match spanning two pieces is found while memory stays constant.
    """

    def __init__(self, needle: str) -> None:
        self.needle = fold(needle)
        self._tail = ""

    def feed(self, text: str) -> bool:
        """Add the next piece of text; true once the needle has been seen."""
        window = self._tail + fold(text)
        if self.needle in window:
            return True
        keep = len(self.needle) - 1
        self._tail = window[-keep:] if keep else ""
        return False


def scan_body(
    fp: BinaryIO,
    start: int,
    end: int,
    transfer_encoding: str | None,
    charset: str | None,
    needle: str,
) -> Generator[None, None, bool]:
    """Whether the decoded text of ``fp[start:end]`` contains ``needle`` (case-insensitive).

    A generator: it yields after each chunk of :data:`CHUNK_SIZE` octets and
    returns the answer, so the caller decides how work is interleaved.
    """
    finder = SubstringFinder(needle)
    octets = transfer_decoder(transfer_encoding)
    text = text_decoder(charset)
    fp.seek(start)
    remaining = end - start
    while remaining > 0:
        chunk = fp.read(min(CHUNK_SIZE, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        if finder.feed(text.decode(octets.decode(chunk))):
            return True
        yield None
    return finder.feed(text.decode(octets.flush(), final=True))
