"""The login cache: recent successful verifications skip scrypt, and nothing else does (issue 10).

The checker runs each scrypt verification through its injected executor;
:class:`CountingExecutor` runs it at once on the test's thread and counts
the runs, so "scrypt ran" is observable without patching anything.  The
accounts files are real, changed the way an operator changes them.
"""

from __future__ import annotations

import imaplib
import io
from pathlib import Path
from typing import Any

import pytest
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.python.failure import Failure

from tests.integration.conftest import PASSWORD, RunningServer, admin, free_port
from transcoder import admin as admin_cli
from transcoder.auth import AccountsChecker, AccountsFile
from transcoder.auth.verification_cache import VerificationCache
from transcoder.service import Options, verification_cache

KEY = bytes(range(32))
TTL = 300.0


class CountingExecutor:
    """Runs blocking work at once on the calling thread and counts the runs (one scrypt each)."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self, f: Any, *args: Any) -> defer.Deferred[Any]:
        self.runs += 1
        return defer.maybeDeferred(f, *args)


class Logins:
    """A checker over a real accounts file with a cache on a fake clock."""

    def __init__(self, path: Path, max_entries: int = 100) -> None:
        self.accounts = AccountsFile(path)
        self.clock = Clock()
        self.cache = VerificationCache(
            KEY, self.clock, self.accounts.generation, ttl=TTL, max_entries=max_entries
        )
        self.scrypt = CountingExecutor()
        self.checker = AccountsChecker(self.accounts, self.scrypt, self.cache)

    def login(self, user: str, password: str) -> str | None:
        """The avatar id, or None when refused with UnauthorizedLogin."""
        results: list[Any] = []
        self.checker.requestAvatarId(UsernamePassword(user.encode(), password.encode())).addBoth(
            results.append
        )
        assert results, "a synchronous executor answers at once"
        if isinstance(results[0], Failure):
            results[0].trap(UnauthorizedLogin)
            return None
        return str(results[0])


@pytest.fixture
def logins(tmp_path: Path) -> Logins:
    """Accounts alice, bob and carol (passwords pw-a, pw-b, pw-c) behind a cached checker."""
    accounts = AccountsFile(tmp_path / "accounts")
    for name in ("alice", "bob", "carol"):
        accounts.add(f"{name}@example.org", f"pw-{name[0]}")
    return Logins(tmp_path / "accounts")


def test_second_login_skips_scrypt(logins: Logins) -> None:
    """A pair that verified is answered again without running scrypt, for any case of the login."""
    assert logins.login("alice@example.org", "pw-a") == "alice@example.org"
    assert logins.scrypt.runs == 1
    assert logins.login("Alice@Example.ORG", "pw-a") == "alice@example.org"
    assert logins.scrypt.runs == 1


def test_wrong_password_never_served_from_cache(logins: Logins) -> None:
    """After a success, wrong passwords and other accounts still run scrypt and fail, every time."""
    logins.login("alice@example.org", "pw-a")
    for _ in range(2):
        assert logins.login("alice@example.org", "pw-b") is None
        assert logins.login("alice@example.org", "pw-a ") is None
        assert logins.login("bob@example.org", "pw-a") is None
    assert logins.scrypt.runs == 7
    assert len(logins.cache) == 1


def test_failed_verification_is_not_cached(logins: Logins) -> None:
    """A refused pair leaves nothing behind: the cache stays empty."""
    assert logins.login("alice@example.org", "wrong") is None
    assert logins.login("nobody@example.org", "pw-a") is None
    assert logins.login("not an address", "pw-a") is None
    assert len(logins.cache) == 0


def test_changed_password_refuses_the_old_one_at_once(logins: Logins, tmp_path: Path) -> None:
    """``transcoder-admin user passwd`` voids the cached old password: refused at the next login."""
    logins.login("alice@example.org", "pw-a")
    logins.login("alice@example.org", "pw-a")
    status = admin_cli.main(
        ["--data", str(tmp_path), "user", "passwd", "alice@example.org"],
        stdin=io.StringIO("new secret\n"),
        stdout=io.StringIO(),
    )
    assert status == 0
    assert logins.login("alice@example.org", "pw-a") is None
    assert logins.login("alice@example.org", "new secret") == "alice@example.org"


def test_removed_account_refused_at_once(logins: Logins, tmp_path: Path) -> None:
    """A cached account deleted from the file cannot log in any more."""
    logins.login("bob@example.org", "pw-b")
    AccountsFile(tmp_path / "accounts").remove("bob@example.org")
    assert logins.login("bob@example.org", "pw-b") is None


def test_any_change_of_the_file_drops_the_cache(logins: Logins, tmp_path: Path) -> None:
    """Adding an unrelated account forgets every remembered verification."""
    logins.login("alice@example.org", "pw-a")
    AccountsFile(tmp_path / "accounts").add("dave@example.org", "pw-d")
    assert logins.login("alice@example.org", "pw-a") == "alice@example.org"
    assert logins.scrypt.runs == 2


def test_verification_overtaken_by_a_password_change_is_not_cached(tmp_path: Path) -> None:
    """A success computed while the file changed is not remembered (the old password is refused)."""
    logins = Logins(tmp_path / "accounts")
    logins.accounts.add("alice@example.org", "old")

    def verify_then_change(f: Any, *args: Any) -> defer.Deferred[Any]:
        d = defer.maybeDeferred(f, *args)
        AccountsFile(tmp_path / "accounts").set_password("alice@example.org", "new")
        return d

    logins.checker = AccountsChecker(logins.accounts, verify_then_change, logins.cache)
    assert logins.login("alice@example.org", "old") == "alice@example.org"  # it was right then
    assert len(logins.cache) == 0
    logins.checker = AccountsChecker(logins.accounts, logins.scrypt, logins.cache)
    assert logins.login("alice@example.org", "old") is None


def test_entries_expire_after_the_ttl(logins: Logins) -> None:
    """Within the TTL a login is cached; after it scrypt runs again; use does not extend it."""
    logins.login("alice@example.org", "pw-a")
    logins.clock.advance(TTL - 1)
    logins.login("alice@example.org", "pw-a")
    assert logins.scrypt.runs == 1
    logins.clock.advance(1)
    logins.login("alice@example.org", "pw-a")
    assert logins.scrypt.runs == 2


def test_expired_entries_leave_memory_without_logins(logins: Logins) -> None:
    """Once the TTL has passed the entries are gone even if nobody logs in again."""
    logins.login("alice@example.org", "pw-a")
    logins.clock.advance(TTL / 2)
    logins.login("bob@example.org", "pw-b")
    logins.clock.advance(TTL / 2)
    assert len(logins.cache) == 1  # alice's went at its expiry, bob's is still valid
    logins.clock.advance(TTL / 2)
    assert len(logins.cache) == 0
    assert logins.clock.getDelayedCalls() == []


def test_size_bound_evicts_least_recently_used(tmp_path: Path) -> None:
    """With room for two, a third success evicts the least recently used; the bound holds."""
    AccountsFile(tmp_path / "accounts").add("alice@example.org", "pw-a")
    for name in ("bob", "carol"):
        AccountsFile(tmp_path / "accounts").add(f"{name}@example.org", f"pw-{name[0]}")
    logins = Logins(tmp_path / "accounts", max_entries=2)
    logins.login("alice@example.org", "pw-a")
    logins.login("bob@example.org", "pw-b")
    logins.login("alice@example.org", "pw-a")  # alice is now the most recently used
    logins.login("carol@example.org", "pw-c")  # evicts bob
    assert len(logins.cache) == 2
    assert logins.scrypt.runs == 3
    logins.login("alice@example.org", "pw-a")
    assert logins.scrypt.runs == 3
    logins.login("bob@example.org", "pw-b")
    assert logins.scrypt.runs == 4
    assert len(logins.cache) == 2


def test_cache_refuses_weak_key_and_bad_bounds(tmp_path: Path) -> None:
    """The HMAC key must be at least 16 bytes; TTL and size must be positive."""
    generation = AccountsFile(tmp_path / "accounts").generation
    with pytest.raises(ValueError, match="16"):
        VerificationCache(b"short", Clock(), generation)
    with pytest.raises(ValueError):
        VerificationCache(KEY, Clock(), generation, ttl=0)
    with pytest.raises(ValueError):
        VerificationCache(KEY, Clock(), generation, max_entries=0)


def _options(tmp_path: Path, *args: str) -> Options:
    options = Options()
    options.parseOptions(["--data", str(tmp_path), *args])
    return options


def test_auth_cache_ttl_option(tmp_path: Path) -> None:
    """--auth-cache-ttl: 300 s by default, 0 turns the cache off, negative is refused."""
    accounts = AccountsFile(tmp_path / "accounts")
    default = verification_cache(_options(tmp_path), accounts)
    assert default is not None and default.ttl == 300
    assert verification_cache(_options(tmp_path, "--auth-cache-ttl", "0"), accounts) is None
    with pytest.raises(usage.UsageError):
        _options(tmp_path, "--auth-cache-ttl", "-1")


def test_running_server_refuses_old_password_after_passwd(tmp_path: Path) -> None:
    """The real server (cache on by default) refuses a changed password at the next LOGIN."""
    data = tmp_path / "data"
    assert admin(data, "user", "add", "alice@example.org", stdin=PASSWORD + "\n").returncode == 0
    server = RunningServer(data, free_port(), free_port())
    server.start()
    try:
        for _ in range(2):  # the second login is the cached one
            imap = imaplib.IMAP4("127.0.0.1", server.imap_port)
            assert imap.login("alice@example.org", PASSWORD)[0] == "OK"
            imap.logout()
        done = admin(data, "user", "passwd", "alice@example.org", stdin="changed pw\n")
        assert done.returncode == 0, done.stderr
        imap = imaplib.IMAP4("127.0.0.1", server.imap_port)
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("alice@example.org", PASSWORD)
        imap.shutdown()
        imap = imaplib.IMAP4("127.0.0.1", server.imap_port)
        assert imap.login("alice@example.org", "changed pw")[0] == "OK"
        imap.logout()
    finally:
        server.stop()
