"""RSA key transport built from derived draws (issue 9): RFC 8017 layouts, opened by real peers.

The encrypted key is taken apart with the recipient's private key: raw
(``pow(c, d, n)``) for the PKCS#1 v1.5 layout of RFC 8017 section 7.2.1,
cryptography's OAEP decryption for section 7.1.  Whole messages with derived
draws go to ``openssl cms -decrypt`` (every recipient kind and cipher) and
``gpgsm --decrypt`` (RSA with CBC).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.cms.draws import LabelledDraws
from tests.cms.parties import Party
from tests.cms.peers import GpgsmHome, body_to_der, encrypt, openssl_decrypt
from transcoder.cms import CIPHERS, CmsError, CmsSettings
from transcoder.cms.rsa import nonzero_octets, oaep_encode, pkcs1v15_encode
from transcoder.transcoders.derivation import DerivedRandom, ViewIdentity

PLAINTEXT = b"Content-Type: text/plain\r\n\r\n" + b"derived, not drawn from OpenSSL\r\n" * 30
SECRET = bytes.fromhex("c3" * 32)
RECIPIENT_KINDS = [
    ("rsa2048", "pkcs1v15"),
    ("rsa2048", "oaep"),
    ("rsa3072", "pkcs1v15"),
    ("rsa3072", "oaep"),
    ("p256", "pkcs1v15"),
    ("p384", "pkcs1v15"),
    ("p521", "pkcs1v15"),
]


def derived(name: str = "m") -> DerivedRandom:
    """Derived draws for a test identity (the message digest varied by ``name``)."""
    identity = ViewIdentity(hashlib.sha256(name.encode()).digest(), ("f" * 64,), "smime", "t")
    return DerivedRandom(SECRET, identity)


def encrypted_key(body: bytes) -> bytes:
    """The encryptedKey of the only (ktri) RecipientInfo of a base64 body."""
    info = cms.ContentInfo.load(body_to_der(body))
    (recipient,) = info["content"]["recipient_infos"]
    assert recipient.name == "ktri"
    return bytes(recipient.chosen["encrypted_key"].native)


def raw_decrypt(key: rsa.RSAPrivateKey, ciphertext: bytes) -> bytes:
    """RSADP without any unpadding (RFC 8017 section 5.1.2): EM as k octets."""
    numbers = key.private_numbers()
    k = (key.key_size + 7) // 8
    assert len(ciphertext) == k
    return pow(int.from_bytes(ciphertext, "big"), numbers.d, numbers.public_numbers.n).to_bytes(
        k, "big"
    )


@pytest.mark.parametrize("party_name", ["rsa2048", "rsa3072"])
@pytest.mark.parametrize("cipher", ["aes128-cbc", "aes256-gcm"])
def test_pkcs1v15_block_has_the_rfc_8017_layout(
    parties: dict[str, Party], party_name: str, cipher: str
) -> None:
    """EM = 0x00 0x02 PS 0x00 CEK: PS nonzero, at least 8 octets, the CEK the cms/cek draw."""
    party, source, settings = parties[party_name], derived(), CmsSettings(cipher, "pkcs1v15")
    body = encrypt(PLAINTEXT, [party.recipient()], settings, draw=source.draw)
    em = raw_decrypt(party.key, encrypted_key(body))
    assert em[:2] == b"\x00\x02"
    separator = em.index(b"\x00", 2)
    ps, cek = em[2:separator], em[separator + 1 :]
    assert len(ps) >= 8 and b"\x00" not in ps
    assert len(ps) == len(em) - settings.key_size - 3
    assert cek == source.draw("cms/cek", settings.key_size)


@pytest.mark.parametrize("party_name", ["rsa2048", "rsa3072"])
def test_oaep_block_decodes_with_cryptography(parties: dict[str, Party], party_name: str) -> None:
    """RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label): cryptography's decryption finds the CEK."""
    party, source, settings = parties[party_name], derived(), CmsSettings("aes256-cbc", "oaep")
    body = encrypt(PLAINTEXT, [party.recipient()], settings, draw=source.draw)
    sha256 = hashes.SHA256()
    oaep = padding.OAEP(mgf=padding.MGF1(sha256), algorithm=sha256, label=None)
    assert party.key.decrypt(encrypted_key(body), oaep) == source.draw("cms/cek", 32)
    em = raw_decrypt(party.key, encrypted_key(body))
    assert em[0] == 0 and len(em) == party.key.key_size // 8


