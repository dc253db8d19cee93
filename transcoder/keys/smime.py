"""Validation of a user's X.509 certificate for S/MIME encryption (RFC 8550, RFC 8551).

Accepted input (at most :data:`~transcoder.keys.errors.MAX_KEY_BYTES`):

* one DER certificate;
* PEM: one or more ``CERTIFICATE`` blocks, the first being the end entity and
  the rest its chain (text around the blocks is ignored);
* a PKCS#7 / CMS certs-only bundle, DER or PEM (``PKCS7`` block), whose one
  end-entity certificate is the one no other certificate in it was issued by.

PEM holding any ``PRIVATE KEY`` block is refused outright: the server must
never receive, let alone store, a user's private key.

The certificate must be valid at ``now`` (RFC 5280 section 4.1.2.5), carry an
RSA key of at least 2048 bits or an EC key on P-256, P-384 or P-521, allow
email protection (RFC 8550 section 4.4.4) and name the account's address
(RFC 8550 section 3).  Its keyUsage decides what it is stored for (RFC 8550
section 4.4.2): keyEncipherment (RSA) or keyAgreement (EC) makes it an
encryption key; a certificate that only allows digitalSignature or
nonRepudiation -- the signing half of a dual key pair -- is stored with usage
``SIGN`` and never encrypted to.

Without trust anchors any certificate passing these checks is accepted,
self-signed ones included: the user vouches for their own key over an
authenticated session, and the server encrypts *to* it, so a chain adds
assurance only where an operator wants to restrict users to a corporate CA.
With anchors, :func:`transcoder.keys.smime_chain.verify_chain` must succeed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, PublicKeyAlgorithmOID

from transcoder.keys.addresses import address_matches, unique
from transcoder.keys.errors import (
    MAX_KEY_BYTES,
    KeyAddressMismatch,
    KeyInvalid,
    check_key_size,
    printable,
)
from transcoder.keys.model import (
    KeyFormat,
    KeyUsage,
    SmimeDetails,
    ValidatedKey,
    format_date,
    require_aware,
)
from transcoder.keys.smime_chain import verify_chain

MIN_RSA_BITS = 2048

#: Curves accepted for ECDH key agreement (RFC 5753), by cryptography's name.
EC_CURVES = {"secp256r1": "EC-P256", "secp384r1": "EC-P384", "secp521r1": "EC-P521"}

_E = TypeVar("_E", bound=x509.ExtensionType)

#: Names for the refusal message of key types that are parsed but not accepted.
_KEY_NAMES = {
    PublicKeyAlgorithmOID.DSA: "DSA",
    PublicKeyAlgorithmOID.ED25519: "Ed25519",
    PublicKeyAlgorithmOID.ED448: "Ed448",
    PublicKeyAlgorithmOID.X25519: "X25519",
    PublicKeyAlgorithmOID.X448: "X448",
}

_WANTED = "RSA of at least 2048 bits or EC P-256/P-384/P-521 required"

# What cryptography raises on malformed certificates and extensions.
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def validate_certificate(
    data: bytes,
    account: str,
    now: datetime,
    trust_anchors: Sequence[x509.Certificate] = (),
    *,
    max_bytes: int = MAX_KEY_BYTES,
) -> ValidatedKey:
    """Validate ``data`` as the S/MIME certificate of ``account`` at ``now``.

    Raises :class:`KeyTooBig`, :class:`KeyInvalid` or :class:`KeyAddressMismatch`
    (all :class:`~transcoder.errors.ClientError`) with a message for the client.
    """
    check_key_size(data, max_bytes)
    now = require_aware(now)
    try:
        leaf, chain = load_certificates(data)
        return _validate(leaf, chain, account, now, trust_anchors)
    except _PARSE_ERRORS:
        raise KeyInvalid("malformed certificate") from None


def _validate(
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    account: str,
    now: datetime,
    trust_anchors: Sequence[x509.Certificate],
) -> ValidatedKey:
    check_validity(leaf, now)
    if leaf.serial_number <= 0:
        raise KeyInvalid("certificate serial number is not positive (RFC 5280 4.1.2.2)")
    algorithm, is_rsa = check_public_key(leaf)
    usages = certificate_usages(leaf, is_rsa)
    check_extended_key_usage(leaf)
    addresses = certificate_addresses(leaf)
    if not any(address_matches(address, account) for address in addresses):
        named = ", ".join(addresses[:3]) + (", ..." if len(addresses) > 3 else "")
        raise KeyAddressMismatch(printable(f"certificate is for {named}, not {account}", 160))
    if trust_anchors:
        verify_chain(leaf, chain, trust_anchors, now)
    ski = _extension(leaf, x509.SubjectKeyIdentifier)
    return ValidatedKey(
        format=KeyFormat.SMIME,
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
        addresses=addresses,
        not_after=leaf.not_valid_after_utc,
        usages=usages,
        material=leaf.public_bytes(serialization.Encoding.DER),
        key_algorithm=algorithm,
        details=SmimeDetails(
            issuer=leaf.issuer.public_bytes(),
            serial_number=leaf.serial_number,
            subject_key_identifier=ski.digest if ski is not None else None,
            chain=tuple(c.public_bytes(serialization.Encoding.DER) for c in chain),
        ),
    )


def load_certificates(data: bytes) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """The end-entity certificate in ``data`` and the certificates that came with it."""
    if b"-----BEGIN" in data:
        if b"PRIVATE KEY-----" in data:
            raise KeyInvalid("secret key material: send the certificate only")
        if b"-----BEGIN PKCS7-----" in data:
            return end_entity(pkcs7.load_pem_pkcs7_certificates(data))
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise KeyInvalid("no CERTIFICATE or PKCS7 block in the PEM data")
        first, *rest = x509.load_pem_x509_certificates(data)
        return first, tuple(rest)
    try:
        return x509.load_der_x509_certificate(data), ()
    except ValueError:
        pass
    try:
        return end_entity(pkcs7.load_der_pkcs7_certificates(data))
    except ValueError:
        pass
    if _is_pkcs12(data):
        raise KeyInvalid("PKCS#12 holds secret key material: send the certificate only")
    raise KeyInvalid("not an X.509 certificate or PKCS#7 certificate bundle")


def _is_pkcs12(data: bytes) -> bool:
    """Whether ``data`` is a PKCS#12 (PFX, RFC 7292) file -- a common wrong upload."""
    try:
        pfx = asn1_pkcs12.Pfx.load(data, strict=True)
        return bool(pfx["version"].native == "v3" and pfx["auth_safe"]["content_type"].native)
    except (ValueError, TypeError, KeyError):
        return False


