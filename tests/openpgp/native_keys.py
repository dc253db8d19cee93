"""One key of every recipient type the native encoder supports, and two real decryptors.

Made once per test session with the real gpg (``--quick-gen-key`` and
``--quick-add-key`` in a scratch home), validated by the keystore's own
validator so that each ``StoredKey.material`` is exactly what the keystore
stores.  The secret halves go to a separate home for ``gpg --decrypt`` and,
one file per key, to Sequoia's ``sq decrypt --recipient-key`` (Debian
package ``sq``).  The code under test never sees a secret key.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.openpgp.gpgkeys import (
    ALICE,
    SessionKeys,
    gpg,
    gpg_status_decrypt,
    kill_agents,
    stored,
)
from transcoder.keys.model import KeyFormat, KeyStatus, KeyUsage, OpenPgpDetails, StoredKey
from transcoder.keys.openpgp import validate_openpgp_key

#: Encryption subkey algorithm (gpg's name) -> primary key algorithm.
TYPES = {
    "rsa2048": "rsa2048",
    "rsa3072": "rsa3072",
    "rsa4096": "rsa3072",
    "cv25519": "ed25519",
    "nistp256": "nistp256",
    "nistp384": "nistp384",
    "nistp521": "nistp521",
}


@dataclass(frozen=True)
class PeerResult:
    """What a decryptor printed: its exit status, standard output and standard error."""

    returncode: int
    stdout: bytes
    stderr: str


@dataclass(frozen=True)
class NativeKeys:
    """The stored keys by type, the gpg home with their secrets, one secret file per type."""

    keys: dict[str, StoredKey]
    decrypt_home: Path
    secret_files: dict[str, Path]
    #: An ElGamal key (refused by the keystore's validator, so built by hand here).
    elgamal: StoredKey

    def gpg_decrypt(self, armored: bytes) -> PeerResult:
        """``gpg --decrypt`` with every secret key."""
        done = gpg_status_decrypt(self.decrypt_home, armored)
        return PeerResult(done.returncode, done.stdout, done.stderr.decode(errors="replace"))

    def sq_decrypt(self, armored: bytes, key_type: str) -> PeerResult:
        """``sq decrypt --recipient-key`` with the secret key of ``key_type`` only."""
        done = subprocess.run(
            ["sq", "decrypt", "--recipient-key", str(self.secret_files[key_type])],
            input=armored,
            capture_output=True,
            timeout=120,
            check=False,
        )
        return PeerResult(done.returncode, done.stdout, done.stderr.decode(errors="replace"))

    def packets(self, armored: bytes) -> str:
        """``gpg --list-packets`` of ``armored`` (decrypting it)."""
        return gpg(self.decrypt_home, "--list-packets", stdin=armored).decode()


def _primary_fingerprint(home: Path, uid: str) -> str:
    lines = gpg(home, "--with-colons", "--list-keys", uid).decode().splitlines()
    return next(line.split(":")[9] for line in lines if line.startswith("fpr"))


def _generate(scratch: Callable[[str], Path]) -> NativeKeys:
    generate_home = scratch("test-native-gen-")
    decrypt_home = scratch("test-native-dec-")
    now = datetime.now(UTC)
    keys: dict[str, StoredKey] = {}
    secret_files: dict[str, Path] = {}
    for index, (subkey, primary) in enumerate(TYPES.items()):
        uid = f"Alice {index} <{ALICE}>"
        gpg(generate_home, "--quick-gen-key", uid, primary, "cert,sign", "never")
        fpr = _primary_fingerprint(generate_home, uid)
        gpg(generate_home, "--quick-add-key", fpr, subkey, "encr", "never")
        keys[subkey] = stored(validate_openpgp_key(gpg(generate_home, "--export", fpr), ALICE, now))
        secret = gpg(generate_home, "--export-secret-keys", fpr)
        secret_files[subkey] = decrypt_home.parent / f"{decrypt_home.name}-{subkey}.pgp"
        secret_files[subkey].write_bytes(secret)
        gpg(decrypt_home, "--import", stdin=secret)
    uid = f"Alice ElGamal <{ALICE}>"
    gpg(generate_home, "--quick-gen-key", uid, "dsa2048", "cert,sign", "never")
    fpr = _primary_fingerprint(generate_home, uid)
    gpg(generate_home, "--quick-add-key", fpr, "elg2048", "encr", "never")
    lines = gpg(generate_home, "--with-colons", "--list-keys", uid).decode().splitlines()
    subkey_fpr = [line.split(":")[9] for line in lines if line.startswith("fpr")][1]
    gpg(decrypt_home, "--import", stdin=gpg(generate_home, "--export-secret-keys", fpr))
    elgamal = StoredKey(
        format=KeyFormat.OPENPGP,
        fingerprint=fpr.lower(),
        addresses=(ALICE,),
        not_after=None,
        usages=frozenset({KeyUsage.ENCRYPT}),
        material=gpg(generate_home, "--export-options", "export-minimal", "--export", fpr),
        key_algorithm="ElGamal-2048",
        details=OpenPgpDetails(encryption_subkeys=(subkey_fpr.lower(),)),
        account=ALICE,
        status=KeyStatus.ACTIVE,
        created_at=now,
        activated_at=now,
    )
    kill_agents(generate_home)
    return NativeKeys(keys, decrypt_home, secret_files, elgamal)


def _discard(made: NativeKeys) -> None:
    for path in made.secret_files.values():
        path.unlink(missing_ok=True)


_session = SessionKeys(_generate, _discard)


def native_keys() -> NativeKeys:
    """The session's keys, generated on first use."""
    return _session.get()


def cleanup() -> None:
    """Kill the scratch homes' agents and delete the homes and secret files (idempotent)."""
    _session.cleanup()


@pytest.fixture(scope="session")
def native() -> Iterator[NativeKeys]:
    """Keys of every natively supported type (skips when gpg or sq is missing)."""
    for tool in ("gpg", "gpgconf", "sq"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    yield native_keys()
    cleanup()
