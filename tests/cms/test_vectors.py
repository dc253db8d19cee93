"""Fixed vectors (tests/vectors/cms): reproduced octet for octet, and opened by openssl."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.cms.draws import vector_draws
from tests.cms.parties import Party
from tests.cms.peers import body_to_der, openssl_decrypt
from transcoder.cms import CmsSettings, Recipient, encrypt_to_smime_body

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "cms"
CASES: list[dict[str, Any]] = json.loads((VECTORS / "vectors.json").read_text())


@pytest.fixture(scope="module")
def vector_party() -> Party:
    """The vectors' recipient, from the stored key and certificate."""
    cert_path, key_path = VECTORS / "p256.cert.pem", VECTORS / "p256.key.pem"
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return Party("vector", key, cert, cert_path, key_path)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_encoder_reproduces_the_vector(vector_party: Party, case: dict[str, Any]) -> None:
    """Same inputs and randomness give the stored body, octet for octet."""
    plaintext = case["plaintext"].encode()
    out = io.BytesIO()
    encrypt_to_smime_body(
        io.BytesIO(plaintext),
        len(plaintext),
        out,
        [Recipient.from_certificate(vector_party.cert_der)],
        CmsSettings(case["cipher"]),
        draw=vector_draws(case),
    )
    assert out.getvalue() == case["body"].encode("ascii")


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_openssl_opens_the_vector(
    vector_party: Party, tmp_path: Path, case: dict[str, Any]
) -> None:
    """The stored body decrypts with openssl and the stored key (the independent verifier)."""
    der = body_to_der(case["body"].encode("ascii"))
    assert openssl_decrypt(tmp_path, der, vector_party) == case["plaintext"].encode()
