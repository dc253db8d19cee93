"""Key spoofing: key material that is not what it claims, or not for the account sending it.

OpenPGP (issue 8, item 8): gpg drops at import the user IDs and subkeys
whose signatures do not verify and keeps the rest, and it re-encodes what
it reads, so a damaged key can be stored as another key than the one sent.
Every crafted key below -- built from real gpg keys by packet surgery -- is
refused with ``NO [XKEY-INVALID]`` and leaves the keystore empty.

Addresses (item 9): a key is the account's only if one of its addresses
matches in both local part and domain, ignoring ASCII case
(:mod:`transcoder.keys.addresses`).  These tests differ from the account's
address ONLY in the domain, so they fail if the domain comparison goes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.imap.test_xkey import keyed_session, put
from tests.keyfactory import PgpKeys
from tests.keys.certs import ALICE, NOW, der, key_usage, make_cert
from tests.keys.surgery import (
    ADDRESS_VARIANTS,
    PUBLIC_KEY,
    PUBLIC_SUBKEY,
    RICH_USER_IDS,
    SIGNATURE,
    USER_ID,
    SpoofKeys,
    after,
    armor,
    assert_stored_as_sent,
    flip_signature,
    join,
    reencode_mpi_bits,
    split_packets,
    spoof_keys,
    user_id_at,
    v4_fingerprint,
)
from transcoder.errors import ClientError
from transcoder.keys.addresses import address_matches, user_id_address
from transcoder.keys.errors import KeyAddressMismatch
from transcoder.keys.keystore import KeyStore
from transcoder.keys.model import OpenPgpDetails
from transcoder.keys.openpgp import validate_openpgp_key
from transcoder.keys.smime import validate_certificate

__all__ = ["spoof_keys"]


@dataclass(frozen=True)
class Keys:
    """The session's generated keys, both sets."""

    pgp: PgpKeys
    spoof: SpoofKeys


@pytest.fixture
def keys(pgp_keys: PgpKeys, spoof_keys: SpoofKeys) -> Keys:
    """Both sets of generated OpenPGP keys."""
    return Keys(pgp_keys, spoof_keys)


@pytest.fixture
def keystore(tmp_path: Path) -> KeyStore:
    """A fresh keystore for one XKEY session."""
    return KeyStore(tmp_path / "keys.db")


Index = Callable[[list[tuple[int, bytes]]], int]


def _edit(key: bytes, change: Callable[[list[tuple[int, bytes]]], object]) -> bytes:
    """``key`` re-serialized after ``change`` edited its packet list in place."""
    packets = split_packets(key)
    change(packets)
    return join(packets)


def _flip(key: bytes, index: Index) -> bytes:
    """``key`` with one octet of the signature at ``index`` flipped."""

    def change(packets: list[tuple[int, bytes]]) -> None:
        i = index(packets)
        assert packets[i][0] == SIGNATURE
        packets[i] = (SIGNATURE, flip_signature(packets[i][1]))

    return _edit(key, change)


def _drop(key: bytes, index: Index) -> bytes:
    """``key`` without the signature at ``index``."""
    return _edit(key, lambda packets: packets.pop(index(packets)))


def _reencode(key: bytes, tag: int) -> bytes:
    """``key`` whose first packet with ``tag`` has its first MPI's bit count re-encoded."""

    def change(packets: list[tuple[int, bytes]]) -> None:
        i = after(packets, tag)
        packets[i] = (tag, reencode_mpi_bits(packets[i][1]))

    return _edit(key, change)


def _replace_user_id(key: bytes, old: bytes, new: bytes) -> bytes:
    """``key`` with user ID ``old`` changed to ``new``, its signatures kept."""

    def change(packets: list[tuple[int, bytes]]) -> None:
        packets[user_id_at(packets, old)] = (USER_ID, new)

    return _edit(key, change)


def _binding_of(subkey: int) -> Index:
    return lambda packets: after(packets, PUBLIC_SUBKEY, subkey) + 1


def _self_signature_of(user_id: bytes) -> Index:
    return lambda packets: user_id_at(packets, user_id) + 1


ALICE_UID, ALICE_WORK_UID, CAROL_UID = RICH_USER_IDS

