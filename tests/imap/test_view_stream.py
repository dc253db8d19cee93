"""Views streamed as they are encrypted (issue 9): back-pressure, slices, failures, sizes.

The stream's thread is real; the "reactor" here is the test thread running
what the stream hands it with ``call_from_thread`` (a queue), so each test
sees exactly what crosses between the two.
"""

from __future__ import annotations

import functools
import hashlib
import io
import queue
import threading
import time
from typing import Any, BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.python.failure import Failure

from tests.keys.certs import NOW
from tests.transcoders.smime_keys import SmimeIdentity, identity
from transcoder.cms import CmsSettings
from transcoder.imap.view_stream import (
    CHUNK,
    QUEUE_CHUNKS,
    StreamedViewFile,
    ViewEnded,
    ViewStream,
)
from transcoder.mime.entity import parse_message, parse_shape
from transcoder.transcoders.derivation import DerivedRandom, ViewIdentity
from transcoder.transcoders.interfaces import TranscodeRequest
from transcoder.transcoders.smime import SmimeTranscoder

HEADER = b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: streamed\r\n\r\n"


class Reactor:
    """Runs what the stream's thread hands over, on the test thread, when asked."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Any, tuple[Any, ...]]] = queue.Queue()

    def call_from_thread(self, f: Any, *args: Any) -> None:
        self.calls.put((f, args))

    def run_until(self, d: defer.Deferred[Any], timeout: float = 30) -> Any:
        """Run handed-over calls until ``d`` fires; its result (or raise its failure)."""
        out: list[Any] = []
        d.addBoth(out.append)
        deadline = time.monotonic() + timeout
        while not out:
            f, args = self.calls.get(timeout=max(0.01, deadline - time.monotonic()))
            f(*args)
        if isinstance(out[0], Failure):
            out[0].raiseException()
        return out[0]


class Pattern:
    """A deterministic "transcoder" writing ``size`` octets in 64 KiB writes; counts them."""

    def __init__(self, size: int, fail_after: int | None = None) -> None:
        self.size = size
        self.fail_after = fail_after
        self.written = 0

    def octets(self) -> bytes:
        block = hashlib.sha256(b"pattern").digest()
        return (block * (self.size // 32 + 1))[: self.size]

    def __call__(self, out: BinaryIO) -> int:
        data = self.octets()
        for start in range(0, self.size, 65536):
            if self.fail_after is not None and start >= self.fail_after:
                raise RuntimeError("encryption failed mid-stream")
            out.write(data[start : start + 65536])
            self.written = start + len(data[start : start + 65536])
        return self.size


def read_all(reactor: Reactor, reader: StreamedViewFile, start: int, end: int) -> bytes:
    """Read window ``start``..``end`` as FETCH does, piece by piece."""
    pieces, position = [], start
    while position < end:
        piece = reactor.run_until(reader.read_between(position, end))
        pieces.append(piece)
        position += len(piece)
    return b"".join(pieces)


def settle(predicate: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_reader_that_does_not_read_stops_the_encryptor() -> None:
    """No read: the thread hands over QUEUE_CHUNKS chunks, then waits; each read frees one more."""
    reactor, transcode = Reactor(), Pattern(CHUNK * 20)
    stream = ViewStream(transcode, reactor.call_from_thread).start()
    settle(lambda: reactor.calls.qsize() >= QUEUE_CHUNKS)
    time.sleep(0.3)
    assert reactor.calls.qsize() == QUEUE_CHUNKS
    assert transcode.written < CHUNK * (QUEUE_CHUNKS + 2)
    assert len(reactor.run_until(stream.read())) == CHUNK
    settle(lambda: reactor.calls.qsize() >= QUEUE_CHUNKS)
    time.sleep(0.2)
    assert reactor.calls.qsize() == QUEUE_CHUNKS  # three left, one more made
    stream.close()


def test_closing_early_cancels_the_encryption() -> None:
    """A slice near the start: the thread stops soon after, far from the end of the view."""
    reactor, transcode = Reactor(), Pattern(CHUNK * 40)
    reader = StreamedViewFile(
        b"", transcode.size, lambda: ViewStream(transcode, reactor.call_from_thread).start()
    )
    assert read_all(reactor, reader, 100, 1000) == transcode.octets()[100:1000]
    reader.close()
    time.sleep(1.0)
    assert transcode.written < CHUNK * (QUEUE_CHUNKS + 3)


def test_a_failure_mid_stream_reaches_the_reader_after_the_octets_made_before() -> None:
    """Encryption failing after 1 MiB: the reader gets those octets, then the error."""
    reactor, transcode = Reactor(), Pattern(CHUNK * 10, fail_after=4 * CHUNK)
    reader = StreamedViewFile(
        b"", transcode.size, lambda: ViewStream(transcode, reactor.call_from_thread).start()
    )
    got = read_all(reactor, reader, 0, 4 * CHUNK)
    assert got == transcode.octets()[: 4 * CHUNK]
    with pytest.raises(RuntimeError, match="mid-stream"):
        read_all(reactor, reader, 4 * CHUNK, transcode.size)


def test_a_view_shorter_than_predicted_is_an_error() -> None:
    """A prediction one octet too large: the reader fails instead of waiting or padding."""
    reactor, transcode = Reactor(), Pattern(CHUNK + 10)
    reader = StreamedViewFile(
        b"", transcode.size + 1, lambda: ViewStream(transcode, reactor.call_from_thread).start()
    )
    with pytest.raises(ViewEnded):
        read_all(reactor, reader, 0, transcode.size + 1)


def test_header_windows_need_no_encryption() -> None:
    """A window inside the predicted header is served from it; no stream is started."""
    started: list[int] = []

    def start() -> ViewStream:
        started.append(1)
        raise AssertionError("no stream for a header window")

    reader = StreamedViewFile(b"Header: x\r\n\r\n", 10_000, start)
    assert read_all(Reactor(), reader, 2, 9) == b"ader: x" and started == []


@functools.cache
def rsa_key() -> SmimeIdentity:
    return identity("rsa2048")


def request(message: bytes, who: SmimeIdentity) -> TranscodeRequest:
    """A request whose draws are derived, as the server derives them."""
    view = ViewIdentity(hashlib.sha256(message).digest(), (who.key.fingerprint,), "smime", "t")
    draws = DerivedRandom(bytes(32), view)
    return TranscodeRequest(io.BytesIO(message), len(message), (who.key,), NOW, draws)


@settings(max_examples=15, deadline=None)
@given(
    body_size=st.integers(min_value=0, max_value=3 * CHUNK),
    slice_size=st.integers(min_value=1000, max_value=CHUNK * 2),
    cipher=st.sampled_from(["aes256-cbc", "aes128-gcm"]),
)
def test_predicted_equals_streamed_equals_reassembled_slices(
    body_size: int, slice_size: int, cipher: str
) -> None:
    """predicted size == streamed view == slices each from a fresh stream == materialised view."""
    message = HEADER + (b"0123456789abcdef\r\n" * (body_size // 18 + 1))[:body_size]
    who, transcoder = rsa_key(), SmimeTranscoder(CmsSettings(cipher))
    header, size = transcoder.predicted_shape(request(message, who))
    materialised = io.BytesIO()
    transcoder.transcode(request(message, who), materialised)
    reactor = Reactor()

    def start() -> ViewStream:
        def transcode(out: BinaryIO) -> int:
            return transcoder.transcode(request(message, who), out).size

        return ViewStream(transcode, reactor.call_from_thread).start()

    whole = StreamedViewFile(header, size, start)
    streamed = read_all(reactor, whole, 0, size)
    whole.close()
    slices = []
    for offset in range(0, size, slice_size):
        reader = StreamedViewFile(header, size, start)
        slices.append(read_all(reactor, reader, offset, min(offset + slice_size, size)))
        reader.close()
    assert size == len(streamed) == len(materialised.getvalue())
    assert streamed == b"".join(slices) == materialised.getvalue()
    assert streamed.startswith(header)
    # The layout parses to the structure of the view itself, extents and line counts included.
    shape = transcoder.predicted_layout(request(message, who))
    assert (shape.prefix, shape.size, shape.suffix) == (header, size, b"")
    parsed = parse_shape(shape.prefix, shape.body_size, shape.body_lines, shape.suffix)
    assert parsed == parse_message(io.BytesIO(streamed))
    assert threading.active_count() < 50
