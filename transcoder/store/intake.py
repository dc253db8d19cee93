"""How message bytes enter the store: CRLF canonicalisation, unique names, tmp/ files.

Every message that enters a mailbox -- APPEND, COPY from a foreign object, a
file another program dropped into ``new/``, an unknown file found in
``cur/`` -- is rewritten so that its line ends are CRLF: a bare LF becomes
CRLF; a bare CR is left alone (it is data, e.g. in a binary part, and
turning it into a line break would change the message's structure).  No
final line end is added.  So the octets on disk are exactly the octets an
IMAP client receives (RFC 3501 section 2.3.4, RFC822.SIZE), and sizes and
offsets need no translation.  Copies run in bounded chunks.

Files are written into ``tmp/`` and fsync'ed before they are renamed into
place, the Maildir discipline: a crash leaves at most a stray ``tmp/`` file
that no client ever sees.

A file in ``new/`` may have to pass an :class:`IIntakeGate` first (the
gateway virus scan of delivered mail, :mod:`transcoder.scan.delivery`): until
the gate admits it, it stays in ``new/``, unnumbered and unseen by every
session.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any, Protocol

from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface

from transcoder.errors import BadCommand

CHUNK = 2**16
#: Maildir convention: files left in tmp/ this long are debris from a crash.
STALE_TMP_SECONDS = 36 * 3600
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DATE_TIME = re.compile(
    r"\s?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)


def canonical_copy(src: IO[bytes], dst: IO[bytes], chunk: int = CHUNK) -> int:
    """Copy ``src`` to ``dst`` turning bare LF into CRLF; returns the octets written."""
    written = 0
    carry = b""
    while True:
        block = src.read(chunk)
        if not block:
            break
        data = carry + block
        # A CR at the end of a block may pair with an LF at the start of the next.
        carry, data = (b"\r", data[:-1]) if data.endswith(b"\r") else (b"", data)
        out = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        dst.write(out)
        written += len(out)
    dst.write(carry)
    return written + len(carry)


def is_canonical(path: Path, chunk: int = CHUNK) -> bool:
    """True when the file at ``path`` has no bare LF (nothing to rewrite)."""
    previous = b""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            data = previous + block
            if data.count(b"\n") != data.count(b"\r\n"):
                return False
            previous = data[-1:] if data.endswith(b"\r") else b""
    return True


class IIntakeGate(Interface):
    """Decides when a file another program dropped into ``new/`` may enter the mailbox."""

    def admit(mailbox, name):  # noqa: N805 (zope.interface: no self)
        """True when ``new/<name>`` of ``mailbox`` may be moved into ``cur/`` now.

        Called on the reactor thread, under the mailbox's uid list lock, for
        each arrival at each scan of the directory: it must not block.  A
        file held back (False) stays in ``new/``; the gate calls
        ``mailbox.expect_change()`` when its answer changes, so the next
        refresh looks at ``new/`` again.
        """


class IntakeGate(Protocol):
    """:class:`IIntakeGate` as a :class:`typing.Protocol`, for type hints."""

    def admit(self, mailbox: Any, name: str) -> bool:
        """See :meth:`IIntakeGate.admit`."""
        ...


def _safe_hostname(name: str) -> str:
    # Maildir: '/' and ':' may not appear in a file name (':' starts the info).
    name = name.replace("/", "\\057").replace(":", "\\072")
    return re.sub(r"[^\x21-\x7e]", "_", name) or "localhost"


class UniqueNames:
    """Maildir base names ``<seconds>.M<microseconds>Q<counter>R<random>.<host>``.

    Time comes from the injected clock, randomness from the injected
    ``random_bytes``; the counter belongs to this object.  Microseconds and
    counter are zero-padded so that, within one second, names sort in
    arrival order -- new/ files get their UIDs in that order.
    """

    def __init__(
        self,
        clock: IReactorTime,
        random_bytes: Callable[[int], bytes] = os.urandom,
        hostname: str | None = None,
    ) -> None:
        self._clock = clock
        self._random = random_bytes
        self._counter = itertools.count(1)
        self._host = _safe_hostname(hostname if hostname is not None else socket.gethostname())

    def next(self) -> str:
        """A new base name, unique among this host's deliveries."""
        now = self._clock.seconds()
        seconds, micros = int(now), int((now % 1) * 1_000_000)
        counter = next(self._counter)
        return f"{seconds}.M{micros:06d}Q{counter:08d}R{self._random(8).hex()}.{self._host}"


def write_new_file(
    path: Path,
    source: IO[bytes],
    *,
    canonical: bool = True,
    mtime: float | None = None,
) -> int:
    """Create ``path`` (must not exist) from ``source``, fsync it; returns its size.

    Blocking: call it off the reactor thread.  On failure nothing is left at ``path``.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            if canonical:
                size = canonical_copy(source, out)
            else:
                size = 0
                while block := source.read(CHUNK):
                    out.write(block)
                    size += len(block)
            out.flush()
            os.fsync(out.fileno())
        if mtime is not None:
            os.utime(path, (mtime, mtime))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    return size


def remove_stale_tmp(tmp_dir: Path, now: float) -> None:
    """Delete files older than 36 hours from ``tmp/`` (debris of crashed writers)."""
    try:
        entries = list(os.scandir(tmp_dir))
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            if entry.is_file() and entry.stat().st_mtime < now - STALE_TMP_SECONDS:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue


def parse_date(date: datetime | str | bytes | None) -> datetime | None:
    """An APPEND date as a tz-aware datetime: RFC 3501 ``date-time`` or RFC 2822; None stays None.

    Raises :class:`BadCommand` for anything else.
    """
    if date is None or isinstance(date, datetime):
        if date is not None and date.tzinfo is None:
            return date.replace(tzinfo=UTC)
        return date
    text = date.decode("ascii", "replace") if isinstance(date, bytes) else date
    text = text.strip().strip('"')
    m = _DATE_TIME.fullmatch(text)
    if m:
        day, month, year, hh, mm, ss, sign, zh, zm = m.groups()
        if month.lower() not in _MONTHS:
            raise BadCommand(f"Invalid date-time {text!r}")
        offset = timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == "-" else 1)
        try:
            return datetime(
                int(year), _MONTHS.index(month.lower()) + 1, int(day),
                int(hh), int(mm), int(ss), tzinfo=timezone(offset),
            )  # fmt: skip
        except ValueError as e:
            raise BadCommand(f"Invalid date-time {text!r}") from e
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError) as e:
        raise BadCommand(f"Invalid date-time {text!r}") from e
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def rewrite_canonical(src: Path, tmp: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` CRLF-canonical, rewriting it through ``tmp`` only if needed.

    The file keeps its mtime (its INTERNALDATE).  ``dst`` may be ``src``
    itself (an in-place rewrite).  Blocking; the caller holds the mailbox lock.
    """
    if is_canonical(src):
        if src != dst:
            os.rename(src, dst)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # debris of an earlier crash at this very step
    with open(src, "rb") as f:
        write_new_file(tmp, f, mtime=os.fstat(f.fileno()).st_mtime)
    os.rename(tmp, dst)
    if src != dst:
        os.unlink(src)
