"""Hostile IMAP commands from a grammar, for the fuzz tests and benchmarks/fuzz_commands.py.

Commands are those of RFC 3501 with ID (RFC 2971), IDLE (RFC 2177), MOVE
(RFC 6851), UNSELECT (RFC 3691), UID EXPUNGE (RFC 4315) and XKEY (docs/design.md),
plus names no server knows.  Their arguments follow the grammar of RFC 3501
section 9 closely enough to reach deep into each parser, then get mutated:
atoms, quoted strings with escapes (good and broken), literals ``{n}`` and
``{n+}`` (RFC 7888) of right, wrong and absurd sizes, unbalanced parentheses
and brackets, sequence sets, huge numbers, NUL, 8-bit octets, CR without LF.

Everything is drawn from a :class:`random.Random`: in the tests it is
hypothesis's ``st.randoms()`` (whose choices shrink), in the benchmark a
seeded one.  A command is framed the way a correct client sends it
(:class:`FuzzCommand`): a line never holds CRLF except where a literal ends
it, and the octets of a literal are exactly as many as announced -- so the
server's answer to each command can be told apart and checked.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from tests.security.search_grammar import search_criteria
from tests.security.tokens import HUGE_SIZES, Glued, Literal, Part, Tokens

_LITERAL_AT_END = re.compile(rb"\{\d*\+?\}\Z")


@dataclass(frozen=True)
class FuzzCommand:
    """One command as a client sends it.

    ``segments[0]`` is the line up to and including the CRLF after the first
    synchronizing literal's ``{n}`` (or the whole command); each further
    segment is a literal's octets followed by the rest of the line up to the
    next synchronizing literal or the final CRLF.  A client sends a segment
    only after a ``+`` continuation request.  ``None`` stands for the octets
    of a literal too large to send: the server must refuse it before asking.
    ``tagged`` is False when the tag is not a valid tag (RFC 3501 section 9):
    the answer is then an untagged ``BAD``.  A segment after IDLE or
    AUTHENTICATE is the line the continuation request asks for.
    """

    tag: bytes
    name: bytes
    segments: tuple[bytes | None, ...]
    tagged: bool = True

    @property
    def wire(self) -> bytes:
        """Every octet of the command (an oversized literal's octets left out)."""
        return b"".join(s for s in self.segments if s is not None)


def frame(head: bytes, parts: list[Part], end: bytes = b"\r\n") -> tuple[bytes | None, ...]:
    """The segments of ``head`` followed by ``parts``, each after a space."""
    framer = _Framer(head)
    for i, part in enumerate(parts):
        if not framer.add(part, b" " if head or i else b""):
            return tuple(framer.segments)
    return framer.finish(end)


class _Framer:
    """Cuts a command into segments at its synchronizing literals."""

    def __init__(self, head: bytes) -> None:
        self.line = head
        self.segments: list[bytes | None] = []

    def add(self, part: Part, sep: bytes) -> bool:
        """Append ``part``; False once a literal too large to send ends the command."""
        if isinstance(part, Glued):
            self.line += sep
            return all(self.add(p, b"") for p in part.parts)
        if not isinstance(part, Literal):
            self.line += sep + _no_crlf(part)
            return True
        self.line += sep + b"{%d%s}\r\n" % (part.size, b"" if part.sync else b"+")
        if not part.sync:
            self.line += part.data or b""
            return True
        self.segments.append(self.line)
        if part.data is None:  # too large to send: the server must refuse it first
            self.segments.append(None)
            return False
        self.line = part.data
        return True

    def finish(self, end: bytes) -> tuple[bytes | None, ...]:
        """The segments, the last line ended by ``end``."""
        line = self.line
        if _LITERAL_AT_END.search(line):
            line += b" x"  # a literal announced by accident would wait for octets never sent
        return (*self.segments, line + end)


def _no_crlf(text: bytes) -> bytes:
    """``text`` without CRLF: a line never holds one except where a literal ends it."""
    while b"\r\n" in text:
        text = text.replace(b"\r\n", b"\n")
    return text


_ANY = (b"CAPABILITY", b"NOOP", b"ID")
_UNAUTH = (b"LOGIN", b"AUTHENTICATE", b"STARTTLS")
_AUTH = (
    *(b"SELECT", b"EXAMINE", b"CREATE", b"DELETE", b"RENAME", b"SUBSCRIBE", b"UNSUBSCRIBE"),
    *(b"LIST", b"LSUB", b"STATUS", b"APPEND", b"NAMESPACE", b"IDLE", b"XKEY", b"XKEY"),
)
_SELECT = (
    *(b"CHECK", b"CLOSE", b"EXPUNGE", b"SEARCH", b"SEARCH", b"FETCH", b"FETCH", b"STORE"),
    *(b"COPY", b"MOVE", b"UID", b"UID", b"UNSELECT"),
)
_UNKNOWN = (b"FOO", b"XLIST", b"ENABLE", b"COMPRESS", b"GETQUOTA", b"\xc3\x9cBER", b"N\x00OP")
#: Tag characters besides the digits that end every tag (so no two tags collide).
_TAG_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.-_!#$&'=~^|:;,/]"
#: First words that are no tag (RFC 3501 section 9: tag excludes "+" and atom-specials but "]").
_BAD_TAGS = (b"+", b"*", b"a(b", b'"t"', b"t%", b"t\\1", b"\xff", b"t\xc3\xa4", b"(", b"t)")


class CommandFuzzer:
    """Draws :class:`FuzzCommand` values from ``rng``.

    ``password`` is a correct LOGIN password to mix in (so some sessions log
    in); ``huge`` allows absurd literal sizes; ``big`` is the size a literal
    may reach to cross the server's caps (octets actually sent).
    """

    def __init__(self, rng: random.Random, password: bytes = b"", big: int = 300_000) -> None:
        self.rng = rng
        self.t = Tokens(rng, big=big)
        self.password = password

    def command(self, index: int, state: str = "select") -> FuzzCommand:
        """Command number ``index`` for a session in ``state`` (unauth, auth or select)."""
        r = self.rng
        roll = r.random()
        if roll < 0.01:
            return FuzzCommand(b"", b"", (r.choice((b"\r\n", b" \r\n", b"  \t\r\n")),), False)
        tag = self._tag(index)
        if roll < 0.04:
            bad = r.choice(_BAD_TAGS)
            return FuzzCommand(bad, b"NOOP", frame(bad, [b"NOOP"]), tagged=False)
        name = self._name(state)
        return self._build(tag, name)

    def _tag(self, index: int) -> bytes:
        r = self.rng
        prefix = bytes(r.choice(_TAG_CHARS) for _ in range(r.randrange(0, 4)))
        return prefix + b"%d" % index

    def _name(self, state: str) -> bytes:
        r = self.rng
        pools = {"unauth": (_ANY, _UNAUTH), "auth": (_ANY, _AUTH), "select": (_ANY, _AUTH, _SELECT)}
        roll = r.random()
        if roll < 0.005:
            return b"LOGOUT"
        if roll < 0.05:
            return r.choice(_UNKNOWN)
        if roll < 0.15:  # any command, in whatever state the session is
            return r.choice(_ANY + _UNAUTH + _AUTH + _SELECT)
        pool = r.choice(pools.get(state, (_ANY,)))
        return r.choice(pool)

    def _build(self, tag: bytes, name: bytes) -> FuzzCommand:
        r, t = self.rng, self.t
        spelled = name.lower() if r.random() < 0.1 else name
        if name == b"UID":
            sub = r.choice((b"FETCH", b"SEARCH", b"STORE", b"COPY", b"MOVE", b"EXPUNGE", b"NOOP"))
            parts = [sub, *self._arguments(sub, uid=True)]
        else:
            parts = self._arguments(name)
        parts = t.mutate(parts)
        head = tag + b" " + spelled
        segments = frame(head, parts)
        if name == b"IDLE":
            segments += (r.choice((b"DONE\r\n", b"done\r\n", b"DONE x\r\n", b"NOOP\r\n")),)
        elif name == b"AUTHENTICATE":  # AUTHENTICATE LOGIN asks twice (user name, password)
            segments += (self._sasl_response(), self._sasl_response())
        return FuzzCommand(tag, name, segments)

    def _sasl_response(self) -> bytes:
        r = self.rng
        options = (b"*", b"", b"=", b"AGFsaWNlAHNlY3JldA==", b"!!notbase64", b"AAAA" * 300)
        return _no_crlf(r.choice(options) + self.t.junk(0.2)) + b"\r\n"

    def _arguments(self, name: bytes, uid: bool = False) -> list[Part]:
        t, r = self.t, self.rng
        if name in (
            b"CAPABILITY",
            b"NOOP",
            b"STARTTLS",
            b"NAMESPACE",
            b"IDLE",
            b"CHECK",
            b"LOGOUT",
        ):
            return []
        if name in (b"CLOSE", b"EXPUNGE", b"UNSELECT"):
            return [t.seqset()] if name == b"EXPUNGE" and uid else []
        if name == b"ID":
            return [r.choice((b"NIL", t.plist([t.nstring() for _ in range(r.randrange(0, 7))])))]
        if name == b"LOGIN":
            password = self.password if self.password and r.random() < 0.2 else None
            return [t.astring(), t.astring() if password is None else password]
        if name == b"AUTHENTICATE":
            return [r.choice((b"PLAIN", b"plain", b"LOGIN", b"CRAM-MD5", b"X", t.atom()))]
        if name in (b"SELECT", b"EXAMINE", b"CREATE", b"DELETE", b"SUBSCRIBE", b"UNSUBSCRIBE"):
            return [t.mailbox()]
        if name == b"RENAME":
            return [t.mailbox(), t.mailbox()]
        if name in (b"LIST", b"LSUB"):
            return [t.mailbox(), t.list_pattern()]
        if name == b"STATUS":
            return [t.mailbox(), t.plist(t.status_items())]
        if name == b"APPEND":
            return self._append()
        if name == b"XKEY":
            return self.xkey_arguments()
        if name == b"SEARCH":
            return search_criteria(t)
        if name == b"FETCH":
            return [t.seqset(), t.fetch_items()]
        if name == b"STORE":
            return [t.seqset(), t.store_item(), t.plist([t.flag() for _ in range(r.randrange(4))])]
        if name in (b"COPY", b"MOVE"):
            return [t.seqset(), t.mailbox()]
        return [t.token() for _ in range(r.randrange(0, 4))]

    def _append(self) -> list[Part]:
        t, r = self.t, self.rng
        parts: list[Part] = [t.mailbox()]
        if r.random() < 0.4:
            parts.append(t.plist([t.flag() for _ in range(r.randrange(3))]))
        if r.random() < 0.3:
            parts.append(t.date_time())
        parts.append(t.message_literal())
        return parts

    def xkey_arguments(self, material: bytes = b"", fingerprint: bytes = b"") -> list[Part]:
        """XKEY's arguments; a real key ``material`` and ``fingerprint`` are mixed in if given."""
        t, r = self.t, self.rng
        which = r.choice((b"PUT", b"LIST", b"DELETE", b"POLICY", b"POLICY", b"put", t.atom()))
        if which.upper() == b"PUT":
            if material and r.random() < 0.3:
                return [which, t.literal(material)]
            return [which, r.choice((t.key_material_literal(), t.quoted(), t.atom()))]
        if which == b"DELETE":
            if fingerprint and r.random() < 0.3:
                return [which, r.choice((fingerprint, fingerprint.upper(), fingerprint[:-1]))]
            return [which, t.fingerprint()]
        if which == b"POLICY":
            choices: list[list[Part]] = [
                [],
                [b"MODE", r.choice((b"ALWAYS", b"OFF", b"always", b"ON", t.atom()))],
                [b"FORMAT", r.choice((b"SMIME", b"OPENPGP", b"openpgp", b"PEM", t.atom()))],
                [t.atom(), t.atom()],
            ]
            return [which, *r.choice(choices)]
        return [which]


__all__ = ["HUGE_SIZES", "CommandFuzzer", "FuzzCommand", "Literal", "frame"]
