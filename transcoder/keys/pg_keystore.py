"""The keystore on PostgreSQL, shared by many fronts: ``--keystore postgresql://...``.

The same operations, schema migrations and audit records as the SQLite
keystore (:class:`~transcoder.keys.keystore.KeyStoreBase` runs both); what
differs is kept here and small:

* **Statements.**  The keystore's SQL is written once, with SQLite's ``?``
  and ``:name`` parameters; :func:`pg_sql` rewrites them to psycopg's
  ``%s`` and ``%(name)s`` (and doubles literal ``%``), and rows come back
  indexable by position and by name, as :class:`sqlite3.Row` are.
* **Transactions.**  Connections come from a psycopg_pool pool, each checked
  before use, so a front reconnects by itself once PostgreSQL is back.  A
  reading operation is one ``REPEATABLE READ READ ONLY`` transaction: all
  its statements see one snapshot (the view epoch with the very policy and
  keys it counts).  A writing one first takes a transaction-scoped advisory
  lock (:data:`WRITE_LOCK`), so writers -- every front, ``transcoder-admin``
  -- take turns exactly as SQLite's ``BEGIN IMMEDIATE`` makes them, and the
  at-most-one-ACTIVE-key and view-epoch rules hold across fronts.
* **Schema version.**  The table ``schema_version`` stands for SQLite's
  ``PRAGMA user_version``; migrations run under another advisory lock, so
  fronts started together migrate once.
* **Audit trail.**  Every record is also a row of ``audit``, inserted in the
  transaction of the change it records (committed with it, or not at all);
  refusals, whose transaction is rolled back, are inserted afterwards on
  their own.  ``DIR/audit.jsonl`` is not written.
* **Change notification.**  Every committed change sends ``NOTIFY``
  :data:`CHANNEL` with the account (``*``: every account) as payload;
  PostgreSQL delivers it at commit, to every front listening
  (:class:`ChangeListener`), which drops the account's cached views and
  re-reads its view epoch before the next command.

Any database error -- PostgreSQL down, the pool exhausted past its timeout
-- raises :class:`~transcoder.keys.keystore.KeyStoreUnavailable`
(``NO [UNAVAILABLE]``); nothing is ever decided without the keystore, so a
FETCH under MODE ALWAYS fails closed.

No Twisted here: the pool's threads and the listener's thread are plain
threads; :mod:`transcoder.keys.async_store` runs the keystore off the reactor
thread and brings the listener's news onto it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import pq
from psycopg import sql as pgsql
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool, PoolTimeout

from transcoder.keys.errors import KeyStoreError
from transcoder.keys.keystore import AuditHook, KeyStoreBase, KeyStoreUnavailable, _no_audit
from transcoder.keys.keystore_schema import (
    MIGRATIONS,
    POSTGRESQL,
    check_version,
    dialect_statements,
)

#: The NOTIFY channel of keystore changes; the payload is the account (``*``: all).
CHANNEL = "transcoder_keystore"
#: Advisory lock keys (pg_advisory_xact_lock): writers, and schema migration.
WRITE_LOCK = 0x7472616E  # "tran"
MIGRATION_LOCK = 0x7472616F
#: Events that change nothing (their transaction is rolled back): not notified.
REFUSALS = frozenset({"key.refused", "policy.refused", "views.refused"})

_TOKEN = re.compile(r"'(?:[^']|'')*'|\?|:([A-Za-z_]\w*)|%")


def pg_sql(statement: str) -> str:
    """``statement`` with SQLite's ``?`` and ``:name`` parameters as psycopg's.

    Quoted literals are left alone but for ``%``, which psycopg reads
    everywhere and which is doubled.
    """

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token.startswith("'"):
            return token.replace("%", "%%")
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        return f"%({match.group(1)})s"

    return _TOKEN.sub(replace, statement)


class Row(tuple[Any, ...]):
    """A result row indexable by position and by column name, as :class:`sqlite3.Row` is."""

    names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(self.names[key])
        return super().__getitem__(key)


def rows_by_name(cursor: Any) -> RowMaker[Row]:
    """psycopg row factory making :class:`Row` objects."""
    names = {column.name: i for i, column in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> Row:
        row = Row(values)
        row.names = names
        return row

    return make


class _Adapter:
    """A psycopg connection spoken to in the keystore's SQL dialect (see :func:`pg_sql`)."""

    def __init__(self, connection: psycopg.Connection[Row]) -> None:
        self.connection = connection

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Row]:
        return self.connection.execute(pg_sql(sql), parameters)


