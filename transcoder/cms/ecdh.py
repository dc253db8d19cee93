"""Ephemeral-static ECDH key agreement for KeyAgreeRecipientInfo (RFC 5753, RFC 8418 style).

For each EC recipient we generate an ephemeral key on the recipient's curve,
compute the ECDH shared secret Z with the recipient's static public key
(SEC 1 "standard" Diffie-Hellman, i.e. ``dhSinglePass-stdDH-*``), derive the
key-encryption key with the ANSI X9.63 KDF over ``ECC-CMS-SharedInfo``
(RFC 5753 sections 3.1.2 and 7.2) and wrap the content-encryption key with the
AES key wrap (RFC 3394, RFC 3565).

Choices, following the recommended pairings of RFC 5753 section 8:

* KDF hash by curve: P-256 with SHA-256, P-384 with SHA-384, P-521 with
  SHA-512 (``dhSinglePass-stdDH-sha256kdf-scheme`` etc.), so the KDF is as
  strong as the curve.
* Key wrap by content cipher: ``id-aes128-wrap`` for AES-128 content,
  ``id-aes256-wrap`` for AES-256 content (each row of that table pairs a
  content cipher with the key wrap of the same AES key size).  The KEK is
  then exactly as long as the CEK it protects: a shorter KEK would cap the
  message's strength, a longer one adds nothing.  OpenSSL makes the same
  choice when it encrypts to an EC key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from asn1crypto import cms
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from transcoder.cms.asn1 import (
    DH_SINGLE_PASS_STD_SHA256KDF,
    DH_SINGLE_PASS_STD_SHA384KDF,
    DH_SINGLE_PASS_STD_SHA512KDF,
    EccCmsSharedInfo,
)
from transcoder.cms.errors import CmsError

#: Builds the ephemeral private key for one recipient on the given curve.
EphemeralFactory = Callable[[ec.EllipticCurve], ec.EllipticCurvePrivateKey]

#: AES key wrap adds one 64-bit block to the wrapped key (RFC 3394 section 2.2.1).
KEY_WRAP_OVERHEAD = 8


@dataclass(frozen=True)
class CurveProfile:
    """How we do key agreement on one curve; ``field_size`` is octets per coordinate."""

    field_size: int
    kdf_hash: type[hashes.HashAlgorithm]
    scheme_oid: str

    @property
    def point_size(self) -> int:
        """Octets of an uncompressed point (SEC 1 section 2.3.3): 0x04 || X || Y."""
        return 1 + 2 * self.field_size


#: Supported curves by cryptography's curve name.
PROFILES: dict[str, CurveProfile] = {
    "secp256r1": CurveProfile(32, hashes.SHA256, DH_SINGLE_PASS_STD_SHA256KDF),
    "secp384r1": CurveProfile(48, hashes.SHA384, DH_SINGLE_PASS_STD_SHA384KDF),
    "secp521r1": CurveProfile(66, hashes.SHA512, DH_SINGLE_PASS_STD_SHA512KDF),
}


def wrap_algorithm(key_size: int) -> cms.KeyEncryptionAlgorithm:
    """The AES key-wrap AlgorithmIdentifier for a CEK of ``key_size`` octets.

    RFC 3565 section 2.3.2: the parameters are absent.
    """
    return cms.KeyEncryptionAlgorithm({"algorithm": f"aes{key_size * 8}_wrap"})


def key_encryption_algorithm(profile: CurveProfile, key_size: int) -> cms.KeyEncryptionAlgorithm:
    """``keyEncryptionAlgorithm`` of the KeyAgreeRecipientInfo (RFC 5753 section 3.1.1).

    The algorithm is the ``dhSinglePass-stdDH-*kdf-scheme``; its parameters
    are the KeyWrapAlgorithm identifier.
    """
    return cms.KeyEncryptionAlgorithm(
        {"algorithm": profile.scheme_oid, "parameters": wrap_algorithm(key_size)}
    )


@lru_cache(maxsize=4)
def shared_info(key_size: int) -> bytes:
    """DER of ``ECC-CMS-SharedInfo`` for a KEK of ``key_size`` octets, without ukm.

    RFC 5753 section 7.2: keyInfo is the key-wrap algorithm, suppPubInfo the
    KEK length in bits as a 32-bit big-endian integer.
    """
    info = EccCmsSharedInfo(
        {
            "key_info": wrap_algorithm(key_size),
            "supp_pub_info": (key_size * 8).to_bytes(4, "big"),
        }
    )
    return bytes(info.dump())


def agree_and_wrap(
    peer: ec.EllipticCurvePublicKey,
    profile: CurveProfile,
    cek: bytes,
    ephemeral_factory: EphemeralFactory,
) -> tuple[bytes, bytes]:
    """Wrap ``cek`` for ``peer``: return (ephemeral public point, wrapped key).

    The point is uncompressed (what the originatorKey BIT STRING carries,
    RFC 5753 section 3.1.1); the wrapped key is ``len(cek) + 8`` octets.
    """
    ephemeral = ephemeral_factory(peer.curve)
    if ephemeral.curve.name != peer.curve.name:
        raise CmsError(f"ephemeral key on {ephemeral.curve.name}, recipient on {peer.curve.name}")
    z = ephemeral.exchange(ec.ECDH(), peer)
    kek = X963KDF(
        algorithm=profile.kdf_hash(), length=len(cek), sharedinfo=shared_info(len(cek))
    ).derive(z)
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point, keywrap.aes_key_wrap(kek, cek)


def default_ephemeral(curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    """A fresh ephemeral key from the system's random source."""
    return ec.generate_private_key(curve)