#: Crafted keys, each made from real ones.
CRAFTED: dict[str, Callable[[Keys], bytes]] = {
    "user ID self-signature corrupted": lambda k: _flip(
        k.pgp.alice_25519, _self_signature_of(ALICE_UID)
    ),
    "second user ID for the account, self-signature corrupted": lambda k: _flip(
        k.spoof.rich, _self_signature_of(ALICE_WORK_UID)
    ),
    "only binding signature corrupted": lambda k: _flip(k.pgp.alice_25519, _binding_of(0)),
    "one of two encryption bindings corrupted": lambda k: _flip(k.spoof.rich, _binding_of(1)),
    "user ID text replaced, old signature kept": lambda k: _replace_user_id(
        k.pgp.bob, b"Bob <bob@example.org>", b"Bob <alice@example.org>"
    ),
    "extra user ID replaced by the account's, old signature kept": lambda k: _replace_user_id(
        k.spoof.rich, CAROL_UID, b"Mallory <alice@example.org>"
    ),
    "only binding signature stripped": lambda k: _drop(k.pgp.alice_25519, _binding_of(0)),
    "one of two encryption bindings stripped": lambda k: _drop(k.spoof.rich, _binding_of(0)),
    "primary key MPI re-encoded (ed25519)": lambda k: _reencode(k.pgp.alice_25519, PUBLIC_KEY),
    "primary key MPI re-encoded (RSA)": lambda k: _reencode(k.pgp.alice_rsa, PUBLIC_KEY),
    "encryption subkey MPI re-encoded": lambda k: _reencode(k.pgp.alice_25519, PUBLIC_SUBKEY),
    "second key appended": lambda k: k.pgp.alice_25519 + k.pgp.bob,
    "binary key appended after the armor": lambda k: armor(k.pgp.alice_25519) + k.pgp.bob,
    "second armored key appended": lambda k: armor(k.pgp.alice_25519) + armor(k.pgp.bob),
    "text before the armor": lambda k: b"My key:\n" + armor(k.pgp.alice_25519),
    "secret key before the armor": lambda k: k.pgp.alice_25519_secret + b"\n" + armor(k.pgp.bob),
}


@pytest.fixture(params=list(CRAFTED))
def crafted(request: pytest.FixtureRequest, keys: Keys) -> bytes:
    """One crafted key per case of :data:`CRAFTED`."""
    return CRAFTED[request.param](keys)


def _now() -> datetime:
    return datetime.now(UTC)


def test_crafted_key_refused_by_validation(crafted: bytes) -> None:
    """Each crafted key is refused with XKEY-INVALID by the validator."""
    with pytest.raises(ClientError) as refused:
        validate_openpgp_key(crafted, ALICE, _now())
    assert refused.value.code == "XKEY-INVALID", refused.value


def test_crafted_key_refused_by_xkey_put(
    crafted: bytes, tmp_path: Path, keystore: KeyStore
) -> None:
    """XKEY PUT of each crafted key answers NO [XKEY-INVALID] and stores nothing."""
    session = keyed_session(tmp_path, keystore)
    _, tagged = put(session, crafted)
    assert tagged.startswith(b"p NO [XKEY-INVALID] "), tagged
    assert keystore.list_keys(None, NOW) == []


@pytest.mark.parametrize("name", ["rich", "alice_25519", "alice_rsa"])
def test_intact_keys_stored_as_sent(
    keys: Keys, name: str, tmp_path: Path, keystore: KeyStore
) -> None:
    """Control: an uncrafted key is accepted and a fresh gpg finds it stored exactly as sent."""
    sent = keys.spoof.rich if name == "rich" else getattr(keys.pgp, name)
    _, tagged = put(keyed_session(tmp_path, keystore), armor(sent))
    assert tagged == b"p OK XKEY PUT completed"
    (stored,) = keystore.list_keys(ALICE, NOW)
    assert stored.fingerprint.upper() == v4_fingerprint(split_packets(sent)[0][1])
    assert isinstance(stored.details, OpenPgpDetails)
    assert_stored_as_sent(stored.material, sent, stored.details.encryption_subkeys[0], ALICE)


# --- addresses: only the domain differs --------------------------------------------------

#: Addresses with the account's local part and another domain (or the domain in another form).
OTHER_DOMAINS = (
    "alice@attacker.example",
    "alice@example.org.attacker.example",
    "alice@example.orgx",
    "alice@xexample.org",
    "alice@sub.example.org",
    "alice@example.org.",
    "alice@example",
    "alice@org",
    "alice@xn--xample-2of.org",  # Cyrillic small ie for "e": a lookalike, A-label
    "alice@\u0435xample.org",  # the same lookalike as Unicode
    "alice@example.org@attacker.example",
)
SAME_ADDRESS = (
    "alice@example.org",
    "Alice@Example.ORG",
    "ALICE@EXAMPLE.ORG",
    " alice@example.org ",
)


@pytest.mark.parametrize("candidate", OTHER_DOMAINS)
def test_other_domain_does_not_match(candidate: str) -> None:
    """An address with the account's local part but another domain is not the account's."""
    assert not address_matches(candidate, ALICE)


@pytest.mark.parametrize("candidate", SAME_ADDRESS)
def test_case_variants_match(candidate: str) -> None:
    """Domain and local part match ignoring ASCII case (the module's documented rule)."""
    assert address_matches(candidate, ALICE)
    assert address_matches(ALICE, candidate.strip())


def test_subaddress_is_another_address() -> None:
    """alice+tag@example.org is not alice@example.org: no plus-addressing equivalence."""
    assert not address_matches("alice+tag@example.org", ALICE)
    assert not address_matches(ALICE, "alice+tag@example.org")


@pytest.mark.parametrize("address", OTHER_DOMAINS[:4])
def test_user_id_address_keeps_the_domain(address: str) -> None:
    """The address read from a user ID keeps its whole domain."""
    assert user_id_address(f"Alice <{address}>") == address


