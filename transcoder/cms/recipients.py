"""Recipients of an enveloped message and their RecipientInfo (RFC 5652 section 6.2).

* RSA keys get a KeyTransRecipientInfo (RFC 5652 section 6.2.1): the CEK
  encrypted with RSAES-PKCS1-v1_5 or RSAES-OAEP (SHA-256, MGF1-SHA-256;
  RFC 8017 section 7.1, parameters as RFC 4055 section 4.1 encodes them),
  the encodings built by :mod:`transcoder.cms.rsa`.
* EC keys (P-256, P-384, P-521) get a KeyAgreeRecipientInfo (RFC 5652
  section 6.2.2) with ephemeral-static ECDH (RFC 5753 section 3.1, see
  :mod:`transcoder.cms.ecdh`).

Every RecipientInfo is built by one function from its variable parts (the
encrypted key, the ephemeral point).  Those parts have a length fixed by the
key and the settings, so calling the same function with placeholders of the
right length gives the exact size without doing any public-key operation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

from asn1crypto import algos, cms, keys, x509
from cryptography import x509 as cx509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from transcoder.cms import der
from transcoder.cms.ecdh import (
    KEY_WRAP_OVERHEAD,
    PROFILES,
    agree_and_wrap,
    ephemeral_key,
    key_encryption_algorithm,
)
from transcoder.cms.errors import UnsupportedRecipient
from transcoder.cms.randomness import Draw
from transcoder.cms.rsa import encrypt_key
from transcoder.cms.settings import CmsSettings

#: Smallest RSA modulus we encrypt to; the keys layer admits nothing smaller.
MIN_RSA_BITS = 2048

RecipientKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class Recipient:
    """Someone a message is encrypted to, as identified by their certificate.

    ``issuer`` (DER of the issuer Name, byte-exact from the certificate) and
    ``serial_number`` form the IssuerAndSerialNumber; with
    ``use_key_identifier`` the recipient is named by ``subject_key_identifier``
    instead (RFC 5652 sections 6.2.1 and 6.2.2).  ``public_key_info`` is the
    DER SubjectPublicKeyInfo.  Construction checks the key is one we support.
    """

    issuer: bytes
    serial_number: int
    public_key_info: bytes
    subject_key_identifier: bytes | None = None
    use_key_identifier: bool = False

    def __post_init__(self) -> None:
        if self.use_key_identifier and not self.subject_key_identifier:
            raise UnsupportedRecipient("no subject key identifier to name the recipient by")
        _ = self.public_key  # validates

    @classmethod
    def from_certificate(cls, cert_der: bytes, *, use_key_identifier: bool = False) -> Recipient:
        """The recipient that owns the DER certificate ``cert_der``.

        Raises :class:`UnsupportedRecipient` for an unparsable certificate, a
        key that is neither RSA (>= 2048 bits) nor EC on P-256/P-384/P-521, or
        ``use_key_identifier`` without a subjectKeyIdentifier extension.
        """
        try:
            # cryptography parses strictly; asn1crypto then hands out the
            # fields exactly as the certificate encodes them, so that peers
            # that compare the IssuerAndSerialNumber (RFC 5652 section 10.2.4)
            # octet for octet find their certificate.
            cx509.load_der_x509_certificate(cert_der)
            cert = x509.Certificate.load(cert_der)
            tbs = cert["tbs_certificate"]
            issuer: bytes = tbs["issuer"].dump()
            serial_number: int = tbs["serial_number"].native
            key_info: bytes = tbs["subject_public_key_info"].dump()
            key_identifier: bytes | None = cert.key_identifier
        except (ValueError, TypeError) as exc:
            raise UnsupportedRecipient(f"unusable certificate: {exc}") from exc
        return cls(issuer, serial_number, key_info, key_identifier, use_key_identifier)

    @cached_property
    def public_key(self) -> RecipientKey:
        """The recipient's public key (checked to be a supported type)."""
        try:
            key = serialization.load_der_public_key(self.public_key_info)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise UnsupportedRecipient(f"unusable public key: {exc}") from exc
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < MIN_RSA_BITS:
                raise UnsupportedRecipient(f"RSA key of {key.key_size} bits is too small")
            return key
        if isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in PROFILES:
                raise UnsupportedRecipient(f"EC curve {key.curve.name} is not supported")
            return key
        raise UnsupportedRecipient(f"{type(key).__name__} keys cannot be encrypted to")

    @property
    def version(self) -> int:
        """CMSVersion of this recipient's RecipientInfo (RFC 5652 sections 6.2.1, 6.2.2)."""
        if isinstance(self.public_key, ec.EllipticCurvePublicKey):
            return 3
        return 2 if self.use_key_identifier else 0


