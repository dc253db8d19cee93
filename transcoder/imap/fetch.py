"""FETCH (RFC 3501 section 6.4.5) served from an overridable message view.

Twisted's FETCH sends a whole part for a partial ``BODY[]<o.n>`` request,
never sets ``\\Seen``, sizes BODYSTRUCTURE from the whole message and lowercases
parameter values.  This module replaces its FETCH with one that

* parses its arguments with :mod:`.fetch_syntax` (Twisted's parser answers
  malformed items with a server error): any malformed item or message set
  is ``BAD [CLIENTBUG]``;
* works from the message's bytes and its MIME offsets
  (:mod:`transcoder.mime`, :mod:`transcoder.imap.sections`), streaming every
  literal from the file;
* writes through a :class:`~.fetch_stream.ResponseStream`: a producer that
  waits while the transport's buffer is full and gives the reactor back
  every few messages, so neither the message size nor the number of
  messages makes memory grow, and other connections are served meanwhile;
* obtains the message it serves through one seam, :meth:`FetchMixin.fetch_view`:
  later layers return a transcoded view there, while COPY, SEARCH and STORE
  keep using the stored message (docs/design.md, invariant 4);
* refuses a message whose view cannot be built with a tagged NO before a byte
  of that message is written (docs/design.md, invariant 3: fail closed);
* serves ``BINARY[...]``, ``BINARY.PEEK[...]`` and ``BINARY.SIZE[...]``
  (RFC 3516, capability ``BINARY``) from the same view, transfer-decoded by
  :mod:`.fetch_binary` before the response is built (so ``NO
  [UNKNOWN-CTE]`` comes before ``\\Seen`` is set or a byte is written),
  as a ``literal8`` (``~{n}``) when the decoded octets hold a NUL.
"""

from __future__ import annotations

import bisect
import datetime
import email.utils
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.mail import imap4
from zope.interface import implementer

from transcoder.errors import ClientError, ServerError, TranscoderError
from transcoder.imap import fetch_binary
from transcoder.imap.fetch_binary import BinaryContent, prepare_binaries
from transcoder.imap.fetch_stream import ResponseStream, StreamStopped
from transcoder.imap.fetch_syntax import FetchItem, parse_fetch_items, parse_sequence_set
from transcoder.imap.sections import Section, resolve_section
from transcoder.imap.structure import body_structure, envelope
from transcoder.mime.entity import Entity, parse_message
from transcoder.store.interfaces import IParsedMessage

log = Logger()

#: Sections up to this size are read and written in one go; larger ones are
#: written in chunks, paced by the transport's buffer.
INLINE_LIMIT = 64 * 1024
#: How many messages' views a FETCH asks for ahead of the one it writes.
PREFETCH = 8
#: Items answered from the stored message alone, without its view.
_NO_VIEW = frozenset({"UID", "FLAGS", "INTERNALDATE"})
#: Messages larger than this are parsed in a worker thread.
THREAD_PARSE_LIMIT = 1024 * 1024

_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
#: Items that set \Seen besides non-PEEK body sections (RFC 3501 section 6.4.5).
_SETS_SEEN = ("RFC822", "RFC822.TEXT")
#: Items that send octets of the message (not only its size or structure).
_CONTENT = ("RFC822", "RFC822.HEADER", "RFC822.TEXT")
#: Items that need the view's MIME structure.
_STRUCTURE = ("ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.HEADER", "RFC822.TEXT")


class ExpungeIssued(ClientError):
    """Some of the requested messages no longer exist."""

    code = "EXPUNGEISSUED"


@implementer(IParsedMessage)
class SpooledMessage:
    """An :class:`IParsedMessage` over bytes spooled from any Twisted IMessage.

    Lets FETCH serve messages of a hoster's own store that implement only
    Twisted's MIME-object interface (no ``IMessageFile``).
    """

    def __init__(self, spool: BinaryIO, size: int) -> None:
        self._spool = spool
        self.size = size
        self._entity: Entity | None = None

    def open(self) -> BinaryIO:
        """The spooled bytes, positioned at 0."""
        self._spool.seek(0)
        return self._spool

    def entity(self) -> Entity:
        """The parsed MIME tree (cached)."""
        if self._entity is None:
            self._entity = parse_message(self.open())
        return self._entity


