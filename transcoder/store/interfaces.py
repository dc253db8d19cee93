"""Interfaces and values the IMAP layer relies on beyond Twisted's IMAP interfaces."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.mail.interfaces import IMessageIMAPFile
from zope.interface import Attribute


class IParsedMessage(IMessageIMAPFile):
    """A message whose bytes can be opened and whose MIME structure is known.

    ``open()`` (from IMessageFile) returns a binary file positioned at 0 holding
    exactly the octets the IMAP client sees (CRLF line ends).
    """

    size = Attribute("Octets of the message, == len(open().read()).")

    def entity():  # type: ignore[misc]  # zope.interface methods take no self
        """The :class:`transcoder.mime.entity.Entity` tree of the message's bytes (cached)."""


@dataclass(frozen=True)
class MailboxUpdates:
    """What happened to a mailbox since a session last looked (RFC 3501 section 5.2, 7.3, 7.4).

    ``expunged`` lists sequence numbers in the order the untagged EXPUNGE
    responses must be sent, each relative to the state after the previous one.
    ``exists``/``recent`` are the new counts, ``None`` when unchanged.
    ``flags`` holds ``(sequence number, uid, flags)`` for messages whose flags
    another session changed; those sequence numbers are counted after this
    same update's expunges and new messages, the order the responses go out.
    """

    expunged: tuple[int, ...] = ()
    exists: int | None = None
    recent: int | None = None
    flags: tuple[tuple[int, int, tuple[str, ...]], ...] = ()

    def __bool__(self) -> bool:
        return (
            bool(self.expunged or self.flags) or self.exists is not None or self.recent is not None
        )
