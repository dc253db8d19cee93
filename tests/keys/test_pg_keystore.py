"""What only the PostgreSQL keystore does: audit table, NOTIFY, writers across processes, outages.

The behaviour both engines share is pinned by the rest of tests/keys, run on
both (tests/keys/conftest.py).  Everything here runs against a real
PostgreSQL (:mod:`tests.postgres`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.keys.factories import ALICE, BOB, T0, concurrent_puts, key, later, wait_for
from tests.postgres import PostgresServer
from transcoder.errors import ConfigurationError
from transcoder.keys.errors import KeyStoreError, NoUsableKey
from transcoder.keys.keystore import KeyStoreUnavailable, is_postgresql
from transcoder.keys.keystore_schema import SCHEMA_VERSION
from transcoder.keys.model import KeyStatus, PolicyMode
from transcoder.keys.pg_keystore import CHANNEL, ChangeListener, PgKeyStore, pg_sql, safe_dsn


@pytest.fixture
def dsn(postgresql: PostgresServer) -> str:
    """A fresh database on the session's server."""
    return postgresql.new_database()


@pytest.fixture
def pg(dsn: str) -> Iterator[PgKeyStore]:
    """A PostgreSQL keystore in a fresh database."""
    with PgKeyStore(dsn) as store:
        yield store


def test_statements_are_rewritten_for_psycopg() -> None:
    """``?`` and ``:name`` become psycopg parameters; quoted text keeps them; ``%`` is doubled."""
    assert pg_sql("SELECT a FROM t WHERE b = ? AND c = :c") == (
        "SELECT a FROM t WHERE b = %s AND c = %(c)s"
    )
    assert pg_sql("SELECT 'it''s ? :x 100%' WHERE u LIKE '%E%'") == (
        "SELECT 'it''s ? :x 100%%' WHERE u LIKE '%%E%%'"
    )


def test_spec_and_dsn_helpers() -> None:
    """Only postgresql:// URIs name a shared keystore; the password never reaches a message."""
    assert is_postgresql("postgresql://u@h/db") and is_postgresql("POSTGRES://h/db")
    assert not is_postgresql("/var/lib/keys.db") and not is_postgresql(None)
    assert "secret" not in safe_dsn("postgresql://u:secret@h:5/db")


def test_schema_version_is_recorded_and_newer_refused(dsn: str) -> None:
    """The schema_version row says the version; a newer one is left alone."""
    with PgKeyStore(dsn) as store:
        assert store.schema_version == SCHEMA_VERSION
    with psycopg.connect(dsn, autocommit=True) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        raw.execute("UPDATE schema_version SET version = version + 1")
    with pytest.raises(ConfigurationError, match="newer than this software"):
        PgKeyStore(dsn)


