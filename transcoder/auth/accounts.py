"""The accounts file: login addresses and their scrypt password hashes.

Format of ``DIR/accounts`` (UTF-8 text, one account per line)::

    # imap-transcoder accounts: address:scrypt$N$r$p$salt$hash
    alice@example.org:scrypt$16384$8$1$<salt, base64>$<hash, base64>

* The login is the account's email address, stored and compared **lowercased
  as a whole** (``Alice@Example.ORG`` and ``alice@example.org`` are the same
  account).  See :func:`normalize_address` for what is accepted.
* The hash field is self-describing: the KDF name, then scrypt's cost
  parameters ``N`` (CPU/memory cost), ``r`` (block size) and ``p``
  (parallelism), the per-account random salt and the derived key, both in
  standard base64.  Parameters are recorded per line so they can be raised for
  new hashes without invalidating old ones.
* Blank lines and lines starting with ``#`` are ignored; rewriting the file
  (``add``, ``remove``, ``set_password``) keeps only the header comment.

Writes are atomic (temporary file, fsync, rename; mode 0600) and serialised
between processes with ``flock`` on ``accounts.lock`` beside the file.  A
running server re-reads the file when it changes on disk, so
``transcoder-admin user add`` takes effect without a restart.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from transcoder.errors import ClientError, ConfigurationError, InvalidAccount
from transcoder.files import write_atomically

#: scrypt cost parameters for new hashes: 16 MiB of memory, ~50 ms of CPU.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32

# Upper bounds on parameters read from the file: a hand-edited line must not
# make one login allocate gigabytes.
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16

_HEADER = "# imap-transcoder accounts: address:scrypt$N$r$p$salt$hash\n"

# RFC 5321 section 4.5.3.1: local part at most 64 octets, path at most 256.
_MAX_LOCAL = 64
_MAX_ADDRESS = 254
# Characters never allowed in a login: whitespace and controls (line format,
# IMAP atoms), ':' (our field separator), '/' and '\\' (the address names a
# Maildir directory), and RFC 5322 specials that only quoted local parts may hold.
_FORBIDDEN = re.compile(r'[\s\x00-\x1f\x7f:/\\"(),;<>\[\]@]')
_DOMAIN_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class DuplicateAccountError(ClientError):
    """The account already exists."""

    code = "ALREADYEXISTS"


class UnknownAccountError(ClientError):
    """No such account."""

    code = "NONEXISTENT"


class WeakPasswordError(ClientError):
    """The password is not acceptable."""

    code = "CANNOT"


@dataclass(frozen=True)
class Account:
    """One line of the accounts file: a normalised address and its ``scrypt$...`` hash."""

    address: str
    password_hash: str


@dataclass(frozen=True)
class _ScryptHash:
    """A parsed ``scrypt$N$r$p$salt$hash`` field."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def derive(self, password: bytes) -> bytes:
        """scrypt of ``password`` with this hash's salt and parameters."""
        return _scrypt(password, self.salt, self.n, self.r, self.p, len(self.digest))

    def encode(self) -> str:
        """The self-describing text form stored in the file."""
        b64 = base64.b64encode
        return (
            f"scrypt${self.n}${self.r}${self.p}$"
            f"{b64(self.salt).decode('ascii')}${b64(self.digest).decode('ascii')}"
        )


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int = HASH_BYTES) -> bytes:
    """hashlib.scrypt with enough ``maxmem`` for the parameters (RFC 7914 section 2)."""
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)