def _expect_address(address: str) -> bool:
    """Whether a key for ``address`` belongs to alice@example.org (only the case variant)."""
    return address.lower() == ALICE


@pytest.mark.parametrize("address", ADDRESS_VARIANTS)
def test_openpgp_user_id_domain_checked(spoof_keys: SpoofKeys, address: str) -> None:
    """An OpenPGP key whose user ID differs from the account only in the domain is refused."""
    key = spoof_keys.by_address[address]
    if _expect_address(address):
        assert validate_openpgp_key(key, ALICE, _now()).addresses == (address,)
        return
    with pytest.raises(KeyAddressMismatch, match=r"no user ID for alice@example\.org"):
        validate_openpgp_key(key, ALICE, _now())


@pytest.mark.parametrize("address", ADDRESS_VARIANTS)
def test_openpgp_domain_checked_by_xkey_put(
    spoof_keys: SpoofKeys, address: str, tmp_path: Path, keystore: KeyStore
) -> None:
    """XKEY PUT of such a key answers NO [XKEY-ADDRESS] and stores nothing (case: stored)."""
    _, tagged = put(keyed_session(tmp_path, keystore), spoof_keys.by_address[address])
    if _expect_address(address):
        assert tagged == b"p OK XKEY PUT completed"
        assert len(keystore.list_keys(ALICE, NOW)) == 1
    else:
        assert tagged.startswith(b"p NO [XKEY-ADDRESS] "), tagged
        assert keystore.list_keys(None, NOW) == []


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    """One P-256 key for the certificates of this module."""
    return ec.generate_private_key(ec.SECP256R1())


#: S/MIME variants: the A-label lookalike stands in for the Unicode one (IA5String only).
#: (cryptography will not build an rfc822Name with two "@", so that one is left out too.)
CERT_DOMAINS = tuple(a for a in OTHER_DOMAINS if a.isascii() and a.count("@") == 1)


def _certificate(key: ec.EllipticCurvePrivateKey, san: str | None, subject: str | None) -> bytes:
    usage = key_usage(key_agreement=True, digital_signature=True)
    sans = None if san is None else [san]
    return der(make_cert(key, sans=sans, subject_email=subject, usage=usage))


@pytest.mark.parametrize("where", ["san", "subject"])
@pytest.mark.parametrize("address", CERT_DOMAINS)
def test_certificate_domain_checked(
    p256: ec.EllipticCurvePrivateKey, address: str, where: str
) -> None:
    """A certificate naming the account's local part at another domain is refused, whether
    in an rfc822Name subjectAltName or (without SAN) the subject's emailAddress."""
    san, subject = (address, None) if where == "san" else (None, address)
    with pytest.raises(KeyAddressMismatch, match=r"not alice@example\.org"):
        validate_certificate(_certificate(p256, san, subject), ALICE, NOW)


@pytest.mark.parametrize("where", ["san", "subject"])
def test_certificate_case_variant_accepted(p256: ec.EllipticCurvePrivateKey, where: str) -> None:
    """The account's address in other case is the account's, in SAN or subject."""
    san, subject = ("Alice@Example.ORG", None) if where == "san" else (None, "Alice@Example.ORG")
    key = validate_certificate(_certificate(p256, san, subject), ALICE, NOW)
    assert key.addresses == ("Alice@Example.ORG",)


def test_subject_address_ignored_when_san_names_another_domain(
    p256: ec.EllipticCurvePrivateKey,
) -> None:
    """With a subjectAltName, the subject's emailAddress does not count (RFC 8550 section 3)."""
    cert = _certificate(p256, "alice@attacker.example", ALICE)
    with pytest.raises(KeyAddressMismatch, match=r"for alice@attacker\.example, not"):
        validate_certificate(cert, ALICE, NOW)


@pytest.mark.parametrize(
    ("san", "subject"), [("alice@attacker.example", None), (None, "alice@attacker.example")]
)
def test_certificate_domain_checked_by_xkey_put(
    p256: ec.EllipticCurvePrivateKey,
    san: str | None,
    subject: str | None,
    tmp_path: Path,
    keystore: KeyStore,
) -> None:
    """XKEY PUT of a certificate for alice@attacker.example: NO [XKEY-ADDRESS], nothing stored."""
    _, tagged = put(keyed_session(tmp_path, keystore), _certificate(p256, san, subject))
    assert tagged.startswith(b"p NO [XKEY-ADDRESS] "), tagged
    assert keystore.list_keys(None, NOW) == []


def test_certificate_case_variant_stored_by_xkey_put(
    p256: ec.EllipticCurvePrivateKey, tmp_path: Path, keystore: KeyStore
) -> None:
    """XKEY PUT of a certificate for Alice@Example.ORG is stored for alice@example.org."""
    _, tagged = put(
        keyed_session(tmp_path, keystore), _certificate(p256, "Alice@Example.ORG", None)
    )
    assert tagged == b"p OK XKEY PUT completed"
    assert len(keystore.list_keys(ALICE, NOW)) == 1
