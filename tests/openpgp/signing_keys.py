"""Server OpenPGP keys with signing subkeys (Ed25519, RSA, ECDSA), and verifiers that know them.

The Ed25519 key is made exactly as the server makes its own
(:func:`transcoder.keys.server_keys_gpg.generate_openpgp`); the RSA, P-256
and P-384 ones by gpg with the same layout (certification-only primary key,
encryption subkey, signing subkey) and checked by
:func:`~transcoder.keys.server_keys_gpg.inspect_openpgp`, as a hoster's key
would be.  The verifier home holds the native test recipients' secret keys
(to decrypt) and the server keys' *public* halves only (to verify).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.openpgp.gpgkeys import SessionKeys, gpg, kill_agents
from tests.openpgp.native_keys import NativeKeys
from transcoder.keys.server_keys_gpg import OpenPgpServerKey, generate_openpgp, inspect_openpgp


@dataclass(frozen=True)
class Verified:
    """What a verifier said: exit status, plaintext, its status lines (gpg) or messages (sq)."""

    returncode: int
    plaintext: bytes
    status: str

    def keyword(self, keyword: str) -> list[list[str]]:
        """The arguments of every ``[GNUPG:] keyword`` status line."""
        prefix = f"[GNUPG:] {keyword} "
        return [
            line[len(prefix) :].split()
            for line in self.status.splitlines()
            if line.startswith(prefix)
        ]


@dataclass(frozen=True)
class ServerSigningKeys:
    """The server keys by signing algorithm, a verifier home, one secret file per recipient."""

    keys: dict[str, OpenPgpServerKey]
    verify_home: Path
    public_files: dict[str, Path]

    def gpg_verify(self, armored: bytes, *extra: str) -> Verified:
        """``gpg --status-fd 2 --decrypt`` (decrypts and verifies) in the verifier home."""
        done = subprocess.run(
            [
                *("gpg", "--homedir", str(self.verify_home), "--batch", "--no-tty"),
                *("--pinentry-mode", "loopback", "--passphrase", ""),
                *("--trust-model", "always", "--status-fd", "2", *extra, "--decrypt"),
            ],
            input=armored,
            capture_output=True,
            timeout=120,
            check=False,
        )
        return Verified(done.returncode, done.stdout, done.stderr.decode(errors="replace"))

    def packets(self, armored: bytes) -> str:
        """``gpg --list-packets`` of ``armored`` (decrypting it) in the verifier home."""
        return gpg(self.verify_home, "--list-packets", stdin=armored).decode()

    def sq_verify(self, armored: bytes, recipient_secret: Path, signer: str) -> Verified:
        """``sq decrypt --recipient-key ... --signer-cert <server cert>``: 0 only if verified."""
        done = subprocess.run(
            [
                *("sq", "decrypt", "--recipient-key", str(recipient_secret)),
                *("--signer-cert", str(self.public_files[signer])),
            ],
            input=armored,
            capture_output=True,
            timeout=120,
            check=False,
        )
        return Verified(done.returncode, done.stdout, done.stderr.decode(errors="replace"))


#: Signer name -> gpg's algorithm for the hoster-made keys (the primary key, both subkeys).
HOSTER_KEYS = {"rsa": "rsa2048", "nistp256": "nistp256", "nistp384": "nistp384"}
#: gpg 2.2 takes a bare curve name as ECDH for a subkey: say ECDSA for the signing one.
SIGNING_ALGORITHM = {"nistp256": "nistp256/ecdsa", "nistp384": "nistp384/ecdsa"}


def _hoster_key(home: Path, algorithm: str, now: datetime) -> OpenPgpServerKey:
    """A server key of ``algorithm`` (a hoster's choice), checked as an import is."""
    quiet = ("--pinentry-mode", "loopback", "--passphrase", "")
    uid = f"{algorithm} server <server@example.org>"
    gpg(home, "--quick-gen-key", uid, algorithm, "cert", "never")
    lines = gpg(home, "--with-colons", "--list-keys", uid).decode().splitlines()
    primary = next(line.split(":")[9] for line in lines if line.startswith("fpr"))
    gpg(home, *quiet, "--quick-add-key", primary, algorithm, "encr", "never")
    signing = SIGNING_ALGORITHM.get(algorithm, algorithm)
    gpg(home, *quiet, "--quick-add-key", primary, signing, "sign", "never")
    return inspect_openpgp(gpg(home, "--export-secret-keys", primary), now)


def _generate(scratch: Callable[[str], Path], native: NativeKeys) -> ServerSigningKeys:
    now = datetime.now(UTC)
    keys = {"ed25519": generate_openpgp(now)}
    for name, algorithm in HOSTER_KEYS.items():
        keys[name] = _hoster_key(scratch(f"tc-sign-{name}-"), algorithm, now)
    verify_home = scratch("tc-sign-verify-")
    public_files = {}
    for name, key in keys.items():
        gpg(verify_home, "--import", stdin=key.entry.public)
        public_files[name] = verify_home / f"{name}.pub.asc"
        public_files[name].write_bytes(key.entry.public)
    for secret in native.secret_files.values():
        gpg(verify_home, "--import", stdin=secret.read_bytes())
    elgamal = gpg(native.decrypt_home, "--export-secret-keys", native.elgamal.fingerprint)
    gpg(verify_home, "--import", stdin=elgamal)
    kill_agents(verify_home)
    return ServerSigningKeys(keys, verify_home, public_files)


_sessions: list[SessionKeys[ServerSigningKeys]] = []


def server_signing_keys(native: NativeKeys) -> ServerSigningKeys:
    """The session's server signing keys, made on first use."""
    if not _sessions:
        _sessions.append(SessionKeys(lambda scratch: _generate(scratch, native)))
    try:
        return _sessions[0].get()
    except BaseException:
        cleanup()  # the fixture never reaches its own cleanup: no agent may outlive a failure
        raise


def cleanup() -> None:
    """Delete the scratch homes (idempotent)."""
    for session in _sessions:
        session.cleanup()
