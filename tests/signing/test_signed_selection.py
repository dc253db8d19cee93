"""FETCH's selection under SIGN (issue 16): which signer it carries, and failing closed.

select_for_account runs against a real SQLite keystore and real server key files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.keys.factories import ALICE, BOB, T0, key
from tests.signing.test_signers import files_with_signing_key
from transcoder.imap.transcoding import select_for_account
from transcoder.imap.view_epoch import server_view_settings
from transcoder.keys.keystore import KeyStore
from transcoder.keys.model import KeyFormat, PolicyMode
from transcoder.keys.view_epochs import ViewsChanged
from transcoder.signing.signers import ServerSigning
from transcoder.transcoders import TranscodeFailed
from transcoder.transcoders.registry import TranscoderRegistry
from transcoder.transcoders.smime import SmimeTranscoder


class UnsignedSmime(SmimeTranscoder):
    """A transcoder written before signed views: it does not declare ``signs``."""

    name = "smime-unsigned"
    signs = False


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    """ALICE with an S/MIME key under MODE ALWAYS."""
    keystore = KeyStore(tmp_path / "keys.db")
    keystore.put(ALICE, key("cert"), T0)
    keystore.set_policy(ALICE, T0, mode=PolicyMode.ALWAYS)
    return keystore


def test_sign_follows_the_account_then_the_server_default(store: KeyStore, tmp_path: Path) -> None:
    """No SIGN of its own: the server default decides; SIGN OFF wins over a default of ON;
    SIGN ON carries the current signing key."""
    files, fingerprint = files_with_signing_key(tmp_path)
    registry = TranscoderRegistry([SmimeTranscoder()])
    off, on = ServerSigning(files, False), ServerSigning(files, True)
    assert select_for_account(store, ALICE, T0, registry, None, off).signer is None
    assert select_for_account(store, ALICE, T0, registry, None, on).signer.fingerprint == (
        fingerprint
    )
    store.set_policy(ALICE, T0, sign=False)
    assert select_for_account(store, ALICE, T0, registry, None, on).signer is None
    store.set_policy(ALICE, T0, sign=True)
    chosen = select_for_account(store, ALICE, T0, registry, None, off)
    assert chosen.signer.format is KeyFormat.SMIME


def test_sign_fails_closed(store: KeyStore, tmp_path: Path) -> None:
    """SIGN ON with no signing at all, a transcoder that cannot sign, or no current signing
    key: TranscodeFailed (NO [TRANSCODE-FAILED]), never an unsigned view."""
    store.set_policy(ALICE, T0, sign=True)
    files, fingerprint = files_with_signing_key(tmp_path)
    signing = ServerSigning(files)
    with pytest.raises(TranscodeFailed):
        select_for_account(store, ALICE, T0, TranscoderRegistry([SmimeTranscoder()]), None, None)
    with pytest.raises(TranscodeFailed):
        select_for_account(store, ALICE, T0, TranscoderRegistry([UnsignedSmime()]), None, signing)
    files.retire(fingerprint, T0)
    with pytest.raises(TranscodeFailed):
        select_for_account(store, ALICE, T0, TranscoderRegistry([SmimeTranscoder()]), None, signing)


def test_a_rotation_seen_first_moves_the_epoch(store: KeyStore, tmp_path: Path) -> None:
    """A key rotated under a running server: the FETCH that sees it hands the new settings
    to the keystore, so a session at the old epoch of an account that signs is told its
    views changed; an account whose views are not signed keeps its epoch."""
    store.set_policy(ALICE, T0, sign=True)
    store.put(BOB, key("bob"), T0)
    store.set_policy(BOB, T0, mode=PolicyMode.ALWAYS)
    files, _ = files_with_signing_key(tmp_path)
    signing = ServerSigning(files)
    registry = TranscoderRegistry([SmimeTranscoder()])
    config = SimpleNamespace(registry=registry, obscure_subject=False, view_secret=None)
    signing.track(lambda: store.note_server_views(server_view_settings(config, signing), T0))
    store.note_server_views(server_view_settings(config, signing), T0)
    epoch, bobs = store.view_epoch(ALICE, T0), store.view_epoch(BOB, T0)
    assert select_for_account(store, ALICE, T0, registry, epoch, signing).signer is not None
    files.rotate(KeyFormat.SMIME, T0)
    with pytest.raises(ViewsChanged):
        select_for_account(store, ALICE, T0, registry, epoch, signing)
    moved = store.view_epoch(ALICE, T0)
    assert moved == epoch + 1
    new = select_for_account(store, ALICE, T0, registry, moved, signing).signer
    assert new is not None and new.fingerprint == signing.signer(KeyFormat.SMIME).fingerprint
    assert select_for_account(store, BOB, T0, registry, bobs, signing).signer is None
    assert store.view_epoch(BOB, T0) == bobs
