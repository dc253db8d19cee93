"""The keystore on PostgreSQL, shared by many fronts: ``--keystore postgresql://...``.

The same operations, schema migrations and audit records as the SQLite
keystore (:class:`~transcoder.keys.keystore.KeyStoreBase` runs both); what
differs is kept here and small:

* **Statements.**  The keystore's SQL is written once, with SQLite's ``?``
  and ``:name`` parameters; :func:`pg_sql` rewrites them to psycopg's
  ``%s`` and ``%(name)s`` (and doubles literal ``%``), and rows come back
  indexable by position and by name, as :class:`sqlite3.Row` are.
* **Transactions.**  Connections come from a psycopg_pool pool; one that
  died while pooled (PostgreSQL restarted) fails at its first statement,
  before anything ran, and the next is taken, so a front reconnects by
  itself once PostgreSQL is back without a ping per operation.  A reading
  operation is one ``REPEATABLE READ READ ONLY`` transaction: all its
  statements see one snapshot.  A writing one first takes a
  transaction-scoped advisory lock (:data:`WRITE_LOCK`), so writers -- every
  front, ``transcoder-admin`` -- take turns exactly as SQLite's ``BEGIN
  IMMEDIATE`` makes them, and the at-most-one-ACTIVE-key and view-epoch
  rules hold across fronts.
* **Round trips.**  The read every command makes -- the view epoch with the
  very policy and keys it counts -- is one statement (:data:`VIEW_STATE`),
  sent alone: one round trip, where SQLite runs six.  BEGIN with the lock,
  and the audit rows with NOTIFY and COMMIT, go in pipeline mode (one round
  trip each).  psycopg prepares a statement on a connection once it ran
  five times there, so the repeated ones are not planned again.
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

import functools
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg import sql as pgsql
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool, PoolTimeout

from transcoder.keys.errors import KeyStoreError
from transcoder.keys.keystore import (
    AuditHook,
    KeyStoreBase,
    KeyStoreUnavailable,
    _no_audit,
    policy_from_row,
)
from transcoder.keys.keystore_schema import (
    ENCRYPTS,
    KEY_COLUMNS,
    MIGRATIONS,
    POSTGRESQL,
    Connection,
    check_version,
    decode_time,
    dialect_statements,
    encode_time,
    stored_key,
)
from transcoder.keys.model import KeyFormat, PolicyMode, require_aware
from transcoder.keys.view_epochs import INITIAL_INPUTS, ViewInputs, _inputs_id, _ViewState

#: The NOTIFY channel of keystore changes; the payload is the account (``*``: all).
CHANNEL = "transcoder_keystore"
#: Advisory lock keys (pg_advisory_xact_lock): writers, and schema migration.
WRITE_LOCK = 0x7472616E  # "tran"
MIGRATION_LOCK = 0x7472616F
#: Events that change nothing (their transaction is rolled back): not notified.
REFUSALS = frozenset({"key.refused", "policy.refused", "views.refused"})
#: Events that change no view: recorded, not notified.
UNNOTIFIED = frozenset({"audit.pruned"})

#: What opens a transaction, per mode: sent together, in one round trip (pipeline mode).
_BEGIN = {
    "DEFERRED": ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",),
    "IMMEDIATE": (
        "BEGIN ISOLATION LEVEL READ COMMITTED",
        f"SELECT pg_advisory_xact_lock({WRITE_LOCK})",
    ),
}

#: An account's view state in one statement: the policy row (all its columns,
#: as JSON), its own and the server-wide epoch, and its keys -- all of them
#: (``:every``) or only those usable now, each marked ``usable``: ACTIVE,
#: encrypting, not expired.  The rest (newest usable key, effective format,
#: inputs id, first expiry) is computed from these rows
#: (:meth:`PgKeyStore._view_state`), as the SQLite keystore's six statements
#: compute it.
VIEW_STATE = f"""
WITH account_keys AS (
    SELECT id, {KEY_COLUMNS},
        (status = 'ACTIVE' AND {ENCRYPTS} AND (not_after IS NULL OR not_after >= :now))
            AS usable
    FROM keys WHERE account = :account
)
SELECT
    (SELECT to_jsonb(p) FROM policies p WHERE p.account = :account) AS policy_row,
    (SELECT epoch FROM view_epochs WHERE account = :account) AS own_epoch,
    (SELECT inputs FROM view_epochs WHERE account = :account) AS recorded_inputs,
    (SELECT epoch FROM server_views WHERE id = 1) AS server_epoch,
    (SELECT settings FROM server_views WHERE id = 1) AS server_settings,
    k.*
