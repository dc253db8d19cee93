"""A FETCH burst neither piles up memory nor starves other connections (issue 8 item 6).

Twenty clients fetching 5,000 messages each while reading slowly took the
server from 88 MB to over 260 MB, and another client's LOGIN+SELECT waited
~5 s: responses went straight into the transport's unbounded buffer and a
FETCH over cached views ran in one reactor turn.  Now the FETCH is a
streaming producer on its transport: it stops writing while the transport
says its buffer is full (plain or TLS), gives the reactor back every few
messages, and aborts a connection whose client stopped reading altogether.
Figures: ``benchmarks/fetch_burst.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import defer, protocol, ssl
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineOnlyReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory

from tests.imap.harness import Session, make_session
from tests.security.test_fetch_syntax import captured_log, loud
from transcoder.imap.fetch_stream import BURST, CHUNK
from transcoder.imap.server import TranscodingIMAP4Factory, TranscodingIMAP4Server
from transcoder.service import tls_context
from transcoder.store import MaildirStore

ADDRESS = "alice@example.org"


def message(index: int, size: int = 2000) -> bytes:
    """A ``size``-octet message, distinct per ``index``."""
    head = b"Subject: message %d\r\n\r\n" % index
    return head + (b"%06d " % index) * ((size - len(head)) // 7) + b"\r\n"


def drop(store: MaildirStore, messages: list[bytes]) -> None:
    """Messages into INBOX's ``new/`` as an MDA drops them (no fsync: test data)."""
    path = store.account(ADDRESS).mailbox_path("INBOX")
    for data in messages:
        name = store.names.next()
        (path / "tmp" / name).write_bytes(data)
        os.rename(path / "tmp" / name, path / "new" / name)


