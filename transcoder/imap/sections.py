"""FETCH body sections (RFC 3501 section 6.4.5) resolved against a parsed message.

Pure: no twisted import.  A :class:`Section` names either a byte range of the
message file (streamed from disk, never loaded whole) or, for
``HEADER.FIELDS[.NOT]``, the few header octets it is made of.

Part numbers follow RFC 3501 section 6.4.5: in a multipart, ``n`` is the n-th
part; a message that is not multipart has one part, ``1``, its body; the parts
of a ``MESSAGE/RFC822`` part are those of the message it encapsulates.
``HEADER``, ``TEXT`` and ``HEADER.FIELDS`` after a part number apply to the
encapsulated message of a ``MESSAGE/RFC822`` part; ``MIME`` is a part's own
MIME header.

A part that does not exist (``BODY[9]`` of a two-part message, ``BODY[1.HEADER]``
of a text part) resolves to the empty section (an empty string on the wire):
RFC 3501 names no error for it, and answering empty keeps a FETCH over many
messages from failing for the one that lacks the part.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from transcoder.errors import BadCommand, StoreError
from transcoder.mime.entity import Entity
from transcoder.mime.parts import encapsulated, find_part

#: Section texts :func:`resolve_section` accepts (``kind``).
KINDS = frozenset({"HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


@dataclass(frozen=True)
class Section:
    """The octets of one FETCH body section.

    Either the range ``start``..``end`` of the message file (``data is None``)
    or the octets ``data`` themselves.
    """

    start: int = 0
    end: int = 0
    data: bytes | None = None

    @property
    def size(self) -> int:
        """Octets in the section."""
        return len(self.data) if self.data is not None else max(self.end - self.start, 0)


#: The answer for a part that does not exist.
EMPTY = Section(data=b"")


def _ensure_eol(raw: bytes) -> bytes:
    return raw if raw.endswith(b"\n") else raw + b"\r\n"


def header_fields(entity: Entity, names: Sequence[str], negate: bool = False) -> bytes:
    """``HEADER.FIELDS`` / ``HEADER.FIELDS.NOT`` of ``entity`` (RFC 3501 section 6.4.5).

    The raw fields whose names are (or, with ``negate``, are not) among
    ``names`` -- compared case-insensitively, in message order -- then the
    blank line that ends a header.  Fields without a name never match, so
    ``.NOT`` keeps them.
    """
    wanted = {n.lower() for n in names}
    kept = [
        _ensure_eol(f.raw)
        for f in entity.header
        if (f.name != "" and f.name.lower() in wanted) != negate
    ]
    return b"".join(kept) + b"\r\n"


def resolve_section(
    entity: Entity,
    part: tuple[int, ...],
    kind: str | None,
    fields: tuple[str, ...] = (),
    negate: bool = False,
) -> Section:
    """Where the section ``BODY[<part>.<kind>]`` of the message ``entity`` lies.

    ``part`` holds 1-based part numbers as on the wire; ``kind`` is ``None``
    (the part's body, or the whole message for ``BODY[]``), ``"HEADER"``,
    ``"TEXT"``, ``"MIME"``, ``"HEADER.FIELDS"`` (with ``fields``, ``negate``
    for ``.NOT``) or ``"HEADER.FIELDS.NOT"``.  Nonexistent parts give
    :data:`EMPTY`.  Raises :class:`~transcoder.errors.BadCommand` for a
    ``kind`` RFC 3501's grammar does not allow (``MIME`` without a part).
    """
    kind = kind.upper() if kind else None
    if kind is not None and kind not in KINDS:
        raise BadCommand(f"Unknown section text {kind}")
    if kind == "MIME" and not part:
        raise BadCommand("MIME needs a part number (RFC 3501 section 6.4.5)")
    node = find_part(entity, part)
    if node is None:
        return EMPTY
    if kind is None:
        if not part:
            return Section(node.header_start, node.end)
        return Section(node.body_start, node.end)
    if kind == "MIME":
        return Section(node.header_start, node.body_start)
    message = node if not part else encapsulated(node)
    if message is None:
        return EMPTY
    if kind == "HEADER":
        return Section(message.header_start, message.body_start)
    if kind == "TEXT":
        return Section(message.body_start, message.end)
    negate = negate or kind == "HEADER.FIELDS.NOT"
    return Section(data=header_fields(message, fields, negate))


def iter_section(
    fp: BinaryIO,
    section: Section,
    offset: int = 0,
    length: int | None = None,
    chunk: int = 65536,
) -> Iterator[bytes]:
    """The octets ``offset``..``offset + length`` of ``section``, in chunks of at most ``chunk``.

    For a partial FETCH ``<offset.length>`` (RFC 3501 section 6.4.5): the
    slice is clamped to the section, so an offset past its end yields
    nothing.  Seeks before every read, so other users of ``fp`` between two
    chunks do no harm.  Raises :class:`~transcoder.errors.StoreError` if the
    file is shorter than the section.
    """
    size = section.size
    low = min(max(offset, 0), size)
    high = size if length is None else min(size, low + max(length, 0))
    if section.data is not None:
        if high > low:
            yield section.data[low:high]
        return
    position, end = section.start + low, section.start + high
    while position < end:
        fp.seek(position)
        data = fp.read(min(chunk, end - position))
        if not data:
            raise StoreError("message file is shorter than its structure")
        position += len(data)
        yield data


def section_bytes(fp: BinaryIO, section: Section) -> bytes:
    """All octets of ``section``; stream large ones with :func:`iter_section` instead."""
    return b"".join(iter_section(fp, section))


__all__ = [
    "EMPTY",
    "KINDS",
    "Section",
    "find_part",
    "header_fields",
    "iter_section",
    "resolve_section",
    "section_bytes",
]
