"""Recipients of the native encoder: the key material of one encryption subkey, and its PKESK.

**Which subkey.**  A stored key's
:attr:`~transcoder.keys.model.OpenPgpDetails.encryption_subkeys` are the
keys (primary or sub) that gpg judged valid for encryption when the key was
provisioned (:mod:`transcoder.keys.openpgp`: valid, unrevoked, unexpired,
bound, strong), newest first.  We encrypt to the first, the newest: that
is what gpg itself does when asked to encrypt to a key (gpg 2.2,
``finish_lookup`` in ``g10/getkey.c`` picks the valid encryption-capable
subkey with the latest creation time), and what the gpg path has always
done with ``-r <fpr>!``.  The other subkeys are older ones the user keeps
for decryption of old mail.

**Where the material comes from.**  The stored ``material`` is gpg's
minimal export of the key, which the keystore already screened and gpg
already validated; :func:`recipient_for_key` finds the packet of the chosen
subkey by its fingerprint (:func:`transcoder.keys.openpgp_packets.key_fingerprint`)
and reads its public key fields (RFC 9580 section 5.5.2).  Nothing here runs
gpg; results are cached by (material, subkey), so each key is read once per
process however many messages are encrypted to it.

**What is supported natively** (anything else raises
:class:`~transcoder.openpgp.errors.UnsupportedRecipient` and the transcoder
uses gpg): version 4 key packets with

* RSA (algorithm 1, or 2 "encrypt only") of at least 2048 bits: the PKESK
  holds ``m**e mod n`` where ``m`` is the PKCS#1 v1.5 encoding (RFC 8017
  section 7.2.1) of ``algorithm || session key || checksum`` (RFC 9580
  section 5.1.3);
* ECDH (algorithm 18, RFC 6637 / RFC 9580 section 5.1.4) on legacy
  Curve25519 (``cv25519``) and NIST P-256, P-384, P-521, with the key's own
  KDF hash and key-wrap algorithm (the KDF parameters of its packet).

Every random octet comes from the ``draw`` function: PKCS#1 padding (the
nonzero octets of :func:`transcoder.cms.rsa.pkcs1v15_encode`) and ephemeral
ECDH scalars (for NIST curves :func:`transcoder.cms.ecdh.scalar_from_octets`,
FIPS 186-5 appendix A.2.1).  Sizes never depend on randomness: an RSA
ciphertext whose first octet is zero (its MPI would be one octet shorter,
once in 256) is made again with the next padding draw, so a PKESK's size is
a function of the key alone (:attr:`Recipient.pkesk_body_size`); a modulus
whose first octet is 1, under which most ciphertexts start with a zero
octet, is left to gpg.

No twisted import here.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

from transcoder.cms.ecdh import PROFILES, scalar_from_octets
from transcoder.cms.errors import CmsError
from transcoder.cms.randomness import Draw
from transcoder.cms.rsa import modulus_length, pkcs1v15_encode, rsaep
from transcoder.keys.errors import KeyInvalid
from transcoder.keys.model import OpenPgpDetails, StoredKey
from transcoder.keys.openpgp_packets import (
    PUBLIC_KEY_TAG,
    PUBLIC_SUBKEY_TAG,
    key_fingerprint,
    read_packets,
)
from transcoder.openpgp.errors import OpenPgpError, UnsupportedRecipient
from transcoder.openpgp.packets import mpi, read_mpi

#: RFC 9580 section 9.1: public-key algorithms.
RSA_ALGORITHMS = frozenset({1, 2})
ECDH_ALGORITHM = 18
#: RFC 9580 section 9.3: AES-256, the one session cipher we use.
AES256 = 9
SESSION_KEY_SIZE = 32
#: Octets of ``algorithm || session key || checksum`` (RFC 9580 section 5.1.3).
SESSION_MATERIAL_SIZE = 1 + SESSION_KEY_SIZE + 2
MIN_RSA_BITS = 2048
#: Attempts at an RSA ciphertext without a leading zero octet.  Each fails with probability
#: 2**(8(k-1)) / n: at most 1/2, as moduli whose first octet is 1 are refused, and about 1/256
#: for the usual sizes (2048, 3072, 4096 bits with the top bit set).
MAX_RSA_ATTEMPTS = 64

#: RFC 6637 section 11 / RFC 9580 section 9.2: curve OIDs (DER contents) by name.
CV25519_OID = bytes.fromhex("2b060104019755010501")
NIST_CURVES: dict[bytes, ec.EllipticCurve] = {
    bytes.fromhex("2a8648ce3d030107"): ec.SECP256R1(),
    bytes.fromhex("2b81040022"): ec.SECP384R1(),
    bytes.fromhex("2b81040023"): ec.SECP521R1(),
}
#: RFC 9580 section 9.5: KDF hashes allowed by RFC 6637 section 9 (SHA2-256, -384, -512).
KDF_HASHES = {8: "sha256", 9: "sha384", 10: "sha512"}
#: RFC 9580 section 9.3: AES key-wrap algorithms and their KEK sizes.
KEK_SIZES = {7: 16, 8: 24, 9: 32}
#: RFC 6637 section 8: the 20 octets of "Anonymous Sender    ".
ANONYMOUS_SENDER = b"Anonymous Sender    "
#: AES key wrap adds one 64-bit block (RFC 3394 section 2.2.1).
KEY_WRAP_OVERHEAD = 8


def session_material(session_key: bytes) -> bytes:
    """``algorithm || key || checksum`` (RFC 9580 section 5.1.3: sum of key octets mod 65536)."""
    checksum = sum(session_key) & 0xFFFF
    return bytes([AES256]) + session_key + checksum.to_bytes(2, "big")


def pkcs5_pad(data: bytes) -> bytes:
    """RFC 6637 section 8: PKCS #5 padding to a multiple of 8 octets (always at least one)."""
    count = 8 - len(data) % 8
    return data + bytes([count]) * count