def sequence_set_argument(line: bytes | None) -> tuple[imap4.MessageSet, bytes]:
    """``(MessageSet, rest)`` for the ``sequence-set`` up to the next space of ``line``.

    Linear in the size of the set (merged once); Twisted's ``arg_seqset`` is
    quadratic.  FETCH, STORE, COPY, MOVE and UID EXPUNGE parse theirs here.
    """
    raw, _, rest = (line or b"").partition(b" ")
    return imap4.MessageSet(list(parse_sequence_set(raw))), rest


def as_parsed_message(message: Any, scheduler: Any = None) -> defer.Deferred[Any]:
    """``message`` as an :class:`IParsedMessage`, spooling it if it has no file.

    ``scheduler`` paces Twisted's MessageProducer for a message that only has
    Twisted's MIME-object interface (the server's ``_scheduler``).
    """
    parsed = IParsedMessage(message, None)
    if parsed is not None:
        return defer.succeed(parsed)
    # The spool backs the returned view and outlives this function.
    spool = tempfile.SpooledTemporaryFile(max_size=INLINE_LIMIT)  # noqa: SIM115
    file_message = imap4.IMessageFile(message, None)
    if file_message is not None:
        src = file_message.open()
        for chunk in iter(lambda: src.read(2**16), b""):
            spool.write(chunk)
        return defer.succeed(SpooledMessage(spool, spool.tell()))
    producer = imap4.MessageProducer(message, spool, scheduler)
    d = producer.beginProducing(None)
    return d.addCallback(lambda _: SpooledMessage(spool, spool.tell()))


def internal_date(message: Any) -> bytes:
    """INTERNALDATE as RFC 3501 ``date-time``: ``" 7-Feb-2024 10:00:00 +0100"`` quoted."""
    when = getattr(message, "internal_date", None)
    if not isinstance(when, datetime.datetime):
        when = email.utils.parsedate_to_datetime(message.getInternalDate())
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    offset = when.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    zone = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    text = f"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} {when:%H:%M:%S} {zone}"
    return b'"' + text.encode("ascii") + b'"'


def format_flags(flags: Any) -> bytes:
    """A parenthesised flag list."""
    return b"(" + b" ".join(f.encode("utf-8") if isinstance(f, str) else f for f in flags) + b")"


def _section_of(item: FetchItem, entity: Entity) -> Section:
    """Where the section of ``BODY[...]`` item ``item`` lies in the view ``entity``."""
    spec = item.section
    assert spec is not None
    return resolve_section(entity, spec.part, spec.text, spec.fields)


class ResponsePieces:
    """The pieces of one response (``* n FETCH (...)``, ``* n CONVERTED (...)``): bytes
    and file windows, written in order by :meth:`FetchMixin.write_response`."""

    def __init__(self, fp: BinaryIO | None) -> None:
        self.fp = fp
        self.pieces: list[bytes | tuple[int, int] | tuple[int, int, Any]] = []

    def atom(self, data: bytes) -> None:
        self.pieces.append(data)

    def binary(self, name: bytes, content: BinaryContent, partial: tuple[int, int] | None) -> None:
        """``name {n}`` or, when the content holds a NUL, ``name ~{n}`` (RFC 3516 section 4.3)."""
        start, end = content.window(partial)
        mark = b" ~{%d}\r\n" if content.has_nul else b" {%d}\r\n"
        self.pieces.append(name + mark % (end - start))
        if end > start:
            self.pieces.append((start, end, content.fp))

    def literal(self, name: bytes, section: Section, partial: tuple[int, int] | None) -> None:
        """``name {n}\\r\\n<octets>``, the octets being ``section`` or its partial slice."""
        if section.data is not None:
            data = section.data
            if partial is not None:
                data = data[partial[0] : partial[0] + partial[1]]
            self.pieces.append(name + b" {%d}\r\n" % len(data) + data)
            return
        start, end = section.start, section.end
        if partial is not None:
            start, end = min(start + partial[0], end), min(start + partial[0] + partial[1], end)
        self.pieces.append(name + b" {%d}\r\n" % (end - start))
        self.pieces.append((start, end))


