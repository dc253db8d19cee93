"""The keystore on a real SQLite file and a real PostgreSQL: storing, superseding, retiring,
purging, auditing (``store`` is parametrized over both engines, tests/keys/conftest.py)."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from zope.interface.verify import verifyObject

from tests.keys import certs
from tests.keys.conftest import OpenStore
from tests.keys.factories import (
    ALICE,
    BOB,
    T0,
    concurrent_puts,
    key,
    later,
    snapshot,
    statuses,
)
from transcoder.errors import ConfigurationError
from transcoder.keys.errors import KeyStoreError, NoUsableKey
from transcoder.keys.interfaces import IKeyStore
from transcoder.keys.keystore import KeyStore
from transcoder.keys.keystore_schema import SCHEMA_VERSION, migrate
from transcoder.keys.model import KeyFormat, KeyStatus, KeyUsage
from transcoder.keys.smime import validate_certificate


def test_provides_interface(store: KeyStore) -> None:
    """KeyStore provides IKeyStore."""
    assert verifyObject(IKeyStore, store)


def test_put_round_trips_every_field(store: KeyStore) -> None:
    """What is stored comes back field for field, with status and timestamps."""
    for key_format in KeyFormat:
        original = key(f"k-{key_format.value}", key_format)
        stored = store.put(ALICE, original, T0)
        (listed,) = [k for k in store.list_keys(ALICE, T0) if k.fingerprint == original.fingerprint]
        assert listed == stored
        for name in ("format", "fingerprint", "addresses", "not_after", "usages", "material"):
            assert getattr(listed, name) == getattr(original, name)
        assert (listed.key_algorithm, listed.details) == (original.key_algorithm, original.details)
        assert (listed.account, listed.status, listed.retired_at) == (ALICE, KeyStatus.ACTIVE, None)
        assert listed.created_at == listed.activated_at == T0


def test_real_certificate_survives_reopening(open_store: OpenStore) -> None:
    """A validated certificate stored and read back after reopening is unchanged."""
    cert = certs.make_cert(ec.generate_private_key(ec.SECP256R1()))
    validated = validate_certificate(certs.der(cert), ALICE, certs.NOW)
    with open_store() as first:
        first.put(ALICE, validated, certs.NOW)
    with open_store() as second:
        (again,) = second.list_keys(ALICE, certs.NOW)
    assert (again.material, again.details, again.not_after) == (
        validated.material,
        validated.details,
        validated.not_after,
    )


def test_newer_key_supersedes_older_of_same_format(store: KeyStore) -> None:
    """A second S/MIME key retires the first; the newest is the active key."""
    first, second = key("first"), key("second")
    store.put(ALICE, first, T0)
    store.put(ALICE, second, later(1))
    older, newer = store.list_keys(ALICE, later(2))
    assert (older.status, older.retired_at) == (KeyStatus.RETIRED, later(1))
    assert newer.status is KeyStatus.ACTIVE
    active = store.active_key(ALICE, KeyFormat.SMIME, later(2))
    assert active is not None and active.fingerprint == second.fingerprint


def test_other_format_not_superseded(store: KeyStore) -> None:
    """An OpenPGP key and an S/MIME certificate are both active."""
    store.put(ALICE, key("cert"), T0)
    store.put(ALICE, key("pgp", KeyFormat.OPENPGP), later(1))
    assert set(statuses(store, ALICE).values()) == {"ACTIVE"}


def test_dual_key_pair_both_active(store: KeyStore) -> None:
    """A signing-only certificate does not retire the encryption one, nor vice versa."""
    store.put(ALICE, key("encryption"), T0)
    store.put(ALICE, key("signing", usages=frozenset({KeyUsage.SIGN})), later(1))
    store.put(ALICE, key("signing-2", usages=frozenset({KeyUsage.SIGN})), later(2))
    assert list(statuses(store, ALICE).values()) == ["ACTIVE", "RETIRED", "ACTIVE"]
    active = store.active_key(ALICE, KeyFormat.SMIME, later(3))
    assert active is not None and active.fingerprint == key("encryption").fingerprint


def test_signing_only_key_is_never_the_active_key(store: KeyStore) -> None:
    """active_key never returns a SIGN-only key."""
    store.put(ALICE, key("signing", usages=frozenset({KeyUsage.SIGN})), T0)
    assert store.active_key(ALICE, KeyFormat.SMIME, T0) is None
    assert store.active_key(ALICE, None, T0) is None


def test_same_fingerprint_again_reactivates_and_refreshes(store: KeyStore) -> None:
    """Re-storing a superseded key makes it active again, keeping created_at, new material."""
    first, second = key("first"), key("second")
    store.put(ALICE, first, T0)
    store.put(ALICE, second, later(1))
    refreshed = type(first)(**{**first.__dict__, "material": b"renewed"})
    again = store.put(ALICE, refreshed, later(2))
    assert (again.status, again.created_at, again.activated_at) == (KeyStatus.ACTIVE, T0, later(2))
    assert (again.material, again.retired_at) == (b"renewed", None)
    assert list(statuses(store, ALICE, later(2)).values()) == ["ACTIVE", "RETIRED"]


def test_retire(store: KeyStore, audit_log: list[dict[str, Any]]) -> None:
    """DELETE retires: kept in history with retired_at, no longer the active key."""
    store.put(ALICE, key("k"), T0)
    retired = store.retire(ALICE, key("k").fingerprint, later(5))
    assert (retired.status, retired.retired_at) == (KeyStatus.RETIRED, later(5))
    assert store.active_key(ALICE, KeyFormat.SMIME, later(6)) is None
    assert len(store.list_keys(ALICE, later(6))) == 1
    assert audit_log[-1]["event"] == "key.retired"


def test_retire_again_changes_nothing(store: KeyStore) -> None:
    """Retiring a retired key keeps its first retirement time."""
    store.put(ALICE, key("k"), T0)
    store.retire(ALICE, key("k").fingerprint, later(1))
    assert store.retire(ALICE, key("k").fingerprint, later(2)).retired_at == later(1)


def test_retire_accepts_fingerprint_spelling_variants(store: KeyStore) -> None:
    """Upper case and colon-separated fingerprints name the same key."""
    store.put(ALICE, key("k"), T0)
    fpr = key("k").fingerprint.upper()
    spaced = ":".join(fpr[i : i + 2] for i in range(0, len(fpr), 2))
    assert store.retire(ALICE, spaced, later(1)).status is KeyStatus.RETIRED


def test_retire_unknown_is_nokey_and_changes_nothing(
    store: KeyStore, audit_log: list[dict[str, Any]]
) -> None:
    """DELETE of an unknown fingerprint is NO [XKEY-NOKEY], audited, and nothing changes."""
    store.put(ALICE, key("k"), T0)
    before = snapshot(store)
    with pytest.raises(NoUsableKey) as info:
        store.retire(ALICE, "00" * 32, later(1))
    assert info.value.code == "XKEY-NOKEY"
    assert snapshot(store) == before
    assert audit_log[-1]["event"] == "key.refused"


def test_accounts_cannot_touch_each_others_keys(store: KeyStore) -> None:
    """Bob neither sees nor retires Alice's key."""
    store.put(ALICE, key("alice"), T0)
    assert store.list_keys(BOB, T0) == []
    assert store.get(BOB, key("alice").fingerprint, T0) is None
    with pytest.raises(NoUsableKey):
        store.retire(BOB, key("alice").fingerprint, T0)
    assert statuses(store, ALICE) == {key("alice").fingerprint[:8]: "ACTIVE"}


