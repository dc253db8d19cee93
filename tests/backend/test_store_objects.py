"""The backend's account, mailbox and message objects in-process, against a real Dovecot.

They must provide the interfaces the IMAP layer calls (verifyObject), and the
cred checker must log in at the backend or refuse with UnauthorizedLogin.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.mail import imap4
from zope.interface.verify import verifyObject

from tests.backend.conftest import USERS
from transcoder.backend.account import BackendAccount
from transcoder.backend.auth import BackendChecker, make_backend_portal
from transcoder.backend.connection import BackendAddress, BackendSettings
from transcoder.backend.dovecot import DovecotInstance
from transcoder.backend.mailbox import BackendMailbox
from transcoder.backend.message import BackendMessage, OctetsNotLoaded
from transcoder.store.interfaces import IParsedMessage

ALICE = "alice@example.org"


def _settings(dovecot: DovecotInstance) -> BackendSettings:
    return BackendSettings(BackendAddress.parse(f"imap://127.0.0.1:{dovecot.port}"))


async def _account(dovecot: DovecotInstance, user: str = ALICE) -> Any:
    portal = make_backend_portal(reactor, _settings(dovecot))
    credentials = UsernamePassword(user.encode(), USERS[user].encode())
    iface, account, logout = await portal.login(credentials, None, imap4.IAccount)
    assert iface is imap4.IAccount
    return account, logout


@pytest_twisted.ensureDeferred
async def test_account_mailbox_and_message_provide_the_imap_layers_interfaces(
    dovecot: DovecotInstance,
) -> None:
    """IAccount, INamespacePresenter, IMailbox, ICloseableMailbox, IParsedMessage all verify."""
    dovecot.drop(ALICE, b"Subject: objects\r\n\r\nbody\r\n", "Archive")
    account, logout = await _account(dovecot)
    try:
        assert isinstance(account, BackendAccount)
        verifyObject(imap4.IAccount, account)
        verifyObject(imap4.INamespacePresenter, account)
        mailbox = await account.select("Archive", False)
        assert isinstance(mailbox, BackendMailbox)
        verifyObject(imap4.IMailbox, mailbox)
        verifyObject(imap4.ICloseableMailbox, mailbox)
        assert not mailbox.isWriteable() and mailbox.getMessageCount() >= 1
        ((seq, message),) = await mailbox.fetch(imap4.MessageSet(1, 1), uid=False)
        assert seq == 1 and isinstance(message, BackendMessage)
        verifyObject(IParsedMessage, message)
        with pytest.raises(OctetsNotLoaded):  # never wait for the backend on the reactor
            message.open()
        await message.load()
        with message.open() as fp:
            octets = fp.read()
        assert len(octets) == message.size and message.entity().end == message.size
        assert await account.select("No such mailbox") is None
    finally:
        logout()


@pytest_twisted.ensureDeferred
async def test_status_does_not_move_the_backends_selection(dovecot: DovecotInstance) -> None:
    """STATUS of another mailbox leaves the selected one selected on the backend."""
    dovecot.drop(ALICE, b"Subject: in the inbox\r\n\r\nbody\r\n")
    account, logout = await _account(dovecot)
    try:
        mailbox = await account.select("INBOX", True)
        values = await account.status("Archive", ["MESSAGES", "UIDNEXT"])
        assert set(values) == {"MESSAGES", "UIDNEXT"}
        last = mailbox.getMessageCount()
        ((_, message),) = await mailbox.fetch(imap4.MessageSet(last, last), uid=False)
        await message.load()
        with message.open() as fp:
            assert fp.read().startswith(b"Subject: in the inbox")
    finally:
        logout()


@pytest_twisted.ensureDeferred
async def test_octets_of_following_messages_come_in_the_same_request(
    dovecot: DovecotInstance,
) -> None:
    """Loading one message of a FETCH brings the small ones after it too (fewer round trips)."""
    from transcoder.backend import octets as mailbox_module

    for n in range(5):
        dovecot.drop(ALICE, b"Subject: batch %d\r\n\r\nbody\r\n" % n, "Batch")
    account, logout = await _account(dovecot)
    try:
        mailbox = await account.select("Batch", False)
        found = await mailbox.fetch(imap4.MessageSet(1, None), uid=False)
        messages = [message for _, message in found]
        assert len(messages) == 5
        await messages[1].load()
        assert not messages[0].loaded  # before the one asked for: not read ahead
        assert all(m.loaded for m in messages[1:])
        for n, message in enumerate(messages[1:], 1):
            with message.open() as fp:
                assert fp.read().startswith(b"Subject: batch %d" % n)
        assert mailbox_module.READAHEAD_MESSAGES >= 4
    finally:
        logout()


@pytest_twisted.ensureDeferred
async def test_the_checker_refuses_what_the_backend_refuses(dovecot: DovecotInstance) -> None:
    """A wrong password, an unknown account or a login that is no address: UnauthorizedLogin.

    Last in the module: Dovecot slows later logins from an address that failed (its anvil).
    """
    checker = BackendChecker(reactor, _settings(dovecot))
    for user, password in (
        (ALICE, "wrong"),
        ("nobody@example.org", USERS[ALICE]),
        ("not an address", USERS[ALICE]),
        (ALICE, ""),
    ):
        with pytest.raises(UnauthorizedLogin):
            await checker.requestAvatarId(UsernamePassword(user.encode(), password.encode()))


@pytest_twisted.ensureDeferred
async def test_a_second_fetch_of_the_same_messages_asks_the_backend_nothing(
    dovecot: DovecotInstance,
) -> None:
    """Size and date are fixed under a UID (RFC 3501 2.3.1.1): fetched once per selection.
    A message expunged meanwhile by another session is found gone when its octets are
    loaded (MessageExpunged), never served as another message."""
    from transcoder.store.message import MessageExpunged

    account, logout = await _account(dovecot)
    try:
        await account.create("Facts")
        for n in range(3):
            dovecot.drop(ALICE, b"Subject: facts %d\r\n\r\nbody %d\r\n" % (n, n), "Facts")
        mailbox = await account.select("Facts", True)
        everything = imap4.MessageSet(1, None)
        first = await mailbox.fetch(everything, uid=False)
        sent = mailbox.connection.commands_sent
        again = await mailbox.fetch(everything, uid=False)
        assert mailbox.connection.commands_sent == sent  # nothing asked
        shown = [(s, m.uid, m.size, m.getInternalDate()) for s, m in again]
        assert shown == [(s, m.uid, m.size, m.getInternalDate()) for s, m in first]

        # Another session expunges message 2 straight in Dovecot; this one is not told yet.
        other, other_logout = await _account(dovecot)
        try:
            theirs = await other.select("Facts", True)
            await theirs.store(imap4.MessageSet(2, 2), ["\\Deleted"], 1, uid=False)
            await theirs.expunge()
        finally:
            other_logout()
        ((_, gone),) = await mailbox.fetch(imap4.MessageSet(2, 2), uid=False)
        with pytest.raises(MessageExpunged):
            await gone.load()
    finally:
        logout()