class FetchMixin:
    """FETCH and UID FETCH for TranscodingIMAP4Server."""

    # Twisted's attributes this mixin reads (declared for the type checker only).
    mbox: Any
    transport: Any

    def fetch_view(self, message: Any, content: bool = True) -> defer.Deferred[Any]:
        """The message whose content FETCH serves for ``message``: the seam.

        Returns a Deferred firing with an :class:`IParsedMessage`.  The stored
        message itself by default; a transcoding server returns the encrypted
        view.  With ``content`` false the FETCH only needs the view's size and
        structure, so ``open()`` may be unavailable on what is returned.
        Errback with a :class:`~transcoder.errors.ClientError` to refuse the
        FETCH (its response code reaches the client).
        """
        return self.stored_message(message)

    def stored_message(self, message: Any) -> defer.Deferred[Any]:
        """``message`` as stored, as an :class:`IParsedMessage` (spooled if it has no file)."""
        return as_parsed_message(message, getattr(self, "_scheduler", None))

    def capabilities(self) -> dict[bytes, Any]:
        """Add BINARY (RFC 3516 section 4.1: FETCH BINARY items, APPEND of a literal8)."""
        caps: dict[bytes, Any] = super().capabilities()  # type: ignore[misc]
        caps[b"BINARY"] = None
        return caps

    # -- arguments (RFC 3501 section 9, parsed by .fetch_syntax) --------------------

    def arg_sequence_set(self, line: bytes | None) -> tuple[imap4.MessageSet, bytes]:
        """``sequence-set`` up to the next space (:func:`sequence_set_argument`)."""
        return sequence_set_argument(line)

    def arg_fetch_items(self, line: bytes | None) -> tuple[tuple[FetchItem, ...], bytes]:
        """The FETCH items: the rest of the line."""
        return parse_fetch_items(line or b""), b""

    # -- the command ---------------------------------------------------------------

    def do_FETCH(
        self, tag: bytes, messages: imap4.MessageSet, items: tuple[FetchItem, ...], uid: int = 0
    ) -> None:
        """Answer FETCH / UID FETCH (later commands wait for its answer: .command_order)."""
        self_: Any = self

        def served(stream: ResponseStream) -> defer.Deferred[bool]:
            d = defer.maybeDeferred(self_.mbox.fetch, messages, uid=uid)
            return d.addCallback(self._fetch_found, messages, items, bool(uid), stream)

        def done(vanished: bool) -> None:
            if vanished:
                self_.send_error(tag, ExpungeIssued())
            else:
                self_.sendPositiveResponse(tag, b"FETCH completed")

        self.respond_streamed(tag, b"FETCH", served, done)

    def respond_streamed(
        self,
        tag: bytes,
        command: bytes,
        serve: Callable[[ResponseStream], defer.Deferred[Any]],
        done: Callable[[Any], None],
    ) -> None:
        """Run ``serve`` with a :class:`ResponseStream` on the transport, then ``done`` with
        its result (the tagged answer).  The idle timer is off meanwhile; a client gone
        mid-response ends the command quietly; anything unexpected is ``NO [SERVERBUG]``,
        logged."""
        self_: Any = self
        saved_timeout = self_.setTimeout(None)
        stream = ResponseStream(self.transport, self_.clock, self_.POSTAUTH_TIMEOUT)
        stream.start()
        d = defer.maybeDeferred(serve, stream)
        name = command.decode("ascii")

        def settle(result: object) -> object:
            # Before the answer: the next command may start as soon as it is sent.
            stream.finish()
            if not stream.stopped:  # a lost connection keeps no idle timer
                self_.setTimeout(saved_timeout)
            return result

        def failed(failure: Any) -> None:
            error = failure.value
            if isinstance(error, StreamStopped):
                log.info(
                    "{command} {tag} ended: {why}",
                    command=name,
                    tag=tag.decode("ascii", "replace"),
                    why=error,
                )
                return
            if not isinstance(error, TranscoderError):
                log.failure(f"{name} failed", failure)
                error = ServerError(f"{name} failed")
            self_.send_error(tag, error)

        d.addBoth(settle)
        d.addCallbacks(done, failed)

    select_FETCH = (do_FETCH, arg_sequence_set, arg_fetch_items)

    def _fetch_found(
        self,
        found: Any,
        messages: imap4.MessageSet,
        items: tuple[FetchItem, ...],
        uid: bool,
        stream: ResponseStream,
    ) -> defer.Deferred[bool]:
        """Serve what the mailbox found; True if some named message had vanished.

        A message this session still knows but another session expunged
        before the FETCH began is not found: the others are served and the
        FETCH ends ``NO [EXPUNGEISSUED]``, exactly as for one expunged
        during the FETCH (RFC 2180 section 4.1.2; RFC 3501 section 7.4.1
        forbids telling the client of the EXPUNGE now).
        """
        found = list(found)
        missing = len(found) < named_count(self.mbox, messages, uid)
        d = self._fetch_all(found, items, uid, stream)
        return d.addCallback(lambda vanished: bool(vanished or missing))

    @defer.inlineCallbacks
    def _fetch_all(
        self,
        found: list[tuple[int, Any]],
        query: tuple[FetchItem, ...],
        uid: bool,
        stream: ResponseStream,
    ) -> Any:
        """Write one FETCH response per message; True if some message had vanished."""
        items = list(query)
        if uid and not any(i.name == "UID" for i in items):
            items.insert(0, _UID_ITEM)  # RFC 3501 section 6.4.8
        content = any(_needs_content(i) for i in items)
        views = _ViewWindow(self, found, content, any(i.name not in _NO_VIEW for i in items))
        vanished = False
        try:
            for seq, message in found:
                # The view first: a FETCH refused for want of it (fail closed) has
                # not sent the message, so it must not set \Seen either.
                view = yield views.next()
                spools: list[BinaryIO] = []
                fp = None
                try:
                    try:
                        fp = view.open() if content else None
                        entity = yield self._structure(view, items)
                        # BINARY's decoding may refuse the FETCH: before \Seen is set.
                        binaries = yield prepare_binaries(view, fp, entity, items, spools)
                        flags = yield self._mark_seen(message, items)
                        response = self._build_response(
                            seq, message, view, fp, items, flags, entity, binaries
                        )
                    except FileNotFoundError:
                        vanished = True  # expunged by another session, file already gone
                        continue
                    yield self.write_response(response, stream)
                finally:
                    for spool in spools:
                        spool.close()
                    if fp is not None:
                        fp.close()
                yield stream.between_messages()
        finally:
            views.abandon()
        return vanished

    def _mark_seen(self, message: Any, items: list[FetchItem]) -> defer.Deferred[Any]:
        """Set \\Seen when a non-PEEK body item is fetched (RFC 3501 section 6.4.5).

        Fires with the new flags when they changed, else ``None``.
        """
        mbox: Any = self.mbox
        wants_seen = any(
            i.name in _SETS_SEEN
            or (i.section is not None and not i.peek and i.name != "BINARY.SIZE")
            for i in items
        )
        flags = list(message.getFlags())
        if not wants_seen or "\\Seen" in flags or not mbox.isWriteable():
            return defer.succeed(None)
        uid_set = imap4.MessageSet(message.getUID(), message.getUID())
        d = defer.maybeDeferred(mbox.store, uid_set, ["\\Seen"], 1, uid=True)
        return d.addCallback(lambda result: next(iter(result.values()), [*flags, "\\Seen"]))

    def _structure(self, view: Any, items: list[FetchItem]) -> defer.Deferred[Entity | None]:
        """The view's MIME tree when an item needs it, else ``None``."""
        if any(_needs_structure(i) for i in items):
            return _parse(view)
        return defer.succeed(None)

    def _build_response(
        self,
        seq: int,
        message: Any,
        view: Any,
        fp: BinaryIO | None,
        items: list[FetchItem],
        new_flags: Any,
        entity: Entity | None,
        binaries: dict[tuple[int, ...], BinaryContent],
    ) -> ResponsePieces:
        response = ResponsePieces(fp)
        response.atom(b"* %d FETCH (" % seq)
        for n, item in enumerate(items):
            if n:
                response.atom(b" ")
            if item.name in ("BINARY", "BINARY.SIZE") and item.section is not None:
                content = binaries[item.section.part]
                if item.binary:
                    response.binary(item.label(), content, item.partial)
                else:
                    response.atom(item.label() + b" %d" % content.size)
                continue
            self._add_item(response, item, message, view, entity, new_flags)
        if new_flags is not None and not any(i.name == "FLAGS" for i in items):
            response.atom(b" FLAGS " + format_flags(new_flags))
        response.atom(b")\r\n")
        return response

    def _add_item(
        self,
        response: ResponsePieces,
        item: FetchItem,
        message: Any,
        view: Any,
        entity: Any,
        flags: Any,
    ) -> None:
        name = item.name
        if item.section is not None:
            whole = not item.section.part and item.section.text is None
            section = Section(start=0, end=view.size) if whole else _section_of(item, entity)
            response.literal(item.label(), section, item.partial)
        elif name == "UID":
            response.atom(b"UID %d" % message.getUID())
        elif name == "FLAGS":
            current = flags if flags is not None else message.getFlags()
            response.atom(b"FLAGS " + format_flags(current))
        elif name == "INTERNALDATE":
            response.atom(b"INTERNALDATE " + internal_date(message))
        elif name == "RFC822.SIZE":
            response.atom(b"RFC822.SIZE %d" % view.size)
        elif name == "ENVELOPE":
            response.atom(b"ENVELOPE " + envelope(entity))
        elif name == "BODYSTRUCTURE":
            response.atom(b"BODYSTRUCTURE " + body_structure(entity, True))
        elif name == "BODY":
            response.atom(b"BODY " + body_structure(entity, False))
        elif name == "RFC822":
            response.literal(b"RFC822", Section(start=0, end=view.size), None)
        elif name == "RFC822.HEADER":
            response.literal(b"RFC822.HEADER", resolve_section(entity, (), "HEADER"), None)
        else:  # RFC822.TEXT, the last item parse_fetch_items knows
            response.literal(b"RFC822.TEXT", resolve_section(entity, (), "TEXT"), None)

    @defer.inlineCallbacks
    def write_response(self, response: ResponsePieces, stream: ResponseStream) -> Any:
        """Write the pieces in order; large file windows in chunks, waiting while paused.

        Once a response has begun it cannot be answered with a tagged NO:
        any failure while writing it (a view whose encryption fails
        mid-stream, a file cut short) drops the connection instead.
        """
        try:
            for piece in response.pieces:
                if stream.paused:
                    yield stream.ready()
                if isinstance(piece, bytes):
                    stream.write(piece)
                    continue
                start, end = piece[0], piece[1]
                fp: Any = response.fp if len(piece) == 2 else piece[2]
                assert fp is not None  # content items always open the view
                if hasattr(fp, "read_between"):  # a view sent as it is encrypted
                    yield stream.write_streamed(fp, start, end)
                elif end - start <= INLINE_LIMIT:
                    fp.seek(start)
                    stream.write(fp.read(end - start))
                else:
                    yield stream.write_window(fp, start, end)
        except StreamStopped:
            raise
        except Exception as e:
            stream.abort(f"{type(e).__name__}: {e}")
            raise StreamStopped("response cut short") from e


