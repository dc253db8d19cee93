"""S/MIME path validation to operator trust anchors (RFC 5280 basics)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.keys.certs import ALICE, NOW, Issued, der, key_usage, make_ca, make_cert, pem
from transcoder.errors import ConfigurationError
from transcoder.keys.errors import KeyInvalid
from transcoder.keys.smime import validate_certificate
from transcoder.keys.smime_chain import load_trust_anchors


@pytest.fixture(scope="module")
def root() -> Issued:
    """The operator's trust anchor."""
    return make_ca("Root")


def _leaf_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_leaf_issued_by_anchor_accepted(root: Issued) -> None:
    """A certificate issued directly by the anchor is accepted."""
    leaf = make_cert(_leaf_key(), issuer=root)
    assert validate_certificate(der(leaf), ALICE, NOW, [root.cert]).material == der(leaf)


def test_path_through_intermediate_from_bundle_accepted(root: Issued) -> None:
    """The chain in a PEM bundle supplies the intermediate between leaf and anchor."""
    intermediate = make_ca("Intermediate", issuer=root, path_length=0)
    leaf = make_cert(_leaf_key(), issuer=intermediate)
    key = validate_certificate(pem(leaf, intermediate.cert), ALICE, NOW, [root.cert])
    assert key.material == der(leaf)


def test_missing_intermediate_refused(root: Issued) -> None:
    """Without its intermediate the leaf has no path to the anchor."""
    intermediate = make_ca("Intermediate", issuer=root)
    leaf = make_cert(_leaf_key(), issuer=intermediate)
    with pytest.raises(KeyInvalid, match="no valid chain to a trusted CA"):
        validate_certificate(der(leaf), ALICE, NOW, [root.cert])


def test_self_signed_refused_with_anchors(root: Issued) -> None:
    """With trust anchors configured a self-signed certificate is refused..."""
    with pytest.raises(KeyInvalid, match="no valid chain to a trusted CA"):
        validate_certificate(der(make_cert(_leaf_key())), ALICE, NOW, [root.cert])


def test_self_signed_accepted_without_anchors() -> None:
    """...and accepted when none are configured."""
    assert validate_certificate(der(make_cert(_leaf_key())), ALICE, NOW).can_encrypt


def test_intermediate_without_ca_flag_refused(root: Issued) -> None:
    """An issuer whose basicConstraints says cA FALSE cannot issue (RFC 5280 4.2.1.9)."""
    not_ca = make_ca("Not a CA", issuer=root, ca=False)
    leaf = make_cert(_leaf_key(), issuer=not_ca)
    with pytest.raises(KeyInvalid, match="basicConstraints"):
        validate_certificate(pem(leaf, not_ca.cert), ALICE, NOW, [root.cert])


def test_intermediate_without_key_cert_sign_refused(root: Issued) -> None:
    """An issuer whose keyUsage lacks keyCertSign cannot issue (RFC 5280 4.2.1.3)."""
    usage = key_usage(digital_signature=True, crl_sign=True)
    weak = make_ca("No keyCertSign", issuer=root, usage=usage)
    leaf = make_cert(_leaf_key(), issuer=weak)
    with pytest.raises(KeyInvalid, match="keyCertSign"):
        validate_certificate(pem(leaf, weak.cert), ALICE, NOW, [root.cert])


def test_expired_intermediate_refused(root: Issued) -> None:
    """Every certificate on the path must be valid at ``now``."""
    old = make_ca("Expired", issuer=root, not_after=NOW - timedelta(days=1))
    leaf = make_cert(_leaf_key(), issuer=old)
    with pytest.raises(KeyInvalid, match="not valid at validation time"):
        validate_certificate(pem(leaf, old.cert), ALICE, NOW, [root.cert])


def test_path_length_constraint_enforced(root: Issued) -> None:
    """pathLenConstraint 0 forbids a further intermediate below it."""
    first = make_ca("First", issuer=root, path_length=0)
    second = make_ca("Second", issuer=first)
    leaf = make_cert(_leaf_key(), issuer=second)
    with pytest.raises(KeyInvalid, match="path length"):
        validate_certificate(pem(leaf, second.cert, first.cert), ALICE, NOW, [root.cert])


def test_forged_issuer_with_same_name_refused(root: Issued) -> None:
    """A CA with the anchor's name but another key does not chain (signature check)."""
    impostor = make_ca("Root")
    leaf = make_cert(_leaf_key(), issuer=impostor)
    with pytest.raises(KeyInvalid, match="no valid chain"):
        validate_certificate(der(leaf), ALICE, NOW, [root.cert])


def test_chain_message_is_short_and_names_no_objects(root: Issued) -> None:
    """The refusal text is one short line without Python object reprs."""
    with pytest.raises(KeyInvalid) as info:
        validate_certificate(der(make_cert(_leaf_key())), ALICE, NOW, [root.cert])
    assert "<Certificate" not in info.value.text
    assert len(info.value.text) <= 140


def test_trust_anchors_loaded_from_pem_file(root: Issued, tmp_path: Path) -> None:
    """--smime-ca FILE: every PEM certificate in the file is an anchor."""
    other = make_ca("Other")
    path = tmp_path / "cas.pem"
    path.write_bytes(pem(other.cert, root.cert))
    anchors = load_trust_anchors(path)
    leaf = make_cert(_leaf_key(), issuer=root)
    assert validate_certificate(der(leaf), ALICE, NOW, anchors).material == der(leaf)


@pytest.mark.parametrize("content", [None, b"", b"not pem"])
def test_unusable_anchor_file_is_a_configuration_error(
    tmp_path: Path, content: bytes | None
) -> None:
    """A missing, empty or non-PEM anchor file is the operator's error."""
    path = tmp_path / "cas.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigurationError):
        load_trust_anchors(path)
