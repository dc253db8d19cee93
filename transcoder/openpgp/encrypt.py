"""Streaming OpenPGP encryption to exact subkeys with gpg, driven by python-gnupg.

:func:`encrypt_armored` runs one ``gpg --encrypt --armor`` process:
python-gnupg's writer thread feeds gpg's stdin from ``src`` in chunks, and
its reader thread hands each chunk of gpg's stdout to our ``on_data``
callback, which writes it to ``dst`` at once and returns ``False`` so that
python-gnupg keeps nothing (python-gnupg 0.5.x, ``GPG.on_data``).  Memory
stays constant whatever the size of the message.

The command line (RFC 9580 for the packets, RFC 3156 section 4 for armor):

* ``-r <fingerprint>!`` for each recipient: the ``!`` makes gpg use exactly
  that (sub)key instead of picking one itself;
* ``--trust-model always``: the keys come only from the keystore, which
  validated them; there is no web of trust to consult;
* ``--cipher-algo AES256``; ``--compress-algo none`` (speed, and compression
  leaks information about the plaintext through the length);
* no network, no agent, no configuration: ``--no-options``,
  ``--no-autostart``, ``--disable-dirmngr``, ``--no-auto-key-locate``,
  ``--no-auto-key-retrieve``; and ``--no-random-seed-file`` so that an
  encryption writes nothing into the home directory (the kernel's CSPRNG
  seeds libgcrypt instead).

The armored output is converted to CRLF line ends (it goes into a MIME
message, RFC 5322 section 2.1).  Success requires exit status 0, an
``END_ENCRYPTION`` status line, AES-256 announced by ``BEGIN_ENCRYPTION``
and no ``INV_RECP``/``FAILURE``/``ERROR``; anything else raises
:class:`GpgFailed` carrying gpg's lines for the log.

**Signed views** (issue 16, :func:`sign_encrypt_armored`): the same command
with ``--sign --local-user <signing subkey>! --digest-algo SHA256``, so gpg
writes a signed message (one-pass signature, literal data, signature) inside
the encryption (RFC 3156 section 6.2).  gpg 2.x signs only through a
gpg-agent, which the server's keyring home never runs; so each signed
encryption gets a throw-away home (:func:`~transcoder.keys.server_keys_gpg.scratch_home`:
the server's secret key imported, the agent stopped and the home deleted
afterwards -- no process outlives the call) and reads the recipients' keys
from their keyring files as before.  That costs an import and an agent per
view (tens of milliseconds): acceptable for the keys only gpg serves, whose
views are stored once made.  Success also requires ``SIG_CREATED``.

Blocking: call from a worker thread, never the reactor thread.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import gnupg

from transcoder.keys.server_keys_gpg import ServerKeyInvalid, scratch_home
from transcoder.keys.server_keys_gpg import gpg as run_gpg
from transcoder.openpgp.errors import GpgFailed

#: Read and write size for gpg's stdin and stdout.
CHUNK_SIZE = 64 * 1024

#: Options on every gpg command line: no configuration, network, agent or writes.
ISOLATION_OPTIONS = (
    "--no-options",
    "--no-autostart",
    "--disable-dirmngr",
    "--no-auto-key-locate",
    "--no-auto-key-retrieve",
    "--no-random-seed-file",
)

#: Options of the encryption itself (besides ``--encrypt --armor`` and the recipients).
ENCRYPT_OPTIONS = (
    "--trust-model",
    "always",
    "--cipher-algo",
    "AES256",
    "--compress-algo",
    "none",
    "--no-encrypt-to",
)

#: RFC 9580 section 9.3: symmetric algorithm 9 is AES with 256-bit key.
AES256_ID = "9"
MIN_GPG_VERSION = (2, 1)

_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64}")
_FATAL_STATUSES = frozenset({"INV_RECP", "FAILURE", "ERROR", "NO_RECP"})


class Readable(Protocol):
    """What python-gnupg reads gpg's input from: ``read(size) -> bytes``, ``b""`` at the end.

    Binary files qualify, and so does :class:`transcoder.mime.protect.InnerEntityReader`.
    """

    def read(self, size: int = -1, /) -> bytes | None:
        """Up to ``size`` octets."""
        ...


def check_fingerprint(fingerprint: str) -> str:
    """``fingerprint`` as lowercase hex (v4: 40 digits, v6: 64); ValueError otherwise.

    Fingerprints end up on gpg's command line and in file names, so nothing
    but hex digits is allowed through.
    """
    bare = fingerprint.removesuffix("!")
    if not _FINGERPRINT.fullmatch(bare):
        raise ValueError(f"not an OpenPGP fingerprint: {fingerprint!r}")
    return bare.lower()


def gpg_environment(homedir: str) -> dict[str, str]:
    """The whole environment of our gpg processes: nothing inherited but ``PATH``."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": homedir,
        "GNUPGHOME": homedir,
        "LC_ALL": "C",
    }


