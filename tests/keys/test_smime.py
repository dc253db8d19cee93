"""S/MIME certificate validation: formats, validity, key strength, usage, address."""

from __future__ import annotations

import contextlib
import hashlib
import os
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.keys.certs import ALICE, NOW, der, key_usage, make_ca, make_cert, pem, pkcs7_bundle
from transcoder.errors import ClientError
from transcoder.keys.errors import KeyAddressMismatch, KeyInvalid, KeyTooBig
from transcoder.keys.model import KeyFormat, KeyUsage, SmimeDetails
from transcoder.keys.smime import validate_certificate


@pytest.fixture(scope="module")
def rsa2048() -> rsa.RSAPrivateKey:
    """One RSA-2048 key for the module (generation is the slow part)."""
    return rsa.generate_private_key(65537, 2048)


def test_rsa_2048_der_accepted_with_all_fields(rsa2048: rsa.RSAPrivateKey) -> None:
    """A DER RSA-2048 certificate validates into a complete ValidatedKey."""
    cert = make_cert(rsa2048)
    key = validate_certificate(der(cert), ALICE, NOW)
    assert key.format is KeyFormat.SMIME
    assert key.fingerprint == hashlib.sha256(der(cert)).hexdigest()
    assert key.addresses == (ALICE,)
    assert key.not_after == cert.not_valid_after_utc
    assert key.usages == {KeyUsage.ENCRYPT, KeyUsage.SIGN}
    assert key.material == der(cert)
    assert key.key_algorithm == "RSA-2048"
    assert isinstance(key.details, SmimeDetails)
    assert key.details.issuer == cert.issuer.public_bytes()
    assert key.details.serial_number == cert.serial_number
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert key.details.subject_key_identifier == ski.digest
    assert key.details.chain == ()


@pytest.mark.parametrize(
    ("make_key", "name"),
    [
        (lambda: rsa.generate_private_key(65537, 3072), "RSA-3072"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "EC-P256"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "EC-P384"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "EC-P521"),
    ],
)
def test_strong_keys_accepted(make_key: Any, name: str) -> None:
    """RSA-3072 and EC P-256/P-384/P-521 PEM certificates are accepted and named."""
    key = validate_certificate(pem(make_cert(make_key())), ALICE, NOW)
    assert key.key_algorithm == name
    assert KeyUsage.ENCRYPT in key.usages


@pytest.mark.parametrize(
    ("make_key", "message"),
    [
        (lambda: rsa.generate_private_key(65537, 1024), "RSA key of 1024 bits; at least 2048"),
        (lambda: ed25519.Ed25519PrivateKey.generate(), "Ed25519 key not accepted"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "elliptic curve secp256k1"),
        (lambda: dsa.generate_private_key(2048), "DSA key not accepted"),
    ],
)
def test_weak_or_unsupported_keys_refused(make_key: Any, message: str) -> None:
    """RSA-1024, Ed25519, secp256k1 and DSA certificates are refused with XKEY-INVALID."""
    with pytest.raises(KeyInvalid, match=message) as info:
        validate_certificate(der(make_cert(make_key())), ALICE, NOW)
    assert info.value.code == "XKEY-INVALID"


def test_expired_refused(rsa2048: rsa.RSAPrivateKey) -> None:
    """A certificate past notAfter is refused, naming the date."""
    cert = make_cert(rsa2048, not_after=NOW - timedelta(days=1))
    with pytest.raises(KeyInvalid, match="certificate expired on 2026-02-28"):
        validate_certificate(der(cert), ALICE, NOW)


def test_not_yet_valid_refused(rsa2048: rsa.RSAPrivateKey) -> None:
    """A certificate before notBefore is refused, naming the date."""
    cert = make_cert(rsa2048, not_before=NOW + timedelta(days=2))
    with pytest.raises(KeyInvalid, match="certificate not valid before 2026-03-03"):
        validate_certificate(der(cert), ALICE, NOW)