FROM (SELECT 1) AS one LEFT JOIN account_keys k ON :every OR k.usable
ORDER BY k.id
"""

_T = TypeVar("_T")
_TOKEN = re.compile(r"'(?:[^']|'')*'|\?|:([A-Za-z_]\w*)|%")


@functools.lru_cache(maxsize=512)
def pg_sql(statement: str) -> str:
    """``statement`` with SQLite's ``?`` and ``:name`` parameters as psycopg's.

    Quoted literals are left alone but for ``%``, which psycopg reads
    everywhere and which is doubled.  Rewritten once per statement text (the
    keystore's statements are a few dozen).
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
    """A psycopg connection spoken to in the keystore's SQL dialect (see :func:`pg_sql`).

    ``statements``: how many it may run (``None``: any); a transaction of
    one-statement read (:meth:`PgKeyStore._read_once`) has no BEGIN to hold a
    second one to its snapshot.
    """

    def __init__(self, connection: psycopg.Connection[Row], statements: int | None = None) -> None:
        self.connection = connection
        self.left = statements

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Row]:
        if self.left is not None:
            if self.left == 0:
                raise RuntimeError("a one-statement transaction ran a second statement")
            self.left -= 1
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
            pool = self._connections()
            connection = self._begin(pool, mode)
        except (psycopg.Error, PoolTimeout) as error:
            raise _unavailable(error) from error
        try:
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
        finally:
            pool.putconn(connection)  # a broken one is discarded (and replaced) by the pool

    def _begin(
        self, pool: ConnectionPool[psycopg.Connection[Row]], mode: str
    ) -> psycopg.Connection[Row]:
        """A pooled connection with the transaction begun, in one round trip.

        Connections are not checked when taken from the pool (that would be
        a round trip more per operation): one that died while pooled --
        PostgreSQL restarted -- fails here, before anything ran, and the
        next is tried, up to one more than the pool holds (reads of one
        statement are retried likewise: :meth:`_read_once`).
        """
        for attempt in range(self.pool_size + 1):
            connection = pool.getconn()
            try:
                with connection.pipeline():
                    for statement in _BEGIN[mode]:
                        connection.execute(statement)
                return connection
            except psycopg.OperationalError:
                pool.putconn(connection)
                if not connection.broken or attempt == self.pool_size:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

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
        """The transaction begun by :meth:`_begin`: the block, then audit, NOTIFY and COMMIT."""
        db = _Adapter(connection)
        try:
            yield db
            facts = [r for r in pending if r["event"] not in REFUSALS]
            # The audit rows, the notifications and the COMMIT: one round trip.
            with connection.pipeline():
                if facts:
                    self._insert_audit(db, facts)
                    changed = {str(r["account"]) for r in facts if r["event"] not in UNNOTIFIED}
                    for account in sorted(changed):
                        connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, account))
                connection.execute("COMMIT")
        except BaseException:
            if connection.info.transaction_status != pq.TransactionStatus.IDLE:
                # A broken connection cannot roll back: the pool discards it.
                with suppress(psycopg.Error):
                    connection.execute("ROLLBACK")
            raise

    def _read_once(self, read: Callable[[_Adapter], _T]) -> _T:
        """``read(db)`` running one statement, sent alone (autocommit): one round trip.

        The statement is its own snapshot, so no BEGIN and COMMIT are needed.
        A read changes nothing, so when the pooled connection turns out dead
        (see :meth:`_begin`) it is simply asked again on the next.
        """
        if getattr(self._local, "pending", None) is not None:
            raise RuntimeError("keystore transactions do not nest")
        pool = self._connections()
        for attempt in range(self.pool_size + 1):
            try:
                with pool.connection() as connection:
                    return read(_Adapter(connection, statements=1))
            except PoolTimeout as error:
                raise _unavailable(error) from error
            except psycopg.OperationalError as error:
                if not connection.broken or attempt == self.pool_size:
                    raise _unavailable(error) from error
            except psycopg.Error as error:
                raise _unavailable(error) from error
        raise AssertionError("unreachable")  # the loop returns or raises

    # -- one-statement reads ----------------------------------------------------

    def _read_views(self, account: str, now: datetime, with_keys: bool) -> ViewInputs:
        """The view inputs in one statement (:data:`VIEW_STATE`), one round trip.

        Inputs that drifted (a key expired) are counted by the generic path,
        in a write transaction.
        """
        state = self._read_once(lambda db: self._view_state(db, account, now, with_keys))
        if state.counted:
            return state.inputs
        return super()._read_views(account, now, with_keys)

    def _view_state(
        self, db: Connection, account: str, now: datetime, with_keys: bool = False
    ) -> _ViewState:
        """What :meth:`ViewEpochMethods._view_state` reads, from one statement's rows."""
        rows = db.execute(
            VIEW_STATE, {"account": account, "now": encode_time(now), "every": with_keys}
        ).fetchall()
        first = rows[0]  # the LEFT JOIN gives a row even with no key
        key_rows = [row for row in rows if row["id"] is not None]
        usable = [row for row in key_rows if row["usable"]]
        newest = max(usable, key=lambda row: (row["activated_at"], row["id"]), default=None)
        policy = policy_from_row(
            first["policy_row"], KeyFormat(newest["format"]) if newest else None
        )
        counted = [
            (str(row["fingerprint"]), bytes(row["material"]))
            for row in usable
            if policy.mode is PolicyMode.ALWAYS
            and policy.format is not None
            and row["format"] == policy.format.value
        ]
        current = _inputs_id(policy, counted, self._settings(first["server_settings"]))
        keys = tuple(stored_key(row, now) for row in key_rows) if with_keys else ()
        own = int(first["own_epoch"]) if first["own_epoch"] is not None else 0
        recorded = first["recorded_inputs"] if first["own_epoch"] is not None else INITIAL_INPUTS
        server = int(first["server_epoch"]) if first["server_epoch"] is not None else 0
        expiries = [row["not_after"] for row in usable if row["not_after"] is not None]
        stable_until = decode_time(min(expiries)) if expiries else None
        inputs = ViewInputs(own + server, policy, keys, stable_until)
        return _ViewState(inputs, own, current, current == recorded)

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

    def prune_audit(
        self, before: datetime, now: datetime, origin: Mapping[str, str] | None = None
    ) -> int:
        """Delete the audit rows dated before ``before``; how many.

        The prune is itself a row (``audit.pruned``, account ``*``) in the
        same transaction, so the trail says where and when it was cut.  It
        changes no view: no front is notified.
        """
        cutoff = encode_time(require_aware(before, "before"))
        with self._transaction() as db:
            pruned = db.execute("DELETE FROM audit WHERE time < ?", (cutoff,)).rowcount
            self._record(
                "audit.pruned", "*", require_aware(now), origin, before=cutoff, pruned=pruned
            )
        return int(pruned)


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