#: Octets of the wrapped session material of an ECDH PKESK.
WRAPPED_SIZE = len(pkcs5_pad(bytes(SESSION_MATERIAL_SIZE))) + KEY_WRAP_OVERHEAD


@dataclass(frozen=True)
class Recipient:
    """One encryption (sub)key of version 4, ready to receive session keys.

    ``fingerprint`` is the 20-octet v4 fingerprint; ``key_id`` its last 8
    octets (RFC 9580 section 5.5.4).  Exactly one of ``rsa_key``,
    ``curve_oid`` (ECDH) is set; for ECDH ``point`` is the public point
    as in the key packet (``0x40 || u`` for cv25519, ``0x04 || X || Y``
    otherwise), ``kdf_hash``/``kek_algorithm`` its KDF parameters.
    """

    fingerprint: bytes
    algorithm: int
    rsa_key: rsa.RSAPublicKey | None = field(default=None, compare=False)
    curve_oid: bytes = b""
    point: bytes = b""
    kdf_hash: int = 0
    kek_algorithm: int = 0

    @property
    def key_id(self) -> bytes:
        """The 8-octet key ID (low 64 bits of the v4 fingerprint)."""
        return self.fingerprint[-8:]

    @property
    def description(self) -> str:
        """What the key is, for logs: ``RSA-3072``, ``ECDH-cv25519``, ``ECDH-secp384r1``."""
        if self.rsa_key is not None:
            return f"RSA-{self.rsa_key.key_size}"
        if self.curve_oid == CV25519_OID:
            return "ECDH-cv25519"
        return f"ECDH-{NIST_CURVES[self.curve_oid].name}"

    @property
    def pkesk_body_size(self) -> int:
        """Octets of this recipient's PKESK body: a function of the key alone."""
        fixed = 1 + 8 + 1  # version, key ID, algorithm (RFC 9580 section 5.1.1)
        if self.rsa_key is not None:
            return fixed + 2 + modulus_length(self.rsa_key)
        return fixed + 2 + len(self.point) + 1 + WRAPPED_SIZE

    def pkesk_body(self, session_key: bytes, draw: Draw, prefix: str) -> bytes:
        """The body of a version 3 PKESK (RFC 9580 section 5.1) carrying ``session_key``.

        Every random octet is drawn under labels starting with ``prefix``.
        """
        head = bytes([3]) + self.key_id + bytes([self.algorithm])
        try:
            if self.rsa_key is not None:
                fields = self._rsa(session_key, draw, prefix)
            elif self.curve_oid == CV25519_OID:
                fields = self._cv25519(session_key, draw, prefix)
            else:
                fields = self._nist(session_key, draw, prefix)
        except ValueError as error:  # e.g. a low-order X25519 point: an all-zero secret
            raise OpenPgpError(f"key agreement with {self.description} failed: {error}") from error
        body = head + fields
        if len(body) != self.pkesk_body_size:
            raise OpenPgpError("PKESK of an unexpected size")
        return body

    def _rsa(self, session_key: bytes, draw: Draw, prefix: str) -> bytes:
        """RFC 9580 section 5.1.3: MPI of ``m**e mod n``; a leading zero octet is drawn again."""
        assert self.rsa_key is not None
        k = modulus_length(self.rsa_key)
        message = session_material(session_key)
        for attempt in range(MAX_RSA_ATTEMPTS):
            try:
                encoded = pkcs1v15_encode(message, k, draw, f"{prefix}/rsa-ps/{attempt}")
            except CmsError as error:
                raise OpenPgpError(str(error)) from error
            ciphertext = rsaep(self.rsa_key, encoded)
            if ciphertext[0]:
                return mpi(ciphertext)
        raise OpenPgpError("random source gave no usable RSA padding")

    def _wrap(self, shared: bytes, ephemeral_point: bytes, session_key: bytes) -> bytes:
        """RFC 6637 sections 7-8: KDF, AES key wrap; the PKESK's algorithm-specific fields."""
        kek = ecdh_kek(shared, self)
        wrapped = keywrap.aes_key_wrap(kek, pkcs5_pad(session_material(session_key)))
        return mpi(ephemeral_point) + bytes([len(wrapped)]) + wrapped

    def _cv25519(self, session_key: bytes, draw: Draw, prefix: str) -> bytes:
        """Ephemeral X25519 from a 32-octet draw (clamped by X25519 itself, RFC 7748)."""
        ephemeral = x25519.X25519PrivateKey.from_private_bytes(
            exact(draw, f"{prefix}/x25519-scalar", 32)
        )
        peer = x25519.X25519PublicKey.from_public_bytes(self.point[1:])
        shared = ephemeral.exchange(peer)
        public = ephemeral.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return self._wrap(shared, b"\x40" + public, session_key)

    def _nist(self, session_key: bytes, draw: Draw, prefix: str) -> bytes:
        """Ephemeral key on the recipient's NIST curve, uncompressed point (RFC 6637 section 6)."""
        curve = NIST_CURVES[self.curve_oid]
        order = PROFILES[curve.name].order
        octets = exact(draw, f"{prefix}/ecdh-scalar", (order.bit_length() + 7) // 8 + 8)
        ephemeral = ec.derive_private_key(scalar_from_octets(octets, order), curve)
        peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, self.point)
        shared = ephemeral.exchange(ec.ECDH(), peer)  # the x-coordinate (RFC 6637 section 8)
        public = ephemeral.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return self._wrap(shared, public, session_key)


