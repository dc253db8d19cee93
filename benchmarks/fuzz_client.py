"""The client side of benchmarks/fuzz_commands.py: connections that send fuzzed commands.

:class:`Connection` plays a correct client around hostile content: it sends
each :class:`~tests.security.imap_grammar.FuzzCommand` segment by segment,
the next only after a ``+`` continuation request (RFC 3501 section 4.3),
reads whole responses (:class:`Wire`, literals included) until the
command's tagged answer, and counts what it saw in a :class:`Tally`:
answers by status, ``SERVERBUG`` answers, continuation requests it had no
use for, commands left unanswered, time waited.  Not a test; never run
under pytest.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from common import PASSWORD

from tests.security.imap_grammar import CommandFuzzer, FuzzCommand

#: How long one command may take to be answered (a failed login waits up to its throttle).
ANSWER_TIMEOUT = 60.0
_LITERAL = re.compile(rb"\{(\d+)\}\Z")
_STATUS = re.compile(rb"\S+ (OK|NO|BAD)\b")


#: Ends of a connection that are no finding: the client's LOGOUT, the server's by design
#: (failed logins; another session changed the account's keys or policy: views changed).
EXPECTED_ENDS = (
    "by the client",
    "LOGOUT",
    "STARTTLS accepted",
    "Too many failed logins",
    "Keys or policy of this account changed",
)


def expected(reason: str) -> bool:
    """Whether a connection that ended for ``reason`` ended by design."""
    return any(end in reason for end in EXPECTED_ENDS)


def unanswered(why: Exception, name: str) -> str:
    """The count a command cut off by the connection's end ``why`` goes into."""
    reason = why.args[0] if isinstance(why.args[0], str) else repr(why.args[0])
    if expected(reason):
        return f"cut off by an end by design ({name})"
    return f"left unanswered ({name})"


class Closed(Exception):
    """The server closed the connection, or did not answer in time."""


class Wire:
    """One client connection: sends octets, reads whole responses (literals included)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.bye = b""
        #: What went each way, in order (each piece cut to 2,000 octets).
        self.transcript: list[bytes] = []

    def send(self, data: bytes) -> None:
        """Send ``data``; Closed if the server is gone."""
        self.transcript.append(b"C: " + data[:2000])
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise Closed(f"send failed: {e.__class__.__name__}") from None

    def response(self, deadline: float) -> bytes:
        """The next whole response (a line with the literals it announces)."""
        while True:
            taken = self._take()
            if taken is not None:
                if taken.startswith(b"* BYE"):
                    self.bye = taken[6:60]
                return taken
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                raise Closed("no answer in time") from None
            except OSError as e:
                raise Closed(f"receive failed: {e.__class__.__name__}") from None
            if not data:
                raise Closed(b"BYE " + self.bye if self.bye else "closed without BYE")
            self.transcript.append(b"S: " + data[:2000])
            self.buffer += data

    def _take(self) -> bytes | None:
        pos = 0
        while True:
            end = self.buffer.find(b"\r\n", pos)
            if end < 0:
                return None
            literal = _LITERAL.search(self.buffer, pos, end)
            if literal is None:
                response, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
                return response
            pos = end + 2 + int(literal.group(1))
            if pos > len(self.buffer):
                return None


@dataclass
class Tally:
    """What was sent and seen, merged over every connection."""

    counts: Counter[str] = field(default_factory=Counter)
    #: Seconds spent waiting for answers, and the slowest answer, per command name.
    seconds: Counter[str] = field(default_factory=Counter)
    slowest: dict[str, tuple[float, bytes]] = field(default_factory=dict)
    serverbug: Counter[bytes] = field(default_factory=Counter)
    closed: Counter[str] = field(default_factory=Counter)
    samples: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, other: Tally) -> None:
        """Merge a connection's tally."""
        with self.lock:
            self.counts.update(other.counts)
            self.seconds.update(other.seconds)
            for name, (took, wire) in other.slowest.items():
                if took > self.slowest.get(name, (0.0, b""))[0]:
                    self.slowest[name] = (took, wire)
            self.serverbug.update(other.serverbug)
            self.closed.update(other.closed)
            for key, value in other.samples.items():
                self.samples.setdefault(key, value)


