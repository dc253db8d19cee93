"""A policy-OFF FETCH answered by relaying the backend's own responses as they arrive (issue 11).

For a user no transcoding policy applies to, the front must answer a FETCH
exactly as the backend does (issue 11: "a policy-OFF user fetching
``BODY[]`` through the front gets the backend's octets").  Rather than
loading each message into a spool and serving it through the IMAP layer's
FETCH writer, the front sends the client's FETCH on to the backend once
(one ``UID FETCH`` for the whole set) and hands each ``* n FETCH``
response to the client as it arrives: its lines with the sequence number
translated into the client's, its literals' octets as they come, never
parsed nor spooled.  A 100 MB ``BODY[]`` costs the front a few reads'
worth of memory (the backend connection stops being read while the
client's transport is full: :class:`FlowControl`), and 1,000 small
messages one round trip.

When it applies (:func:`relay_plan`): the selected mailbox is a backend
mailbox and every item is one of RFC 3501's (the backend's answer to each
is the front's; newer items such as ``BINARY`` take the IMAP layer's path).
The backend is always asked by UID (the client's snapshot resolves its set):
the client's sequence numbers need not be the backend's, and each relayed
response's number is the client's for that UID.  For a FETCH by sequence
number that did not ask for UID, the UID the backend adds is left out.  The server asks
:meth:`~transcoder.imap.transcoding.TranscodingMixin.fetch_selection` first:
only when no policy applies is the FETCH relayed; a selection, or a
keystore that cannot be read, takes the IMAP layer's path (views, fail
closed).

What is relayed: the backend's ``* n FETCH`` responses for the messages
asked for.  Everything else it sends meanwhile (EXISTS, EXPUNGE, FETCH
responses of other messages) goes to the mailbox's mirror as before and
reaches the client at the next poll (RFC 3501 section 7.4.1).  Flags in a
relayed response (``\\Seen`` set by a non-PEEK ``BODY[]``) update the
mirror too, the client having just been told.  The tagged answer is the
front's: ``OK``, ``NO [EXPUNGEISSUED]`` when some message was gone (as on
the IMAP layer's path, RFC 2180 section 4.1.2), or the backend's NO.
A backend lost in the middle of a relayed literal leaves no honest way to
complete the response: the client connection is aborted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.mail import imap4
from zope.interface import implementer

from transcoder.backend.connection import BackendProtocol, CommandResult
from transcoder.backend.fetch_data import fetch_items, flag_list
from transcoder.backend.response_syntax import (
    ResponseSyntaxError,
    Spool,
    format_uid_set,
    parse_response,
)
from transcoder.imap.fetch import named_count
from transcoder.imap.fetch_syntax import FetchItem

log = Logger()

#: FETCH items (RFC 3501 section 6.4.5) whose backend answer the front relays as it is.
RELAYED_ITEMS = frozenset(
    {
        "UID",
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        "ENVELOPE",
        "BODYSTRUCTURE",
        "BODY",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.TEXT",
    }
)
#: The client's transport pauses the backend beyond this many octets buffered (Twisted's
#: default, 64 KiB, is less than one backend read: every read would pause and resume).
CLIENT_BUFFER = 2**20
#: Relayed octets are written to the client when this many are gathered (or at each read's end).
WRITE_SIZE = 64 * 1024
_LITERAL_AT_END = re.compile(rb"\{(\d{1,19})\}\Z")
#: The UID a UID FETCH answer starts with (Dovecot and others put it first), with its space.
_ADDED_UID = re.compile(rb"FETCH \(UID \d+ ", re.IGNORECASE)


def item_wire(item: FetchItem) -> bytes:
    """``item`` as sent in a FETCH command (``BODY.PEEK[1.MIME]<0.100>``, ``FLAGS``)."""
    if item.section is None:
        return item.name.encode("ascii")
    out = b"BODY.PEEK[" if item.peek else b"BODY["
    out += item.section.label() + b"]"
    if item.partial is not None:
        out += b"<%d.%d>" % item.partial
    return out


@dataclass(frozen=True)
class RelayPlan:
    """What to ask of the backend: the command, and the client's numbers of the UIDs asked for."""

    command: bytes
    #: UID -> the client's sequence number, for each message asked for.
    wanted: dict[int, int]
    #: Messages named that the backend had expunged already (the FETCH ends NO then).
    missing: bool
    #: A FETCH by sequence number without UID: the UID the backend adds is left out.
    strip_uid: bool = False


