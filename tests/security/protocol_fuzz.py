"""Running fuzzed commands through the protocol harness, and what must hold of every answer.

:class:`FuzzClient` plays a correct client around hostile content: it sends
each :class:`~tests.security.imap_grammar.FuzzCommand` segment by segment,
the next one only after a ``+`` continuation request (RFC 3501 section
4.3), and then settles the injected clock so delayed answers (a failed
LOGIN's slowdown, a cooperative SEARCH) arrive.  :func:`answer_problems`
is the oracle for one command; :class:`LogWatch` catches tracebacks and
critical events; :func:`store_problems` checks the Maildir afterwards.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool

from tests.imap.harness import Session, make_session
from tests.keys.certs import NOW
from tests.security.imap_grammar import FuzzCommand
from transcoder.imap.settings import ServerSettings
from transcoder.imap.xkey import KeyAccess
from transcoder.keys.async_store import AsyncKeyStore
from transcoder.keys.keystore import KeyStore

#: Small caps, so that fuzzed literals cross them cheaply; no timeouts get in the way.
FUZZ_SETTINGS = ServerSettings(
    max_literal_size=200_000,
    max_astring_literal_size=20_000,
    max_key_size=20_000,
    max_line_length=64 * 1024,
    preauth_timeout=1e9,
    postauth_timeout=1e9,
)
#: Biggest literal the fuzzer sends: past every cap above.
FUZZ_BIG = 240_000
MESSAGES = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: plain\r\n"
    b"Date: Mon, 1 Feb 2021 23:30:00 -0800\r\n\r\nA plain body.\r\n",
    b"From: dave@example.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=xyz\r\n\r\n--xyz\r\n"
    b"Content-Type: text/plain\r\n\r\none\r\n--xyz\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\n\r\ninner body\r\n--xyz--\r\n",
    b"Subject: =?UTF-8?Q?=C3=9Cber?=\nContent-Type: text/plain; charset=utf-8\n\n\xc3\xbc\n",
)
_TAGGED = re.compile(rb"(?P<tag>[^ ]+) (?P<status>OK|NO|BAD)(?: |\Z)")
_LITERAL = re.compile(rb"\{(\d+)\}\Z")
#: Commands after which the server may close the connection, with BYE, by design.
_MAY_CLOSE = frozenset({b"LOGOUT", b"LOGIN", b"AUTHENTICATE"})
#: Commands that may remove messages for good when they succeed.
_REMOVERS = frozenset({b"EXPUNGE", b"CLOSE", b"DELETE"})


class InlineKeyStore(AsyncKeyStore):
    """An AsyncKeyStore that runs each call at once (real SQLite, real validation)."""

    def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run now; the result arrives as an already fired Deferred."""
        return defer.maybeDeferred(function, *args, **kwargs)


