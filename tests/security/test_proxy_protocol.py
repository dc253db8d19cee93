"""The client behind a load balancer (PROXY protocol): its address, not the balancer's, counts.

With ``--imap haproxy:...`` every TCP connection comes from the balancer --
on loopback, typically -- and the PROXY header names the real client.  That
address must decide the plaintext-loopback rule (a remote client behind a
local HAProxy is not local), key the failed-login throttle and appear in the
log.  Twisted's stock wrapper connects the IMAP protocol before reading the
header, so the greeting would advertise plaintext logins to a remote client
(``check_greeting_waits_for_the_header`` fails on it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from tests.security.guessing_support import CHECK_TIME, PASSWORD, Site, run_clock
from tests.security.proxied_server import proxied_server, proxy_v1, proxy_v2, tls_context
from transcoder.imap.connection_limits import ConnectionLimitFactory
from transcoder.imap.proxy_protocol import HEADER_TIMEOUT, ProxiedFactory

BALANCER = IPv4Address("TCP", "127.0.0.1", 50000)
REMOTE = "198.51.100.7"


class Balanced:
    """One connection from the balancer (on loopback) through the wrapper stack to IMAP."""

    def __init__(self, front: Any, tls: bool = False) -> None:
        self.transport = StringTransport(peerAddress=BALANCER)
        if tls:  # the client's TLS passed through to us (STARTTLS already done)
            directlyProvides(self.transport, ISSLTransport)
        self.wrapper = front.buildProtocol(BALANCER)
        self.wrapper.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        """Octets from the balancer."""
        self.wrapper.dataReceived(data)

    def output(self) -> bytes:
        """What the server wrote since the last call."""
        out = self.transport.value()
        self.transport.clear()
        return out

    def hang_up(self) -> None:
        """The connection closes."""
        self.wrapper.connectionLost(Failure(ConnectionDone()))


def front(site: Site, wrapping: Any = ProxiedFactory) -> Any:
    """The service's wrapper stack: PROXY -> limits -> IMAP, on the site's clock."""
    limited = ConnectionLimitFactory(site.factory, 1000, 50)
    if wrapping is ProxiedFactory:
        return ProxiedFactory(limited, site.clock)
    return wrapping(limited)


def check_greeting_waits_for_the_header(tmp_path: Path, wrapping: Any) -> None:
    """Nothing is sent before the header; the greeting then judges the client's address."""
    conn = Balanced(front(Site(tmp_path), wrapping))
    assert conn.output() == b""
    conn.send(proxy_v1(REMOTE))
    greeting = conn.output()
    assert greeting.startswith(b"* OK [CAPABILITY ")
    assert b"LOGINDISABLED" in greeting and b"AUTH=PLAIN" not in greeting


def test_greeting_waits_for_the_header(tmp_path: Path) -> None:
    """Nothing is sent before the header; the greeting then judges the client's address."""
    check_greeting_waits_for_the_header(tmp_path, ProxiedFactory)


def test_stock_twisted_wrapper_greets_too_early(tmp_path: Path) -> None:
    """Twisted's own haproxy wrapper greets a remote client as loopback (why we subclass it)."""
    with pytest.raises(AssertionError):
        check_greeting_waits_for_the_header(tmp_path, HAProxyWrappingFactory)


def test_remote_client_behind_local_balancer_is_not_loopback(tmp_path: Path) -> None:
    """Before TLS, a remote client behind a loopback balancer gets LOGINDISABLED and NO."""
    conn = Balanced(front(Site(tmp_path)))
    conn.send(proxy_v1(REMOTE) + b"a CAPABILITY\r\nb LOGIN alice@example.org pw\r\n")
    out = conn.output()
    capability = next(ln for ln in out.split(b"\r\n") if ln.startswith(b"* CAPABILITY"))
    assert b"LOGINDISABLED" in capability
    assert b"b NO [PRIVACYREQUIRED]" in out


def test_local_client_behind_the_balancer_is_loopback(tmp_path: Path) -> None:
    """The rule follows the header: a client the header says is on loopback may log in."""
    conn = Balanced(front(Site(tmp_path)))
    conn.send(proxy_v1("127.0.0.1") + b"a CAPABILITY\r\n")
    assert b"AUTH=PLAIN" in conn.output()