def exact(draw: Draw, label: str, size: int) -> bytes:
    """``draw(label, size)``, checked to be ``size`` octets (OpenPgpError otherwise)."""
    value = draw(label, size)
    if not isinstance(value, bytes) or len(value) != size:
        raise OpenPgpError(f"random source gave a wrong draw for {label}")
    return value


def kdf_param(recipient: Recipient) -> bytes:
    """RFC 6637 section 8: ``Param`` of the KDF for ``recipient``."""
    return (
        bytes([len(recipient.curve_oid)])
        + recipient.curve_oid
        + bytes([ECDH_ALGORITHM, 3, 1, recipient.kdf_hash, recipient.kek_algorithm])
        + ANONYMOUS_SENDER
        + recipient.fingerprint
    )


def ecdh_kek(shared: bytes, recipient: Recipient) -> bytes:
    """RFC 6637 section 7: ``Hash(00 00 00 01 || Z || Param)``, its leftmost KEK-size octets."""
    digest = hashlib.new(KDF_HASHES[recipient.kdf_hash])
    digest.update(b"\x00\x00\x00\x01" + shared + kdf_param(recipient))
    return digest.digest()[: KEK_SIZES[recipient.kek_algorithm]]


def parse_public_key(body: bytes) -> Recipient:
    """The :class:`Recipient` of a public (sub)key packet body (RFC 9580 section 5.5.2).

    UnsupportedRecipient for keys the encoder does not implement;
    OpenPgpError for malformed ones.
    """
    if not body or body[0] != 4:
        raise UnsupportedRecipient(f"key packet version {body[0] if body else None}")
    if len(body) < 6:
        raise OpenPgpError("truncated key packet")
    try:
        fingerprint = bytes.fromhex(key_fingerprint(body))
    except KeyInvalid as error:  # a v4 packet longer than 65535 octets
        raise OpenPgpError(str(error)) from error
    algorithm = body[5]
    if algorithm in RSA_ALGORITHMS:
        n, at = read_mpi(body, 6)
        e, _ = read_mpi(body, at)
        try:
            key = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big"))
            public = key.public_key()
        except ValueError as error:
            raise OpenPgpError(f"malformed RSA key: {error}") from error
        if public.key_size < MIN_RSA_BITS:
            raise UnsupportedRecipient(f"RSA of {public.key_size} bits")
        if public.key_size % 8 == 1:
            # n's first octet is 1: a ciphertext would too often start with a zero octet
            # (see Recipient._rsa); such keys are left to gpg.
            raise UnsupportedRecipient(f"RSA of {public.key_size} bits (modulus octet 0x01)")
        return Recipient(fingerprint, algorithm, rsa_key=public)
    if algorithm != ECDH_ALGORITHM:
        raise UnsupportedRecipient(f"public-key algorithm {algorithm}")
    return _parse_ecdh(body, fingerprint)


