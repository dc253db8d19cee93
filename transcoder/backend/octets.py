"""Loading messages' octets from the backend, several per request (issue 11).

:class:`OctetsMixin` is the part of :class:`~transcoder.backend.mailbox.BackendMailbox`
that answers :meth:`~transcoder.backend.message.BackendMessage.load`: one
``UID FETCH set (UID BODY.PEEK[])`` brings the message asked for and the small
ones after it in the same FETCH, each literal streamed into its spool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure

from transcoder.backend.connection import CommandResult
from transcoder.backend.fetch_data import fetch_items
from transcoder.backend.response_syntax import Spool, String, format_uid_set

if TYPE_CHECKING:
    from transcoder.backend.message import BackendMessage

#: At most this many messages' octets are fetched in one request (``request_octets``).
READAHEAD_MESSAGES = 64
#: ... and at most this many octets, by their RFC822.SIZE (a larger message alone).
READAHEAD_OCTETS = 1024 * 1024
#: Batches asked for at once by one :meth:`OctetsMixin.request_octets` (the first included).
PIPELINED_BATCHES = 4


class OctetsMixin:
    """Message octets for :class:`~transcoder.backend.mailbox.BackendMailbox`."""

    # The mailbox's (declared for the type checker only).
    connection: Any
    _readahead: list[BackendMessage]
    _readahead_index: dict[int, int]

    def request_octets(self, message: BackendMessage) -> None:
        """Fetch ``message``'s octets, with those of the messages after it in the same FETCH.

        One ``UID FETCH set (UID BODY.PEEK[])`` (``PEEK``: ``\\Seen`` is the
        IMAP layer's to set) carries the message and the next ones of the
        last :meth:`fetch` not yet asked for, up to :data:`READAHEAD_OCTETS`
        (by their RFC822.SIZE) and :data:`READAHEAD_MESSAGES`: a FETCH of many
        small messages costs few round trips, a large one is fetched alone.
        The next :data:`PIPELINED_BATCHES` - 1 batches are asked for at once
        too (pipelined, RFC 3501 section 5.5): the backend sends them while
        the client is served the first, so no round trip is waited for
        between batches.  What is fetched ahead is bounded by the batches'
        sizes, so memory stays constant whatever the FETCH's set.
        """
        position = self._readahead_index.get(message.uid)
        followers = self._readahead[position + 1 :] if position is not None else []
        candidates = (m for m in followers if not (m.requested or m.loaded))
        batches: list[list[BackendMessage]] = []
        batch, total = [message], message.size
        for follower in candidates:
            if len(batch) >= READAHEAD_MESSAGES or total + follower.size > READAHEAD_OCTETS:
                batches.append(batch)
                batch, total = [], 0
                if len(batches) == PIPELINED_BATCHES:
                    break
            batch.append(follower)
            total += follower.size
        if batch:
            batches.append(batch)
        for each in batches:
            self._send_octets_request(each)

    def _send_octets_request(self, batch: list[BackendMessage]) -> None:
        for m in batch:
            m.requested = True
        uid_set = format_uid_set([m.uid for m in batch])
        d = self.connection.command(b"UID FETCH " + uid_set + b" (UID BODY.PEEK[])")
        d.addCallbacks(self._deliver, self._deliver_failure, (batch,), None, (batch,))

    def _deliver(self, result: CommandResult, batch: list[BackendMessage]) -> None:
        from transcoder.store.message import MessageExpunged

        spools: dict[int, Spool] = {}
        for response in result.data(b"FETCH"):
            items = fetch_items(response)
            token = items.get(b"UID")
            body = items.get(b"BODY[]")
            if not (isinstance(token, bytes) and token.isdigit()) or body is None:
                continue
            if isinstance(body, Spool):
                spools[int(token)] = body
            else:
                spool = Spool()
                if isinstance(body, String):
                    spool.write(body.value)
                spool.finish()
                spools[int(token)] = spool
        tell = []
        for message in batch:
            octets = spools.get(message.uid)
            if octets is None:
                gone = MessageExpunged(f"message {message.uid} is gone from the backend")
                tell.append(message.settle(Failure(gone)))
            else:
                tell.append(message.settle(octets))
        for call in tell:
            call()

    def _deliver_failure(self, failure: Failure, batch: list[BackendMessage]) -> None:
        for call in [message.settle(failure) for message in batch]:
            call()
