"""Shared machinery of the mailbox commands: argument parsers and running a command.

Every mailbox command handler runs its work through :meth:`MailboxCommandMixin.run_command`:
the work is a coroutine that writes the command's responses; if it fails,
the wire mixin's ``send_error`` answers the tagged ``NO``/``BAD`` (a
:class:`~transcoder.errors.ClientError` is explained, anything else is an
opaque ``NO [SERVERBUG]`` with the detail logged).  Commands pipelined behind
one still waiting on the store wait their turn (RFC 3501 section 5.5,
:mod:`.command_order`).

Argument parsers raise :class:`~transcoder.errors.BadCommand` for syntax
errors; the wire mixin's command guard answers it with a tagged ``BAD``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeAlias

from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail import imap4

from transcoder.errors import BadCommand
from transcoder.imap.mailbox_syntax import (
    LIST_CHARS,
    LiteralAhead,
    split_status_items,
    split_string_argument,
)

if TYPE_CHECKING:
    from twisted.mail.imap4 import IMAP4Server as _ServerBase
else:
    _ServerBase = object

log = Logger()

#: What a command parser returns: ``(value, rest of line)`` or a Deferred of it.
Parsed: TypeAlias = "tuple[Any, bytes] | defer.Deferred[tuple[Any, bytes]]"


class MailboxCommandMixin(_ServerBase):
    """Argument parsers and the command runner the mailbox mixins share."""

    #: Name of the mailbox this session selected (meaningful while ``mbox`` is set).
    selected_name: str | None = None

    # -- argument parsers (Twisted's command tables call them as plain functions) --

    def _string_argument(self, line: bytes, extra: frozenset[int] | None = None) -> Parsed:
        """An astring, reading a literal through Twisted's (the wire mixin's) literal reader."""
        parsed = (
            split_string_argument(line) if extra is None else split_string_argument(line, extra)
        )
        if not isinstance(parsed, LiteralAhead):
            return parsed
        # Fires with (octets, rest of the line after the literal).
        d: defer.Deferred[tuple[bytes, bytes]] = self._stringLiteral(parsed.size)
        return d.addCallback(lambda result: (result[0], _strip_separator(result[1])))

    def arg_mailbox(self, line: bytes | None) -> Parsed:
        """A ``mailbox`` argument as raw wire bytes (quoted, literal or atom)."""
        return self._string_argument(line or b"")

    def arg_list_mailbox(self, line: bytes | None) -> Parsed:
        """A ``list-mailbox`` argument: an astring that may hold ``%`` and ``*``."""
        return self._string_argument(line or b"", LIST_CHARS)

    def arg_status_items(self, line: bytes | None) -> Parsed:
        """STATUS's ``(item ...)`` list, upper-cased; an unknown item is a syntax error."""
        return split_status_items(line or b"")

    # -- running a command -------------------------------------------------------

    def run_command(
        self,
        tag: bytes,
        work: Callable[..., Coroutine[Any, Any, Any]],
        *args: Any,
    ) -> defer.Deferred[None]:
        """Run ``work(tag, *args)``, which answers the command; refuse it if it fails."""
        d: defer.Deferred[Any] = defer.Deferred.fromCoroutine(work(tag, *args))
        d.addErrback(lambda failure: self.send_error(tag, failure))
        return d

    # -- the selected mailbox ----------------------------------------------------

    def selected_mailbox_name(self) -> str | None:
        """The name of the selected mailbox, or ``None`` in authenticated state."""
        if self.mbox is None or self.state != "select":
            return None
        return self.selected_name


def close_session(session: Any) -> None:
    """Close a mailbox session (ICloseableMailbox), logging rather than raising a failure."""
    closer = imap4.ICloseableMailbox(session, None)
    if closer is None:
        return
    d = defer.maybeDeferred(closer.close)
    d.addErrback(lambda failure: log.failure("closing a mailbox session failed", failure))


def _strip_separator(rest: bytes) -> bytes:
    """The line after a literal argument: drop the space before the next argument."""
    if rest[:1] == b" ":
        return rest[1:]
    if rest:
        raise BadCommand("Missing space after literal")
    return rest