def test_purge_erases_for_every_account(store: KeyStore, audit_log: list[dict[str, Any]]) -> None:
    """purge removes the key's rows everywhere and reports how many."""
    shared = key("shared")
    store.put(ALICE, shared, T0)
    store.put(BOB, shared, T0)
    store.put(ALICE, key("other", KeyFormat.OPENPGP), T0)
    assert store.purge(shared.fingerprint.upper(), later(1)) == 2
    assert [k.fingerprint for k in store.list_keys(None, T0)] == [key("other").fingerprint[:40]]
    assert [r["event"] for r in audit_log[-2:]] == ["key.purged", "key.purged"]


def test_purge_unknown_is_nokey(store: KeyStore) -> None:
    """Purging an unknown fingerprint is refused with XKEY-NOKEY."""
    with pytest.raises(NoUsableKey):
        store.purge("ab" * 32, T0)


def test_expired_is_computed_at_read_time(store: KeyStore) -> None:
    """An ACTIVE key is reported EXPIRED after not_after and is then never the active key."""
    store.put(ALICE, key("k", not_after=later(10)), T0)
    assert statuses(store, ALICE, later(10)) == {key("k").fingerprint[:8]: "ACTIVE"}
    assert store.active_key(ALICE, KeyFormat.SMIME, later(10)) is not None
    assert statuses(store, ALICE, later(11)) == {key("k").fingerprint[:8]: "EXPIRED"}
    assert store.active_key(ALICE, KeyFormat.SMIME, later(11)) is None


