"""OpenPGP decryption of APPENDs with the server's secret keys, through gpg.

Whether a message is ours is decided without gpg: the key IDs of its
Public-Key Encrypted Session Key packets (RFC 4880 section 5.1) are read from
the armored message and compared with the server's encryption subkeys,
current and retired (:func:`recipient_key_ids`).  Only then does gpg decrypt,
in a throw-away home holding just the matching server secret keys (removed,
its agent stopped, afterwards), and its status lines must say
``DECRYPTION_OKAY`` with an intact MDC -- otherwise
:class:`~transcoder.inbound.cms_decrypt.NotDecryptable`.
A wildcard key ID (``gpg --throw-keyids``) may be anyone's: gpg tries, and a
message it cannot open is treated as not ours.
"""

from __future__ import annotations

import base64
import binascii
import subprocess
from typing import BinaryIO

from transcoder.inbound.cms_decrypt import NotDecryptable
from transcoder.keys.server_keys_gpg import GPG_TIMEOUT, scratch_home
from transcoder.keys.server_keys_gpg import gpg as run_gpg

WILDCARD = "0" * 16
#: Armored octets read to find the recipients (PKESK packets are small and come first).
PEEK = 64 * 1024
MAX_LINE = 64 * 1024
_PKESK, _SKESK = 1, 3


def dearmor(armored: bytes) -> bytes:
    """The binary packets at the start of an ASCII-armored message (RFC 4880 section 6.2);
    ``armored`` may be cut short (only its leading packets are wanted)."""
    lines = armored.replace(b"\r\n", b"\n").split(b"\n")
    try:
        start = next(i for i, ln in enumerate(lines) if ln.startswith(b"-----BEGIN PGP MESSAGE"))
        blank = next(i for i in range(start + 1, len(lines)) if not lines[i].strip())
    except StopIteration:
        return b""
    body = []
    for line in lines[blank + 1 :]:
        if line.startswith((b"=", b"-----END PGP")):
            break
        body.append(line.strip())
    text = b"".join(body)
    try:
        return base64.b64decode(text[: len(text) // 4 * 4], validate=True)
    except (binascii.Error, ValueError):
        return b""


def recipient_key_ids(packets: bytes) -> list[str]:
    """Key IDs (16 hex digits) of the PKESK packets leading ``packets``."""
    found: list[str] = []
    pos = 0
    while pos < len(packets):
        first = packets[pos]
        if not first & 0x80:
            break
        if first & 0x40:  # new format (RFC 4880 section 4.2.2)
            tag, pos = first & 0x3F, pos + 1
            if pos >= len(packets):
                break
            octet = packets[pos]
            if octet < 192:
                length, pos = octet, pos + 1
            elif octet < 224 and pos + 1 < len(packets):
                length, pos = ((octet - 192) << 8) + packets[pos + 1] + 192, pos + 2
            elif octet == 255:
                length, pos = int.from_bytes(packets[pos + 1 : pos + 5], "big"), pos + 5
            else:
                break  # partial lengths: a data packet, the session keys are behind us
        else:  # old format
            tag, kind, pos = (first >> 2) & 0x0F, first & 3, pos + 1
            if kind == 3:
                break
            size = (1, 2, 4)[kind]
            length, pos = int.from_bytes(packets[pos : pos + size], "big"), pos + size
        if tag not in (_PKESK, _SKESK):
            break
        body = packets[pos : pos + length]
        if tag == _PKESK and len(body) >= 9 and body[0] == 3:
            found.append(body[1:9].hex())
        pos += length
    return found


def decrypt_openpgp(
    armored: BinaryIO, secrets: dict[str, bytes], out: BinaryIO, gpg: str = "gpg"
) -> str | None:
    """Decrypt the armored message in ``armored`` into ``out`` if it is encrypted to one of
    ``secrets`` (encryption subkey fingerprint -> armored secret key); the subkey that
    opened it, or ``None`` when it is not for the server.  gpg streams from file to file."""
    armored.seek(0)
    ids = recipient_key_ids(dearmor(armored.read(PEEK)))
    armored.seek(0)
    matching = {fpr: secret for fpr, secret in secrets.items() if fpr[-16:].lower() in ids}
    if not matching and WILDCARD in ids:
        matching = dict(secrets)  # a hidden recipient: try every key
    if not matching:
        return None
    with scratch_home(gpg) as home:
        for secret in matching.values():
            run_gpg(home, "--import", data=secret, binary=gpg)
        command = [
            gpg,
            "--homedir",
            str(home),
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--status-fd",
            "2",
            "--output",
            "-",
            "--decrypt",
        ]
        try:
            done = subprocess.run(
                command, stdin=armored, stdout=out, stderr=subprocess.PIPE, timeout=GPG_TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired):
            done = None
    status = done.stderr.decode("utf-8", "replace") if done is not None else ""
    if (
        done is not None
        and done.returncode == 0
        and "[GNUPG:] DECRYPTION_OKAY" in status
        and "[GNUPG:] GOODMDC" in status
    ):
        return next(iter(matching))
    if WILDCARD in ids and not any(fpr[-16:].lower() in ids for fpr in secrets):
        return None  # a hidden recipient gpg could not open: someone else's
    raise NotDecryptable("encrypted to the server's key but it does not decrypt")


def extract_armored(source: BinaryIO, out: BinaryIO) -> bool:
    """Copy the first armored OpenPGP message of ``source`` (from where it stands) to
    ``out``, line by line; whether there was a whole one."""
    inside = False
    while line := source.readline(MAX_LINE):
        if not inside and line.startswith(b"-----BEGIN PGP MESSAGE-----"):
            inside = True
        if inside:
            out.write(line)
            if line.startswith(b"-----END PGP MESSAGE-----"):
                out.seek(0)
                return True
    return False
