"""PROXY protocol listeners (``--imap haproxy:...``) that learn the client's address first.

Behind a load balancer every connection comes from the balancer; with the
PROXY protocol (HAProxy's, v1 text or v2 binary) the balancer sends the real
client's address in a header before any IMAP octet, and the server's
``transport.getPeer()`` returns it.  That address is what the failed-login
throttle keys on, what failed logins are logged with (fail2ban), what the
per-address connection limit counts and what the plaintext-loopback rule
looks at: a remote client behind a balancer on loopback is *not* local.

Twisted's own ``haproxy:`` endpoint (:mod:`twisted.protocols.haproxy`)
connects the wrapped protocol as soon as TCP connects, before the header has
been read, so whatever is decided then -- the greeting's capabilities
(``LOGINDISABLED`` or not), the connection limits -- would see the
balancer's address.  :class:`ProxiedConnection` subclasses Twisted's wrapper
(``HAProxyProtocolWrapper``, not exported by Twisted but stable since
Twisted 16; the tests in ``tests/security/`` pin what we rely on) and holds
the wrapped protocol back until the header has been parsed; the
octets after the header are handed on once it is connected (a header split
over packets is fine).  A header that
does not arrive within ``header_timeout`` seconds closes the connection, as
does a malformed one (Twisted's parser).  A header that names no client (v1
``PROXY UNKNOWN``, v2 ``LOCAL``: the balancer's own health checks) leaves the
peer :class:`UnknownPeer`, which is never loopback.

:func:`server_endpoint` is ``serverFromString`` with ``haproxy:`` answered by
:class:`ProxyHeaderEndpoint`.  Only the balancer may reach such a port:
whoever can connect to it can claim any address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from zope.interface import implementer

log = Logger()

PREFIX = "haproxy:"
#: Seconds a client (the balancer) has to send the PROXY header.
HEADER_TIMEOUT = 10.0


@implementer(IAddress)
@dataclass(frozen=True)
class UnknownPeer:
    """The peer of a connection whose PROXY header named no client (health checks)."""

    host: str = "unknown"
    port: int = 0


class _Held(Protocol):
    """Stands in for the wrapped protocol until the header is read; keeps what follows it."""

    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class ProxiedConnection(HAProxyProtocolWrapper):
    """Twisted's PROXY wrapper, connecting the wrapped protocol only once the header is read."""

    factory: ProxiedFactory
    wrappedProtocol: Any
    _pending: Any = None
    _head = b""
    _header_timer: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        """Start reading the header; the wrapped protocol waits."""
        self._pending, self.wrappedProtocol = self.wrappedProtocol, _Held()
        super().makeConnection(transport)
        self._header_timer = self.factory.clock.callLater(
            self.factory.header_timeout, self._header_late
        )

    def dataReceived(self, data: bytes) -> None:
        """Parse the header (Twisted's parser); connect the wrapped protocol once it is read."""
        if self._parser is None and self._proxyInfo is None:
            # Twisted's wrapper tells v1 from v2 by the first packet and closes the
            # connection when it is shorter than 16 octets: gather as many, or a v1 line.
            self._head += data
            v1_line = self._head.startswith(b"PROXY ") and b"\n" in self._head
            if len(self._head) < 16 and not v1_line:
                return
            data, self._head = self._head, b""
        super().dataReceived(data)
        if self._pending is not None and self._proxyInfo is not None and not self.disconnecting:
            self._connect_wrapped()

    def _connect_wrapped(self) -> None:
        self._cancel_timer()
        held, self.wrappedProtocol = self.wrappedProtocol, self._pending
        self._pending = None
        self.wrappedProtocol.makeConnection(self)
        if held.data and not self.disconnecting:
            self.wrappedProtocol.dataReceived(held.data)

    def _header_late(self) -> None:
        self._header_timer = None
        log.info("Closing connection from {peer}: no PROXY header", peer=self.transport.getPeer())
        self.loseConnection()

    def _cancel_timer(self) -> None:
        if self._header_timer is not None and self._header_timer.active():
            self._header_timer.cancel()
        self._header_timer = None

    def getPeer(self) -> Any:
        """The client the header named; :class:`UnknownPeer` when it named none."""
        if self._proxyInfo is not None and self._proxyInfo.source is None:
            return UnknownPeer()
        return super().getPeer()

    def connectionLost(self, reason: Any) -> None:
        """Stop waiting for the header; a wrapped protocol never connected hears nothing."""
        self._cancel_timer()
        self._pending = None
        super().connectionLost(reason)


class ProxiedFactory(HAProxyWrappingFactory):
    """Wraps a factory's protocols in :class:`ProxiedConnection`."""

    protocol = ProxiedConnection

    def __init__(
        self, wrappedFactory: Any, clock: IReactorTime, header_timeout: float = HEADER_TIMEOUT
    ) -> None:
        super().__init__(wrappedFactory)
        self.clock = clock
        self.header_timeout = header_timeout


@implementer(IStreamServerEndpoint)
class ProxyHeaderEndpoint:
    """A stream server endpoint whose connections start with a PROXY header."""

    def __init__(
        self,
        inner: IStreamServerEndpoint,
        clock: IReactorTime,
        header_timeout: float = HEADER_TIMEOUT,
    ) -> None:
        self.inner = inner
        self.clock = clock
        self.header_timeout = header_timeout

    def listen(self, protocolFactory: Any) -> Any:
        """Listen on the inner endpoint with the factory behind the PROXY wrapper."""
        factory = ProxiedFactory(protocolFactory, self.clock, self.header_timeout)
        return self.inner.listen(factory)


def server_endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """``serverFromString(reactor, description)``, but ``haproxy:`` is a ProxyHeaderEndpoint."""
    if description.lower().startswith(PREFIX):
        inner = serverFromString(reactor, description[len(PREFIX) :])
        return ProxyHeaderEndpoint(inner, reactor)
    endpoint: IStreamServerEndpoint = serverFromString(reactor, description)
    return endpoint
