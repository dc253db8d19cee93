"""Messages of a Maildir mailbox, read lazily from their files.

:class:`MaildirMessage` serves Twisted's IMessage/IMessagePart/IMessageFile
and our :class:`~transcoder.store.interfaces.IParsedMessage`.  Nothing is read
until asked for; the MIME structure comes from
:func:`transcoder.mime.entity.parse_message` (offsets only, bodies stay on
disk) and is cached per mailbox.  Because intake made the file CRLF-canonical,
the file's octets are the wire octets: ``size`` is RFC822.SIZE.

A flag change renames the file (``base:2,S`` -> ``base:2,FS``), in this
process or in another (Dovecot, an MDA), at any moment.  A name known to be
stale is never an error: the file is found again by its base name, the part
before ``:2,`` that no rename changes, from any thread and without touching
the shared mailbox state (issue 10, item 6).  Once opened, the file stays
open: a file descriptor survives renames and even an unlink, so a message
being read is served whole.  Only a file gone under every name raises
:class:`MessageExpunged`.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, TypeVar

from twisted.mail import imap4
from twisted.python import threadable
from zope.interface import implementer

from transcoder.files import FileSlice
from transcoder.mime.entity import parse_message
from transcoder.store.flags import RECENT
from transcoder.store.interfaces import IParsedMessage

if TYPE_CHECKING:
    from transcoder.mime.entity import Entity
    from transcoder.store.mailbox import MailboxState, MessageRecord

_T = TypeVar("_T")
#: How often a message file renamed under a reader is looked for again.
RESOLVE_ATTEMPTS = 10


class MessageExpunged(FileNotFoundError):
    """The message's file is gone under every name: it was expunged (RFC 2180 section 4.1)."""


def find_by_base(cur: Path, base: str) -> Path | None:
    """The file of ``cur`` whose base name (before ``:2,``) is ``base``, or None.

    A Maildir file keeps its base name for life; only the info after the
    colon changes with the flags.
    """
    try:
        names = os.listdir(cur)
    except FileNotFoundError:
        return None
    for name in names:
        if name.partition(":")[0] == base:
            return cur / name
    return None


def _slice(fp: IO[bytes], start: int, end: int) -> BinaryIO:
    return io.BufferedReader(FileSlice(fp, start, end))


def _headers(entity: Entity, negate: bool, names: tuple[str | bytes, ...]) -> dict[str, str]:
    wanted = {(n.decode("latin-1") if isinstance(n, bytes) else n).lower() for n in names}
    out: dict[str, str] = {}
    for field in entity.header:
        key = field.name.lower()
        if key and (key in wanted) != negate:  # "" = a line that is not a field
            out.setdefault(key, field.value)
    return out


def _is_multipart(entity: Entity) -> bool:
    return entity.content_type.maintype == "multipart"


def _subpart_entity(entity: Entity, part: int) -> Entity:
    """Part ``part`` (from 0) of ``entity``, numbered as IMAP does (RFC 3501 section 6.4.5).

    The parts of a ``message/rfc822`` entity are those of the message it
    encloses (that message's body, if it is not multipart).
    """
    if _is_multipart(entity):
        children = entity.children
    elif entity.children:
        inner = entity.children[0]
        children = inner.children if _is_multipart(inner) else (inner,)
    else:
        raise TypeError("not a multipart entity")
    if not 0 <= part < len(children):
        raise IndexError(f"no part {part + 1}")
    return children[part]


def _on_reactor_thread() -> bool:
    """True on the thread that owns the mailbox state (the reactor's)."""
    if threadable.ioThread is None:  # no reactor registered yet: tests, tools
        return threading.current_thread() is threading.main_thread()
    return bool(threadable.isInIOThread())


@implementer(imap4.IMessagePart)
class MessagePart:
    """A MIME part of a stored message (IMessagePart), read from the message file."""

    def __init__(self, message: MaildirMessage, entity: Entity) -> None:
        self._message = message
        self._entity = entity

    def getHeaders(self, negate: bool, *names: str | bytes) -> dict[str, str]:
        """The part's header fields, lowercase name -> unfolded value."""
        return _headers(self._entity, negate, names)

    def getBodyFile(self) -> BinaryIO:
        """The part's body octets."""
        return _slice(self._message.open(), self._entity.body_start, self._entity.end)

    def getSize(self) -> int:
        """Octets of the part's body (what BODYSTRUCTURE reports for a part)."""
        return self._entity.body_size

    def isMultipart(self) -> bool:
        """True for a multipart part."""
        return _is_multipart(self._entity)

    def getSubPart(self, part: int) -> MessagePart:
        """Sub-part ``part`` (from 0); IndexError if missing, TypeError if not multipart."""
        return MessagePart(self._message, _subpart_entity(self._entity, part))


