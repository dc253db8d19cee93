"""``transcoder-client new-identity``: a test identity to try the server with.

Makes, for one address, a key pair the server accepts and the files mail
clients import -- the same as the recipes in docs/xkey.md ("Making a key"):

* ``smime``: a self-signed RSA-3072 certificate with subjectAltName
  ``email:ADDRESS``, keyUsage digitalSignature + keyEncipherment and
  extendedKeyUsage emailProtection (RFC 8550 section 4.4), valid for
  ``days``; written as ``ADDRESS.crt`` (PEM, what you provision),
  ``ADDRESS.key`` (the unencrypted private key, PKCS#8 PEM) and
  ``ADDRESS.p12`` (key and certificate, for Thunderbird and ``gpgsm
  --import``).  The PKCS#12 uses PBE-SHA1-3DES for key and certificates and a
  SHA-1 MAC -- what gpgsm 2.2 can read (it cannot read OpenSSL 3's default
  PBES2/AES); Thunderbird reads both.
* ``openpgp``: an Ed25519 primary key with a Curve25519 encryption subkey
  (gpg's ``future-default``), user ID ``<ADDRESS>``, made by gpg in a
  throw-away home; written as ``ADDRESS.pub.asc`` (what you provision) and
  ``ADDRESS.sec.asc`` (the secret key, no passphrase, for ``gpg --import``
  or Thunderbird).

These are for trying things out: private keys are written unprotected
(mode 0600), and a self-signed certificate vouches for nothing.  Existing
files are never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KINDS = ("smime", "openpgp")
RSA_BITS = 3072


class IdentityError(Exception):
    """The identity could not be made (a file exists, gpg failed)."""


@dataclass(frozen=True)
class IdentityFile:
    """One file written, and what it is for."""

    path: Path
    purpose: str


def _targets(folder: Path, address: str, suffixes: tuple[str, ...]) -> list[Path]:
    if "/" in address or address.startswith(".") or "@" not in address:
        raise IdentityError(f"not an email address: {address!r}")
    paths = [folder / f"{address}{suffix}" for suffix in suffixes]
    for path in paths:
        if path.exists():
            raise IdentityError(f"{path} exists; not overwritten")
    return paths


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write ``data`` to the new file ``path``; 0600 when ``private``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with open(fd, "wb") as f:
        f.write(data)


def smime_certificate(
    key: rsa.RSAPrivateKey, address: str, now: datetime, days: int, serial: int
) -> x509.Certificate:
    """A self-signed S/MIME certificate for ``address`` that the server accepts."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, address),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, address),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def legacy_pkcs12(key: rsa.RSAPrivateKey, cert: x509.Certificate, password: bytes) -> bytes:
    """Key and certificate as PKCS#12 that gpgsm 2.2 imports: PBE-SHA1-3DES, SHA-1 MAC
    (``openssl pkcs12 -export -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES -macalg sha1``)."""
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())  # what gpgsm 2.2 reads (a MAC over 3DES-wrapped data)
        .build(password)
    )
    name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return pkcs12.serialize_key_and_certificates(str(name).encode(), key, cert, None, encryption)


def new_smime_identity(
    address: str,
    folder: Path,
    now: datetime,
    password: str,
    *,
    days: int = 365,
    serial: Callable[[], int] = x509.random_serial_number,
) -> list[IdentityFile]:
    """Write ``ADDRESS.crt``, ``ADDRESS.key`` and ``ADDRESS.p12`` into ``folder``."""
    crt, key_path, p12 = _targets(folder, address, (".crt", ".key", ".p12"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    cert = smime_certificate(key, address, now, days, serial())
    _write(crt, cert.public_bytes(serialization.Encoding.PEM), private=False)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(key_path, key_pem, private=True)
    _write(p12, legacy_pkcs12(key, cert, password.encode()), private=True)
    return [
        IdentityFile(crt, "certificate: provision this one"),
        IdentityFile(key_path, "private key, unencrypted: keep it to yourself"),
        IdentityFile(p12, "key and certificate for Thunderbird and gpgsm --import"),
    ]


def _gpg(gpg: str, home: str, *args: str) -> bytes:
    command = [gpg, "--homedir", home, "--batch", "--no-tty", "--pinentry-mode", "loopback"]
    try:
        done = subprocess.run(
            [*command, "--passphrase", "", *args], capture_output=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IdentityError(f"cannot run {gpg}: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise IdentityError(f"{gpg} {args[0]} failed: {detail[-1] if detail else 'no detail'}")
    return done.stdout


def new_openpgp_identity(
    address: str, folder: Path, *, gpg: str = "gpg", days: int = 365
) -> tuple[list[IdentityFile], str]:
    """Write ``ADDRESS.pub.asc`` and ``ADDRESS.sec.asc``; return them and the fingerprint."""
    public, secret = _targets(folder, address, (".pub.asc", ".sec.asc"))
    # A short path: gpg-agent's socket path must fit in sockaddr_un.
    with tempfile.TemporaryDirectory(prefix="tc-gpg-") as home:
        try:
            _gpg(
                gpg,
                home,
                "--quick-gen-key",
                f"<{address}>",
                "future-default",
                "default",
                f"{days}d",
            )
            listing = _gpg(gpg, home, "--with-colons", "--list-keys").decode()
            fingerprint = next(
                line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
            )
            exported = _gpg(gpg, home, "--armor", "--export", fingerprint)
            exported_secret = _gpg(gpg, home, "--armor", "--export-secret-keys", fingerprint)
        finally:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    ["gpgconf", "--homedir", home, "--kill", "gpg-agent"],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
    _write(public, exported, private=False)
    _write(secret, exported_secret, private=True)
    return [
        IdentityFile(public, "public key: provision this one"),
        IdentityFile(secret, "secret key, no passphrase: gpg --import it, or into Thunderbird"),
    ], fingerprint