@functools.lru_cache(maxsize=32)
def gpg_handle(gpg_binary: str, homedir: str) -> Any:
    """A python-gnupg handle for ``homedir``, made once (making one runs ``gpg --list-config``)."""
    try:
        gpg = gnupg.GPG(
            gpgbinary=gpg_binary,
            gnupghome=homedir,
            env=gpg_environment(homedir),
            options=list(ISOLATION_OPTIONS),
        )
    except (OSError, ValueError) as error:
        raise GpgFailed(f"cannot run {gpg_binary!r}: {error}") from error
    if gpg.version is None or tuple(gpg.version[:2]) < MIN_GPG_VERSION:
        raise GpgFailed(f"{gpg_binary!r} is not GnuPG 2.1 or later")
    return gpg


class ArmorSink:
    """python-gnupg ``on_data`` callback: writes gpg's armored output to ``dst`` with CRLF.

    Called from python-gnupg's reader thread.  After a failure it stops
    writing but keeps draining gpg (python-gnupg records the first exception
    as ``on_data_failure``).
    """

    def __init__(self, dst: BinaryIO, crlf: bool = True) -> None:
        self.dst = dst
        self.crlf = crlf
        self.written = 0
        self.failed = False

    def __call__(self, data: bytes) -> bool:
        """Write one chunk; return ``False`` so that python-gnupg does not keep it."""
        if not data or self.failed:
            return False
        try:
            if self.crlf:
                if b"\r" in data:
                    raise GpgFailed("gpg's armored output contains a carriage return")
                data = data.replace(b"\n", b"\r\n")
            self.dst.write(data)
        except BaseException:
            self.failed = True
            raise
        self.written += len(data)
        return False


def encrypt_armored(
    src: Readable,
    dst: BinaryIO,
    recipients: Sequence[str],
    homedir: str | Path,
    gpg_binary: str = "gpg",
    *,
    keyrings: Sequence[str | Path] = (),
    crlf: bool = True,
) -> int:
    """Encrypt ``src`` (read to its end) to ``recipients``; write the armored message to ``dst``.

    ``recipients`` are the exact (sub)key fingerprints to encrypt to.
    ``keyrings``: when given, gpg reads the keys only from these keyring
    files (``--no-default-keyring --keyring ...``), else from ``homedir``'s
    own keyring.  Returns the number of octets written to ``dst``.  Raises
    :class:`GpgFailed` on any failure; ``dst`` then holds a partial,
    useless output.  ValueError for a malformed fingerprint.
    """
    targets, extra = command_arguments(recipients, keyrings)
    sink = ArmorSink(dst, crlf)
    result = _run(gpg_handle(gpg_binary, str(homedir)), src, targets, extra, sink)
    check_result(result)
    return sink.written


def sign_encrypt_armored(
    src: Readable,
    dst: BinaryIO,
    recipients: Sequence[str],
    keyrings: Sequence[str | Path],
    secret_key: bytes,
    signing_subkey: str,
    gpg_binary: str = "gpg",
    *,
    crlf: bool = True,
) -> int:
    """:func:`encrypt_armored`, signed by ``signing_subkey`` of ``secret_key`` (module docstring).

    ``secret_key``: the server's unprotected secret key (armored or binary);
    ``keyrings``: the recipients' keyring files.  Raises :class:`GpgFailed`.
    """
    signer = check_fingerprint(signing_subkey)
    targets, extra = command_arguments(recipients, keyrings)
    with scratch_home(gpg_binary) as home:
        try:
            run_gpg(home, "--import", data=secret_key, binary=gpg_binary)
        except ServerKeyInvalid as e:
            raise GpgFailed(f"importing the server's signing key failed: {e}") from e
        extra += ["--keyring", str(home / "pubring.kbx")]  # the signer's public key
        extra += ["--sign", "--local-user", f"{signer}!", "--digest-algo", "SHA256"]
        try:
            # Not the cached handle: this home's agent must be allowed to start.
            handle = gnupg.GPG(
                gpgbinary=gpg_binary,
                gnupghome=str(home),
                env=gpg_environment(str(home)),
                options=[o for o in ISOLATION_OPTIONS if o != "--no-autostart"],
            )
        except (OSError, ValueError) as error:
            raise GpgFailed(f"cannot run {gpg_binary!r}: {error}") from error
        sink = ArmorSink(dst, crlf)
        result = _run(handle, src, targets, extra, sink)
        check_result(result, signed=True)
    return sink.written


