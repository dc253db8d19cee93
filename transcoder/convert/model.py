"""The values of a conversion (RFC 5259): what is asked, what is converted, what failed.

Sans-IO: no twisted import.

* :class:`ConversionRequest` -- the ``convert-params`` of a CONVERT command:
  a target media type (``None`` for ``NIL``, the default conversion, RFC
  5259 section 6) and the conversion parameters, names lower-cased (section
  7: names are case-insensitive), values as sent.
* :class:`SourcePart` -- the part to convert: its window of the message
  file, a MIME entity (its MIME header and its encoded body), read piece by
  piece; the decoded content comes from :mod:`transcoder.mime.binary` (RFC 3516).
* :class:`Converted` -- what a converter wrote: the converted part as a MIME
  entity (header, then body); the body is what ``BINARY[...]`` returns.
* :class:`ConversionFailed` -- a per-part failure, answered as the RFC's
  ``ERROR`` phrase in place of the data item (section 9), never as plaintext.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO

from transcoder.cms import CmsSettings
from transcoder.errors import ClientError
from transcoder.files import FileSlice
from transcoder.keys.model import StoredKey
from transcoder.mime.binary import BinaryPart, Decoded, decode_into, iter_decoded, iter_window
from transcoder.mime.entity import ContentType
from transcoder.transcoders.derivation import (
    RandomSource,
    SystemRandom,
    ViewIdentity,
    ViewSecret,
)

Params = tuple[tuple[str, str], ...]

#: Converted octets kept in memory; a larger result goes on to a temporary file.
SPOOL_IN_MEMORY = 1024 * 1024


def spool() -> BinaryIO:
    """A spooled temporary file for converted octets (memory up to :data:`SPOOL_IN_MEMORY`)."""
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # type: ignore[return-value]


#: The error codes of an ERROR phrase (RFC 5259 section 9).
BADPARAMETERS = "BADPARAMETERS"
MISSINGPARAMETERS = "MISSINGPARAMETERS"
TEMPFAIL = "TEMPFAIL"


def media_type(content_type: ContentType) -> str:
    """``type/subtype``, lower-cased."""
    return f"{content_type.maintype}/{content_type.subtype}"


@dataclass(frozen=True)
class ConversionRequest:
    """The target media type (``None``: default conversion) and the conversion parameters."""

    target: str | None = None
    params: Params = ()

    def get(self, name: str) -> str | None:
        """The value of parameter ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        return next((value for key, value in self.params if key == name), None)

    def names(self) -> tuple[str, ...]:
        """The parameter names, lower-cased, in order."""
        return tuple(name for name, _ in self.params)

    def identity(self) -> str:
        """A canonical text naming the target and every parameter (part of a conversion's
        identity: two requests that convert alike name alike)."""
        params = ";".join(f"{len(k)}:{k}={len(v)}:{v}" for k, v in sorted(self.params))
        return f"target={self.target or 'NIL'};params={params}"


@dataclass(frozen=True)
class SourcePart:
    """The part to convert: the window ``start``..``end`` of the message file ``fp``.

    The window is the part as a MIME entity -- its MIME header and its
    encoded body, octets as stored -- with the body from ``body_start``
    (offsets are the file's).  ``encoding`` is its Content-Transfer-Encoding,
    normalized; ``whole_message`` is set for the empty section (``BINARY[]``:
    the message is its own content); ``leaf`` is false for a multipart or
    encapsulated message (its content is not transfer-decoded).  Nothing is
    read until a converter asks, and then piece by piece
    (:meth:`entity_reader`, :meth:`decode_into`, :meth:`iter_content`), so a
    large part is never held whole in memory.
    """

    content_type: ContentType
    fp: BinaryIO = field(compare=False, repr=False)
    start: int
    body_start: int
    end: int
    encoding: str = ""
    whole_message: bool = False
    leaf: bool = True

    @property
    def media_type(self) -> str:
        """The source's ``type/subtype``."""
        return media_type(self.content_type)

    @property
    def size(self) -> int:
        """Octets of the entity: header and encoded body."""
        return self.end - self.start

    def header(self) -> bytes:
        """The MIME header as stored, its blank line included."""
        return b"".join(iter_window(self.fp, self.start, self.body_start))

    def entity_reader(self) -> BinaryIO:
        """The entity (header and encoded body) as a file of its own; the message stays open."""
        return io.BufferedReader(FileSlice(self.fp, self.start, self.end, close_file=False))

    def _body(self) -> BinaryPart:
        encoding = self.encoding if self.leaf else ""  # RFC 2045 section 6.4: not decoded
        return BinaryPart(self.body_start, self.end, encoding)

    def decode_into(self, out: BinaryIO) -> Decoded:
        """Write the decoded content (RFC 3516: CTE undone) to ``out``, piece by piece.

        Raises UnknownTransferEncoding (InvalidTransferEncoding for damaged base64)."""
        return decode_into(self.fp, self._body(), out)

    def iter_content(self) -> Iterator[bytes]:
        """The decoded content, piece by piece; raises UnknownTransferEncoding
        (InvalidTransferEncoding for damaged base64) when it cannot be decoded."""
        return iter_decoded(self.fp, self._body())


