"""Parsing gpg's colon listing and judging keys from it, on fixed listings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from transcoder.keys.errors import KeyAddressMismatch, KeyInvalid
from transcoder.keys.model import KeyUsage
from transcoder.keys.openpgp import evaluate_listing
from transcoder.keys.openpgp_colons import parse_colon_listing, parse_date

NOW = datetime(2026, 3, 1, tzinfo=UTC)

# gpg 2.2 --check-signatures output shape (doc/DETAILS), trimmed to what the parser reads.
PRIMARY = b"42DA2628125AF72C17F944C4D373234C63E33A66"
SELF_SIG = b"sig:!::22:D373234C63E33A66:1700000000::::Alice:13x::" + PRIMARY + b":::8:"
BINDING = b"sig:!::22:D373234C63E33A66:1700000001::::Alice:18x::" + PRIMARY + b":::8:"
LISTING = b"""tru::1:1795358419:0:3:1:5
pub:-:255:22:D373234C63E33A66:1700000000:::-:::scESC:::::ed25519:::0:
fpr:::::::::42DA2628125AF72C17F944C4D373234C63E33A66:
grp:::::::::644EEEFD46F07E310987C063C0F85D574638289F:
uid:-::::1700000000::76BD::Alice \\x3a Work <alice@example.org>::::::::::0:
%(self)s
sig:?::1:0123456789ABCDEF:1700000000::::Someone:10x:::::8:
uid:r::::1700000000::76BE::Old <old@example.org>::::::::::0:
%(self)s
rev:!::22:D373234C63E33A66:1700000000::::Alice:30x::%(primary)s:::8:
sub:-:255:18:4D4D2F4CFCE2C6F7:1700000001:1900000000:::::e:::::cv25519::
fpr:::::::::4253588C21FA1A700FDAC7D64D4D2F4CFCE2C6F7:
%(binding)s
sub:-:3072:1:9817A69A0AB00F09:1710000000::::::e::::::23:
fpr:::::::::F17A7DF3ED79E1E2CF0C79429817A69A0AB00F09:
%(binding)s
""" % {b"self": SELF_SIG, b"binding": BINDING, b"primary": PRIMARY}


def _one(listing: bytes = LISTING) -> object:
    (parsed,) = parse_colon_listing(listing)
    return parsed


def test_records_grouped_under_their_primary() -> None:
    """pub, uid, sub and fpr records are grouped with the right fingerprints."""
    (key,) = parse_colon_listing(LISTING)
    assert key.primary.fingerprint == "42DA2628125AF72C17F944C4D373234C63E33A66"
    assert key.primary.curve == "ed25519"
    assert [s.fingerprint[-4:] for s in key.subkeys] == ["C6F7", "0F09"]
    assert key.subkeys[0].expires == datetime.fromtimestamp(1900000000, UTC)
    assert key.subkeys[1].length == 3072


def test_user_id_escapes_decoded() -> None:
    """``\\x3a`` in a user ID is a colon; validity letters are kept per user ID."""
    (key,) = parse_colon_listing(LISTING)
    assert [(u.validity, u.user_id) for u in key.user_ids] == [
        ("-", "Alice : Work <alice@example.org>"),
        ("r", "Old <old@example.org>"),
    ]


def test_iso_dates_accepted() -> None:
    """Colon dates in ISO 8601 basic form parse as UTC."""
    assert parse_date("20200601T000000") == datetime(2020, 6, 1, tzinfo=UTC)
    assert parse_date("") is None


def test_evaluation_of_a_good_key() -> None:
    """Encryption keys come newest first; a never-expiring one makes not_after None."""
    (key,) = parse_colon_listing(LISTING)
    result = evaluate_listing(key, "alice@example.org", NOW)
    assert result.addresses == ("alice@example.org",)
    assert result.encryption_subkeys[0].endswith("0f09")
    assert result.key_algorithm == "RSA-3072"
    assert result.not_after is None
    assert result.usages == {KeyUsage.ENCRYPT, KeyUsage.SIGN}


def test_revoked_user_id_address_not_accepted() -> None:
    """The address of a revoked user ID does not bind the key to that account."""
    (key,) = parse_colon_listing(LISTING)
    with pytest.raises(KeyAddressMismatch):
        evaluate_listing(key, "old@example.org", NOW)


def test_secret_records_refused() -> None:
    """A listing showing secret key records is refused."""
    listing = LISTING.replace(b"pub:", b"sec:")
    (key,) = parse_colon_listing(listing)
    with pytest.raises(KeyInvalid, match="secret key material"):
        evaluate_listing(key, "alice@example.org", NOW)


def test_expired_primary_refused_at_injected_now() -> None:
    """A primary key whose expiry is before ``now`` is refused, naming the date."""
    listing = LISTING.replace(b":1700000000:::-:::scESC", b":1700000000:1750000000::-:::scESC")
    (key,) = parse_colon_listing(listing)
    with pytest.raises(KeyInvalid, match="primary key expired on 2025-06-15"):
        evaluate_listing(key, "alice@example.org", NOW)


def test_primary_expiry_caps_not_after() -> None:
    """A primary expiring before its subkeys bounds the key's usability."""
    listing = LISTING.replace(b":1700000000:::-:::scESC", b":1700000000:1800000000::-:::scESC")
    (key,) = parse_colon_listing(listing)
    result = evaluate_listing(key, "alice@example.org", NOW)
    assert result.not_after == datetime.fromtimestamp(1800000000, UTC)


