"""Content-transfer decoding of body parts for IMAP BINARY (RFC 3516, RFC 9051 section 6.4.5).

Sans-IO: no twisted import.  :func:`binary_part` says where the encoded body
of a leaf part lies in the message file and how it is encoded;
:func:`iter_decoded` turns that window into the decoded octets chunk by
chunk (never the whole part at once); :func:`transfer_decode` and
:func:`decode_part` are the one-shot forms for octets already in memory.

Decisions, with the RFC text they follow:

* Encodings decoded: ``base64`` and ``quoted-printable`` (RFC 2045 sections
  6.7, 6.8); ``7bit``, ``8bit``, ``binary`` and an absent field are identity
  (RFC 2045 section 6.1: absent means 7bit).  Names are case-insensitive.
  Any other value (``x-uuencode``, a typo) raises
  :class:`~transcoder.errors.UnknownTransferEncoding`: RFC 3516 section 4.3
  -- "If the server does not know how to decode the section's CTE, it MUST
  fail the request and issue a NO response that contains the UNKNOWN-CTE
  extended response code".
* base64 is strict about its alphabet and tolerant of layout: white space
  (SP, HT, CR, LF) anywhere is skipped (RFC 2045 section 6.8 line breaks);
  any other character outside the alphabet, padding before the end or a
  final quantum cut short raises
  :class:`~transcoder.errors.InvalidTransferEncoding` (``NO [PARSE]``,
  RFC 5530, as Dovecot answers: the server knows base64 but cannot decode
  this, and guessing would hand the client octets the sender never wrote).
* quoted-printable is decoded as RFC 2045 section 6.7 reads (soft line
  breaks removed, ``=XX`` decoded, line breaks kept as they are); malformed
  ``=`` sequences are kept literally, as rule (1)'s note recommends.
* ``BINARY[]`` -- the empty section -- is the whole message as stored: a
  message is not itself transfer-encoded (RFC 2045 section 6.4: only leaf
  bodies are).  ``BINARY[n]`` of a multipart or ``message/rfc822`` /
  ``message/global`` part raises :class:`NotALeafPart`: RFC 9051 section
  6.4.5, which took BINARY into the base protocol, says "this data item
  can only be requested for leaf body parts: those that have media types
  other than multipart/*, message/rfc822, or message/global".  RFC 3516
  section 4.2 itself names no error for it; we answer ``NO [CLIENTBUG]``.
* A part that does not exist gives :data:`None` (served as the empty
  string, like ``BODY[9]`` of a two-part message: :mod:`transcoder.imap.sections`).
"""

from __future__ import annotations

import binascii
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from transcoder.errors import ClientError, InvalidTransferEncoding, UnknownTransferEncoding
from transcoder.mime.base64stream import Base64Decoder
from transcoder.mime.entity import Entity, parse_message
from transcoder.mime.parts import find_part

#: Encodings whose octets are the content itself (RFC 2045 section 6.2); "" = absent.
IDENTITY = frozenset({"", "7bit", "8bit", "binary"})
#: Every encoding this module can undo.
KNOWN = IDENTITY | {"base64", "quoted-printable"}
#: Octets read from the message file per step.
CHUNK = 65536
_NON_LEAF_MESSAGES = frozenset({"rfc822", "global"})


class NotALeafPart(ClientError):
    """BINARY of a multipart or message part (RFC 9051 section 6.4.5: leaf parts only)."""

    code = "CLIENTBUG"


class TransferDecoder(Protocol):
    """An incremental content-transfer decoder: octets in pieces cut anywhere."""

    def feed(self, data: bytes) -> bytes:
        """The decoded octets ``data`` completes."""

    def finish(self) -> bytes:
        """The last decoded octets; raises if the encoded text ended badly."""


class _Identity:
    """7bit, 8bit, binary: the octets are the content."""

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


class _Base64:
    """base64 (RFC 2045 section 6.8): white space skipped, anything else invalid."""

    def __init__(self) -> None:
        self._decoder = Base64Decoder()

    def feed(self, data: bytes) -> bytes:
        out = self._decoder.feed(data)
        if not self._decoder.ok:
            raise InvalidTransferEncoding("The part's base64 is invalid (RFC 2045 section 6.8)")
        return out

    def finish(self) -> bytes:
        if not self._decoder.finish():
            raise InvalidTransferEncoding("The part's base64 ends short (RFC 2045 section 6.8)")
        return b""


