"""Build X.509 test certificates with cryptography (no files, no openssl)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

#: The moment the S/MIME tests validate at.
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ALICE = "alice@example.org"


def key_usage(**bits: bool) -> x509.KeyUsage:
    """A KeyUsage with the named bits set and every other bit clear."""
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    values = {name: bits.get(name, False) for name in names}
    return x509.KeyUsage(**values)


@dataclass(frozen=True)
class Issued:
    """A certificate and the private key of its subject (to issue further certificates)."""

    cert: x509.Certificate
    key: Any


def _name(common_name: str, email: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if email is not None:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attributes)


def _hash_for(signer: Any) -> hashes.SHA256 | None:
    if isinstance(signer, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def make_cert(
    key: Any,
    *,
    sans: Sequence[str] | None = (ALICE,),
    subject_email: str | None = None,
    common_name: str = "Alice",
    issuer: Issued | None = None,
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=365),
    usage: x509.KeyUsage | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    ca: bool | None = None,
    path_length: int | None = None,
    signer: Any = None,
    serial: int | None = None,
) -> x509.Certificate:
    """A certificate for ``key``; self-signed (by ``signer`` or ``key``) unless ``issuer``."""
    subject = _name(common_name, subject_email)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if sans is not None:
        names = [x509.RFC822Name(address) for address in sans]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
    if usage is not None:
        builder = builder.add_extension(usage, True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), False)
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca, path_length), True)
    sign_with = issuer.key if issuer else (signer or key)
    return builder.sign(sign_with, _hash_for(sign_with))


def make_ca(
    name: str = "Test CA",
    *,
    issuer: Issued | None = None,
    path_length: int | None = None,
    usage: x509.KeyUsage | None = None,
    ca: bool = True,
    not_after: datetime = NOW + timedelta(days=3650),
) -> Issued:
    """A CA (root when ``issuer`` is None) on a fresh P-256 key."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_cert(
        key,
        sans=None,
        common_name=name,
        issuer=issuer,
        ca=ca,
        path_length=path_length,
        usage=usage,
        not_before=NOW - timedelta(days=365),
        not_after=not_after,
    )
    return Issued(cert, key)


def der(cert: x509.Certificate) -> bytes:
    """DER encoding of ``cert``."""
    return cert.public_bytes(serialization.Encoding.DER)


def pem(*certs: x509.Certificate) -> bytes:
    """PEM bundle of ``certs`` in the order given."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def pkcs7_bundle(certs: Sequence[x509.Certificate], encoding: str = "DER") -> bytes:
    """A PKCS#7 certs-only bundle of ``certs``."""
    enc = serialization.Encoding.DER if encoding == "DER" else serialization.Encoding.PEM
    return pkcs7.serialize_certificates(list(certs), enc)
