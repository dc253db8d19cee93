"""The one error hierarchy of imap-transcoder.

Two branches:

* :class:`ClientError` -- the client asked for something we refuse.  Each
  carries the tagged response it maps to (``NO`` or ``BAD``) and, where one
  fits, an RFC 5530 response code.  The message is safe to show the client.
* :class:`ServerError` -- something broke on our side.  The client only ever
  sees an opaque ``NO [SERVERBUG]``; the detail goes to the log.

This module is imported by every layer, sans-IO ones included: it must not
import twisted.
"""

from __future__ import annotations


class TranscoderError(Exception):
    """Base of every error raised by imap-transcoder."""


class ClientError(TranscoderError):
    """A request the client made that we refuse; safe to explain to the client.

    ``response`` is the tagged status (``NO`` or ``BAD``); ``code`` is the
    response code put in brackets before the text (RFC 3501 section 7.1,
    RFC 5530), or ``None``.
    """

    response: str = "NO"
    code: str | None = None

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or "")
        if code is not None:
            self.code = code

    @property
    def text(self) -> str:
        """The human-readable text of the response."""
        return str(self.args[0]) if self.args else ""


class BadCommand(ClientError):
    """Command syntax error."""

    response = "BAD"
    code = "CLIENTBUG"


class LineTooLong(BadCommand):
    """Command line too long."""

    code = "TOOBIG"


class PatternTooComplex(BadCommand):
    """LIST pattern too long or with too many wildcards."""

    code = "LIMIT"  # RFC 5530: an implementation limit


class LiteralTooLarge(ClientError):
    """Literal too large."""

    code = "TOOBIG"


class AuthenticationFailed(ClientError):
    """Authentication failed."""

    code = "AUTHENTICATIONFAILED"


class PrivacyRequired(ClientError):
    """Plaintext authentication is disabled without TLS."""

    code = "PRIVACYREQUIRED"


class MailboxError(ClientError):
    """Mailbox operation refused."""

    code = "CANNOT"


class InvalidMailboxName(MailboxError):
    """Invalid mailbox name."""

    code = "CANNOT"


class MailboxNotFound(MailboxError):
    """No such mailbox."""

    code = "NONEXISTENT"


class MailboxNotFoundTryCreate(MailboxNotFound):
    """No such mailbox (create it first)."""

    code = "TRYCREATE"


class MailboxExists(MailboxError):
    """Mailbox already exists."""

    code = "ALREADYEXISTS"


class MailboxReadOnly(MailboxError):
    """Mailbox is read-only."""

    code = "READ-ONLY"


class MessageNotFound(ClientError):
    """No such message."""

    code = "NONEXISTENT"


class InvalidMessage(ClientError):
    """Malformed message."""

    code = "PARSE"


class UnknownTransferEncoding(ClientError):
    """The part's content-transfer-encoding is unknown (RFC 3516 section 4.3)."""

    code = "UNKNOWN-CTE"


class InvalidTransferEncoding(UnknownTransferEncoding):
    """The part's encoded content is damaged and cannot be decoded.

    A subclass of :class:`UnknownTransferEncoding` (neither can be undone),
    answered ``NO [PARSE]`` (RFC 5530; Dovecot answers the same).
    """

    code = "PARSE"


class InvalidAccount(ClientError):
    """Invalid account name."""

    code = "CANNOT"


class ServerError(TranscoderError):
    """Something failed on the server's side; the client gets an opaque NO."""

    response = "NO"
    code = "SERVERBUG"


class StoreError(ServerError):
    """The mail store could not complete an operation."""


class ConfigurationError(ServerError):
    """The server was configured wrongly (bad option, unreadable file)."""