def test_unknown_algorithm_refused() -> None:
    """An encryption subkey of an algorithm we do not know is not usable."""
    listing = LISTING.replace(b":255:18:", b":255:99:").replace(b":3072:1:", b":3072:16:")
    (key,) = parse_colon_listing(listing)
    with pytest.raises(KeyInvalid, match="ElGamal"):
        evaluate_listing(key, "alice@example.org", NOW)


def test_signatures_belong_to_the_record_they_follow() -> None:
    """sig records attach to the preceding uid or subkey; rev records are not signatures."""
    (key,) = parse_colon_listing(LISTING)
    alice, old = key.user_ids
    assert [(s.validity, s.signature_class) for s in alice.signatures] == [
        ("!", "13x"),
        ("?", "10x"),
    ]
    assert alice.signatures[0].issuer_fingerprint == PRIMARY.decode()
    assert alice.signatures[0].class_number == 0x13
    assert len(old.signatures) == 1
    assert [s.class_number for sub in key.subkeys for s in sub.signatures] == [0x18, 0x18]
    assert key.primary.signatures == ()


def test_user_id_without_verified_self_signature_does_not_count() -> None:
    """A user ID whose self-signature gpg found bad (sig:-) does not name the key's owner."""
    listing = LISTING.replace(SELF_SIG, SELF_SIG.replace(b"sig:!", b"sig:-"), 1)
    (key,) = parse_colon_listing(listing)
    with pytest.raises(KeyAddressMismatch):
        evaluate_listing(key, "alice@example.org", NOW)


def test_certification_by_another_key_does_not_count() -> None:
    """A good certification made by some other key is not the primary's self-signature."""
    other = SELF_SIG.replace(PRIMARY, b"0" * 40)
    (key,) = parse_colon_listing(LISTING.replace(SELF_SIG, other, 1))
    with pytest.raises(KeyAddressMismatch):
        evaluate_listing(key, "alice@example.org", NOW)


def test_issuer_key_id_used_when_fingerprint_absent() -> None:
    """A self-signature listed without the issuer fingerprint is matched by key ID."""
    bare = SELF_SIG.replace(PRIMARY, b"")
    (key,) = parse_colon_listing(LISTING.replace(SELF_SIG, bare, 1))
    assert evaluate_listing(key, "alice@example.org", NOW).addresses == ("alice@example.org",)


def test_subkey_without_verified_binding_not_used() -> None:
    """An encryption subkey whose binding is not verified is skipped; with none left, refused."""
    one_bad = LISTING[::-1].replace(BINDING[::-1], BINDING.replace(b"sig:!", b"sig:-")[::-1], 1)
    (key,) = parse_colon_listing(one_bad[::-1])
    assert evaluate_listing(key, "alice@example.org", NOW).encryption_subkeys[0].endswith("c6f7")
    (key,) = parse_colon_listing(LISTING.replace(BINDING, BINDING.replace(b":18x:", b":19x:")))
    with pytest.raises(KeyInvalid, match="no valid binding signature"):
        evaluate_listing(key, "alice@example.org", NOW)