@dataclass(frozen=True)
class EncodedInfo:
    """One RecipientInfo in DER, with its CMSVersion (the EnvelopedData version depends on it)."""

    version: int
    der: bytes


def recipient_info(
    recipient: Recipient, index: int, cek: bytes, settings: CmsSettings, draw: Draw
) -> EncodedInfo:
    """The RecipientInfo that gives ``recipient`` the content-encryption key ``cek``.

    ``index`` is the recipient's position in the message's list: its padding
    string, OAEP seed or ephemeral key is drawn under labels of its own
    (:mod:`transcoder.cms.randomness`).
    """
    key = recipient.public_key
    if isinstance(key, rsa.RSAPublicKey):
        return _ktri(recipient, settings, encrypt_key(key, cek, settings, draw, index))
    profile = PROFILES[key.curve.name]
    point, wrapped = agree_and_wrap(key, profile, cek, ephemeral_key(key.curve, draw, index))
    return _kari(recipient, settings, point, wrapped)


def placeholder_info(recipient: Recipient, settings: CmsSettings) -> EncodedInfo:
    """A RecipientInfo of exactly the size :func:`recipient_info` produces, with zero octets.

    The RSA encrypted key is always as long as the modulus (RFC 8017 sections
    7.1.1 and 7.2.1: I2OSP to k octets); the ephemeral point is uncompressed,
    so its length is fixed by the curve; the wrapped key is the CEK plus 8.
    """
    key = recipient.public_key
    if isinstance(key, rsa.RSAPublicKey):
        return _ktri(recipient, settings, bytes((key.key_size + 7) // 8))
    point = b"\x04" + bytes(PROFILES[key.curve.name].point_size - 1)
    return _kari(recipient, settings, point, bytes(settings.key_size + KEY_WRAP_OVERHEAD))


def _rsa_algorithm(settings: CmsSettings) -> cms.KeyEncryptionAlgorithm:
    """rsaEncryption with NULL parameters, or id-RSAES-OAEP with explicit SHA-256 parameters.

    RFC 4055 section 4.1: hashFunc and maskGenFunc are given explicitly (the
    defaults are SHA-1); pSourceFunc keeps its default (empty label) and is
    omitted, as DER requires for a DEFAULT value.
    """
    if settings.rsa_padding == "oaep":
        params = algos.RSAESOAEPParams(
            {
                "hash_algorithm": {"algorithm": "sha256"},
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
            }
        )
        return cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_oaep", "parameters": params})
    return cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15"})


def _issuer_and_serial(recipient: Recipient) -> cms.IssuerAndSerialNumber:
    return cms.IssuerAndSerialNumber(
        {"issuer": x509.Name.load(recipient.issuer), "serial_number": recipient.serial_number}
    )


# The fixed parts of each RecipientInfo are built once per recipient and
# settings with asn1crypto and kept as DER; per message only the two
# innermost SEQUENCEs around the fresh values are framed (with der.py), which
# keeps a small message's cost down to its public-key operation.


@lru_cache(maxsize=256)
def _ktri_parts(recipient: Recipient, settings: CmsSettings) -> bytes:
    """DER of version, rid and keyEncryptionAlgorithm of a KeyTransRecipientInfo.

    RFC 5652 section 6.2.1: version 0 with issuerAndSerialNumber, version 2
    with the subjectKeyIdentifier [0] alternative.
    """
    if recipient.use_key_identifier:
        rid = cms.RecipientIdentifier(
            name="subject_key_identifier", value=recipient.subject_key_identifier
        )
    else:
        rid = cms.RecipientIdentifier(
            name="issuer_and_serial_number", value=_issuer_and_serial(recipient)
        )
    return cms.CMSVersion(recipient.version).dump() + rid.dump() + _rsa_algorithm(settings).dump()


def _ktri(recipient: Recipient, settings: CmsSettings, encrypted_key: bytes) -> EncodedInfo:
    """KeyTransRecipientInfo ::= SEQUENCE { version, rid, keyEncryptionAlgorithm,
    encryptedKey OCTET STRING } -- the ktri alternative of RecipientInfo is untagged."""
    body = _ktri_parts(recipient, settings) + _tlv(der.OCTET_STRING, encrypted_key)
    return EncodedInfo(recipient.version, _tlv(der.SEQUENCE, body))


@lru_cache(maxsize=256)
def _kari_parts(recipient: Recipient, settings: CmsSettings) -> tuple[bytes, bytes, bytes]:
    """DER of (version, keyEncryptionAlgorithm, rid) of a KeyAgreeRecipientInfo."""
    if recipient.use_key_identifier:
        # A dict, not cms.RecipientKeyIdentifier: asn1crypto rebinds that name
        # to a different structure (the one of SMIMEEncryptionKeyPreference).
        rid = cms.KeyAgreementRecipientIdentifier(
            name="r_key_id", value={"subject_key_identifier": recipient.subject_key_identifier}
        )
    else:
        rid = cms.KeyAgreementRecipientIdentifier(
            name="issuer_and_serial_number", value=_issuer_and_serial(recipient)
        )
    key = recipient.public_key
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UnsupportedRecipient("key agreement needs an EC key")
    algorithm = key_encryption_algorithm(PROFILES[key.curve.name], settings.key_size)
    return cms.CMSVersion(3).dump(), algorithm.dump(), rid.dump()


#: id-ecPublicKey with absent parameters: RFC 5753 section 7.1.2 says senders
#: SHOULD omit them in originatorKey (the curve is the recipient's).
_EC_PUBLIC_KEY = keys.PublicKeyAlgorithm({"algorithm": "ec"}).dump()


def _kari(
    recipient: Recipient, settings: CmsSettings, point: bytes, wrapped_key: bytes
) -> EncodedInfo:
    """KeyAgreeRecipientInfo, version 3 (RFC 5652 section 6.2.2; RFC 5753 section 3.1.1)::

    kari [1] IMPLICIT SEQUENCE {
      version 3,
      originator [0] EXPLICIT originatorKey [1] IMPLICIT SEQUENCE {
        algorithm id-ecPublicKey, publicKey BIT STRING (the ephemeral point) },
      -- ukm absent
      keyEncryptionAlgorithm dhSinglePass-stdDH-sha*kdf-scheme (aes*-wrap),
      recipientEncryptedKeys SEQUENCE OF SEQUENCE { rid, encryptedKey OCTET STRING } }
    """
    version, algorithm, rid = _kari_parts(recipient, settings)
    public_key = _tlv(der.BIT_STRING, b"\x00" + point)  # no unused bits
    originator = _tlv(
        der.CONTEXT_0_CONSTRUCTED, _tlv(der.CONTEXT_1_CONSTRUCTED, _EC_PUBLIC_KEY + public_key)
    )
    encrypted = _tlv(der.SEQUENCE, _tlv(der.SEQUENCE, rid + _tlv(der.OCTET_STRING, wrapped_key)))
    body = version + originator + algorithm + encrypted
    return EncodedInfo(3, _tlv(der.CONTEXT_1_CONSTRUCTED, body))


def _tlv(tag: int, content: bytes) -> bytes:
    return der.header(tag, len(content)) + content