@implementer(imap4.IMessage, imap4.IMessageFile, IParsedMessage)
class MaildirMessage:
    """A message file in ``cur/`` (see the module docstring)."""

    def __init__(
        self,
        state: MailboxState,
        record: MessageRecord,
        recent: bool = False,
        on_flags: Callable[[tuple[str, ...]], None] | None = None,
    ) -> None:
        self._state = state
        self._record = record
        self._recent = recent
        self._on_flags = on_flags
        self._entity: Entity | None = None
        self.uid = record.uid
        self.size = record.size

    @property
    def flags(self) -> tuple[str, ...]:
        """The message's flags now, ``\\Recent`` included when it is recent for the session.

        ``on_flags`` (the session's) sees them first, on the reactor thread:
        a keyword the client was not told of is announced before it is used.
        """
        rec = self._state.records.get(self.uid, self._record)
        flags = self._state.keywords.flags(rec.info)
        if self._on_flags is not None and _on_reactor_thread():
            self._on_flags(flags)
        return (*flags, RECENT) if self._recent else flags

    @property
    def internal_date(self) -> datetime:
        """INTERNALDATE: the file's mtime (RFC 3501 section 2.3.3)."""
        return datetime.fromtimestamp(self._record.mtime, UTC)

    def path(self) -> str:
        """Where the message file is now."""
        current = self._state.file_of(self.uid)
        return str(current if current is not None else self._state.cur / self._record.filename)

    def open(self) -> BinaryIO:
        """The message octets from position 0, held open (see the module docstring).

        Raises :class:`MessageExpunged` (a FileNotFoundError) if it was expunged.
        """
        return self._on_file(lambda path: open(path, "rb"))

    def link_to(self, target: Path) -> None:
        """Hard-link the message file as ``target`` (COPY); MessageExpunged if it was expunged."""
        self._on_file(lambda path: os.link(path, target))

    def _on_file(self, action: Callable[[Path], _T]) -> _T:
        """``action(path of the message file)``, the file looked for again if it moved.

        Safe in a worker thread: the shared state is only read, never re-scanned.
        """
        path = Path(self.path())
        for _ in range(RESOLVE_ATTEMPTS):
            try:
                return action(path)
            except FileNotFoundError as e:
                error = e
                cur, base = self._state.cur, self._record.base
                # A file renamed while the directory is read may be in neither
                # listing's view (POSIX readdir): only two misses mean it is gone.
                found = find_by_base(cur, base) or find_by_base(cur, base)
                if found is None:
                    raise MessageExpunged(f"message {self.uid} is gone") from e
                path = found  # renamed by a flag change; it may move again meanwhile
        # Found every time, yet the action failed: something else is missing (link's target).
        raise error

    def entity(self) -> Entity:
        """The MIME structure of the message (cached).

        Safe in a worker thread (large messages are parsed there): only the
        reactor thread touches the mailbox-wide cache.
        """
        if self._entity is None:
            shared = _on_reactor_thread()
            cached = self._state.cached_entity(self.uid) if shared else None
            if cached is None:
                with self.open() as fp:
                    cached = parse_message(fp)
                if shared:
                    self._state.keep_entity(self.uid, cached)
            self._entity = cached
        return self._entity

    def getUID(self) -> int:
        """The message's UID."""
        return self.uid

    def getFlags(self) -> list[str]:
        """The message's flags (see :attr:`flags`)."""
        return list(self.flags)

    def getInternalDate(self) -> str:
        """INTERNALDATE as an RFC 2822 date string."""
        return format_datetime(self.internal_date)

    def getHeaders(self, negate: bool, *names: str | bytes) -> dict[str, str]:
        """Top-level header fields, lowercase name -> unfolded value (first occurrence)."""
        return _headers(self.entity(), negate, names)

    def getBodyFile(self) -> BinaryIO:
        """The body octets (after the header's blank line)."""
        entity = self.entity()
        return _slice(self.open(), entity.body_start, entity.end)

    def getSize(self) -> int:
        """RFC822.SIZE: octets of the whole message."""
        return self.size

    def isMultipart(self) -> bool:
        """True for a multipart message."""
        return _is_multipart(self.entity())

    def getSubPart(self, part: int) -> MessagePart:
        """Sub-part ``part`` (from 0); IndexError if missing, TypeError if not multipart."""
        return MessagePart(self, _subpart_entity(self.entity(), part))