class _SessionUids(Sequence[int]):
    """The UIDs of a mailbox session's messages, by position (sorted: RFC 3501 section 2.3.1.1)."""

    def __init__(self, mbox: Any) -> None:
        self._mbox = mbox
        self._count = mbox.getMessageCount()

    def __len__(self) -> int:
        return int(self._count)

    def __getitem__(self, index: Any) -> Any:
        return self._mbox.getUID(index + 1)


def named_count(mbox: Any, messages: imap4.MessageSet, uid: bool) -> int:
    """How many messages of the session's snapshot ``messages`` names (``*`` is the last).

    Sequence numbers are counted directly; UIDs by binary search over the
    session's UIDs, so a large set costs a few lookups per range.
    """
    count = mbox.getMessageCount()
    if not count:
        return 0
    uids = _SessionUids(mbox) if uid else None
    last = uids[count - 1] if uids is not None else count
    spans = []
    for low, high in messages.ranges:
        a = last if low is None else int(low)
        b = last if high is None else int(high)
        if uids is not None:  # UIDs to positions (1-based, inclusive)
            a, b = min(a, b), max(a, b)
            a, b = bisect.bisect_left(uids, a) + 1, bisect.bisect_right(uids, b)
        else:
            a, b = max(min(a, b), 1), min(max(a, b), count)
        if a <= b:
            spans.append((a, b))
    total, reach = 0, 0
    for a, b in sorted(spans):
        a = max(a, reach + 1)
        if a <= b:
            total += b - a + 1
            reach = b
    return total


