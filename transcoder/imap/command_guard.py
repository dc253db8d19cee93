"""Every failure of a command gets a tagged answer: the guard around Twisted's dispatch.

Twisted's ``IMAP4Server`` runs a command as a table entry ``(handler,
*argument parsers)``: it calls the parsers in turn, then the handler.  An
exception there reaches the client as an untagged ``BAD Server error: <detail>``
or, from a Deferred, as nothing at all.  :class:`CommandGuard` wraps an entry
so that the first failure is answered through ``send_error`` as ``<status>
[<code>] <text>`` (RFC 3501 section 7.1, RFC 5530 codes), and nothing may
follow the arguments.  Each handler call is bracketed by the server's
``command_began`` / ``command_returned`` (:mod:`.command_order`): the
command then runs alone until its tagged answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.mail import imap4
from twisted.python.failure import Failure

from transcoder.errors import (
    BadCommand,
    ClientError,
    InvalidMailboxName,
    MailboxExists,
    MailboxNotFound,
    MailboxReadOnly,
    ServerError,
    TranscoderError,
)

#: Twisted's exceptions, as the client errors they stand for.
_TWISTED_ERRORS: tuple[tuple[Any, type[ClientError]], ...] = (
    (imap4.IllegalMailboxEncoding, InvalidMailboxName),
    (imap4.NoSuchMailbox, MailboxNotFound),
    (imap4.MailboxCollision, MailboxExists),
    (imap4.ReadOnlyMailbox, MailboxReadOnly),
    (
        (
            imap4.IllegalClientResponse,
            imap4.IllegalQueryError,
            imap4.IllegalIdentifierError,
            imap4.MismatchedNesting,
            imap4.MismatchedQuoting,
        ),
        BadCommand,
    ),
)


def as_transcoder_error(error: BaseException) -> TranscoderError:
    """The error of our hierarchy that answers ``error`` (Twisted's own mapped to client errors)."""
    if isinstance(error, TranscoderError):
        return error
    for kinds, client_error in _TWISTED_ERRORS:
        if isinstance(error, kinds):
            return client_error(str(error)[:200])
    if isinstance(error, imap4.IllegalOperation):
        return ClientError(str(error)[:200], code="CANNOT")
    return ServerError()


class CommandGuard:
    """Wraps one command's handler and argument parsers so every failure is answered.

    The first failure of a parser is kept and the later parsers are skipped;
    the handler wrapper then answers it with the server's ``send_error``
    instead of running the command.  A handler's exception, or the failure
    of the Deferred it returns, is answered the same way.  One guard serves
    one run of one command.
    """

    def __init__(self) -> None:
        self.failure: Failure | None = None

    def wrap(self, entry: tuple[Any, ...]) -> tuple[Any, ...]:
        """The command-table entry ``(handler, *parsers)`` with every callable guarded."""
        handler, *rest = entry
        parsers = [self._parser(p) if callable(p) else p for p in rest]
        return (self._handler(handler), *parsers, self._parser(_end_of_arguments))

    def _failed(self, failure: Failure) -> tuple[None, bytes]:
        self.failure = failure
        return (None, b"")

    def _parser(self, parse: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(server: Any, line: bytes | None) -> Any:
            if self.failure is not None:
                return (None, b"")
            try:
                result = parse(server, line)
            except Exception:
                return self._failed(Failure())
            if isinstance(result, defer.Deferred):
                result.addErrback(self._failed)
            return result

        return guarded

    def _handler(self, handle: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(server: Any, tag: bytes, *args: Any, **kwargs: Any) -> Any:
            # The command runs until its tagged answer; the next ones wait (.command_order).
            server.command_began()
            try:
                return self._run(server, handle, tag, args[:-1], kwargs)  # drop the end marker
            finally:
                server.command_returned()

        return guarded

    def _run(
        self, server: Any, handle: Callable[..., Any], tag: bytes, args: Any, kwargs: Any
    ) -> Any:
        if self.failure is not None:
            server.send_error(tag, self.failure)
            return None
        try:
            result = handle(server, tag, *args, **kwargs)
        except Exception:
            server.send_error(tag, Failure())
            return None
        if isinstance(result, defer.Deferred):
            result.addErrback(lambda failure: server.send_error(tag, failure))
        return result


def _end_of_arguments(server: Any, line: bytes | None) -> tuple[None, bytes]:
    """The last parser of every command: nothing may follow its arguments."""
    if line and line.strip():
        raise BadCommand("Too many arguments")
    return (None, b"")
