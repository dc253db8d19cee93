"""OpenPGP key validation with the real gpg, on keys generated for the session."""

from __future__ import annotations

import stat
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.keyfactory import PgpKeys
from transcoder.errors import ConfigurationError
from transcoder.keys.errors import KeyAddressMismatch, KeyInvalid, KeyTooBig
from transcoder.keys.model import KeyFormat, KeyUsage, OpenPgpDetails
from transcoder.keys.openpgp import validate_openpgp_key
from transcoder.keys.openpgp_gpg import isolated_gpg

ALICE = "alice@example.org"


def _now() -> datetime:
    # gpg judges revocation and expiry at the real time, so these tests do too.
    return datetime.now(UTC)


def _listing(material: bytes) -> str:
    """gpg's own listing of exported material, read back in a scratch home."""
    with tempfile.TemporaryDirectory() as home:
        done = subprocess.run(
            [
                *("gpg", "--homedir", home, "--batch", "--no-autostart", "--with-colons"),
                *("--import-options", "show-only", "--import"),
            ],
            input=material,
            capture_output=True,
            check=True,
        )
    return done.stdout.decode()


def test_rsa_key_accepted_with_all_fields(pgp_keys: PgpKeys) -> None:
    """An RSA-3072 key with an RSA-3072 encryption subkey validates completely."""
    key = validate_openpgp_key(pgp_keys.alice_rsa, ALICE, _now())
    assert key.format is KeyFormat.OPENPGP
    assert key.fingerprint == pgp_keys.alice_rsa_fpr.lower()
    assert key.addresses == (ALICE,)
    assert key.not_after is None
    assert key.usages == {KeyUsage.ENCRYPT, KeyUsage.SIGN}
    assert key.key_algorithm == "RSA-3072"
    assert isinstance(key.details, OpenPgpDetails)
    assert len(key.details.encryption_subkeys) == 1
    assert key.details.encryption_subkeys[0] != key.fingerprint


def test_armored_and_binary_give_the_same_key(pgp_keys: PgpKeys) -> None:
    """Armored input validates to the same fingerprint and material as binary input."""
    binary = validate_openpgp_key(pgp_keys.alice_rsa, ALICE, _now())
    armored = validate_openpgp_key(pgp_keys.alice_rsa_armored, ALICE, _now())
    assert (armored.fingerprint, armored.material) == (binary.fingerprint, binary.material)


def test_curve25519_key_accepted(pgp_keys: PgpKeys) -> None:
    """A future-default (ed25519 + cv25519) key is accepted as Curve25519."""
    key = validate_openpgp_key(pgp_keys.alice_25519, ALICE, _now())
    assert key.key_algorithm == "Curve25519"
    assert key.fingerprint == pgp_keys.alice_25519_fpr.lower()


def test_stored_material_is_the_public_key_only(pgp_keys: PgpKeys) -> None:
    """The stored material is a public key gpg can read back, with the same fingerprint."""
    key = validate_openpgp_key(pgp_keys.alice_25519, ALICE, _now())
    listing = _listing(key.material)
    assert f":{pgp_keys.alice_25519_fpr}:" in listing
    assert "\nsec:" not in listing and not listing.startswith("sec:")


def test_expiry_comes_from_the_encryption_subkey(pgp_keys: PgpKeys) -> None:
    """A never-expiring primary with a subkey expiring in 2099 is usable until 2099-01-01."""
    key = validate_openpgp_key(pgp_keys.expiring, ALICE, _now())
    assert key.not_after is not None
    assert key.not_after.date().isoformat() == "2099-01-01"


def test_expiry_also_judged_at_injected_now(pgp_keys: PgpKeys) -> None:
    """Validating after the subkey's expiry (injected clock) refuses the key."""
    later = datetime(2099, 6, 1, tzinfo=UTC)
    with pytest.raises(KeyInvalid, match=r"no usable encryption key: .* expired on 2099-01-01"):
        validate_openpgp_key(pgp_keys.expiring, ALICE, later)


def test_other_address_refused(pgp_keys: PgpKeys) -> None:
    """Bob's key is refused for Alice with XKEY-ADDRESS."""
    with pytest.raises(KeyAddressMismatch, match=r"no user ID for alice@example\.org"):
        validate_openpgp_key(pgp_keys.bob, ALICE, _now())


def test_revoked_user_id_does_not_count(pgp_keys: PgpKeys) -> None:
    """A key whose Alice user ID is revoked is not Alice's key."""
    with pytest.raises(KeyAddressMismatch):
        validate_openpgp_key(pgp_keys.revoked_uid, ALICE, _now())
    assert validate_openpgp_key(pgp_keys.revoked_uid, "carol@example.org", _now()).addresses == (
        "carol@example.org",
    )


def test_only_encryption_subkey_revoked_refused(pgp_keys: PgpKeys) -> None:
    """A key whose only encryption subkey is revoked is refused."""
    with pytest.raises(KeyInvalid, match=r"no usable encryption key: subkey .* revoked"):
        validate_openpgp_key(pgp_keys.revoked_subkey, ALICE, _now())


def test_only_encryption_subkey_expired_refused(pgp_keys: PgpKeys) -> None:
    """A key whose only encryption subkey expired (2020-06-01) is refused, naming the date."""
    with pytest.raises(KeyInvalid, match="expired on 2020-06-01"):
        validate_openpgp_key(pgp_keys.expired_subkey, ALICE, _now())


