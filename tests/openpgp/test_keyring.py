"""Keyring: one private home, one immutable keyring file per key version, following the keystore."""

from __future__ import annotations

import dataclasses
import io
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.openpgp.gpgkeys import PgpTestKeys, agent_running, subkeys
from transcoder.errors import ConfigurationError
from transcoder.keys.model import KeyStatus, KeyUsage, StoredKey
from transcoder.openpgp.errors import GpgFailed
from transcoder.openpgp.keyring import Keyring, unusable_reason


def mode(path: Path) -> int:
    """Permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


def now() -> datetime:
    """The current time (the test keys were made at the real time)."""
    return datetime.now(UTC)


def encrypt(keyring: Keyring, keys: list[StoredKey], data: bytes = b"hello\r\n") -> bytes:
    """Armored encryption of ``data`` to ``keys`` through the keyring."""
    out = io.BytesIO()
    keyring.encrypt_armored(io.BytesIO(data), out, keys, now())
    return out.getvalue()


def pkesk_key_ids(listing: str) -> list[str]:
    """Key IDs of the public-key encrypted session key packets in a --list-packets output."""
    return [
        line.rsplit("keyid ", 1)[1].strip().lower()
        for line in listing.splitlines()
        if line.startswith(":pubkey enc packet:")
    ]


def test_home_and_files_are_private(pgp: PgpTestKeys, tmp_path: Path) -> None:
    """The home and keys directory are 0700; a key file is 0600 and holds exactly the material."""
    keyring = Keyring(tmp_path / "data" / "gnupg")
    entry = keyring.sync_key(pgp.x25519)
    assert mode(keyring.home) == mode(keyring.keys_dir) == 0o700
    assert mode(entry.path) == 0o600
    assert entry.path.read_bytes() == pgp.x25519.material
    assert entry.recipient == subkeys(pgp.x25519)[0]


def test_loose_existing_home_is_tightened(tmp_path: Path) -> None:
    """An existing home with group/world access is set back to 0700."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    assert mode(Keyring(home).home) == 0o700


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_home_must_be_a_real_directory(tmp_path: Path, kind: str) -> None:
    """A file or a symlink where the home should be is a configuration error."""
    home = tmp_path / "gnupg"
    if kind == "file":
        home.write_bytes(b"")
    else:
        (tmp_path / "elsewhere").mkdir()
        home.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigurationError):
        Keyring(home)


