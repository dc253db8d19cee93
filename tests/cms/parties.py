"""Test recipients: a private key, its self-signed certificate, and both as PEM files."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from transcoder.cms import Recipient


@dataclass(frozen=True)
class Party:
    """Someone we encrypt to, with everything a real peer needs to decrypt."""

    name: str
    key: Any
    cert: x509.Certificate
    cert_path: Path
    key_path: Path

    @property
    def cert_der(self) -> bytes:
        """The certificate in DER."""
        return self.cert.public_bytes(serialization.Encoding.DER)

    def recipient(self, *, use_key_identifier: bool = False) -> Recipient:
        """The encoder's view of this party."""
        return Recipient.from_certificate(self.cert_der, use_key_identifier=use_key_identifier)


def make_cert(
    key: Any,
    common_name: str,
    *,
    serial: int | None = None,
    key_identifier: bool = True,
    signer: Any = None,
) -> x509.Certificate:
    """A certificate for ``key``; self-signed unless ``signer`` (a private key) is given."""
    now = datetime.now(UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, f"{common_name}@example.org"),
        ]
    )
    usage = (
        dict(key_agreement=True, key_encipherment=False)
        if isinstance(key.public_key(), ec.EllipticCurvePublicKey)
        else dict(key_agreement=False, key_encipherment=True)
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                data_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
    )
    if key_identifier:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    signing_key = signer if signer is not None else key
    algorithm = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signing_key, algorithm)


def make_party(directory: Path, name: str, key: Any) -> Party:
    """Write ``key`` and a fresh certificate for it as PEM files under ``directory``."""
    cert = make_cert(key, name)
    cert_path = directory / f"{name}.cert.pem"
    key_path = directory / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Party(name, key, cert, cert_path, key_path)


def generate_parties(directory: Path) -> dict[str, Party]:
    """One party per recipient kind: RSA-3072, RSA-2048, EC P-256, P-384, P-521."""
    keys: dict[str, Any] = {
        "rsa3072": rsa.generate_private_key(65537, 3072),
        "rsa2048": rsa.generate_private_key(65537, 2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
    }
    return {name: make_party(directory, name, key) for name, key in keys.items()}
