"""The server's OpenPGP key through gpg: generate, check, keep in the server's own GNUPGHOME.

Generation runs gpg in a throw-away home (``--quick-gen-key`` of an Ed25519
certification-only primary key, then ``--quick-add-key`` of a Curve25519
encryption subkey and an Ed25519 signing subkey), exports the armored public
and secret keys, and deletes the home.  A key the hoster supplies is checked
the same way: imported into a throw-away home and listed; it must have an
encryption subkey and a *separate* signing key, and no key that does both
(secureops section 4.1).  Decryption imports the secret key it needs into a
throw-away home too (:mod:`transcoder.inbound.pgp_decrypt`).  Blocking
(subprocesses): call from worker threads or at start.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from transcoder.keys.model import KeyFormat
from transcoder.keys.server_keys import BOTH, ServerKey, ServerKeyInvalid

GPG_TIMEOUT = 60
USER_ID = "imap-transcoder server"


@dataclass(frozen=True)
class OpenPgpServerKey:
    """A server OpenPGP key: the index entry and the armored secret key."""

    entry: ServerKey
    secret: bytes


def gpg(home: Path, *args: str, data: bytes = b"", binary: str = "gpg") -> bytes:
    """Run ``gpg --homedir home --batch args``; its stdout, or ServerKeyInvalid with stderr."""
    command = [binary, "--homedir", str(home), "--batch", "--no-tty", *args]
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=GPG_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ServerKeyInvalid(f"gpg failed: {e}") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
        raise ServerKeyInvalid(f"gpg failed: {detail[0]}")
    return done.stdout


@contextmanager
def scratch_home(binary: str = "gpg") -> Iterator[Path]:
    """A throw-away GNUPGHOME (short path: the agent's socket must fit), removed after."""
    home = Path(tempfile.mkdtemp(prefix="tc-sk-", dir="/tmp"))
    try:
        yield home
    finally:
        stop_agent(home)
        shutil.rmtree(home, ignore_errors=True)


def generate_openpgp(now: datetime, name: str = USER_ID, binary: str = "gpg") -> OpenPgpServerKey:
    """A new server key: certify-only primary key, encryption subkey, signing subkey."""
    with scratch_home(binary) as home:
        quiet = ("--pinentry-mode", "loopback", "--passphrase", "")
        gpg(home, *quiet, "--quick-gen-key", name, "ed25519", "cert", "3y", binary=binary)
        primary = _listing(home, binary)[0]
        for algo, use in (("cv25519", "encr"), ("ed25519", "sign")):
            gpg(home, *quiet, "--quick-add-key", primary, algo, use, "3y", binary=binary)
        return _export(home, primary, now, "generated", binary)


def inspect_openpgp(secret: bytes, now: datetime, binary: str = "gpg") -> OpenPgpServerKey:
    """Check a hoster's armored (or binary) secret key; ServerKeyInvalid if unfit."""
    with scratch_home(binary) as home:
        gpg(home, "--import", data=secret, binary=binary)
        listing = _listing(home, binary, secret=True)
        if len(listing) != 1:
            raise ServerKeyInvalid("give exactly one OpenPGP secret key")
        return _export(home, listing[0], now, "imported", binary)


def _listing(home: Path, binary: str, secret: bool = False) -> list[str]:
    """Primary fingerprints in ``home``."""
    what = "--list-secret-keys" if secret else "--list-keys"
    out = gpg(home, "--with-colons", what, binary=binary).decode()
    found, want_fpr = [], False
    for line in out.splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sec"):
            want_fpr = True
        elif fields[0] == "fpr" and want_fpr:
            found.append(fields[9].lower())
            want_fpr = False
    return found


def _export(home: Path, primary: str, now: datetime, origin: str, binary: str) -> OpenPgpServerKey:
    """Check the key's capabilities and export it."""
    out = gpg(home, "--with-colons", "--fixed-list-mode", "--list-keys", primary, binary=binary)
    keys: list[tuple[str, str, str]] = []  # (capabilities, fingerprint, expiry)
    capabilities, expiry, created = "", "", ""
    for line in out.decode().splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sub"):
            capabilities, expiry = fields[11], fields[6]
            created = created or fields[5]
            if fields[1] in ("r", "e"):
                capabilities = ""  # revoked or expired: no use
        elif fields[0] == "fpr":
            keys.append((capabilities, fields[9].lower(), expiry))
    encrypt = [fpr for caps, fpr, _ in keys if "e" in caps]
    sign = [fpr for caps, fpr, _ in keys[1:] if "s" in caps]
    if any("e" in caps and "s" in caps for caps, _, _ in keys):
        raise ServerKeyInvalid("an OpenPGP key that both signs and encrypts is refused")
    if not encrypt or not sign:
        raise ServerKeyInvalid("the OpenPGP key needs an encryption subkey and a signing subkey")
    public = gpg(home, "--armor", "--export", primary, binary=binary)
    secret = gpg(
        home,
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
        "--armor",
        "--export-secret-keys",
        primary,
        binary=binary,
    )
    until = keys[0][2]
    entry = ServerKey(
        format=KeyFormat.OPENPGP,
        usages=BOTH,
        fingerprint=primary,
        public=public,
        created=now,
        not_before=datetime.fromtimestamp(int(created), UTC) if created else None,
        not_after=datetime.fromtimestamp(int(until), UTC) if until else None,
        subkeys=(encrypt[-1], sign[-1]),
        algorithm="openpgp",
        origin=origin,
    )
    return OpenPgpServerKey(entry, secret)


def stop_agent(home: Path) -> None:
    """Stop the gpg-agent a secret-key operation started in ``home``: no process outlives it."""
    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "all"],
        capture_output=True,
        timeout=GPG_TIMEOUT,
        check=False,
    )
