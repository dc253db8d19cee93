"""Real OpenPGP test keys and a real gpg decryptor, made once per test session.

Keys are generated with ``gpg --quick-gen-key`` in a scratch home, validated
by the keystore's own validator (so their ``material`` is exactly what the
keystore stores), and their secret halves are imported into a SEPARATE
scratch home used only to decrypt what the server produced.  The server-side
code under test never sees a secret key.  Both scratch homes need a
gpg-agent (secret-key operations); :func:`cleanup` kills those agents.

Import :func:`pgp` into a test module (or conftest) to use the fixture.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Generic, TypeVar

import pytest

from transcoder.keys.model import KeyStatus, OpenPgpDetails, StoredKey, ValidatedKey
from transcoder.keys.openpgp import validate_openpgp_key

T = TypeVar("T")

ALICE = "alice@example.org"
UID = f"Alice <{ALICE}>"


def stored(validated: ValidatedKey, account: str = ALICE) -> StoredKey:
    """The StoredKey the keystore would report for ``validated`` (active, stored now)."""
    now = datetime.now(UTC)
    values = {f.name: getattr(validated, f.name) for f in fields(validated)}
    return StoredKey(
        **values, account=account, status=KeyStatus.ACTIVE, created_at=now, activated_at=now
    )


def gpg(home: Path, *args: str, stdin: bytes = b"", check: bool = True) -> bytes:
    """Run gpg in the scratch ``home`` unattended (empty passphrases); return stdout."""
    command = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--yes"]
    command += ["--pinentry-mode", "loopback", "--passphrase", ""]
    done = subprocess.run(
        [*command, *args], input=stdin, capture_output=True, timeout=120, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"gpg {args}: {done.stderr.decode(errors='replace')}")
    return done.stdout


def gpg_status_decrypt(home: Path, armored: bytes) -> subprocess.CompletedProcess[bytes]:
    """``gpg --status-fd 2 --decrypt`` of ``armored`` with ``home``'s secret keys, unchecked.

    The status lines (``[GNUPG:] ...``) come on stderr with gpg's messages.
    """
    return subprocess.run(
        [
            *("gpg", "--homedir", str(home), "--batch", "--no-tty"),
            *("--pinentry-mode", "loopback", "--passphrase", ""),
            *("--status-fd", "2", "--decrypt"),
        ],
        input=armored,
        capture_output=True,
        timeout=120,
        check=False,
    )


def kill_agents(home: Path) -> None:
    """Stop any gpg-agent/dirmngr of ``home``."""
    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False
    )


class SessionKeys(Generic[T]):
    """Keys made once per test session in scratch GNUPGHOMEs, under a lock.

    ``generate`` receives :meth:`home`, which makes a scratch home that
    :meth:`cleanup` later stops the agents of and deletes; ``discard`` removes
    whatever else the made keys left (secret files).
    """

    def __init__(
        self,
        generate: Callable[[Callable[[str], Path]], T],
        discard: Callable[[T], None] | None = None,
    ) -> None:
        self._generate = generate
        self._discard = discard
        self._lock = threading.Lock()
        self._made: list[T] = []
        self._homes: list[Path] = []

    def home(self, prefix: str) -> Path:
        """A new scratch home, deleted by :meth:`cleanup`."""
        home = Path(tempfile.mkdtemp(prefix=prefix))
        self._homes.append(home)
        return home

    def get(self) -> T:
        """The session's keys, generated on first use."""
        with self._lock:
            if not self._made:
                self._made.append(self._generate(self.home))
            return self._made[0]

    def cleanup(self) -> None:
        """Kill the scratch homes' agents and delete them with what was made (idempotent)."""
        with self._lock:
            if self._discard is not None:
                for made in self._made:
                    self._discard(made)
            for home in self._homes:
                kill_agents(home)
                shutil.rmtree(home, ignore_errors=True)
            self._homes.clear()
            self._made.clear()


