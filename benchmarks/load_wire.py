"""IMAP server responses off the wire, without I/O: framing, literals and tokens.

Sans-IO, for the load generator (:mod:`imap_load`): :class:`ResponseReader`
takes the octets a server sent, in pieces of any size, and returns whole
:class:`Response` values.  A response line that ends in ``{n}`` (RFC 3501
section 4.3; ``~{n}`` is RFC 3516's binary literal) is followed by exactly n
octets of literal, then the line goes on (section 7: a response is "a line
and zero or more literals").  The literal octets are never searched for
CRLF, so a literal holding ``\\r\\n* 3 EXPUNGE\\r\\n`` stays data.

:func:`tokens` reads the data of an untagged response into nested lists of
``bytes`` -- atoms, quoted strings (unescaped), literals; ``NIL`` is None
(RFC 3501 section 4.5) -- with a section
such as ``BODY[HEADER.FIELDS (FROM)]<0>`` kept as one atom;
:func:`fetch_items` reads a FETCH response's ``msg-att`` pairs.  Status
responses (OK/NO/BAD/BYE/PREAUTH) split into an optional ``[response code]``
and free text, which is never tokenised (section 7.1: it is human-readable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: A literal announced at the end of a line, CRLF included (RFC 3501 4.3, RFC 3516).
_LITERAL_AT_END = re.compile(rb"~?\{(\d{1,12})\}\r\n\Z")
_STATUS = frozenset((b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH"))
#: Octets that end an atom (RFC 3501 section 9, atom-specials that can follow one).
_ATOM_END = frozenset(b' ()"{')
_SP, _LPAREN, _RPAREN, _DQUOTE, _LBRACE, _TILDE, _LBRACKET, _RBRACKET = b' ()"{~[]'

Token = bytes | None | list["Token"]


class WireError(Exception):
    """The server sent something that is not an IMAP response."""


@dataclass(frozen=True)
class Response:
    """One server response: a continuation request, an untagged or a tagged response.

    ``name`` is upper-cased: ``OK``/``NO``/``BAD``/``BYE`` for status
    responses, else the data type (``FETCH``, ``EXISTS``, ``FLAGS`` ...).
    ``number`` is the leading number of ``* n EXISTS``-style responses.
    ``code`` is the response code of a status response, brackets stripped;
    ``text`` its human-readable text; ``data`` the rest of any other
    response, literals still inline as ``{n}\\r\\n<octets>``.
    """

    kind: str  # "tagged", "untagged" or "continuation"
    tag: bytes | None
    name: bytes
    number: int | None = None
    code: bytes | None = None
    text: bytes = b""
    data: bytes = b""

    @property
    def is_status(self) -> bool:
        """Whether this is a status response (OK/NO/BAD/BYE/PREAUTH)."""
        return self.name in _STATUS


class ResponseReader:
    """Frames responses out of the octet stream: feed it bytes, get responses."""

    def __init__(self, max_line: int = 1 << 20, max_literal: int = 1 << 30) -> None:
        self._buffer = bytearray()
        self._parts: list[bytes] = []
        self._literal_left = 0
        self._max_line = max_line
        self._max_literal = max_literal

    def feed(self, octets: bytes) -> list[Response]:
        """Take ``octets``; return the responses they complete, in order."""
        self._buffer += octets
        done: list[Response] = []
        while True:
            if self._literal_left:
                if len(self._buffer) < self._literal_left:
                    return done
                self._parts.append(bytes(self._buffer[: self._literal_left]))
                del self._buffer[: self._literal_left]
                self._literal_left = 0
                continue
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > self._max_line:
                    raise WireError(f"a response line over {self._max_line} octets")
                return done
            line = bytes(self._buffer[: end + 2])
            del self._buffer[: end + 2]
            self._parts.append(line)
            literal = _LITERAL_AT_END.search(line)
            if literal:
                self._literal_left = int(literal[1])
                if self._literal_left > self._max_literal:
                    raise WireError(f"a literal of {self._literal_left} octets")
                continue
            whole = b"".join(self._parts)[:-2]
            self._parts = []
            done.append(parse_response(whole))

    @property
    def pending(self) -> int:
        """Octets received that do not make a whole response yet."""
        return len(self._buffer) + sum(map(len, self._parts))


def parse_response(raw: bytes) -> Response:
    """One whole response (without its final CRLF) into a :class:`Response`."""
    if raw.startswith(b"+"):
        return Response("continuation", None, b"+", text=raw[2:])
    tag, sp, rest = raw.partition(b" ")
    if not sp or not tag:
        raise WireError(f"no tag: {raw[:80]!r}")
    kind = "untagged" if tag == b"*" else "tagged"
    number = None
    head, _, rest = rest.partition(b" ")
    if kind == "untagged" and head.isdigit():
        number = int(head)
        head, _, rest = rest.partition(b" ")
    name = head.upper()
    if not name or (kind == "tagged" and name not in _STATUS):
        raise WireError(f"not a response: {raw[:80]!r}")
    if name not in _STATUS:
        return Response(kind, None if kind == "untagged" else tag, name, number, data=rest)
    code = None
    if rest.startswith(b"["):
        close = rest.find(b"]")
        if close < 0:
            raise WireError(f"unterminated response code: {raw[:80]!r}")
        code, rest = rest[1:close], rest[close + 1 :].lstrip(b" ")
    return Response(kind, None if kind == "untagged" else tag, name, number, code, rest)


def code_name(code: bytes | None) -> bytes:
    """The atom naming a response code, upper-cased (``b"UIDNEXT"`` of ``UIDNEXT 5``)."""
    return code.split(b" ", 1)[0].upper() if code else b""


def tokens(data: bytes) -> list[Token]:
    """``data`` as nested lists of atoms, strings and literals (``bytes``); NIL is None."""
    stack: list[list[Token]] = [[]]
    i, end = 0, len(data)
    while i < end:
        c = data[i]
        if c == _SP:
            i += 1
        elif c == _LPAREN:
            stack.append([])
            i += 1
        elif c == _RPAREN:
            if len(stack) == 1:
                raise WireError(f"unbalanced ')' in {data[:80]!r}")
            inner = stack.pop()
            stack[-1].append(inner)
            i += 1
        elif c == _DQUOTE:
            value, i = _quoted(data, i)
            stack[-1].append(value)
        elif c == _LBRACE or (c == _TILDE and data[i + 1 : i + 2] == b"{"):
            value, i = _literal(data, i)
            stack[-1].append(value)
        else:
            value, i = _atom(data, i)
            stack[-1].append(None if value.upper() == b"NIL" else value)
    if len(stack) != 1:
        raise WireError(f"unbalanced '(' in {data[:80]!r}")
    return stack[0]


def _quoted(data: bytes, i: int) -> tuple[bytes, int]:
    """The quoted string starting at ``data[i]`` (a DQUOTE), unescaped; the index after it."""
    out = bytearray()
    i += 1
    while True:
        j = data.find(b'"', i)
        k = data.find(b"\\", i, j if j >= 0 else len(data))
        if j < 0:
            raise WireError("unterminated quoted string")
        if k < 0:
            out += data[i:j]
            return bytes(out), j + 1
        out += data[i:k] + data[k + 1 : k + 2]
        i = k + 2


def _literal(data: bytes, i: int) -> tuple[bytes, int]:
    """The literal whose ``{n}`` starts at ``data[i]``; the index after its octets."""
    close = data.find(b"}\r\n", i)
    start = data.index(b"{", i) + 1
    if close < 0 or not data[start:close].isdigit():
        raise WireError("malformed literal")
    size = int(data[start:close])
    body = close + 3
    if body + size > len(data):
        raise WireError("literal shorter than announced")
    return data[body : body + size], body + size


def _atom(data: bytes, i: int) -> tuple[bytes, int]:
    """The atom at ``data[i]``, a ``[...]`` section in it kept whole; the index after it."""
    start, end = i, len(data)
    while i < end and data[i] not in _ATOM_END:
        if data[i] == _LBRACKET:
            depth = 0
            while i < end:
                depth += (data[i] == _LBRACKET) - (data[i] == _RBRACKET)
                i += 1
                if depth == 0:
                    break
        else:
            i += 1
    return data[start:i], i


def fetch_items(data: bytes) -> dict[bytes, Token]:
    """The ``msg-att`` of a FETCH response's data: ``{b"UID": b"5", b"FLAGS": [...]}``.

    Names are upper-cased; a partial fetch's origin (``BODY[]<0>``) is kept
    in its name.
    """
    parsed = tokens(data)
    if len(parsed) != 1 or not isinstance(parsed[0], list) or len(parsed[0]) % 2:
        raise WireError(f"FETCH data is not a list of pairs: {data[:80]!r}")
    pairs = parsed[0]
    items: dict[bytes, Token] = {}
    for k in range(0, len(pairs), 2):
        name = pairs[k]
        if not isinstance(name, bytes):
            raise WireError(f"FETCH item name is a list: {data[:80]!r}")
        items[name.upper()] = pairs[k + 1]
    return items
