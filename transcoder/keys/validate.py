"""One entry point for XKEY PUT and ``transcoder-admin key import``: sniff the format, validate.

The first meaningful octets decide, unambiguously:

* ``-----BEGIN PGP`` (ASCII armor) or an octet with its high bit set (an
  OpenPGP packet header, RFC 9580 section 4.2) -> OpenPGP;
* any other ``-----BEGIN`` (PEM) or ``0x30`` (a DER SEQUENCE) -> X.509.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509

from transcoder.keys.errors import MAX_KEY_BYTES, KeyInvalid, check_key_size
from transcoder.keys.model import KeyFormat, ValidatedKey
from transcoder.keys.openpgp import validate_openpgp_key
from transcoder.keys.smime import validate_certificate

_DER_SEQUENCE = 0x30


def sniff_format(data: bytes) -> KeyFormat:
    """Which validator ``data`` is for; KeyInvalid when it looks like neither."""
    pem = data.find(b"-----BEGIN ")
    if pem >= 0:
        return KeyFormat.OPENPGP if data.startswith(b"PGP ", pem + 11) else KeyFormat.SMIME
    stripped = data.lstrip()
    if not stripped:
        raise KeyInvalid("empty key material")
    if stripped[0] == _DER_SEQUENCE:
        return KeyFormat.SMIME
    if stripped[0] & 0x80:
        return KeyFormat.OPENPGP
    raise KeyInvalid("neither an X.509 certificate nor an OpenPGP key")


def validate_key(
    data: bytes,
    account: str,
    now: datetime,
    *,
    trust_anchors: Sequence[x509.Certificate] = (),
    gpg_binary: str = "gpg",
    max_bytes: int = MAX_KEY_BYTES,
) -> ValidatedKey:
    """Validate ``data`` as ``account``'s certificate or OpenPGP key (blocking)."""
    check_key_size(data, max_bytes)
    if sniff_format(data) is KeyFormat.OPENPGP:
        return validate_openpgp_key(data, account, now, gpg_binary, max_bytes=max_bytes)
    return validate_certificate(data, account, now, trust_anchors, max_bytes=max_bytes)