def test_sync_is_idempotent(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """Syncing an unchanged key again neither rewrites nor adds a file."""
    first = keyring.sync_key(pgp.rsa)
    inode = first.path.stat().st_ino
    assert keyring.sync_key(pgp.rsa) == first
    assert first.path.stat().st_ino == inode
    assert list(keyring.keys_dir.iterdir()) == [first.path]


def test_replaced_key_is_replaced(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """A new version of a key (added subkey) replaces the old file; gpg uses the new subkey."""
    old = keyring.sync_key(pgp.x25519)
    armored = encrypt(keyring, [pgp.x25519_v2])
    assert not old.path.exists()
    assert keyring.fingerprints() == {pgp.x25519.fingerprint}
    new_subkey = subkeys(pgp.x25519_v2)[0]
    assert new_subkey not in subkeys(pgp.x25519)
    assert pgp.decrypt(armored).status("DECRYPTION_KEY")[0].lower() == new_subkey


def test_vanished_or_damaged_file_is_restored(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """A key file that was emptied (gpg recreates missing keyrings empty) is rewritten on sync."""
    entry = keyring.sync_key(pgp.x25519)
    entry.path.write_bytes(b"KBXf empty keybox")
    assert pgp.decrypt(encrypt(keyring, [pgp.x25519], b"again")).plaintext == b"again"
    assert entry.path.read_bytes() == pgp.x25519.material


def test_remove_key(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """remove_key deletes every version of the key and nothing else."""
    keyring.sync_key(pgp.rsa)
    keyring.sync_key(pgp.x25519)
    assert keyring.remove_key(pgp.x25519.fingerprint.upper()) == 1
    assert keyring.fingerprints() == {pgp.rsa.fingerprint}
    assert keyring.remove_key(pgp.x25519.fingerprint) == 0


def test_remove_key_refuses_non_fingerprints(keyring: Keyring) -> None:
    """remove_key takes only hex fingerprints: no glob or path gets near the directory."""
    with pytest.raises(ValueError):
        keyring.remove_key("*")


def test_prune_keeps_only_the_given_keys(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """prune deletes every keyring file but those of the keys passed."""
    keyring.sync_key(pgp.rsa)
    keyring.sync_key(pgp.x25519)
    assert keyring.prune([pgp.rsa]) == 1
    assert keyring.fingerprints() == {pgp.rsa.fingerprint}


def _unusable(key: StoredKey, how: str) -> StoredKey:
    if how == "retired":
        return dataclasses.replace(key, status=KeyStatus.RETIRED, retired_at=now())
    if how == "expired-status":
        return dataclasses.replace(key, status=KeyStatus.EXPIRED)
    if how == "past-not-after":
        return dataclasses.replace(key, not_after=now() - timedelta(seconds=1))
    return dataclasses.replace(key, usages=frozenset({KeyUsage.SIGN}))


@pytest.mark.parametrize("how", ["retired", "expired-status", "past-not-after", "sign-only"])
def test_unusable_key_is_never_used(pgp: PgpTestKeys, keyring: Keyring, how: str) -> None:
    """Retired, expired or sign-only keys: GpgFailed, no output, no keyring file written."""
    key = _unusable(pgp.x25519, how)
    assert unusable_reason(key, now()) is not None
    out = io.BytesIO()
    with pytest.raises(GpgFailed):
        keyring.encrypt_armored(io.BytesIO(b"secret"), out, [pgp.rsa, key], now())
    assert out.getvalue() == b""
    assert keyring.fingerprints() == frozenset()


def test_only_the_named_keys_are_encrypted_to(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """With two keys in the home, a message for one has exactly one recipient: that subkey."""
    keyring.sync_key(pgp.rsa)
    armored = encrypt(keyring, [pgp.x25519])
    assert pkesk_key_ids(pgp.packets(armored)) == [subkeys(pgp.x25519)[0][-16:]]


def test_several_keys(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """Two active keys: one session-key packet for each key's encryption subkey."""
    armored = encrypt(keyring, [pgp.rsa, pgp.x25519], b"both")
    wanted = {subkeys(pgp.rsa)[0][-16:], subkeys(pgp.x25519)[0][-16:]}
    assert set(pkesk_key_ids(pgp.packets(armored))) == wanted
    assert pgp.decrypt(armored).plaintext == b"both"


def test_encryption_leaves_no_agent_and_writes_nothing(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """After encrypting, the home holds only our key files: no agent, socket, trustdb or seed."""
    for key in (pgp.rsa, pgp.x25519):
        encrypt(keyring, [key])
    assert sorted(p.name for p in keyring.home.iterdir()) == ["keys"]
    assert all(p.suffix == ".gpg" for p in keyring.keys_dir.iterdir())
    assert not agent_running(keyring.home)


def test_check_gpg(keyring: Keyring, tmp_path: Path) -> None:
    """check_gpg passes with the real gpg and raises GpgFailed for a missing binary."""
    keyring.check_gpg()
    with pytest.raises(GpgFailed):
        Keyring(keyring.home, gpg_binary=str(tmp_path / "missing")).check_gpg()


def test_syncs_do_not_disturb_encryptions(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """While one thread keeps adding and removing a key, encryptions to another all succeed."""
    stop = threading.Event()

    def churn() -> int:
        rounds = 0
        while not stop.is_set():
            keyring.sync_key(pgp.rsa)
            keyring.remove_key(pgp.rsa.fingerprint)
            rounds += 1
        return rounds

    with ThreadPoolExecutor(3) as pool:
        churner = pool.submit(churn)
        try:
            outputs = list(pool.map(lambda i: encrypt(keyring, [pgp.x25519], b"%d" % i), range(12)))
        finally:
            stop.set()
        assert churner.result() > 0
    assert [pgp.decrypt(a).plaintext for a in outputs] == [b"%d" % i for i in range(12)]