def agent_running(home: Path) -> bool:
    """Whether a gpg-agent process serves ``home`` (read from /proc)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if words and words[0].endswith(b"gpg-agent") and str(home).encode() in words:
            return True
    return False


@dataclass(frozen=True)
class Decryption:
    """What gpg --decrypt said: the plaintext and its ``[GNUPG:]`` status lines."""

    plaintext: bytes
    statuses: tuple[str, ...]

    def status(self, keyword: str) -> list[str]:
        """Arguments of the first status line ``keyword``; KeyError when absent."""
        for line in self.statuses:
            words = line.split()
            if words[1] == keyword:
                return words[2:]
        raise KeyError(keyword)


@dataclass(frozen=True)
class PgpTestKeys:
    """Alice's keys as the keystore stores them, and a home holding their secret halves."""

    rsa: StoredKey
    x25519: StoredKey
    #: ``x25519`` after a new cv25519 encryption subkey was added (same fingerprint).
    x25519_v2: StoredKey
    decrypt_home: Path

    def decrypt(self, armored: bytes) -> Decryption:
        """Decrypt with the real gpg and the secret keys; RuntimeError when gpg fails."""
        done = gpg_status_decrypt(self.decrypt_home, armored)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode(errors="replace"))
        lines = done.stderr.decode(errors="replace").splitlines()
        return Decryption(done.stdout, tuple(x for x in lines if x.startswith("[GNUPG:] ")))

    def decrypt_file(self, armored: Path, plain: Path) -> None:
        """Decrypt the file ``armored`` into ``plain`` (for large messages)."""
        gpg(self.decrypt_home, "--output", str(plain), "--decrypt", str(armored))

    def packets(self, armored: bytes) -> str:
        """gpg's ``--list-packets`` of the decrypted structure."""
        return gpg(self.decrypt_home, "--list-packets", stdin=armored).decode()


def _generate(scratch: Callable[[str], Path]) -> PgpTestKeys:
    generate_home = scratch("test-openpgp-gen-")
    decrypt_home = scratch("test-openpgp-dec-")

    def primary(algo: str, usage: str) -> str:
        before = gpg(generate_home, "--with-colons", "--list-keys", check=False)
        # Made a minute ago, so that a subkey added later is strictly newer.
        past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y%m%dT%H%M%S")
        gpg(
            generate_home,
            "--faked-system-time",
            past,
            *("--quick-gen-key", UID, algo, usage),
            "never",
        )
        after = gpg(generate_home, "--with-colons", "--list-keys").decode().splitlines()
        fprs = [x.split(":")[9] for x in after if x.startswith("fpr") and x.encode() not in before]
        return fprs[0]

    def export(fpr: str) -> StoredKey:
        return stored(validate_openpgp_key(gpg(generate_home, "--export", fpr), ALICE, now))

    now = datetime.now(UTC)
    rsa = primary("rsa3072", "cert,sign")
    gpg(generate_home, "--quick-add-key", rsa, "rsa3072", "encr", "never")
    modern = primary("future-default", "default")
    rsa_key, x25519_key = export(rsa), export(modern)
    gpg(generate_home, "--quick-add-key", modern, "cv25519", "encr", "never")
    x25519_v2 = export(modern)
    secrets = gpg(generate_home, "--export-secret-keys", rsa, modern)
    gpg(decrypt_home, "--import", stdin=secrets)
    kill_agents(generate_home)
    return PgpTestKeys(rsa_key, x25519_key, x25519_v2, decrypt_home)


_session = SessionKeys(_generate)


def session_keys() -> PgpTestKeys:
    """The session's keys, generated on first use."""
    return _session.get()


def cleanup() -> None:
    """Kill the scratch homes' agents and delete the homes (idempotent)."""
    _session.cleanup()


@pytest.fixture(scope="session")
def pgp() -> Iterator[PgpTestKeys]:
    """The session's OpenPGP test keys (skips when gpg is not installed)."""
    if shutil.which("gpg") is None or shutil.which("gpgconf") is None:
        pytest.skip("gpg is not installed")
    yield session_keys()
    cleanup()


def subkeys(key: StoredKey) -> tuple[str, ...]:
    """The key's validated encryption subkeys, newest first."""
    assert isinstance(key.details, OpenPgpDetails)
    return key.details.encryption_subkeys
