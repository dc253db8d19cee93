"""The keystore: every key each account ever stored, with status, and each account's policy.

Two engines, one behaviour: :class:`KeyStore` keeps it in one SQLite file
(stdlib :mod:`sqlite3`, WAL journal), the default (``DIR/keys.db``);
:class:`~transcoder.keys.pg_keystore.PgKeyStore` in a PostgreSQL database
shared by many fronts (``--keystore postgresql://...``).  Both run the
operations of :class:`KeyStoreBase` over the schema of
:mod:`transcoder.keys.keystore_schema`.  Rules:

* Keys are never deleted by users: retiring keeps the row (``RETIRED``);
  only :meth:`KeyStoreBase.purge` (``transcoder-admin key purge``) erases.
* Per account, format and role (encryption key, or signing-only key) at
  most one key is ``ACTIVE``: storing a new one retires the previous one.
  A dual key pair (RFC 8550 section 4.4.2) thus keeps its encryption and
  its signing certificate active side by side.
* Storing a fingerprint the account already has refreshes the row (new
  material, e.g. an OpenPGP key with an extended expiry) and re-activates it.
* ``EXPIRED`` is computed when reading: an ``ACTIVE`` key past ``not_after``.
* Each operation is one transaction, and writers are serialised (SQLite:
  ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock): on
  any failure, including a failing audit hook, nothing changes.

Auditing: every operation calls ``audit(record)`` once per fact (key stored,
key retired, key purged, policy changed, and the keystore's own refusals)
just before committing; :meth:`KeyStoreBase.record_refusal` lets the caller
audit keys refused by validation.  Records are flat dicts of JSON-ready
values with ``event``, ``account``, ``time`` and, where known,
``fingerprint``.  On PostgreSQL the records are also rows of the ``audit``
table, written in the transaction of the change they record.

SQLite concurrency: one connection, opened with ``check_same_thread=False``
and guarded by a lock, serves every thread of the pool.  Each operation is a
few indexed statements on small tables, so serialising them costs nothing
measurable, while it spares per-thread connections and their cleanup.
Other processes (``transcoder-admin``) coordinate through SQLite's own
locking; ``busy_timeout`` makes a writer wait instead of failing.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from zope.interface import implementer

from transcoder.errors import ClientError
from transcoder.keys.errors import KeyStoreError, NoUsableKey, printable
from transcoder.keys.interfaces import IKeyStore
from transcoder.keys.keystore_schema import (
    ENCRYPTS,
    KEY_COLUMNS,
    MIGRATIONS,
    Connection,
    encode_time,
    key_values,
    migrate,
    stored_key,
)
from transcoder.keys.model import (
    KeyFormat,
    KeyStatus,
    KeyUsage,
    Policy,
    PolicyMode,
    StoredKey,
    ValidatedKey,
    normalize_fingerprint,
    require_aware,
)
from transcoder.keys.policy import missing_key_message, resolve_policy, sign_word, stored_sign
from transcoder.keys.view_epochs import ViewEpochMethods

AuditHook = Callable[[dict[str, Any]], None]

_ENCRYPTS = ENCRYPTS


class KeyStoreUnavailable(KeyStoreError):
    """The keystore's database cannot be reached now (``NO [UNAVAILABLE]``; try again later)."""

    code = "UNAVAILABLE"


def is_postgresql(spec: str | None) -> bool:
    """Whether a ``--keystore`` value names a PostgreSQL database (a ``postgresql://`` URI)."""
    return bool(spec) and str(spec).split("://", 1)[0].lower() in ("postgresql", "postgres")


def policy_sets_format(row: Any) -> bool:
    """Whether a ``policies`` row (``None``: none) names the format explicitly."""
    return row is not None and bool(row["format"])


def policy_from_row(row: Any, newest_key_format: KeyFormat | None) -> Policy:
    """The policy a ``policies`` row (any columns, by name; ``None``: none) stands for.

    ``newest_key_format``: the format of the account's newest usable
    encryption key, which a format never set explicitly falls back to.  Both
    engines build policies here, PostgreSQL's one-statement read too.
    """
    mode = PolicyMode(row["mode"]) if row is not None else PolicyMode.OFF
    explicit = KeyFormat(row["format"]) if policy_sets_format(row) else None
    sign = stored_sign(row["sign"]) if row is not None else None
    return resolve_policy(mode, explicit, newest_key_format if explicit is None else None, sign)


def _no_audit(record: dict[str, Any]) -> None:
    """The default audit hook: records go nowhere."""


