"""Test support for password guessing and connection limits: a factory on a Clock, raw sessions.

:class:`Site` is the IMAP factory as the service builds it, over a real
accounts file (scrypt) and Maildir store, driven by a
:class:`~twisted.internet.task.Clock`; it records when each real credential
check ran.  :func:`attack` plays parallel password guessers that send the
next guess as soon as the last was answered and reconnect after a BYE.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from tests.imap.harness import Session
from transcoder.auth import AccountsFile, make_portal
from transcoder.imap.server import TranscodingIMAP4Factory
from transcoder.imap.settings import ServerSettings
from transcoder.store import MaildirStore

PASSWORD = "the right password"
FAILED = b"NO [AUTHENTICATIONFAILED]"
THROTTLED = b"NO [UNAVAILABLE]"
#: How long a credential check takes (scrypt in a worker thread: ~50 ms).
CHECK_TIME = 0.05
_TAGGED = re.compile(rb"^(\S+) (OK|NO|BAD)\b", re.M)


def peer_address(host: str, port: int = 40000) -> Any:
    """A Twisted TCP address for ``host``."""
    if ipaddress.ip_address(host).version == 6:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


class Site:
    """A TranscodingIMAP4Factory on a Clock with alice and bob (password :data:`PASSWORD`)."""

    def __init__(self, tmp_path: Path, settings: ServerSettings | None = None) -> None:
        self.clock = Clock()
        accounts = AccountsFile(tmp_path / "accounts")
        for address in ("alice@example.org", "bob@example.org"):
            accounts.add(address, PASSWORD)
        #: (time, login) of every credential check that ran.
        self.checks: list[tuple[float, bytes]] = []
        portal = make_portal(accounts, MaildirStore(tmp_path / "mail"), run_blocking=self._check)
        self.factory = TranscodingIMAP4Factory(portal, settings, clock=self.clock)

    def _check(self, f: Any, *args: Any) -> Any:
        """The checker's run_blocking: note the check's start, answer CHECK_TIME later.

        Like scrypt in a worker thread, checks overlap: the real verification
        runs at once, its result is delivered when the clock has moved on.
        """
        self.checks.append((self.clock.seconds(), args[1]))
        d = maybeDeferred(f, *args)
        return d.addBoth(lambda result: deferLater(self.clock, CHECK_TIME, lambda: result))

    def connect(self, host: str) -> Session:
        """A new connection from ``host``, over TLS (so passwords may be sent), greeting read."""
        address = peer_address(host)
        server = self.factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        directlyProvides(transport, ISSLTransport)
        server.makeConnection(transport)
        session = Session(server, transport, self.clock)
        session.output()
        return session


def run_clock(clock: Clock, seconds: float, step: float = 0.01) -> None:
    """Advance ``clock`` in small steps, so that each call runs close to its time."""
    for _ in range(round(seconds / step)):
        clock.advance(step)


def hang_up(session: Session) -> None:
    """The connection is gone: tell the protocol, as the reactor would."""
    session.server.connectionLost(Failure(ConnectionDone()))


@dataclass
class Guesser:
    """One attacker connection that keeps guessing ``account``'s password."""

    site: Site
    host: str
    account: bytes
    session: Session = field(init=False)
    tags: Any = field(default_factory=lambda: (b"g%d" % i for i in itertools.count()))
    answers: list[bytes] = field(default_factory=list)
    tag: bytes = b""

    def __post_init__(self) -> None:
        self.session = self.site.connect(self.host)
        self.guess()

    def guess(self) -> None:
        """Send the next wrong LOGIN."""
        self.tag = next(self.tags)
        self.session.send(b"%s LOGIN %s wrong-%s\r\n" % (self.tag, self.account, self.tag))

    def step(self) -> None:
        """Collect answers; guess again when answered, reconnect when closed."""
        out = self.session.output()
        for tag, status in _TAGGED.findall(out):
            if tag == self.tag:
                line = out[out.index(tag + b" " + status) :].split(b"\r\n", 1)[0]
                self.answers.append(line.split(b" ", 1)[1])
        if self.session.transport.disconnecting:
            hang_up(self.session)
            self.session = self.site.connect(self.host)
            self.guess()
        elif any(tag == self.tag for tag, _ in _TAGGED.findall(out)):
            self.guess()


def attack(
    site: Site, hosts: Sequence[str], accounts: Sequence[bytes], seconds: float, step: float = 0.25
) -> list[Guesser]:
    """Run one guesser per (host, account) pair for ``seconds`` of the site's clock."""
    guessers = [Guesser(site, host, account) for host, account in zip(hosts, accounts, strict=True)]
    for _ in range(round(seconds / step)):
        site.clock.advance(step)
        for guesser in guessers:
            guesser.step()
    return guessers
