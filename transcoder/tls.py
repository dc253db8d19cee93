"""The server's TLS identity: load the hoster's certificate or make a self-signed one.

On first start without ``--tls-cert``/``--tls-key`` a self-signed certificate
is generated into ``DIR/tls/`` so STARTTLS and implicit TLS work out of the
box; a hoster replaces it with a real one by pointing the options at their
files.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from transcoder.errors import ConfigurationError
from transcoder.files import write_atomically

#: Validity of a generated certificate; short enough that a forgotten demo
#: certificate expires, long enough not to surprise an evaluation.
GENERATED_VALIDITY = datetime.timedelta(days=825)


@dataclass(frozen=True)
class TLSFiles:
    """Paths of a PEM certificate (chain) and its PEM private key."""

    certificate: Path
    private_key: Path


def ensure_self_signed(
    tls_dir: Path,
    hostname: str | None = None,
    now: Callable[[], datetime.datetime] | None = None,
) -> TLSFiles:
    """Return ``tls_dir``'s certificate and key, generating a self-signed pair if absent.

    The key is ECDSA P-256 (fast handshakes, accepted by every current
    client); the certificate names ``hostname``, ``localhost`` and the
    loopback addresses in its subjectAltName.
    """
    files = TLSFiles(tls_dir / "server.crt", tls_dir / "server.key")
    if files.certificate.exists() and files.private_key.exists():
        return files
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    host = hostname or socket.getfqdn() or "localhost"
    when = (now or (lambda: datetime.datetime.now(datetime.UTC)))()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(key, host, when)
    write_atomically(
        files.private_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_atomically(files.certificate, cert.public_bytes(serialization.Encoding.PEM))
    return files


def _self_signed(
    key: ec.EllipticCurvePrivateKey, host: str, when: datetime.datetime
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, host),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imap-transcoder self-signed"),
        ]
    )
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(n) for n in dict.fromkeys([host, "localhost"])
    ]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(when - datetime.timedelta(minutes=5))
        .not_valid_after(when + GENERATED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )


def load_pem_pair(files: TLSFiles) -> bytes:
    """The certificate chain and key as one PEM blob, checked to belong together."""
    try:
        cert_pem = files.certificate.read_bytes()
        key_pem = files.private_key.read_bytes()
    except OSError as e:
        raise ConfigurationError(f"cannot read TLS files: {e}") from e
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigurationError(f"unusable TLS certificate or key: {e}") from e
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, pub) != key.public_key().public_bytes(der, pub):
        raise ConfigurationError("TLS certificate and private key do not match")
    return key_pem + b"\n" + cert_pem
