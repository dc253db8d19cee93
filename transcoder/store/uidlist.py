"""The per-mailbox UID list, atomic file writes and inter-process locks.

``transcoder-uidlist`` in each mailbox directory maps Maildir base names to
UIDs (RFC 3501 section 2.3.1.1)::

    transcoder-uidlist 1 V<uidvalidity> N<next uid> R<highest recent-claimed uid> G<generation>
    <uid> <base name>
    ...

It is only ever replaced whole (temporary file, fsync, rename, fsync of the
directory) while holding ``transcoder-uidlist.lock`` with ``flock``, so two
server processes or an admin tool never assign the same UID twice.  ``G``
grows with every write; with ``V`` it tells a process cheaply whether another
one changed the list (a reset starts ``G`` again, but under a new ``V``).  A
missing or unreadable list gets a new UIDVALIDITY from the account's
``transcoder-uidvalidity`` counter, which only ever grows, so UIDs are never
reused under one UIDVALIDITY -- not even when a mailbox is deleted and
created again within the same second.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from transcoder.errors import StoreError
from transcoder.files import write_atomically

UIDLIST_FILE = "transcoder-uidlist"
UIDLIST_LOCK = "transcoder-uidlist.lock"
UIDVALIDITY_FILE = "transcoder-uidvalidity"
_MAGIC = "transcoder-uidlist"
_VERSION = "1"
_MAX_UID = 2**32 - 1


class CorruptUidListError(StoreError):
    """The UID list of a mailbox cannot be read."""


class FileLock:
    """An exclusive ``flock`` on a lock file, re-entrant within this object.

    ``flock`` locks conflict between two open descriptions even inside one
    process, so nested use goes through the depth counter instead.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._depth = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the duration of the ``with`` block."""
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def acquire(self) -> None:
        """Take the lock (or one more level of it); pair with :meth:`release`."""
        if self._depth == 0:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        self._depth += 1

    def release(self) -> None:
        """Give back one level; the last one releases the flock."""
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


@dataclass(frozen=True)
class UidList:
    """The contents of a ``transcoder-uidlist`` file."""

    validity: int
    next_uid: int
    recent_upto: int = 0
    generation: int = 0
    entries: tuple[tuple[int, str], ...] = ()

    def render(self) -> bytes:
        """The file's bytes."""
        head = (
            f"{_MAGIC} {_VERSION} V{self.validity} N{self.next_uid} "
            f"R{self.recent_upto} G{self.generation}\n"
        )
        return (head + "".join(f"{uid} {base}\n" for uid, base in self.entries)).encode("utf-8")


def _parse_header(line: str) -> dict[str, int]:
    words = line.split()
    if len(words) != 6 or words[0] != _MAGIC or words[1] != _VERSION:
        raise CorruptUidListError("bad uid list header")
    fields = {}
    for word in words[2:]:
        if not word[1:].isdigit():
            raise CorruptUidListError("bad uid list header field")
        fields[word[0]] = int(word[1:])
    if set(fields) != {"V", "N", "R", "G"} or not 0 < fields["V"] <= _MAX_UID:
        raise CorruptUidListError("bad uid list header fields")
    if not 0 < fields["N"] <= _MAX_UID + 1:
        raise CorruptUidListError("bad next uid")
    return fields


def parse_uidlist(text: str) -> UidList:
    """Parse a uid list; raises :class:`CorruptUidListError` on any inconsistency."""
    lines = text.split("\n")
    if lines[-1] != "":
        raise CorruptUidListError("truncated uid list")
    head = _parse_header(lines[0])
    entries: list[tuple[int, str]] = []
    last = 0
    for line in lines[1:-1]:
        number, _, base = line.partition(" ")
        if not number.isdigit() or not base or "/" in base:
            raise CorruptUidListError("bad uid list entry")
        uid = int(number)
        if not last < uid < head["N"]:
            raise CorruptUidListError("uids out of order")
        entries.append((uid, base))
        last = uid
    return UidList(head["V"], head["N"], head["R"], head["G"], tuple(entries))


def read_uidlist(path: Path) -> UidList | None:
    """The uid list at ``path``, or None if there is none; CorruptUidListError if unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return parse_uidlist(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CorruptUidListError("uid list is not UTF-8") from e


def read_version(path: Path) -> tuple[int, int] | None:
    """``(UIDVALIDITY, generation)`` of the uid list at ``path`` (reads the first line only).

    The pair changes with every write, also across a reset that restarts
    the generation count (the UIDVALIDITY is new then).
    """
    try:
        with open(path, "rb") as f:
            line = f.readline(256).decode("utf-8", "replace")
        head = _parse_header(line)
    except (FileNotFoundError, CorruptUidListError):
        return None
    return head["V"], head["G"]


def salvage_validity(path: Path) -> int:
    """The UIDVALIDITY a damaged uid list still shows, or 0."""
    try:
        with open(path, "rb") as f:
            words = f.readline(256).decode("utf-8", "replace").split()
    except FileNotFoundError:
        return 0
    for word in words:
        if word.startswith("V") and word[1:].isdigit():
            return int(word[1:])
    return 0


def allocate_uidvalidity(account_root: Path, now: float, above: int = 0) -> int:
    """A fresh UIDVALIDITY for a mailbox of this account: the clock, but always growing.

    ``above`` is a value that must not be reused (the validity of a damaged
    list).  The last value handed out is kept in ``transcoder-uidvalidity``.
    """
    path = account_root / UIDVALIDITY_FILE
    with FileLock(account_root / (UIDVALIDITY_FILE + ".lock")).held():
        try:
            last = int(path.read_text("ascii").strip() or 0)
        except (FileNotFoundError, ValueError):
            last = 0
        value = max(int(now), last + 1, above + 1)
        if value > _MAX_UID:
            value = 1  # 32-bit wrap-around (RFC 3501 section 9: nz-number)
        write_atomically(path, b"%d\n" % value)
    return value
