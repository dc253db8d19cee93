"""One conversion from a parsed message to the converted part: what the IMAP layer runs.

Sans-IO, blocking (run it off the reactor thread): reads the message file
given, never the network.  :func:`source_part` takes the part a section
names out of the message (its MIME header and encoded body);
:func:`convert_part` finds the converter (:class:`ConversionRegistry`) and
runs it, the failures completed with the part's source and target types
(RFC 5259 section 9); :func:`convert_header` is the ``BODY[...HEADER]`` /
``BODY[...MIME]`` conversion.  Neither side is held whole in memory: the
source is a window of the message file (:class:`SourcePart`), the result a
spooled temporary file (:class:`ConvertedPart`) the IMAP layer streams
from; its structure is parsed from it for ``BODYPARTSTRUCTURE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO

from transcoder.convert.charset import recode_header_words
from transcoder.convert.model import (
    ConversionContext,
    ConversionFailed,
    ConversionRequest,
    SourcePart,
    media_type,
    spool,
)
from transcoder.convert.registry import ConversionRegistry
from transcoder.mime.binary import holds_nul, is_leaf, normalize_encoding
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
    """A converted part: the MIME entity in ``file``, ``header_size`` octets of header (blank
    line included), then ``size`` octets of body -- the content ``BINARY[...]`` returns.

    ``file`` is a spooled temporary file (:func:`~transcoder.convert.model.spool`:
    in memory up to 1 MiB, then on disk) that lives as long as the value;
    ``has_nul`` says whether the body holds a NUL (``~{n}``, RFC 3516 section 4.3).
    """

    file: BinaryIO = field(compare=False, repr=False)
    header_size: int
    size: int
    media_type: str
    encrypted: bool = False
    has_nul: bool = False
    _structure: list[Entity] = field(default_factory=list, compare=False, repr=False)

    @property
    def entity(self) -> bytes:
        """The whole entity in memory (for small parts and tests; the server streams ``file``)."""
        return _read(self.file, 0, self.header_size + self.size)

    @property
    def body(self) -> bytes:
        """The body in memory (for small parts and tests; the server streams ``file``)."""
        return _read(self.file, self.header_size, self.header_size + self.size)

    def structure(self) -> Entity:
        """The converted entity's MIME tree (for BODYPARTSTRUCTURE), parsed once (blocking:
        a large multipart is read through to its boundaries)."""
        if not self._structure:
            self.file.seek(0)
            self._structure.append(parse_message(self.file))
        return self._structure[0]


def source_part(fp: BinaryIO, message: Entity, part: tuple[int, ...]) -> SourcePart | None:
    """The part ``part`` names (``()``: the message) as a window of ``fp``, or ``None``
    when it does not exist."""
    node = message if not part else find_part(message, part)
    if node is None:
        return None
    return SourcePart(
        content_type=node.content_type,
        fp=fp,
        start=node.header_start,
        body_start=node.body_start,
        end=node.end,
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
        out = spool()
        try:
            converted = converter.convert(source, request, context, out)
        except BaseException:
            out.close()
            raise
    except ConversionFailed as failure:
        raise failure.about(media, target or registry.default_target(media)) from None
    has_nul = converted.has_nul
    if has_nul is None:  # a scan of the result, stopping at the first NUL (DER: at once)
        has_nul = holds_nul(out, converted.header_size, converted.header_size + converted.size)
    return ConvertedPart(
        out,
        converted.header_size,
        converted.size,
        converted.media_type,
        bool(converter.encrypts),
        has_nul,
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


__all__ = ["ConvertedPart", "convert_header", "convert_part", "source_part"]
