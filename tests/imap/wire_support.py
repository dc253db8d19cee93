"""Sessions on our server or on Twisted's stock IMAP4Server, for the wire-level defect checks.

Each check of a defect that Twisted's stock ``IMAP4Server`` has (issue 2,
items 7, 8, 10 and 13) is a function ``check(server_class, tmp_path)``
registered with :func:`stock_defect`; the tests run it on
``TranscodingIMAP4Server``.  To see every one of them fail on stock Twisted::

    python -m tests.imap.wire_support

runs each registered check on ``twisted.mail.imap4.IMAP4Server`` and exits
non-zero if one of them passes there.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.mail import imap4
from zope.interface import alsoProvides, implementer

from tests.imap.harness import Session
from transcoder.imap.server import TranscodingIMAP4Server
from transcoder.imap.settings import ServerSettings

Check = Callable[[type, Path], None]

#: Checks of defects of Twisted's stock server, in registration order.
STOCK_DEFECTS: list[Check] = []

#: The modules holding the registered checks.
CHECK_MODULES = (
    "tests.imap.test_wire",
    "tests.security.test_starttls_injection",
    "tests.security.test_literal_limits",
)

REMOTE = "192.0.2.10"


def stock_defect(check: Check) -> Check:
    """Register ``check`` as one that must fail on Twisted's stock IMAP4Server."""
    STOCK_DEFECTS.append(check)
    return check


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    """A StringTransport that can start TLS: it records each startTLS call.

    Once TLS is started it provides ISSLTransport, as Twisted's TLS transport does.
    """

    def __init__(self, peer: str = REMOTE) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", peer, 40000))
        self.tls_started_with: list[object] = []

    def startTLS(self, contextFactory: object, normal: bool = True) -> None:
        """Record the switch to TLS."""
        self.tls_started_with.append(contextFactory)
        alsoProvides(self, ISSLTransport)


@implementer(IRealm)
class MemoryRealm:
    """A realm handing out Twisted's in-memory IMAP accounts."""

    def requestAvatar(self, avatarId: bytes, mind: object, *interfaces: object) -> Any:
        """An IAccount named after the login."""
        return imap4.IAccount, imap4.MemoryAccount(avatarId.decode()), lambda: None


def memory_portal(user: bytes = b"alice", password: bytes = b"secret") -> Portal:
    """A cred portal that accepts ``user`` / ``password``."""
    checker = InMemoryUsernamePasswordDatabaseDontUse(**{user.decode(): password})
    return Portal(MemoryRealm(), [checker])


def is_ours(server_class: type) -> bool:
    """Whether ``server_class`` is our server (rather than Twisted's stock one)."""
    return issubclass(server_class, TranscodingIMAP4Server)


def open_session(
    server_class: type,
    tmp_path: Path,
    state: str = "unauth",
    settings: ServerSettings | None = None,
    tls: bool = False,
    portal: object = None,
) -> Session:
    """A connected server of ``server_class`` in ``state`` (unauth, auth or select).

    With ``tls`` its transport can start TLS and STARTTLS is offered.  Our
    server gets ``settings``; the stock one has none.  In auth and select
    state either is logged in on a real Maildir.
    """
    clock = Clock()
    transport = TLSStringTransport() if tls else StringTransport(IPv4Address("TCP", REMOTE, 1))
    context = object() if tls else None
    if is_ours(server_class):
        server = server_class(
            settings=settings or ServerSettings(), clock=clock, contextFactory=context
        )
    else:
        server = server_class(contextFactory=context)
        server.callLater = clock.callLater
    server.portal = portal
    server.makeConnection(transport)
    session = Session(server, transport, clock)
    if state in ("auth", "select"):
        server.account = _account(tmp_path)
        server.state = "auth"
    session.output()  # the greeting
    if state == "select":
        _, done = session.command(b"SELECT INBOX")
        assert b" OK " in done, done
    return session


def _account(tmp_path: Path) -> Any:
    """Alice's account on a real Maildir; it provides Twisted's IAccount, for either server."""
    from transcoder.store import MaildirStore

    # File copies run synchronously, so a StringTransport session needs no reactor.
    store = MaildirStore(tmp_path / "mail", clock=Clock(), run_blocking=defer.maybeDeferred)
    return store.account("alice@example.org")


def tagged(out: bytes, tag: bytes) -> list[bytes]:
    """The lines of ``out`` that answer ``tag``."""
    return [line for line in out.split(b"\r\n") if line.startswith(tag + b" ")]


def run_on_stock() -> int:
    """Run every registered check on Twisted's stock server; 1 if one of them passes there."""
    # Run as __main__, this module is not the one the check modules register with.
    checks: list[Check] = importlib.import_module("tests.imap.wire_support").STOCK_DEFECTS
    for name in CHECK_MODULES:
        importlib.import_module(name)
    passed = []
    for check in checks:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                check(imap4.IMAP4Server, Path(tmp))
            except Exception as e:
                last = traceback.extract_tb(e.__traceback__)[-1]
                where = f"{Path(last.filename).name}:{last.lineno}"
                print(f"fails on stock, as it should: {check.__name__} ({where}: {e!r:.80})")
            else:
                passed.append(check.__name__)
                print(f"PASSES on stock: {check.__name__}")
    print(f"{len(checks) - len(passed)} of {len(checks)} checks fail on stock Twisted")
    return 1 if passed else 0


if __name__ == "__main__":
    sys.exit(run_on_stock())
