"""Shared machinery of the mailbox commands: argument parsers, running a command, refusing it.

Every mailbox command handler runs its work through :meth:`MailboxCommandMixin.run_command`:
the work is a coroutine; a :class:`~transcoder.errors.ClientError` it raises
becomes the tagged ``NO``/``BAD`` it describes, anything else an opaque
``NO [SERVERBUG]`` with the detail logged.  Commands pipelined behind one
still waiting on the store wait their turn (RFC 3501 section 5.5).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeAlias

from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure

from transcoder.errors import BadCommand, ClientError, MailboxError, ServerError
from transcoder.imap.mailbox_syntax import (
    LIST_CHARS,
    LiteralAhead,
    split_status_items,
    split_string_argument,
)
from transcoder.imap.responses import error_response

if TYPE_CHECKING:
    from twisted.mail.imap4 import IMAP4Server as _ServerBase
else:
    _ServerBase = object

log = Logger()

#: What a command parser returns: ``(value, rest of line)`` or a Deferred of it.
Parsed: TypeAlias = "tuple[Any, bytes] | defer.Deferred[tuple[Any, bytes]]"


def syntax_checked(parse: Callable[..., Any]) -> Callable[..., Any]:
    """Run an argument parser, turning our :class:`BadCommand` into Twisted's syntax error.

    Twisted's dispatcher answers ``IllegalClientResponse`` from a parser with
    a tagged ``BAD``; any other exception would escape as an untagged error
    and leave the command unanswered.
    """

    def checked(self: Any, line: bytes) -> Any:
        try:
            result = parse(self, line)
        except BadCommand as e:
            raise imap4.IllegalClientResponse(e.text) from None
        if isinstance(result, defer.Deferred):
            result.addErrback(_as_syntax_error)
        return result

    checked.__name__ = parse.__name__
    checked.__doc__ = parse.__doc__
    return checked


class MailboxCommandMixin(_ServerBase):
    """Argument parsers and the run/refuse helpers the mailbox mixins share."""

    #: Twisted's queue of command lines held back while a command completes.
    blocked: list[bytes] | None

    # -- argument parsers (Twisted's command tables call them as plain functions) --

    def _string_argument(self, line: bytes, extra: frozenset[int] | None = None) -> Parsed:
        """An astring, reading a literal through Twisted's literal machinery."""
        parsed = (
            split_string_argument(line) if extra is None else split_string_argument(line, extra)
        )
        if not isinstance(parsed, LiteralAhead):
            return parsed
        # Twisted's string literal: sends the continuation request and fires
        # with (octets, rest of the line after the literal).
        d: defer.Deferred[tuple[bytes, bytes]] = self._stringLiteral(parsed.size)
        return d.addCallback(lambda result: (result[0], _strip_separator(result[1])))

    @syntax_checked
    def arg_mailbox(self, line: bytes) -> Parsed:
        """A ``mailbox`` argument as raw wire bytes (quoted, literal or atom)."""
        return self._string_argument(line or b"")

    @syntax_checked
    def arg_list_mailbox(self, line: bytes) -> Parsed:
        """A ``list-mailbox`` argument: an astring that may hold ``%`` and ``*``."""
        return self._string_argument(line or b"", LIST_CHARS)

    @syntax_checked
    def arg_status_items(self, line: bytes) -> Parsed:
        """STATUS's ``(item ...)`` list, upper-cased; an unknown item is a syntax error."""
        return split_status_items(line or b"")

    # -- running a command -------------------------------------------------------

    def run_command(
        self,
        tag: bytes,
        work: Callable[..., Coroutine[Any, Any, Any]],
        *args: Any,
    ) -> defer.Deferred[None]:
        """Run ``work(tag, *args)``; refuse the command with its error if it fails.

        ``work`` writes the command's responses, including the tagged OK.
        """
        d: defer.Deferred[Any] = defer.Deferred.fromCoroutine(work(tag, *args))
        d.addErrback(self._command_failed, tag)
        if not d.called:
            # RFC 3501 section 5.5: later commands must not overtake this one.
            if self.blocked is None:
                self.blocked = []
            d.addBoth(self._unblock_after)
        return d

    def _unblock_after(self, result: object) -> object:
        self._unblock()
        return result

    def _command_failed(self, failure: Failure, tag: bytes) -> None:
        error = failure.value
        if isinstance(error, imap4.IllegalClientResponse):
            error = BadCommand(str(error))
        elif isinstance(error, imap4.MailboxException):
            # An embedding application's own account raising Twisted's errors.
            error = MailboxError(str(error))
        elif not isinstance(error, ClientError):
            log.failure("mailbox command failed", failure)
            error = ServerError()
        self.refuse(tag, error)

    def refuse(self, tag: bytes, error: ClientError | ServerError) -> None:
        """Answer ``tag`` with the tagged NO/BAD that ``error`` maps to.

        The same job as the wire mixin's ``send_error``; kept local until
        the two are merged.
        """
        status, text = error_response(error)
        if status == b"BAD":
            self.sendBadResponse(tag, text)
        else:
            self.sendNegativeResponse(tag, text)

    # -- the selected mailbox ----------------------------------------------------

    #: Name of the mailbox this session selected (meaningful while ``mbox`` is set).
    selected_name: str | None = None

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


def _as_syntax_error(failure: Failure) -> None:
    """Errback: a :class:`BadCommand` found after a literal is a syntax error too."""
    failure.trap(BadCommand)
    raise imap4.IllegalClientResponse(failure.value.text)


def _strip_separator(rest: bytes) -> bytes:
    """The line after a literal argument: drop the space before the next argument."""
    if rest[:1] == b" ":
        return rest[1:]
    if rest:
        raise imap4.IllegalClientResponse("Missing space after literal")
    return rest
