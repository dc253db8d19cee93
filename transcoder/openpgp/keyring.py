"""The server's OpenPGP keyring: the keystore's validated keys, laid out for gpg.

One home or one per account (issue 5)?  **One shared home**, ``DIR/gnupg``,
holding **one keyring file per key version**::

    DIR/gnupg/                              GNUPGHOME, mode 0700
    DIR/gnupg/keys/                         mode 0700
    DIR/gnupg/keys/<fpr>.<digest>.gpg       mode 0600: a StoredKey's material as is

Why:

* No import step, hence nothing to race.  A key's ``material`` (gpg's
  ``export-minimal`` binary export) already is a keyring in gpg's classic
  format, a sequence of OpenPGP packets; each encryption names exactly the
  keyring files of the keys the caller passed (``--no-default-keyring
  --keyring <file>``) and the exact subkeys (``-r <subkey fpr>!``).  gpg
  therefore cannot see, let alone pick, any other key: a retired key, an
  expired one or another account's key is never used even though its file
  may still exist.
* Files are immutable and named by the SHA-256 of their content, written to
  a temporary name and renamed into place (atomic), so any number of gpg
  processes can read while a key is added or replaced: each sees a whole
  file, old or new.  A lock serialises only our own writes.
* One home instead of N: one directory to create and check, no per-account
  gpg state, and the keystore stays the single source of truth (per-account
  homes would isolate failures, but here a failure is already confined to
  the one keyring file of one key).
* Encryption writes nothing into the home (``--no-random-seed-file``, no
  trustdb with ``--trust-model always``, no agent with ``--no-autostart``).

The keyring follows the keystore: :meth:`Keyring.sync_key` writes the key's
current material and deletes the file of any earlier version of the same
fingerprint (a replaced key is replaced); :meth:`Keyring.remove_key` deletes
a retired key's files; :meth:`Keyring.prune` deletes everything not in a
given set.  Blocking file I/O: call from worker threads.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from transcoder.errors import ConfigurationError
from transcoder.files import write_atomically
from transcoder.keys.model import (
    KeyFormat,
    KeyStatus,
    OpenPgpDetails,
    StoredKey,
    require_aware,
)
from transcoder.openpgp.encrypt import Readable, check_fingerprint, encrypt_armored, gpg_handle
from transcoder.openpgp.errors import GpgFailed

_DIGEST_CHARS = 32


@dataclass(frozen=True)
class KeyringEntry:
    """A key as synced into the keyring: its file and the subkey to encrypt to."""

    fingerprint: str
    path: Path
    recipient: str


def unusable_reason(key: StoredKey, now: datetime) -> str | None:
    """Why ``key`` must not be encrypted to at ``now``, or ``None`` when it may be.

    Only ``ACTIVE``, unexpired OpenPGP keys with encryption capability and at
    least one validated encryption subkey are usable.
    """
    if key.format is not KeyFormat.OPENPGP or not isinstance(key.details, OpenPgpDetails):
        return "not an OpenPGP key"
    if key.status is not KeyStatus.ACTIVE:
        return f"status {key.status.value}"
    if key.expired_at(require_aware(now)):
        return "expired"
    if not key.can_encrypt or not key.details.encryption_subkeys:
        return "no encryption subkey"
    if not key.material:
        return "no key material"
    return None


class Keyring:
    """The one GNUPGHOME of the server and the keyring file of each synced key.

    ``home`` is created (with its parents) if missing and always set to mode
    0700; it must be a directory owned by the server's user.
    """

    def __init__(self, home: str | Path, gpg_binary: str = "gpg") -> None:
        self.home = Path(home).absolute()
        self.keys_dir = self.home / "keys"
        self.gpg_binary = gpg_binary
        self._lock = threading.Lock()
        for directory in (self.home, self.keys_dir):
            _private_directory(directory)

    def check_gpg(self) -> None:
        """Run gpg once (``--list-config``); :class:`GpgFailed` when it is missing or too old."""
        gpg_handle(self.gpg_binary, str(self.home))

    def path_for(self, key: StoredKey) -> Path:
        """Where the keyring file of ``key``'s current material lives."""
        digest = hashlib.sha256(key.material).hexdigest()[:_DIGEST_CHARS]
        return self.keys_dir / f"{check_fingerprint(key.fingerprint)}.{digest}.gpg"

    def sync_key(self, key: StoredKey) -> KeyringEntry:
        """Make the keyring hold exactly ``key``'s current material; return its entry.

        Writes the file unless it already holds that material, and deletes
        the files of other versions of the same fingerprint.  Does not judge
        the key's status: see :func:`unusable_reason`.
        """
        if not isinstance(key.details, OpenPgpDetails) or not key.details.encryption_subkeys:
            raise ValueError("not an OpenPGP key with an encryption subkey")
        recipient = check_fingerprint(key.details.encryption_subkeys[0])
        path = self.path_for(key)
        with self._lock:
            if not _holds(path, key.material):
                write_atomically(path, key.material)
            for other in self._versions(path.name.split(".")[0]):
                if other != path:
                    other.unlink(missing_ok=True)
        return KeyringEntry(
            fingerprint=check_fingerprint(key.fingerprint), path=path, recipient=recipient
        )

    def remove_key(self, fingerprint: str) -> int:
        """Delete every version of the key ``fingerprint``; return how many files went."""
        fpr = check_fingerprint(fingerprint)
        with self._lock:
            versions = self._versions(fpr)
            for path in versions:
                path.unlink(missing_ok=True)
        return len(versions)

    def prune(self, keep: Iterable[StoredKey]) -> int:
        """Delete every keyring file but those of ``keep``'s current materials; return the count."""
        wanted = {self.path_for(key) for key in keep}
        with self._lock:
            stale = [path for path in self.keys_dir.iterdir() if path not in wanted]
            for path in stale:
                path.unlink(missing_ok=True)
        return len(stale)

    def fingerprints(self) -> frozenset[str]:
        """Fingerprints of the keys that have a keyring file."""
        return frozenset(path.name.split(".")[0] for path in self.keys_dir.glob("*.gpg"))

    def encrypt_armored(
        self, src: Readable, dst: BinaryIO, keys: Sequence[StoredKey], now: datetime
    ) -> int:
        """Encrypt ``src`` to each of ``keys`` (armored, CRLF) into ``dst``; octets written.

        Raises :class:`GpgFailed` (nothing is encrypted) when a key is not
        usable at ``now``: retired and expired keys are never used.
        """
        if not keys:
            raise GpgFailed("no key to encrypt to")
        for key in keys:
            reason = unusable_reason(key, now)
            if reason:
                raise GpgFailed(f"key {key.fingerprint} not used: {reason}")
        entries = [self.sync_key(key) for key in keys]
        return encrypt_armored(
            src,
            dst,
            [entry.recipient for entry in entries],
            self.home,
            self.gpg_binary,
            keyrings=[entry.path for entry in entries],
        )

    def _versions(self, fingerprint: str) -> list[Path]:
        return sorted(self.keys_dir.glob(f"{fingerprint}.*.gpg"))


def _private_directory(directory: Path) -> None:
    """Create ``directory`` if needed, set mode 0700, refuse a foreign or non-directory."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(directory)
    except OSError as error:
        raise ConfigurationError(f"cannot create {directory}: {error}") from error
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(f"{directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise ConfigurationError(f"{directory} is not owned by the server's user")
    os.chmod(directory, 0o700)


def _holds(path: Path, material: bytes) -> bool:
    """Whether ``path`` exists with exactly ``material``.

    Checked on every sync, not cached: if a file vanished while gpg was
    looking for it, gpg creates an empty keybox in its place.
    """
    try:
        return path.read_bytes() == material
    except FileNotFoundError:
        return False
