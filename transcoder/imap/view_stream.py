"""A view sent as it is encrypted: a worker thread hands chunks to the reactor (issue 9).

A deterministic view's size and structure are known before it is encrypted
(:func:`~transcoder.transcoders.interfaces.predicted_layout`: S/MIME's
header, PGP/MIME's whole multipart but the armored text),
so the first FETCH of a large one need not wait for the whole view: the
literal's length goes out at once and the octets follow as the encryptor
makes them.

* **One thread per stream** runs the transcoder (:class:`ViewStream`).  It
  waits on its client, so it must not hold a thread of the transcoding
  pool other FETCHes need; their number is bounded by the connections.
* **Back-pressure.** The thread hands the reactor chunks of :data:`CHUNK`
  octets through ``callFromThread``, after taking one of
  :data:`QUEUE_CHUNKS` slots; the reactor gives a slot back when the FETCH
  takes the chunk to write it -- which it does only while the transport
  accepts more (:class:`~transcoder.imap.fetch_stream.ResponseStream`).  So a
  slow client stops the encryptor with at most ``QUEUE_CHUNKS * CHUNK``
  octets buffered.
* **Only what is needed.** A FETCH of a slice ``<o.n>`` reads the view up to
  ``o + n`` and drops what precedes ``o`` (CBC must encrypt from the start);
  then the stream is cancelled -- or, when the view is to be cached
  (``keep``), it is detached: the thread finishes the view into the cache
  file alone, since a client fetching slices comes back for the next one.
* **Failures** reach the reader as an errback after the chunks made before
  them; the FETCH, which has already sent the literal's length, then drops
  the connection (:mod:`transcoder.imap.fetch`): never padding, never
  plaintext.

:class:`StreamedView` is what FETCH serves: the predicted size and
structure, and :meth:`StreamedView.open` giving a :class:`StreamedViewFile`
that FETCH reads window by window (:meth:`StreamedViewFile.read_between`).
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from transcoder.imap.view import TranscodedView
from transcoder.mime.entity import Entity, parse_shape
from transcoder.store.interfaces import IParsedMessage
from transcoder.transcoders.interfaces import ViewShape

log = Logger()

#: Octets handed from the thread to the reactor at a time.  1 MiB: a cold
#: 100 MB FETCH took 0.64-0.72 s with these, 0.76-0.88 s with 256 KiB chunks
#: (fewer hand-overs between the encrypting thread and the reactor).
CHUNK = 1024 * 1024
#: Chunks made and not yet taken by the FETCH, at most: the encryptor waits beyond.
QUEUE_CHUNKS = 4
#: Seconds between checks for a cancellation while the thread waits for a slot.
_POLL = 0.5

Transcode = Callable[[BinaryIO], int]


class StreamCancelled(Exception):
    """The FETCH no longer wants the view: the thread stops encrypting."""


class ViewEnded(OSError):
    """The view ended before the octets its predicted size promised."""


class ViewStream:
    """One transcoding in its own thread, read chunk by chunk on the reactor thread.

    ``call_from_thread`` is the reactor's ``callFromThread``.  With ``keep``
    the view is also written to ``keep`` (through a temporary name) and, once
    whole, :attr:`kept` fires with its :class:`TranscodedView`; without it,
    :attr:`kept` fires with None.
    """

    def __init__(
        self,
        transcode: Transcode,
        call_from_thread: Callable[..., Any],
        keep: Path | None = None,
    ) -> None:
        self._transcode = transcode
        self._call = call_from_thread
        self._keep = keep
        self._slots = threading.Semaphore(QUEUE_CHUNKS)
        self._chunks: collections.deque[bytes] = collections.deque()
        self._waiter: defer.Deferred[bytes] | None = None
        self._outcome: Any = None  # the size, or a Failure, once the thread is done
        self._finished = False
        self.cancelled = False
        self.detached = False
        self.kept: defer.Deferred[TranscodedView | None] = defer.Deferred()
        self.size: defer.Deferred[int] = defer.Deferred()
        #: Called when the stream is detached (it then makes the view alone, unthrottled).
        self.on_detach: Callable[[], None] | None = None

    def start(self) -> ViewStream:
        """Start the thread; returns self."""
        threading.Thread(target=self._run, name="view-stream", daemon=True).start()
        return self

    # -- the reactor's side ------------------------------------------------------------

    def read(self) -> defer.Deferred[bytes]:
        """The next chunk; ``b""`` once the view is complete; an errback if it failed."""
        if self._chunks:
            self._slots.release()
            return defer.succeed(self._chunks.popleft())
        if self._finished:
            if isinstance(self._outcome, Failure):
                return defer.fail(self._outcome)
            return defer.succeed(b"")
        assert self._waiter is None, "one read at a time"
        self._waiter = defer.Deferred()
        return self._waiter

    def close(self) -> None:
        """The reader is done: cancel the thread, or (keeping the view) let it finish alone."""
        if self._finished:
            return
        if self._keep is not None:
            self.detached = True
            if self.on_detach is not None:
                self.on_detach()
        else:
            self.cancelled = True
        self._chunks.clear()
        for _ in range(QUEUE_CHUNKS):
            self._slots.release()  # a thread waiting for a slot sees the change at once

    def _arrived(self, chunk: bytes) -> None:
        if self.cancelled or self.detached:
            return
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._slots.release()
            waiter.callback(chunk)
        else:
            self._chunks.append(chunk)

    def _done(self, outcome: Any, kept: TranscodedView | None) -> None:
        self._finished = True
        self._outcome = outcome
        failed = isinstance(outcome, Failure)
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            if failed:
                waiter.errback(outcome)
            else:
                waiter.callback(b"")
        if failed:
            self.size.errback(outcome)
        else:
            self.size.callback(outcome)
        if failed and self._keep is not None and not outcome.check(StreamCancelled):
            self.kept.errback(outcome)
        else:
            self.kept.callback(kept)

    # -- the thread's side ---------------------------------------------------------------

    def _run(self) -> None:
        tmp = (
            None
            if self._keep is None
            else self._keep.with_name(
                f"{self._keep.name}.{os.getpid()}.{threading.get_ident()}.tmp"
            )
        )
        kept: TranscodedView | None = None
        try:
            if tmp is not None:
                tmp.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                with open(tmp, "wb") as copy:
                    size = _ChunkWriter(self, copy).run(self._transcode)
                assert self._keep is not None
                os.replace(tmp, self._keep)  # not synced: a recomputable view (.view)
                kept = TranscodedView(self._keep, size)
            else:
                size = _ChunkWriter(self, None).run(self._transcode)
            outcome: Any = size
        except BaseException:
            outcome = Failure()
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        self._call(self._done, outcome, kept)

    def _hand_over(self, chunk: bytes) -> None:
        """Give ``chunk`` to the reactor once a slot is free (thread); raise if cancelled."""
        while not self._slots.acquire(timeout=_POLL):
            if self.cancelled:
                break
        if self.cancelled:
            raise StreamCancelled("the FETCH no longer wants the view")
        if self.detached:
            return
        self._call(self._arrived, chunk)


class _ChunkWriter:
    """The file the transcoder writes to, in the stream's thread: chunks for the reactor."""

    def __init__(self, stream: ViewStream, copy: BinaryIO | None) -> None:
        self._stream = stream
        self._copy = copy
        self._buffer = bytearray()

    def run(self, transcode: Transcode) -> int:
        """``transcode(self)``, then hand over the last octets; the view's size."""
        size = transcode(self)  # type: ignore[arg-type]
        if self._buffer and not self._stream.detached:
            self._stream._hand_over(bytes(self._buffer))
        return size

    def write(self, data: Any) -> int:
        """Take ``data``; hand a chunk over whenever :data:`CHUNK` octets are gathered."""
        if self._copy is not None:
            self._copy.write(data)
        stream = self._stream
        if stream.cancelled:
            raise StreamCancelled("the FETCH no longer wants the view")
        if stream.detached:
            return len(data)
        if not self._buffer and len(data) >= CHUNK:
            # The encoder writes whole chunks of lines: one copy (its buffer is reused).
            stream._hand_over(bytes(data))
            return len(data)
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            stream._hand_over(chunk)
        return len(data)


