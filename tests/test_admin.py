"""``transcoder-admin``, run as a real subprocess on a temporary data directory."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from transcoder.auth import AccountsFile
from transcoder.store import MaildirStore

REPO = Path(__file__).resolve().parents[1]
MESSAGE = b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: hello admin\r\n\r\nHi!\r\n"


def admin(
    data: Path, *args: str, stdin: bytes | None = b"", tty: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m transcoder.admin --data DATA ARGS`` with ``stdin`` (or a terminal)."""
    command = [sys.executable, "-m", "transcoder.admin", "--data", str(data), *args]
    if tty:
        primary, secondary = pty.openpty()
        try:
            done = subprocess.run(
                command, stdin=secondary, capture_output=True, cwd=REPO, timeout=60, check=False
            )
        finally:
            os.close(primary)
            os.close(secondary)
    else:
        done = subprocess.run(
            command, input=stdin, capture_output=True, cwd=REPO, timeout=60, check=False
        )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def assert_refused(done: subprocess.CompletedProcess[str], words: str) -> None:
    """Exit status 1 and one clear line on stderr containing ``words``, no traceback."""
    assert done.returncode == 1, done
    assert words in done.stderr
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def accounts(data: Path) -> AccountsFile:
    """The data directory's accounts file, read independently of the CLI."""
    return AccountsFile(data / "accounts")


def test_user_add_reads_password_from_stdin(tmp_path: Path) -> None:
    """user add takes the first line of a non-terminal stdin as the password."""
    data = tmp_path / "data"
    done = admin(data, "user", "add", "Alice@Example.ORG", stdin=b"s3cret pass\n")
    assert done.returncode == 0, done.stderr
    assert "added alice@example.org" in done.stdout
    assert "s3cret" not in done.stdout
    assert accounts(data).verify("alice@example.org", "s3cret pass")


def test_user_add_on_a_terminal_generates_a_password(tmp_path: Path) -> None:
    """On a terminal with no password given, a random password is generated and printed."""
    done = admin(tmp_path, "user", "add", "alice@example.org", tty=True)
    assert done.returncode == 0, done.stderr
    password = done.stdout.split("password: ", 1)[1].strip()
    assert len(password) >= 20
    assert accounts(tmp_path).verify("alice@example.org", password)


def test_user_add_generate_flag(tmp_path: Path) -> None:
    """--generate makes and prints a password even when stdin is not a terminal."""
    done = admin(tmp_path, "user", "add", "alice@example.org", "--generate", stdin=None)
    password = done.stdout.split("password: ", 1)[1].strip()
    assert accounts(tmp_path).verify("alice@example.org", password)


def test_user_add_without_password_refused(tmp_path: Path) -> None:
    """An empty stdin is refused rather than creating an account with no password."""
    assert_refused(admin(tmp_path, "user", "add", "alice@example.org"), "no password")
    assert accounts(tmp_path).addresses() == []


def test_user_add_existing_refused(tmp_path: Path) -> None:
    """Adding an existing account fails and keeps its password."""
    admin(tmp_path, "user", "add", "alice@example.org", stdin=b"one\n")
    assert_refused(
        admin(tmp_path, "user", "add", "ALICE@example.org", stdin=b"two\n"), "already exists"
    )
    assert accounts(tmp_path).verify("alice@example.org", "one")


@pytest.mark.parametrize("address", ["alice", "a b@example.org", "../etc@x", "a:b@example.org"])
def test_user_add_invalid_address_refused(tmp_path: Path, address: str) -> None:
    """An address that is not a plain email address is refused with a clear line."""
    assert_refused(admin(tmp_path, "user", "add", address, stdin=b"pw\n"), "transcoder-admin: ")
    assert accounts(tmp_path).addresses() == []


def test_user_list(tmp_path: Path) -> None:
    """user list prints the accounts one per line, sorted."""
    for address in ("carol@example.org", "alice@example.org", "bob@example.net"):
        admin(tmp_path, "user", "add", address, stdin=b"pw\n")
    done = admin(tmp_path, "user", "list")
    assert done.stdout.splitlines() == ["alice@example.org", "bob@example.net", "carol@example.org"]