def test_revoked_primary_refused(pgp_keys: PgpKeys) -> None:
    """A revoked key is refused."""
    with pytest.raises(KeyInvalid, match="primary key revoked"):
        validate_openpgp_key(pgp_keys.revoked_primary, ALICE, _now())


def test_weak_encryption_subkey_refused(pgp_keys: PgpKeys) -> None:
    """An ed25519 key whose only encryption subkey is RSA-1024 is refused."""
    with pytest.raises(KeyInvalid, match="RSA of 1024 bits; at least 2048 required"):
        validate_openpgp_key(pgp_keys.weak_subkey, ALICE, _now())


def test_weak_primary_refused(pgp_keys: PgpKeys) -> None:
    """An RSA-1024 primary key is refused even though it can encrypt."""
    with pytest.raises(KeyInvalid, match="primary key is RSA of 1024 bits"):
        validate_openpgp_key(pgp_keys.weak_primary, ALICE, _now())


def test_brainpool_refused(pgp_keys: PgpKeys) -> None:
    """Brainpool curves are not on the accepted list."""
    with pytest.raises(KeyInvalid, match="brainpoolP256r1"):
        validate_openpgp_key(pgp_keys.brainpool, ALICE, _now())


def test_key_without_encryption_capability_refused(pgp_keys: PgpKeys) -> None:
    """A signing-only OpenPGP key is refused: nothing to encrypt to."""
    with pytest.raises(KeyInvalid, match="no key with encryption capability"):
        validate_openpgp_key(pgp_keys.sign_only, ALICE, _now())


@pytest.mark.parametrize("name", ["alice_25519_secret", "alice_25519_secret_armored"])
def test_secret_key_refused_and_nothing_left_behind(
    pgp_keys: PgpKeys, name: str, tmp_path: Path
) -> None:
    """A secret key export (binary or armored) is refused; nothing is left on disk."""
    with pytest.raises(KeyInvalid, match="secret key material") as info:
        validate_openpgp_key(getattr(pgp_keys, name), ALICE, _now(), scratch_dir=tmp_path)
    assert info.value.code == "XKEY-INVALID"
    assert list(tmp_path.iterdir()) == []


def test_two_keys_refused(pgp_keys: PgpKeys) -> None:
    """Two concatenated public keys are refused: one key per PUT."""
    with pytest.raises(KeyInvalid, match="2 primary keys"):
        validate_openpgp_key(pgp_keys.alice_rsa + pgp_keys.alice_25519, ALICE, _now())


def test_truncated_key_refused(pgp_keys: PgpKeys) -> None:
    """A key cut short is refused with XKEY-INVALID."""
    with pytest.raises(KeyInvalid):
        validate_openpgp_key(pgp_keys.alice_rsa[:-40], ALICE, _now())


def test_damaged_signature_refused(pgp_keys: PgpKeys) -> None:
    """A key whose self-signatures are corrupted has nothing gpg will import."""
    data = bytearray(pgp_keys.alice_25519)
    data[-20] ^= 0xFF
    data[-100] ^= 0xFF
    with pytest.raises((KeyInvalid, KeyAddressMismatch)):
        validate_openpgp_key(bytes(data), ALICE, _now())


def test_oversize_refused(pgp_keys: PgpKeys) -> None:
    """Key material over the cap is refused with XKEY-TOOBIG before gpg runs."""
    with pytest.raises(KeyTooBig):
        validate_openpgp_key(pgp_keys.alice_rsa, ALICE, _now(), max_bytes=100)


def test_scratch_home_removed_after_success_and_failure(pgp_keys: PgpKeys, tmp_path: Path) -> None:
    """Validation, accepted or refused after import, leaves no GNUPGHOME and no agent socket."""
    validate_openpgp_key(pgp_keys.alice_25519, ALICE, _now(), scratch_dir=tmp_path)
    with pytest.raises(KeyAddressMismatch):
        validate_openpgp_key(pgp_keys.bob, ALICE, _now(), scratch_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_gpg_home_is_private_while_in_use(tmp_path: Path) -> None:
    """The temporary GNUPGHOME is mode 0700 while gpg works in it, and gone afterwards."""
    with isolated_gpg("gpg", tmp_path) as gpg:
        home = Path(gpg.gnupghome)
        assert home.parent == tmp_path
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert not home.exists()


def test_user_gnupg_home_untouched(
    pgp_keys: PgpKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation never creates or reads the invoking user's ~/.gnupg."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GNUPGHOME", str(tmp_path / "gnupg"))
    validate_openpgp_key(pgp_keys.alice_25519, ALICE, _now())
    assert list(tmp_path.iterdir()) == []


def test_missing_gpg_is_a_configuration_error(pgp_keys: PgpKeys) -> None:
    """An unusable gpg binary is the operator's problem, not a bad key."""
    with pytest.raises(ConfigurationError):
        validate_openpgp_key(pgp_keys.alice_25519, ALICE, _now(), "/nonexistent/gpg")


def test_expiry_boundary_uses_injected_clock(pgp_keys: PgpKeys) -> None:
    """Just before the subkey's expiry the key is still accepted."""
    just_before = datetime(2098, 12, 31, tzinfo=UTC) + timedelta(hours=1)
    assert validate_openpgp_key(pgp_keys.expiring, ALICE, just_before).can_encrypt
