"""Real S/MIME certificates and private keys for the transcoder tests (made once per run)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.keys.certs import ALICE, NOW, der, key_usage, make_cert
from transcoder.keys.model import KeyStatus, StoredKey
from transcoder.keys.smime import validate_certificate

_CURVES: dict[str, ec.EllipticCurve] = {
    "p256": ec.SECP256R1(),
    "p384": ec.SECP384R1(),
    "p521": ec.SECP521R1(),
}


@dataclass(frozen=True)
class SmimeIdentity:
    """A stored key and what its owner needs to decrypt: certificate and private key."""

    key: StoredKey
    cert_der: bytes
    private_key: Any

    def write_pem(self, directory: Path) -> tuple[Path, Path]:
        """Certificate and private key as PEM files in ``directory``: (cert, key)."""
        cert_path = directory / f"{self.key.fingerprint[:12]}.crt"
        key_path = directory / f"{self.key.fingerprint[:12]}.key"
        cert = x509.load_der_x509_certificate(self.cert_der)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            self.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


@functools.cache
def identity(kind: str, serial: int = 1) -> SmimeIdentity:
    """A validated key for ALICE: ``rsa2048`` or an EC curve (``p256``, ``p384``, ``p521``)."""
    private_key: Any
    if kind == "rsa2048":
        private_key = rsa.generate_private_key(65537, 2048)
        usage = key_usage(digital_signature=True, key_encipherment=True)
    else:
        private_key = ec.generate_private_key(_CURVES[kind])
        usage = key_usage(digital_signature=True, key_agreement=True)
    cert = make_cert(private_key, usage=usage, serial=1000 + serial)
    validated = validate_certificate(der(cert), ALICE, NOW)
    stored = StoredKey(
        **{f.name: getattr(validated, f.name) for f in fields(validated)},
        account=ALICE,
        status=KeyStatus.ACTIVE,
        created_at=NOW,
        activated_at=NOW,
    )
    return SmimeIdentity(stored, der(cert), private_key)