class _QuotedPrintable:
    """quoted-printable (RFC 2045 section 6.7), decoded a whole line at a time."""

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        data = self._carry + data
        cut = data.rfind(b"\n") + 1
        self._carry = data[cut:]
        return binascii.a2b_qp(data[:cut]) if cut else b""

    def finish(self) -> bytes:
        rest, self._carry = self._carry, b""
        return binascii.a2b_qp(rest) if rest else b""


def normalize_encoding(cte: str | None) -> str:
    """The Content-Transfer-Encoding value lower-cased, without blanks or a comment.

    ``None`` (no field) gives ``""``: identity (RFC 2045 section 6.1).
    """
    value = (cte or "").split("(", 1)[0]  # an RFC 5322 comment after the token
    return value.strip().lower()


def transfer_decoder(cte: str | None) -> TransferDecoder:
    """A fresh incremental decoder for ``cte``; raises
    :class:`~transcoder.errors.UnknownTransferEncoding` for an encoding not in :data:`KNOWN`."""
    encoding = normalize_encoding(cte)
    if encoding in IDENTITY:
        return _Identity()
    if encoding == "base64":
        return _Base64()
    if encoding == "quoted-printable":
        return _QuotedPrintable()
    raise UnknownTransferEncoding(f"Unknown content-transfer-encoding {_show(encoding)}")


