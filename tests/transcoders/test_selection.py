"""Choosing the transcoder and keys for an account: transcoder.transcoders.selection."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from tests.keys.certs import NOW
from tests.transcoders.smime_keys import identity
from transcoder.keys.errors import NoUsableKey
from transcoder.keys.model import KeyFormat, KeyStatus, KeyUsage, Policy, PolicyMode, StoredKey
from transcoder.transcoders import (
    SmimeTranscoder,
    TranscodeFailed,
    TranscoderRegistry,
    select_transcoder,
    usable_keys,
)

ALWAYS_SMIME = Policy(PolicyMode.ALWAYS, KeyFormat.SMIME, format_is_explicit=True)


def key(kind: str = "rsa2048", **changes: object) -> StoredKey:
    """A real S/MIME key with ``changes`` applied."""
    return dataclasses.replace(identity(kind).key, **changes)  # type: ignore[arg-type]


def test_policy_off_selects_nothing() -> None:
    """MODE OFF: no transcoder, the stored message is served."""
    registry = TranscoderRegistry([SmimeTranscoder()])
    assert select_transcoder(Policy(), [key()], registry, NOW) is None


def test_always_selects_the_transcoder_and_usable_keys() -> None:
    """MODE ALWAYS with an active key selects the S/MIME transcoder and that key."""
    smime = SmimeTranscoder()
    selection = select_transcoder(ALWAYS_SMIME, [key()], TranscoderRegistry([smime]), NOW)
    assert selection is not None
    assert selection.transcoder is smime and selection.keys == (key(),)
    assert selection.key_id == key().fingerprint
    assert selection.view_id == f"smime|{smime.settings_id}|{key().fingerprint}"


def test_unusable_keys_are_left_out_newest_first() -> None:
    """Retired, expired, sign-only and foreign keys are dropped; the newest active comes first."""
    older, newer = key("p256"), key("p384", activated_at=NOW + timedelta(minutes=1))
    keys = [
        older,
        key(status=KeyStatus.RETIRED),
        key("p521", not_after=NOW - timedelta(seconds=1)),
        key(usages=frozenset({KeyUsage.SIGN}), fingerprint="ff" * 32),
        key(format=KeyFormat.OPENPGP, fingerprint="ee" * 32),
        newer,
    ]
    assert usable_keys(keys, KeyFormat.SMIME, NOW) == (newer, older)
    selection = select_transcoder(ALWAYS_SMIME, keys, TranscoderRegistry([SmimeTranscoder()]), NOW)
    assert selection is not None and selection.keys == (newer, older)
    assert selection.key_id == ",".join(sorted((newer.fingerprint, older.fingerprint)))


@pytest.mark.parametrize(
    "policy",
    [Policy(PolicyMode.ALWAYS, None), ALWAYS_SMIME],
)
def test_always_without_usable_key_is_nokey(policy: Policy) -> None:
    """MODE ALWAYS without a usable key raises NO [XKEY-NOKEY], never selects nothing."""
    with pytest.raises(NoUsableKey) as caught:
        select_transcoder(
            policy, [key(status=KeyStatus.RETIRED)], TranscoderRegistry([SmimeTranscoder()]), NOW
        )
    assert caught.value.code == "XKEY-NOKEY"


def test_no_transcoder_for_the_format_fails_closed() -> None:
    """A usable key but no registered transcoder for its format: TRANSCODE-FAILED."""
    openpgp = Policy(PolicyMode.ALWAYS, KeyFormat.OPENPGP, format_is_explicit=True)
    pgp_key = key(format=KeyFormat.OPENPGP)
    with pytest.raises(TranscodeFailed):
        select_transcoder(openpgp, [pgp_key], TranscoderRegistry([SmimeTranscoder()]), NOW)
