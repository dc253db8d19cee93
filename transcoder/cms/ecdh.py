"""Ephemeral-static ECDH key agreement for KeyAgreeRecipientInfo (RFC 5753, RFC 8418 style).

For each EC recipient we make an ephemeral key on the recipient's curve from
a labelled draw (:func:`ephemeral_key`: FIPS 186-5 appendix A.2.1, "extra
random bits", never OpenSSL's generator, so a view can be derived again),
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
from transcoder.cms.randomness import Draw, draw_exactly, recipient_label

#: AES key wrap adds one 64-bit block to the wrapped key (RFC 3394 section 2.2.1).
KEY_WRAP_OVERHEAD = 8


@dataclass(frozen=True)
class CurveProfile:
    """How we do key agreement on one curve; ``field_size`` is octets per coordinate,
    ``order`` the order n of the base point (FIPS 186-5 / SP 800-186 section 3.2.1)."""

    field_size: int
    kdf_hash: type[hashes.HashAlgorithm]
    scheme_oid: str
    order: int

    @property
    def point_size(self) -> int:
        """Octets of an uncompressed point (SEC 1 section 2.3.3): 0x04 || X || Y."""
        return 1 + 2 * self.field_size


#: Supported curves by cryptography's curve name.
PROFILES: dict[str, CurveProfile] = {
    "secp256r1": CurveProfile(
        32,
        hashes.SHA256,
        DH_SINGLE_PASS_STD_SHA256KDF,
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ),
    "secp384r1": CurveProfile(
        48,
        hashes.SHA384,
        DH_SINGLE_PASS_STD_SHA384KDF,
        int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
            "C7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
            16,
        ),
    ),
    "secp521r1": CurveProfile(
        66,
        hashes.SHA512,
        DH_SINGLE_PASS_STD_SHA512KDF,
        int(
            "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
            "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
            16,
        ),
    ),
}
#: Octets drawn beyond the order's length: 64 extra bits make the reduction's bias negligible.
EXTRA_OCTETS = 8


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


def scalar_from_octets(octets: bytes, order: int) -> int:
    """A private scalar in [1, n-1] from drawn octets: ``(c mod (n - 1)) + 1``.

    FIPS 186-5 appendix A.2.1 (key pair generation using extra random bits;
    SP 800-56A rev. 3 section 5.6.1.2.1): with 64 bits more than n has, the
    result is as good as uniform.
    """
    if len(octets) < (order.bit_length() + 7) // 8 + EXTRA_OCTETS:
        raise CmsError("too few octets for an ephemeral scalar")
    return int.from_bytes(octets, "big") % (order - 1) + 1


def ephemeral_key(curve: ec.EllipticCurve, draw: Draw, index: int) -> ec.EllipticCurvePrivateKey:
    """Recipient ``index``'s ephemeral key on ``curve``, from the draw ``ecdh-scalar``."""
    profile = PROFILES[curve.name]
    size = (profile.order.bit_length() + 7) // 8 + EXTRA_OCTETS
    octets = draw_exactly(draw, recipient_label(index, "ecdh-scalar"), size)
    return ec.derive_private_key(scalar_from_octets(octets, profile.order), curve)


def agree_and_wrap(
    peer: ec.EllipticCurvePublicKey,
    profile: CurveProfile,
    cek: bytes,
    ephemeral: ec.EllipticCurvePrivateKey,
) -> tuple[bytes, bytes]:
    """Wrap ``cek`` for ``peer`` with the ``ephemeral`` key: (its public point, wrapped key).

    The point is uncompressed (what the originatorKey BIT STRING carries,
    RFC 5753 section 3.1.1); the wrapped key is ``len(cek) + 8`` octets.
    """
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
