"""Recipient.from_certificate: what it takes from the certificate, and what it refuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.cms.parties import Party, make_cert
from transcoder.cms import Recipient, UnsupportedRecipient
from transcoder.errors import ServerError


def der_of(cert: x509.Certificate) -> bytes:
    """DER of a cryptography certificate."""
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("name", ["rsa3072", "p256", "p521"])
def test_identifiers_come_from_the_certificate(parties: dict[str, Party], name: str) -> None:
    """Issuer DER (byte-exact), serial number, key identifier and SubjectPublicKeyInfo."""
    party = parties[name]
    recipient = party.recipient()
    assert recipient.issuer == party.cert.issuer.public_bytes()
    assert recipient.serial_number == party.cert.serial_number
    assert recipient.public_key_info == party.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ski = party.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert recipient.subject_key_identifier == ski
    assert recipient.use_key_identifier is False


def test_recipients_from_the_same_certificate_are_equal(parties: dict[str, Party]) -> None:
    """Recipient is a value: equal and hashable alike when built from the same certificate."""
    first, second = parties["p384"].recipient(), parties["p384"].recipient()
    assert first == second and hash(first) == hash(second)
    assert first != parties["p384"].recipient(use_key_identifier=True)


def test_recipient_versions(parties: dict[str, Party]) -> None:
    """RecipientInfo versions: ktri 0 by issuer and serial, 2 by key identifier; kari 3."""
    assert parties["rsa2048"].recipient().version == 0
    assert parties["rsa2048"].recipient(use_key_identifier=True).version == 2
    assert parties["p256"].recipient().version == 3


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(lambda: ed25519.Ed25519PrivateKey.generate(), id="ed25519"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP256K1()), id="secp256k1"),
        pytest.param(lambda: ec.generate_private_key(ec.BrainpoolP256R1()), id="brainpool"),
        pytest.param(lambda: rsa.generate_private_key(65537, 1024), id="rsa1024"),
    ],
)
def test_unsupported_keys_are_refused(key: Callable[[], Any]) -> None:
    """Keys other than RSA >= 2048 and P-256/P-384/P-521 raise UnsupportedRecipient."""
    private = key()
    signer = ec.generate_private_key(ec.SECP256R1())
    cert = make_cert(private, "odd", signer=signer)
    with pytest.raises(UnsupportedRecipient) as caught:
        Recipient.from_certificate(der_of(cert))
    assert isinstance(caught.value, ServerError)


def test_garbage_is_refused() -> None:
    """Bytes that are not a certificate raise UnsupportedRecipient, not a parser error."""
    with pytest.raises(UnsupportedRecipient):
        Recipient.from_certificate(b"\x30\x03\x02\x01\x00")


def test_key_identifier_needs_the_extension() -> None:
    """Asking for the subjectKeyIdentifier form without that extension is refused."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_cert(key, "noski", key_identifier=False)
    assert Recipient.from_certificate(der_of(cert)).subject_key_identifier is None
    with pytest.raises(UnsupportedRecipient):
        Recipient.from_certificate(der_of(cert), use_key_identifier=True)
