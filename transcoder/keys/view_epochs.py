"""View epochs: what lets a changed view be announced with a new UIDVALIDITY.

A client keeps a message it fetched under (mailbox, UIDVALIDITY, UID) for
good (RFC 3501 section 2.3.1.1).  What FETCH serves of a message -- its
*view* -- depends on the account's *view inputs*: the policy MODE, the
effective FORMAT and the usable encryption keys of that format (material
included), plus server-wide settings (the transcoders' settings, later the
view secret).  When those change, every view of the account changes, so
every mailbox of the account must present a UIDVALIDITY it never presented
before, and the client resynchronises.

The Maildir's own UIDVALIDITY and UIDs are left alone (COPY, SEARCH,
APPENDUID and other readers of the same Maildir, e.g. Dovecot, rely on
them).  Instead the keystore keeps, per account, a *view epoch*: a counter
that moves by one each time the account's view inputs become different
from those it was last counted with.  The server-wide settings a MODE
ALWAYS account's views depend on are part of those inputs, but only the
settings that apply to it (:class:`ViewSettings`): another S/MIME cipher
moves the S/MIME accounts, a rotated OpenPGP signing key the accounts whose
OpenPGP views are signed, a new view secret every MODE ALWAYS account -- and
no server setting moves a MODE OFF account, whose view is the stored
message.  (Until this was so, a server-wide epoch moved every account; it is
no longer moved, and is still added so that no value presented before goes
back.)  The UIDVALIDITY the server presents is
:func:`presented_uid_validity` of (stored UIDVALIDITY, epoch):

* The epoch is bumped in the same transaction as the key or policy change
  that alters the inputs (XKEY, ``transcoder-admin``, any process), and only
  then: storing a key while MODE is OFF, or setting the policy it already
  has, changes no view and costs clients nothing.  Inputs can also change
  with no write to the account at all -- a key expires, a format that was
  never set falls back to the next newest key's, a server starts with other
  settings or sees a rotated signing key -- so every read compares the
  recorded inputs with the current ones and bumps when they differ.  An
  account's views at one epoch are therefore always made from the same
  inputs, even while two servers with different settings share the
  keystore: each moves the epoch on before it serves its own views, and
  the sessions of the other are ended (a misconfiguration that makes
  clients resynchronise often rather than keep octets that changed).
* ``presented = stored + epoch`` (32-bit, see the function) grows strictly
  whenever either grows; both only grow (the store draws a new UIDVALIDITY
  from a per-account counter that only grows; epochs only grow), so a
  mailbox name never shows a value it showed before, across restarts and
  on every server sharing the store and the keystore.
* The account epoch is capped (:data:`MAX_ACCOUNT_EPOCH`, 16.7 million
  changes): beyond it changes are refused ``NO [LIMIT]``, so the sum stays
  below 2^32 for as long as the store's own clock-based values do (year
  2106).
* Losing or restoring ``keys.db`` takes the epoch back together with the
  keys and policy it counted: a value shown again then stands for the same
  inputs it stood for before (with views derived from their inputs, the
  same octets), or for the initial state, policy OFF, where the view is the
  stored message.

No Twisted here: plain functions over a keystore connection (SQLite, or
PostgreSQL through :mod:`transcoder.keys.pg_keystore`), used by the keystores
of :mod:`transcoder.keys.keystore`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path

from transcoder.errors import ClientError
from transcoder.keys.keystore_schema import (
    ENCRYPTS,
    KEY_COLUMNS,
    Connection,
    decode_time,
    encode_time,
    stored_key,
)
from transcoder.keys.model import KeyStatus, Policy, PolicyMode, StoredKey, require_aware

#: The largest UIDVALIDITY (RFC 3501 section 9: ``nz-number`` is 32-bit).
MAX_UIDVALIDITY = 2**32 - 1
#: Changes of view inputs an account may make (see the module doc).
MAX_ACCOUNT_EPOCH = 2**24
#: The inputs of an account nobody configured: policy OFF, views are the stored messages.
INITIAL_INPUTS = "OFF"


class ViewsChanged(ClientError):
    """The account's views changed since this session presented its mailbox: reconnect."""

    code = "UNAVAILABLE"


