"""store layer (see docs/design.md, "Layers"): Maildir++ behind Twisted's IMAP interfaces.

:class:`MaildirStore` holds every account's Maildir; :class:`MaildirAccount`
is a Twisted ``IAccount``; :class:`MailboxSession` is one SELECT/EXAMINE
(``IMailbox``) with its own sequence numbers; :class:`MaildirMessage` is a
message read lazily from its file.
"""

from transcoder.store.account import MaildirAccount
from transcoder.store.interfaces import IParsedMessage, MailboxUpdates
from transcoder.store.listing import MailboxInfo
from transcoder.store.maildir import MaildirStore
from transcoder.store.message import MaildirMessage
from transcoder.store.session import MailboxSession

__all__ = [
    "IParsedMessage",
    "MailboxInfo",
    "MailboxSession",
    "MailboxUpdates",
    "MaildirAccount",
    "MaildirMessage",
    "MaildirStore",
]
