"""A whole cluster on loopback for the tests: Dovecot, PostgreSQL, two fronts, HAProxy.

``cluster`` (one per test module) is a real Dovecot with alice's mailbox
holding :data:`MESSAGE`, a fresh database of the session's PostgreSQL as
the shared keystore, one view secret, two fronts (``--backend`` to the
Dovecot, listening on ``haproxy:`` endpoints) and a real HAProxy before
them (``mode tcp``, ``send-proxy-v2``, health checks), all started and
stopped by PID (:mod:`transcoder.cluster`).  Without haproxy or Dovecot the
tests skip, which under ``CI=true`` fails the run (``.ci/run`` installs both).

Clients connect from chosen loopback addresses (``127.0.0.x``, bound as the
source address) so that what a front sees -- the PROXY header's address --
is told apart from HAProxy's own (127.0.0.1).
"""

from __future__ import annotations

import imaplib
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import PASSWORD
from tests.postgres import PostgresServer
from transcoder.backend.dovecot import DovecotInstance, free_port
from transcoder.cluster import haproxy
from transcoder.cluster.fronts import FrontProcess, write_view_secret
from transcoder.cluster.haproxy import HAProxyInstance

ALICE = "alice@example.org"
MARKER = b"one mailbox, any front"
MESSAGE = (
    b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: cluster\r\n"
    b"Message-ID: <cluster@example.org>\r\n\r\n" + MARKER + b"\r\n"
)
#: Connections each front takes per client address (the PROXY header's).
PER_ADDRESS = 4


@dataclass
class Cluster:
    """The running parts (see the module doc)."""

    dovecot: DovecotInstance
    keystore: str
    fronts: dict[str, FrontProcess]
    balancer: HAProxyInstance

    @property
    def port(self) -> int:
        """The balancer's port."""
        return self.balancer.port

    def direct(self, name: str) -> int:
        """HAProxy's listener that reaches front ``name`` only."""
        return self.balancer.direct_ports[name]


class SourcedIMAP4(imaplib.IMAP4):
    """imaplib from a chosen local address (``127.0.0.x``): the client HAProxy reports."""

    def __init__(self, port: int, source: str, timeout: float = 60) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=timeout)

    def _create_socket(self, timeout: Any = None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )


def login(port: int, source: str, mailbox: str | None = "INBOX") -> SourcedIMAP4:
    """alice's session through ``port`` from ``source``, ``mailbox`` selected."""
    imap = SourcedIMAP4(port, source)
    imap.login(ALICE, PASSWORD)
    if mailbox is not None:
        typ, data = imap.select(mailbox)
        assert typ == "OK", data
    return imap


@pytest.fixture(scope="module")
def cluster(postgresql: PostgresServer) -> Iterator[Cluster]:
    """Dovecot, PostgreSQL, two fronts and HAProxy (see the module doc)."""
    if not DovecotInstance.installed():
        pytest.skip("dovecot is not installed (Debian package dovecot-imapd)")
    if haproxy.binary() is None:
        pytest.skip("haproxy is not installed (Debian package haproxy)")
    root = Path(tempfile.mkdtemp(prefix="transcoder-cluster-"))
    dovecot = DovecotInstance(root / "dovecot", {ALICE: PASSWORD})
    dovecot.prepare()
    dovecot.drop(ALICE, MESSAGE)
    keystore = postgresql.new_database()
    secret = write_view_secret(root / "view-secret")
    backend = f"imap://127.0.0.1:{dovecot.port}"
    limit = ("--max-connections-per-address", str(PER_ADDRESS))
    fronts = {
        name: FrontProcess(root / name, free_port(), backend, keystore, secret, limit)
        for name in ("front1", "front2")
    }
    balancer = HAProxyInstance(root / "haproxy", {n: f.port for n, f in fronts.items()})
    try:
        dovecot.start()
        for front in fronts.values():
            front.start()
        balancer.start()
        yield Cluster(dovecot, keystore, fronts, balancer)
    finally:
        balancer.stop()
        for front in fronts.values():
            front.stop()
        dovecot.stop()
        shutil.rmtree(root, ignore_errors=True)
