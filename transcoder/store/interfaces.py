"""Interfaces and values the IMAP layer relies on beyond Twisted's IMAP interfaces."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.mail.interfaces import IMessageIMAPFile
from zope.interface import Attribute, Interface


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
    ``mailbox_flags`` is set when the mailbox's keywords changed since the
    session was last told: ``(FLAGS, PERMANENTFLAGS)`` to announce before any
    FETCH names a new keyword (RFC 3501 sections 7.2.6 and 7.1).
    """

    expunged: tuple[int, ...] = ()
    exists: int | None = None
    recent: int | None = None
    flags: tuple[tuple[int, int, tuple[str, ...]], ...] = ()
    mailbox_flags: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def __bool__(self) -> bool:
        return (
            bool(self.expunged or self.flags)
            or self.exists is not None
            or self.recent is not None
            or self.mailbox_flags is not None
        )


class IKeywordListener(Interface):
    """A client of a selected mailbox that must hear of new keywords before they are used."""

    def keywords_changed(flags, permanent):  # noqa: N805  (zope.interface: no self)
        """Send ``FLAGS (flags)`` and ``OK [PERMANENTFLAGS (permanent)]`` now.

        Called, on the reactor thread, just before flags naming a keyword the
        client was not told of are handed out (RFC 3501 section 7.2.6).
        """
