"""A load generator for a cluster: many imaplib sessions doing the commands mail clients do.

Each client is a thread that, until the time is up, loops: LOGIN, SELECT
INBOX, UID FETCH of the first message's ``BODY.PEEK[]``, UID STORE of a flag,
APPEND of a small message, LOGOUT -- six commands, each counted when it
answered OK; anything else (NO, BAD, a dropped connection) is a protocol
error, counted and the loop starts over.  :func:`run_load` spreads the
clients over several processes (threads of one Python process would
measure its GIL, not the servers) and adds their counts up.
"""

from __future__ import annotations

import contextlib
import imaplib
import multiprocessing
import threading
import time
from dataclasses import dataclass
from typing import Any

#: Errors kept as text per result.
MAX_FAILURES = 10
#: Commands per loop.
COMMANDS = ("LOGIN", "SELECT", "FETCH", "STORE", "APPEND", "LOGOUT")
APPENDED = b"From: load@example.org\r\nSubject: load\r\n\r\nload test message\r\n"


@dataclass(frozen=True)
class LoadResult:
    """Commands answered OK, protocol errors, sessions completed, seconds measured."""

    commands: int
    errors: int
    sessions: int
    seconds: float
    #: The first few errors, as text (for the summary).
    failures: tuple[str, ...] = ()

    @property
    def rate(self) -> float:
        """Commands per second."""
        return self.commands / self.seconds if self.seconds else 0.0

    def __add__(self, other: LoadResult) -> LoadResult:
        return LoadResult(
            self.commands + other.commands,
            self.errors + other.errors,
            self.sessions + other.sessions,
            max(self.seconds, other.seconds),
            (self.failures + other.failures)[:MAX_FAILURES],
        )


def _session(port: int, user: str, password: str) -> int:
    """One loop; the commands answered OK (raises on the first that was not)."""
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    done = 0
    data: Any  # imaplib's answers differ in type per command
    try:
        imap.login(user, password)
        done += 1
        typ, data = imap.select("INBOX")
        assert typ == "OK", data
        done += 1
        typ, data = imap.uid("SEARCH", "ALL")
        assert typ == "OK" and data[0], data
        first = data[0].split()[0].decode()
        typ, data = imap.uid("FETCH", first, "(BODY.PEEK[])")
        # Another session's STORE may arrive first as an unsolicited FETCH of FLAGS
        # (RFC 3501 section 7.4.2): the body is whichever response carries a literal.
        assert typ == "OK" and any(isinstance(part, tuple) for part in data), data
        done += 1
        typ, data = imap.uid("STORE", first, "+FLAGS", r"(\Flagged)")
        assert typ == "OK", data
        done += 1
        typ, data = imap.append("INBOX", None, None, APPENDED)
        assert typ == "OK", data
        done += 1
        typ, data = imap.logout()
        assert typ == "BYE", data
        done += 1
        return done
    finally:
        if imap.state != "LOGOUT":
            with contextlib.suppress(OSError):
                imap.shutdown()


def _clients(port: int, user: str, password: str, clients: int, seconds: float) -> LoadResult:
    """``clients`` threads of this process for ``seconds``."""
    lock = threading.Lock()
    totals = [0, 0, 0]
    failures: list[str] = []
    end = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < end:
            try:
                done = _session(port, user, password)
                ok, error = done, 0
            except (imaplib.IMAP4.error, OSError, AssertionError) as exc:
                ok, error = 0, 1
                with lock:
                    if len(failures) < MAX_FAILURES:
                        failures.append(f"{type(exc).__name__}: {exc}"[:300])
            with lock:
                totals[0] += ok
                totals[1] += error
                totals[2] += 1 - error

    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return LoadResult(totals[0], totals[1], totals[2], time.monotonic() - start, tuple(failures))


def _worker(args: tuple[int, str, str, int, float]) -> LoadResult:
    return _clients(*args)


def run_load(
    port: int, user: str, password: str, clients: int, seconds: float, processes: int = 2
) -> LoadResult:
    """``clients`` concurrent sessions through ``port`` for ``seconds``, in ``processes``."""
    processes = max(1, min(processes, clients))
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    if processes == 1:
        return _clients(port, user, password, clients, seconds)
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        results = pool.map(_worker, [(port, user, password, n, seconds) for n in shares])
    total = results[0]
    for result in results[1:]:
        total = total + result
    return total


@dataclass(frozen=True)
class HoldResult:
    """Idle sessions held at once: how many got through LOGIN and SELECT, and kept answering."""

    wanted: int
    held: int
    errors: int
    noops: int
    #: Median NOOP round trip while all were held, in seconds.
    noop_median: float
    failures: tuple[str, ...] = ()


class _Session:
    """One raw IMAP connection (asyncio), speaking just enough for LOGIN, SELECT, NOOP."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader, self.writer, self.tag = reader, writer, 0

    async def command(self, text: str) -> None:
        """Send ``text`` tagged; read to the tagged answer; raise unless it is OK."""
        self.tag += 1
        tag = f"h{self.tag}".encode()
        self.writer.write(tag + b" " + text.encode() + b"\r\n")
        await self.writer.drain()
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError(f"connection closed during {text.split()[0]}")
            if line.startswith(tag + b" "):
                if not line[len(tag) + 1 :].startswith(b"OK"):
                    raise RuntimeError(line.decode(errors="replace").strip())
                return


async def _hold(
    port: int, user: str, password: str, count: int, seconds: float, interval: float
) -> HoldResult:
    import asyncio
    import statistics

    failures: list[str] = []
    times: list[float] = []
    errors = 0

    async def open_one() -> _Session | None:
        nonlocal errors
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
            session = _Session(reader, writer)
            greeting = await reader.readline()
            if not greeting.startswith(b"* OK"):
                raise RuntimeError(greeting.decode(errors="replace").strip())
            await session.command(f'LOGIN "{user}" "{password}"')
            await session.command("SELECT INBOX")
            return session
        except (OSError, RuntimeError, ConnectionError) as exc:
            errors += 1
            if len(failures) < MAX_FAILURES:
                failures.append(f"{type(exc).__name__}: {exc}"[:300])
            return None

    opened: list[_Session] = []
    for start in range(0, count, 50):  # 50 logins at a time: a ramp, not a thundering herd
        batch = await asyncio.gather(*(open_one() for _ in range(start, min(count, start + 50))))
        opened.extend(s for s in batch if s is not None)

    async def keep(session: _Session) -> bool:
        nonlocal errors
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(interval)
            began = time.monotonic()
            try:
                await session.command("NOOP")
            except (OSError, RuntimeError, ConnectionError) as exc:
                errors += 1
                if len(failures) < MAX_FAILURES:
                    failures.append(f"NOOP {type(exc).__name__}: {exc}"[:300])
                return False
            times.append(time.monotonic() - began)
        return True

    kept = await asyncio.gather(*(keep(s) for s in opened))
    for session in opened:
        session.writer.close()
    median = statistics.median(times) if times else 0.0
    return HoldResult(count, sum(kept), errors, len(times), median, tuple(failures))


def hold_sessions(
    port: int, user: str, password: str, count: int, seconds: float, interval: float = 5.0
) -> HoldResult:
    """Open ``count`` sessions through ``port`` (LOGIN, SELECT INBOX), keep each for
    ``seconds`` with a NOOP every ``interval`` seconds, as idle mail clients do.

    One asyncio loop holds them all (a thread each would measure this
    process, not the servers).  ``held``: sessions that answered every
    command; any other answer, or a closed connection, is an error.
    """
    import asyncio

    return asyncio.run(_hold(port, user, password, count, seconds, interval))
