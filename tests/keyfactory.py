"""OpenPGP test keys, generated once per session with the real gpg in a temporary home.

Shared by every test folder: the ``pgp_keys`` fixture is registered for the
whole suite in ``tests/conftest.py``.  X.509 test certificates are built with
:mod:`tests.keys.certs`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

UID_ALICE = "Alice <alice@example.org>"


@dataclass
class GpgHome:
    """A scratch GNUPGHOME in which the tests make keys (never the user's ~/.gnupg)."""

    home: Path

    def run(self, *args: str, stdin: bytes = b"", faked_time: str | None = None) -> bytes:
        """Run gpg in this home, unattended; return its stdout."""
        cmd = ["gpg", "--homedir", str(self.home), "--batch", "--no-tty", "--yes"]
        cmd += ["--pinentry-mode", "loopback", "--passphrase", ""]
        if faked_time:
            cmd += ["--faked-system-time", faked_time]
        done = subprocess.run(
            [*cmd, *args], input=stdin, capture_output=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"gpg {args}: {done.stderr.decode(errors='replace')}")
        return done.stdout

    def generate(
        self, uid: str, algo: str, usage: str = "default", faked_time: str | None = None
    ) -> str:
        """Generate a primary key; return its fingerprint."""
        before = set(self.primary_fingerprints())
        self.run("--quick-gen-key", uid, algo, usage, "never", faked_time=faked_time)
        (new,) = [fpr for fpr in self.primary_fingerprints() if fpr not in before]
        return new

    def primary_fingerprints(self) -> list[str]:
        """Fingerprints of every primary key in the home."""
        lines = self.run("--with-colons", "--list-keys").decode().splitlines()
        return [
            lines[i + 1].split(":")[9]
            for i, line in enumerate(lines)
            if line.startswith("pub") and i + 1 < len(lines) and lines[i + 1].startswith("fpr")
        ]

    def export(self, fpr: str, *, armor: bool = False, secret: bool = False) -> bytes:
        """The public (or secret) key ``fpr`` as gpg exports it."""
        command = "--export-secret-keys" if secret else "--export"
        return self.run(*(["--armor"] if armor else []), command, fpr)


@contextmanager
def scratch_gpg_home(prefix: str) -> Iterator[GpgHome]:
    """A fresh GpgHome in a temporary folder; its agent is stopped and the folder removed after."""
    gpg = GpgHome(Path(tempfile.mkdtemp(prefix=prefix)))
    try:
        yield gpg
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", str(gpg.home), "--kill", "all"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(gpg.home, ignore_errors=True)


@dataclass(frozen=True)
class PgpKeys:
    """Exports of the test keys (binary unless named ``_armored``) and their fingerprints."""

    alice_rsa: bytes
    alice_rsa_fpr: str
    alice_rsa_armored: bytes
    alice_25519: bytes
    alice_25519_fpr: str
    alice_25519_secret: bytes
    alice_25519_secret_armored: bytes
    bob: bytes
    revoked_subkey: bytes
    expired_subkey: bytes
    weak_subkey: bytes
    weak_primary: bytes
    brainpool: bytes
    sign_only: bytes
    revoked_primary: bytes
    revoked_uid: bytes
    expiring: bytes
    expiring_fpr: str


def _make_keys(gpg: GpgHome) -> PgpKeys:
    rsa = gpg.generate(UID_ALICE, "rsa3072")
    gpg.run("--quick-add-key", rsa, "rsa3072", "encr", "never")
    modern = gpg.generate(UID_ALICE, "future-default")
    bob = gpg.generate("Bob <bob@example.org>", "future-default")
    revoked_sub = gpg.generate(UID_ALICE, "future-default")
    gpg.run(
        "--command-fd", "0", "--edit-key", revoked_sub, stdin=b"key 1\nrevkey\ny\n0\n\ny\nsave\n"
    )
    past = "20200101T000000"
    expired_sub = gpg.generate(UID_ALICE, "ed25519", faked_time=past)
    gpg.run("--quick-add-key", expired_sub, "cv25519", "encr", "2020-06-01", faked_time=past)
    weak_sub = gpg.generate(UID_ALICE, "ed25519")
    gpg.run("--quick-add-key", weak_sub, "rsa1024", "encr", "never")
    weak_primary = gpg.generate(UID_ALICE, "rsa1024", "sign,cert,encr")
    brainpool = gpg.generate(UID_ALICE, "brainpoolP256r1")
    gpg.run("--quick-add-key", brainpool, "brainpoolP256r1", "encr", "never")
    sign_only = gpg.generate(UID_ALICE, "ed25519")
    revoked_primary = gpg.generate(UID_ALICE, "future-default")
    certificate = (gpg.home / "openpgp-revocs.d" / f"{revoked_primary}.rev").read_bytes()
    gpg.run("--import", stdin=certificate.replace(b":-----BEGIN", b"-----BEGIN"))
    revoked_uid = gpg.generate("Carol <carol@example.org>", "future-default")
    gpg.run("--quick-add-uid", revoked_uid, UID_ALICE)
    gpg.run("--quick-revoke-uid", revoked_uid, UID_ALICE)
    expiring = gpg.generate(UID_ALICE, "ed25519")
    gpg.run("--quick-add-key", expiring, "cv25519", "encr", "2099-01-01")
    return PgpKeys(
        alice_rsa=gpg.export(rsa),
        alice_rsa_fpr=rsa,
        alice_rsa_armored=gpg.export(rsa, armor=True),
        alice_25519=gpg.export(modern),
        alice_25519_fpr=modern,
        alice_25519_secret=gpg.export(modern, secret=True),
        alice_25519_secret_armored=gpg.export(modern, secret=True, armor=True),
        bob=gpg.export(bob),
        revoked_subkey=gpg.export(revoked_sub),
        expired_subkey=gpg.export(expired_sub),
        weak_subkey=gpg.export(weak_sub),
        weak_primary=gpg.export(weak_primary),
        brainpool=gpg.export(brainpool),
        sign_only=gpg.export(sign_only),
        revoked_primary=gpg.export(revoked_primary),
        revoked_uid=gpg.export(revoked_uid),
        expiring=gpg.export(expiring),
        expiring_fpr=expiring,
    )


@pytest.fixture(scope="session")
def pgp_keys() -> Iterator[PgpKeys]:
    """Every OpenPGP test key, generated once; the scratch home and its agent are removed."""
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    with scratch_gpg_home("test-keys-gpg-") as gpg:
        yield _make_keys(gpg)