def _parse_ecdh(body: bytes, fingerprint: bytes) -> Recipient:
    """RFC 9580 section 5.5.5.6: curve OID, point MPI, KDF parameters."""
    if len(body) < 7 or len(body) < 7 + body[6]:
        raise OpenPgpError("truncated ECDH key")
    oid = body[7 : 7 + body[6]]
    point, at = read_mpi(body, 7 + body[6])
    kdf = body[at:]
    if len(kdf) < 4 or kdf[0] != 3 or kdf[1] != 1:
        raise OpenPgpError("malformed ECDH KDF parameters")
    kdf_hash, kek_algorithm = kdf[2], kdf[3]
    if kdf_hash not in KDF_HASHES or kek_algorithm not in KEK_SIZES:
        raise UnsupportedRecipient(f"ECDH KDF hash {kdf_hash}, key wrap {kek_algorithm}")
    try:
        if oid == CV25519_OID:
            if len(point) != 33 or point[0] != 0x40:
                raise OpenPgpError("malformed cv25519 point")
            x25519.X25519PublicKey.from_public_bytes(point[1:])
        elif oid in NIST_CURVES:
            ec.EllipticCurvePublicKey.from_encoded_point(NIST_CURVES[oid], point)
            if point[0] != 4:
                raise UnsupportedRecipient("compressed EC point")
        else:
            raise UnsupportedRecipient(f"ECDH curve OID {oid.hex()}")
    except ValueError as error:
        raise OpenPgpError(f"malformed EC point: {error}") from error
    return Recipient(fingerprint, ECDH_ALGORITHM, None, oid, point, kdf_hash, kek_algorithm)


def chosen_subkey(key: StoredKey) -> str:
    """The fingerprint (lowercase hex) of the subkey to encrypt to: the newest valid one."""
    if not isinstance(key.details, OpenPgpDetails) or not key.details.encryption_subkeys:
        raise OpenPgpError(f"key {key.fingerprint} has no validated encryption subkey")
    return key.details.encryption_subkeys[0]


@functools.lru_cache(maxsize=1024)
def recipient_from_material(material: bytes, subkey: str) -> Recipient:
    """The :class:`Recipient` of the (sub)key ``subkey`` in the key packets ``material``.

    Cached: a mailbox's messages are all encrypted to the same few keys.
    """
    try:
        packets = read_packets(material)
    except KeyInvalid as error:
        raise OpenPgpError(f"malformed key material: {error}") from error
    for packet in packets:
        if packet.tag in (PUBLIC_KEY_TAG, PUBLIC_SUBKEY_TAG):
            try:
                fingerprint = key_fingerprint(packet.body)
            except KeyInvalid:
                continue  # a v3 or unknown packet: not the one we look for
            if fingerprint.lower() == subkey.lower():
                return parse_public_key(packet.body)
    raise OpenPgpError(f"subkey {subkey} not in the key material")


def recipient_for_key(key: StoredKey) -> Recipient:
    """The :class:`Recipient` of ``key``: its newest validated encryption subkey (cached)."""
    return recipient_from_material(key.material, chosen_subkey(key))


__all__ = [
    "AES256",
    "Recipient",
    "UnsupportedRecipient",
    "chosen_subkey",
    "ecdh_kek",
    "kdf_param",
    "parse_public_key",
    "recipient_for_key",
    "recipient_from_material",
    "session_material",
]
