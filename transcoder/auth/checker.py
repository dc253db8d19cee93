"""Twisted cred glue: a password checker over the accounts file and a realm over the mail store.

``make_portal(accounts, store)`` is what the service hands to the IMAP
factory; embedders may combine :class:`AccountsChecker` with their own realm,
or our :class:`MailRealm` with their own checker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.mail.imap4 import IAccount
from zope.interface import implementer

from transcoder.auth.accounts import AccountsFile, normalize_address

#: Runs ``f(*args)`` off the reactor thread and returns a Deferred of its result.
RunBlocking = Callable[..., "Deferred[Any]"]


class AccountSource(Protocol):
    """What :class:`MailRealm` needs of a store (``transcoder.store.MaildirStore``)."""

    def account(self, address: str) -> Any:
        """The IAccount of ``address``."""


def _verify(accounts: AccountsFile, username: bytes | str, password: bytes | str) -> str:
    """Check a username/password pair; the normalised address, or UnauthorizedLogin.

    Runs in a worker thread: scrypt costs ~50 ms of CPU.  A username that is
    not valid UTF-8 is still checked (against no account) so that every
    failure costs the same.
    """
    if isinstance(username, bytes):
        try:
            address = username.decode("utf-8")
        except UnicodeDecodeError:
            address = ""
    else:
        address = username
    if not accounts.verify(address, password):
        raise UnauthorizedLogin("Authentication failed")
    return normalize_address(address)


@implementer(ICredentialsChecker)
class AccountsChecker:
    """Checks IUsernamePassword credentials against an :class:`AccountsFile`.

    The avatar id is the account's normalised (lowercased) address, a str.
    Every failure -- unknown account, wrong password, malformed login -- is
    the same UnauthorizedLogin.  ``run_blocking`` runs the scrypt
    verification off the reactor thread (default: the reactor's threadpool).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, accounts: AccountsFile, run_blocking: RunBlocking = deferToThread) -> None:
        self.accounts = accounts
        self._run_blocking = run_blocking

    def requestAvatarId(self, credentials: Any) -> Deferred[str]:
        """Deferred firing the address, or failing with UnauthorizedLogin."""
        return self._run_blocking(
            _verify, self.accounts, credentials.username or b"", credentials.password or b""
        )


@implementer(IRealm)
class MailRealm:
    """Hands out the IMAP account (``IAccount``) of an authenticated address from a mail store."""

    def __init__(self, store: AccountSource) -> None:
        self.store = store

    def requestAvatar(
        self, avatarId: str | bytes, mind: object, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        """``(IAccount, account, logout)``; NotImplementedError if IAccount is not asked for."""
        if IAccount not in interfaces:
            raise NotImplementedError("MailRealm only provides IAccount")
        address = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
        account = self.store.account(address)
        return IAccount, account, _no_logout


def _no_logout() -> None:
    """Logout hook: a Maildir account holds nothing that needs releasing."""


def make_portal(
    accounts: AccountsFile, store: AccountSource, run_blocking: RunBlocking = deferToThread
) -> Portal:
    """A cred Portal serving ``store``'s accounts to the holders of ``accounts``' passwords."""
    return Portal(MailRealm(store), [AccountsChecker(accounts, run_blocking)])
