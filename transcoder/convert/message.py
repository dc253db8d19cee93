"""All the conversions one CONVERT asks of one message (blocking: run it off the reactor).

Sans-IO: no twisted import.  :func:`convert_message` reads the message
file once for its digest (the identity of every conversion's draws,
:class:`~transcoder.convert.model.ConversionRandomness`), then converts
each part named by a converting item, works out AVAILABLECONVERSIONS
(RFC 5259 section 8.4) and converts the header items.  Every failure is a
:class:`~transcoder.convert.model.ConversionFailed` in the result, never
an exception, except a message file that went away (``OSError``): the
caller leaves that message out.  A converter's own exception becomes an
opaque ``TEMPFAIL`` failure whose ``detail`` is for the log only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from transcoder.convert.engine import ConvertedPart, convert_header, convert_part, source_part
from transcoder.convert.model import (
    TEMPFAIL,
    ConversionContext,
    ConversionFailed,
    ConversionRandomness,
    ConversionRequest,
    media_type,
)
from transcoder.convert.registry import ConversionRegistry
from transcoder.mime.entity import Entity
from transcoder.mime.parts import find_part
from transcoder.transcoders.derivation import ViewSecret, message_digest

Part = tuple[int, ...]


@dataclass(frozen=True)
class MessageConversions:
    """What one message's conversions gave, each value the result or its failure.

    ``parts``: the converted part by part numbers; ``available``: the targets
    of AVAILABLECONVERSIONS by part; ``headers``: the converted header by
    (part, ``HEADER`` or ``MIME``).
    """

    parts: dict[Part, ConvertedPart | ConversionFailed] = field(default_factory=dict)
    available: dict[Part, tuple[str, ...] | ConversionFailed] = field(default_factory=dict)
    headers: dict[tuple[Part, str], bytes | ConversionFailed] = field(default_factory=dict)


def convert_message(
    fp: BinaryIO,
    entity: Entity,
    size: int,
    registry: ConversionRegistry,
    request: ConversionRequest,
    context: ConversionContext,
    secret: ViewSecret | None,
    parts: Sequence[Part] = (),
    available: Sequence[Part] = (),
    headers: Sequence[tuple[Part, str]] = (),
) -> MessageConversions:
    """Convert ``parts``, list ``available``, convert ``headers`` of the ``size``-octet
    message in ``fp`` (parsed as ``entity``); see the module docstring."""
    result = MessageConversions()
    digest = message_digest(fp, size) if secret is not None and parts else bytes(32)
    for part in parts:
        randomness = ConversionRandomness(secret, digest, ".".join(map(str, part)))
        here = ConversionContext(context.keys, context.now, randomness, context.cms)
        result.parts[part] = _convert(fp, entity, part, registry, request, here)
    for part in available:
        node = entity if not part else find_part(entity, part)
        source = None if node is None else media_type(node.content_type)
        result.available[part] = available_targets(registry, source, request, context)
    for part, text in headers:
        try:
            result.headers[(part, text)] = convert_header(fp, entity, part, text, request)
        except ConversionFailed as failure:
            result.headers[(part, text)] = failure
    return result


def _convert(
    fp: BinaryIO,
    entity: Entity,
    part: Part,
    registry: ConversionRegistry,
    request: ConversionRequest,
    context: ConversionContext,
) -> ConvertedPart | ConversionFailed:
    try:
        return convert_part(registry, source_part(fp, entity, part), request, context)
    except ConversionFailed as failure:  # refused (parameters, keys, characters)
        return failure.about(failure.source, request.target or failure.source or "")
    except (OSError, EOFError):
        raise  # the message file went away: the caller leaves the message out
    except Exception as error:  # a converter's own failure: opaque, never the plaintext
        broken = ConversionFailed(
            "The part could not be converted", TEMPFAIL, target=request.target or ""
        )
        broken.detail = f"{type(error).__name__}: {error}"
        return broken


def available_targets(
    registry: ConversionRegistry,
    source: str | None,
    request: ConversionRequest,
    context: ConversionContext,
) -> tuple[str, ...] | ConversionFailed:
    """AVAILABLECONVERSIONS (RFC 5259 section 8.4) of a ``source`` part (``None``: no such part).

    Default conversion: every target whose converter takes all the request's
    parameters (none left: the ERROR phrase, as the section recommends); a
    specific one: that target if a converter serves it, else the ERROR phrase.
    """
    if source is None:
        return ConversionFailed("No such body part", target=request.target or "text/plain")
    if request.target is not None:
        try:
            registry.choose(source, request, context)
        except ConversionFailed as failure:
            return failure.about(source, request.target)
        return (request.target,)
    names = set(request.names())
    targets = tuple(
        t
        for t in registry.targets(source, context)
        if names <= set(registry.parameters(source, t, context))
    )
    if not targets and names:
        return ConversionFailed(
            "No conversion takes these parameters",
            source=source,
            target=source,
            params=request.params,
        )
    return targets


__all__ = ["MessageConversions", "available_targets", "convert_message"]
