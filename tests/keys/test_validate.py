"""The single validation entry point: format sniffing and dispatch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.keyfactory import PgpKeys
from tests.keys import certs
from transcoder.keys.errors import KeyInvalid, KeyTooBig
from transcoder.keys.model import KeyFormat
from transcoder.keys.validate import sniff_format, validate_key


@pytest.fixture(scope="module")
def cert() -> x509.Certificate:
    """A valid S/MIME certificate for Alice."""
    return certs.make_cert(ec.generate_private_key(ec.SECP256R1()))


def test_sniffing(cert: x509.Certificate, pgp_keys: PgpKeys) -> None:
    """DER and PEM are X.509; armored and binary OpenPGP are OpenPGP."""
    assert sniff_format(certs.der(cert)) is KeyFormat.SMIME
    assert sniff_format(b"text\n" + certs.pem(cert)) is KeyFormat.SMIME
    assert sniff_format(pgp_keys.alice_rsa) is KeyFormat.OPENPGP
    assert sniff_format(pgp_keys.alice_rsa_armored) is KeyFormat.OPENPGP


@pytest.mark.parametrize("data", [b"", b"\n\t ", b"hello world", b"\x01\x02"])
def test_sniffing_refuses_neither(data: bytes) -> None:
    """Text and octets that start neither format are refused with XKEY-INVALID."""
    with pytest.raises(KeyInvalid):
        sniff_format(data)


def test_validate_key_dispatches_both_formats(cert: x509.Certificate, pgp_keys: PgpKeys) -> None:
    """validate_key yields an S/MIME key for a certificate and an OpenPGP key for a PGP key."""
    assert validate_key(certs.der(cert), certs.ALICE, certs.NOW).format is KeyFormat.SMIME
    pgp = validate_key(pgp_keys.alice_25519, certs.ALICE, datetime.now(UTC))
    assert pgp.format is KeyFormat.OPENPGP


def test_validate_key_checks_size_first() -> None:
    """The size cap applies before sniffing."""
    with pytest.raises(KeyTooBig):
        validate_key(b"x" * 2000, certs.ALICE, certs.NOW, max_bytes=1000)