def test_user_passwd(tmp_path: Path) -> None:
    """user passwd replaces the password; the old one stops working."""
    admin(tmp_path, "user", "add", "alice@example.org", stdin=b"old\n")
    done = admin(tmp_path, "user", "passwd", "alice@example.org", stdin=b"new\n")
    assert done.returncode == 0, done.stderr
    assert accounts(tmp_path).verify("alice@example.org", "new")
    assert not accounts(tmp_path).verify("alice@example.org", "old")


def test_user_passwd_unknown_refused(tmp_path: Path) -> None:
    """Changing the password of a missing account is refused."""
    assert_refused(admin(tmp_path, "user", "passwd", "x@example.org", stdin=b"p\n"), "no account")


def test_user_del(tmp_path: Path) -> None:
    """user del removes the account; deleting it again is refused."""
    admin(tmp_path, "user", "add", "alice@example.org", stdin=b"pw\n")
    assert admin(tmp_path, "user", "del", "alice@example.org").returncode == 0
    assert accounts(tmp_path).addresses() == []
    assert_refused(admin(tmp_path, "user", "del", "alice@example.org"), "no account")


def test_damaged_accounts_file_reported(tmp_path: Path) -> None:
    """A damaged accounts file is reported with its line number, not a traceback."""
    (tmp_path / "accounts").write_text("alice@example.org:plaintext\n")
    assert_refused(admin(tmp_path, "user", "list"), "line 1")


def test_usage_error_exits_2(tmp_path: Path) -> None:
    """A missing subcommand is a usage error (status 2) with argparse's usage line."""
    done = admin(tmp_path, "user")
    assert done.returncode == 2
    assert "usage:" in done.stderr


def _stored_messages(data: Path) -> list[bytes]:
    """The contents of every message file in the data directory's Maildirs."""
    found = [
        p for p in (data / "mail").rglob("*") if p.is_file() and p.parent.name in ("new", "cur")
    ]
    return [p.read_bytes() for p in found]


def test_deliver_stores_the_message(tmp_path: Path) -> None:
    """deliver puts the message on stdin into the account's Maildir."""
    admin(tmp_path, "user", "add", "alice@example.org", stdin=b"pw\n")
    done = admin(tmp_path, "deliver", "Alice@example.org", stdin=MESSAGE)
    assert done.returncode == 0, done.stderr
    stored = _stored_messages(tmp_path)
    assert len(stored) == 1
    assert b"Subject: hello admin" in stored[0]


def test_deliver_to_unknown_account_refused(tmp_path: Path) -> None:
    """Delivery to an address without an account is refused and stores nothing."""
    assert_refused(admin(tmp_path, "deliver", "nobody@example.org", stdin=MESSAGE), "no account")
    assert _stored_messages(tmp_path) == []


def test_deliver_into_a_named_mailbox(tmp_path: Path) -> None:
    """deliver --mailbox NAME stores into that mailbox's Maildir++ folder."""
    admin(tmp_path, "user", "add", "alice@example.org", stdin=b"pw\n")
    MaildirStore(tmp_path / "mail").account("alice@example.org").create("Work")
    done = admin(tmp_path, "deliver", "alice@example.org", "--mailbox", "Work", stdin=MESSAGE)
    assert done.returncode == 0, done.stderr
    [stored] = list((tmp_path / "mail" / "alice@example.org" / ".Work" / "new").iterdir())
    assert b"Subject: hello admin" in stored.read_bytes()


def test_deliver_into_a_missing_mailbox_refused(tmp_path: Path) -> None:
    """Delivery into a mailbox that does not exist is refused with one line, nothing stored."""
    admin(tmp_path, "user", "add", "alice@example.org", stdin=b"pw\n")
    done = admin(tmp_path, "deliver", "alice@example.org", "--mailbox", "Nope", stdin=MESSAGE)
    assert_refused(done, "Nope")
    assert _stored_messages(tmp_path) == []