@pytest.mark.parametrize(
    "header",
    [b"PROXY UNKNOWN 192.0.2.1 127.0.0.1 1 143\r\n", proxy_v2(REMOTE)[:12] + b"\x20\x00\0\0"],
    ids=["v1 UNKNOWN", "v2 LOCAL"],
)
def test_header_without_a_client_is_not_loopback(tmp_path: Path, header: bytes) -> None:
    """A header naming no client (v1 UNKNOWN, v2 LOCAL: health checks) is not treated as local."""
    conn = Balanced(front(Site(tmp_path)))
    conn.send(header)
    greeting = conn.output()
    assert greeting.startswith(b"* OK ") and b"LOGINDISABLED" in greeting


def test_header_in_pieces_and_commands_behind_it(tmp_path: Path) -> None:
    """A header split over packets, with a command in its last packet, is read in order."""
    conn = Balanced(front(Site(tmp_path)))
    header = proxy_v2(REMOTE)
    conn.send(header[:5])
    conn.send(header[5:14])
    assert conn.output() == b""
    conn.send(header[14:] + b"a NOOP\r\n")
    lines = conn.output().split(b"\r\n")
    assert lines[0].startswith(b"* OK [CAPABILITY ")
    assert lines[1].startswith(b"a OK")


def test_missing_header_times_out(tmp_path: Path) -> None:
    """A connection that sends no header is closed after HEADER_TIMEOUT, never greeted."""
    site = Site(tmp_path)
    conn = Balanced(front(site))
    site.clock.advance(HEADER_TIMEOUT - 0.1)
    assert not conn.transport.disconnecting
    site.clock.advance(0.1)
    assert conn.transport.disconnecting
    conn.hang_up()
    assert conn.output() == b""


def test_malformed_header_is_closed_unanswered(tmp_path: Path) -> None:
    """A connection that does not start with a PROXY header is closed without an IMAP octet."""
    conn = Balanced(front(Site(tmp_path)))
    conn.send(b"a1 LOGIN alice@example.org pw\r\n")
    assert conn.transport.disconnecting
    conn.hang_up()
    assert conn.output() == b""


def test_throttle_and_log_use_the_proxied_address(tmp_path: Path) -> None:
    """Failures of a proxied client delay its next attempt, not other clients of the balancer."""
    site = Site(tmp_path)
    stack = front(site)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        guesser = Balanced(stack, tls=True)
        guesser.send(proxy_v1(REMOTE) + b"a LOGIN alice@example.org wrong\r\n")
        run_clock(site.clock, 2 * CHECK_TIME)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e["rip"] for e in events if "rip" in e] == [REMOTE]
    login = b"b LOGIN bob@example.org {%d}\r\n%s\r\n" % (len(PASSWORD), PASSWORD.encode())
    same, other = Balanced(stack, tls=True), Balanced(stack, tls=True)
    same.send(proxy_v1(REMOTE) + login)
    other.send(proxy_v1("198.51.100.8") + login)
    run_clock(site.clock, 2 * CHECK_TIME)
    assert b"b OK " in other.output()  # another client of the same balancer: at once
    assert b"b OK " not in same.output()  # the guessing client: after its delay
    run_clock(site.clock, 1)
    assert b"b OK " in same.output()


@pytest.mark.integration
def test_haproxy_endpoint_of_a_real_server(tmp_path: Path) -> None:
    """twistd --imap haproxy:tcp:PORT greets after the header, with the client's address."""
    with proxied_server(tmp_path) as server:
        remote = server.proxied(REMOTE)
        local = server.proxied("127.0.0.1", version=2)
        try:
            assert b"LOGINDISABLED" in remote.welcome
            assert "AUTH=PLAIN" in local.capabilities
            remote.starttls(ssl_context=tls_context())
            assert "AUTH=PLAIN" in remote.capabilities  # TLS, then plaintext mechanisms
        finally:
            remote.shutdown()
            local.shutdown()