def iter_transfer_decode(cte: str | None, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The decoded octets of the encoded ``chunks`` (cut anywhere), as they come.

    Raises :class:`~transcoder.errors.UnknownTransferEncoding` (before
    reading a chunk) or :class:`~transcoder.errors.InvalidTransferEncoding`.
    Empty pieces are not yielded.
    """
    decoder = transfer_decoder(cte)
    for chunk in chunks:
        out = decoder.feed(chunk)
        if out:
            yield out
    last = decoder.finish()
    if last:
        yield last


def transfer_decode(cte: str | None, body: bytes) -> bytes:
    """``body`` with its content-transfer-encoding ``cte`` undone (one shot).

    ``transfer_decode("base64", b"aGk=\\r\\n") == b"hi"``.  Raises
    :class:`~transcoder.errors.UnknownTransferEncoding` for an unknown
    encoding, :class:`~transcoder.errors.InvalidTransferEncoding` for
    damaged base64.
    """
    return b"".join(iter_transfer_decode(cte, (body,)))


@dataclass(frozen=True)
class BinaryPart:
    """Where the encoded body of a leaf part lies in the message file, and its encoding.

    ``start``..``end`` are absolute offsets (as in :class:`~transcoder.mime.entity.Entity`);
    ``encoding`` is normalized (:func:`normalize_encoding`) and in :data:`KNOWN`.
    """

    start: int
    end: int
    encoding: str = ""

    @property
    def identity(self) -> bool:
        """Whether the decoded octets are the stored octets (no decoding)."""
        return self.encoding in IDENTITY

    @property
    def encoded_size(self) -> int:
        """Octets of the encoded window."""
        return max(self.end - self.start, 0)


@dataclass(frozen=True)
class Decoded:
    """What a pass over a part's decoded octets found: how many, and whether a NUL.

    RFC 3516 section 4.3: decoded content with NUL must go out as a
    ``literal8`` (``~{n}``); without NUL a plain literal is acceptable.
    """

    size: int
    has_nul: bool


def is_leaf(entity: Entity) -> bool:
    """Whether BINARY may name ``entity`` (RFC 9051 section 6.4.5: not multipart/*,
    message/rfc822 or message/global)."""
    ct = entity.content_type
    if ct.maintype == "multipart":
        return False
    return not (ct.maintype == "message" and ct.subtype in _NON_LEAF_MESSAGES)


def binary_part(entity: Entity, part: Sequence[int]) -> BinaryPart | None:
    """Where the content of ``BINARY[part]`` of the message ``entity`` lies.

    ``part`` holds 1-based part numbers as on the wire; ``()`` is the whole
    message (identity).  Returns ``None`` for a part that does not exist.
    Raises :class:`NotALeafPart` for a multipart or message part and
    :class:`~transcoder.errors.UnknownTransferEncoding` for an encoding
    this module cannot undo -- both before any octet is read.
    """
    if not part:
        return BinaryPart(entity.header_start, entity.end)
    node = find_part(entity, tuple(part))
    if node is None:
        return None
    if not is_leaf(node):
        ct = node.content_type
        raise NotALeafPart(
            f"BINARY needs a leaf part; part {'.'.join(map(str, part))} is "
            f"{ct.maintype}/{ct.subtype} (RFC 9051 section 6.4.5)"
        )
    encoding = normalize_encoding(node.get("content-transfer-encoding"))
    transfer_decoder(encoding)  # raises for an unknown encoding
    return BinaryPart(node.body_start, node.end, encoding)


def iter_window(fp: BinaryIO, start: int, end: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """Octets ``start``..``end`` of ``fp`` in pieces of at most ``chunk`` (seeks before each)."""
    position = start
    while position < end:
        fp.seek(position)
        data = fp.read(min(chunk, end - position))
        if not data:
            raise OSError("message file is shorter than its structure")
        position += len(data)
        yield data


def holds_nul(fp: BinaryIO, start: int = 0, end: int | None = None) -> bool:
    """Whether octets ``start``..``end`` of ``fp`` (to its end by default) hold a NUL.

    One read in chunks.  RFC 3516 section 4.4: such octets can only be
    APPENDed as a ``literal8``.  Leaves ``fp`` positioned at ``start``.
    """
    if end is None:
        end = fp.seek(0, 2)
    found = any(b"\x00" in piece for piece in iter_window(fp, start, end))
    fp.seek(start)
    return found


def iter_decoded(fp: BinaryIO, part: BinaryPart, chunk: int = CHUNK) -> Iterator[bytes]:
    """The decoded octets of ``part`` read from ``fp``, piece by piece (never the whole part)."""
    return iter_transfer_decode(part.encoding, iter_window(fp, part.start, part.end, chunk))


def decode_into(fp: BinaryIO, part: BinaryPart, out: BinaryIO | None = None) -> Decoded:
    """Decode ``part`` from ``fp`` into ``out`` (or only measure it when ``out`` is None).

    One pass: returns the decoded size and whether a NUL occurs.  Raises
    :class:`~transcoder.errors.InvalidTransferEncoding` for damaged base64.
    """
    size, nul = 0, False
    for piece in iter_decoded(fp, part):
        size += len(piece)
        nul = nul or b"\x00" in piece
        if out is not None:
            out.write(piece)
    return Decoded(size, nul)


def decode_part(message: bytes, part: Sequence[int]) -> bytes:
    """The decoded content octets of ``BINARY[part]`` of ``message`` (one shot, in memory).

    ``part`` as on the wire (``(2,)`` for ``BINARY[2]``, ``()`` for the
    whole message).  A part that does not exist gives ``b""``.  Raises
    :class:`NotALeafPart`, :class:`~transcoder.errors.UnknownTransferEncoding`
    or :class:`~transcoder.errors.InvalidTransferEncoding`.
    """
    fp = io.BytesIO(message)
    where = binary_part(parse_message(fp), part)
    if where is None:
        return b""
    return b"".join(iter_decoded(fp, where))


def _show(value: str) -> str:
    """``value`` safe to echo to a client: printable ASCII, at most 40 characters."""
    text = "".join(c if 32 <= ord(c) < 127 else "?" for c in value[:40])
    return repr(text + ("..." if len(value) > 40 else ""))


__all__ = [
    "CHUNK",
    "IDENTITY",
    "KNOWN",
    "BinaryPart",
    "Decoded",
    "NotALeafPart",
    "TransferDecoder",
    "binary_part",
    "decode_into",
    "decode_part",
    "holds_nul",
    "is_leaf",
    "iter_decoded",
    "iter_transfer_decode",
    "iter_window",
    "normalize_encoding",
    "transfer_decode",
    "transfer_decoder",
]