class _ViewWindow:
    """The views of a FETCH's messages, requested up to :data:`PREFETCH` ahead.

    Transcoding runs in worker threads; asking for the next views while the
    current one is written keeps those threads (and the CPUs) busy.  Views
    are handed out in message order.
    """

    def __init__(self, server: Any, found: list[tuple[int, Any]], content: bool, wanted: bool):
        self._server = server
        self._messages = iter(found) if wanted else iter(())
        self._content = content
        self._pending: deque[defer.Deferred[Any]] = deque()
        for _ in range(PREFETCH):
            self._request_one()

    def _request_one(self) -> None:
        for _, message in self._messages:
            self._pending.append(self._server.fetch_view(message, self._content))
            return

    def next(self) -> defer.Deferred[Any]:
        """The next message's view (``None`` when the items need no view)."""
        if not self._pending:
            return defer.succeed(None)
        view = self._pending.popleft()
        self._request_one()
        return view

    def abandon(self) -> None:
        """The FETCH ended early: views still coming are not wanted (nor their errors)."""
        for pending in self._pending:
            pending.addErrback(lambda _: None)
        self._pending.clear()


#: The UID item UID FETCH adds when the client did not ask for it (RFC 3501 6.4.8).
_UID_ITEM = FetchItem("UID")


def _needs_content(item: FetchItem) -> bool:
    """Whether ``item`` sends octets of the message (not only its size or structure)."""
    if item.name in ("BINARY", "BINARY.SIZE"):
        return fetch_binary.needs_content(item)
    return item.name in _CONTENT or item.section is not None


def _needs_structure(item: FetchItem) -> bool:
    """Whether ``item`` needs the view's MIME tree (all but ``BODY[]`` of the whole message)."""
    if item.name in ("BINARY", "BINARY.SIZE"):
        return fetch_binary.needs_structure(item)
    if item.section is not None:
        return bool(item.section.part) or item.section.text is not None
    return item.name in _STRUCTURE


def _parse(view: Any) -> defer.Deferred[Entity]:
    """The view's MIME tree; parsed off the reactor thread when the message is large
    (a predicted view's tree was made from its headers: no thread needed)."""
    if view.size > THREAD_PARSE_LIMIT and not getattr(view, "structure_known", False):
        return threads.deferToThread(view.entity)
    return defer.succeed(view.entity())