@implementer(IKeyStore)
class KeyStoreBase(ViewEpochMethods):
    """The keystore's operations over any engine (see the module doc).

    Every operation that changes what the account's views are made from
    moves the account's view epoch in its own transaction
    (:mod:`transcoder.keys.view_epochs`).  Subclasses provide
    :meth:`_transaction` and :meth:`close`.
    """

    audit: AuditHook
    schema_version: int
    _transaction: Callable[..., AbstractContextManager[Connection]]

    def close(self) -> None:
        """Release the engine's connections."""
        raise NotImplementedError

    def __enter__(self) -> KeyStoreBase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _record(
        self,
        event: str,
        account: str,
        now: datetime,
        origin: Mapping[str, str] | None,
        **facts: Any,
    ) -> None:
        record: dict[str, Any] = dict(origin or {})
        record.update(event=event, account=account, time=encode_time(now), **facts)
        self.audit(record)
        self._audited(record)

    def _audited(self, record: dict[str, Any]) -> None:
        """After the hook: what the engine itself does with a record (SQLite: nothing)."""

    # -- keys -----------------------------------------------------------------

    def put(
        self,
        account: str,
        key: ValidatedKey,
        now: datetime,
        origin: Mapping[str, str] | None = None,
    ) -> StoredKey:
        """Store ``key`` as the account's ACTIVE key of its format and role (see module doc)."""
        now = require_aware(now)
        with self._transaction() as db:
            refreshed = self._upsert(db, account, key, now)
            superseded = self._supersede(db, account, key, now)
            stored = self._get(db, account, key.fingerprint, now)
            assert stored is not None  # written just above, in this transaction
            self._count_views(db, account, now, origin, cause="key.stored")
            self._record(
                "key.stored",
                account,
                now,
                origin,
                fingerprint=key.fingerprint,
                format=key.format.value,
                usages=sorted(u.value for u in key.usages),
                not_after=encode_time(key.not_after),
                refreshed=refreshed,
            )
            for old in superseded:
                self._record(
                    "key.retired",
                    account,
                    now,
                    origin,
                    fingerprint=old,
                    reason="superseded",
                    by=key.fingerprint,
                )
        return stored

    def _upsert(self, db: Connection, account: str, key: ValidatedKey, now: datetime) -> bool:
        """Write ``key`` as an ACTIVE row; return whether the account already had it."""
        values = key_values(account, key, now)
        existing = db.execute(
            "SELECT id FROM keys WHERE account = ? AND fingerprint = ?",
            (account, key.fingerprint),
        ).fetchone()
        if existing is None:
            names = ", ".join(values)
            marks = ", ".join(f":{name}" for name in values)
            db.execute(f"INSERT INTO keys ({names}) VALUES ({marks})", values)
            return False
        values.pop("created_at")
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        db.execute(
            f"UPDATE keys SET {assignments} WHERE id = :id", {**values, "id": existing["id"]}
        )
        return True

    def _supersede(
        self, db: Connection, account: str, key: ValidatedKey, now: datetime
    ) -> builtins.list[str]:
        """Retire the account's other ACTIVE keys of the same format and role."""
        role = KeyUsage.ENCRYPT in key.usages
        where = (
            f"account = ? AND format = ? AND status = 'ACTIVE' AND fingerprint != ?"
            f" AND ({_ENCRYPTS}) = ?"
        )
        params = (account, key.format.value, key.fingerprint, role)
        rows = db.execute(f"SELECT fingerprint FROM keys WHERE {where}", params).fetchall()
        db.execute(
            f"UPDATE keys SET status = 'RETIRED', retired_at = ? WHERE {where}",
            (encode_time(now), *params),
        )
        return [row["fingerprint"] for row in rows]

    def list_keys(self, account: str | None, now: datetime) -> builtins.list[StoredKey]:
        """Every key of ``account`` (``None``: of all accounts), oldest first."""
        now = require_aware(now)
        where, params = ("WHERE account = ?", (account,)) if account is not None else ("", ())
        with self._transaction("DEFERRED") as db:
            rows = db.execute(
                f"SELECT {KEY_COLUMNS} FROM keys {where} ORDER BY id", params
            ).fetchall()
        return [stored_key(row, now) for row in rows]

    def get(self, account: str, fingerprint: str, now: datetime) -> StoredKey | None:
        """The account's key with ``fingerprint`` (any status), or ``None``."""
        now = require_aware(now)
        with self._transaction("DEFERRED") as db:
            return self._get(db, account, normalize_fingerprint(fingerprint), now)

    def _get(
        self, db: Connection, account: str, fingerprint: str, now: datetime
    ) -> StoredKey | None:
        row = db.execute(
            f"SELECT {KEY_COLUMNS} FROM keys WHERE account = ? AND fingerprint = ?",
            (account, fingerprint),
        ).fetchone()
        return stored_key(row, now) if row is not None else None

    def retire(
        self,
        account: str,
        fingerprint: str,
        now: datetime,
        origin: Mapping[str, str] | None = None,
    ) -> StoredKey:
        """Retire the account's key; retiring a retired key again changes nothing."""
        now = require_aware(now)
        fingerprint = normalize_fingerprint(fingerprint)
        with self._transaction() as db:
            key = self._get(db, account, fingerprint, now)
            if key is None:
                error = NoUsableKey(printable(f"no key with fingerprint {fingerprint}", 120))
                self._refused(account, error, now, origin, fingerprint)
                raise error
            if key.status is not KeyStatus.RETIRED:
                db.execute(
                    "UPDATE keys SET status = 'RETIRED', retired_at = ?"
                    " WHERE account = ? AND fingerprint = ?",
                    (encode_time(now), account, fingerprint),
                )
                self._count_views(db, account, now, origin, cause="key.retired")
                self._record(
                    "key.retired", account, now, origin, fingerprint=fingerprint, reason="deleted"
                )
            retired = self._get(db, account, fingerprint, now)
        assert retired is not None  # read back in the same transaction
        return retired

    def purge(
        self, fingerprint: str, now: datetime, origin: Mapping[str, str] | None = None
    ) -> int:
        """Erase every stored copy of the key ``fingerprint``, for all accounts."""
        now = require_aware(now)
        fingerprint = normalize_fingerprint(fingerprint)
        with self._transaction() as db:
            rows = db.execute(
                "SELECT account FROM keys WHERE fingerprint = ?", (fingerprint,)
            ).fetchall()
            if not rows:
                raise NoUsableKey(printable(f"no key with fingerprint {fingerprint}", 120))
            db.execute("DELETE FROM keys WHERE fingerprint = ?", (fingerprint,))
            for row in rows:
                self._count_views(db, row["account"], now, origin, cause="key.purged")
                self._record("key.purged", row["account"], now, origin, fingerprint=fingerprint)
        return len(rows)

    def active_key(self, account: str, format: KeyFormat | None, now: datetime) -> StoredKey | None:
        """The newest ACTIVE, unexpired encryption key of ``format`` (``None``: any)."""
        now = require_aware(now)
        with self._transaction("DEFERRED") as db:
            return self._active_key(db, account, format, now)

    def _active_key(
        self, db: Connection, account: str, format: KeyFormat | None, now: datetime
    ) -> StoredKey | None:
        sql = (
            f"SELECT {KEY_COLUMNS} FROM keys WHERE account = ? AND status = 'ACTIVE'"
            f" AND {_ENCRYPTS} AND (not_after IS NULL OR not_after >= ?)"
        )
        params: tuple[Any, ...] = (account, encode_time(now))
        if format is not None:
            sql += " AND format = ?"
            params += (format.value,)
        row = db.execute(sql + " ORDER BY activated_at DESC, id DESC LIMIT 1", params).fetchone()
        return stored_key(row, now) if row is not None else None

    # -- policy ---------------------------------------------------------------

    def get_policy(self, account: str, now: datetime) -> Policy:
        """The account's policy, its format resolved (see :mod:`transcoder.keys.policy`)."""
        now = require_aware(now)
        with self._transaction("DEFERRED") as db:
            return self._policy(db, account, now)

    def _policy(self, db: Connection, account: str, now: datetime) -> Policy:
        row = db.execute("SELECT * FROM policies WHERE account = ?", (account,)).fetchone()
        newest = self._active_key(db, account, None, now) if not policy_sets_format(row) else None
        return policy_from_row(row, newest.format if newest else None)

    def set_policy(
        self,
        account: str,
        now: datetime,
        mode: PolicyMode | None = None,
        format: KeyFormat | None = None,
        origin: Mapping[str, str] | None = None,
        sign: bool | None = None,
    ) -> Policy:
        """Set the mode, format and/or SIGN; NoUsableKey if that leaves ALWAYS without a
        usable key.  ``sign`` sets the account's own SIGN (``None``: left as it is)."""
        if mode is None and format is None and sign is None:
            raise ValueError("set_policy needs a mode, a format or a sign")
        now = require_aware(now)
        with self._transaction() as db:
            before = self._policy(db, account, now)
            explicit = format or (before.format if before.format_is_explicit else None)
            newest = self._active_key(db, account, None, now)
            after = resolve_policy(
                mode or before.mode,
                explicit,
                newest.format if newest else None,
                before.sign if sign is None else sign,
            )
            if after.mode is PolicyMode.ALWAYS and (
                after.format is None or self._active_key(db, account, after.format, now) is None
            ):
                error = NoUsableKey(missing_key_message(after))
                self._refused(account, error, now, origin, event="policy.refused")
                raise error
            stored = sign_word(after.sign) if after.sign is not None else None
            db.execute(
                "INSERT INTO policies (account, mode, format, sign, updated_at)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (account) DO UPDATE SET mode = excluded.mode,"
                " format = excluded.format, sign = excluded.sign,"
                " updated_at = excluded.updated_at",
                (
                    account,
                    after.mode.value,
                    explicit.value if explicit else None,
                    stored,
                    encode_time(now),
                ),
            )
            self._count_views(db, account, now, origin, cause="policy.changed")
            signs: dict[str, Any] = {}
            if sign is not None:
                previous = sign_word(before.sign) if before.sign is not None else None
                signs = {"sign": stored, "previous_sign": previous}
            self._record(
                "policy.changed",
                account,
                now,
                origin,
                mode=after.mode.value,
                format=after.format.value if after.format else None,
                previous_mode=before.mode.value,
                previous_format=before.format.value if before.format else None,
                **signs,
            )
        return after

    # -- server settings ------------------------------------------------------

    def server_setting(self, name: str) -> str | None:
        """What a server recorded under ``name`` (``sign-views``: ON or OFF); ``None``: nothing."""
        with self._transaction("DEFERRED") as db:
            row = db.execute("SELECT value FROM server_settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def record_server_setting(self, name: str, value: str, now: datetime) -> bool:
        """Record ``value`` under ``name`` (for tools to show); whether it changed.

        Informational: views follow the server's own options, whose changes
        move the epochs of the accounts they apply to (:meth:`note_server_views`).
        """
        now = require_aware(now)
        if self.server_setting(name) == value:
            return False
        with self._transaction() as db:
            db.execute(
                "INSERT INTO server_settings (name, value, changed_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
                " changed_at = excluded.changed_at",
                (name, value, encode_time(now)),
            )
        return True

    # -- audit ----------------------------------------------------------------

    def record_refusal(
        self,
        account: str,
        error: ClientError,
        now: datetime,
        fingerprint: str | None = None,
        origin: Mapping[str, str] | None = None,
    ) -> None:
        """Audit a refusal decided outside the keystore (e.g. a key failing validation)."""
        self._refused(account, error, require_aware(now), origin, fingerprint)

    def record_event(
        self,
        event: str,
        account: str,
        now: datetime,
        facts: Mapping[str, Any],
        origin: Mapping[str, str] | None = None,
    ) -> None:
        """Audit an event the keystore did not decide (a decrypted APPEND, a quarantined
        delivery): through the audit hook (``DIR/audit.jsonl``) and, on PostgreSQL,
        as a row of ``audit`` like every key operation's record."""
        self._record(event, account, require_aware(now), origin, **facts)

    def _refused(
        self,
        account: str,
        error: ClientError,
        now: datetime,
        origin: Mapping[str, str] | None,
        fingerprint: str | None = None,
        event: str = "key.refused",
    ) -> None:
        facts: dict[str, Any] = {"code": error.code, "reason": error.text}
        if fingerprint is not None:
            facts["fingerprint"] = fingerprint
        self._record(event, account, now, origin, **facts)


class KeyStore(KeyStoreBase):
    """The keystore in the SQLite file ``path`` (created, with its schema, when missing)."""

    def __init__(
        self, path: str | Path, audit: AuditHook = _no_audit, busy_timeout: float = 5.0
    ) -> None:
        self.path = Path(path)
        self.audit = audit
        self._lock = threading.RLock()
        try:
            # Keys are public, but who uses which key is not: 0600 from the start.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as error:
            raise KeyStoreError(f"cannot open keystore {self.path}: {error}") from error
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self.schema_version = migrate(self._db, MIGRATIONS)
        except BaseException as error:
            self._db.close()
            if isinstance(error, sqlite3.Error):
                raise KeyStoreError(f"cannot open keystore {self.path}: {error}") from error
            raise

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """One transaction: committed when the block succeeds, rolled back otherwise."""
        with self._lock:
            try:
                self._db.execute(f"BEGIN {mode}")
            except sqlite3.Error as error:
                raise KeyStoreUnavailable(f"keystore unavailable: {error}") from error
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(error, sqlite3.Error):
                    raise KeyStoreError(f"keystore operation failed: {error}") from error
                raise
