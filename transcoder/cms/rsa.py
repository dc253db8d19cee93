"""RSA key transport with our own randomness: the RFC 8017 encodings, built here.

cryptography's ``RSAPublicKey.encrypt`` draws its padding from OpenSSL's
random generator, which would make every view different.  So the encoding
is done here from labelled draws (:mod:`transcoder.cms.randomness`) and only
the RSA operation itself remains:

* RSAES-PKCS1-v1_5 (RFC 8017 section 7.2.1): ``EM = 0x00 || 0x02 || PS ||
  0x00 || M``, PS at least 8 octets, none of them zero.  Zero octets are
  dropped from the drawn string and the shortfall drawn again under the next
  round's label, so every PS octet is uniform over 1..255.
* RSAES-OAEP (RFC 8017 section 7.1.1) with SHA-256, MGF1-SHA-256 (appendix
  B.2.1) and the empty label -- the parameters
  :func:`transcoder.cms.recipients._rsa_algorithm` announces (RFC 4055
  section 4.1): the seed is one draw of 32 octets.
* RSAEP (section 5.1.1): ``c = m^e mod n`` from the public numbers, then
  I2OSP to the modulus length (section 4.1), computed by libcrypto's
  ``BN_mod_exp`` where it loads, else Python's ``pow`` (:mod:`.modexp`).

The plaintext ``m`` holds the content-encryption key.  Python's ``pow`` is
not constant-time, nor is OpenSSL's RSA public-key operation; with e =
65537 the operation is 16 squarings and a multiplication whose operands are
always about the modulus's size, so their timing says next to nothing about
``m``.

No twisted import here.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import rsa

from transcoder.cms.errors import CmsError
from transcoder.cms.modexp import mod_exp
from transcoder.cms.randomness import Draw, draw_exactly, recipient_label
from transcoder.cms.settings import CmsSettings

#: SHA-256's output length (hLen of RFC 8017 section 7.1).
HASH_LENGTH = 32
#: lHash of RFC 8017 section 7.1.1 step 2a: SHA-256 of the empty label.
EMPTY_LABEL_HASH = hashlib.sha256(b"").digest()
#: RFC 8017 section 7.2.1: PS is at least 8 octets.
MIN_PS_LENGTH = 8
#: Draw rounds for a nonzero padding string before the source is deemed broken
#: (a sound source needs a second round about half the time, a third almost never).
MAX_PS_ROUNDS = 64


def modulus_length(key: rsa.RSAPublicKey) -> int:
    """k of RFC 8017: the modulus length in octets."""
    return (key.key_size + 7) // 8


def nonzero_octets(draw: Draw, label: str, size: int) -> bytes:
    """``size`` octets in 1..255: drawn, zeros dropped, topped up under ``label/<round>``."""
    found = bytearray()
    for round_number in range(MAX_PS_ROUNDS):
        if len(found) == size:
            break
        wanted = size - len(found)
        found += draw_exactly(draw, f"{label}/{round_number}", wanted).replace(b"\x00", b"")
    if len(found) != size:
        raise CmsError(f"random source gave no nonzero octets for {label}")
    return bytes(found)


def pkcs1v15_encode(message: bytes, k: int, draw: Draw, label: str) -> bytes:
    """EM for RSAES-PKCS1-v1_5 encryption of ``message`` (RFC 8017 section 7.2.1 steps 1-2).

    PS is drawn under ``label`` (:func:`nonzero_octets`): CMS draws it per
    recipient (:func:`pkcs1v15_label`), OpenPGP per recipient and attempt.
    """
    ps_length = k - len(message) - 3
    if ps_length < MIN_PS_LENGTH:  # step 1: mLen > k - 11
        raise CmsError("message too long for RSAES-PKCS1-v1_5")
    ps = nonzero_octets(draw, label, ps_length)
    return b"\x00\x02" + ps + b"\x00" + message


def pkcs1v15_label(index: int) -> str:
    """The label CMS draws recipient ``index``'s PKCS#1 v1.5 padding string under."""
    return recipient_label(index, "rsa-pkcs1v15-ps")


def mgf1(seed: bytes, length: int) -> bytes:
    """MGF1 with SHA-256 (RFC 8017 appendix B.2.1)."""
    blocks = (length + HASH_LENGTH - 1) // HASH_LENGTH
    output = b"".join(
        hashlib.sha256(seed + counter.to_bytes(4, "big")).digest() for counter in range(blocks)
    )
    return output[:length]


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def oaep_encode(message: bytes, k: int, seed: bytes) -> bytes:
    """EM for RSAES-OAEP-SHA256 encryption of ``message``, empty label (RFC 8017 7.1.1 step 2)."""
    if len(message) > k - 2 * HASH_LENGTH - 2:  # step 1b
        raise CmsError("message too long for RSAES-OAEP")
    if len(seed) != HASH_LENGTH:
        raise CmsError(f"OAEP seed of {len(seed)} octets")
    ps = bytes(k - len(message) - 2 * HASH_LENGTH - 2)  # step 2b
    db = EMPTY_LABEL_HASH + ps + b"\x01" + message  # step 2c
    masked_db = _xor(db, mgf1(seed, k - HASH_LENGTH - 1))  # steps 2e-2f
    masked_seed = _xor(seed, mgf1(masked_db, HASH_LENGTH))  # steps 2g-2h
    return b"\x00" + masked_seed + masked_db  # step 2i


def rsaep(key: rsa.RSAPublicKey, encoded: bytes) -> bytes:
    """RSAEP (RFC 8017 section 5.1.1) of the k-octet ``encoded``, as k octets (I2OSP)."""
    numbers = key.public_numbers()
    k = modulus_length(key)
    m = int.from_bytes(encoded, "big")  # OS2IP
    if len(encoded) != k or m >= numbers.n:
        raise CmsError("message representative out of range")
    return mod_exp(m, numbers.e, numbers.n, k)


def encrypt_key(
    key: rsa.RSAPublicKey, cek: bytes, settings: CmsSettings, draw: Draw, index: int
) -> bytes:
    """The encryptedKey of a KeyTransRecipientInfo: ``cek`` under ``key`` with the settings'
    padding, every random octet drawn for recipient ``index``."""
    k = modulus_length(key)
    if settings.rsa_padding == "oaep":
        seed = draw_exactly(draw, recipient_label(index, "rsa-oaep-seed"), HASH_LENGTH)
        return rsaep(key, oaep_encode(cek, k, seed))
    return rsaep(key, pkcs1v15_encode(cek, k, draw, pkcs1v15_label(index)))