def test_oaep_encoding_masks_with_the_seed() -> None:
    """The OAEP seed is the only randomness: the same seed gives the same EM, another seed not."""
    message, k = b"\x11" * 32, 256
    one = oaep_encode(message, k, b"\x01" * 32)
    assert one == oaep_encode(message, k, b"\x01" * 32) != oaep_encode(message, k, b"\x02" * 32)
    assert len(one) == k and one[0] == 0
    with pytest.raises(CmsError):
        oaep_encode(b"x" * (k - 2 * 32 - 1), k, b"\x01" * 32)  # longer than k - 2hLen - 2


def test_zero_octets_of_the_padding_draw_are_replaced_by_later_draws() -> None:
    """Zeros in a PS draw are dropped; the shortfall is drawn under the next round's label."""
    label = "cms/recipient/0/rsa-pkcs1v15-ps"
    draws = LabelledDraws(
        {f"{label}/0": b"\x05\x00\x06\x00\x07\x08\x00\x01", f"{label}/1": b"\x00\x09\x02"},
        lambda size: b"\x0a" * size,  # round 2: the one octet still missing
    )
    assert nonzero_octets(draws, label, 8) == b"\x05\x06\x07\x08\x01\x09\x02\x0a"
    em = pkcs1v15_encode(b"\xee" * 3, 14, draws, label)  # k = 14: a PS of 8
    assert em == b"\x00\x02" + b"\x05\x06\x07\x08\x01\x09\x02\x0a" + b"\x00" + b"\xee" * 3


def test_pkcs1v15_refuses_a_message_that_leaves_less_than_8_padding_octets() -> None:
    """mLen > k - 11 is 'message too long' (RFC 8017 section 7.2.1 step 1)."""
    with pytest.raises(CmsError):
        pkcs1v15_encode(b"x" * 246, 256, lambda label, size: b"\x01" * size, "ps")
    assert len(pkcs1v15_encode(b"x" * 245, 256, lambda label, size: b"\x01" * size, "ps")) == 256


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize(("party_name", "rsa_padding"), RECIPIENT_KINDS)
def test_derived_messages_are_reproducible_and_open_with_openssl(
    parties: dict[str, Party], tmp_path: Path, cipher: str, party_name: str, rsa_padding: str
) -> None:
    """Every recipient kind and cipher: same draws, same octets; openssl cms -decrypt opens it."""
    party, settings = parties[party_name], CmsSettings(cipher, rsa_padding)
    bodies = [
        encrypt(PLAINTEXT, [party.recipient()], settings, draw=derived().draw) for _ in range(2)
    ]
    assert bodies[0] == bodies[1]
    other = encrypt(PLAINTEXT, [party.recipient()], settings, draw=derived("n").draw)
    assert other != bodies[0]
    assert openssl_decrypt(tmp_path, body_to_der(bodies[0]), party) == PLAINTEXT


@pytest.mark.parametrize("cipher", ["aes256-cbc", "aes128-cbc"])
def test_gpgsm_opens_derived_rsa_cbc(
    parties: dict[str, Party], gpgsm_home: GpgsmHome, cipher: str
) -> None:
    """gpgsm --decrypt recovers the plaintext of a derived RSA (PKCS#1 v1.5) + AES-CBC message."""
    body = encrypt(
        PLAINTEXT, [parties["rsa3072"].recipient()], CmsSettings(cipher), draw=derived().draw
    )
    assert gpgsm_home.decrypt(body_to_der(body)) == PLAINTEXT


def test_several_rsa_recipients_get_independent_padding(parties: dict[str, Party]) -> None:
    """Each recipient's padding is its own draw: two RSA-2048 blocks of one message differ in PS."""
    party = parties["rsa2048"]
    twin = party.recipient(use_key_identifier=True)  # the same key, named otherwise
    body = encrypt(PLAINTEXT, [party.recipient(), twin], CmsSettings(), draw=derived().draw)
    infos = cms.ContentInfo.load(body_to_der(body))["content"]["recipient_infos"]
    blocks = [raw_decrypt(party.key, bytes(i.chosen["encrypted_key"].native)) for i in infos]
    assert blocks[0] != blocks[1] and blocks[0][-32:] == blocks[1][-32:]  # same CEK
