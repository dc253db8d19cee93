"""Logins checked by the backend server: the front never stores or sees a password file.

:class:`BackendChecker` is a Twisted cred checker: for a LOGIN or an
AUTHENTICATE PLAIN at the front it opens the client session's backend
connection (:mod:`.connection`) and logs in there with the same
credentials.  The portal's login runs inside the front's failed-login
throttle (:mod:`transcoder.imap.login_check`, :mod:`transcoder.imap.login_gate`),
so the backend sees at most the guesses the throttle lets through, and
nothing after a connection's BYE.  The avatar id it returns is a
:class:`BackendLogin` -- the address and the logged-in connection --
which :class:`BackendRealm` turns into the session's
:class:`~transcoder.backend.account.BackendAccount`; logging out closes the
backend connection.

Outcomes: the backend's ``NO [AUTHENTICATIONFAILED]`` (or any NO/BAD to
LOGIN but ``[UNAVAILABLE]``) is a failed login (``UnauthorizedLogin``: the
front's uniform, delayed ``NO [AUTHENTICATIONFAILED]`` and the fail2ban log
line); a backend that cannot be reached or answers ``[UNAVAILABLE]`` is no
verdict: the client gets ``NO [UNAVAILABLE]`` and the throttle counts nothing.

Before LOGIN the front tells the backend the client's address and port
(``ID``, RFC 2971, with Dovecot's ``x-originating-ip`` / ``x-originating-port``).

The backend must present the front's hierarchy delimiter, ``/`` (for
Dovecot: ``separator = /`` in its inbox namespace; docs/design.md, "Backend
front"): checked after each login, a backend with another one is refused
(logged) rather than served with names the front would misread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail.imap4 import IAccount
from zope.interface import implementer

from transcoder.auth.accounts import normalize_address
from transcoder.backend.connection import (
    BackendProtocol,
    BackendRefused,
    BackendSettings,
    BackendUnavailable,
    Literal,
    connect,
)
from transcoder.backend.response_syntax import String, quote
from transcoder.errors import InvalidAccount

log = Logger()

#: The hierarchy delimiter the IMAP layer uses (transcoder.imap.mailboxes.DELIMITER).
DELIMITER = b"/"


@dataclass(frozen=True)
class BackendLogin:
    """The avatar id of a login the backend accepted: the address and its connection."""

    address: str
    connection: BackendProtocol


def _argument(value: bytes) -> bytes | Literal:
    quoted = quote(value)
    return Literal(value) if quoted is None else quoted


@implementer(ICredentialsChecker)
class BackendChecker:
    """Checks IUsernamePassword credentials by logging into the backend (module docstring)."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, reactor: Any, settings: BackendSettings) -> None:
        self.reactor = reactor
        self.settings = settings

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[BackendLogin]:
        """A Deferred firing a :class:`BackendLogin`, or failing with UnauthorizedLogin."""
        return defer.Deferred.fromCoroutine(self._login(credentials))

    async def _login(self, credentials: Any) -> BackendLogin:
        username = credentials.username or b""
        password = credentials.password or b""
        username = username.encode("utf-8") if isinstance(username, str) else username
        password = password.encode("utf-8") if isinstance(password, str) else password
        try:
            address = normalize_address(username.decode("utf-8"))
        except (UnicodeDecodeError, InvalidAccount):
            raise UnauthorizedLogin("Authentication failed") from None
        if not password:
            raise UnauthorizedLogin("Authentication failed")
        connection = await connect(self.reactor, self.settings)
        try:
            self._send_client_address(connection, credentials)
            await connection.command(b"LOGIN", _argument(username), _argument(password))
        except BackendRefused as e:
            connection.transport.loseConnection()
            if e.code == "UNAVAILABLE":
                raise BackendUnavailable("Backend server unavailable") from None
            raise UnauthorizedLogin("Authentication failed") from None
        except BaseException:
            connection.transport.loseConnection()
            raise
        try:
            await self._check_delimiter(connection)
        except BaseException:
            connection.logout()
            raise
        return BackendLogin(address, connection)

    @staticmethod
    def _send_client_address(connection: BackendProtocol, credentials: Any) -> None:
        """``ID ("x-originating-ip" ...)`` before LOGIN, pipelined (RFC 2971; Dovecot's names).

        A backend that trusts the front (Dovecot: ``login_trusted_networks``)
        then logs, limits and slows failed logins per real client address
        rather than per front; any other ignores it.  Its answer is not waited for.
        """
        host = getattr(credentials, "client_host", None)
        if not host or b"ID" not in connection.capabilities:
            return
        fields = [b'"x-originating-ip"', quote(host.encode("ascii", "replace")) or b"NIL"]
        port = getattr(credentials, "client_port", None)
        if isinstance(port, int):
            fields += [b'"x-originating-port"', b'"%d"' % port]
        connection.command(b"ID", b"(" + b" ".join(fields) + b")").addErrback(lambda _: None)

    async def _check_delimiter(self, connection: BackendProtocol) -> None:
        result = await connection.command(b'LIST "" ""')
        for response in result.data(b"LIST"):
            tokens = response.tokens
            delimiter = tokens[2] if len(tokens) > 2 else None
            if isinstance(delimiter, String) and delimiter.value == DELIMITER:
                return
        log.error(
            "the backend {address} does not use '/' as hierarchy delimiter"
            " (Dovecot: separator = / in the inbox namespace); logins refused",
            address=self.settings.address,
        )
        raise BackendUnavailable("Backend server misconfigured")


@implementer(IRealm)
class BackendRealm:
    """Hands out the :class:`~transcoder.backend.account.BackendAccount` of a backend login."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock

    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        """``(IAccount, account, logout)``; logging out closes the backend connection."""
        from transcoder.backend.account import BackendAccount

        if IAccount not in interfaces:
            raise NotImplementedError("BackendRealm only provides IAccount")
        if not isinstance(avatarId, BackendLogin):
            raise TypeError("BackendRealm takes the avatar ids of BackendChecker")
        account = BackendAccount(avatarId.address, avatarId.connection, self.clock)
        return IAccount, account, avatarId.connection.logout


def make_backend_portal(reactor: Any, settings: BackendSettings) -> Portal:
    """A cred Portal whose logins are checked by, and whose accounts live on, the backend."""
    return Portal(BackendRealm(reactor), [BackendChecker(reactor, settings)])
