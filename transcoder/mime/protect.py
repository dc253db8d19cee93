"""Header protection for the transcoded view (RFC 9788), sans-IO and streaming.

A transcoder turns a stored message into one encrypted message.  This module
computes the two header sections that takes, without ever loading a body:

* the **inner header** -- the header of the Cryptographic Payload, the MIME
  entity that gets encrypted.  It is the original message header, field by
  field and byte for byte (RFC 9788 section 2: all non-structural fields are copied
  into the payload; the structural ``Content-*``/``MIME-Version`` fields
  already belong to it), with ``hp="cipher"`` added to its Content-Type
  (RFC 9788 section 2.1) and one ``HP-Outer`` field per non-structural
  field left on the outer header (RFC 9788 section 2.2), so the recipient
  can tell which fields were exposed.  The body follows unchanged.
* the **outer header** -- what stays readable: the original non-structural
  fields after a Header Confidentiality Policy (RFC 9788 section 3.2).
  The default is ``hcp_no_confidentiality`` (every field kept in clear, as
  docs/design.md asks, so message lists work in clients that do not decrypt);
  ``obscure_subject`` selects ``hcp_baseline``: Subject becomes ``[...]``
  and Comments and Keywords are dropped.  The transcoder appends its own
  structural fields and the blank line.

Decisions taken here:

* Header line ends are normalised to CRLF (the form CMS content and IMAP
  expect); bodies are copied octet for octet.
* Header lines without a colon (``HeaderField.name == ""``) stay in the
  inner header, where they were, and are left out of the outer one, which
  must be a clean header section.
* No Legacy Display Element (optional in RFC 9788): it would mean
  rewriting the body, which stays byte-exact here.
* An existing ``hp`` parameter on the Content-Type is left as it is.
* ``HP-Outer`` fields already in the stored message (one that was once
  decrypted and saved) are dropped from both sections: they described
  another message's outer header and would mislead the recipient about ours,
  and RFC 9788 section 2.2 never puts them on an outer header.

No twisted import here.
"""

from __future__ import annotations

import dataclasses
import io
import re
from dataclasses import dataclass
from typing import BinaryIO

from transcoder.mime.entity import Entity, HeaderField, content_type, header_section, parse_message

#: Octets copied at a time when a body is streamed.
CHUNK = 1 << 16
#: The value ``hcp_baseline`` gives the outer Subject (RFC 9788 section 3.2).
OBSCURED_SUBJECT = b"[...]"
#: Fields ``hcp_baseline`` removes from the outer header (RFC 9788 section 3.2).
_BASELINE_REMOVED = frozenset({"comments", "keywords"})
_LONE_LF = re.compile(rb"(?<!\r)\n")
_DEFAULT_CONTENT_TYPE = b'Content-Type: text/plain; charset=us-ascii; hp="cipher"\r\n'


def is_structural(name: str) -> bool:
    """Whether a field is structural (RFC 9788 terminology): MIME-Version or any Content-*."""
    lowered = name.lower()
    return lowered == "mime-version" or lowered.startswith("content-")


@dataclass(frozen=True)
class ProtectedParts:
    """The header sections of a header-protected message and where its body lies.

    ``outer_header`` is CRLF-terminated fields without the new structural
    fields and without the blank line; ``inner_header`` ends with the blank
    line.  The inner entity is ``inner_header`` followed by the source's
    octets ``body_start``..``body_end``.
    """

    outer_header: bytes
    inner_header: bytes
    body_start: int
    body_end: int

    @property
    def inner_size(self) -> int:
        """Octets of the inner entity."""
        return len(self.inner_header) + (self.body_end - self.body_start)


def _crlf(raw: bytes) -> bytes:
    """A header field with CRLF line ends, CRLF-terminated even when the source was cut."""
    if raw.endswith(b"\r\n") and raw.count(b"\n") == raw.count(b"\r\n"):
        return raw  # CRLF already (a stored message's usual form): no regular expression
    if not raw.endswith(b"\n"):
        raw = raw.rstrip(b"\r") + b"\r\n"
    return _LONE_LF.sub(b"\r\n", raw)


def _after_colon(raw: bytes) -> bytes:
    """Everything after the field name's colon, line ends included."""
    return raw[raw.index(b":") + 1 :]


def _outer_field(field: HeaderField, obscure_subject: bool) -> bytes | None:
    """The field as the outer header shows it, ``None`` when left out (RFC 9788 section 3.2)."""
    name = field.name.lower()
    if not name or is_structural(name) or name == "hp-outer":
        return None
    if obscure_subject:
        if name == "subject":
            return field.name.encode("latin-1") + b": " + OBSCURED_SUBJECT + b"\r\n"
        if name in _BASELINE_REMOVED:
            return None
    return _crlf(field.raw)