def test_fronts_starting_together_migrate_once(dsn: str) -> None:
    """Four keystores opened at once on an empty database: one migration, all usable."""
    stores: list[PgKeyStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(PgKeyStore(dsn))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == [] and len(stores) == 4
        stores[0].put(ALICE, key("k"), T0)
        assert [k.fingerprint for k in stores[3].list_keys(ALICE, T0)] == [key("k").fingerprint]
    finally:
        for store in stores:
            store.close()


def test_audit_rows_are_written_with_the_change(pg: PgKeyStore) -> None:
    """Each record is a row of the audit table, origin included, in the change's order."""
    pg.put(ALICE, key("a"), T0, {"peer": "tcp:192.0.2.1:5000", "via": "imap"})
    pg.put(ALICE, key("b"), later(1))
    events = [(r["event"], r.get("fingerprint")) for r in pg.audit_records(ALICE)]
    assert events == [
        ("key.stored", key("a").fingerprint),
        ("key.stored", key("b").fingerprint),
        ("key.retired", key("a").fingerprint),
    ]
    assert pg.audit_records(ALICE)[0]["peer"] == "tcp:192.0.2.1:5000"
    assert pg.audit_records(BOB) == []


def test_refusals_are_audited_though_their_transaction_is_undone(pg: PgKeyStore) -> None:
    """MODE ALWAYS without a key: nothing changes, but the refusal is in the audit table."""
    with pytest.raises(NoUsableKey):
        pg.set_policy(ALICE, T0, mode=PolicyMode.ALWAYS)
    assert pg.get_policy(ALICE, T0).mode is PolicyMode.OFF
    assert [r["event"] for r in pg.audit_records(ALICE)] == ["policy.refused"]
    pg.record_refusal(ALICE, NoUsableKey("bad key"), T0, fingerprint="ab")
    assert [r["event"] for r in pg.audit_records(ALICE)][-1] == "key.refused"


def test_failing_hook_leaves_no_row_and_no_change(dsn: str) -> None:
    """An audit hook failing undoes the change and its audit rows together."""

    def broken(record: dict[str, Any]) -> None:
        raise OSError("log unwritable")

    with PgKeyStore(dsn, audit=broken) as store, pytest.raises(OSError):
        store.put(ALICE, key("k"), T0)
    with PgKeyStore(dsn) as store:
        assert store.list_keys(None, T0) == [] and store.audit_records() == []


def test_recorded_events_are_rows_of_the_audit_table(dsn: str, pg: PgKeyStore) -> None:
    """A decrypted APPEND's record (record_event) is a row every front's admin sees, and
    notifies no front (no view changed)."""
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        pg.record_event("append-decrypted", ALICE, T0, {"size": 7}, {"via": "imap"})
        heard = [n.payload for n in listener.notifies(timeout=0.5)]
    assert heard == []
    with PgKeyStore(dsn) as other:
        (row,) = other.audit_records(ALICE)
    assert (row["event"], row["size"], row["via"]) == ("append-decrypted", 7, "imap")


def test_every_committed_change_is_notified_with_its_account(dsn: str, pg: PgKeyStore) -> None:
    """NOTIFY at commit, payload the account; refusals notify nothing."""
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        pg.put(ALICE, key("k"), T0)
        pg.set_policy(ALICE, T0, mode=PolicyMode.ALWAYS)
        with pytest.raises(NoUsableKey):
            pg.set_policy(BOB, T0, mode=PolicyMode.ALWAYS)
        pg.purge(key("k").fingerprint, later(1))
        heard = [n.payload for n in listener.notifies(timeout=1.0)]
    assert heard == [ALICE, ALICE, ALICE]


def test_writers_of_two_processes_take_turns(dsn: str) -> None:
    """Two keystores (two fronts) storing keys at once: one ACTIVE key, every put landed."""
    fronts = [PgKeyStore(dsn), PgKeyStore(dsn)]
    errors = concurrent_puts(fronts, puts=8)
    try:
        assert errors == []
        keys = fronts[0].list_keys(ALICE, later(100))
        assert len(keys) == 32
        assert [k.status for k in keys].count(KeyStatus.ACTIVE) == 1
    finally:
        for front in fronts:
            front.close()


@pytest.fixture
def outage_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, to stop and start again."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


def test_outage_fails_unavailable_then_recovers(outage_server: PostgresServer) -> None:
    """PostgreSQL down: every operation raises KeyStoreUnavailable (UNAVAILABLE); back: works."""
    dsn = outage_server.new_database()
    with PgKeyStore(dsn, timeout=1.0) as store:
        store.put(ALICE, key("k"), T0)
        store.set_policy(ALICE, T0, mode=PolicyMode.ALWAYS)
        outage_server.stop()
        for read in (
            lambda: store.get_policy(ALICE, T0),
            lambda: store.view_inputs(ALICE, T0),
            lambda: store.put(ALICE, key("k2"), T0),
        ):
            with pytest.raises(KeyStoreUnavailable) as caught:
                read()
            assert caught.value.code == "UNAVAILABLE"
        outage_server.start()
        wait_for(lambda: _reads(store))
        assert store.get_policy(ALICE, T0).mode is PolicyMode.ALWAYS


def _reads(store: PgKeyStore) -> bool:
    try:
        store.get_policy(ALICE, T0)
    except KeyStoreUnavailable:
        return False
    return True


def test_unreachable_at_start_is_a_keystore_error(outage_server: PostgresServer) -> None:
    """A front does not start without its keystore: KeyStoreError naming it, no password."""
    dsn = outage_server.new_database().replace("postgres@", "postgres:hunter2@")
    outage_server.stop()
    with pytest.raises(KeyStoreError, match="cannot open keystore") as caught:
        PgKeyStore(dsn, timeout=1.0)
    assert "hunter2" not in str(caught.value)


def test_listener_hears_changes_and_outages(outage_server: PostgresServer) -> None:
    """The listener reports each change's account, its connection lost, and found again."""
    dsn = outage_server.new_database()
    heard: list[Any] = []
    listener = ChangeListener(dsn, heard.append, lambda up: heard.append(up), retry=0.2)
    listener.start()
    try:
        wait_for(lambda: heard == [True])
        with PgKeyStore(dsn) as store:
            store.put(ALICE, key("k"), T0)
            store.put(BOB, key("b"), T0)
        wait_for(lambda: heard == [True, ALICE, BOB])
        outage_server.stop()
        wait_for(lambda: heard[-1] is False)
        outage_server.start()
        wait_for(lambda: heard[-1] is True)
    finally:
        listener.stop()


def test_a_writer_waits_for_another_fronts_writer(dsn: str) -> None:
    """While one front's write transaction is open, another front's write waits (the lock)."""
    with PgKeyStore(dsn) as first, PgKeyStore(dsn) as second:
        done = threading.Event()

        def put() -> None:
            second.put(ALICE, key("k"), T0)
            done.set()

        writer = threading.Thread(target=put)
        with first._transaction():
            writer.start()
            assert not done.wait(0.5)
        assert done.wait(10)
        writer.join()


def test_connections_pooled_across_a_restart_are_replaced_unseen(
    outage_server: PostgresServer,
) -> None:
    """PostgreSQL restarted under a pool: the next read and write succeed at the first try.

    Connections are not pinged when taken from the pool; the dead ones fail
    before anything ran and the keystore takes the next (reads of one
    statement and the BEGIN of transactions alike).
    """
    dsn = outage_server.new_database()
    with PgKeyStore(dsn, pool_size=2) as store:
        store.put(ALICE, key("k"), T0)
        store.set_policy(ALICE, T0, mode=PolicyMode.ALWAYS)
        _hold_two_connections(store)
        outage_server.stop()
        outage_server.start()
        assert store.view_inputs(ALICE, T0).policy.mode is PolicyMode.ALWAYS
        _hold_two_connections(store)
        outage_server.stop()
        outage_server.start()
        assert store.put(ALICE, key("k2"), later(1)).status is KeyStatus.ACTIVE


def _hold_two_connections(store: PgKeyStore) -> None:
    """Make the pool open both its connections (a transaction holds one, another thread reads)."""
    epochs: list[int] = []
    with store._transaction("DEFERRED"):
        reader = threading.Thread(target=lambda: epochs.append(store.view_epoch(ALICE, T0)))
        reader.start()
        reader.join()
    assert epochs and epochs[0] >= 1
