"""The arguments of fuzzed IMAP commands (RFC 3501 section 9), well-formed and mutated.

:class:`Tokens` draws every kind of argument a command takes -- atoms,
numbers, sequence sets, quoted strings, literals, parenthesised lists,
mailbox names, flags, dates, FETCH items, key material -- from a
:class:`random.Random`, each now and then broken on purpose, and
:meth:`Tokens.mutate` damages a whole argument list.  Used by
:mod:`tests.security.imap_grammar` and :mod:`tests.security.search_grammar`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True)
class Literal:
    """A literal argument (RFC 3501 section 4.3): ``{size}`` (``{size+}`` unless ``sync``).

    ``data`` is exactly ``size`` octets, or ``None`` for a synchronizing
    literal too large to send (the server must refuse it before asking).
    """

    size: int
    data: bytes | None
    sync: bool = True


@dataclass(frozen=True)
class Glued:
    """Arguments written one after the other with no space between (``(``, items, ``)``)."""

    parts: tuple[Part, ...]


Part: TypeAlias = bytes | Literal | Glued

HUGE_SIZES = (100_000_000, 2**32, 2**63, 10**20, 10**30)
_ATOM_CHARS = (
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_!#$&'+,/:;<=>?@^`|~"
)
_NASTY = (
    *(b"\x00", b"\r", b"\n", b"\t", b"\x7f", b"\x80", b"\xff", b"\xc3\xa4", b"\xed\xa0\x80"),
    *(b"(", b")", b"[", b"]", b"{", b"}", b"%", b"*", b'"', b"\\", b" ", b"  ", b"&", b"~"),
)
_NUMBERS = (
    *(b"0", b"1", b"2", b"3", b"7", b"-1", b"01", b"+1", b"1e3", b"4294967295", b"4294967296"),
    *(b"9223372036854775807", b"9223372036854775808", b"18446744073709551616", b"99" * 12),
)
_MAILBOXES = (
    *(b"INBOX", b"inbox", b"InBoX", b'"INBOX"', b"Sent", b"Trash", b"a/b", b"a/b/c", b"/", b"//"),
    *(b"a/", b"/a", b"..", b"a/../b", b".", b"&AOQ-", b"&", b"&-", b"&AOQ", b"&Jjo-!", b"NIL"),
    *(b'""', b'"a b"', b'"a\\"b"', b"Fuzz", b"Fuzz/child", b"%", b"*", b"a%b*"),
)
_FLAGS = (
    *(b"\\Seen", b"\\Deleted", b"\\Answered", b"\\Flagged", b"\\Draft", b"\\Recent", b"\\*"),
    *(b"$Forwarded", b"$Junk", b"\\Bogus", b"\\", b"Keyword", b"\\SEEN", b"()", b"[x]"),
)
_FETCH_ATTS = (
    *(b"ALL", b"FAST", b"FULL", b"ENVELOPE", b"FLAGS", b"INTERNALDATE", b"RFC822"),
    *(b"RFC822.HEADER", b"RFC822.SIZE", b"RFC822.TEXT", b"BODY", b"BODYSTRUCTURE", b"UID"),
    *(b"BODY[]", b"BODY.PEEK[]", b"BODY[TEXT]", b"BODY[HEADER]", b"BODY[1]", b"BODY[1.MIME]"),
    *(b"BODY.PEEK[HEADER.FIELDS (From Subject)]", b"BODY[HEADER.FIELDS.NOT (To)]"),
    *(b"BODY[]<0.10>", b"BODY.PEEK[1.TEXT]<5.5>", b"BODY[2.1.HEADER]", b"BODY[]<4294967296.1>"),
)
_DATES = (
    b'"17-Jul-1996 02:44:25 -0700"',
    b'" 1-Jan-2024 00:00:00 +0000"',
    b'"31-Feb-2024 25:61:61 +9999"',
    b'"1-Jan-0000 00:00:00 +0000"',
    b'"17-Jul-1996"',
    b"17-Jul-1996",
    b'"xx-Foo-yyyy 00:00:00 +0000"',
)


class Tokens:
    """Arguments drawn from ``rng``; ``big`` is the largest literal actually sent."""

    def __init__(self, rng: random.Random, big: int = 300_000) -> None:
        self.rng = rng
        self.big = big

    # -- basic items ----------------------------------------------------------------

    def junk(self, chance: float = 1.0) -> bytes:
        """A few hostile octets, with probability ``chance`` (else nothing)."""
        r = self.rng
        if r.random() >= chance:
            return b""
        return b"".join(r.choice(_NASTY) for _ in range(r.randrange(1, 4)))

    def atom(self) -> bytes:
        """An atom, now and then with octets no atom may hold."""
        r = self.rng
        word = bytes(r.choice(_ATOM_CHARS) for _ in range(r.randrange(1, 12)))
        roll = r.random()
        if roll < 0.15:
            word += self.junk()
        elif roll < 0.17:
            word = word * r.randrange(100, 3000)  # long, yet on one line
        return word

    def number(self) -> bytes:
        """A number: small, at a 32/63/64-bit edge, or far too long for ``int()`` to take."""
        r = self.rng
        roll = r.random()
        if roll < 0.05:
            return b"9" * r.choice((4301, 5000, 20000))  # over int()'s 4300-digit limit
        if roll < 0.5:
            return b"%d" % r.randrange(1, 12)
        return r.choice(_NUMBERS)

    def seqset(self) -> bytes:
        """A sequence set (RFC 3501 section 9), sometimes malformed."""
        r = self.rng
        items = []
        for _ in range(r.randrange(1, 4)):
            first = r.choice((self.number(), b"*", b"1", b"2"))
            items.append(
                first + (b":" + r.choice((self.number(), b"*")) if r.random() < 0.4 else b"")
            )
        text = b",".join(items)
        if r.random() < 0.1:
            text = r.choice((b"1:", b":", b",", b"1,,2", b"1:2:3", b"$", b"1.5", b"*:*", b"0:0"))
        return text

    def quoted(self) -> bytes:
        """A quoted string with escapes; sometimes broken (bad escape, no end, 8-bit, NUL)."""
        r = self.rng
        body = b"".join(
            r.choice((b"a", b"b", b" ", b'\\"', b"\\\\", b"%", b"*", b"/", self.junk(0.3)))
            for _ in range(r.randrange(0, 10))
        )
        roll = r.random()
        if roll < 0.05:
            return b'"' + body  # unterminated
        if roll < 0.1:
            return b'"' + body + b'\\x"'  # an escape RFC 3501 does not have
        if roll < 0.13:
            return b'"' + body + b'\\"'  # the closing quote escaped away
        return b'"' + body + b'"'

    def literal(self, data: bytes | None = None) -> Literal:
        """A literal holding ``data`` (or random octets), of a right, wrong or absurd size."""
        r = self.rng
        if data is None:
            data = bytes(r.randrange(256) for _ in range(r.randrange(0, 16)))
        roll = r.random()
        sync = r.random() < 0.7
        if roll < 0.04 and sync:
            return Literal(r.choice(HUGE_SIZES), None)
        if roll < 0.08:
            size = r.choice((self.big // 4, self.big // 2, self.big))  # over the caps, yet sent
            return Literal(
                size, (data * (size // max(len(data), 1) + 1) + b"x" * size)[:size], sync
            )
        if roll < 0.2:  # a size off from the content: the literal swallows or leaves octets
            size = max(0, len(data) + r.choice((-2, -1, 1, 2, 5)))
            return Literal(size, (data + b" )\r\n]x" * 2)[:size], sync)
        return Literal(len(data), data, sync)

    def astring(self) -> Part:
        """An astring: atom, quoted string or literal."""
        r = self.rng
        roll = r.random()
        if roll < 0.4:
            return self.atom()
        if roll < 0.8:
            return self.quoted()
        return self.literal()

    def nstring(self) -> Part:
        """An nstring: NIL or a string."""
        return b"NIL" if self.rng.random() < 0.2 else self.astring()

    def token(self) -> Part:
        """Any one argument."""
        r = self.rng
        makers = (self.atom, self.number, self.seqset, self.quoted, self.literal, self.junk)
        return r.choice(makers)()

    def plist(self, items: list[Part]) -> Part:
        """``(items)`` -- at times with a parenthesis missing or doubled, or nested again."""
        r = self.rng
        spaced: list[Part] = []
        for item in items:
            spaced += [b" ", item] if spaced else [item]
        roll = r.random()
        opening, closing = b"(", b")"
        if roll < 0.05:
            closing = b""
        elif roll < 0.1:
            opening = b""
        elif roll < 0.13:
            opening, closing = b"((", b"))"
        elif roll < 0.15:
            opening, closing = b"(" * 200, b")" * r.choice((200, 199))
        return Glued((opening, *spaced, closing))

    # -- command-specific -----------------------------------------------------------

    def mailbox(self) -> Part:
        """A mailbox name: everyday, tricky (modified UTF-7, hierarchy, wildcards) or random."""
        r = self.rng
        if r.random() < 0.6:
            return r.choice(_MAILBOXES)
        if r.random() < 0.2:
            return self.literal(r.choice(_MAILBOXES))
        return self.astring()

    def list_pattern(self) -> Part:
        """A LIST pattern with at most a few wildcards (pattern fuzzing is test_list_patterns')."""
        r = self.rng
        return r.choice((b'""', b"*", b"%", b"INBOX*", b'"a/%"', b"%/%", b'"*x"', self.mailbox()))

    def status_items(self) -> list[Part]:
        """STATUS data item names (RFC 3501 section 6.3.10), real and made up."""
        r = self.rng
        names = (b"MESSAGES", b"RECENT", b"UIDNEXT", b"UIDVALIDITY", b"UNSEEN", b"SIZE", b"X")
        return [r.choice(names) for _ in range(r.randrange(0, 5))]

    def flag(self) -> bytes:
        """A flag name, system, keyword or bogus."""
        return self.rng.choice((*_FLAGS, self.atom()))

    def store_item(self) -> bytes:
        """STORE's data item name."""
        r = self.rng
        names = (
            b"FLAGS",
            b"+FLAGS",
            b"-FLAGS",
            b"FLAGS.SILENT",
            b"+FLAGS.SILENT",
            b"-FLAGS.SILENT",
        )
        return r.choice((*names, b"X-FLAGS", b"+flags", self.atom()))

    def date_time(self) -> bytes:
        """APPEND's date-time, valid or not."""
        return self.rng.choice(_DATES)

    def fetch_items(self) -> Part:
        """FETCH items: one, or a parenthesised list (test_fetch_syntax fuzzes them in depth)."""
        r = self.rng
        items = [r.choice(_FETCH_ATTS) for _ in range(r.randrange(1, 4))]
        return items[0] if len(items) == 1 and r.random() < 0.5 else self.plist(list(items))

    def message_literal(self) -> Literal:
        """APPEND's message: small and well-formed, MIME, bare LF, binary junk or empty."""
        r = self.rng
        messages = (
            b"Subject: fuzz\r\n\r\nhello\r\n",
            b"From: a@b\nSubject: bare LF\n\nbody\n",
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\npart\r\n--b--\r\n",
            b"\x00\xff\r\n\r\n",
            b"",
            b"no header at all",
        )
        return self.literal(r.choice(messages) + self.junk(0.2))

    def key_material_literal(self) -> Literal:
        """XKEY PUT's key: PEM-looking, DER-looking or junk."""
        r = self.rng
        samples = (
            b"-----BEGIN CERTIFICATE-----\r\nMIIB\r\n-----END CERTIFICATE-----\r\n",
            b"-----BEGIN PGP PUBLIC KEY BLOCK-----\r\n\r\nmQ==\r\n-----END PGP PUBLIC KEY",
            b"0\x82\x01\x00" + bytes(range(40)),
            b"\x99\x00\x0d\x04",
            b"-----BEGIN PRIVATE KEY-----\r\n",
            b"",
        )
        return self.literal(r.choice(samples) + self.junk(0.3))

    def fingerprint(self) -> Part:
        """XKEY DELETE's fingerprint: hex, with separators, too long, quoted, or junk."""
        r = self.rng
        hexes = bytes(r.choice(b"0123456789abcdefABCDEF") for _ in range(r.randrange(1, 80)))
        return r.choice(
            (hexes, b'"' + hexes[:8] + b" " + hexes[8:] + b'"', b"AB:CD", self.astring())
        )

    # -- damage ---------------------------------------------------------------------

    def mutate(self, parts: list[Part]) -> list[Part]:
        """``parts`` unchanged most of the time; else with arguments dropped, added, swapped."""
        r = self.rng
        if r.random() >= 0.3:
            return parts
        parts = list(parts)
        for _ in range(r.randrange(1, 4)):
            op = r.randrange(5)
            i = r.randrange(len(parts) + 1)
            if op == 0 and parts:
                del parts[min(i, len(parts) - 1)]
            elif op == 1:
                parts.insert(i, self.token())
            elif op == 2 and parts:
                parts[min(i, len(parts) - 1)] = self.token()
            elif op == 3 and len(parts) >= 2:
                parts.reverse()
            elif op == 4 and parts and isinstance(parts[-1], bytes):
                parts[-1] = parts[-1] + self.junk()
        return parts