class TooManyViewChanges(ClientError):
    """The account changed its keys or policy more often than the server can announce."""

    code = "LIMIT"


@dataclass(frozen=True)
class ViewInputs:
    """An account's view epoch with the policy and keys it counts, read in one transaction.

    ``keys`` are all the account's keys (as ``list_keys`` reports them), so
    that a selection made from them is the one the epoch stands for; empty
    when only the epoch was asked for.
    """

    epoch: int
    policy: Policy
    keys: tuple[StoredKey, ...]
    #: Until when the inputs cannot change without a write to the keystore (the
    #: first expiry among the active encryption keys); ``None``: for ever.
    stable_until: datetime | None = None


@dataclass(frozen=True)
class ViewSettings:
    """The server-wide settings views depend on, by what they apply to.

    Recorded by each server at start (:meth:`ViewEpochMethods.note_server_views`)
    and counted in the inputs of each MODE ALWAYS account, as far as they
    apply to it (:meth:`applying_to`).  Values are short texts naming the
    settings (identifiers, never the view secret itself).
    """

    #: What every view depends on: the view secret's identifier, ``--obscure-subject``.
    common: str = ""
    #: Per key format (its value, e.g. ``SMIME``): the transcoder's name and settings.
    formats: tuple[tuple[str, str], ...] = ()
    #: Per key format: the fingerprint of the server's current signing key.
    signing: tuple[tuple[str, str], ...] = ()
    #: ``--sign-views``: whether views of accounts without their own SIGN are signed.
    sign_default: bool = False

    def applying_to(self, policy: Policy) -> str:
        """The settings the views of an account with ``policy`` depend on ("" for MODE OFF)."""
        if policy.mode is PolicyMode.OFF:
            return ""
        fmt = policy.format.value if policy.format is not None else "NONE"
        parts = [self.common, "format " + dict(self.formats).get(fmt, "none")]
        if policy.signs(self.sign_default):
            parts.append("signed by " + dict(self.signing).get(fmt, "none"))
        return "\n".join(parts)

    def to_text(self) -> str:
        """The settings as recorded in the keystore (JSON)."""
        return json.dumps(
            {
                "common": self.common,
                "formats": dict(self.formats),
                "signing": dict(self.signing),
                "sign_default": self.sign_default,
            },
            sort_keys=True,
        )

    @classmethod
    def from_text(cls, text: str | None) -> ViewSettings:
        """The settings :meth:`to_text` recorded; empty ones for nothing or an older record."""
        try:
            value = json.loads(text) if text else None
        except ValueError:
            value = None  # a server-wide id of before per-account settings
        if not isinstance(value, dict):
            return cls()
        return cls(
            str(value.get("common", "")),
            tuple(sorted((str(k), str(v)) for k, v in dict(value.get("formats", {})).items())),
            tuple(sorted((str(k), str(v)) for k, v in dict(value.get("signing", {})).items())),
            bool(value.get("sign_default", False)),
        )

    def changes_from(self, earlier: ViewSettings) -> list[str]:
        """What differs from ``earlier``, named for the audit trail (e.g. ``formats SMIME``)."""
        changed = []
        for field in fields(self):
            mine, theirs = getattr(self, field.name), getattr(earlier, field.name)
            if isinstance(mine, tuple):
                ours, old = dict(mine), dict(theirs)
                changed += [
                    f"{field.name} {k}"
                    for k in sorted(ours.keys() | old.keys())
                    if ours.get(k) != old.get(k)
                ]
            elif mine != theirs:
                changed.append(field.name)
        return changed


def presented_uid_validity(stored: int, epoch: int) -> int:
    """The UIDVALIDITY a client is shown for a mailbox whose Maildir says ``stored``.

    ``stored + epoch``, wrapping within 1..2^32-1 like the store's own counter
    (never reached in practice: see the module doc).  Epoch 0 -- no change
    ever -- presents the stored value itself.
    """
    if not 0 < stored <= MAX_UIDVALIDITY or epoch < 0:
        raise ValueError(f"bad UIDVALIDITY {stored} or epoch {epoch}")
    return (stored - 1 + epoch) % MAX_UIDVALIDITY + 1