def _unavailable(error: BaseException) -> KeyStoreUnavailable:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return KeyStoreUnavailable(f"keystore unavailable: {text}")


class PgKeyStore(KeyStoreBase):
    """The keystore in the PostgreSQL database ``dsn`` (schema created or migrated at once).

    ``pool_size`` connections at most are open at a time (the key layer's
    threads use one each); an operation waits ``timeout`` seconds for one.
    Opening fails with :class:`KeyStoreError` when the database cannot be
    reached or migrated: a front does not start without its keystore.  The
    migration uses a connection of its own; the pool (and its threads) is
    made at the first operation, so a server that daemonizes (twistd without
    ``-n`` forks after building its service) makes it in the process that
    uses it.
    """

    def __init__(
        self,
        dsn: str,
        audit: AuditHook = _no_audit,
        pool_size: int = 4,
        timeout: float = 3.0,
    ) -> None:
        self.dsn = dsn
        self.audit = audit
        self.pool_size = pool_size
        self.timeout = timeout
        self._local = threading.local()
        self._pool: ConnectionPool[psycopg.Connection[Row]] | None = None
        self._pool_lock = threading.Lock()
        self._closed = False
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(timeout))) as c:
                self.schema_version = self._migrate(c)
        except psycopg.Error as error:
            raise KeyStoreError(f"cannot open keystore {safe_dsn(dsn)}: {error}") from error

    def _connections(self) -> ConnectionPool[psycopg.Connection[Row]]:
        """The pool, made on first use (see the class doc)."""
        with self._pool_lock:
            if self._closed:
                raise KeyStoreError("keystore closed")
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.dsn,
                    kwargs={"autocommit": True, "row_factory": rows_by_name, "connect_timeout": 5},
                    min_size=1,
                    max_size=self.pool_size,
                    open=True,
                    timeout=self.timeout,
                    check=ConnectionPool.check_connection,
                    name="transcoder-keystore",
                )
            return self._pool

    def close(self) -> None:
        """Close the pool's connections."""
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> PgKeyStore:
        return self

    def _migrate(self, connection: psycopg.Connection[Any]) -> int:
        """Bring the database to the current schema (under the migration lock); the version."""
        target = len(MIGRATIONS)
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            row = connection.execute("SELECT version FROM schema_version").fetchone()
            version = int(row[0]) if row is not None else 0
            check_version(version, target)
            for statements in MIGRATIONS[version:]:
                for statement in dialect_statements(statements, POSTGRESQL):
                    connection.execute(statement)
            if row is None:
                connection.execute("INSERT INTO schema_version VALUES (%s)", (target,))
            else:
                connection.execute("UPDATE schema_version SET version = %s", (target,))
        return target

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[_Adapter]:
        """One transaction (see the module doc for ``mode``); the audit rows go with it."""
        if getattr(self._local, "pending", None) is not None:
            raise RuntimeError("keystore transactions do not nest")
        try:
            with self._connections().connection() as connection:
                pending: list[dict[str, Any]] = []
                self._local.pending = pending
                try:
                    yield from self._run(connection, mode, pending)
                except BaseException:
                    self._local.pending = None
                    self._audit_refusals(connection, pending)
                    raise
                finally:
                    self._local.pending = None
        except (psycopg.Error, PoolTimeout) as error:
            raise _unavailable(error) from error

    def _audit_refusals(
        self, connection: psycopg.Connection[Row], records: list[dict[str, Any]]
    ) -> None:
        """After a rollback: the refusals it undid are inserted on their own (best effort)."""
        refusals = [r for r in records if r["event"] in REFUSALS]
        if not refusals or connection.info.transaction_status != pq.TransactionStatus.IDLE:
            return
        # Best effort: the refusal stands, and the hook (the log) has its record.
        with suppress(psycopg.Error):
            self._insert_audit(_Adapter(connection), refusals)

    def _run(
        self, connection: psycopg.Connection[Row], mode: str, pending: list[dict[str, Any]]
    ) -> Iterator[_Adapter]:
        db = _Adapter(connection)
        if mode == "DEFERRED":
            connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        else:
            connection.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        try:
            yield db
            facts = [r for r in pending if r["event"] not in REFUSALS]
            if facts:
                self._insert_audit(db, facts)
                for account in sorted({str(r["account"]) for r in facts}):
                    connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, account))
            connection.execute("COMMIT")
        except BaseException:
            if connection.info.transaction_status != pq.TransactionStatus.IDLE:
                # A broken connection cannot roll back: the pool discards it.
                with suppress(psycopg.Error):
                    connection.execute("ROLLBACK")
            raise

    def _insert_audit(self, db: _Adapter, records: list[dict[str, Any]]) -> None:
        for record in records:
            db.execute(
                "INSERT INTO audit (time, event, account, record) VALUES (?, ?, ?, ?)",
                (
                    str(record.get("time", "")),
                    str(record["event"]),
                    str(record["account"]),
                    json.dumps(record, sort_keys=True),
                ),
            )

    def _audited(self, record: dict[str, Any]) -> None:
        """Each audit record is also a row of ``audit``, written with its transaction."""
        pending = getattr(self._local, "pending", None)
        if pending is not None:
            pending.append(dict(record))
        else:  # a refusal audited outside any transaction (record_refusal)
            self._audit_alone([dict(record)])

    def _audit_alone(self, records: list[dict[str, Any]]) -> None:
        try:
            with self._connections().connection() as connection:
                self._insert_audit(_Adapter(connection), records)
        except (psycopg.Error, PoolTimeout) as error:
            raise _unavailable(error) from error

    def audit_records(self, account: str | None = None) -> list[dict[str, Any]]:
        """The audit trail (of ``account``), oldest first, as the records written."""
        where, params = ("WHERE account = ?", (account,)) if account is not None else ("", ())
        with self._transaction("DEFERRED") as db:
            rows = db.execute(f"SELECT record FROM audit {where} ORDER BY id", params).fetchall()
        return [json.loads(row[0]) for row in rows]