def test_validity_bounds_are_inclusive(rsa2048: rsa.RSAPrivateKey) -> None:
    """At exactly notBefore and exactly notAfter the certificate is valid (RFC 5280 4.1.2.5)."""
    cert = make_cert(rsa2048, not_before=NOW, not_after=NOW + timedelta(days=1))
    assert validate_certificate(der(cert), ALICE, NOW).fingerprint
    assert validate_certificate(der(cert), ALICE, NOW + timedelta(days=1)).fingerprint


def test_other_address_refused(rsa2048: rsa.RSAPrivateKey) -> None:
    """A certificate for another address is refused with XKEY-ADDRESS, naming both."""
    cert = make_cert(rsa2048, sans=["bob@example.org"])
    with pytest.raises(KeyAddressMismatch, match=r"for bob@example\.org, not alice@") as info:
        validate_certificate(der(cert), ALICE, NOW)
    assert info.value.code == "XKEY-ADDRESS"


def test_domain_compared_case_insensitively(rsa2048: rsa.RSAPrivateKey) -> None:
    """The domain matches ignoring case; the stored address keeps the certificate's spelling."""
    cert = make_cert(rsa2048, sans=["alice@EXAMPLE.Org"])
    assert validate_certificate(der(cert), ALICE, NOW).addresses == ("alice@EXAMPLE.Org",)


def test_local_part_compared_like_logins(rsa2048: rsa.RSAPrivateKey) -> None:
    """The local part matches ignoring case, as account logins do; another local part does not."""
    cert = make_cert(rsa2048, sans=["Alice@example.org"])
    assert validate_certificate(der(cert), ALICE, NOW).addresses == ("Alice@example.org",)
    other = make_cert(rsa2048, sans=["alicia@example.org"])
    with pytest.raises(KeyAddressMismatch):
        validate_certificate(der(other), ALICE, NOW)


def test_any_of_several_addresses_matches(rsa2048: rsa.RSAPrivateKey) -> None:
    """A certificate naming several addresses is accepted when one is the account's."""
    cert = make_cert(rsa2048, sans=["a@other.example", ALICE])
    assert validate_certificate(der(cert), ALICE, NOW).addresses == ("a@other.example", ALICE)


def test_subject_email_used_without_san(rsa2048: rsa.RSAPrivateKey) -> None:
    """Lacking subjectAltName, the subject emailAddress is the certificate's address."""
    cert = make_cert(rsa2048, sans=None, subject_email=ALICE)
    assert validate_certificate(der(cert), ALICE, NOW).addresses == (ALICE,)


def test_no_address_refused(rsa2048: rsa.RSAPrivateKey) -> None:
    """A certificate naming no email address at all is refused with XKEY-ADDRESS."""
    cert = make_cert(rsa2048, sans=None)
    with pytest.raises(KeyAddressMismatch, match="names no email address"):
        validate_certificate(der(cert), ALICE, NOW)


def test_control_characters_never_reach_the_message(rsa2048: rsa.RSAPrivateKey) -> None:
    """A CR LF inside a certificate address is not echoed into the response text."""
    cert = make_cert(rsa2048, sans=["x\r\n* BYE@example.org"])
    with pytest.raises(KeyAddressMismatch) as info:
        validate_certificate(der(cert), ALICE, NOW)
    assert "\r" not in info.value.text and "\n" not in info.value.text


def test_signing_only_key_usage_stored_for_signing(rsa2048: rsa.RSAPrivateKey) -> None:
    """keyUsage digitalSignature+nonRepudiation only: accepted with usage SIGN, never ENCRYPT."""
    usage = key_usage(digital_signature=True, content_commitment=True)
    key = validate_certificate(der(make_cert(rsa2048, usage=usage)), ALICE, NOW)
    assert key.usages == {KeyUsage.SIGN}
    assert not key.can_encrypt