class Connection:
    """One fuzzing connection: its client state guess, its fuzzer, its tally."""

    def __init__(self, wire: Wire, fuzzer: CommandFuzzer, state: str) -> None:
        self.wire = wire
        self.fuzzer = fuzzer
        self.state = state
        self.tally = Tally()
        self.last = b""

    def note(self, command: FuzzCommand, response: bytes) -> None:
        """Count one response to ``command``."""
        if b"SERVERBUG" in response:
            self.tally.serverbug[command.name] += 1
            self.tally.samples.setdefault(f"SERVERBUG {command.name!r}", command.wire[:300])

    def run(self, command: FuzzCommand) -> None:
        """Send ``command`` as a client waiting for "+" would; count its answer."""
        self.last = self.last[-600:] + b" || " + command.wire[:300]
        self.tally.counts["commands sent"] += 1
        if not command.tag:  # an empty line: nothing comes back
            self.tally.counts["empty lines (nothing to answer)"] += 1
            self.wire.send(command.segments[0] or b"")
            return
        self.wire.send(command.segments[0] or b"")
        started = time.monotonic()
        try:
            self._await_answer(command, started + ANSWER_TIMEOUT)
        finally:
            self._timed(command.name.decode("ascii", "replace"), started, command.wire)

    def _timed(self, name: str, started: float, wire: bytes) -> None:
        took = time.monotonic() - started
        self.tally.seconds[name] += took
        if took > self.tally.slowest.get(name, (0.0, b""))[0]:
            self.tally.slowest[name] = (took, wire[:120])

    def _await_answer(self, command: FuzzCommand, deadline: float) -> None:
        """Read until ``command`` is answered, sending its further segments on "+"."""
        pending = list(command.segments[1:])
        while True:
            try:
                response = self.wire.response(deadline)
            except Closed as why:
                name = command.name.decode("ascii", "replace")
                self.tally.counts[unanswered(why, name)] += 1
                raise
            self.note(command, response)
            if response.startswith(b"+") and pending:
                segment = pending.pop(0)
                if segment is None:
                    self.tally.counts["continuation for an oversized literal"] += 1
                    raise Closed("server asked for an oversized literal")
                self.wire.send(segment)
            elif response.startswith(b"+"):
                self.tally.counts["unexpected continuation request"] += 1
                raise Closed("unexpected continuation request")
            elif self._answers(command, response):
                return

    def _answers(self, command: FuzzCommand, response: bytes) -> bool:
        if not command.tagged:
            if response.startswith(b"* BAD"):
                self.tally.counts["untagged BAD for an invalid tag"] += 1
                return True
            return False
        if not response.startswith(command.tag + b" "):
            return False
        status = _STATUS.match(response)
        if status is None:
            return False
        self.tally.counts[f"tagged {status.group(1).decode()}"] += 1
        self._follow_state(command, status.group(1))
        if command.name == b"STARTTLS" and status.group(1) == b"OK":
            raise Closed("STARTTLS accepted: the server now expects a TLS handshake")
        if command.name == b"LOGOUT" and status.group(1) == b"OK":
            raise Closed(b"BYE " + self.wire.bye + b" (LOGOUT)")
        return True

    def _follow_state(self, command: FuzzCommand, status: bytes) -> None:
        """Track the session state well enough to draw commands for it."""
        name = command.name
        if name in (b"SELECT", b"EXAMINE"):
            self.state = "select" if status == b"OK" else "auth"
        elif name in (b"CLOSE", b"UNSELECT") and status == b"OK":
            self.state = "auth"

    def run_pipelined(self, commands: list[FuzzCommand]) -> None:
        """Send ``commands`` in one go, then read until each has its tagged answer."""
        self.last = b"(pipelined) " + b"".join(c.wire for c in commands)
        self.tally.counts["commands sent"] += len(commands)
        self.tally.counts["commands sent pipelined"] += len(commands)
        self.wire.send(b"".join(c.wire for c in commands))
        started = time.monotonic()
        try:
            self._await_all(commands, started)
        finally:
            self._timed("(pipelined batch)", started, commands[-1].wire if commands else b"")

    def _await_all(self, commands: list[FuzzCommand], started: float) -> None:
        """Read until each of ``commands`` has its tagged answer."""
        waiting = {c.tag: c for c in commands}
        deadline = started + ANSWER_TIMEOUT * len(commands)
        while waiting:
            try:
                response = self.wire.response(deadline)
            except Closed as why:
                self.tally.counts[unanswered(why, "pipelined")] += len(waiting)
                raise
            tag = response.split(b" ", 1)[0]
            command = waiting.get(tag)
            if command is not None and self._answers(command, response):
                del waiting[tag]
            elif b"SERVERBUG" in response:
                self.tally.serverbug[b"(pipelined)"] += 1


def pipelinable(command: FuzzCommand) -> bool:
    """A command a client may send without waiting: one segment, tagged, not LOGOUT.

    Nor STARTTLS: what follows it before the TLS handshake is discarded, by design.
    """
    unpipelinable = (b"LOGOUT", b"STARTTLS")
    return len(command.segments) == 1 and command.tagged and command.name not in unpipelinable


def open_connection(port: int, rng: random.Random, unauth: bool) -> Wire:
    """A connection that has read the greeting; unauthenticated ones from a random 127.x.y.z."""
    octets = (rng.randrange(1, 255), rng.randrange(256), rng.randrange(1, 255))
    source = "127.{}.{}.{}".format(*octets)
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=30, source_address=(source if unauth else "127.0.0.1", 0)
    )
    wire = Wire(sock)
    greeting = wire.response(time.monotonic() + 30)
    if not greeting.startswith(b"* OK"):
        raise Closed(f"greeting {greeting[:60]!r}")
    return wire


def log_in(wire: Wire, account: str, select: bool) -> None:
    """LOGIN (and SELECT INBOX); Closed unless both succeed."""
    lines = [b"l LOGIN " + account.encode() + b' "' + PASSWORD.encode() + b'"']
    if select:
        lines.append(b"s SELECT INBOX")
    for line in lines:
        wire.send(line + b"\r\n")
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while not (response := wire.response(deadline)).startswith(line[:2]):
            pass
        if not response.startswith(line[:2] + b"OK"):
            raise Closed(f"setup failed: {response[:80]!r}")
