"""Embed TranscodingIMAP4Server in your own Twisted application, with your own realm.

Run:  python examples/embed_server.py MAILDIR_ROOT PORT
then log in over plain IMAP from loopback as ``user@example.org`` / ``secret``.

A hoster typically already has a user database and a cred checker; all the
server needs is a portal whose realm hands out Twisted ``IAccount`` avatars.
Here the realm maps every authenticated user onto our Maildir store, but any
``IAccount`` implementation works.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import endpoints, reactor
from twisted.mail.imap4 import IAccount
from twisted.python import log
from zope.interface import implementer

from transcoder.imap import ServerSettings, TranscodingIMAP4Factory
from transcoder.store import MaildirStore


@implementer(IRealm)
class HosterRealm:
    """The hoster's realm: one Maildir account per authenticated user."""

    def __init__(self, store: MaildirStore) -> None:
        self.store = store

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        if IAccount not in interfaces:
            raise NotImplementedError("only IMAP accounts here")
        address = avatarId.decode() if isinstance(avatarId, bytes) else avatarId
        return IAccount, self.store.account(address), lambda: None


def main(root: str, port: int) -> None:
    checker = InMemoryUsernamePasswordDatabaseDontUse(**{"user@example.org": b"secret"})
    portal = Portal(HosterRealm(MaildirStore(root)), [checker])
    factory = TranscodingIMAP4Factory(portal, ServerSettings(max_literal_size=8 * 1024 * 1024))
    endpoints.serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1").listen(factory)
    log.startLogging(sys.stdout)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