def inputs_id(
    policy: Policy,
    keys: Iterable[StoredKey],
    now: datetime,
    settings: ViewSettings | None = None,
) -> str:
    """A short text naming what the account's views are made from at ``now``.

    Equal ids mean equal views.  MODE OFF serves the stored messages whatever
    the keys and the server's settings; MODE ALWAYS encrypts to the usable
    (active, unexpired, encryption) keys of the effective format -- as
    :func:`transcoder.transcoders.selection.usable_keys` picks them --, so their
    fingerprints and material count, not their other attributes; the
    account's own SIGN setting, when it has one; and the server's
    ``settings`` as far as they apply to it.
    """
    usable = [
        (key.fingerprint, key.material)
        for key in keys
        if key.format is policy.format
        and key.status is KeyStatus.ACTIVE
        and key.can_encrypt
        and not key.expired_at(now)
    ]
    return _inputs_id(policy, usable, settings or ViewSettings())


def _inputs_id(
    policy: Policy, usable: Iterable[tuple[str, bytes]], settings: ViewSettings | None
) -> str:
    """:func:`inputs_id` from the usable keys' (fingerprint, material) pairs; ``settings``
    ``None``: the id an earlier build recorded, without them (see ``_carry_over``)."""
    if policy.mode is PolicyMode.OFF:
        return INITIAL_INPUTS
    digest = hashlib.sha256()
    for fingerprint, material in sorted(usable):
        digest.update(fingerprint.encode("ascii") + b"\0")
        digest.update(hashlib.sha256(material).digest())
    if settings is not None:
        digest.update(b"\0settings\0" + settings.applying_to(policy).encode("utf-8"))
    fmt = policy.format.value if policy.format is not None else "NONE"
    # The account's own SIGN (issue 16); never set, the server's default
    # applies, which is counted with the settings (ViewSettings.applying_to).
    sign = "" if policy.sign is None else (" SIGN ON" if policy.sign else " SIGN OFF")
    return f"ALWAYS {fmt}{sign} {digest.hexdigest()[:32]}"


def usable_material(
    db: Connection, account: str, policy: Policy, now: datetime
) -> list[tuple[str, bytes]]:
    """(fingerprint, material) of the keys :func:`inputs_id` counts, selected in SQL.

    Only these rows are read: the epoch check before every command need not
    decode the account's whole key history.
    """
    if policy.mode is PolicyMode.OFF or policy.format is None:
        return []
    rows = db.execute(
        "SELECT fingerprint, material FROM keys WHERE account = ? AND format = ?"
        f" AND status = 'ACTIVE' AND {ENCRYPTS}"
        " AND (not_after IS NULL OR not_after >= ?)",
        (account, policy.format.value, encode_time(now)),
    ).fetchall()
    return [(str(row[0]), bytes(row[1])) for row in rows]


def first_expiry(db: Connection, account: str, now: datetime) -> datetime | None:
    """The earliest ``not_after`` still ahead among the account's active encryption keys.

    Until then (inclusive) no key of the account expires, so its view inputs
    change only through a write; ``None``: none of them ever expires.
    """
    row = db.execute(
        "SELECT MIN(not_after) FROM keys WHERE account = ? AND status = 'ACTIVE'"
        f" AND {ENCRYPTS} AND not_after >= ?",
        (account, encode_time(now)),
    ).fetchone()
    return decode_time(row[0]) if row and row[0] is not None else None


class KeystoreWatch:
    """Tells cheaply whether ``keys.db`` changed: any commit, by any connection or process.

    Its own connection, which never writes, asks SQLite's ``PRAGMA
    data_version``: the number changes whenever another connection -- the
    keystore's own included -- committed since the last call.  One query on
    the WAL index, no table read: cheap enough to ask before every command.
    For the thread that made it only.
    """

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)

    def version(self) -> int:
        """The current data version (compare only with earlier values of this watch)."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        """Close the watch's connection."""
        self._db.close()