class LaterKeyStore(AsyncKeyStore):
    """An AsyncKeyStore whose answers arrive a turn of ``turns`` later, as a pool's do."""

    turns: Clock

    def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run at the next tick of ``turns`` (the session's clock)."""
        return task.deferLater(self.turns, 0, function, *args, **kwargs)


def responses(out: bytes) -> list[bytes]:
    """The responses in ``out``, each with the literals it carries (RFC 3501 section 7)."""
    found, pos = [], 0
    while pos < len(out):
        start, end = pos, out.find(b"\r\n", pos)
        while end >= 0:
            literal = _LITERAL.search(out, pos, end)
            if literal is None:
                break
            pos = end + 2 + int(literal.group(1))
            end = out.find(b"\r\n", pos)
        if end < 0:
            found.append(out[start:])
            break
        found.append(out[start:end])
        pos = end + 2
    return found


@dataclass
class Outcome:
    """What the server did about one command."""

    command: FuzzCommand
    output: bytes = b""
    closed: bool = False
    #: A continuation request for a literal the client could not send.
    asked_for_oversized: bool = False

    def tagged(self) -> list[bytes]:
        """The tagged status responses answering the command's tag."""
        tag = self.command.tag
        return [r for r in responses(self.output) if r.startswith(tag + b" ") and _TAGGED.match(r)]


def answer_problems(outcome: Outcome) -> list[str]:
    """What is wrong with the server's answer to one command (empty: nothing)."""
    cmd, out = outcome.command, outcome.output
    problems = []
    if b"SERVERBUG" in out:
        problems.append("SERVERBUG")
    if outcome.asked_for_oversized:
        problems.append("continuation request for a literal over the cap")
    lines = responses(out)
    if sum(r.startswith(b"+") for r in lines) >= len(cmd.segments):
        problems.append("a continuation request the command had no use for")
    if not cmd.tag:  # an empty line: nothing to answer
        if out:
            problems.append("answer to an empty line")
        return problems
    if not cmd.tagged:
        untagged_bad = any(r.startswith(b"* BAD") for r in lines)
        if not untagged_bad or (cmd.tag != b"*" and outcome.tagged()):
            problems.append("an invalid tag not answered with an untagged BAD")
        return problems
    answers = outcome.tagged()
    if outcome.closed:
        if cmd.name not in _MAY_CLOSE or not any(r.startswith(b"* BYE") for r in lines):
            problems.append("connection closed")
        return problems
    if len(answers) != 1:
        problems.append(f"{len(answers)} tagged answers")
    elif not lines[-1].startswith(cmd.tag + b" "):
        problems.append("output after the tagged answer")
    return problems


@dataclass
class FuzzClient:
    """One connection to a harness server, driven command by command."""

    session: Session
    root: Path
    keystore: KeyStore | None = None
    originals: dict[Path, bytes] = field(default_factory=dict)

    @property
    def state(self) -> str:
        """The server's session state (unauth, auth, select, logout)."""
        return str(self.session.server.state)

    @property
    def closed(self) -> bool:
        """Whether the server closed (or is closing) the connection."""
        return bool(self.session.transport.disconnecting)

    def run(self, command: FuzzCommand) -> Outcome:
        """Send ``command`` as a correct client would and collect what the server answered."""
        outcome = Outcome(command)
        for i, segment in enumerate(command.segments):
            if i and (self.closed or outcome.tagged() or not outcome.output.endswith(b"\r\n")):
                break
            if i and not responses(outcome.output)[-1].startswith(b"+"):
                break  # neither answered nor asked for more: the oracle reports it
            if segment is None:
                outcome.asked_for_oversized = True
                break
            self.session.send(segment)
            outcome.output += self._settle(command)
        outcome.closed = self.closed
        return outcome

    def _settle(self, command: FuzzCommand) -> bytes:
        """Run what the clock has due (cooperative work, a failed login's delay); the output."""
        clock = self.session.clock
        out = self.session.output()
        waits = 0
        wire = command.wire.upper()
        logins = b"LOGIN" in wire or b"AUTHENTICATE" in wire
        for _ in range(1000):
            later = sorted(c.getTime() for c in clock.getDelayedCalls())
            if later and later[0] <= clock.seconds():
                clock.advance(0)
            elif logins and later and later[0] - clock.seconds() < 60 and waits < 20:
                clock.advance(later[0] - clock.seconds())  # a failed login's slowdown
                waits += 1
            else:
                break
            out += self.session.output()
        return out

    def noop_works(self) -> bool:
        """Whether the connection still answers ``NOOP`` with OK."""
        if self.closed:
            return True
        self.session.send(b"zz NOOP\r\n")
        out = self._settle(FuzzCommand(b"zz", b"NOOP", ()))
        return any(r.startswith(b"zz OK") for r in responses(out))


def open_client(
    directory: Path, state: str, with_keys: bool = True, later: bool = False
) -> FuzzClient:
    """A harness connection in ``state`` over a Maildir with :data:`MESSAGES` in INBOX.

    ``later``: keystore answers arrive in a later turn of the clock, as from
    the real server's thread pool (commands that wait for one are held).
    """
    peer = "127.0.0.1" if state == "unauth" else "192.0.2.10"
    session = make_session(directory, state=state, settings=FUZZ_SETTINGS, peer=peer)
    client = FuzzClient(session, directory / "mail")
    if state == "unauth":
        return client
    for message in MESSAGES:
        session.clock.advance(1)
        session.deliver(message)
    if with_keys:
        client.keystore = KeyStore(directory / "keys.db")
        key_clock = Clock()
        key_clock.advance(NOW.timestamp())
        kind = LaterKeyStore if later else InlineKeyStore
        async_store = kind(client.keystore, key_clock, ThreadPool())
        async_store.turns = session.clock
        session.server.keys = KeyAccess(async_store, key_clock)
    if state == "select":
        outcome = client.run(FuzzCommand(b"s", b"SELECT", (b"s SELECT INBOX\r\n",)))
        assert outcome.tagged()[0].startswith(b"s OK "), outcome.output
    client.originals = stored_messages(client.root)
    return client


def stored_messages(root: Path) -> dict[Path, bytes]:
    """Every message file of every mailbox under ``root`` (``cur/`` and ``new/``)."""
    files = itertools.chain(root.glob("**/cur/*"), root.glob("**/new/*"))
    return {path: path.read_bytes() for path in files if path.is_file()}


def _lines(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def store_problems(client: FuzzClient, sent: list[Outcome]) -> list[str]:
    """What is wrong with the store after ``sent``: only clients' octets, originals kept.

    Every stored message must be one that was delivered or APPENDed (line
    ends normalised); a delivered one may be gone only after a command that
    removes messages succeeded.
    """
    allowed = {_lines(data) for data in client.originals.values()}
    appended = b"\r\n".join(_lines(o.command.wire) for o in sent if o.command.name == b"APPEND")
    now = stored_messages(client.root)
    problems = [
        f"{path.name}: octets no client stored"
        for path, data in now.items()
        if _lines(data) not in allowed and _lines(data) not in appended
    ]
    removed = any(_removes(o.command) and _succeeded(o) for o in sent)
    kept = {_lines(data) for data in now.values()}
    if not removed and any(_lines(d) not in kept for d in client.originals.values()):
        problems.append("a delivered message vanished")
    return problems


def _removes(command: FuzzCommand) -> bool:
    first = (command.segments[0] or b"").upper()
    return command.name in _REMOVERS or (command.name == b"UID" and b" EXPUNGE" in first)


def _succeeded(outcome: Outcome) -> bool:
    return any(r.startswith(outcome.command.tag + b" OK") for r in outcome.tagged())