def test_rsa_key_encipherment_only_is_encryption_only(rsa2048: rsa.RSAPrivateKey) -> None:
    """An RSA certificate with keyUsage keyEncipherment only is an encryption key."""
    cert = make_cert(rsa2048, usage=key_usage(key_encipherment=True))
    assert validate_certificate(der(cert), ALICE, NOW).usages == {KeyUsage.ENCRYPT}


def test_ec_key_agreement_is_encryption() -> None:
    """An EC certificate with keyUsage keyAgreement is an encryption key (RFC 8550 4.4.2)."""
    cert = make_cert(ec.generate_private_key(ec.SECP256R1()), usage=key_usage(key_agreement=True))
    assert validate_certificate(der(cert), ALICE, NOW).usages == {KeyUsage.ENCRYPT}


def test_rsa_key_agreement_only_refused(rsa2048: rsa.RSAPrivateKey) -> None:
    """keyAgreement is meaningless for RSA: with nothing else set the certificate is refused."""
    cert = make_cert(rsa2048, usage=key_usage(key_agreement=True))
    with pytest.raises(KeyInvalid, match="neither keyEncipherment nor digitalSignature"):
        validate_certificate(der(cert), ALICE, NOW)


def test_eku_server_auth_only_refused(rsa2048: rsa.RSAPrivateKey) -> None:
    """extendedKeyUsage without emailProtection (serverAuth only) is refused."""
    cert = make_cert(rsa2048, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    with pytest.raises(KeyInvalid, match="does not include emailProtection"):
        validate_certificate(der(cert), ALICE, NOW)


@pytest.mark.parametrize(
    "eku",
    [
        [ExtendedKeyUsageOID.EMAIL_PROTECTION],
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION],
        [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE],
    ],
)
def test_eku_email_protection_or_any_accepted(rsa2048: rsa.RSAPrivateKey, eku: list[Any]) -> None:
    """extendedKeyUsage including emailProtection or anyExtendedKeyUsage is accepted."""
    assert validate_certificate(der(make_cert(rsa2048, eku=eku)), ALICE, NOW).can_encrypt


def test_pem_bundle_first_is_end_entity_rest_is_chain(rsa2048: rsa.RSAPrivateKey) -> None:
    """In a PEM bundle the first certificate is validated and the rest kept as its chain."""
    ca = make_ca()
    leaf = make_cert(rsa2048, issuer=ca)
    key = validate_certificate(b"leading text\n" + pem(leaf, ca.cert), ALICE, NOW)
    assert key.material == der(leaf)
    assert isinstance(key.details, SmimeDetails)
    assert key.details.chain == (der(ca.cert),)


@pytest.mark.parametrize("encoding", ["DER", "PEM"])
def test_pkcs7_bundle_end_entity_found_in_any_order(
    rsa2048: rsa.RSAPrivateKey, encoding: str
) -> None:
    """A PKCS#7 certs-only bundle yields the certificate no other one was issued by."""
    root = make_ca("Root")
    intermediate = make_ca("Intermediate", issuer=root)
    leaf = make_cert(rsa2048, issuer=intermediate)
    data = pkcs7_bundle([root.cert, leaf, intermediate.cert], encoding)
    key = validate_certificate(data, ALICE, NOW)
    assert key.material == der(leaf)
    assert isinstance(key.details, SmimeDetails)
    assert set(key.details.chain) == {der(root.cert), der(intermediate.cert)}


def test_pkcs7_bundle_with_two_end_entities_refused(rsa2048: rsa.RSAPrivateKey) -> None:
    """A PKCS#7 bundle with two unrelated certificates is ambiguous and refused."""
    other = make_cert(rsa2048, common_name="Other")
    data = pkcs7_bundle([make_cert(rsa2048), other])
    with pytest.raises(KeyInvalid, match="2 end-entity certificates"):
        validate_certificate(data, ALICE, NOW)


