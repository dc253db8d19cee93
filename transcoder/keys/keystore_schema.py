"""The keystore's SQLite schema, its migrations, and how values map to rows.

Schema versions are counted in ``PRAGMA user_version`` (0 = empty file).
:data:`MIGRATIONS` is append-only: entry ``n`` takes a database from version
``n`` to ``n + 1``, and is applied with the version bump in one transaction,
so a failed migration leaves the file as it was.

Times are stored as fixed-width UTC text (``2026-01-31T00:00:00.000000Z``),
so SQL compares them correctly as strings.  ``EXPIRED`` is never stored: it
is computed when a key is read (see :class:`~transcoder.keys.model.KeyStatus`).
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from transcoder.errors import ConfigurationError
from transcoder.keys.model import (
    KeyFormat,
    KeyStatus,
    KeyUsage,
    OpenPgpDetails,
    SmimeDetails,
    StoredKey,
    ValidatedKey,
    require_aware,
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE keys (
            id INTEGER PRIMARY KEY,
            account TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            format TEXT NOT NULL CHECK (format IN ('SMIME', 'OPENPGP')),
            status TEXT NOT NULL CHECK (status IN ('ACTIVE', 'RETIRED')),
            usages TEXT NOT NULL,
            addresses TEXT NOT NULL,
            not_after TEXT,
            key_algorithm TEXT NOT NULL,
            material BLOB NOT NULL,
            details TEXT NOT NULL,
            created_at TEXT NOT NULL,
            activated_at TEXT NOT NULL,
            retired_at TEXT,
            UNIQUE (account, fingerprint)
        )""",
        "CREATE INDEX keys_by_fingerprint ON keys (fingerprint)",
        """CREATE TABLE policies (
            account TEXT PRIMARY KEY,
            mode TEXT NOT NULL CHECK (mode IN ('ALWAYS', 'OFF')),
            format TEXT CHECK (format IN ('SMIME', 'OPENPGP')),
            updated_at TEXT NOT NULL
        )""",
    ),
    # Version 2: view epochs (transcoder.keys.view_epochs).  No rows: every
    # account starts at epoch 0 counted with policy OFF, so an account whose
    # views were already transcoded presents a new UIDVALIDITY once.
    (
        """CREATE TABLE view_epochs (
            account TEXT PRIMARY KEY,
            epoch INTEGER NOT NULL CHECK (epoch >= 0),
            inputs TEXT NOT NULL,
            changed_at TEXT NOT NULL
        )""",
        """CREATE TABLE server_views (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            epoch INTEGER NOT NULL CHECK (epoch >= 0),
            settings TEXT NOT NULL,
            changed_at TEXT NOT NULL
        )""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

KEY_COLUMNS = (
    "account, fingerprint, format, status, usages, addresses, not_after, key_algorithm,"
    " material, details, created_at, activated_at, retired_at"
)


def migrate(connection: sqlite3.Connection, migrations: Sequence[Sequence[str]]) -> int:
    """Bring the database (autocommit connection) to ``len(migrations)``; return that version."""
    target = len(migrations)
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        if version > target:
            raise ConfigurationError(
                f"keystore schema version {version} is newer than this software ({target})"
            )
        for statements in migrations[version:]:
            for statement in statements:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {target:d}")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return target


def encode_time(moment: datetime | None) -> str | None:
    """The stored form of ``moment`` (UTC, fixed width), ``None`` for ``None``."""
    if moment is None:
        return None
    return require_aware(moment, "time").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decode_time(text: str) -> datetime:
    """Inverse of :func:`encode_time` for a stored time."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def decode_optional_time(text: str | None) -> datetime | None:
    """Inverse of :func:`encode_time`, ``None`` included."""
    return None if text is None else decode_time(text)


def encode_usages(usages: frozenset[KeyUsage]) -> str:
    """``"ENCRYPT SIGN"``: sorted names separated by a space."""
    return " ".join(sorted(usage.value for usage in usages))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_details(details: SmimeDetails | OpenPgpDetails) -> str:
    """The JSON text of the format-specific details."""
    if isinstance(details, OpenPgpDetails):
        return json.dumps({"encryption_subkeys": list(details.encryption_subkeys)})
    return json.dumps(
        {
            "issuer": _b64(details.issuer),
            "serial_number": str(details.serial_number),
            "subject_key_identifier": (
                _b64(details.subject_key_identifier)
                if details.subject_key_identifier is not None
                else None
            ),
            "chain": [_b64(cert) for cert in details.chain],
        }
    )


def decode_details(key_format: KeyFormat, text: str) -> SmimeDetails | OpenPgpDetails:
    """Inverse of :func:`encode_details`."""
    data: dict[str, Any] = json.loads(text)
    if key_format is KeyFormat.OPENPGP:
        return OpenPgpDetails(encryption_subkeys=tuple(data["encryption_subkeys"]))
    ski = data["subject_key_identifier"]
    return SmimeDetails(
        issuer=base64.b64decode(data["issuer"]),
        serial_number=int(data["serial_number"]),
        subject_key_identifier=base64.b64decode(ski) if ski is not None else None,
        chain=tuple(base64.b64decode(cert) for cert in data["chain"]),
    )


def key_values(account: str, key: ValidatedKey, now: datetime) -> dict[str, Any]:
    """Named parameters for storing ``key`` as a newly ACTIVE row at ``now``."""
    return {
        "account": account,
        "fingerprint": key.fingerprint,
        "format": key.format.value,
        "status": KeyStatus.ACTIVE.value,
        "usages": encode_usages(key.usages),
        "addresses": json.dumps(list(key.addresses)),
        "not_after": encode_time(key.not_after),
        "key_algorithm": key.key_algorithm,
        "material": key.material,
        "details": encode_details(key.details),
        "created_at": encode_time(now),
        "activated_at": encode_time(now),
        "retired_at": None,
    }


def stored_key(row: sqlite3.Row, now: datetime) -> StoredKey:
    """The key in ``row`` (selected with :data:`KEY_COLUMNS`) as reported at ``now``."""
    key_format = KeyFormat(row["format"])
    not_after = decode_optional_time(row["not_after"])
    status = KeyStatus(row["status"])
    if status is KeyStatus.ACTIVE and not_after is not None and not_after < now:
        status = KeyStatus.EXPIRED
    return StoredKey(
        format=key_format,
        fingerprint=row["fingerprint"],
        addresses=tuple(json.loads(row["addresses"])),
        not_after=not_after,
        usages=frozenset(KeyUsage(name) for name in row["usages"].split()),
        material=bytes(row["material"]),
        key_algorithm=row["key_algorithm"],
        details=decode_details(key_format, row["details"]),
        account=row["account"],
        status=status,
        created_at=decode_time(row["created_at"]),
        activated_at=decode_time(row["activated_at"]),
        retired_at=decode_optional_time(row["retired_at"]),
    )