@dataclass(frozen=True)
class ConversionRandomness:
    """Where a conversion's random octets come from (issue 9's derivation, docs/design.md
    invariant 1): derived from the view secret and an identity made of the message's
    SHA-256, the keys, the converter and -- in its settings -- the section and the request.
    Without a secret, fresh system randomness (the session's cache keeps it stable)."""

    secret: ViewSecret | None
    message_sha256: bytes
    section: str

    def source(
        self, converter: str, fingerprints: tuple[str, ...], settings: str, request: str
    ) -> RandomSource:
        """The draws of converting ``section`` with ``converter`` under ``settings``."""
        if self.secret is None:
            return SystemRandom()
        settings_id = f"convert-v1;section={self.section};{request};{settings}"
        identity = ViewIdentity(
            self.message_sha256, tuple(sorted(fingerprints)), f"convert/{converter}", settings_id
        )
        return self.secret.randomness(identity)


@dataclass(frozen=True)
class ConversionContext:
    """What a converter may use besides the part: the user's keys (all of them, judged at
    ``now``), the server's S/MIME settings (the default cipher) and the randomness."""

    keys: tuple[StoredKey, ...]
    now: datetime
    randomness: ConversionRandomness
    cms: CmsSettings = CmsSettings()  # noqa: RUF009 (frozen, immutable)


@dataclass(frozen=True)
class Converted:
    """The converted part as a MIME entity: ``header_size`` octets of header (blank line
    included), then ``size`` octets of body, which are its content (``BINARY[...]``).
    ``has_nul``: whether the body holds a NUL, when the converter knows it as it writes
    (``None``: the engine looks)."""

    header_size: int
    size: int
    media_type: str
    has_nul: bool | None = None


class ConversionFailed(ClientError):
    """One conversion failed: the ERROR phrase (RFC 5259 section 9) replaces its data items.

    ``error`` is ``BADPARAMETERS``, ``MISSINGPARAMETERS`` or ``TEMPFAIL``;
    ``source`` the part's media type (``None``: the part does not exist),
    ``target`` the destination (the one the server chose for a default
    conversion); ``params`` the parameters at fault (names and values;
    names only for ``MISSINGPARAMETERS``).  The text is safe to show the
    client: never a key, an offset or the content.
    """

    code = "CLIENTBUG"

    def __init__(
        self,
        text: str,
        error: str = BADPARAMETERS,
        *,
        source: str | None = None,
        target: str = "",
        params: Params = (),
        missing: tuple[str, ...] = (),
    ) -> None:
        super().__init__(text)
        #: What went wrong on the server's side, for the log only (never sent).
        self.detail = ""
        self.error = error
        self.source = source
        self.target = target
        self.params = params
        self.missing = missing

    def about(self, source: str | None, target: str) -> ConversionFailed:
        """The same failure with the source and target filled in where they were not."""
        failure = ConversionFailed(
            self.text,
            self.error,
            source=self.source if self.source is not None else source,
            target=self.target or target,
            params=self.params,
            missing=self.missing,
        )
        failure.detail = self.detail
        return failure


__all__ = [
    "BADPARAMETERS",
    "MISSINGPARAMETERS",
    "SPOOL_IN_MEMORY",
    "TEMPFAIL",
    "ConversionContext",
    "ConversionFailed",
    "ConversionRandomness",
    "ConversionRequest",
    "Converted",
    "Params",
    "SourcePart",
    "media_type",
    "spool",
]