def _with_hp(raw: bytes) -> bytes:
    """A Content-Type field with ``hp="cipher"`` appended on a continuation line.

    A parameter that is already there is left alone.  The new parameter goes
    on its own folded line (RFC 5322 section 2.2.3) so no line grows past
    the 998-octet limit of RFC 5322 section 2.1.1.
    """
    field = HeaderField("Content-Type", raw)
    if content_type(field.value).param("hp") is not None:
        return raw
    head = raw[:-2].rstrip(b" \t")
    separator = b"" if head.endswith(b";") else b";"
    return head + separator + b'\r\n hp="cipher"\r\n'


def _inner_fields(entity: Entity) -> list[bytes]:
    """The original fields, CRLF-normalised, Content-Type marked with ``hp="cipher"``."""
    fields: list[bytes] = []
    marked = False
    for field in entity.header:
        if field.name.lower() == "hp-outer":
            continue  # describes some earlier encryption's outer header, not ours
        raw = _crlf(field.raw)
        if not marked and field.name.lower() == "content-type":
            raw, marked = _with_hp(raw), True
        fields.append(raw)
    if not marked:
        # RFC 2045 section 5.2: the missing Content-Type is text/plain; us-ascii.
        fields.append(_DEFAULT_CONTENT_TYPE)
    return fields


def protect(entity: Entity, obscure_subject: bool = False) -> ProtectedParts:
    """The outer and inner header sections for the message ``entity`` (RFC 9788).

    ``obscure_subject`` picks ``hcp_baseline`` over ``hcp_no_confidentiality``.
    """
    outer: list[bytes] = []
    hp_outer: list[bytes] = []
    for field in entity.header:
        shown = _outer_field(field, obscure_subject)
        if shown is not None:
            outer.append(shown)
            # RFC 9788 section 2.2: "HP-Outer: <name>: <value as on the outer header>".
            hp_outer.append(
                b"HP-Outer: " + field.name.encode("latin-1") + b":" + _after_colon(shown)
            )
    inner = b"".join(_inner_fields(entity)) + b"".join(hp_outer) + b"\r\n"
    return ProtectedParts(b"".join(outer), inner, entity.body_start, entity.end)


def write_inner(src: BinaryIO, parts: ProtectedParts, dst: BinaryIO, chunk: int = CHUNK) -> int:
    """Stream the inner entity to ``dst`` in ``chunk``-sized pieces; return octets written."""
    dst.write(parts.inner_header)
    src.seek(parts.body_start)
    remaining = parts.body_end - parts.body_start
    while remaining > 0:
        data = src.read(min(chunk, remaining))
        if not data:
            raise EOFError("source shorter than its parsed body")
        dst.write(data)
        remaining -= len(data)
    return parts.inner_size


class InnerEntityReader(io.RawIOBase):
    """A read-only file over the inner entity: ``inner_header`` then the source body window.

    Lets an encoder that pulls from a file (the CMS encryptor, gpg's stdin)
    read the inner entity without it ever being assembled in memory.  The
    source is sought before every read, so it may be shared with other code
    between reads.
    """

    def __init__(self, src: BinaryIO, parts: ProtectedParts) -> None:
        super().__init__()
        self._src = src
        self._parts = parts
        self._pos = 0

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        """Fill ``buffer`` with the next octets of the inner entity; 0 at the end."""
        view = memoryview(buffer).cast("B")
        header = self._parts.inner_header
        if self._pos < len(header):
            piece = header[self._pos : self._pos + len(view)]
        else:
            offset = self._parts.body_start + self._pos - len(header)
            wanted = min(len(view), self._parts.body_end - offset)
            if wanted <= 0:
                return 0
            self._src.seek(offset)
            piece = self._src.read(wanted)
            if not piece:
                raise EOFError("source shorter than its parsed body")
        view[: len(piece)] = piece
        self._pos += len(piece)
        return len(piece)


def open_inner(src: BinaryIO, parts: ProtectedParts) -> BinaryIO:
    """The inner entity as a buffered binary file (see :class:`InnerEntityReader`)."""
    return io.BufferedReader(InnerEntityReader(src, parts), buffer_size=CHUNK)


def parse_top_level(fp: BinaryIO, end: int | None = None, window: int = CHUNK) -> Entity:
    """The top-level entity of the message in ``fp[0:end]``, without splitting its body.

    Reads only about as much as the header takes, so a transcoder can plan a
    large message cheaply.  The result's ``header``, ``content_type`` and
    offsets are those :func:`parse_message` gives (a top-level body always
    runs to the end of the data); ``children`` and ``body_lines`` are not
    computed (empty and 0).
    """
    if end is None:
        end = fp.seek(0, 2)
    limit = min(end, window)
    fp.seek(0)
    quick = header_section(fp.read(limit), end)
    if quick is not None:
        return quick
    while True:
        shallow = parse_message(fp, 0, limit)
        # The header ended inside the window (blank line or size cap) or the data
        # ended: parsing more could not change the header.
        if shallow.body_start < limit or limit == end:
            return dataclasses.replace(shallow, end=end, children=(), body_lines=0)
        limit = min(end, limit * 4)


__all__ = [
    "OBSCURED_SUBJECT",
    "InnerEntityReader",
    "ProtectedParts",
    "is_structural",
    "open_inner",
    "parse_top_level",
    "protect",
    "write_inner",
]
