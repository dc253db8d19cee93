"""One load-generator IMAP connection over asyncio: pipelines, IDLE, timings.

A :class:`Connection` writes commands and reads responses on a plain TCP
stream; every response goes through :class:`load_wire.ResponseReader` and
the connection's :class:`load_checks.ProtocolChecker`.  :meth:`Connection.run`
sends a list of :class:`Spec` as one pipeline (RFC 3501 section 5.5): the
command lines go out in a single write, except that a synchronizing literal
(APPEND without LITERAL+) waits for the server's ``+`` first; then it waits
for every tagged response.  :meth:`Connection.idle` runs IDLE (RFC 2177)
for a while.  A command's latency runs from writing it to reading its
tagged response (queueing behind the commands pipelined before it
included); for IDLE, the time spent idling is left out.

Anything that ends a session early -- a timeout, the server closing the
connection, a response that does not parse -- is recorded as a protocol
error and raised as :class:`SessionAborted`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from load_checks import SEQUENCE_COMMANDS, Command, ErrorLog, ProtocolChecker
from load_wire import Response, ResponseReader, WireError, code_name


class SessionAborted(Exception):
    """The session cannot go on (the error is already recorded)."""


@dataclass(frozen=True)
class Spec:
    """A command to send: its statistics label, its line (no tag), an APPEND literal."""

    label: str
    line: bytes
    literal: bytes | None = None
    #: For ``STORE n +FLAGS (f)``: (n, f), checked against the FETCH it causes.
    stored: tuple[int, bytes] | None = None


class Stats:
    """Latencies (seconds) and refusals of the commands completed before the deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.refused: dict[str, int] = defaultdict(int)

    def record(self, label: str, latency: float, done_at: float, ok: bool) -> None:
        """One completed command, counted if it completed by the deadline."""
        if done_at <= self.deadline:
            self.latencies[label].append(latency)
            if not ok:
                self.refused[label] += 1


def command_name(line: bytes) -> str:
    """``"UID FETCH"`` of ``b"UID FETCH 1:* (FLAGS)"``, ``"NOOP"`` of ``b"NOOP"``."""
    words = line.split(b" ", 2)
    if words[0].upper() == b"UID" and len(words) > 1:
        return "UID " + words[1].upper().decode()
    return words[0].upper().decode()


def check_pipeline(specs: Sequence[Spec]) -> None:
    """Refuse a pipeline that RFC 3501 section 5.5 forbids to clients.

    After any command but FETCH, STORE and SEARCH (UID forms included), a
    client must wait for the completion before naming sequence numbers.
    """
    others = False
    for spec in specs:
        sequence = command_name(spec.line) in SEQUENCE_COMMANDS
        if sequence and others:
            raise ValueError(f"invalid pipeline (RFC 3501 5.5): {[s.line for s in specs]}")
        others = others or not sequence