def test_pem_with_private_key_refused(rsa2048: rsa.RSAPrivateKey) -> None:
    """PEM carrying a private key is refused as secret key material."""
    secret = rsa2048.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyInvalid, match="secret key material"):
        validate_certificate(pem(make_cert(rsa2048)) + secret, ALICE, NOW)


def test_truncated_pem_refused(rsa2048: rsa.RSAPrivateKey) -> None:
    """A PEM certificate cut in half is refused with XKEY-INVALID."""
    data = pem(make_cert(rsa2048))
    with pytest.raises(KeyInvalid):
        validate_certificate(data[: len(data) // 2], ALICE, NOW)


def test_truncated_der_refused(rsa2048: rsa.RSAPrivateKey) -> None:
    """A DER certificate missing its tail is refused with XKEY-INVALID."""
    data = der(make_cert(rsa2048))
    with pytest.raises(KeyInvalid):
        validate_certificate(data[:-10], ALICE, NOW)


@pytest.mark.parametrize("data", [b"", b"   \n", os.urandom(512), b"-----BEGIN PUBLIC KEY-----\n"])
def test_garbage_refused(data: bytes) -> None:
    """Empty input, random bytes and PEM without a certificate are refused with XKEY-INVALID."""
    with pytest.raises(KeyInvalid):
        validate_certificate(data, ALICE, NOW)


def test_oversize_refused_before_parsing(rsa2048: rsa.RSAPrivateKey) -> None:
    """Input over the cap is refused with XKEY-TOOBIG even when it is a valid certificate."""
    data = der(make_cert(rsa2048))
    with pytest.raises(KeyTooBig) as info:
        validate_certificate(data, ALICE, NOW, max_bytes=len(data) - 1)
    assert info.value.code == "XKEY-TOOBIG"
    with pytest.raises(KeyTooBig):
        validate_certificate(b"\x00" * (256 * 1024 + 1), ALICE, NOW)


def test_naive_clock_is_a_programming_error(rsa2048: rsa.RSAPrivateKey) -> None:
    """A naive ``now`` raises ValueError rather than validating against local time."""
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_certificate(der(make_cert(rsa2048)), ALICE, NOW.replace(tzinfo=None))


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_only_ever_give_client_errors(data: bytes) -> None:
    """Whatever the bytes, validation either succeeds or raises a ClientError."""
    with pytest.raises(ClientError):
        validate_certificate(data, ALICE, NOW)


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@settings(max_examples=150, deadline=None)
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_corrupted_certificates_only_ever_give_client_errors(position: int, value: int) -> None:
    """A certificate with one octet changed is accepted or refused, never crashes."""
    data = bytearray(_SAMPLE)
    data[position % len(data)] = value
    with contextlib.suppress(ClientError):
        validate_certificate(bytes(data), ALICE, NOW)


_SAMPLE = der(
    make_cert(ec.generate_private_key(ec.SECP256R1()), eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION])
)


def test_pkcs12_refused_as_secret_material(rsa2048: rsa.RSAPrivateKey) -> None:
    """A PKCS#12 export (certificate with its private key) is refused as secret material."""
    data = pkcs12.serialize_key_and_certificates(
        b"alice", rsa2048, make_cert(rsa2048), None, serialization.NoEncryption()
    )
    with pytest.raises(KeyInvalid, match="PKCS#12 holds secret key material"):
        validate_certificate(data, ALICE, NOW)


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_zero_serial_number_refused(rsa2048: rsa.RSAPrivateKey) -> None:
    """A certificate whose serial number is 0 is refused (RFC 5280 section 4.1.2.2)."""
    data = der(make_cert(rsa2048, serial=1))
    marker = bytes.fromhex("a003020102020101")  # version v3, then INTEGER 1
    assert data.count(marker) == 1
    with pytest.raises(KeyInvalid, match="serial number is not positive"):
        validate_certificate(data.replace(marker, marker[:-1] + b"\x00"), ALICE, NOW)
