"""What a key file is, read on the client before it is sent: format, fingerprint, role.

``transcoder-client provision`` asks before a key replaces one in force.
The server retires the account's active key of the same format and role
(encryption-capable or signing-only) when a new one is stored
(docs/xkey.md, "XKEY PUT"), so the client reads the key the way the server
will -- with the server's own sans-IO parsers, no gpg -- to tell in advance
which active key it would replace.  The server still judges the key: a key
this cannot read is simply sent, and the server says why it refuses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes

from transcoder.client.model import KeyInfo
from transcoder.errors import ClientError
from transcoder.keys.model import KeyFormat, KeyUsage
from transcoder.keys.openpgp_packets import check_public_key_data
from transcoder.keys.smime import certificate_usages, check_public_key, load_certificates
from transcoder.keys.validate import sniff_format


@dataclass(frozen=True)
class KeyFileFacts:
    """A key file as the server will store it: ``SMIME``/``OPENPGP``, lowercase hex
    fingerprint (as XKEY reports it), and whether it is the encryption role."""

    format: str
    fingerprint: str
    encrypts: bool


def inspect_key(data: bytes) -> KeyFileFacts | None:
    """The facts of ``data``, or ``None`` when it cannot be read here (the server decides)."""
    try:
        if sniff_format(data) is KeyFormat.SMIME:
            cert, _ = load_certificates(data)
            _, is_rsa = check_public_key(cert)
            encrypts = KeyUsage.ENCRYPT in certificate_usages(cert, is_rsa)
            return KeyFileFacts("SMIME", cert.fingerprint(hashes.SHA256()).hex(), encrypts)
        submitted = check_public_key_data(data)
    except (ClientError, ValueError):
        return None
    # The server only stores OpenPGP keys that can encrypt.
    return KeyFileFacts("OPENPGP", submitted.fingerprint.lower(), True)


def would_replace(facts: KeyFileFacts, stored: Sequence[KeyInfo]) -> list[KeyInfo]:
    """The active keys that storing a key with ``facts`` retires: same format and role,
    another fingerprint.  Storing the key already in force replaces nothing."""
    return [
        key
        for key in stored
        if key.status == "ACTIVE"
        and key.format == facts.format
        and ("ENCRYPT" in key.usage) == facts.encrypts
        and key.fingerprint.lower() != facts.fingerprint
    ]
