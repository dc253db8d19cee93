"""The accounts file: format, scrypt hashing, validation, atomic writes, reloading."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import time
from pathlib import Path

import pytest

from transcoder.auth.accounts import (
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    Account,
    AccountsFile,
    DuplicateAccountError,
    UnknownAccountError,
    WeakPasswordError,
    normalize_address,
)
from transcoder.errors import ConfigurationError, InvalidAccount


@pytest.fixture
def accounts(tmp_path: Path) -> AccountsFile:
    """An accounts file in a fresh directory."""
    return AccountsFile(tmp_path / "accounts")


def _scrypt_line(address: str, password: bytes, salt: bytes, n: int, r: int, p: int) -> str:
    """An accounts line computed independently of the module under test."""
    digest = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=2**26, dklen=32)
    b64 = base64.b64encode
    return f"{address}:scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}\n"


def test_add_then_verify(accounts: AccountsFile) -> None:
    """The right password verifies; a wrong one and an unknown account do not."""
    accounts.add("alice@example.org", "s3cret")
    assert accounts.verify("alice@example.org", "s3cret")
    assert not accounts.verify("alice@example.org", "s3cret ")
    assert not accounts.verify("bob@example.org", "s3cret")


def test_line_format_is_self_describing_scrypt(tmp_path: Path) -> None:
    """Each line is address:scrypt$N$r$p$salt$hash, matching hashlib.scrypt with the salt drawn."""
    salt = bytes(range(16))
    accounts = AccountsFile(tmp_path / "accounts", random_bytes=lambda n: salt[:n])
    account = accounts.add("alice@example.org", "s3cret")
    expected = _scrypt_line("alice@example.org", b"s3cret", salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    lines = [ln for ln in (tmp_path / "accounts").read_text().splitlines(True) if ln[0] != "#"]
    assert lines == [expected]
    assert account == Account("alice@example.org", expected.split(":", 1)[1].strip())
    assert (SCRYPT_N, SCRYPT_R, SCRYPT_P) == (2**14, 8, 1)


def test_salts_are_per_account(accounts: AccountsFile) -> None:
    """Two accounts with the same password get different salts and hashes."""
    a = accounts.add("a@example.org", "same")
    b = accounts.add("b@example.org", "same")
    assert a.password_hash.split("$")[4] != b.password_hash.split("$")[4]
    assert a.password_hash.split("$")[5] != b.password_hash.split("$")[5]


def test_logins_are_lowercased_whole(accounts: AccountsFile) -> None:
    """Addresses are stored lowercased and looked up in any case."""
    accounts.add("Alice.Smith@Example.ORG", "pw")
    assert accounts.addresses() == ["alice.smith@example.org"]
    account = accounts.get("ALICE.SMITH@example.org")
    assert account is not None and account.address == "alice.smith@example.org"
    assert accounts.verify("alice.SMITH@EXAMPLE.org", "pw")


def test_file_is_private_and_written_whole(accounts: AccountsFile, tmp_path: Path) -> None:
    """The file is mode 0600 and no temporary file is left beside it."""
    accounts.add("a@example.org", "pw")
    accounts.add("b@example.org", "pw")
    assert stat.S_IMODE((tmp_path / "accounts").stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["accounts", "accounts.lock"]


def test_add_existing_refused(accounts: AccountsFile) -> None:
    """Adding an existing account (in any case) fails and keeps the old password."""
    accounts.add("a@example.org", "old")
    with pytest.raises(DuplicateAccountError):
        accounts.add("A@EXAMPLE.ORG", "new")
    assert accounts.verify("a@example.org", "old")


def test_remove(accounts: AccountsFile) -> None:
    """A removed account no longer verifies; removing an unknown one fails."""
    accounts.add("a@example.org", "pw")
    accounts.add("b@example.org", "pw")
    accounts.remove("A@example.org")
    assert accounts.addresses() == ["b@example.org"]
    assert not accounts.verify("a@example.org", "pw")
    with pytest.raises(UnknownAccountError):
        accounts.remove("a@example.org")


def test_set_password(accounts: AccountsFile) -> None:
    """A new password replaces the old one, with a fresh salt; unknown accounts fail."""
    old = accounts.add("a@example.org", "old")
    new = accounts.set_password("a@example.org", "new")
    assert old.password_hash.split("$")[4] != new.password_hash.split("$")[4]
    assert accounts.verify("a@example.org", "new")
    assert not accounts.verify("a@example.org", "old")
    with pytest.raises(UnknownAccountError):
        accounts.set_password("nobody@example.org", "x")


def test_empty_password_refused(accounts: AccountsFile) -> None:
    """An empty password is refused and nothing is written."""
    with pytest.raises(WeakPasswordError):
        accounts.add("a@example.org", "")
    assert accounts.addresses() == []


def test_non_ascii_and_bytes_passwords(accounts: AccountsFile) -> None:
    """Passwords are compared as UTF-8 octets: str and its encoding are the same password."""
    accounts.add("a@example.org", "pässwörd")
    assert accounts.verify("a@example.org", "pässwörd".encode())
    assert not accounts.verify("a@example.org", "passwort")


@pytest.mark.parametrize(
    "address",
    [
        "",
        "alice",
        "alice@",
        "@example.org",
        "a b@example.org",
        "a\tb@example.org",
        "alice@example.org\n",
        "a:b@example.org",
        "a/b@example.org",
        "../x@example.org",
        "a\\b@example.org",
        "a@b@example.org",
        ".alice@example.org",
        "alice.@example.org",
        "al..ice@example.org",
        "alice@exa mple.org",
        "alice@-example.org",
        "alice@example..org",
        "alice@example.org.",
        "alice@exa_mple.org",
        "x" * 65 + "@example.org",
        "a@" + "b" * 250 + ".org",
    ],
)
def test_invalid_addresses_refused(accounts: AccountsFile, address: str) -> None:
    """Strings that are not plain email addresses are refused as logins."""
    with pytest.raises(InvalidAccount):
        accounts.add(address, "pw")
    assert accounts.get(address) is None
    assert not accounts.verify(address, "pw")


@pytest.mark.parametrize(
    "address", ["a.b+tag@sub.example.org", "x@localhost", "o'neil@xn--bcher-kva.example"]
)
def test_valid_addresses_accepted(address: str) -> None:
    """Ordinary addresses, single-label domains and IDN A-labels are accepted as they are."""
    assert normalize_address(address) == address


def test_running_reader_sees_changes_without_restart(tmp_path: Path) -> None:
    """An instance that already read the file sees accounts added and removed by another one."""
    server = AccountsFile(tmp_path / "accounts")
    admin = AccountsFile(tmp_path / "accounts")
    assert server.addresses() == []
    admin.add("a@example.org", "pw")
    assert server.verify("a@example.org", "pw")
    admin.set_password("a@example.org", "pw2")
    assert server.verify("a@example.org", "pw2")
    admin.remove("a@example.org")
    assert server.get("a@example.org") is None


def test_raised_parameters_on_a_line_verify(tmp_path: Path) -> None:
    """A line hashed with other scrypt parameters (raised later) still verifies."""
    path = tmp_path / "accounts"
    path.write_text(_scrypt_line("a@example.org", b"pw", b"salty-salt", 2**15, 8, 2))
    accounts = AccountsFile(path)
    assert accounts.verify("a@example.org", "pw")
    assert not accounts.verify("a@example.org", "pW")


def test_comments_and_blank_lines_ignored(tmp_path: Path) -> None:
    """Blank lines and # comments are not accounts."""
    path = tmp_path / "accounts"
    line = _scrypt_line("a@example.org", b"pw", b"0123456789abcdef", 2**10, 8, 1)
    path.write_text("# accounts\n\n" + line + "   \n")
    assert AccountsFile(path).addresses() == ["a@example.org"]


