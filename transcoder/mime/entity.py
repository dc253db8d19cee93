"""Sans-IO MIME entity splitting with byte offsets (RFC 5322, RFC 2045, RFC 2046).

A message is parsed once into a tree of :class:`Entity` values that record
where each header and body lies in the source bytes; bodies are never held in
memory, so a 100 MB message costs only its headers.  IMAP FETCH sections,
BODYSTRUCTURE and the transcoders all work from these offsets.

No twisted import here: pure functions over binary files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO


@dataclass(frozen=True)
class HeaderField:
    """One header field exactly as it appears in the source.

    ``name`` is the field name as written (decoded latin-1, so any octet
    survives); ``raw`` is the whole field -- name, colon, value, continuation
    lines and the terminating line break -- byte for byte.
    """

    name: str
    raw: bytes

    @property
    def value(self) -> str:
        """The unfolded value (RFC 5322 section 2.2.3), stripped, decoded latin-1."""
        raise NotImplementedError


@dataclass(frozen=True)
class ContentType:
    """A parsed Content-Type (RFC 2045 section 5.1).

    ``maintype``/``subtype`` are lowercased; parameter names are lowercased,
    parameter *values keep their case* (a boundary is case-sensitive).
    RFC 2231 continuations are joined.
    """

    maintype: str = "text"
    subtype: str = "plain"
    params: tuple[tuple[str, str], ...] = (("charset", "us-ascii"),)

    def param(self, name: str) -> str | None:
        """The value of parameter ``name`` (case-insensitive name), or ``None``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Entity:
    """A MIME entity and where its parts lie in the source bytes.

    Offsets are absolute positions in the file given to :func:`parse_message`:
    the header runs ``header_start``..``body_start`` (including the blank
    line that ends it), the body ``body_start``..``end``.
    ``children`` are the parts of a multipart, or the one encapsulated message
    of a ``message/rfc822`` (or ``message/global``) entity, else empty.
    """

    header_start: int
    body_start: int
    end: int
    header: tuple[HeaderField, ...]
    content_type: ContentType
    children: tuple[Entity, ...] = ()
    body_lines: int = 0
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def header_size(self) -> int:
        """Octets of the header, blank line included."""
        return self.body_start - self.header_start

    @property
    def body_size(self) -> int:
        """Octets of the body."""
        return self.end - self.body_start

    def get(self, name: str) -> str | None:
        """Unfolded value of the first field called ``name`` (case-insensitive), or ``None``."""
        raise NotImplementedError

    def get_all(self, name: str) -> list[str]:
        """Unfolded values of every field called ``name``, in order."""
        raise NotImplementedError


def parse_message(fp: BinaryIO, start: int = 0, end: int | None = None) -> Entity:
    """Parse the message in ``fp[start:end]`` into an :class:`Entity` tree.

    Reads in bounded chunks; never raises on malformed input.
    """
    raise NotImplementedError