def _parse_hash(text: str) -> _ScryptHash:
    """Parse a hash field; ValueError when it is not a well-formed scrypt hash."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected scrypt$N$r$p$salt$hash")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error) as e:
        raise ValueError(f"bad scrypt field: {e}") from None
    if n < 2 or n & (n - 1) or n > _MAX_N or not 0 < r <= _MAX_R or not 0 < p <= _MAX_P:
        raise ValueError("scrypt parameters out of range")
    if not salt or not 16 <= len(digest) <= 64:
        raise ValueError("empty salt or hash of a bad length")
    return _ScryptHash(n, r, p, salt, digest)


def _password_bytes(password: str | bytes) -> bytes:
    """Passwords are compared as UTF-8 octets, without normalisation."""
    return password.encode("utf-8") if isinstance(password, str) else password


def normalize_address(address: str) -> str:
    """The canonical (lowercased) form of a login address; InvalidAccount if it is not one.

    Accepted: ``local@domain`` with a local part of at most 64 characters,
    free of whitespace, control characters, ``: / \\ " ( ) , ; < > [ ] @``,
    not starting or ending with a dot nor holding two in a row (RFC 5322
    dot-atom); a domain of dot-separated LDH labels (RFC 1035, IDNs in their
    ``xn--`` form); 254 characters at most in all.
    """
    lowered = address.lower()
    local, sep, domain = lowered.rpartition("@")
    if not sep or not local or not domain or len(lowered) > _MAX_ADDRESS:
        raise InvalidAccount(f"not an email address: {address!r}")
    if len(local) > _MAX_LOCAL or _FORBIDDEN.search(local):
        raise InvalidAccount(f"invalid local part in {address!r}")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidAccount(f"invalid local part in {address!r}")
    if not all(_DOMAIN_LABEL.fullmatch(label) for label in domain.split(".")):
        raise InvalidAccount(f"invalid domain in {address!r}")
    return lowered


class AccountsFile:
    """The accounts file at ``path`` (see the module docstring for its format).

    Reads are cached and refreshed whenever the file's inode, size or
    modification time changes; :meth:`generation` counts those refreshes.
    ``random_bytes`` supplies salts (injectable for tests).  Safe to use from
    several threads: the checker verifies passwords off the reactor thread.
    """

    def __init__(
        self, path: str | os.PathLike[str], random_bytes: Callable[[int], bytes] = os.urandom
    ):
        self.path = Path(path)
        self._random_bytes = random_bytes
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._accounts: dict[str, Account] = {}
        self._generation = 0
        self._dummy = _ScryptHash(
            SCRYPT_N, SCRYPT_R, SCRYPT_P, b"\0" * SALT_BYTES, b"\0" * HASH_BYTES
        )

    # -- reading -----------------------------------------------------------

    def get(self, address: str) -> Account | None:
        """The account for ``address`` (any case), or None if there is none or it is invalid."""
        try:
            key = normalize_address(address)
        except InvalidAccount:
            return None
        return self._current().get(key)

    def addresses(self) -> list[str]:
        """All account addresses, sorted."""
        return sorted(self._current())

    def verify(self, address: str, password: str | bytes) -> bool:
        """Whether ``password`` is the password of ``address``.

        Takes the same time whether or not the account exists: an unknown or
        invalid address still costs one scrypt, against a dummy hash, so
        timing does not reveal which accounts exist.  The comparison is
        constant-time (hmac.compare_digest).
        """
        account = self.get(address)
        stored = self._dummy
        if account is not None:
            stored = _parse_hash(account.password_hash)  # validated when read
        derived = stored.derive(_password_bytes(password))
        return hmac.compare_digest(derived, stored.digest) and account is not None

    def generation(self) -> int:
        """A number that grows each time the file is found changed on disk (checked now).

        Whatever was concluded from the accounts under one generation -- a
        password verified, say -- may no longer hold under the next.
        """
        return self._snapshot()[1]

    def _current(self) -> dict[str, Account]:
        """The accounts, re-read if the file changed since the last read."""
        return self._snapshot()[0]

    def _snapshot(self) -> tuple[dict[str, Account], int]:
        """The accounts and their generation, re-read if the file changed since the last read."""
        with self._lock:
            stamp = self._stat()
            if stamp != self._stamp:
                self._accounts = self._read() if stamp is not None else {}
                self._stamp = stamp
                self._generation += 1
            return self._accounts, self._generation

    def _stat(self) -> tuple[int, int, int] | None:
        """(inode, size, mtime in ns) of the file, or None if it does not exist."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _read(self) -> dict[str, Account]:
        """Parse the file; ConfigurationError naming the first bad line."""
        accounts: dict[str, Account] = {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return accounts
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigurationError(f"cannot read {self.path}: {e}") from None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            address, sep, field = line.partition(":")
            try:
                if not sep:
                    raise ValueError("expected address:hash")
                key = normalize_address(address)
                _parse_hash(field)
            except (ValueError, InvalidAccount) as e:
                raise ConfigurationError(f"{self.path}, line {number}: {e}") from None
            accounts[key] = Account(key, field)
        return accounts

    # -- writing -----------------------------------------------------------

    def add(self, address: str, password: str | bytes) -> Account:
        """Create an account; DuplicateAccountError if it exists, InvalidAccount if misspelt."""
        key = normalize_address(address)
        with self._locked() as accounts:
            if key in accounts:
                raise DuplicateAccountError(f"account {key} already exists")
            account = Account(key, self._hash(password))
            accounts[key] = account
        return account

    def remove(self, address: str) -> None:
        """Delete an account; UnknownAccountError if there is none."""
        key = normalize_address(address)
        with self._locked() as accounts:
            if accounts.pop(key, None) is None:
                raise UnknownAccountError(f"no account {key}")

    def set_password(self, address: str, password: str | bytes) -> Account:
        """Replace the password (fresh salt too); UnknownAccountError if there is no account."""
        key = normalize_address(address)
        with self._locked() as accounts:
            if key not in accounts:
                raise UnknownAccountError(f"no account {key}")
            account = Account(key, self._hash(password))
            accounts[key] = account
        return account

    def _hash(self, password: str | bytes) -> str:
        """A new ``scrypt$...`` field for ``password`` with a fresh random salt."""
        secret = _password_bytes(password)
        if not secret:
            raise WeakPasswordError("the password must not be empty")
        salt = self._random_bytes(SALT_BYTES)
        digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return _ScryptHash(SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, digest).encode()

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Account]]:
        """Read-modify-write under an exclusive flock; the yielded dict is written back."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            accounts = dict(self._read())
            yield accounts
            self._write(accounts)
        finally:
            os.close(fd)  # releases the flock

    def _write(self, accounts: dict[str, Account]) -> None:
        """Atomically replace the file: write a temporary file, fsync, rename, fsync the dir."""
        lines = [_HEADER] + [
            f"{a.address}:{a.password_hash}\n" for _, a in sorted(accounts.items())
        ]
        write_atomically(self.path, "".join(lines).encode("utf-8"))
