"""``DIR/audit.jsonl``: the SQLite setup's audit trail, appended by several processes, pruned.

Each line is one twisted.logger event as JSON, the audit record under
``"audit"`` (written by :func:`transcoder.layers.audit_file_observer`).  The
running server and ``transcoder-admin`` append to it; ``transcoder-admin
audit prune`` rewrites it without the records older than a cut-off.  A
rewrite replaces the file (a new file renamed over the old one, so a crash
leaves either file whole), which a writer holding the old one open must
notice.  They coordinate with ``flock`` on the file itself:

* a writer (:class:`AuditLog`) takes the lock for each line, then checks
  that the path still names the file it holds -- if not, the file was
  replaced while it waited: it opens the new one and tries again;
* the pruner (:func:`prune_audit_file`) holds the lock on the old file from
  reading it until the new one is renamed over it.

So no line appended while a prune runs is lost.  The PostgreSQL keystore
keeps its trail in the ``audit`` table instead
(:meth:`~transcoder.keys.pg_keystore.PgKeyStore.prune_audit`).

No Twisted here: plain files and ``fcntl``.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from transcoder.keys.keystore_schema import decode_time
from transcoder.keys.model import require_aware


def _open_append(path: Path) -> TextIO:
    """``path`` opened for appending, created private (0600): who uses which key is not public."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return open(fd, "a", encoding="utf-8")


class AuditLog:
    """``DIR/audit.jsonl`` opened for appending lines, safe against a concurrent prune.

    Has the ``write`` and ``flush`` a twisted.logger file observer calls;
    each ``write`` (one event's line) is appended whole, under the lock,
    to the file the path names at that moment (see the module doc).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = _open_append(self.path)

    def write(self, text: str) -> int:
        """Append ``text`` to the current file, under its lock; the characters written."""
        while True:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
            try:
                if self._names_open_file():
                    self._file.write(text)
                    self._file.flush()
                    return len(text)
            finally:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()  # replaced by a prune: append to the new file
            self._file = _open_append(self.path)

    def _names_open_file(self) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(self._file.fileno())
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def flush(self) -> None:
        """Nothing to do: every :meth:`write` is flushed."""

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _record(line: str) -> dict[str, Any] | None:
    """The audit record of one line, ``None`` for a line that holds none."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    record = event.get("audit") if isinstance(event, dict) else None
    return record if isinstance(record, dict) else None


def _time(record: dict[str, Any] | None) -> datetime | None:
    try:
        return decode_time(str(record["time"])) if record is not None else None
    except (KeyError, ValueError):
        return None


def read_audit_records(path: Path, account: str | None = None) -> list[dict[str, Any]]:
    """The records in ``path`` (of ``account``), oldest first; none when it does not exist."""
    try:
        with open(path, encoding="utf-8") as lines:
            records = [_record(line) for line in lines]
    except FileNotFoundError:
        return []
    return [r for r in records if r is not None and (account is None or r["account"] == account)]


def prune_audit_file(path: Path, before: datetime) -> int:
    """Rewrite ``path`` without the records dated before ``before``; how many were dropped.

    Lines without a readable record time are kept: nothing is dropped that
    is not known to be old.  The new file is written beside the old one,
    synced, and renamed over it while the old one is locked (module doc).
    """
    cutoff = require_aware(before, "before")
    if not path.exists():
        return 0
    with open(path, encoding="utf-8") as old:
        fcntl.flock(old.fileno(), fcntl.LOCK_EX)
        kept, dropped = _split(old, cutoff)
        if dropped:
            _replace(path, kept)
    return dropped


def _split(lines: Iterator[str] | TextIO, cutoff: datetime) -> tuple[list[str], int]:
    kept: list[str] = []
    dropped = 0
    for line in lines:
        moment = _time(_record(line))
        if moment is not None and moment < cutoff:
            dropped += 1
        else:
            kept.append(line if line.endswith("\n") else line + "\n")
    return kept, dropped


def _replace(path: Path, lines: list[str]) -> None:
    """``lines`` as the new content of ``path``: written beside it, synced, renamed over it."""
    partial = path.with_name(f".{path.name}.prune-{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(fd, "w", encoding="utf-8") as out:
            out.writelines(lines)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