def command_arguments(
    recipients: Sequence[str], keyrings: Sequence[str | Path] = ()
) -> tuple[list[str], list[str]]:
    """The ``-r`` values (``<fpr>!``) and the other options of one encryption."""
    if not recipients:
        raise ValueError("no recipients")
    targets = [f"{check_fingerprint(fpr)}!" for fpr in recipients]
    extra = list(ENCRYPT_OPTIONS)
    if keyrings:
        extra.append("--no-default-keyring")
        for keyring in keyrings:
            extra += ["--keyring", str(Path(keyring).absolute())]
    return targets, extra


def _run(base: Any, src: Readable, targets: list[str], extra: list[str], sink: ArmorSink) -> Any:
    """One ``gpg --encrypt`` through python-gnupg; its result (GpgFailed if it broke)."""
    gpg = copy.copy(base)  # on_data is per call; the shared handle stays untouched
    gpg.on_data = sink
    gpg.buffer_size = CHUNK_SIZE
    # python-gnupg raises an error of its stdin feeder (gpg died, src failed)
    # instead of returning its result; keep a hold of the result to log gpg's lines.
    results: list[Any] = []
    gpg.result_map = {**gpg.result_map, "crypt": lambda handle: _kept(results, handle)}
    try:
        return gpg.encrypt_file(src, targets, armor=True, extra_args=extra)
    except GpgFailed:
        raise
    except Exception as error:
        if not results or results[0].returncode is None:
            raise GpgFailed(f"running gpg failed: {error!r}") from error
        check_result(results[0], feed_error=error)  # raises: a feed error is fatal
        raise GpgFailed(f"feeding gpg failed: {error!r}") from error


def _kept(results: list[Any], handle: Any) -> Any:
    """A python-gnupg ``Crypt`` result, also appended to ``results``."""
    result = gnupg.Crypt(handle)
    results.append(result)
    return result


def check_result(
    result: Any, feed_error: BaseException | None = None, *, signed: bool = False
) -> None:
    """Raise :class:`GpgFailed` unless python-gnupg's ``result`` shows a complete encryption
    (and, when ``signed``, a signature: ``SIG_CREATED``).

    ``feed_error`` is what broke while feeding gpg's stdin, if anything: even
    when gpg then reports success it has encrypted a truncated input.
    """
    lines = [line for line in (result.stderr or "").splitlines() if line.strip()]
    statuses = parse_statuses(lines)
    returncode = result.returncode

    def fail(reason: str) -> GpgFailed:
        return GpgFailed(reason, status_lines=lines, returncode=returncode)

    failure = result.on_data_failure
    if failure is not None:
        raise fail(f"writing gpg's output failed: {failure!r}") from failure
    if returncode != 0:
        raise fail("gpg exited with an error") from feed_error
    if feed_error is not None:
        raise fail(f"feeding gpg failed: {feed_error!r}") from feed_error
    fatal = sorted(_FATAL_STATUSES.intersection(statuses))
    if fatal:
        raise fail(f"gpg reported {', '.join(fatal)}")
    if "END_ENCRYPTION" not in statuses:
        raise fail("gpg did not report END_ENCRYPTION")
    begin = statuses.get("BEGIN_ENCRYPTION", [])
    if len(begin) < 2 or begin[1] != AES256_ID:
        raise fail("gpg did not announce AES-256")
    if signed and "SIG_CREATED" not in statuses:
        raise fail("gpg did not report SIG_CREATED")


def parse_statuses(lines: Sequence[str]) -> dict[str, list[str]]:
    """``{keyword: arguments}`` of the last ``[GNUPG:]`` status line of each keyword."""
    statuses: dict[str, list[str]] = {}
    for line in lines:
        if line.startswith("[GNUPG:] "):
            words = line[9:].split()
            if words:
                statuses[words[0]] = words[1:]
    return statuses
