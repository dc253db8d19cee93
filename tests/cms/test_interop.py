"""Real peers decrypt what we encrypt: openssl (every cipher x recipient), gpgsm, cryptography."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cms.parties import Party
from tests.cms.peers import (
    GpgsmHome,
    body_to_der,
    cryptography_decrypt_der,
    cryptography_decrypt_smime,
    encrypt,
    openssl_decrypt,
    smime_message,
)
from transcoder.cms import CIPHERS, CmsSettings

#: (party, RSA padding) pairs: RSA with both paddings, each EC curve.
RECIPIENT_KINDS = [
    ("rsa3072", "pkcs1v15"),
    ("rsa3072", "oaep"),
    ("rsa2048", "oaep"),
    ("p256", "pkcs1v15"),
    ("p384", "pkcs1v15"),
    ("p521", "pkcs1v15"),
]

# A MIME entity of a few lines and not a multiple of 16 or 57 long.
PLAINTEXT = b"Content-Type: text/plain\r\n\r\n" + b"The quick brown fox.\r\n" * 200 + b"end"


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize(("party_name", "rsa_padding"), RECIPIENT_KINDS)
def test_openssl_decrypts_every_cipher_and_recipient_kind(
    parties: dict[str, Party], tmp_path: Path, cipher: str, party_name: str, rsa_padding: str
) -> None:
    """openssl cms -decrypt recovers the plaintext for each cipher and recipient kind."""
    party = parties[party_name]
    body = encrypt(PLAINTEXT, [party.recipient()], CmsSettings(cipher, rsa_padding))
    assert openssl_decrypt(tmp_path, body_to_der(body), party) == PLAINTEXT


@pytest.mark.parametrize("cipher", ["aes256-cbc", "aes128-gcm"])
@pytest.mark.parametrize("party_name", ["rsa2048", "p384"])
def test_openssl_decrypts_recipients_named_by_key_identifier(
    parties: dict[str, Party], tmp_path: Path, cipher: str, party_name: str
) -> None:
    """Recipients identified by subjectKeyIdentifier (ktri v2, kari rKeyId) decrypt too."""
    party = parties[party_name]
    body = encrypt(PLAINTEXT, [party.recipient(use_key_identifier=True)], CmsSettings(cipher))
    assert openssl_decrypt(tmp_path, body_to_der(body), party) == PLAINTEXT


@pytest.mark.parametrize("cipher", ["aes256-cbc", "aes256-gcm"])
def test_openssl_decrypts_the_smime_message_form(
    parties: dict[str, Party], tmp_path: Path, cipher: str
) -> None:
    """With the RFC 8551 header added, openssl -inform SMIME reads the body as it is."""
    party = parties["p256"]
    settings = CmsSettings(cipher)
    message = smime_message(encrypt(PLAINTEXT, [party.recipient()], settings), settings)
    assert openssl_decrypt(tmp_path, message, party, inform="SMIME") == PLAINTEXT


@pytest.mark.parametrize("cipher", CIPHERS)
def test_every_recipient_of_a_multi_recipient_message_decrypts(
    parties: dict[str, Party], tmp_path: Path, cipher: str
) -> None:
    """One message to RSA and EC recipients at once: each decrypts it with their own key."""
    everyone = [parties[name] for name in ("rsa3072", "p256", "rsa2048", "p521")]
    settings = CmsSettings(cipher, "oaep")
    der = body_to_der(encrypt(PLAINTEXT, [p.recipient() for p in everyone], settings))
    for party in everyone:
        assert openssl_decrypt(tmp_path, der, party) == PLAINTEXT, party.name


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 56, 57, 58, 912, 16 * 57 * 3 + 1])
def test_openssl_decrypts_edge_lengths(
    parties: dict[str, Party], tmp_path: Path, length: int
) -> None:
    """Empty plaintext and lengths at multiples of the AES block (16) and base64 line (57)."""
    plaintext = os.urandom(length)
    for cipher in ("aes128-cbc", "aes256-gcm"):
        body = encrypt(plaintext, [parties["p256"].recipient()], CmsSettings(cipher))
        assert openssl_decrypt(tmp_path, body_to_der(body), parties["p256"]) == plaintext


def test_openssl_decrypts_a_message_large_enough_for_the_threaded_path(
    parties: dict[str, Party], tmp_path: Path
) -> None:
    """A 3 MiB message (AES on the helper thread, many chunks) decrypts intact."""
    plaintext = os.urandom(3 * 1024 * 1024 + 5)
    for cipher in ("aes256-cbc", "aes128-gcm"):
        body = encrypt(plaintext, [parties["rsa3072"].recipient()], CmsSettings(cipher))
        assert openssl_decrypt(tmp_path, body_to_der(body), parties["rsa3072"]) == plaintext


@pytest.mark.parametrize("cipher", ["aes256-cbc", "aes128-cbc"])
def test_gpgsm_decrypts_rsa_cbc(
    parties: dict[str, Party], gpgsm_home: GpgsmHome, cipher: str
) -> None:
    """gpgsm --decrypt (GnuPG's S/MIME tool) recovers the plaintext of RSA + AES-CBC."""
    body = encrypt(PLAINTEXT, [parties["rsa3072"].recipient()], CmsSettings(cipher))
    assert gpgsm_home.decrypt(body_to_der(body)) == PLAINTEXT


@pytest.mark.parametrize("cipher", ["aes256-cbc", "aes128-cbc"])
def test_cryptography_decrypts_rsa_pkcs1v15_cbc(parties: dict[str, Party], cipher: str) -> None:
    """cryptography's pkcs7_decrypt_der and pkcs7_decrypt_smime recover the plaintext."""
    party = parties["rsa2048"]
    settings = CmsSettings(cipher, "pkcs1v15")
    body = encrypt(PLAINTEXT, [party.recipient()], settings)
    assert cryptography_decrypt_der(body_to_der(body), party) == PLAINTEXT
    assert cryptography_decrypt_smime(smime_message(body, settings), party) == PLAINTEXT
