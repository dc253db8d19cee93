"""Twisted cred glue: a password checker over the accounts file and a realm over the mail store.

``make_portal(accounts, store)`` is what the service hands to the IMAP
factory; embedders may combine :class:`AccountsChecker` with their own realm,
or our :class:`MailRealm` with their own checker.  Given a
:class:`~transcoder.auth.verification_cache.VerificationCache`, the checker
answers a LOGIN it verified recently without running scrypt again (see that
module for what is kept and the trade-off).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.mail.imap4 import IAccount
from zope.interface import implementer

from transcoder.auth.accounts import AccountsFile, normalize_address
from transcoder.auth.verification_cache import VerificationCache
from transcoder.errors import InvalidAccount

#: Runs ``f(*args)`` off the reactor thread and returns a Deferred of its result.
RunBlocking = Callable[..., "Deferred[Any]"]


class AccountSource(Protocol):
    """What :class:`MailRealm` needs of a store (``transcoder.store.MaildirStore``)."""

    def account(self, address: str) -> Any:
        """The IAccount of ``address``."""


def _login_text(username: bytes | str) -> str:
    """The login as text; ``""`` (no account) when it is not valid UTF-8."""
    if isinstance(username, bytes):
        try:
            return username.decode("utf-8")
        except UnicodeDecodeError:
            return ""
    return username


def _cache_key(username: bytes | str, password: bytes | str) -> tuple[str, bytes] | None:
    """``(normalised address, password octets)`` as the cache knows them, or None (no account)."""
    try:
        address = normalize_address(_login_text(username))
    except InvalidAccount:
        return None
    return address, password.encode("utf-8") if isinstance(password, str) else password


def _verify(accounts: AccountsFile, username: bytes | str, password: bytes | str) -> str:
    """Check a username/password pair; the normalised address, or UnauthorizedLogin.

    Runs in a worker thread: scrypt costs ~50-300 ms of CPU.  A username that
    is not valid UTF-8 is still checked (against no account) so that every
    failure costs the same.
    """
    address = _login_text(username)
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
    With a ``cache``, a pair that verified within its TTL under the current
    accounts file is answered at once, and each new success is remembered;
    failures always run scrypt and are never remembered.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        accounts: AccountsFile,
        run_blocking: RunBlocking = deferToThread,
        cache: VerificationCache | None = None,
    ) -> None:
        self.accounts = accounts
        self._run_blocking = run_blocking
        self._cache = cache

    def requestAvatarId(self, credentials: Any) -> Deferred[str]:
        """Deferred firing the address, or failing with UnauthorizedLogin."""
        username, password = credentials.username or b"", credentials.password or b""
        key = _cache_key(username, password) if self._cache is not None else None
        if self._cache is None or key is None:
            return self._run_blocking(_verify, self.accounts, username, password)
        generation = self._cache.sync()
        if self._cache.holds(*key):
            return succeed(key[0])
        d = self._run_blocking(_verify, self.accounts, username, password)
        d.addCallback(self._remember, self._cache, generation, key)
        return d

    @staticmethod
    def _remember(
        address: str, cache: VerificationCache, generation: int, key: tuple[str, bytes]
    ) -> str:
        """Callback of a successful verification: remember it, pass the avatar id on."""
        cache.remember(generation, *key)
        return address


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
    accounts: AccountsFile,
    store: AccountSource,
    run_blocking: RunBlocking = deferToThread,
    cache: VerificationCache | None = None,
) -> Portal:
    """A cred Portal serving ``store``'s accounts to the holders of ``accounts``' passwords.

    ``cache`` (none by default) remembers recent successful verifications.
    """
    return Portal(MailRealm(store), [AccountsChecker(accounts, run_blocking, cache)])