class TurnClock(Clock):
    """A Clock whose :meth:`turn` runs only the calls already due, as one reactor iteration does.

    (``Clock.advance(0)`` also runs the ``callLater(0)`` calls those calls make.)
    """

    def turn(self) -> None:
        """Run the calls due now, not those they schedule."""
        for call in [c for c in self.calls if c.getTime() <= self.seconds()]:
            if call in self.calls:  # not cancelled by an earlier one
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class SlowReader(StringTransport):
    """A transport whose peer reads only when the test says so.

    Like Twisted's TCP transport above its ``bufferSize``, it pauses its
    streaming producer once more than ``limit`` octets wait; :meth:`drain`
    hands them over (the peer read them) and resumes the producer.
    """

    def __init__(self, limit: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = limit
        self.producer_paused = False
        self.most_waiting = 0
        self.pauses = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        waiting = len(self.value())
        self.most_waiting = max(self.most_waiting, waiting)
        if self.producer is not None and self.streaming and waiting > self.limit:
            if not self.producer_paused:
                self.pauses += 1
            self.producer_paused = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """What waits, read by the peer; the producer may go on."""
        data = self.value()
        self.clear()
        if self.producer is not None and (self.producer_paused or not self.streaming):
            self.producer_paused = False
            self.producer.resumeProducing()
        return data


def slow_session(tmp_path: Path, limit: int, messages: list[bytes]) -> tuple[Session, SlowReader]:
    """A selected session whose transport is a :class:`SlowReader`."""
    session = make_session(tmp_path)
    session.clock = session.server.clock = TurnClock()
    transport = SlowReader(limit, peerAddress=IPv4Address("TCP", "192.0.2.10", 40000))
    session.server.transport = transport
    session.transport = transport
    drop(session.store, messages)
    _, done = session.command(b"SELECT INBOX")
    assert b" OK " in done, done
    return session, transport


def read_until(session: Session, transport: SlowReader, tag: bytes, limit: int = 10_000) -> bytes:
    """Drain the transport and turn the clock until ``tag``'s answer; all output."""
    out = b""
    for _ in range(limit):
        chunk = transport.drain()
        out += chunk
        if re.search(rb"\n" + tag + rb" (OK|NO|BAD)", out[-len(chunk) - 64 :]):
            return out
        session.clock.advance(0)
    raise AssertionError(f"no answer for {tag!r}")


def literals(out: bytes) -> list[bytes]:
    """Every literal's octets, in order."""
    found = []
    for match in re.finditer(rb"\{(\d+)\}\r\n", out):
        found.append(out[match.end() : match.end() + int(match.group(1))])
    return found


def test_fetch_stops_writing_while_the_transport_is_full(tmp_path: Path) -> None:
    """FETCH of 300 messages writes no more than the buffer limit plus one piece until drained."""
    mail = [message(i) for i in range(300)]
    session, transport = slow_session(tmp_path, 16 * 1024, mail)
    session.send(b"f FETCH 1:* (UID BODY.PEEK[])\r\n")
    assert transport.producer_paused
    assert len(transport.value()) <= 16 * 1024 + 2100, len(transport.value())
    assert b"f OK" not in transport.value()
    out = read_until(session, transport, b"f")
    assert literals(out) == mail
    assert transport.most_waiting <= 16 * 1024 + 2100, transport.most_waiting
    assert transport.pauses > 30
    assert transport.producer is None  # unregistered at the end


def test_large_section_written_in_chunks_while_paused(tmp_path: Path) -> None:
    """A 3 MB body goes out a chunk at a time, each after the transport drained; byte-exact."""
    body = b"".join(b"%07d abcdefghijklmnopqrstuvwxyz\r\n" % i for i in range(90_000))
    big = b"Subject: big\r\n\r\n" + body
    session, transport = slow_session(tmp_path, 64 * 1024, [big])
    session.send(b"f FETCH 1 (BODY.PEEK[])\r\n")
    assert len(transport.value()) <= 64 * 1024 + CHUNK + 200
    out = read_until(session, transport, b"f")
    assert literals(out) == [big]
    assert transport.most_waiting <= 64 * 1024 + CHUNK + 200, transport.most_waiting
    assert transport.pauses >= len(body) // CHUNK


def test_reader_that_never_reads_is_aborted_after_the_idle_timeout(tmp_path: Path) -> None:
    """A client that stops reading mid-FETCH loses the connection after the post-login timeout."""
    session, transport = slow_session(tmp_path, 16 * 1024, [message(i) for i in range(100)])
    with captured_log() as events:
        session.send(b"f FETCH 1:* (BODY.PEEK[])\r\n")
        timeout = session.server.POSTAUTH_TIMEOUT
        session.clock.advance(timeout - 1)
        assert not transport.disconnected
        session.clock.advance(2)
    assert transport.disconnected
    assert loud(events) == [], events
    assert session.server.blocked is None  # the FETCH ended, nothing waits for it
    assert session.clock.getDelayedCalls() == []


def test_connection_lost_mid_fetch_ends_it_quietly(tmp_path: Path) -> None:
    """stopProducing from a closing transport ends the FETCH quietly and leaves no timer behind."""
    session, transport = slow_session(tmp_path, 16 * 1024, [message(i) for i in range(100)])
    with captured_log() as events:
        session.send(b"f FETCH 1:* (BODY.PEEK[])\r\n")
        producer = transport.producer
        assert producer is not None
        producer.stopProducing()
        session.clock.advance(0)
    assert loud(events) == [], events
    assert session.server.blocked is None
    assert b"f OK" not in transport.value()
    assert session.clock.getDelayedCalls() == []  # no idle timer kept for a dead connection


def test_long_fetch_gives_the_reactor_back_every_burst(tmp_path: Path) -> None:
    """FETCH over many cached messages answers at most BURST of them per reactor turn."""
    session, transport = slow_session(tmp_path, 2**30, [message(i, 200) for i in range(5 * BURST)])
    session.send(b"f FETCH 1:* (FLAGS)\r\n")
    out = transport.drain()
    per_turn = [out.count(b" FETCH (")]
    for _ in range(100):
        if re.search(rb"(?m)^f OK", out):
            break
        session.server.clock.turn()
        chunk = transport.drain()
        per_turn.append(chunk.count(b" FETCH ("))
        out += chunk
    assert sum(per_turn) == 5 * BURST
    assert max(per_turn) <= BURST, per_turn
    assert len(per_turn) >= 5


def test_commands_pipelined_behind_a_paused_fetch_wait_for_it(tmp_path: Path) -> None:
    """RFC 3501 section 5.5: a NOOP sent while FETCH is paused is answered after FETCH's OK."""
    session, transport = slow_session(tmp_path, 4096, [message(i) for i in range(50)])
    session.send(b"f FETCH 1:* (BODY.PEEK[])\r\nn NOOP\r\n")
    assert b"n OK" not in transport.value()
    out = read_until(session, transport, b"n")
    assert out.index(b"\r\nf OK") < out.index(b"\r\nn OK")
    assert len(literals(out)) == 50


# -- TLS: TLSMemoryBIOProtocol forwards the producer to the transport below ---------


class _Collector(protocol.Protocol):
    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class _Prepared(protocol.ServerFactory):
    """A factory that hands out one prepared protocol."""

    def __init__(self, proto: protocol.Protocol) -> None:
        self.proto = proto

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return self.proto


def test_backpressure_through_tls(tmp_path: Path) -> None:
    """Under TLS, FETCH pauses when the TCP-level buffer is full and completes byte-exact."""
    clock = TurnClock()
    server = TranscodingIMAP4Server(clock=clock)
    store = MaildirStore(tmp_path / "mail", clock=clock, run_blocking=defer.maybeDeferred)
    server_options = tls_context({"tls-cert": None}, tmp_path)  # the server's own context
    tls_server = TLSMemoryBIOFactory(
        server_options, False, _Prepared(server), clock=clock
    ).buildProtocol(None)
    wire = SlowReader(16 * 1024, peerAddress=IPv4Address("TCP", "192.0.2.10", 40000))
    tls_server.makeConnection(wire)
    server.account = store.account(ADDRESS)
    server.state = "auth"
    mail = [message(i) for i in range(400)]
    drop(store, mail)
    client = _Collector()
    client_options = ssl.CertificateOptions(verify=False)
    tls_client = TLSMemoryBIOFactory(
        client_options, True, _Prepared(client), clock=clock
    ).buildProtocol(None)
    client_wire = StringTransport()
    tls_client.makeConnection(client_wire)

    def pump(drain: bool = True) -> None:
        for _ in range(20):
            clock.turn()  # BufferingTLSTransport flushes on the next turn
            sent = client_wire.value()
            client_wire.clear()
            if sent:
                tls_server.dataReceived(sent)
            got = wire.drain() if drain else b""
            if got:
                tls_client.dataReceived(got)
            if not sent and not got:
                return

    pump()
    client.transport.write(b"s SELECT INBOX\r\n")
    pump()
    assert b"s OK" in client.received, client.received
    client.transport.write(b"f FETCH 1:* (BODY.PEEK[])\r\n")
    pump(drain=False)
    assert wire.producer_paused
    # BufferingTLSTransport gathers up to 64,000 octets of small writes before
    # they reach the TCP level: that, one response and the TLS overhead wait.
    assert wire.most_waiting <= 64_000 + 16 * 1024 + 4096, wire.most_waiting
    for _ in range(1000):
        if b"\r\nf OK" in client.received:
            break
        pump()
    assert literals(client.received.split(b"s OK", 1)[1]) == mail
    assert wire.pauses > 10


# -- fairness on the real reactor -----------------------------------------------------


class _Client(LineOnlyReceiver):
    """Collects lines; fires a Deferred when a line starts with an awaited prefix."""

    MAX_LENGTH = 2**20

    def __init__(self) -> None:
        self.waiting: dict[bytes, defer.Deferred[None]] = {}

    def lineReceived(self, line: bytes) -> None:
        for prefix in list(self.waiting):
            if line.startswith(prefix):
                self.waiting.pop(prefix).callback(None)

    def wait_for(self, prefix: bytes) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self.waiting[prefix] = d
        return d

    async def command(self, tag: bytes, line: bytes) -> None:
        done = self.wait_for(tag + b" OK")
        self.sendLine(tag + b" " + line)
        await done


@pytest_twisted.ensureDeferred
async def test_noop_of_another_connection_answered_during_a_long_fetch(tmp_path: Path) -> None:
    """Real reactor: another connection's NOOP is answered before a 3,000-message FETCH ends."""
    from twisted.internet import endpoints, reactor

    store = MaildirStore(tmp_path / "mail", clock=reactor, run_blocking=defer.maybeDeferred)
    drop(store, [message(i, 1000) for i in range(3000)])
    answered: list[bytes] = []

    class Recording(TranscodingIMAP4Server):
        def connectionMade(self) -> None:
            super().connectionMade()
            self.account = store.account(ADDRESS)
            self.state = "auth"

        def _respond(self, state: bytes, tag: bytes | None, message: bytes | None) -> None:
            super()._respond(state, tag, message)
            if tag is not None:
                answered.append(tag)

    factory = TranscodingIMAP4Factory(portal=None)
    factory.protocol = Recording
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    where = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    fetcher, other = [await endpoints.connectProtocol(where, _Client()) for _ in range(2)]
    try:
        await fetcher.command(b"s1", b"SELECT INBOX")
        await other.command(b"s2", b"SELECT INBOX")
        started = fetcher.wait_for(b"* 1 FETCH")
        fetched = fetcher.wait_for(b"f OK")
        fetcher.sendLine(b"f FETCH 1:* (UID BODY.PEEK[])")
        await started
        await other.command(b"n", b"NOOP")
        await fetched
    finally:
        for client in (fetcher, other):
            client.transport.loseConnection()
        await port.stopListening()
    assert answered.index(b"n") < answered.index(b"f"), answered
