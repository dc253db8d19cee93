"""Predicted sizes equal actual sizes, and openssl decrypts whatever the length."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cms.parties import Party
from tests.cms.peers import body_to_der, encrypt, openssl_decrypt
from transcoder.cms import CIPHERS, CmsSettings, enveloped_size, smime_body_size

#: Recipient sets for the property test: first party decrypts.
RECIPIENT_SETS = [("rsa3072",), ("p256",), ("p384", "rsa2048"), ("p521", "p256", "rsa3072")]


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("padding", ["pkcs1v15", "oaep"])
@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 56, 57, 58, 127, 128, 65535, 65536, 100_000])
def test_prediction_is_exact_for_every_setting(
    parties: dict[str, Party], cipher: str, padding: str, length: int
) -> None:
    """smime_body_size and enveloped_size equal the octets actually produced."""
    recipients = [parties[name].recipient() for name in ("rsa2048", "p384")]
    config = CmsSettings(cipher, padding)
    body = encrypt(b"\x00" * length, recipients, config)
    assert len(body) == smime_body_size(length, recipients, config)
    assert len(body_to_der(body)) == enveloped_size(length, recipients, config)


def test_sizes_grow_with_the_plaintext_as_the_cipher_says(parties: dict[str, Party]) -> None:
    """CBC pads to the next full block (1..16 octets); GCM adds none to the content."""
    recipients = [parties["p256"].recipient()]
    cbc, gcm = CmsSettings("aes256-cbc"), CmsSettings("aes256-gcm")
    assert enveloped_size(16, recipients, cbc) - enveloped_size(15, recipients, cbc) == 16
    assert enveloped_size(17, recipients, cbc) == enveloped_size(16, recipients, cbc)
    assert enveloped_size(17, recipients, gcm) - enveloped_size(16, recipients, gcm) == 1


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    length=st.integers(0, 1 << 20),
    cipher=st.sampled_from(CIPHERS),
    padding=st.sampled_from(["pkcs1v15", "oaep"]),
    names=st.sampled_from(RECIPIENT_SETS),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_predicted_size_and_openssl_roundtrip(
    parties: dict[str, Party],
    tmp_path: Path,
    length: int,
    cipher: str,
    padding: str,
    names: tuple[str, ...],
    seed: int,
) -> None:
    """For random lengths up to 1 MiB: predicted size == actual, and openssl decrypts."""
    plaintext = random.Random(seed).randbytes(length)
    recipients = [parties[name].recipient() for name in names]
    config = CmsSettings(cipher, padding)
    body = encrypt(plaintext, recipients, config)  # asserts the size prediction
    assert openssl_decrypt(tmp_path, body_to_der(body), parties[names[0]]) == plaintext
