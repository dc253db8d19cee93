"""The SIGN part of the policy (issue 16), on SQLite and on a real PostgreSQL: stored,
kept across reopening, audited, counted in the view epoch; and the server settings."""

from __future__ import annotations

from typing import Any

import pytest

from tests.keys.conftest import OpenStore
from tests.keys.factories import ALICE, BOB, T0, key, later
from transcoder.errors import BadCommand
from transcoder.keys.keystore import KeyStore
from transcoder.keys.model import KeyFormat, Policy, PolicyMode
from transcoder.keys.policy import parse_sign

ALWAYS, OFF = PolicyMode.ALWAYS, PolicyMode.OFF
SMIME = KeyFormat.SMIME


def test_sign_is_unset_until_set_and_survives_reopening(open_store: OpenStore) -> None:
    """A new account follows the server default (sign None); SIGN ON is stored, not cached,
    and setting MODE later leaves it alone."""
    with open_store() as first:
        assert first.get_policy(ALICE, T0).sign is None
        first.put(ALICE, key("cert"), T0)
        assert first.set_policy(ALICE, T0, sign=True) == Policy(OFF, SMIME, False, sign=True)
        first.set_policy(ALICE, later(1), mode=ALWAYS)
    with open_store() as second:
        assert second.get_policy(ALICE, later(2)) == Policy(ALWAYS, SMIME, False, sign=True)
        assert second.get_policy(BOB, later(2)).sign is None


def test_signs_resolves_the_server_default() -> None:
    """An explicit SIGN wins over the server's default; None takes the default."""
    assert Policy(sign=None).signs(True) and not Policy(sign=None).signs(False)
    assert Policy(sign=True).signs(False) and not Policy(sign=False).signs(True)


def test_sign_change_is_audited(store: KeyStore, audit_log: list[dict[str, Any]]) -> None:
    """policy.changed carries the new and previous SIGN."""
    store.set_policy(ALICE, T0, sign=True)
    store.set_policy(ALICE, later(1), sign=False)
    record = audit_log[-1]
    assert (record["event"], record["sign"], record["previous_sign"]) == (
        "policy.changed",
        "OFF",
        "ON",
    )


def test_sign_change_moves_the_epoch_only_under_always(store: KeyStore) -> None:
    """Under MODE ALWAYS, SIGN ON then OFF each move the view epoch (the views change);
    setting the SIGN it already has, or SIGN under MODE OFF, moves nothing."""
    store.put(ALICE, key("cert"), T0)
    store.set_policy(ALICE, T0, sign=True)
    assert store.view_epoch(ALICE, T0) == 0  # MODE OFF: the stored messages are served
    store.set_policy(ALICE, later(1), mode=ALWAYS)
    first = store.view_epoch(ALICE, later(1))
    store.set_policy(ALICE, later(2), sign=True)
    assert store.view_epoch(ALICE, later(2)) == first
    store.set_policy(ALICE, later(3), sign=False)
    assert store.view_epoch(ALICE, later(3)) == first + 1
    store.set_policy(ALICE, later(4), sign=True)
    assert store.view_epoch(ALICE, later(4)) == first + 2


def test_view_inputs_carry_the_sign(store: KeyStore) -> None:
    """The policy read with the epoch (one transaction, every FETCH) has the SIGN."""
    store.put(ALICE, key("cert"), T0)
    store.set_policy(ALICE, T0, mode=ALWAYS, sign=True)
    inputs = store.view_inputs(ALICE, later(1))
    assert inputs.policy.sign is True


def test_server_settings_are_recorded(store: KeyStore) -> None:
    """record_server_setting keeps the latest value and says whether it changed."""
    assert store.server_setting("sign-views") is None
    assert store.record_server_setting("sign-views", "ON", T0)
    assert not store.record_server_setting("sign-views", "ON", later(1))
    assert store.record_server_setting("sign-views", "OFF", later(2))
    assert store.server_setting("sign-views") == "OFF"


def test_sign_words() -> None:
    """SIGN takes ON or OFF in any case; anything else is BAD."""
    assert parse_sign("on") and not parse_sign("OFF")
    with pytest.raises(BadCommand):
        parse_sign("yes")
