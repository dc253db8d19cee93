"""Every interface the store claims is provided in full (zope.interface.verify)."""

from __future__ import annotations

import io

from twisted.mail import imap4
from twisted.mail.imap4 import MessageSet
from zope.interface.verify import verifyObject

from tests.store.helpers import append
from transcoder.store import IParsedMessage, MaildirAccount


def test_account_interfaces(account: MaildirAccount) -> None:
    """MaildirAccount provides IAccount and INamespacePresenter."""
    assert verifyObject(imap4.IAccount, account)
    assert verifyObject(imap4.INamespacePresenter, account)


def test_mailbox_info_interface(account: MaildirAccount) -> None:
    """LIST results provide IMailboxInfo."""
    for _, info in account.listMailboxes("", "*"):
        assert verifyObject(imap4.IMailboxInfo, info)


def test_session_interfaces(account: MaildirAccount) -> None:
    """MailboxSession provides IMailbox, IMessageCopier, ICloseableMailbox, ISearchableMailbox."""
    session = account.select("INBOX")
    for iface in (
        imap4.IMailbox,
        imap4.IMessageCopier,
        imap4.ICloseableMailbox,
        imap4.ISearchableMailbox,
    ):
        assert verifyObject(iface, session)


def test_message_interfaces(account: MaildirAccount) -> None:
    """Messages provide IMessage, IMessagePart, IMessageFile, IParsedMessage; parts IMessagePart."""
    append(account, b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n")
    session = account.select("INBOX")
    assert session is not None
    ((_, msg),) = session.fetch(MessageSet(1), uid=True)
    for iface in (imap4.IMessage, imap4.IMessagePart, imap4.IMessageFile, IParsedMessage):
        assert verifyObject(iface, msg)
    assert verifyObject(imap4.IMessagePart, msg.getSubPart(0))
    with msg.open() as f:
        assert isinstance(f, io.BufferedReader) and msg.size == len(f.read())