def safe_dsn(dsn: str) -> str:
    """``dsn`` without its password, for messages and logs."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparsable connection string)"
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items()})


class ChangeListener:
    """Listens on :data:`CHANNEL` in a thread of its own; reports each changed account.

    ``on_change(account)`` is called for every notification, ``on_state(up)``
    when the listening connection comes up (``True``) or goes down
    (``False``); both from the listener's thread (the caller hands them to
    its reactor).  A lost connection is retried every ``retry`` seconds, at
    most, for as long as the listener runs: notifications sent meanwhile are
    lost, which the ``on_state(True)`` that follows stands for (the caller
    treats it as a change of every account).
    """

    def __init__(
        self,
        dsn: str,
        on_change: Callable[[str], None],
        on_state: Callable[[bool], None],
        retry: float = 1.0,
        poll: float = 0.5,
    ) -> None:
        self.dsn = dsn
        self.on_change = on_change
        self.on_state = on_state
        self.retry = retry
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start listening (returns at once; the connection is made in the thread)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="transcoder-keystore-listener")
        self._thread.daemon = True
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and join the thread (it notices within ``poll`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(CHANNEL)))
                    self.on_state(True)
                    try:
                        while not self._stop.is_set():
                            for notice in connection.notifies(timeout=self.poll):
                                self.on_change(notice.payload)
                            # A server gone quietly is noticed here at the latest.
                            connection.execute("SELECT 1")
                    finally:
                        self.on_state(False)
            except psycopg.Error:
                pass  # down: said by on_state(False) (or never up); retried below
            self._stop.wait(self.retry)
