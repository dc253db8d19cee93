"""A message of the backend server as the IMAP layer's :class:`IParsedMessage` (issue 11).

FETCH asks the selected :class:`~transcoder.backend.mailbox.BackendMailbox`
for the messages of a set; it answers with :class:`BackendMessage` objects
carrying what one ``UID FETCH (UID FLAGS RFC822.SIZE INTERNALDATE)`` told:
UID, flags, size, internal date.  Their octets are fetched only when a FETCH
item needs them (:meth:`BackendMessage.load`: ``UID FETCH uid BODY.PEEK[]``,
the literal streamed into a disk-backed spool) -- a FETCH of FLAGS or
RFC822.SIZE, or one served from a cached transcoded view, moves no message
octets.  Once loaded, the octets are the backend's, byte for byte: the view
and transcoding path of the built-in store works on them unchanged.

``open()`` of a message not yet loaded loads it first when called in a worker
thread (transcoding runs there), and raises :class:`OctetsNotLoaded` on the
reactor thread, where waiting for the backend would stall the reactor: the
server mixin (:mod:`.server`) loads the messages a FETCH needs before their
views are built.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from twisted.internet import defer, threads
from twisted.python import threadable
from twisted.python.failure import Failure
from zope.interface import implementer

from transcoder.errors import ClientError
from transcoder.mime.entity import Entity, parse_message
from transcoder.store.interfaces import IParsedMessage
from transcoder.store.message import MessageExpunged

if TYPE_CHECKING:
    from transcoder.backend.response_syntax import Spool


class OctetsNotLoaded(ClientError):
    """The message's octets were not fetched from the backend yet."""

    code = "UNAVAILABLE"


def _on_reactor_thread() -> bool:
    if threadable.ioThread is None:
        return threading.current_thread() is threading.main_thread()
    return bool(threadable.isInIOThread())


@implementer(IParsedMessage)
class BackendMessage:
    """One message of the selected backend mailbox (see the module docstring).

    ``source`` is what loads the octets: the mailbox, whose
    ``request_octets(message)`` answers through :meth:`deliver`.
    """

    def __init__(
        self,
        source: Any,
        uid: int,
        size: int,
        internal_date: datetime,
        flags: tuple[str, ...],
    ) -> None:
        self._source = source
        self.uid = uid
        self.size = size
        self.internal_date = internal_date
        self._flags = flags
        self._spool: Spool | None = None
        self._entity: Entity | None = None
        self._waiters: list[defer.Deferred[BackendMessage]] = []
        self._failure: Failure | None = None
        #: Set by the mailbox once the octets are asked of the backend.
        self.requested = False

    # -- metadata -------------------------------------------------------------------

    def getUID(self) -> int:
        """The backend's UID."""
        return self.uid

    def getFlags(self) -> list[str]:
        """The flags as the mailbox knows them now (updates from the backend included)."""
        return list(self._source.flags_of(self.uid, self._flags))

    def getInternalDate(self) -> str:
        """INTERNALDATE as an RFC 2822 date string."""
        return format_datetime(self.internal_date)

    # -- octets -----------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """Whether the octets are here."""
        return self._spool is not None

    def load(self) -> defer.Deferred[BackendMessage]:
        """Fetch the octets from the backend (one request however many ask); fires with self.

        The mailbox may fetch the next messages of the same FETCH in the same
        request (:meth:`~transcoder.backend.mailbox.BackendMailbox.request_octets`).
        """
        if self._spool is not None:
            return defer.succeed(self)
        if self._failure is not None:
            return defer.fail(self._failure)
        waiter: defer.Deferred[BackendMessage] = defer.Deferred()
        self._waiters.append(waiter)
        if not self.requested:
            self._source.request_octets(self)
        return waiter

    def deliver(self, result: Spool | Failure) -> None:
        """The mailbox's answer to a request: the octets, or why there are none."""
        self.settle(result)()

    def settle(self, result: Spool | Failure) -> Callable[[], None]:
        """Take the answer; the call that then tells those waiting.

        A batch settles all its messages before anyone is told, so code woken
        for one message finds the others of the batch loaded too.
        """
        waiters, self._waiters = self._waiters, []
        if isinstance(result, Failure):
            self._failure = result
        else:
            self._spool = result
            # What the client is told is what is sent: the octets' own size.
            self.size = result.size

        def tell() -> None:
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(self)

        return tell

    def open(self) -> BinaryIO:
        """The octets from position 0 (each call a new reader; see the module docstring)."""
        if self._spool is None:
            if _on_reactor_thread():
                raise OctetsNotLoaded("message octets not fetched from the backend")
            from twisted.internet import reactor

            threads.blockingCallFromThread(reactor, self.load)
        if self._spool is None:  # pragma: no cover - load() either sets it or raised
            raise MessageExpunged(f"message {self.uid} is gone")
        return self._spool.open()

    def entity(self) -> Entity:
        """The MIME structure of the octets (parsed once)."""
        if self._entity is None:
            with self.open() as fp:
                self._entity = parse_message(fp)
        return self._entity