def test_retired_expired_key_reported_retired(store: KeyStore) -> None:
    """A retired key stays RETIRED after its expiry (the user's action is what matters)."""
    store.put(ALICE, key("k", not_after=later(10)), T0)
    store.retire(ALICE, key("k").fingerprint, later(1))
    assert list(statuses(store, ALICE, later(20)).values()) == ["RETIRED"]


def test_active_key_any_format_is_the_newest(store: KeyStore) -> None:
    """With format None the most recently activated usable key wins."""
    store.put(ALICE, key("pgp", KeyFormat.OPENPGP), T0)
    store.put(ALICE, key("cert"), later(1))
    newest = store.active_key(ALICE, None, later(2))
    assert newest is not None and newest.format is KeyFormat.SMIME


def test_survives_reopening_with_schema_version(tmp_path: Path) -> None:
    """Keys persist across reopening; the file is WAL, private, at the current schema."""
    path = tmp_path / "keys.db"
    with KeyStore(path) as first:
        first.put(ALICE, key("k"), T0)
        assert first.schema_version == SCHEMA_VERSION
    with KeyStore(path) as second:
        assert [k.fingerprint for k in second.list_keys(ALICE, T0)] == [key("k").fingerprint]
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_newer_schema_refused(tmp_path: Path) -> None:
    """A database from a newer version of the software is not touched."""
    path = tmp_path / "keys.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(ConfigurationError, match="newer than this software"):
        KeyStore(path)


def test_migrations_apply_only_what_is_missing(tmp_path: Path) -> None:
    """A v1 database gets only migration 2; the data from v1 survives."""
    raw = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    v1 = [["CREATE TABLE t (a)"]]
    v2 = [*v1, ["ALTER TABLE t ADD COLUMN b", "INSERT INTO t VALUES (1, 2)"]]
    assert migrate(raw, v1) == 1
    raw.execute("INSERT INTO t VALUES (0)")
    assert migrate(raw, v2) == 2
    assert raw.execute("SELECT a, b FROM t ORDER BY a").fetchall() == [(0, None), (1, 2)]


