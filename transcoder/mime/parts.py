"""IMAP part numbers (RFC 3501 section 6.4.5) resolved to entities of a parsed message.

Pure: no twisted import.  Shared by FETCH sections
(:mod:`transcoder.imap.sections`) and BINARY (:mod:`transcoder.mime.binary`).

In a multipart, ``n`` is the n-th part; a message that is not multipart has
one part, ``1``, its body; the parts of a ``MESSAGE/RFC822`` part are those
of the message it encapsulates.
"""

from __future__ import annotations

from collections.abc import Sequence

from transcoder.mime.entity import Entity


def is_multipart(entity: Entity) -> bool:
    """Whether ``entity`` is a multipart (its children are its parts)."""
    return entity.content_type.maintype == "multipart"


def encapsulated(entity: Entity) -> Entity | None:
    """The message inside a message/rfc822 (or message/global) part, if parsed."""
    if entity.content_type.maintype == "message" and len(entity.children) == 1:
        return entity.children[0]
    return None


def _child(entity: Entity, number: int) -> Entity | None:
    if 1 <= number <= len(entity.children):
        return entity.children[number - 1]
    return None


def _part_of_message(message: Entity, number: int) -> Entity | None:
    """Part ``number`` of a message: of its multipart body, or ``1`` for itself."""
    if is_multipart(message):
        return _child(message, number)
    return message if number == 1 else None


def find_part(message: Entity, part: Sequence[int]) -> Entity | None:
    """The entity that the 1-based ``part`` numbers name in ``message``, or ``None``.

    ``part == ()`` names the message itself.
    """
    if not part:
        return message
    node = _part_of_message(message, part[0])
    for number in part[1:]:
        if node is None:
            return None
        if is_multipart(node):
            node = _child(node, number)
        else:
            inner = encapsulated(node)
            node = None if inner is None else _part_of_message(inner, number)
    return node


__all__ = ["encapsulated", "find_part", "is_multipart"]