def account_epoch(db: Connection, account: str) -> tuple[int, str]:
    """The account's own epoch and the inputs it was counted with (0 and OFF: never set)."""
    row = db.execute(
        "SELECT epoch, inputs FROM view_epochs WHERE account = ?", (account,)
    ).fetchone()
    return (0, INITIAL_INPUTS) if row is None else (int(row[0]), str(row[1]))


def server_epoch(db: Connection) -> tuple[int, str | None]:
    """The server-wide epoch and the settings last recorded (``None``: never set).

    The epoch no longer moves (see the module doc); the settings are what
    the last server to start recorded (:meth:`ViewSettings.to_text`).
    """
    row = db.execute("SELECT epoch, settings FROM server_views WHERE id = 1").fetchone()
    return (0, None) if row is None else (int(row[0]), str(row[1]))


def write_account_epoch(
    db: Connection, account: str, epoch: int, inputs: str, now: datetime
) -> None:
    """Record ``epoch`` as counted with ``inputs`` (inside the caller's transaction)."""
    db.execute(
        "INSERT INTO view_epochs (account, epoch, inputs, changed_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (account) DO UPDATE SET epoch = excluded.epoch,"
        " inputs = excluded.inputs, changed_at = excluded.changed_at",
        (account, epoch, inputs, encode_time(now)),
    )


def write_server_epoch(db: Connection, epoch: int, settings: str, now: datetime) -> None:
    """Record the server-wide ``epoch`` as counted with ``settings``."""
    db.execute(
        "INSERT INTO server_views (id, epoch, settings, changed_at) VALUES (1, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch,"
        " settings = excluded.settings, changed_at = excluded.changed_at",
        (epoch, settings, encode_time(now)),
    )