def test_failed_migration_changes_nothing(tmp_path: Path) -> None:
    """A migration that fails half-way leaves neither its tables nor a version bump."""
    raw = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    with pytest.raises(sqlite3.OperationalError):
        migrate(raw, [["CREATE TABLE t (a)", "THIS IS NOT SQL"]])
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 0
    assert raw.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_audit_records_carry_account_fingerprint_time_and_origin(
    store: KeyStore, audit_log: list[dict[str, Any]]
) -> None:
    """Storing audits key.stored and the superseded key's key.retired, with the origin."""
    origin = {"peer": "tcp:192.0.2.1:5000", "event": "ignored"}
    store.put(ALICE, key("a"), T0, origin)
    store.put(ALICE, key("b"), later(1), origin)
    stored, retired = audit_log[-2:]
    assert stored["event"] == "key.stored" and retired["event"] == "key.retired"
    assert stored["fingerprint"] == key("b").fingerprint
    assert (stored["account"], stored["peer"], stored["time"]) == (
        ALICE,
        "tcp:192.0.2.1:5000",
        "2026-03-01T12:01:00.000000Z",
    )
    assert (retired["fingerprint"], retired["reason"]) == (key("a").fingerprint, "superseded")


def test_recorded_events_reach_the_audit_hook(
    store: KeyStore, audit_log: list[dict[str, Any]]
) -> None:
    """record_event (a decrypted APPEND) is audited like a key operation: event, account,
    time, origin and facts; it changes nothing else in the keystore."""
    facts = {"format": "smime", "fingerprint": "ab" * 32, "size": 1234}
    store.record_event("append-decrypted", ALICE, T0, facts, {"peer": "tcp:192.0.2.1:5000"})
    assert audit_log[-1] == {
        "event": "append-decrypted",
        "account": ALICE,
        "time": "2026-03-01T12:00:00.000000Z",
        "peer": "tcp:192.0.2.1:5000",
        **facts,
    }
    assert store.list_keys(None, T0) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record_event("append-decrypted", ALICE, T0.replace(tzinfo=None), facts)


def test_failing_audit_rolls_the_operation_back(open_store: OpenStore) -> None:
    """If the audit record cannot be written, the key is not stored either."""

    def broken(record: dict[str, Any]) -> None:
        raise OSError("audit log unwritable")

    store = open_store(audit=broken)
    with pytest.raises(OSError, match="audit log unwritable"):
        store.put(ALICE, key("k"), T0)
    assert store.list_keys(None, T0) == []


def test_naive_time_is_a_programming_error(store: KeyStore) -> None:
    """A naive ``now`` raises ValueError and stores nothing."""
    with pytest.raises(ValueError, match="timezone-aware"):
        store.put(ALICE, key("k"), T0.replace(tzinfo=None))
    assert store.list_keys(None, T0) == []


def test_concurrent_puts_keep_one_active_key(store: KeyStore) -> None:
    """Puts from several threads all land, and exactly one key stays ACTIVE."""
    assert concurrent_puts([store], puts=10) == []
    keys = store.list_keys(ALICE, later(100))
    assert len(keys) == 40
    assert [k.status for k in keys].count(KeyStatus.ACTIVE) == 1


def test_second_process_sees_writes(open_store: OpenStore) -> None:
    """Two stores on one database (server and transcoder-admin) see each other's writes."""
    server, admin = open_store(), open_store()
    server.put(ALICE, key("k"), T0)
    assert admin.purge(key("k").fingerprint, later(1)) == 1
    assert server.list_keys(ALICE, T0) == []


def test_unopenable_path_is_a_keystore_error(tmp_path: Path) -> None:
    """A keystore path in a missing directory fails with KeyStoreError, not a traceback."""
    with pytest.raises(KeyStoreError, match="cannot open keystore"):
        KeyStore(tmp_path / "missing" / "keys.db")


def test_not_a_database_is_a_keystore_error(tmp_path: Path) -> None:
    """A keystore path holding something else fails with KeyStoreError and is left as it was."""
    path = tmp_path / "keys.db"
    path.write_bytes(b"this is not an SQLite database, just text" * 100)
    with pytest.raises(KeyStoreError, match="cannot open keystore"):
        KeyStore(path)
    assert path.read_bytes().startswith(b"this is not an SQLite database")
