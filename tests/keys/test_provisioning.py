"""provision(): the one path from key material to the keystore, for XKEY and transcoder-admin."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.keyfactory import PgpKeys
from tests.keys.certs import ALICE, NOW, der, make_ca, make_cert, pem
from transcoder.errors import ConfigurationError
from transcoder.keys.errors import KeyAddressMismatch, KeyInvalid, KeyTooBig
from transcoder.keys.keystore import KeyStore
from transcoder.keys.model import KeyFormat, KeyStatus
from transcoder.keys.provisioning import provision, refused_fingerprint

ORIGIN = {"peer": "192.0.2.1:4000", "via": "test"}


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    """One P-256 key for the module."""
    return ec.generate_private_key(ec.SECP256R1())


def test_valid_certificate_is_stored_and_audited(
    store: KeyStore, audit_log: list[dict[str, Any]], ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """A valid certificate comes back as the stored ACTIVE key; the audit names the origin."""
    cert = der(make_cert(ec_key))
    stored = provision(store, ALICE, cert, NOW, origin=ORIGIN)
    assert stored.status is KeyStatus.ACTIVE
    assert stored.fingerprint == hashlib.sha256(cert).hexdigest()
    assert store.list_keys(ALICE, NOW) == [stored]
    (record,) = audit_log
    assert record["event"] == "key.stored"
    assert record["fingerprint"] == stored.fingerprint
    assert record["peer"] == ORIGIN["peer"]


def test_openpgp_key_is_stored(store: KeyStore, pgp_keys: PgpKeys) -> None:
    """An OpenPGP key takes the same path and is stored as its minimal export."""
    stored = provision(store, ALICE, pgp_keys.alice_25519, NOW)
    assert stored.format is KeyFormat.OPENPGP
    assert stored.fingerprint == pgp_keys.alice_25519_fpr.lower()


@pytest.mark.parametrize(
    ("make_data", "error"),
    [
        (lambda k: der(make_cert(k, sans=("bob@example.org",))), KeyAddressMismatch),
        (lambda k: der(make_cert(k, not_after=NOW - timedelta(days=1))), KeyInvalid),
        (lambda k: pem(make_cert(k))[:-40], KeyInvalid),
        (lambda k: b"\x30" + bytes(range(200)), KeyInvalid),
    ],
    ids=["other-address", "expired", "truncated-pem", "garbage-der"],
)
def test_refusals_store_nothing_and_are_audited(
    store: KeyStore,
    audit_log: list[dict[str, Any]],
    ec_key: ec.EllipticCurvePrivateKey,
    make_data: Any,
    error: type[Exception],
) -> None:
    """A refused key raises its client error, leaves the store empty and is audited as refused."""
    data = make_data(ec_key)
    with pytest.raises(error) as raised:
        provision(store, ALICE, data, NOW, origin=ORIGIN)
    assert store.list_keys(None, NOW) == []
    (record,) = audit_log
    assert record["event"] == "key.refused"
    assert record["code"] == raised.value.code  # type: ignore[attr-defined]
    assert record["reason"] == raised.value.text  # type: ignore[attr-defined]
    assert record["material_sha256"] == hashlib.sha256(data).hexdigest()
    assert record["peer"] == ORIGIN["peer"]


def test_refused_certificate_is_audited_under_its_fingerprint(
    store: KeyStore, audit_log: list[dict[str, Any]], ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """A parsable but refused certificate is audited with the fingerprint it would have had."""
    cert = der(make_cert(ec_key, sans=("bob@example.org",)))
    with pytest.raises(KeyAddressMismatch):
        provision(store, ALICE, cert, NOW)
    assert audit_log[0]["fingerprint"] == hashlib.sha256(cert).hexdigest()
    assert refused_fingerprint(pem(make_cert(ec_key))) is not None
    assert refused_fingerprint(b"-----BEGIN PGP PUBLIC KEY BLOCK-----") is None
    assert refused_fingerprint(b"\x30\x03junk") is None


def test_oversized_material_is_refused_before_parsing(
    store: KeyStore, audit_log: list[dict[str, Any]]
) -> None:
    """Material over max_bytes is KeyTooBig, audited, and nothing is stored."""
    with pytest.raises(KeyTooBig):
        provision(store, ALICE, b"\x30" * 2048, NOW, max_bytes=1024)
    assert store.list_keys(None, NOW) == []
    assert audit_log[0]["code"] == "XKEY-TOOBIG"
    assert "fingerprint" not in audit_log[0]


def test_trust_anchors_are_applied(store: KeyStore, ec_key: ec.EllipticCurvePrivateKey) -> None:
    """With trust anchors, a self-signed certificate is refused and a CA-issued one stored."""
    ca = make_ca()
    with pytest.raises(KeyInvalid, match="chain"):
        provision(store, ALICE, der(make_cert(ec_key)), NOW, trust_anchors=[ca.cert])
    issued = make_cert(ec_key, issuer=ca)
    stored = provision(store, ALICE, pem(issued), NOW, trust_anchors=[ca.cert])
    assert stored.fingerprint == hashlib.sha256(der(issued)).hexdigest()


def test_server_side_failure_is_not_a_refusal(
    store: KeyStore, audit_log: list[dict[str, Any]], pgp_keys: PgpKeys
) -> None:
    """A missing gpg is a ConfigurationError, not audited as the user's key being refused."""
    with pytest.raises(ConfigurationError):
        provision(store, ALICE, pgp_keys.alice_25519, NOW, gpg_binary="/nonexistent/gpg")
    assert audit_log == []
    assert store.list_keys(None, NOW) == []