def relay_plan(
    mailbox: Any, messages: imap4.MessageSet, items: Sequence[FetchItem], uid: bool
) -> RelayPlan | None:
    """The relayed FETCH for ``messages`` and ``items``; None when it cannot be relayed.

    See the module docstring for when it can.  A FETCH naming no message of
    the snapshot is left to the IMAP layer too (its answer is already cheap).
    """
    if not items or any(item.name not in RELAYED_ITEMS for item in items):
        return None
    wanted = mailbox.resolve_present(messages, uid)
    if not wanted:
        return None
    missing = len(wanted) < named_count(mailbox, messages, uid)
    listed = b"(" + b" ".join(item_wire(item) for item in items) + b")"
    command = b"UID FETCH " + format_uid_set([u for _, u in wanted]) + b" " + listed
    strip = not uid and not any(item.name == "UID" for item in items)
    return RelayPlan(command, {u: s for s, u in wanted}, missing, strip)


class FetchRelay:
    """Hands the backend's FETCH responses for a plan's messages to the client (a ``Relay``).

    ``write`` takes the octets for the client.  :attr:`relayed` counts the
    messages answered; :attr:`broken` is set once a response was cut short.
    """

    def __init__(self, mailbox: Any, plan: RelayPlan, write: Callable[[bytes], None]) -> None:
        self._mailbox = mailbox
        self._wanted = plan.wanted
        self._strip_uid = plan.strip_uid
        self._write = write
        self._out: list[bytes] = []
        self._pending = 0
        self._uid = 0
        self._text: list[bytes] = []
        #: The UIDs whose response was relayed.
        self.answered: set[int] = set()

    # -- the reader's side (ResponseRelay) ---------------------------------------------

    def begin(self, line: bytes) -> bool:
        """Take ``* n FETCH ...`` of a message asked for; its number becomes the client's."""
        number, _, rest = line[2:].partition(b" ")
        if rest[:5].upper() != b"FETCH" or not number.isdigit():
            return False
        uid = self._mailbox.uid_at(int(number))
        seq = self._wanted.get(uid) if uid is not None else None
        if seq is None:
            return False
        self._uid = uid
        self.answered.add(uid)
        self._text = [line]
        if self._strip_uid:
            added = _ADDED_UID.match(rest)
            if added is not None:
                rest = b"FETCH (" + rest[added.end() :]
        self._put(b"* %d " % seq + rest + b"\r\n")
        return True

    def line(self, line: bytes) -> None:
        """A line after a literal."""
        self._text.append(line)
        self._put(line + b"\r\n")

    def octets(self, data: bytes) -> None:
        """A literal's octets, as they came: large ones written at once, small ones gathered."""
        if len(data) >= WRITE_SIZE:
            self.flush()
            self._write(data)
            return
        self._put(data)

    def end(self) -> None:
        """The response is complete: flags it carried reach the mirror (the client knows them)."""
        if any(b"FLAGS" in line.upper() for line in self._text):
            flags = _flags_of(self._text)
            if flags is not None:
                self._mailbox.relayed_flags(self._uid, flags)
        self._text = []

    def flush(self) -> None:
        """Write what was gathered."""
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._pending = 0
            self._write(data)

    def _put(self, data: bytes) -> None:
        self._out.append(data)
        self._pending += len(data)
        if self._pending >= WRITE_SIZE:
            self.flush()


def _flags_of(lines: list[bytes]) -> tuple[str, ...] | None:
    """The FLAGS item of a response's text lines (literals left empty), or None."""
    pieces: list[bytes | Spool] = []
    for line in lines:
        match = _LITERAL_AT_END.search(line)
        if match is None:
            pieces.append(line)
        else:
            pieces += [line[: match.start()], Spool()]
    try:
        response: Any = parse_response(pieces)
    except ResponseSyntaxError:  # the client got it as it was; the mirror learns at a poll
        return None
    items = fetch_items(response)
    return flag_list(items[b"FLAGS"]) if b"FLAGS" in items else None


