"""The conversions a server offers and how a request finds its converter (RFC 5259 sections 5, 6).

Sans-IO: no twisted import.

:class:`ConversionRegistry` holds converters in order (the built-ins:
:func:`builtin_converters`).  It answers

* ``CONVERSIONS`` (:meth:`ConversionRegistry.listing`): one
  :class:`ConversionLine` per (source, target) the user can use, with the
  parameter names.  A converter for any media type (encryption, identity)
  is listed under the concrete source asked for; under a wildcard source it
  is listed for ``text/plain``, ``text/html`` and ``application/octet-stream``
  (the ABNF wants a concrete ``type/subtype``; any other source converts
  alike);
* ``AVAILABLECONVERSIONS`` (:meth:`ConversionRegistry.targets`): the targets
  a part's type can be converted to, a subset of that listing;
* which converter serves a request (:meth:`ConversionRegistry.choose`): the
  default conversion (``NIL``) is the charset conversion to UTF-8 for
  ``text/plain`` and ``text/html`` and the identity for anything else.  A
  target nobody converts to, or one only a converter this user cannot use
  serves (no key), fails the part with ``ERROR ... BADPARAMETERS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from transcoder.cms import CmsSettings
from transcoder.convert.converters import ANY, IdentityConverter, TextCharsetConverter
from transcoder.convert.encrypt import PgpMimeConverter, SmimeConverter
from transcoder.convert.model import ConversionContext, ConversionFailed, ConversionRequest

#: Text types whose charset is converted.
TEXT_TYPES = ("text/plain", "text/html")
#: Concrete sources a wildcard listing shows converters for ANY source under.
REPRESENTATIVES = (*TEXT_TYPES, "application/octet-stream")


@dataclass(frozen=True)
class ConversionLine:
    """One ``* CONVERSION "source" "target" (params)`` response (RFC 5259 section 5.2)."""

    source: str
    target: str
    parameters: tuple[str, ...]


def matches(pattern: str, media: str) -> bool:
    """Whether ``media`` matches a ``mime-type-req``: ``*``, ``type/*`` or ``type/subtype``."""
    pattern = pattern.lower()
    if pattern == "*":
        return True
    kind, _, sub = pattern.partition("/")
    media_kind, _, media_sub = media.partition("/")
    return kind == media_kind and sub in ("*", media_sub)


def is_concrete(pattern: str) -> bool:
    """Whether ``pattern`` names one media type (no wildcard)."""
    return "*" not in pattern


def builtin_converters() -> tuple[Any, ...]:
    """The converters every server offers, in order."""
    return (
        *(TextCharsetConverter(media) for media in TEXT_TYPES),
        SmimeConverter(),
        PgpMimeConverter(),
        IdentityConverter(),
    )


class ConversionRegistry:
    """The server's converters, and the answers to CONVERSIONS and CONVERT."""

    def __init__(self, converters: Iterable[Any] | None = None, cms: CmsSettings | None = None):
        self.converters = tuple(builtin_converters() if converters is None else converters)
        #: The server's S/MIME settings (the default cipher of the S/MIME conversion).
        self.cms = cms or CmsSettings()

    @staticmethod
    def _target(converter: Any, source: str) -> str:
        return cast(str, converter.target or source)

    def _serving(self, source: str, context: ConversionContext) -> list[Any]:
        return [
            c
            for c in self.converters
            if (c.source == ANY or c.source == source) and c.available(context)
        ]

    def listing(
        self, source_req: str, target_req: str, context: ConversionContext
    ) -> list[ConversionLine]:
        """The CONVERSION lines for a ``CONVERSIONS source target`` command."""
        if is_concrete(source_req):
            sources: Sequence[str] = (source_req.lower(),)
        else:
            sources = [s for s in REPRESENTATIVES if matches(source_req, s)]
        lines: list[ConversionLine] = []
        for source in sources:
            for converter in self._serving(source, context):
                if converter.target is None and not is_concrete(source_req):
                    continue  # the identity is listed for a concrete source only
                target = self._target(converter, source)
                if matches(target_req, target):
                    line = ConversionLine(source, target, tuple(converter.parameters))
                    if line not in lines:
                        lines.append(line)
        return lines

    def targets(self, source: str, context: ConversionContext) -> list[str]:
        """The media types a ``source`` part converts to for this user (AVAILABLECONVERSIONS)."""
        found: list[str] = []
        for converter in self._serving(source, context):
            target = self._target(converter, source)
            if target not in found:
                found.append(target)
        return found

    def parameters(self, source: str, target: str, context: ConversionContext) -> tuple[str, ...]:
        """The parameter names the conversion of ``source`` to ``target`` takes (none if none)."""
        for line in self.listing(source, target, context):
            return line.parameters
        return ()

    def default_target(self, source: str) -> str:
        """What the default conversion (``NIL``) of a ``source`` part gives: the same type."""
        return source

    def choose(self, source: str, request: ConversionRequest, context: ConversionContext) -> Any:
        """The converter for converting a ``source`` part as ``request`` asks; ConversionFailed
        (BADPARAMETERS, the parameters omitted: the conversion is not possible) when none."""
        target = request.target or self.default_target(source)
        candidates = [
            c
            for c in self.converters
            if (c.source == ANY or c.source == source) and self._target(c, source) == target
        ]
        for converter in candidates:
            if converter.available(context):
                return converter
        if candidates:
            raise ConversionFailed(
                "No active key of this format to encrypt to", source=source, target=target
            )
        raise ConversionFailed("This conversion is not offered", source=source, target=target)


__all__ = [
    "REPRESENTATIVES",
    "TEXT_TYPES",
    "ConversionLine",
    "ConversionRegistry",
    "builtin_converters",
    "is_concrete",
    "matches",
]
