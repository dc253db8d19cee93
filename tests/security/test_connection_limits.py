"""Resource exhaustion by connections: limits in total and per address, login deadline, idling.

Found by an attack run (issue 8, item 7): 200 slowloris connections and 1,000
idle ones were all kept.  Now connections beyond ``--max-connections`` (in
total) or ``--max-connections-per-address`` get ``* BYE [UNAVAILABLE] Too
many connections`` and are closed; a client that has not logged in
``--login-deadline`` seconds after connecting is closed however busy it keeps
(the idle timer restarts with every line or literal chunk, so a slowloris
could otherwise stay for ever); idle timeouts are 60 s before login and 30
minutes after (RFC 3501 section 5.4).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from tests.imap.harness import Session
from tests.integration.conftest import RunningServer, free_port
from tests.security.guessing_support import CHECK_TIME, PASSWORD, Site, peer_address, run_clock
from tests.security.proxied_server import proxy_v1, proxy_v2
from transcoder.imap.connection_limits import TOO_MANY, ConnectionLimitFactory
from transcoder.imap.proxy_protocol import ProxiedFactory
from transcoder.imap.settings import ServerSettings

A, B = "203.0.113.5", "198.51.100.7"


class Connection:
    """A connection to a (wrapped) factory over a StringTransport."""

    def __init__(self, factory: Any, host: str) -> None:
        address = peer_address(host)
        self.transport = StringTransport(peerAddress=address)
        directlyProvides(self.transport, ISSLTransport)
        self.protocol = factory.buildProtocol(address)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        """Send octets; what the server wrote since the last look."""
        self.protocol.dataReceived(data)
        return self.output()

    def output(self) -> bytes:
        """What the server wrote since the last look."""
        out = self.transport.value()
        self.transport.clear()
        return out

    def hang_up(self) -> None:
        """The connection closes, as the reactor reports it."""
        self.protocol.connectionLost(Failure(ConnectionDone()))


def limited(tmp_path: Path, total: int, per_address: int) -> tuple[Site, ConnectionLimitFactory]:
    """The IMAP factory behind a ConnectionLimitFactory, as the service wraps it."""
    site = Site(tmp_path)
    return site, ConnectionLimitFactory(site.factory, total, per_address)


# -- limits, protocol level --------------------------------------------------------------


def test_connection_over_the_per_address_limit_gets_bye(tmp_path: Path) -> None:
    """The third connection from an address (limit 2) gets BYE [UNAVAILABLE] and is closed."""
    _, factory = limited(tmp_path, total=100, per_address=2)
    first, second = Connection(factory, A), Connection(factory, A)
    assert first.output().startswith(b"* OK [CAPABILITY ")
    assert second.output().startswith(b"* OK [CAPABILITY ")
    third = Connection(factory, A)
    assert third.output() == TOO_MANY == b"* BYE [UNAVAILABLE] Too many connections\r\n"
    assert third.transport.disconnecting
    third.hang_up()
    assert first.send(b"a NOOP\r\n").startswith(b"a OK")  # the others work on
    assert Connection(factory, B).output().startswith(b"* OK ")  # other addresses too


def test_a_closed_connection_frees_its_place(tmp_path: Path) -> None:
    """When a connection from an address at its limit ends, a new one is served."""
    _, factory = limited(tmp_path, total=100, per_address=1)
    first = Connection(factory, A)
    assert Connection(factory, A).output() == TOO_MANY
    first.hang_up()
    assert Connection(factory, A).output().startswith(b"* OK ")
    assert factory.total == 1


def test_total_limit(tmp_path: Path) -> None:
    """Beyond max_total connections, whatever their addresses, BYE [UNAVAILABLE]."""
    _, factory = limited(tmp_path, total=3, per_address=3)
    served = [Connection(factory, f"192.0.2.{i}") for i in range(3)]
    assert all(c.output().startswith(b"* OK ") for c in served)
    assert Connection(factory, "192.0.2.99").output() == TOO_MANY


def test_an_ipv6_64_counts_as_one_address(tmp_path: Path) -> None:
    """Addresses of one IPv6 /64 share the per-address limit; another /64 does not."""
    _, factory = limited(tmp_path, total=100, per_address=2)
    Connection(factory, "2001:db8:1:2::1"), Connection(factory, "2001:db8:1:2:ffff::9")
    assert Connection(factory, "2001:db8:1:2::77").output() == TOO_MANY
    assert Connection(factory, "2001:db8:1:3::1").output().startswith(b"* OK ")


@pytest.mark.parametrize("header", [proxy_v1, proxy_v2], ids=["v1", "v2"])
def test_per_address_limit_counts_the_proxied_client(tmp_path: Path, header: Any) -> None:
    """Behind a PROXY header the client's address counts, not the balancer's."""
    site, factory = limited(tmp_path, total=100, per_address=2)
    front = ProxiedFactory(factory, site.clock)
    conns = [Connection(front, "127.0.0.1") for _ in range(4)]
    answers = [c.send(header(h)) for c, h in zip(conns, [A, A, B, A], strict=True)]
    assert [a.startswith(b"* OK ") for a in answers] == [True, True, True, False]
    assert answers[3] == TOO_MANY


# -- the login deadline and idle timeouts, protocol level -------------------------------


def test_slowloris_literal_is_closed_at_the_login_deadline(tmp_path: Path) -> None:
    """A client dribbling a LOGIN literal (each octet restarts the idle timer) goes at 120 s."""
    site = Site(tmp_path)
    client = site.connect(A)
    client.send(b"a LOGIN {100000}\r\n")
    for _ in range(119):
        site.clock.advance(1)
        client.send(b"x")
    assert not client.transport.disconnecting
    site.clock.advance(1)
    assert client.output().endswith(
        b"* BYE [UNAVAILABLE] Autologout; not authenticated in time\r\n"
    )
    assert client.transport.disconnecting


def test_slowloris_commands_are_closed_at_the_login_deadline(tmp_path: Path) -> None:
    """A client sending NOOP every 30 s, never logging in, is closed 120 s after connecting."""
    site = Site(tmp_path, ServerSettings(login_deadline=120))
    client = site.connect(A)
    for _ in range(3):
        site.clock.advance(30)
        client.send(b"n NOOP\r\n")
    site.clock.advance(29.9)
    assert not client.transport.disconnecting
    site.clock.advance(0.1)
    assert b"* BYE [UNAVAILABLE]" in client.output()
    assert client.transport.disconnecting


def logged_in(site: Site) -> Session:
    """alice from ``A``, logged in with a synchronizing literal password."""
    client = site.connect(A)
    client.send(b"a LOGIN alice@example.org {%d}\r\n%s\r\n" % (len(PASSWORD), PASSWORD.encode()))
    run_clock(site.clock, 2 * CHECK_TIME)
    assert b"a OK " in client.output()
    return client


def test_login_deadline_ends_with_login(tmp_path: Path) -> None:
    """A client that logged in is not held to the login deadline."""
    site = Site(tmp_path)
    client = logged_in(site)
    site.clock.advance(600)
    assert not client.transport.disconnecting


def test_silent_client_is_closed_after_the_preauth_timeout(tmp_path: Path) -> None:
    """Before login, 60 s of silence end the connection."""
    site = Site(tmp_path)
    client = site.connect(A)
    site.clock.advance(59.9)
    assert not client.transport.disconnecting
    site.clock.advance(0.1)
    assert b"* BYE Autologout" in client.output()
    assert client.transport.disconnecting


def test_idle_authenticated_client_is_kept_30_minutes(tmp_path: Path) -> None:
    """After login an idle client is kept 30 minutes (RFC 3501 5.4), then autologged out."""
    site = Site(tmp_path)
    client = logged_in(site)
    site.clock.advance(30 * 60 - 0.1)
    assert not client.transport.disconnecting
    site.clock.advance(0.1)
    assert b"* BYE Autologout" in client.output()
    assert client.transport.disconnecting


# -- a real server ---------------------------------------------------------------------


@contextmanager
def running_server(tmp_path: Path, *args: str) -> Iterator[RunningServer]:
    """A real server (no accounts) started with ``args``."""
    running = RunningServer(tmp_path / "data", free_port(), free_port(), args)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def open_from(server: RunningServer, source: str) -> tuple[socket.socket, bytes]:
    """A socket to the server from ``source`` (a 127/8 address) and its greeting."""
    sock = socket.create_connection(
        ("127.0.0.1", server.imap_port), timeout=30, source_address=(source, 0)
    )
    return sock, read_line(sock)


def read_line(sock: socket.socket) -> bytes:
    """One CRLF-terminated line (b"" at end of stream)."""
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            return line
        line += chunk
    return line


@pytest.mark.integration
def test_limits_of_a_real_server(tmp_path: Path) -> None:
    """The 4th connection from 127.0.0.1 and the 6th in all get BYE and EOF; the rest are served."""
    args = ("--max-connections", "5", "--max-connections-per-address", "3")
    opened = []
    with running_server(tmp_path, *args) as server:
        try:
            for source, count in (("127.0.0.1", 3), ("127.0.0.2", 2)):
                for _ in range(count):
                    sock, greeting = open_from(server, source)
                    opened.append(sock)
                    assert greeting.startswith(b"* OK ")
                if source == "127.0.0.1":
                    assert refused(server, "127.0.0.1")  # per address
            assert refused(server, "127.0.0.3")  # in total
            opened[0].sendall(b"a NOOP\r\n")
            assert read_line(opened[0]).startswith(b"a OK")
        finally:
            for sock in opened:
                sock.close()


def refused(server: RunningServer, source: str) -> bool:
    """Whether a connection from ``source`` is told BYE [UNAVAILABLE] and closed."""
    sock, greeting = open_from(server, source)
    with sock:
        return greeting == TOO_MANY and sock.recv(100) == b""


@pytest.mark.integration
def test_login_deadline_of_a_real_server(tmp_path: Path) -> None:
    """A client sending NOOPs without logging in is told BYE and closed (--login-deadline 3)."""
    with running_server(tmp_path, "--login-deadline", "3") as server:
        sock, greeting = open_from(server, "127.0.0.1")
        with sock:
            assert greeting.startswith(b"* OK ")
            line = b"n OK"
            deadline = time.monotonic() + 60
            while line.startswith(b"n OK") and time.monotonic() < deadline:
                time.sleep(0.5)
                sock.sendall(b"n NOOP\r\n")
                line = read_line(sock)
            assert line.startswith(b"* BYE [UNAVAILABLE]")
            assert read_line(sock) == b""