@implementer(IPushProducer)
class FlowControl:
    """Pauses reading the backend while the client's transport is full (a streaming producer).

    Registered on the client's transport for the relayed FETCH.  A client
    that reads nothing for ``stall_timeout`` seconds is aborted, as the IMAP
    layer's FETCH writer does (:mod:`transcoder.imap.fetch_stream`).
    """

    def __init__(
        self, connection: BackendProtocol, client: Any, clock: Any, stall_timeout: float | None
    ) -> None:
        self._connection = connection
        self._client = client
        self._clock = clock
        self._stall_timeout = stall_timeout
        self._stall: IDelayedCall | None = None
        self.paused = False
        self.stopped = False
        self._registered = False
        self._saved_size: Any = None
        self._tcp: Any = None

    def start(self) -> None:
        """Register on the client's transport (plain TCP: a larger buffer before pausing)."""
        self._tcp = _socket_transport(self._client)
        if self._tcp is not None:
            self._saved_size = self._tcp.bufferSize
            self._tcp.bufferSize = CLIENT_BUFFER
        self._client.registerProducer(self, True)
        self._registered = True

    def finish(self) -> None:
        """Unregister; the backend is read again if it was paused."""
        self._cancel_stall()
        if self._registered:
            self._registered = False
            self._client.unregisterProducer()
        if self._tcp is not None:
            self._tcp.bufferSize = self._saved_size
        if self.paused:
            self.paused = False
            self._connection.resume_reading()

    def pauseProducing(self) -> None:
        """The client's transport is full: stop reading the backend."""
        if self.paused or self.stopped:
            return
        self.paused = True
        self._connection.pause_reading()
        if self._stall_timeout is not None:
            self._stall = self._clock.callLater(self._stall_timeout, self._stalled)

    def resumeProducing(self) -> None:
        """The client drained: read the backend again."""
        self._cancel_stall()
        if self.paused:
            self.paused = False
            self._connection.resume_reading()

    def stopProducing(self) -> None:
        """The client is gone."""
        self.stopped = True
        self._registered = False
        self.resumeProducing()

    def _stalled(self) -> None:
        self._stall = None
        log.info("Client read nothing for {s:.0f} s during FETCH: aborted", s=self._stall_timeout)
        self._client.abortConnection()

    def _cancel_stall(self) -> None:
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None


def _socket_transport(transport: Any) -> Any:
    """The socket's own transport under wrappers (connection limits, TLS), or None."""
    for _ in range(4):
        if isinstance(transport, FileDescriptor):
            return transport
        transport = transport.__dict__.get("transport") if hasattr(transport, "__dict__") else None
    return None


def relay_fetch(
    server: Any, mailbox: Any, plan: RelayPlan, stall_timeout: float | None
) -> defer.Deferred[bool]:
    """Send the plan's FETCH and relay its responses; fires True if some message was gone.

    Errbacks with the backend's refusal or loss.  If the backend went away
    in the middle of a relayed response, the client connection is aborted
    (a literal announced cannot be completed) and ``server._backend_gone``
    is set, so no ``BYE`` is written into the cut response.
    """
    connection: BackendProtocol = mailbox.connection
    transport = server.transport
    flow = FlowControl(connection, transport, server.clock, stall_timeout)

    def write(data: bytes) -> None:
        if not flow.stopped:  # the client is gone: the rest is dropped
            transport.write(data)

    relay = FetchRelay(mailbox, plan, write)
    flow.start()
    d = connection.command(plan.command, relay=relay)

    def answered(result: CommandResult) -> bool:
        relay.flush()
        return plan.missing or len(relay.answered) < len(plan.wanted)

    def cut(failure: Any) -> Any:
        if connection.relaying:
            server._backend_gone = True
            log.error("backend lost in the middle of a relayed FETCH: client connection aborted")
            transport.abortConnection()
        else:
            relay.flush()  # complete responses: the client may have them
        return failure

    def done(result: Any) -> Any:
        flow.finish()
        return result

    d.addCallbacks(answered, cut)
    d.addBoth(done)
    return d
