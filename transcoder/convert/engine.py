"""One conversion from a parsed message to the converted part: what the IMAP layer runs.

Sans-IO, blocking (run it off the reactor thread): reads the message file
given, never the network.  :func:`source_part` takes the part a section
names out of the message (its MIME header and encoded body);
:func:`convert_part` finds the converter (:class:`ConversionRegistry`) and
runs it, the failures completed with the part's source and target types
(RFC 5259 section 9); :func:`convert_header` is the ``BODY[...HEADER]`` /
``BODY[...MIME]`` conversion.  A converted part is held in memory
(:class:`ConvertedPart`): its structure is parsed from it for
``BODYPARTSTRUCTURE``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import BinaryIO

from transcoder.convert.charset import recode_header_words
from transcoder.convert.model import (
    ConversionContext,
    ConversionFailed,
    ConversionRequest,
    SourcePart,
    media_type,
)
from transcoder.convert.registry import ConversionRegistry
from transcoder.mime.binary import is_leaf, normalize_encoding
from transcoder.mime.entity import Entity, parse_message
from transcoder.mime.parts import encapsulated, find_part


def _read(fp: BinaryIO, start: int, end: int) -> bytes:
    fp.seek(start)
    data = fp.read(end - start)
    if len(data) != end - start:
        raise EOFError("message file is shorter than its structure")
    return data


@dataclass(frozen=True)
class ConvertedPart:
    """A converted part: ``entity`` is its MIME header (``header_size`` octets) and body."""

    entity: bytes
    header_size: int
    media_type: str
    encrypted: bool = False
    _structure: list[Entity] = field(default_factory=list, compare=False, repr=False)

    @property
    def body(self) -> bytes:
        """The content ``BINARY[...]`` returns."""
        return self.entity[self.header_size :]

    @property
    def size(self) -> int:
        """``BINARY.SIZE[...]``."""
        return len(self.entity) - self.header_size

    def structure(self) -> Entity:
        """The converted entity's MIME tree (for BODYPARTSTRUCTURE), parsed once."""
        if not self._structure:
            self._structure.append(parse_message(io.BytesIO(self.entity)))
        return self._structure[0]


#: The largest part converted (a part and its conversion are held in memory).
MAX_PART = 64 * 1024 * 1024


def source_part(fp: BinaryIO, message: Entity, part: tuple[int, ...]) -> SourcePart | None:
    """The part ``part`` names (``()``: the message), or ``None`` when it does not exist.

    Raises ConversionFailed for a part over :data:`MAX_PART` octets.
    """
    node = message if not part else find_part(message, part)
    if node is None:
        return None
    if node.end - node.header_start > MAX_PART:
        raise ConversionFailed(
            f"The part is larger than {MAX_PART} octets, the most converted",
            source=media_type(node.content_type),
        )
    return SourcePart(
        content_type=node.content_type,
        entity=_read(fp, node.header_start, node.end),
        body_start=node.body_start - node.header_start,
        encoding=normalize_encoding(node.get("content-transfer-encoding")),
        whole_message=not part,
        leaf=is_leaf(node),
    )


def convert_part(
    registry: ConversionRegistry,
    source: SourcePart | None,
    request: ConversionRequest,
    context: ConversionContext,
) -> ConvertedPart:
    """Convert ``source`` as ``request`` asks; ConversionFailed names source and target."""
    target = request.target or ""
    if source is None:
        raise ConversionFailed("No such body part", source=None, target=target or "text/plain")
    media = source.media_type
    try:
        converter = registry.choose(media, request, context)
        out = io.BytesIO()
        converted = converter.convert(source, request, context, out)
    except ConversionFailed as failure:
        raise failure.about(media, target or registry.default_target(media)) from None
    return ConvertedPart(
        out.getvalue(), converted.header_size, converted.media_type, bool(converter.encrypts)
    )


def convert_header(
    fp: BinaryIO, message: Entity, part: tuple[int, ...], text: str, request: ConversionRequest
) -> bytes:
    """``BODY[HEADER]``, ``BODY[n.HEADER]`` or ``BODY[n.MIME]`` with its encoded words in
    the request's CHARSET (RFC 5259 section 6); an empty string for a part that does not exist."""
    node = message if not part else find_part(message, part)
    if node is not None and text == "HEADER" and part:
        node = encapsulated(node)
    if node is None:
        return b""
    header = _read(fp, node.header_start, node.body_start)
    try:
        return recode_header_words(header, request)
    except ConversionFailed as failure:
        raise failure.about(media_type(node.content_type), "text/plain") from None


__all__ = ["MAX_PART", "ConvertedPart", "convert_header", "convert_part", "source_part"]
