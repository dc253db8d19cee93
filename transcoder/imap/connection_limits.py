"""Connection limits: in total and per client address, the excess told ``* BYE [UNAVAILABLE]``.

:class:`ConnectionLimitFactory` wraps the IMAP factory (a
:class:`twisted.protocols.policies.WrappingFactory`); one instance serves
every listener, so the limits hold across the STARTTLS and implicit-TLS
ports.  A connection over a limit is greeted ``* BYE [UNAVAILABLE] Too many
connections`` (RFC 3501 section 7.1.5; RFC 5530's code for a temporary
failure) and closed; the IMAP protocol built for it is never connected.

Why not Twisted's ``LimitConnectionsByPeer`` / ``LimitTotalConnectionsFactory``:
they decide in ``buildProtocol(addr)``, when TCP connects -- behind a
``haproxy:`` endpoint that is before the PROXY header has said who the client
is, so every client would count as the balancer -- they index the address as
a tuple (``addr[0]``), which Twisted's address objects no longer are, and
they drop the excess without a word.  :class:`LimitedConnection` decides in
``makeConnection``, from ``transport.getPeer()``: the PROXY header's address
when the connection came through :mod:`transcoder.imap.proxy_protocol`,
which connects the wrapped protocols only once the header is read.  Wrapper
order, outermost first: PROXY (the endpoint's) -> TLS (implicit-TLS port) ->
limits -> IMAP.

An address is counted as the failed-login throttle keys it
(:func:`transcoder.auth.throttle.address_key`: an IPv6 /64 is one address).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from transcoder.auth.throttle import address_key
from transcoder.imap.login_gate import peer_host

log = Logger()

TOO_MANY = b"* BYE [UNAVAILABLE] Too many connections\r\n"


class _TooManyConnections(Protocol):
    """What a refused connection runs instead of the IMAP server: BYE, then close."""

    def connectionMade(self) -> None:
        self.transport.write(TOO_MANY)
        self.transport.loseConnection()


class LimitedConnection(ProtocolWrapper):
    """A connection counted against the limits, or refused when it would exceed one."""

    factory: ConnectionLimitFactory
    #: The address this connection is counted under (None: refused).
    counted_as: str | None = None

    def makeConnection(self, transport: Any) -> None:
        """Count the connection, or swap in the refusal before anything is sent."""
        peer = transport.getPeer()
        address = self.factory.address_of(peer)
        if self.factory.admit(address):
            self.counted_as = address
        else:
            log.info("Refusing connection from {peer}: too many connections", peer=peer_host(peer))
            self.wrappedProtocol = _TooManyConnections()
        super().makeConnection(transport)


class ConnectionLimitFactory(WrappingFactory):
    """Wraps a server factory, serving at most ``max_total`` / ``max_per_address`` connections."""

    protocol = LimitedConnection

    def __init__(
        self,
        wrappedFactory: Any,
        max_total: int,
        max_per_address: int,
        ipv6_prefix: int = 64,
    ) -> None:
        if min(max_total, max_per_address) < 1:
            raise ValueError("connection limits must be at least 1")
        super().__init__(wrappedFactory)
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.ipv6_prefix = ipv6_prefix
        #: Connections served now, per address and in total.
        self.per_address: Counter[str] = Counter()
        self.total = 0

    def address_of(self, peer: object) -> str:
        """The address a peer is counted under."""
        return address_key(peer_host(peer), self.ipv6_prefix)

    def admit(self, address: str) -> bool:
        """Count one more connection from ``address``, unless that exceeds a limit."""
        if self.total >= self.max_total or self.per_address[address] >= self.max_per_address:
            return False
        self.total += 1
        self.per_address[address] += 1
        return True

    def unregisterProtocol(self, p: Any) -> None:
        """A connection ended: it no longer counts."""
        super().unregisterProtocol(p)
        address = getattr(p, "counted_as", None)
        if address is None:
            return
        p.counted_as = None
        self.total -= 1
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]