class Connection:
    """One client connection; see the module docstring."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        errors: ErrorLog,
        stats: Stats,
        timeout: float,
    ) -> None:
        self.checker = ProtocolChecker(errors)
        self.capabilities: frozenset[bytes] = frozenset()
        self._stream, self._writer = reader, writer
        self._stats, self._timeout = stats, timeout
        self._wire = ResponseReader()
        self._loop = asyncio.get_running_loop()
        self._futures: dict[bytes, asyncio.Future[Response]] = {}
        self._continuation: asyncio.Future[Response] | None = None
        self._greeting: asyncio.Future[Response] = self._loop.create_future()
        self._tags = itertools.count(1)
        self._closing = False
        self._reading = asyncio.create_task(self._read_loop())

    @classmethod
    async def open(cls, port: int, errors: ErrorLog, stats: Stats, timeout: float) -> Connection:
        """Connect to 127.0.0.1:``port`` and read the greeting."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        connection = cls(reader, writer, errors, stats, timeout)
        try:
            greeting = await asyncio.wait_for(asyncio.shield(connection._greeting), timeout)
        except (TimeoutError, SessionAborted) as e:
            why = f"within {timeout:.0f} s" if isinstance(e, TimeoutError) else f"({e})"
            errors.add(f"no greeting {why}", f"port {port}")
            await connection.close()
            raise SessionAborted from None
        if greeting.name != b"OK":
            errors.add("greeting is not OK", greeting.name.decode())
            await connection.close()
            raise SessionAborted
        return connection

    @property
    def literal_plus(self) -> bool:
        """Whether the server takes non-synchronizing literals (RFC 7888)."""
        return b"LITERAL+" in self.capabilities

    # -- writing -------------------------------------------------------------

    def _register(self, spec: Spec) -> tuple[Command, asyncio.Future[Response]]:
        tag = b"A%d" % next(self._tags)
        line = tag + b" " + spec.line
        command = Command(tag, command_name(spec.line), spec.label, line, stored=spec.stored)
        future: asyncio.Future[Response] = self._loop.create_future()
        self._futures[tag] = future
        return command, future

    def _write(self, octets: bytes, commands: Sequence[Command]) -> None:
        now = self._loop.time()
        for command in commands:
            command.sent_at = now
            self.checker.sent(command)
        self._writer.write(octets)

    async def run(self, specs: Sequence[Spec]) -> list[Response]:
        """Send ``specs`` as one pipeline; their tagged responses, in order."""
        check_pipeline(specs)
        futures, chunk, pending = [], bytearray(), []
        for spec in specs:
            command, future = self._register(spec)
            futures.append(future)
            chunk += command.line
            pending.append(command)
            if spec.literal is None:
                chunk += b"\r\n"
            elif self.literal_plus:
                chunk += b" {%d+}\r\n%s\r\n" % (len(spec.literal), spec.literal)
            else:
                chunk += b" {%d}\r\n" % len(spec.literal)
                self._write(bytes(chunk), pending)
                chunk, pending = bytearray(), []
                if await self._continued(future):
                    chunk += spec.literal + b"\r\n"
        self._write(bytes(chunk), pending)
        return await self._wait(futures)

    async def _continued(self, future: asyncio.Future[Response]) -> bool:
        """Wait for ``+`` (True) or the command's refusal (False)."""
        self._continuation = self._loop.create_future()
        done, _ = await asyncio.wait(
            (self._continuation, future), timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED
        )
        continued, self._continuation = self._continuation in done, None
        if not done:
            await self._abort(f"no continuation within {self._timeout:.0f} s")
        return continued

    async def _wait(self, futures: Sequence[asyncio.Future[Response]]) -> list[Response]:
        try:
            return list(await asyncio.wait_for(asyncio.gather(*futures), self._timeout))
        except TimeoutError:
            await self._abort(f"timeout after {self._timeout:.0f} s")
            raise  # not reached: _abort raises

    async def idle(self, seconds: float) -> None:
        """IDLE for ``seconds`` (changes are checked as they come), then DONE."""
        command, future = self._register(Spec("IDLE", b"IDLE"))
        self._write(command.line + b"\r\n", [command])
        if not await self._continued(future):
            await self._wait([future])
            return
        entering = self._loop.time() - command.sent_at
        await asyncio.sleep(seconds)
        command.sent_at = self._loop.time() - entering  # the idle time is not latency
        self._writer.write(b"DONE\r\n")
        await self._wait([future])

    async def _abort(self, why: str) -> None:
        self.checker.abandon(why)
        await self.close()
        raise SessionAborted(why)

    async def close(self) -> None:
        """Close the connection and stop reading."""
        self._closing = True
        self._writer.close()
        self._reading.cancel()
        for future in self._futures.values():
            if not future.done():
                future.set_exception(SessionAborted("closed"))
        self._futures.clear()

    # -- reading -------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while octets := await self._stream.read(256 * 1024):
                for response in self._wire.feed(octets):
                    self._dispatch(response)
        except WireError as e:
            self.checker.unparsable(str(e))
            why = "unparsable response"
        except (ConnectionError, OSError) as e:
            why = f"connection error {type(e).__name__}"
        else:
            why = "connection closed by the server"
        self._writer.close()
        self._closed(why)

    def _closed(self, why: str) -> None:
        if self.checker.in_progress:
            self.checker.abandon(why)
        elif not (self.checker.logging_out or self._closing or not self._greeting.done()):
            self.checker.errors.add(f"{why} between commands", "")
        self.checker.in_progress.clear()
        for future in (self._greeting, self._continuation, *self._futures.values()):
            if future is not None and not future.done():
                future.set_exception(SessionAborted(why))
                future.exception()  # retrieved: no "never retrieved" warning

    def _dispatch(self, response: Response) -> None:
        if not self._greeting.done():
            self._greeting.set_result(response)
            self._note_capabilities(response)
            return
        if response.kind == "continuation":
            waiting = self._continuation is not None and not self._continuation.done()
            self.checker.continuation(response, waiting)
            if waiting:
                assert self._continuation is not None
                self._continuation.set_result(response)
        elif response.kind == "untagged":
            self._note_capabilities(response)
            self.checker.untagged(response)
        else:
            self._complete(response)

    def _complete(self, response: Response) -> None:
        self._note_capabilities(response)
        command = self.checker.tagged(response)
        assert response.tag is not None
        future = self._futures.pop(response.tag, None)
        if command is None or future is None:
            return
        now = self._loop.time()
        self._stats.record(command.label, now - command.sent_at, now, response.name == b"OK")
        if not future.done():
            future.set_result(response)

    def _note_capabilities(self, response: Response) -> None:
        if response.name == b"CAPABILITY":
            self.capabilities = frozenset(response.data.upper().split())
        elif code_name(response.code) == b"CAPABILITY":
            assert response.code is not None
            self.capabilities = frozenset(response.code.upper().split()[1:])