def end_entity(
    certs: Sequence[x509.Certificate],
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """Split a PKCS#7 bundle (an unordered SET) into its one end entity and the rest.

    The end entity is the certificate no other one in the bundle was issued
    by; a self-issued certificate does not count as issuing itself.
    """
    leaves = [
        cert
        for cert in certs
        if not any(other is not cert and other.issuer == cert.subject for other in certs)
    ]
    if len(leaves) != 1:
        raise KeyInvalid(
            f"PKCS#7 bundle holds {len(leaves)} end-entity certificates; exactly one is needed"
        )
    leaf = leaves[0]
    return leaf, tuple(cert for cert in certs if cert is not leaf)


def check_validity(cert: x509.Certificate, now: datetime) -> None:
    """KeyInvalid unless ``now`` lies within the certificate's validity period (inclusive)."""
    if now < cert.not_valid_before_utc:
        raise KeyInvalid(f"certificate not valid before {format_date(cert.not_valid_before_utc)}")
    if now > cert.not_valid_after_utc:
        raise KeyInvalid(f"certificate expired on {format_date(cert.not_valid_after_utc)}")


def check_public_key(cert: x509.Certificate) -> tuple[str, bool]:
    """``(algorithm name, is RSA)`` of an acceptable subject key; KeyInvalid otherwise."""
    oid = cert.public_key_algorithm_oid
    try:
        key = cert.public_key()
    except UnsupportedAlgorithm:
        raise KeyInvalid(f"key algorithm {oid.dotted_string} not accepted; {_WANTED}") from None
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            raise KeyInvalid(f"RSA key of {bits} bits; at least {MIN_RSA_BITS} required")
        exponent = key.public_numbers().e
        if exponent < 3 or exponent % 2 == 0:
            raise KeyInvalid(f"RSA public exponent {exponent} not acceptable")
        return f"RSA-{bits}", True
    if isinstance(key, ec.EllipticCurvePublicKey):
        name = EC_CURVES.get(key.curve.name)
        if name is None:
            raise KeyInvalid(printable(f"elliptic curve {key.curve.name} not accepted; {_WANTED}"))
        return name, False
    kind = _KEY_NAMES.get(oid, oid.dotted_string)
    raise KeyInvalid(printable(f"{kind} key not accepted; {_WANTED}", 120))


def certificate_usages(cert: x509.Certificate, is_rsa: bool) -> frozenset[KeyUsage]:
    """What the certificate may be used for, from keyUsage (RFC 8550 section 4.4.2).

    Without keyUsage the key is unrestricted.  An ``id-RSASSA-PSS`` key is
    for signatures only (RFC 4055 section 1.2).
    """
    usage = _extension(cert, x509.KeyUsage)
    if usage is None:
        encrypt, sign = True, True
    else:
        encrypt = usage.key_encipherment if is_rsa else usage.key_agreement
        sign = usage.digital_signature or usage.content_commitment
    if cert.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS:
        encrypt = False
    if not encrypt and not sign:
        needed = "keyEncipherment" if is_rsa else "keyAgreement"
        raise KeyInvalid(f"keyUsage allows neither {needed} nor digitalSignature")
    usages = set()
    if encrypt:
        usages.add(KeyUsage.ENCRYPT)
    if sign:
        usages.add(KeyUsage.SIGN)
    return frozenset(usages)


def check_extended_key_usage(cert: x509.Certificate) -> None:
    """RFC 8550 section 4.4.4: if present, extendedKeyUsage must allow email protection."""
    usage = _extension(cert, x509.ExtendedKeyUsage)
    if usage is None:
        return
    allowed = {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    if not allowed.intersection(usage):
        raise KeyInvalid("extendedKeyUsage does not include emailProtection")


def certificate_addresses(cert: x509.Certificate) -> tuple[str, ...]:
    """The certificate's email addresses (RFC 8550 section 3).

    The rfc822Name entries of subjectAltName; when there are none, the
    legacy ``emailAddress`` attributes of the subject.
    """
    names: list[str] = []
    san = _extension(cert, x509.SubjectAlternativeName)
    if san is not None:
        names = san.get_values_for_type(x509.RFC822Name)
    if not names:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
    if not names:
        raise KeyAddressMismatch("certificate names no email address")
    return unique(names)


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    """The value of the certificate's extension of type ``kind``, or ``None``."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
