"""Parser of SEARCH arguments into a query tree (RFC 3501 section 6.4.4 and section 9).

Input is the command's arguments exactly as they travelled, literals
included in wire form (``{n}`` CRLF, then n octets), so the same pure
function serves the server -- which only needs :func:`pending_literal` to
know when to ask the client for the next literal -- and unit tests.

Grammar (RFC 3501 section 9)::

    search     = "SEARCH" [SP "CHARSET" SP astring] 1*(SP search-key)
    search-key = "ALL" / "ANSWERED" / "BCC" SP astring / "BEFORE" SP date / ...
                 "NOT" SP search-key / "OR" SP search-key SP search-key /
                 "UID" SP sequence-set / sequence-set / "(" search-key *(SP search-key) ")"

Leniencies, each harmless: runs of spaces count as one; 8-bit octets are
accepted in quoted strings and atoms (read as UTF-8, as clients that
forget CHARSET mean them); KEYWORD also takes a system flag (``\\Seen``);
a non-synchronizing literal ``{n+}`` (RFC 7888) reads as ``{n}``.

No twisted import here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from transcoder.errors import BadCommand, ClientError
from transcoder.store.search_query import (
    All,
    And,
    Body,
    Flag,
    Header,
    InternalDate,
    Larger,
    Not,
    Or,
    SearchKey,
    SearchQuery,
    SentDate,
    Sequence,
    SequenceSet,
    Smaller,
    Text,
    Uid,
)

#: Charsets search strings may be given in (RFC 3501 6.4.4: US-ASCII MUST be supported).
SUPPORTED_CHARSETS = ("US-ASCII", "UTF-8")
#: Deepest nesting of NOT / OR / parentheses accepted.
MAX_DEPTH = 64
_MAX_NUMBER = 2**63 - 1  # RFC 9051 widens LARGER / SMALLER to number64
_MAX_NZ = 2**32 - 1  # RFC 3501 section 9: nz-number is a 32-bit value


class SearchSyntaxError(BadCommand):
    """Invalid SEARCH criteria."""


class UnsupportedCharsetError(ClientError):
    """Charset not supported for SEARCH."""

    code = "BADCHARSET (" + " ".join(SUPPORTED_CHARSETS) + ")"


@dataclass(frozen=True)
class Token:
    """One lexical item: ``(`` / ``)``, a ``word`` (atom, number, sequence set), or a ``string``.

    ``kind`` ``pending`` is a literal announced at the end of the input
    whose octets have not arrived; ``value`` then holds its size as digits.
    """

    kind: str
    value: bytes = b""


_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')
_QUOTED_ESCAPE = re.compile(rb'\\(["\\])')
# A word ends at a space, a parenthesis, a quote, a brace or a control octet.
_WORD = re.compile(rb'\\?[^\x00-\x20\x7f(){"\\]+')
_LITERAL = re.compile(rb"\{(\d{1,10})(\+?)\}")
_SEQ_ITEM = rb"(?:[1-9]\d*|\*)(?::(?:[1-9]\d*|\*))?"  # seq-number / seq-range
_SEQUENCE_SET = re.compile(_SEQ_ITEM + rb"(?:," + _SEQ_ITEM + rb")*")
_DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_MONTHS = {
    name: number
    for number, name in enumerate(b"JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)
}


def _literal(data: bytes, pos: int) -> tuple[Token, int]:
    """The literal at ``data[pos]`` (RFC 3501 section 4.3), or a ``pending`` token at the end."""
    match = _LITERAL.match(data, pos)
    if match is None:
        raise SearchSyntaxError("Malformed literal")
    end = match.end()  # "{n+}" (LITERAL+, RFC 7888) reads the same as "{n}"
    if end == len(data):
        return Token("pending", match.group(1)), end
    if data[end : end + 2] != b"\r\n":
        raise SearchSyntaxError("A literal must end its line")
    size = int(match.group(1))
    start = end + 2
    if len(data) - start < size:
        raise SearchSyntaxError("Literal shorter than announced")
    return Token("string", data[start : start + size]), start + size


def _token(data: bytes, pos: int) -> tuple[Token, int]:
    """The token starting at ``data[pos]`` and the position after it."""
    first = data[pos : pos + 1]
    if first in (b"(", b")"):
        return Token(first.decode()), pos + 1
    if first == b'"':
        match = _QUOTED.match(data, pos)
        if match is None:
            raise SearchSyntaxError("Malformed quoted string")
        return Token("string", _QUOTED_ESCAPE.sub(rb"\1", match.group(1))), match.end()
    if first == b"{":
        return _literal(data, pos)
    match = _WORD.match(data, pos)
    if match is None:
        raise SearchSyntaxError(f"Unexpected character {first!r}")
    return Token("word", match.group(0)), match.end()


def tokenize(data: bytes) -> list[Token]:
    """Split SEARCH arguments into tokens, enforcing a space (or ``)``) after each item."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0x20:
            pos += 1
            continue
        token, pos = _token(data, pos)
        tokens.append(token)
        if token.kind != "(" and pos < len(data) and data[pos] not in b" )":
            raise SearchSyntaxError("Missing space between search keys")
    return tokens


