"""The per-account policy: defaults, transitions, XKEY-NOKEY, persistence."""

from __future__ import annotations

from typing import Any

import pytest

from tests.keys.conftest import OpenStore
from tests.keys.factories import ALICE, BOB, T0, key, later, snapshot
from transcoder.errors import BadCommand
from transcoder.keys.errors import NoUsableKey
from transcoder.keys.keystore import KeyStore
from transcoder.keys.model import KeyFormat, KeyUsage, Policy, PolicyMode
from transcoder.keys.policy import parse_format, parse_mode

ALWAYS, OFF = PolicyMode.ALWAYS, PolicyMode.OFF
SMIME, OPENPGP = KeyFormat.SMIME, KeyFormat.OPENPGP


def test_default_is_off_without_format(store: KeyStore) -> None:
    """A new account's policy is MODE OFF with no format."""
    assert store.get_policy(ALICE, T0) == Policy(OFF, None, format_is_explicit=False)


def test_default_format_follows_the_newest_key(store: KeyStore) -> None:
    """Without an explicit format, the newest usable key's format is the policy's."""
    store.put(ALICE, key("cert"), T0)
    assert store.get_policy(ALICE, T0).format is SMIME
    store.put(ALICE, key("pgp", OPENPGP), later(1))
    assert store.get_policy(ALICE, later(1)).format is OPENPGP


def test_always_without_key_is_nokey_and_changes_nothing(
    store: KeyStore, audit_log: list[dict[str, Any]]
) -> None:
    """MODE ALWAYS with no key: NO [XKEY-NOKEY], the policy stays OFF, the refusal is audited."""
    before = snapshot(store)
    with pytest.raises(NoUsableKey, match="no usable encryption key") as info:
        store.set_policy(ALICE, T0, mode=ALWAYS)
    assert info.value.code == "XKEY-NOKEY"
    assert snapshot(store) == before
    assert audit_log[-1]["event"] == "policy.refused"


def test_always_with_key(store: KeyStore, audit_log: list[dict[str, Any]]) -> None:
    """MODE ALWAYS with a usable key is accepted and audited with old and new values."""
    store.put(ALICE, key("cert"), T0)
    assert store.set_policy(ALICE, later(1), mode=ALWAYS) == Policy(ALWAYS, SMIME)
    assert store.get_policy(ALICE, later(2)) == Policy(ALWAYS, SMIME)
    record = audit_log[-1]
    assert (record["event"], record["mode"], record["previous_mode"]) == (
        "policy.changed",
        "ALWAYS",
        "OFF",
    )


def test_format_switch_needs_a_key_of_that_format_under_always(store: KeyStore) -> None:
    """Under ALWAYS, FORMAT OPENPGP without an OpenPGP key is refused and nothing changes."""
    store.put(ALICE, key("cert"), T0)
    store.set_policy(ALICE, T0, mode=ALWAYS)
    with pytest.raises(NoUsableKey, match="no usable OPENPGP encryption key"):
        store.set_policy(ALICE, later(1), format=OPENPGP)
    assert store.get_policy(ALICE, later(1)) == Policy(ALWAYS, SMIME)


def test_format_may_be_set_freely_while_off(store: KeyStore) -> None:
    """Under OFF a format can be chosen before its key is provisioned."""
    assert store.set_policy(ALICE, T0, format=OPENPGP) == Policy(OFF, OPENPGP, True)


def test_explicit_format_sticks(store: KeyStore) -> None:
    """An explicit FORMAT is kept when a newer key of the other format arrives."""
    store.put(ALICE, key("cert"), T0)
    store.put(ALICE, key("pgp", OPENPGP), T0)
    store.set_policy(ALICE, later(1), mode=ALWAYS, format=SMIME)
    store.put(ALICE, key("pgp-2", OPENPGP), later(2))
    assert store.get_policy(ALICE, later(3)) == Policy(ALWAYS, SMIME, True)


def test_mode_change_keeps_explicit_format(store: KeyStore) -> None:
    """Setting only the mode leaves an explicit format in place."""
    store.put(ALICE, key("pgp", OPENPGP), T0)
    store.set_policy(ALICE, T0, format=OPENPGP)
    store.set_policy(ALICE, later(1), mode=ALWAYS)
    store.set_policy(ALICE, later(2), mode=OFF)
    assert store.get_policy(ALICE, later(3)) == Policy(OFF, OPENPGP, True)


@pytest.mark.parametrize(
    "unusable",
    [
        key("signing", usages=frozenset({KeyUsage.SIGN})),
        key("expired", not_after=T0 - (later(1) - T0)),
    ],
    ids=["signing-only", "expired"],
)
def test_always_refused_with_only_unusable_keys(store: KeyStore, unusable: Any) -> None:
    """A signing-only or expired key does not satisfy MODE ALWAYS."""
    store.put(ALICE, unusable, T0 - (later(10) - T0))
    with pytest.raises(NoUsableKey):
        store.set_policy(ALICE, T0, mode=ALWAYS)


def test_retiring_the_last_key_keeps_always(store: KeyStore) -> None:
    """Retiring the only key leaves MODE ALWAYS in force (FETCH fails closed), no active key."""
    store.put(ALICE, key("cert"), T0)
    store.set_policy(ALICE, T0, mode=ALWAYS)
    store.retire(ALICE, key("cert").fingerprint, later(1))
    assert store.get_policy(ALICE, later(2)) == Policy(ALWAYS, None)
    assert store.active_key(ALICE, None, later(2)) is None


def test_policies_are_per_account(store: KeyStore) -> None:
    """Alice's policy change leaves Bob's default untouched."""
    store.put(ALICE, key("cert"), T0)
    store.set_policy(ALICE, T0, mode=ALWAYS)
    assert store.get_policy(BOB, T0) == Policy()


def test_policy_survives_reopening(open_store: OpenStore) -> None:
    """The policy is stored, not cached."""
    with open_store() as first:
        first.put(ALICE, key("cert"), T0)
        first.set_policy(ALICE, T0, mode=ALWAYS, format=SMIME)
    with open_store() as second:
        assert second.get_policy(ALICE, T0) == Policy(ALWAYS, SMIME, True)


def test_set_policy_needs_something_to_set(store: KeyStore) -> None:
    """Calling set_policy with neither mode nor format is a programming error."""
    with pytest.raises(ValueError, match="set_policy needs"):
        store.set_policy(ALICE, T0)


def test_policy_words() -> None:
    """MODE and FORMAT words parse case-insensitively; anything else is BAD."""
    assert (parse_mode("always"), parse_mode("OFF")) == (ALWAYS, OFF)
    assert (parse_format("smime"), parse_format("OpenPGP")) == (SMIME, OPENPGP)
    with pytest.raises(BadCommand):
        parse_mode("SOMETIMES")
    with pytest.raises(BadCommand):
        parse_format("PGP")