class ViewEpochMethods:
    """The keystore's view-epoch operations, mixed into :class:`~transcoder.keys.keystore.KeyStore`.

    Relies on the keystore's transaction, policy reading and audit helpers.
    """

    # Provided by KeyStore (declared for the type checker only).
    _transaction: Callable[..., AbstractContextManager[Connection]]
    _policy: Callable[[Connection, str, datetime], Policy]
    _record: Callable[..., None]
    _refused: Callable[..., None]

    def view_inputs(self, account: str, now: datetime, with_keys: bool = True) -> ViewInputs:
        """The account's view epoch with the policy and keys it counts, read together.

        Inputs that changed with no write -- a key expired -- are counted
        here first, so the epoch returned always stands for these inputs.
        Without ``with_keys`` the keys are left out (an epoch check).
        """
        return self._read_views(account, require_aware(now), with_keys)

    def view_epoch(self, account: str, now: datetime) -> int:
        """The account's current view epoch (see :meth:`view_inputs`)."""
        return self._read_views(account, require_aware(now), with_keys=False).epoch

    def _read_views(self, account: str, now: datetime, with_keys: bool) -> ViewInputs:
        with self._transaction("DEFERRED") as db:
            state = self._view_state(db, account, now, with_keys)
        if state.counted:
            return state.inputs
        with self._transaction() as db:
            self._count_views(db, account, now, None, cause="drift")
            return self._view_state(db, account, now, with_keys).inputs

    #: The settings of the server this keystore serves (:meth:`note_server_views`);
    #: ``None`` in a tool, which counts with the settings the last server recorded.
    view_settings: ViewSettings | None = None

    def note_server_views(
        self,
        settings: ViewSettings,
        now: datetime,
        origin: Mapping[str, str] | None = None,
        legacy: str | None = None,
    ) -> int:
        """Use ``settings`` from now on, and record them; the server-wide epoch.

        This keystore counts each account's views with them from its next
        read on, so a setting that changed moves the epoch of each account it
        applies to at that read (:class:`ViewSettings`).  Recorded for tools
        (``transcoder-admin`` counts with them) and audited when they differ
        from the last record (``views.settings``, naming what changed).

        ``legacy`` is the id an earlier build, which counted server settings
        in one server-wide epoch, would record for these same settings: found
        recorded, the settings did not change with the upgrade, and the
        accounts are carried over (:meth:`_carry_over`) instead of each
        resynchronising once.
        """
        now = require_aware(now)
        self.view_settings = settings
        text = settings.to_text()
        with self._transaction("DEFERRED") as db:
            epoch, recorded = server_epoch(db)
        if recorded == text:
            return epoch
        with self._transaction() as db:
            epoch, recorded = server_epoch(db)
            if recorded != text:
                write_server_epoch(db, epoch, text, now)
                if recorded is not None and recorded == legacy:
                    carried = self._carry_over(db, settings, now)
                    self._record("views.settings", "*", now, origin, changed=[], carried=carried)
                elif recorded is not None:
                    changed = settings.changes_from(ViewSettings.from_text(recorded))
                    self._record("views.settings", "*", now, origin, changed=changed)
        return epoch

    def _carry_over(self, db: Connection, settings: ViewSettings, now: datetime) -> int:
        """Inside a write transaction: re-record, at the same epoch, the inputs of every
        account an earlier build counted without settings, when they are still its
        inputs (the rest moves at its next read, as any drift); how many were carried."""
        rows = db.execute(
            "SELECT account, inputs FROM view_epochs WHERE inputs <> ?", (INITIAL_INPUTS,)
        ).fetchall()
        carried = 0
        for row in rows:
            account, recorded = str(row[0]), str(row[1])
            policy = self._policy(db, account, now)
            usable = usable_material(db, account, policy, now)
            if recorded == _inputs_id(policy, usable, None):
                db.execute(
                    "UPDATE view_epochs SET inputs = ? WHERE account = ?",
                    (_inputs_id(policy, usable, settings), account),
                )
                carried += 1
        return carried

    def _settings(self, recorded: str | None) -> ViewSettings:
        """The settings views are counted with: this server's, else the last recorded."""
        if self.view_settings is not None:
            return self.view_settings
        return ViewSettings.from_text(recorded)

    def _view_state(
        self, db: Connection, account: str, now: datetime, with_keys: bool = False
    ) -> _ViewState:
        """Epochs and inputs as stored; ``with_keys``: all the account's keys too."""
        policy = self._policy(db, account, now)
        server, recorded_settings = server_epoch(db)
        settings = self._settings(recorded_settings)
        current = _inputs_id(policy, usable_material(db, account, policy, now), settings)
        keys: tuple[StoredKey, ...] = ()
        if with_keys:
            rows = db.execute(
                f"SELECT {KEY_COLUMNS} FROM keys WHERE account = ? ORDER BY id", (account,)
            ).fetchall()
            keys = tuple(stored_key(row, now) for row in rows)
        own, recorded = account_epoch(db, account)
        inputs = ViewInputs(own + server, policy, keys, first_expiry(db, account, now))
        return _ViewState(inputs, own, current, current == recorded)

    def _count_views(
        self,
        db: Connection,
        account: str,
        now: datetime,
        origin: Mapping[str, str] | None,
        cause: str,
    ) -> None:
        """Inside a write transaction: bump the account's epoch if its view inputs changed.

        ``cause`` names the change for the audit record (``drift``: none, a
        key expired).  A change past :data:`MAX_ACCOUNT_EPOCH` is refused,
        so the whole transaction is undone; drift is always counted.
        """
        state = self._view_state(db, account, now)
        if state.counted:
            return
        if cause != "drift" and state.own_epoch >= MAX_ACCOUNT_EPOCH:
            error = TooManyViewChanges(
                "too many key and policy changes for this account; ask the administrator"
            )
            self._refused(account, error, now, origin, event="views.refused")
            raise error
        write_account_epoch(db, account, state.own_epoch + 1, state.current, now)
        epoch = state.inputs.epoch + 1
        self._record("views.changed", account, now, origin, epoch=epoch, cause=cause)


@dataclass(frozen=True)
class _ViewState:
    """What :meth:`ViewEpochMethods._view_state` read: inputs, own epoch, and whether counted."""

    inputs: ViewInputs
    own_epoch: int
    current: str
    counted: bool
