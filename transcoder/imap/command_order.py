"""One command at a time: pipelined commands run, and are answered, in the order sent.

RFC 3501 section 5.5 lets a server run pipelined commands at once only when
their outcome cannot depend on it: commands that name messages by sequence
number must not be reordered, and one that may expunge must not run beside
one that uses sequence numbers; section 7.4.1 forbids ``* n EXPUNGE`` while
a FETCH, STORE or SEARCH is in progress.  Twisted's ``IMAP4Server`` reads on
while a command waits for a Deferred unless the command sets ``blocked``
itself, and the stall that kept a literal-bearing line unread could be
lifted by a command finishing inside another's ``_unblock``: a later APPEND
then completed -- and reported another session's EXPUNGE -- while an
earlier STORE was outstanding (issue 10 item 1).

The rule here is the simplest sound one, for every command:

* A command runs from the call of its handler until its tagged
  ``OK``/``NO``/``BAD``; the command guard brackets every handler call with
  :meth:`CommandOrderMixin.command_began` and
  :meth:`~CommandOrderMixin.command_returned`.  While one runs (or
  Twisted's ``blocked`` is set), the wire mixin keeps every further command
  line unread with :meth:`~CommandOrderMixin.hold_input`: the line goes
  back into the receive buffer and parsing pauses; past 64 KiB held, reading
  the socket pauses too, so a client pipelining without end is held back by
  TCP, not buffered here.
* Lines the running command reads itself -- the rest of a line after a
  literal, IDLE's ``DONE``, an AUTHENTICATE response: parse states other
  than ``command`` -- are not held.
* The tagged response ends the command.  Held input is read on the next
  reactor turn (``callLater(0)`` on the injected clock): whatever code
  answered the command -- a FETCH restoring its idle timer, a wrapper
  resetting its state -- has returned by then, so nothing of one command
  runs after the next has started.  A command answered inside its handler
  call, with nothing held, lets the loop that called the handler read on.

Mailbox updates are written just before each tagged response
(:mod:`.updates`), so with one command in progress they follow the rule of
that command: no EXPUNGE during FETCH, STORE or SEARCH.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

if TYPE_CHECKING:
    from twisted.mail.imap4 import IMAP4Server as _ServerBase
else:
    _ServerBase = object

#: Octets of held input buffered before the socket itself stops being read.
HELD_BUFFER = 64 * 1024
#: The statuses of a tagged response: the command is complete (RFC 3501 section 7.1).
_COMPLETIONS = frozenset({b"OK", b"NO", b"BAD"})


class CommandOrderMixin(_ServerBase):
    """Runs pipelined commands strictly one after another (outside the wire mixin)."""

    # Twisted's attributes this mixin reads (declared for the type checker only).
    blocked: list[bytes] | None
    parseState: str
    clock: IReactorTime

    #: A command's handler was called and its tagged response is not sent yet.
    _running = False
    #: Handler calls in progress (UID FETCH's handler calls FETCH's).
    _handler_depth = 0
    #: The running command was answered inside its handler.
    _answered_inside = False
    #: Input is kept unread (parsing paused) until the running command ends.
    _held = False
    #: Reading the socket was paused too, for the held input grew past HELD_BUFFER.
    _socket_paused = False
    _release: IDelayedCall | None = None

    # -- the command guard's brackets -------------------------------------------

    def command_began(self) -> None:
        """A command's handler is about to run: the next commands wait for its answer."""
        self._handler_depth += 1
        self._running = True

    def command_returned(self) -> None:
        """A handler returned: a command it answered with input held reads on next turn."""
        self._handler_depth -= 1
        if self._handler_depth or not self._answered_inside:
            return
        self._answered_inside = False
        if self._held:
            self._schedule_release()

    # -- holding input -------------------------------------------------------------

    def next_command_waits(self) -> bool:
        """Whether a command line arriving now must wait (a command runs, or Twisted's
        ``blocked`` is set); lines the running command reads itself never wait."""
        return self.parseState == "command" and (self._running or self.blocked is not None)

    def hold_input(self, data: bytes) -> None:
        """Keep ``data``, and all that follows it, unread until the running command ends.

        Lines stop being parsed at once; the socket stops being read only
        once :data:`HELD_BUFFER` octets wait (a client pipelining without
        end is then held back by TCP).  Pausing the socket for every
        pipelined command cost two ``epoll_ctl`` calls per command.
        """
        self._held = True
        self.paused = True  # LineReceiver keeps what arrives in its buffer, unparsed
        self.dataReceived(data + self.clearLineBuffer())
        self._limit_held()

    def dataReceived(self, data: bytes) -> Any:
        """Parse what arrived; past :data:`HELD_BUFFER` held octets, stop reading."""
        why = super().dataReceived(data)
        if self._held:
            self._limit_held()
        return why

    def _limit_held(self) -> None:
        if not self._socket_paused and len(getattr(self, "_buffer", b"")) > HELD_BUFFER:
            self._socket_paused = True
            self.transport.pauseProducing()

    def _read_on(self) -> None:
        """Read the held input, unless a command runs again or ``blocked`` is set."""
        self._release = None
        if self._held and not self._running and self.blocked is None:
            self._held = False
            if self._socket_paused:
                self._socket_paused = False
                self.resumeProducing()
            else:
                self.paused = False
                self.dataReceived(b"")

    # -- the end of a command --------------------------------------------------------

    def _respond(self, state: bytes, tag: bytes | None, message: bytes | None) -> None:
        """A tagged completion ends the running command; held input is read next turn."""
        super()._respond(state, tag, message)
        if tag is None or state not in _COMPLETIONS or not self._running:
            return
        self._running = False
        if self._handler_depth:
            self._answered_inside = True
        elif self._held:
            self._schedule_release()

    def _schedule_release(self) -> None:
        if self._release is None:
            self._release = self.clock.callLater(0, self._read_on)

    def _unblock(self) -> None:
        """Twisted's ``blocked`` was lifted: held input is read next turn."""
        super()._unblock()
        if self._held:
            self._schedule_release()

    def connectionLost(self, reason: Any) -> None:
        """Nothing is read for a client that has gone."""
        if self._release is not None and self._release.active():
            self._release.cancel()
        self._release = None
        super().connectionLost(reason)