def pending_literal(data: bytes) -> int | None:
    """Size of the literal ``data`` ends by announcing (``... {n}``), or ``None``.

    The server calls this on each line of a SEARCH command: a number means
    "send a continuation and append CRLF, the literal and the next line".
    Raises :class:`SearchSyntaxError` for input that can never become valid.
    """
    tokens = tokenize(data)
    if tokens and tokens[-1].kind == "pending":
        return int(tokens[-1].value)
    return None


def _shown(raw: bytes, limit: int = 40) -> str:
    """Client input quoted in an error message, cut to ``limit`` octets."""
    text = repr(raw[:limit].decode("ascii", "replace"))
    return text + "..." if len(raw) > limit else text


def _charset_name(raw: bytes) -> str:
    """The canonical name of a supported charset, else :class:`UnsupportedCharsetError`."""
    name = raw.decode("ascii", "replace").strip().upper()
    if name not in SUPPORTED_CHARSETS:
        raise UnsupportedCharsetError(f"Charset {name!r} is not supported")
    return name


def parse_search(data: bytes, charset: str | None = None) -> SearchQuery:
    """Parse SEARCH criteria (the keys, after any CHARSET) into a :class:`SearchQuery`.

    ``charset`` is the CHARSET the client named (``None``: US-ASCII).
    Raises :class:`SearchSyntaxError` (tagged ``BAD [CLIENTBUG]``) for
    invalid criteria and :class:`UnsupportedCharsetError` (``NO [BADCHARSET]``).
    """
    name = _charset_name(charset.encode("ascii", "replace") if charset else b"US-ASCII")
    return _Parser(tokenize(data), name).query()


def parse_search_arguments(data: bytes) -> SearchQuery:
    """Parse a SEARCH command's whole argument string: ``[CHARSET name] keys``."""
    tokens = tokenize(data)
    charset = "US-ASCII"
    if tokens and tokens[0].kind == "word" and tokens[0].value.upper() == b"CHARSET":
        if len(tokens) < 2 or tokens[1].kind not in ("word", "string"):
            raise SearchSyntaxError("CHARSET needs a charset name")
        charset = _charset_name(tokens[1].value)
        tokens = tokens[2:]
    return _Parser(tokens, charset).query()


def _date(raw: bytes) -> date:
    """A ``date`` argument, ``d-Mon-yyyy`` (RFC 3501 section 9)."""
    match = _DATE.fullmatch(raw)
    month = _MONTHS.get(match.group(2).upper()) if match else None
    if match is None or month is None:
        raise SearchSyntaxError(f"Invalid date {_shown(raw)}")
    try:
        return date(int(match.group(3)), month, int(match.group(1)))
    except ValueError:
        raise SearchSyntaxError(f"Invalid date {_shown(raw)}") from None


def _sequence_set(raw: bytes) -> SequenceSet:
    """A ``sequence-set`` (RFC 3501 section 9); numbers are 1 .. 2^32-1."""
    if not _SEQUENCE_SET.fullmatch(raw):
        raise SearchSyntaxError(f"Invalid sequence set {_shown(raw)}")
    ranges = []
    for item in raw.split(b","):
        ends = [None if part == b"*" else _bounded(part, _MAX_NZ) for part in item.split(b":")]
        if -1 in ends:
            raise SearchSyntaxError("Sequence number out of range")
        ranges.append((ends[0], ends[-1]))
    return SequenceSet(tuple(ranges))


def _bounded(digits: bytes, limit: int) -> int:
    """The value of ASCII ``digits``, or -1 when it exceeds ``limit``.

    The length is checked first: ``int()`` refuses more than 4,300 digits
    with a ValueError (CPython's guard against quadratic conversion), and a
    command line may hold 100,000.
    """
    significant = digits.lstrip(b"0") or b"0"
    if len(significant) > len(str(limit)) or int(significant) > limit:
        return -1
    return int(significant)


