"""A protocol-level harness: one TranscodingIMAP4Server on a StringTransport over a real Maildir."""

from __future__ import annotations

import io
import itertools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.mail import imap4
from twisted.python.threadpool import ThreadPool

from tests.keys.certs import NOW
from transcoder.imap.server import TranscodingIMAP4Server
from transcoder.imap.settings import ServerSettings
from transcoder.imap.transcoding import TranscodingConfig
from transcoder.imap.xkey import KeyAccess
from transcoder.keys.async_store import AsyncKeyStore
from transcoder.keys.keystore import KeyStore

_TAGGED = re.compile(rb"^(?P<tag>[A-Za-z0-9]+) (?P<status>OK|NO|BAD)\b")


class Session:
    """Drives a server protocol with raw bytes and collects what it writes."""

    def __init__(self, server: TranscodingIMAP4Server, transport: StringTransport, clock: Clock):
        self.server = server
        self.transport = transport
        self.clock = clock
        self.store: Any = None
        self._tags = (b"t%d" % i for i in itertools.count(1))

    def deliver(self, message: bytes, mailbox: str = "INBOX") -> None:
        """Drop ``message`` into the account's Maildir as an MDA would (seen at the next poll)."""
        self.store.deliver(self.server.account.address, io.BytesIO(message), mailbox)

    def send(self, data: bytes) -> None:
        """Feed raw bytes to the server as if they arrived from the network."""
        self.server.dataReceived(data)

    def output(self) -> bytes:
        """Everything the server wrote since the last call."""
        out = self.transport.value()
        self.transport.clear()
        return out

    def command(self, line: bytes) -> tuple[list[bytes], bytes]:
        """Send ``<tag> line`` and return (untagged and continuation lines, tagged completion line).

        Literal data inside the response stays in the untagged list as raw lines.
        """
        tag = next(self._tags)
        self.send(tag + b" " + line + b"\r\n")
        return self.split(self.output(), tag)

    @staticmethod
    def split(out: bytes, tag: bytes) -> tuple[list[bytes], bytes]:
        """Split server output into (lines before the tagged response, the tagged response)."""
        lines = out.split(b"\r\n")
        for i, ln in enumerate(lines):
            if ln.startswith(tag + b" "):
                return lines[:i], ln
        raise AssertionError(f"no tagged response for {tag!r} in {out!r}")


def server_under_test(settings: ServerSettings, clock: Clock) -> Any:
    """Our server -- or, with ``TRANSCODER_TEST_SERVER=stock``, Twisted's stock IMAP4Server.

    The stock mode exists to show each test of a Twisted defect failing on
    stock Twisted (docs/twisted-defects.md); the suite always runs on ours.
    """
    if os.environ.get("TRANSCODER_TEST_SERVER") == "stock":
        return imap4.IMAP4Server()
    return TranscodingIMAP4Server(settings=settings, clock=clock)


def make_session(
    tmp_path: Path,
    address: str = "alice@example.org",
    state: str = "auth",
    settings: ServerSettings | None = None,
    peer: str = "192.0.2.10",
    portal: object = None,
) -> Session:
    """A connected server; in state ``auth``, logged in as ``address`` on a Maildir in tmp_path."""
    from transcoder.store import MaildirStore

    clock = Clock()
    server = server_under_test(settings or ServerSettings(), clock)
    server.portal = portal
    transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
    server.makeConnection(transport)
    if state in ("auth", "select"):
        store = MaildirStore(tmp_path / "mail", clock=clock, run_blocking=defer.maybeDeferred)
        server.account = store.account(address)
        server.state = "auth"
    session = Session(server, transport, clock)
    if state in ("auth", "select"):
        session.store = store
    session.output()  # drop the greeting
    return session


def selected_session(tmp_path: Path, *messages: bytes) -> Session:
    """A logged-in session (see :func:`make_session`) with ``messages`` in INBOX, selected."""
    session = make_session(tmp_path)
    for message in messages:
        session.deliver(message)
    _, done = session.command(b"SELECT INBOX")
    assert b" OK " in done, done
    return session


def second_session(first: Session) -> Session:
    """Another connection logged into the same account of the same store."""
    server = TranscodingIMAP4Server(settings=first.server.settings, clock=first.clock)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.11", 40001))
    server.makeConnection(transport)
    server.account = first.store.account(first.server.account.address)
    server.state = "auth"
    session = Session(server, transport, first.clock)
    session.store = first.store
    session.output()
    return session


class InlineKeyStore(AsyncKeyStore):
    """An AsyncKeyStore whose "pool" runs each call at once, on the calling thread."""

    def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run now; the result arrives as an already fired Deferred."""
        return defer.maybeDeferred(function, *args, **kwargs)


def enable_smime(
    session: Session, store: KeyStore, transcoding: TranscodingConfig, cert_der: bytes
) -> None:
    """Transcode ``session`` by ``transcoding``; XKEY PUT ``cert_der``, FORMAT SMIME, MODE ALWAYS.

    Keys live in ``store`` and are judged at ``tests.keys.certs.NOW``.
    """
    clock = Clock()
    clock.advance(NOW.timestamp())
    session.server.keys = KeyAccess(InlineKeyStore(store, clock, ThreadPool()), clock)
    session.server.transcoding = transcoding
    session.send(b"k XKEY PUT {%d+}\r\n" % len(cert_der) + cert_der + b"\r\n")
    assert b"k OK" in session.output()
    for setting in (b"FORMAT SMIME", b"MODE ALWAYS"):
        _, done = session.command(b"XKEY POLICY " + setting)
        assert b"OK" in done, done