@pytest.mark.parametrize(
    "line",
    [
        "no-colon-here",
        "a@example.org:md5$abc",
        "a@example.org:scrypt$16384$8$1$notbase64!$AAAA",
        "a@example.org:scrypt$1000$8$1$AAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "a@example.org:scrypt$1073741824$8$1$AAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "not an address:scrypt$16384$8$1$AAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ],
)
def test_damaged_file_reported_with_line_number(tmp_path: Path, line: str) -> None:
    """A malformed line is a configuration error naming the line, not a silent skip."""
    path = tmp_path / "accounts"
    path.write_text("# header\n" + line + "\n")
    with pytest.raises(ConfigurationError, match="line 2"):
        AccountsFile(path).addresses()


def test_missing_file_means_no_accounts(tmp_path: Path) -> None:
    """Without a file there are no accounts, and verification simply fails."""
    accounts = AccountsFile(tmp_path / "accounts")
    assert accounts.addresses() == []
    assert not accounts.verify("a@example.org", "pw")


def _cost(accounts: AccountsFile, address: str) -> float:
    """The fastest of three verifications, in seconds."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        accounts.verify(address, "wrong")
        times.append(time.perf_counter() - start)
    return min(times)


def test_unknown_account_costs_a_scrypt_too(accounts: AccountsFile) -> None:
    """Verifying an unknown or invalid login costs about as much as a known one (no oracle)."""
    accounts.add("a@example.org", "pw")
    known = _cost(accounts, "a@example.org")
    assert _cost(accounts, "nobody@example.org") > known / 3
    assert _cost(accounts, "not an address") > known / 3
