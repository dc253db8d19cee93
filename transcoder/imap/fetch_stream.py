"""Writing a FETCH's responses with back-pressure, sharing the reactor fairly.

Issue 8 item 6: twenty clients fetching 5,000 messages each, reading slowly,
took the server from 88 MB to over 260 MB, and another client waited ~5 s
for LOGIN+SELECT, because every response went straight to
``transport.write`` (whose buffer grows without bound when the peer reads
slowly) and a FETCH over cached views ran to its end in one reactor turn.

:class:`ResponseStream` is registered on the transport as a *streaming*
producer (``IPushProducer``) for the whole FETCH.  The transport pauses it
when its buffer is full -- Twisted's TCP transport above its ``bufferSize``
(64 KiB) -- and resumes it once the buffer has drained.  Under TLS,
``TLSMemoryBIOProtocol`` forwards the producer to the TCP transport below
it; its ``BufferingTLSTransport`` gathers up to 64,000 octets of small
writes first, so a TLS connection holds about twice as much.  The FETCH
loop checks before each piece of a response and each :data:`CHUNK` of a
large section, and waits while paused: what one connection buffers stays
near ``bufferSize`` plus one piece.  (A transport takes one producer at a
time, so large sections are chunked here rather than by a ``FileSender``.)

Fairness: :meth:`between_messages` gives the reactor back (a ``callLater(0)``
on the injected clock) after :data:`BURST` messages or :data:`SLICE` seconds
of work, whichever comes first, so other connections are served while a
FETCH over thousands of cached messages runs.  The first :data:`BURST`
messages go out at once, so a small FETCH answers in the same turn.
``benchmarks/fetch_burst.py`` replays the finding: the server's growth
during the burst went from ~280 MB to ~35 MB, the other client's
LOGIN+SELECT from 11-17 s to ~0.25 s on a busy 2-CPU machine.

A client that stops reading is not waited for forever: after
``stall_timeout`` seconds paused (the server passes its idle timeout) the
connection is aborted -- closing it gently would wait for the very buffer
the client does not drain.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()

#: Octets read from a message file and written per step of a large section.
#: 256 KiB: sending 100 MB over loopback took 0.11 s with 64 KiB and 0.08 s
#: with these (1 MiB was no faster).
CHUNK = 2**18
#: Messages answered before the reactor is given back (if no pause came first).
#: 16 and 2 ms: a probe's LOGIN+SELECT during the 20-client burst took
#: ~0.6 s with 64 and 5 ms, ~0.25 s with these; one client's FETCH of 5,000
#: messages took no longer.
BURST = 16
#: Seconds of FETCH work after which the reactor is given back.
SLICE = 0.002


class StreamStopped(Exception):
    """The transport stopped the producer: the connection is gone."""


@implementer(IPushProducer)
class ResponseStream:
    """The FETCH's writer: waits while the transport is full, yields between messages.

    Use :meth:`start` before the first write and :meth:`finish` after the
    last.  Writing after the connection was lost raises
    :class:`StreamStopped`, so the FETCH ends instead of reading on.
    """

    def __init__(
        self, transport: Any, clock: IReactorTime, stall_timeout: float | None = None
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._stall_timeout = stall_timeout
        self._stall: IDelayedCall | None = None
        self._registered = False
        self.paused = False
        self.stopped = False
        self._waiting: list[defer.Deferred[None]] = []
        self._messages = 0
        self._slice_start = 0.0

    # -- the transport's side (IPushProducer) ------------------------------------

    def pauseProducing(self) -> None:
        """The transport's buffer is full: write nothing until resumed."""
        self.paused = True
        if self._stall is None and self._stall_timeout is not None:
            self._stall = self._clock.callLater(self._stall_timeout, self._stalled)

    def resumeProducing(self) -> None:
        """The transport's buffer has drained: go on."""
        self.paused = False
        self._cancel_stall()
        # Waiting for the peer was time off the reactor: a fresh slice begins.
        self._messages = 0
        self._slice_start = self._clock.seconds()
        self._release(None)

    def stopProducing(self) -> None:
        """The connection is gone: end the FETCH."""
        self.stopped = True
        self._registered = False
        self._cancel_stall()
        self._release(StreamStopped("connection lost during FETCH"))

    def _stalled(self) -> None:
        self._stall = None
        log.info(
            "Client read nothing for {seconds:.0f} s during FETCH: connection aborted",
            seconds=self._stall_timeout,
        )
        self._transport.abortConnection()
        self.stopProducing()

    def _cancel_stall(self) -> None:
        if self._stall is not None:
            if self._stall.active():
                self._stall.cancel()
            self._stall = None

    def _release(self, error: Exception | None) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if error is None:
                d.callback(None)
            else:
                d.errback(error)

    # -- the FETCH's side ----------------------------------------------------------

    def start(self) -> None:
        """Register on the transport (one FETCH at a time holds it)."""
        self._slice_start = self._clock.seconds()
        self._transport.registerProducer(self, True)
        self._registered = True

    def finish(self) -> None:
        """Unregister from the transport; a waiting :meth:`ready` fails."""
        self._cancel_stall()
        if self._registered:
            self._registered = False
            self._transport.unregisterProducer()
        self._release(StreamStopped("FETCH ended"))

    def ready(self) -> defer.Deferred[None]:
        """Fires when more may be written: now, or once the transport resumes us."""
        if self.stopped:
            return defer.fail(StreamStopped("connection lost during FETCH"))
        if not self.paused:
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(waiting)
        return waiting

    def between_messages(self) -> defer.Deferred[None]:
        """After one message's response: :meth:`ready`, on a later reactor turn now and then."""
        self._messages += 1
        now = self._clock.seconds()
        if self._messages < BURST and now - self._slice_start < SLICE:
            return self.ready()
        self._messages = 0
        later = task.deferLater(self._clock, 0, lambda: None)
        return later.addCallback(self._next_slice)

    def _next_slice(self, _: object) -> defer.Deferred[None]:
        self._slice_start = self._clock.seconds()
        return self.ready()

    def write(self, data: bytes) -> None:
        """Write ``data`` now (the caller waited for :meth:`ready`)."""
        if self.stopped:
            raise StreamStopped("connection lost during FETCH")
        self._transport.write(data)

    @defer.inlineCallbacks
    def write_window(self, fp: BinaryIO, start: int, end: int) -> Any:
        """Write octets ``start``..``end`` of ``fp`` in :data:`CHUNK` steps, pausing as told."""
        position = start
        while position < end:
            yield self.ready()
            fp.seek(position)
            data = fp.read(min(CHUNK, end - position))
            if not data:
                raise OSError("message file is shorter than its structure")
            self.write(data)
            position += len(data)

    @defer.inlineCallbacks
    def write_streamed(self, source: Any, start: int, end: int) -> Any:
        """Write octets ``start``..``end`` of a view being made, as they come, pausing as told.

        ``source.read_between(position, end)`` fires with the next octets
        (:class:`~transcoder.imap.view_stream.StreamedViewFile`); nothing is
        asked of it while the transport is full, which stops the encryptor.
        """
        position = start
        while position < end:
            yield self.ready()
            piece = yield source.read_between(position, end)
            self.write(piece)
            position += len(piece)

    def abort(self, why: str) -> None:
        """Drop the connection: a response was cut short and cannot be completed.

        A literal whose length went out must be followed by exactly that many
        octets; when they cannot be made (the encryption failed mid-stream),
        closing is the only honest answer -- padding would corrupt the view,
        and plaintext would break fail-closed (docs/design.md invariant 3).
        """
        log.error("FETCH response cut short, connection dropped: {why}", why=why)
        if not self.stopped:
            self._transport.abortConnection()
            self.stopProducing()
