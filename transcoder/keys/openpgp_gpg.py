"""Drive gpg (through python-gnupg) in a throw-away, isolated home directory.

Every inspection gets its own ``GNUPGHOME`` from :func:`tempfile.mkdtemp`
(mode 0700), removed afterwards; the invoking user's ``~/.gnupg`` is never
read or written (``HOME`` points at the temporary directory too, and
``--no-options`` ignores any configuration file).  gpg runs with
``--batch`` (python-gnupg's default) and without network or agent:

* ``--no-autostart``: importing and exporting public keys needs no
  gpg-agent, so none is started and none can be left running;
* ``--disable-dirmngr``, ``--no-auto-key-locate``, ``--no-auto-key-retrieve``:
  no keyserver, WKD or DNS look-ups.

Requires GnuPG 2.1 or later (``--no-autostart``, ``--disable-dirmngr``,
fingerprints of subkeys in ``--with-colons`` listings); tested with 2.2.40.
These calls block (one short gpg process each): run them off the reactor.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gnupg

from transcoder.errors import ConfigurationError, ServerError
from transcoder.keys.errors import KeyInvalid, printable
from transcoder.keys.openpgp_packets import SECRET_MESSAGE

ISOLATION_OPTIONS = (
    "--no-options",
    "--no-autostart",
    "--disable-dirmngr",
    "--no-auto-key-locate",
    "--no-auto-key-retrieve",
    "--no-permission-warning",
)
MIN_GPG_VERSION = (2, 1)
#: Seconds one listing may take (a key of at most MAX_KEY_BYTES checks in well under one).
_TIMEOUT = 60

# gpg's own per-key complaint ("gpg: key 0123ABCD: no valid user IDs"); other
# stderr lines may name the temporary home and are never shown to clients.
_KEY_PROBLEM = re.compile(r"^gpg: key [0-9A-F]+: (.+)$", re.MULTILINE)


@contextmanager
def isolated_gpg(gpg_binary: str = "gpg", scratch_dir: str | Path | None = None) -> Iterator[Any]:
    """A :class:`gnupg.GPG` working in a fresh temporary home, wiped on exit.

    The home is created under ``scratch_dir`` (default: the system's
    temporary directory).
    """
    home = tempfile.mkdtemp(prefix="transcoder-gpg-", dir=scratch_dir)
    try:
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": home,
            "GNUPGHOME": home,
            "LC_ALL": "C",
        }
        try:
            gpg = gnupg.GPG(
                gpgbinary=gpg_binary, gnupghome=home, env=env, options=list(ISOLATION_OPTIONS)
            )
        except (OSError, ValueError) as error:
            raise ConfigurationError(f"cannot run {gpg_binary!r}: {error}") from error
        if gpg.version is None or tuple(gpg.version[:2]) < MIN_GPG_VERSION:
            raise ConfigurationError(f"{gpg_binary!r} is older than GnuPG 2.1")
        yield gpg
    finally:
        _stop_agent(home, gpg_binary)
        shutil.rmtree(home, ignore_errors=True)


def _stop_agent(home: str, gpg_binary: str) -> None:
    """Kill a gpg-agent that something started in ``home`` despite ``--no-autostart``."""
    if not any(Path(home).glob("S.gpg-agent*")):
        return
    gpgconf = shutil.which("gpgconf", path=str(Path(gpg_binary).parent)) or shutil.which("gpgconf")
    if gpgconf is not None:
        subprocess.run(
            [gpgconf, "--homedir", home, "--kill", "all"],
            capture_output=True,
            timeout=10,
            check=False,
        )


def import_one_key(gpg: Any, data: bytes) -> str:
    """Import ``data`` (one public key, already screened) and return its fingerprint.

    gpg's own count must agree with the screen: it read one key and no
    secret material (the ``IMPORT_RES`` status line, doc/DETAILS).
    """
    result = gpg.import_keys(data)
    if int(getattr(result, "sec_read", 0) or 0):
        raise KeyInvalid(SECRET_MESSAGE)
    count = int(getattr(result, "count", 0) or 0)
    if count > 1:
        raise KeyInvalid(f"{count} primary keys; send exactly one")
    fingerprints = sorted({fpr.upper() for fpr in result.fingerprints if fpr})
    if not fingerprints:
        problem = _KEY_PROBLEM.findall(result.stderr or "")
        detail = f" (gpg: {printable(problem[-1], 60)})" if problem else ""
        raise KeyInvalid(f"no importable OpenPGP public key{detail}")
    if len(fingerprints) > 1:
        raise KeyInvalid(f"{len(fingerprints)} primary keys; send exactly one")
    return fingerprints[0]


def check_signatures(gpg: Any, fingerprint: str) -> bytes:
    """gpg's ``--check-signatures`` colon listing of one key: its subkeys, user IDs and
    every signature on them, each marked ``!`` (verified), ``-`` (bad) and so on.

    gpg has already dropped at import what it could not verify; the listing
    says what is left and which primary key made each signature.
    """
    command = gpg.make_args(["--check-signatures", "--", fingerprint], False)
    try:
        done = subprocess.run(
            command, env=gpg.env, capture_output=True, timeout=_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ServerError(f"gpg --check-signatures failed: {error}") from error
    # A bad or uncheckable signature makes gpg exit non-zero; the listing is still whole.
    if not done.stdout:
        raise ServerError("gpg listed nothing for a key it just imported")
    return done.stdout


def export_minimal(gpg: Any, fingerprint: str) -> bytes:
    """The binary ``--export-options export-minimal`` export of one key.

    Minimal keeps each user ID's latest self-signature and every subkey
    binding and revocation; third-party certifications are dropped.
    """
    exported = gpg.export_keys(fingerprint, armor=False, minimal=True)
    if not exported:
        raise ServerError("gpg exported nothing for a key it just imported")
    return bytes(exported)
