"""XKEY PUT says what it superseded: the retired key's ``* XKEY (... STATUS RETIRED)`` line.

A user who uploads a test certificate must learn that it retired their real
one (issue 13): the stored key comes first, then one line per key it took
the place of.  Keys of another format or role, and a refresh of the key in
force, supersede nothing.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from tests.imap.test_xkey import audit_log, keyed_session, keystore, listings, put
from tests.keyfactory import PgpKeys
from tests.keys.certs import ALICE, NOW, der, key_usage, make_cert
from transcoder.client import KeyInfo
from transcoder.keys.keystore import KeyStore
from transcoder.keys.provisioning import provision_key

__all__ = ["audit_log", "keystore"]  # fixtures, used by name


def test_put_reports_the_key_it_superseded(tmp_path: Path, keystore: KeyStore) -> None:
    """The second certificate's PUT answers its own line, then the first one's, RETIRED."""
    alice = keyed_session(tmp_path, keystore)
    first = der(make_cert(ec.generate_private_key(ec.SECP256R1())))
    second = der(make_cert(ec.generate_private_key(ec.SECP384R1())))
    untagged, tagged = put(alice, first)
    assert tagged == b"p OK XKEY PUT completed"
    (stored_first,) = listings(untagged)
    untagged, tagged = put(alice, second)
    assert tagged == b"p OK XKEY PUT completed"
    stored, superseded = listings(untagged)
    assert isinstance(stored, KeyInfo) and isinstance(superseded, KeyInfo)
    assert isinstance(stored_first, KeyInfo)
    assert (stored.status, superseded.status) == ("ACTIVE", "RETIRED")
    assert superseded.fingerprint == stored_first.fingerprint != stored.fingerprint
    assert untagged[1].endswith(b" STATUS RETIRED)")


def test_refresh_other_format_and_role_supersede_nothing(
    tmp_path: Path, keystore: KeyStore, pgp_keys: PgpKeys
) -> None:
    """Storing the same certificate again, an OpenPGP key, or a signing-only certificate
    beside an encryption one: one line each, the stored key's."""
    alice = keyed_session(tmp_path, keystore)
    p256 = ec.generate_private_key(ec.SECP256R1())
    encrypting = der(make_cert(p256))
    signing = der(make_cert(p256, usage=key_usage(digital_signature=True)))
    for material in (encrypting, encrypting, pgp_keys.alice_25519, signing):
        untagged, tagged = put(alice, material)
        assert tagged == b"p OK XKEY PUT completed"
        assert [k.status for k in listings(untagged)] == ["ACTIVE"]  # type: ignore[union-attr]


def test_provision_key_reports_superseded(keystore: KeyStore) -> None:
    """provision_key (XKEY PUT and transcoder-admin key import) returns the retired key."""
    first = der(make_cert(ec.generate_private_key(ec.SECP256R1())))
    second = der(make_cert(ec.generate_private_key(ec.SECP256R1())))
    done = provision_key(keystore, ALICE, first, NOW)
    assert done.superseded == ()
    again = provision_key(keystore, ALICE, second, NOW)
    assert [k.fingerprint for k in again.superseded] == [done.stored.fingerprint]
    assert again.superseded[0].status.value == "RETIRED"
