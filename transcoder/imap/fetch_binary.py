"""The content of FETCH ``BINARY[...]`` and ``BINARY.SIZE[...]`` items (RFC 3516 section 4).

:func:`prepare_binaries` runs before a message's response is built -- and
before ``\\Seen`` is set -- so a part that cannot be decoded (``NO
[UNKNOWN-CTE]``, RFC 3516 section 4.3) or that is not a leaf (``NO
[CLIENTBUG]``, RFC 9051 section 6.4.5) refuses the FETCH before a byte of
that message is written.  It works on what FETCH serves: the stored message
or, under transcoding, the view (docs/design.md: BINARY is a content item
like ``BODY[]``, so it never reveals the plaintext of an encrypted view).

Where the decoded octets live, so a large part is never held whole in memory:

* an identity-encoded part of a file (7bit, 8bit, binary; ``BINARY[]``,
  the whole message): the window of the file itself, scanned once for NUL;
* a view being encrypted as it is sent (``read_between``): ``BINARY[]``
  and identity parts are its window, without a scan -- a view is made by
  our transcoders, whose output is 7bit (base64 or ASCII armor);  a part
  to decode is read into a spool first;
* a base64 or quoted-printable part: decoded into a spooled temporary file
  (in memory up to :data:`SPOOL_IN_MEMORY`, then on disk), in a worker
  thread when its encoded size is over :data:`THREAD_LIMIT`.

Whether the decoded octets hold a NUL decides the literal's form: RFC 3516
section 4.3, "If the domain of the decoded data is 8bit and the data does
not contain the NUL octet, the server SHOULD return the data in a <string>
instead of a <literal8>" -- so ``~{n}`` exactly when there is a NUL.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any, BinaryIO

from twisted.internet import defer, threads

from transcoder.imap.fetch_syntax import FetchItem
from transcoder.mime.binary import BinaryPart, Decoded, binary_part, decode_into, holds_nul
from transcoder.mime.entity import Entity

#: Decoded octets kept in memory; more go to a temporary file.
SPOOL_IN_MEMORY = 64 * 1024
#: Encoded parts larger than this are decoded (or scanned) in a worker thread.
THREAD_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class BinaryContent:
    """The decoded octets of one ``BINARY[part]``: ``fp``'s window ``start``..``start + size``.

    ``fp`` is the view's file or a spool holding the decoded octets; ``None``
    when ``size`` is 0.  ``has_nul`` picks ``literal8`` (RFC 3516 section 4.3).
    """

    size: int
    has_nul: bool
    fp: Any = None
    start: int = 0

    def window(self, partial: tuple[int, int] | None) -> tuple[int, int]:
        """The file window of the whole content or of its ``<origin.length>`` slice.

        RFC 3516 section 4.2: a partial's numbers count decoded octets.
        """
        low, high = 0, self.size
        if partial is not None:
            low = min(partial[0], self.size)
            high = min(partial[0] + partial[1], self.size)
        return self.start + low, self.start + high


EMPTY = BinaryContent(0, False)


def needs_content(item: FetchItem) -> bool:
    """Whether a BINARY item needs the view's octets (``BINARY.SIZE[]`` is the view's size)."""
    assert item.section is not None
    return item.binary or bool(item.section.part)


def needs_structure(item: FetchItem) -> bool:
    """Whether a BINARY item needs the view's MIME tree (any but the whole message)."""
    assert item.section is not None
    return bool(item.section.part)


@defer.inlineCallbacks
def prepare_binaries(
    view: Any, fp: Any, entity: Entity | None, items: list[FetchItem], spools: list[BinaryIO]
) -> Any:
    """``{part: BinaryContent}`` for every BINARY / BINARY.SIZE item of one message.

    Each part named twice (``BINARY[2] BINARY.SIZE[2]``) is decoded once.
    Spools made are appended to ``spools`` for the caller to close once the
    response is written.  Fails with the ClientError that refuses the FETCH.
    """
    found: dict[tuple[int, ...], BinaryContent] = {}
    for item in sorted(items, key=lambda i: not i.binary):  # BINARY's content serves .SIZE
        if item.name not in ("BINARY", "BINARY.SIZE") or item.section is None:
            continue
        part = item.section.part
        if part in found:
            continue
        if not part and not item.binary:
            found[part] = BinaryContent(view.size, False)  # BINARY.SIZE[]: nothing to read
            continue
        where = BinaryPart(0, view.size) if not part else _where(entity, part)
        found[part] = yield _content(fp, where, spools) if where is not None else EMPTY
    return found


def _where(entity: Entity | None, part: tuple[int, ...]) -> BinaryPart | None:
    assert entity is not None  # needs_structure: the tree was parsed
    return binary_part(entity, part)


@defer.inlineCallbacks
def _content(fp: Any, where: BinaryPart, spools: list[BinaryIO]) -> Any:
    """The decoded content of ``where`` in ``fp`` (see the module docstring)."""
    streamed = hasattr(fp, "read_between")
    if where.identity and streamed:
        return BinaryContent(where.encoded_size, False, fp, where.start)
    if streamed:  # a part of a view being made, to decode: its encoded octets first
        raw = _spool(spools)
        position = where.start
        while position < where.end:
            piece = yield fp.read_between(position, where.end)
            raw.write(piece)
            position += len(piece)
        fp, where = raw, BinaryPart(0, where.encoded_size, where.encoding)
    if where.identity:
        has_nul = yield _off_reactor(where, holds_nul, fp, where.start, where.end)
        return BinaryContent(where.encoded_size, has_nul, fp, where.start)
    out = _spool(spools)
    found: Decoded = yield _off_reactor(where, decode_into, fp, where, out)
    return BinaryContent(found.size, found.has_nul, out, 0)


def _off_reactor(where: BinaryPart, f: Any, *args: Any) -> defer.Deferred[Any]:
    """``f(*args)`` in a worker thread for a large part, at once for a small one."""
    if where.encoded_size > THREAD_LIMIT:
        return threads.deferToThread(f, *args)
    return defer.maybeDeferred(f, *args)


def _spool(spools: list[BinaryIO]) -> BinaryIO:
    # Closed by the caller once the response is written (spools).
    spool: BinaryIO = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # type: ignore[assignment]  # noqa: SIM115
    spools.append(spool)
    return spool


__all__ = [
    "EMPTY",
    "SPOOL_IN_MEMORY",
    "THREAD_LIMIT",
    "BinaryContent",
    "needs_content",
    "needs_structure",
    "prepare_binaries",
]