def stream_starter(call_from_thread: Callable[..., Any]) -> Callable[..., ViewStream]:
    """``start(transcode, keep) -> ViewStream``, started: the ``streams`` of a ViewCache."""

    def start(transcode: Transcode, keep: Path | None) -> ViewStream:
        return ViewStream(transcode, call_from_thread, keep).start()

    return start


class StreamedViewFile:
    """A view being made, read forward window by window by one FETCH (reactor thread).

    ``start()`` starts a :class:`ViewStream` of the view from octet 0.  A
    window before what was read already starts it again (the view is
    deterministic); octets inside ``header`` are served from it, no
    encryption needed.
    """

    def __init__(self, header: bytes, size: int, start: Callable[[], ViewStream]) -> None:
        self._header = header
        self._size = size
        self._start = start
        self._stream: ViewStream | None = None
        self._position = 0  # octet index of self._pending[0] in the view
        self._pending = memoryview(b"")

    def read_between(self, start: int, end: int) -> defer.Deferred[bytes]:
        """The view's octets from ``start`` on, at least one and none at or past ``end``.

        The caller reads a window ``start``..``end`` by calling again from
        where the last piece ended.  Errback :class:`ViewEnded` if the view
        is shorter (or longer) than predicted.
        """
        if end <= len(self._header):
            return defer.succeed(self._header[start:end])
        return self._read_stream(start, end)

    @defer.inlineCallbacks
    def _read_stream(self, start: int, end: int) -> Any:
        if self._stream is None or start < self._position:
            self._restart()
        stream = self._stream
        assert stream is not None
        while True:
            if not self._pending:
                chunk = yield stream.read()
                if not chunk:
                    raise ViewEnded(f"view ended at {self._position} of {self._size} octets")
                self._pending = memoryview(chunk)
            if self._position < start:
                skip = min(start - self._position, len(self._pending))
                self._pending = self._pending[skip:]
                self._position += skip
                continue
            take = min(len(self._pending), end - self._position)
            if take == len(self._pending) and take == len(self._pending.obj):  # type: ignore[arg-type]
                piece = self._pending.obj  # a whole chunk as handed over: no copy
            else:
                piece = bytes(self._pending[:take])
            self._pending = self._pending[take:]
            self._position += take
            if self._position == self._size:
                made = yield stream.size  # the whole view: it must be exactly as predicted
                if made != self._size:
                    raise ViewEnded(f"view of {made} octets, {self._size} predicted")
            return piece

    def _restart(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream = self._start()
        self._stream.size.addErrback(lambda _: None)  # read() reports failures
        self._position = 0
        self._pending = memoryview(b"")

    def close(self) -> None:
        """The FETCH is done with the view: stop (or detach) its transcoding."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


@implementer(IParsedMessage)
class StreamedView:
    """A deterministic view served while it is encrypted: predicted size and structure.

    ``shape`` is the transcoder's prediction
    (:class:`~transcoder.transcoders.interfaces.ViewShape`); ``entity`` its
    parsed structure when the caller has it already.
    """

    #: The structure is made from the headers at once (FETCH needs no thread to parse it).
    structure_known = True

    def __init__(
        self, shape: ViewShape, start: Callable[[], ViewStream], entity: Entity | None = None
    ) -> None:
        self.size = shape.size
        self._header = shape.prefix
        self._start = start
        if entity is None:
            entity = parse_shape(shape.prefix, shape.body_size, shape.body_lines, shape.suffix)
        self._entity = entity

    def open(self) -> StreamedViewFile:
        """A reader of the view (nothing is encrypted until it reads past the prefix)."""
        return StreamedViewFile(self._header, self.size, self._start)

    def entity(self) -> Entity:
        """The view's MIME structure, as it will be, with every part's extent."""
        return self._entity
