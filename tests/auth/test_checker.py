"""The cred checker (scrypt off the reactor thread) and the realm over the Maildir store."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.mail.imap4 import IAccount
from zope.interface.verify import verifyObject

from transcoder.auth import AccountsChecker, AccountsFile, MailRealm, make_portal
from transcoder.store import MaildirStore


@pytest.fixture
def accounts(tmp_path: Path) -> AccountsFile:
    """An accounts file holding alice@example.org with password 'pw'."""
    accounts = AccountsFile(tmp_path / "accounts")
    accounts.add("alice@example.org", "pw")
    return accounts


def test_providers(accounts: AccountsFile, tmp_path: Path) -> None:
    """The checker and realm provide the cred interfaces they claim."""
    assert verifyObject(ICredentialsChecker, AccountsChecker(accounts))
    assert verifyObject(IRealm, MailRealm(MaildirStore(tmp_path / "mail")))


@pytest_twisted.inlineCallbacks
def test_checker_accepts_right_password_off_thread(accounts: AccountsFile):
    """The avatar id is the lowercased address; the check does not run on the reactor thread."""
    d = AccountsChecker(accounts).requestAvatarId(UsernamePassword(b"Alice@Example.ORG", b"pw"))
    assert not d.called  # scrypt is running in the threadpool, the reactor is free
    avatar_id = yield d
    assert avatar_id == "alice@example.org"


@pytest.mark.parametrize(
    "username, password",
    [
        (b"alice@example.org", b"wrong"),
        (b"bob@example.org", b"pw"),
        (b"not an address", b"pw"),
        (b"\xff\xfe@example.org", b"pw"),
        (b"", b""),
    ],
)
@pytest_twisted.inlineCallbacks
def test_checker_rejects(accounts: AccountsFile, username: bytes, password: bytes):
    """Wrong passwords, unknown, malformed and non-UTF-8 logins all fail with UnauthorizedLogin."""
    checker = AccountsChecker(accounts)
    with pytest.raises(UnauthorizedLogin):
        yield checker.requestAvatarId(UsernamePassword(username, password))


@pytest_twisted.inlineCallbacks
def test_portal_login_yields_maildir_account(accounts: AccountsFile, tmp_path: Path):
    """make_portal logs a user in to their IMAP account in the Maildir store."""
    portal = make_portal(accounts, MaildirStore(tmp_path / "mail"))
    creds = UsernamePassword(b"ALICE@example.org", b"pw")
    iface, avatar, logout = yield portal.login(creds, None, IAccount)
    assert iface is IAccount
    assert IAccount.providedBy(avatar)
    assert avatar.address == "alice@example.org"
    logout()


@pytest_twisted.inlineCallbacks
def test_portal_login_sees_account_added_later(accounts: AccountsFile, tmp_path: Path):
    """An account added to the file after the portal was built can log in (no restart)."""
    portal = make_portal(accounts, MaildirStore(tmp_path / "mail"))
    AccountsFile(accounts.path).add("carol@example.org", "pw3")
    _, avatar, _ = yield portal.login(
        UsernamePassword(b"carol@example.org", b"pw3"), None, IAccount
    )
    assert avatar.address == "carol@example.org"


def test_realm_refuses_other_interfaces(tmp_path: Path) -> None:
    """The realm only hands out IMAP accounts."""
    realm = MailRealm(MaildirStore(tmp_path / "mail"))
    with pytest.raises(NotImplementedError):
        realm.requestAvatar("alice@example.org", None, ICredentialsChecker)