_SYSTEM_FLAGS = {
    b"ANSWERED": "\\answered",
    b"DELETED": "\\deleted",
    b"DRAFT": "\\draft",
    b"FLAGGED": "\\flagged",
    b"SEEN": "\\seen",
}
#: Keys without an argument, and what they mean (flag names case-folded).
_SIMPLE: dict[bytes, SearchKey] = {
    b"ALL": All(),
    b"NEW": And((Flag("\\recent"), Not(Flag("\\seen")))),
    b"OLD": Not(Flag("\\recent")),
    b"RECENT": Flag("\\recent"),
    **{name: Flag(flag) for name, flag in _SYSTEM_FLAGS.items()},
    **{b"UN" + name: Not(Flag(flag)) for name, flag in _SYSTEM_FLAGS.items()},
}
#: Keys taking an astring, and the header field they search.
_FIELDS = {b"BCC": "bcc", b"CC": "cc", b"FROM": "from", b"SUBJECT": "subject", b"TO": "to"}
#: Keys taking a date: which date, and how it compares.
_DATES: dict[bytes, tuple[type[InternalDate] | type[SentDate], str]] = {
    b"BEFORE": (InternalDate, "before"),
    b"ON": (InternalDate, "on"),
    b"SINCE": (InternalDate, "since"),
    b"SENTBEFORE": (SentDate, "before"),
    b"SENTON": (SentDate, "on"),
    b"SENTSINCE": (SentDate, "since"),
}


class _Parser:
    """Recursive descent over tokens; one instance per command."""

    def __init__(self, tokens: list[Token], charset: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.charset = charset

    def query(self) -> SearchQuery:
        if not self.tokens:
            raise SearchSyntaxError("Missing search criteria")
        keys = []
        while self.pos < len(self.tokens):
            keys.append(self.key(0))
        return SearchQuery(And.of(keys), self.charset)

    def next(self, what: str) -> Token:
        if self.pos >= len(self.tokens):
            raise SearchSyntaxError(f"Missing {what}")
        token = self.tokens[self.pos]
        self.pos += 1
        if token.kind == "pending":
            raise SearchSyntaxError("Literal data missing")
        return token

    def word(self, what: str) -> bytes:
        token = self.next(what)
        if token.kind != "word":
            raise SearchSyntaxError(f"Expected {what}")
        return token.value

    def astring(self, what: str) -> str:
        token = self.next(what)
        if token.kind not in ("word", "string"):
            raise SearchSyntaxError(f"Expected {what}")
        try:
            # US-ASCII is a subset of UTF-8; 8-bit octets under it are read as UTF-8.
            return token.value.decode("utf-8")
        except UnicodeDecodeError:
            raise SearchSyntaxError(f"{what.capitalize()} is not valid {self.charset}") from None

    def number(self) -> int:
        raw = self.word("a number")
        value = _bounded(raw, _MAX_NUMBER) if raw.isdigit() else -1
        if value < 0:
            raise SearchSyntaxError(f"Invalid number {_shown(raw)}")
        return value

    def date_arg(self) -> date:
        token = self.next("a date")  # date = date-text / DQUOTE date-text DQUOTE
        if token.kind not in ("word", "string"):
            raise SearchSyntaxError("Expected a date")
        return _date(token.value)

    def key(self, depth: int) -> SearchKey:
        if depth > MAX_DEPTH:
            raise SearchSyntaxError("Search criteria nested too deeply")
        token = self.next("a search key")
        if token.kind == "(":
            return self.parenthesised(depth)
        if token.kind != "word":
            raise SearchSyntaxError("Expected a search key")
        name = token.value.upper()
        if name in _SIMPLE:
            return _SIMPLE[name]
        if name[:1].isdigit() or name[:1] == b"*":
            return Sequence(_sequence_set(name))
        return self.key_with_arguments(name, depth)

    def parenthesised(self, depth: int) -> SearchKey:
        keys = []
        while self.pos < len(self.tokens) and self.tokens[self.pos].kind != ")":
            keys.append(self.key(depth + 1))
        if self.pos >= len(self.tokens):
            raise SearchSyntaxError("Missing closing parenthesis")
        self.pos += 1
        if not keys:
            raise SearchSyntaxError("Empty parenthesised list")
        return And.of(keys)

    def key_with_arguments(self, name: bytes, depth: int) -> SearchKey:
        if name in _FIELDS:
            return Header(_FIELDS[name], self.astring("a search string"))
        if name in _DATES:
            kind, relation = _DATES[name]
            return kind(relation, self.date_arg())
        if name in (b"BODY", b"TEXT"):
            return (Body if name == b"BODY" else Text)(self.astring("a search string"))
        if name == b"HEADER":
            field = self.astring("a header field name")
            return Header(field, self.astring("a search string"))
        if name in (b"KEYWORD", b"UNKEYWORD"):
            flag = Flag(self.word("a keyword").decode("utf-8", "replace").casefold())
            return flag if name == b"KEYWORD" else Not(flag)
        if name in (b"LARGER", b"SMALLER"):
            return (Larger if name == b"LARGER" else Smaller)(self.number())
        if name == b"UID":
            return Uid(_sequence_set(self.word("a UID set")))
        if name == b"NOT":
            return Not(self.key(depth + 1))
        if name == b"OR":
            return Or(self.key(depth + 1), self.key(depth + 1))
        raise SearchSyntaxError(f"Unknown search key {_shown(name)}")
