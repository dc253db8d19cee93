"""The server's own key pairs (issue 16): values, and S/MIME generation and checks (sans-IO).

draft-kadobayashi-smime-secureops section 4.1 asks for *dual key pairs*: one
pair to decrypt what clients encrypt to the server, another to sign what it
sends, never one key for both.  Per format:

* S/MIME: two certificates.  The encryption certificate's keyUsage is
  ``keyEncipherment`` for RSA, ``keyAgreement`` for EC, and nothing else; the
  signing certificate's is ``digitalSignature`` (``nonRepudiation`` allowed)
  and no encipherment or agreement (RFC 8550 section 4.4.2).
* OpenPGP: one primary key (certification only) with an encryption subkey
  and a separate signing subkey; no key of it may both sign and encrypt
  (:mod:`transcoder.keys.server_keys_gpg` checks this with gpg).

Generated keys are EC P-256 for S/MIME (instant to make; ECDSA signatures
are deterministic per RFC 6979 with ``deterministic_signing``, ECDH is what
``openssl cms -encrypt`` does for an EC recipient) -- ``algorithm="rsa"``
makes RSA-3072 instead.  Nothing here writes files: see
:mod:`transcoder.keys.server_keys_files`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from transcoder.errors import ConfigurationError
from transcoder.keys.model import KeyFormat, KeyUsage, format_timestamp

#: How long a generated key is valid.  Expiry does not end decryption: a
#: retired or expired encryption key stays usable for decryption (secureops 3.1).
GENERATED_DAYS = 3 * 365
ENCRYPT = frozenset({KeyUsage.ENCRYPT})
SIGN = frozenset({KeyUsage.SIGN})
BOTH = frozenset({KeyUsage.ENCRYPT, KeyUsage.SIGN})

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class ServerKeyInvalid(ConfigurationError):
    """A server key offered by the hoster is unusable for the role it was offered for."""


@dataclass(frozen=True)
class ServerKey:
    """One server key as the index records it.

    ``fingerprint``: SHA-256 of the certificate's DER (S/MIME), the primary
    key's v4 fingerprint (OpenPGP).  ``subkeys`` (OpenPGP): the encryption
    and signing subkeys' fingerprints, in that order.  ``public``: the PEM
    certificate or the armored public key.  ``retired``: when rotation or
    ``server-key retire`` took it out of service (``None``: current).
    """

    format: KeyFormat
    usages: frozenset[KeyUsage]
    fingerprint: str
    public: bytes
    created: datetime
    not_before: datetime | None = None
    not_after: datetime | None = None
    retired: datetime | None = None
    subkeys: tuple[str, ...] = ()
    algorithm: str = ""
    origin: str = "generated"

    @property
    def current(self) -> bool:
        """Whether the key is in service (it may still have expired)."""
        return self.retired is None

    def retire(self, now: datetime) -> ServerKey:
        """This key taken out of service at ``now`` (decryption keys stay usable)."""
        return self if self.retired is not None else replace(self, retired=now)

    def describe(self) -> str:
        """One line for ``transcoder-admin server-key list``."""
        usages = ",".join(u.value for u in KeyUsage if u in self.usages)
        created = format_timestamp(self.created)
        until = format_timestamp(self.not_after) if self.not_after else "never"
        state = f"retired {format_timestamp(self.retired)}" if self.retired else "current"
        return (
            f"{self.format.value:<7} {usages:<12} {self.fingerprint} {self.algorithm:<9}"
            f" created {created} not-after {until} {state} ({self.origin})"
        )


# -- S/MIME ------------------------------------------------------------------------------


def new_private_key(algorithm: str) -> PrivateKey:
    """A fresh key: ``ec`` (P-256) or ``rsa`` (3072 bits)."""
    if algorithm == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ConfigurationError(f"unknown key algorithm {algorithm!r}: ec or rsa")


def _key_usage(usage: KeyUsage, key: PrivateKey) -> x509.KeyUsage:
    encrypt = usage is KeyUsage.ENCRYPT
    return x509.KeyUsage(
        digital_signature=not encrypt,
        content_commitment=False,
        key_encipherment=encrypt and isinstance(key, rsa.RSAPrivateKey),
        data_encipherment=False,
        key_agreement=encrypt and isinstance(key, ec.EllipticCurvePrivateKey),
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def generate_smime(
    usage: KeyUsage, now: datetime, key: PrivateKey, name: str = "imap-transcoder server"
) -> x509.Certificate:
    """A self-signed certificate for ``key`` fit for exactly ``usage``, valid from ``now``."""
    role = "encryption" if usage is KeyUsage.ENCRYPT else "signing"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {role} key")])
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=GENERATED_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(usage, key), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def check_smime_pair(
    certificate: x509.Certificate, key: PrivateKey, usage: KeyUsage, now: datetime
) -> None:
    """Refuse a certificate and key unfit for ``usage`` (:class:`ServerKeyInvalid`)."""
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ServerKeyInvalid("server S/MIME keys must be RSA or EC")
    if certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise ServerKeyInvalid("the private key does not belong to the certificate")
    if certificate.not_valid_after_utc <= now:
        raise ServerKeyInvalid("the certificate has expired")
    try:
        ku = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise ServerKeyInvalid("the certificate has no keyUsage extension") from None
    agreement = ku.key_agreement
    granted = {
        "digitalSignature": ku.digital_signature,
        "nonRepudiation": ku.content_commitment,
        "keyEncipherment": ku.key_encipherment,
        "dataEncipherment": ku.data_encipherment,
        "keyAgreement": agreement,
        "keyCertSign": ku.key_cert_sign,
        "cRLSign": ku.crl_sign,
    }
    if usage is KeyUsage.ENCRYPT:
        wanted = "keyEncipherment" if isinstance(key, rsa.RSAPrivateKey) else "keyAgreement"
        allowed = {wanted}
    else:
        wanted, allowed = "digitalSignature", {"digitalSignature", "nonRepudiation"}
    extra = sorted(bit for bit, on in granted.items() if on and bit not in allowed)
    if not granted[wanted] or extra:
        role = "an encryption" if usage is KeyUsage.ENCRYPT else "a signing"
        raise ServerKeyInvalid(
            f"{role} certificate needs keyUsage {wanted}"
            + (f" and nothing else (it also has {', '.join(extra)})" if extra else "")
        )


def smime_server_key(
    certificate: x509.Certificate, usage: KeyUsage, now: datetime, origin: str = "generated"
) -> ServerKey:
    """The index entry of a checked S/MIME certificate."""
    key = certificate.public_key()
    algorithm = (
        f"rsa{key.key_size}" if isinstance(key, rsa.RSAPublicKey) else f"ec-{_curve(certificate)}"
    )
    return ServerKey(
        format=KeyFormat.SMIME,
        usages=frozenset({usage}),
        fingerprint=hashlib.sha256(
            certificate.public_bytes(serialization.Encoding.DER)
        ).hexdigest(),
        public=certificate.public_bytes(serialization.Encoding.PEM),
        created=now,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        algorithm=algorithm,
        origin=origin,
    )


def _curve(certificate: x509.Certificate) -> str:
    key = certificate.public_key()
    return key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else "?"


def private_pem(key: PrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM (the file is 0600; see server_keys_files)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_smime_pair(cert_pem: bytes, key_pem: bytes) -> tuple[x509.Certificate, PrivateKey]:
    """The first certificate of ``cert_pem`` and the key of ``key_pem`` (PEM or DER)."""
    try:
        if b"-----BEGIN" in cert_pem:
            certificate = x509.load_pem_x509_certificates(cert_pem)[0]
        else:
            certificate = x509.load_der_x509_certificate(cert_pem)
        if b"-----BEGIN" in key_pem:
            key = serialization.load_pem_private_key(key_pem, None)
        else:
            key = serialization.load_der_private_key(key_pem, None)
    except (ValueError, TypeError, IndexError) as e:
        raise ServerKeyInvalid(f"unreadable certificate or key: {e}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ServerKeyInvalid("server S/MIME keys must be RSA or EC")
    return certificate, key


def utc_now() -> datetime:
    """The system time, as the index records it (tests pass their own)."""
    return datetime.now(UTC)
