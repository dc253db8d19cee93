"""Socket options the server sets on its TCP connections, read back from the kernel."""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from twisted.internet import defer, endpoints
from twisted.internet.protocol import Protocol

from transcoder.imap.server import TranscodingIMAP4Factory, TranscodingIMAP4Server
from transcoder.service import LISTEN_BACKLOG, with_backlog


@pytest_twisted.ensureDeferred
async def test_server_connections_have_nagle_off() -> None:
    """Each accepted connection has TCP_NODELAY set: no response segment waits for an ACK."""
    from twisted.internet import reactor

    made: defer.Deferred[Any] = defer.Deferred()

    class Noting(TranscodingIMAP4Server):
        def connectionMade(self) -> None:
            super().connectionMade()
            made.callback(self.transport.getHandle())

    factory = TranscodingIMAP4Factory(portal=None)
    factory.protocol = Noting
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    where = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    client = await endpoints.connectProtocol(where, Protocol())
    try:
        handle = await made
        assert handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        client.transport.loseConnection()
        await port.stopListening()


def test_tcp_endpoints_get_a_large_listen_backlog() -> None:
    """TCP endpoint strings without a backlog get LISTEN_BACKLOG; others are left as given."""
    assert with_backlog("tcp:1143:interface=127.0.0.1") == (
        f"tcp:1143:interface=127.0.0.1:backlog={LISTEN_BACKLOG}"
    )
    assert with_backlog("haproxy:tcp6:143") == f"haproxy:tcp6:143:backlog={LISTEN_BACKLOG}"
    assert with_backlog("tcp:143:backlog=10") == "tcp:143:backlog=10"
    assert with_backlog("unix:/run/imap.sock") == "unix:/run/imap.sock"
