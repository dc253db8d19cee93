"""Reading a backend IMAP server's responses (RFC 3501 section 7, 9), sans-IO.

:class:`ResponseReader` is fed the octets the backend sends and returns the
complete responses they hold.  A response is a line, or lines joined by
literals (``{n}`` CRLF then n octets).  Each literal goes into a
:class:`Spool` as it arrives: kept in memory up to ``memory_limit`` octets,
written to a temporary file beyond, so reading a 100 MB message costs the
front constant memory (issue 11).

:func:`parse_response` turns a response into one of

* :class:`StatusResponse` -- ``tag|* OK|NO|BAD|PREAUTH|BYE [code] text``;
* :class:`Continuation` -- ``+ text``;
* :class:`DataResponse` -- every other untagged response, as tokens: atoms
  and numbers are :class:`bytes`, quoted strings and small literals
  :class:`String`, large literals the :class:`Spool` itself, ``NIL`` is
  ``None``, parenthesised lists are :class:`list`.  An atom with a bracketed
  part (``BODY[HEADER.FIELDS (A B)]``) is one atom.

Anything malformed raises :class:`ResponseSyntaxError`: the connection is
then unusable (the front answers ``NO [UNAVAILABLE]`` and ends the session).
"""

from __future__ import annotations

import io
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from transcoder.files import PositionalReader

#: Literals up to this size stay in memory; larger ones go to a temporary file.
MEMORY_LIMIT = 64 * 1024
#: The longest response line accepted (without its literals).
MAX_LINE = 1024 * 1024
_LITERAL_AT_END = re.compile(rb"\{(\d{1,19})\}\Z")
_STATUS = frozenset({b"OK", b"NO", b"BAD", b"PREAUTH", b"BYE"})


class ResponseSyntaxError(Exception):
    """The backend sent something that is not an IMAP response."""


class Spool:
    """A literal's octets: in memory while small, in an unnamed temporary file beyond.

    :meth:`open` returns a new reader with its own position each time (readers
    may be used from several threads at once: they read with ``pread``).
    """

    def __init__(self, memory_limit: int = MEMORY_LIMIT, directory: str | None = None) -> None:
        self._memory: bytearray | None = bytearray()
        self._file: BinaryIO | None = None
        self._limit = memory_limit
        self._directory = directory
        self.size = 0

    def write(self, data: bytes) -> None:
        """Append ``data``."""
        if self._memory is not None and len(self._memory) + len(data) <= self._limit:
            self._memory += data
        else:
            if self._file is None:
                self._file = tempfile.TemporaryFile(dir=self._directory)  # noqa: SIM115
                assert self._memory is not None
                self._file.write(self._memory)
                self._memory = None
            self._file.write(data)
        self.size += len(data)

    def finish(self) -> None:
        """All octets are written: flush them to the file (if any) for the readers."""
        if self._file is not None:
            self._file.flush()

    @property
    def in_memory(self) -> bool:
        """Whether the octets are held in memory (no file was needed)."""
        return self._memory is not None

    def getvalue(self) -> bytes:
        """All octets, read into memory: only for small literals."""
        with self.open() as fp:
            return fp.read()

    def open(self) -> BinaryIO:
        """A new reader of the octets, positioned at 0."""
        if self._memory is not None:
            return io.BytesIO(bytes(self._memory))
        assert self._file is not None
        return io.BufferedReader(PositionalReader(self._file.fileno(), self.size, self))

    def close(self) -> None:
        """Drop the octets (the temporary file is removed)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory = bytearray()
        self.size = 0


@dataclass(frozen=True)
class String:
    """A quoted string or a small literal."""

    value: bytes


@dataclass(frozen=True)
class StatusResponse:
    """``tag OK|NO|BAD|PREAUTH|BYE [code] text`` (tag ``*`` when untagged)."""

    tag: bytes
    status: bytes
    code: bytes | None
    text: bytes

    @property
    def code_name(self) -> bytes | None:
        """The response code's name (``UIDVALIDITY``), upper-cased."""
        return None if self.code is None else self.code.split(b" ", 1)[0].upper()

    @property
    def code_argument(self) -> bytes:
        """What follows the response code's name."""
        parts = (self.code or b"").split(b" ", 1)
        return parts[1] if len(parts) > 1 else b""


@dataclass(frozen=True)
class Continuation:
    """``+ text``: the backend waits for a literal's octets."""

    text: bytes


@dataclass(frozen=True)
class DataResponse:
    """An untagged response other than a status: its tokens after ``*``."""

    tokens: tuple[Any, ...]

    @property
    def name(self) -> bytes:
        """``EXISTS`` of ``* 3 EXISTS``, ``LIST`` of ``* LIST ...``, upper-cased."""
        first = self.tokens[0] if self.tokens else b""
        if isinstance(first, bytes) and first.isdigit() and len(self.tokens) > 1:
            second = self.tokens[1]
            return second.upper() if isinstance(second, bytes) else b""
        return first.upper() if isinstance(first, bytes) else b""

    @property
    def number(self) -> int | None:
        """The leading number of ``* n EXISTS|RECENT|EXPUNGE|FETCH``, else None."""
        first = self.tokens[0] if self.tokens else b""
        if isinstance(first, bytes) and first.isdigit():
            return int(first)
        return None


Response = StatusResponse | Continuation | DataResponse


class ResponseRelay(Protocol):
    """Where a :class:`ResponseReader` hands the responses it relays instead of spooling them.

    The reader offers each untagged response's first line to :meth:`begin`;
    when it is taken, the rest of that response -- literal octets as they
    arrive, the lines after them -- goes to :meth:`octets` and :meth:`line`,
    and :meth:`end` marks its end.  Lines come without their CRLF.
    """

    def begin(self, line: bytes) -> bool:
        """The first line of an untagged response: True to relay the whole response."""

    def line(self, line: bytes) -> None:
        """A line of the relayed response after one of its literals."""

    def octets(self, data: bytes) -> None:
        """Octets of one of the relayed response's literals."""

    def end(self) -> None:
        """The relayed response is complete."""


class ResponseReader:
    """Octets in, complete responses out (see the module docstring).

    A response is kept as its pieces: line text (``bytes``) and literals
    (:class:`Spool`), in order.  While :attr:`relay` is set, the untagged
    responses it takes are handed to it as they arrive instead (a literal of
    any size costs no spool and no copy kept here).
    """

    def __init__(self, memory_limit: int = MEMORY_LIMIT, spool_dir: str | None = None) -> None:
        self._buffer = bytearray()
        self._pieces: list[bytes | Spool] = []
        self._literal: Spool | None = None
        self._remaining = 0
        self._memory_limit = memory_limit
        self._spool_dir = spool_dir
        #: Offered every untagged response while set (:class:`ResponseRelay`).
        self.relay: ResponseRelay | None = None
        #: The relay that takes the response being read (until its end).
        self._relaying: ResponseRelay | None = None

    @property
    def relaying(self) -> bool:
        """Whether a response is being relayed now (part of it was handed on)."""
        return self._relaying is not None

    def feed(self, data: bytes) -> list[list[bytes | Spool]]:
        """Take ``data``; the responses it completed, each as its pieces."""
        return list(self.responses(data))

    def responses(self, data: bytes) -> Iterator[list[bytes | Spool]]:
        """Take ``data``; yield each response it completes, as soon as it is complete.

        Yielded one at a time, so what the caller does with a response (a
        relay's state, a mailbox's sequence numbers) holds before the next
        is read.
        """
        pos, size = 0, len(data)
        while pos < size:
            if self._remaining:
                take = min(self._remaining, size - pos)
                chunk = data if take == size else data[pos : pos + take]
                self._remaining -= take
                pos += take
                if self._relaying is not None:
                    self._relaying.octets(chunk)
                    continue
                assert self._literal is not None
                self._literal.write(chunk)
                if self._remaining == 0:
                    self._literal.finish()
                    self._pieces.append(self._literal)
                    self._literal = None
                continue
            if self._buffer.endswith(b"\r") and data[pos : pos + 1] == b"\n":
                del self._buffer[-1]  # a CRLF split between two reads
                end, pos = pos, pos + 1
            else:
                end = data.find(b"\r\n", pos)
                if end < 0:
                    self._buffer += data[pos:]
                    pos = size
                    if len(self._buffer) > MAX_LINE:
                        raise ResponseSyntaxError("response line too long")
                    continue
                self._buffer += data[pos:end]
                pos = end + 2
            line, self._buffer = bytes(self._buffer), bytearray()
            if len(line) > MAX_LINE:
                raise ResponseSyntaxError("response line too long")
            if self._relayed(line):
                continue
            if self._starts_literal(line):
                continue
            self._pieces.append(line)
            yield self._pieces
            self._pieces = []

    def _relayed(self, line: bytes) -> bool:
        """Hand ``line`` to the relay when its response is relayed (see :class:`ResponseRelay`)."""
        relay = self._relaying
        if relay is None:
            relay = self.relay
            if relay is None or self._pieces or not line.startswith(b"* "):
                return False
            if not relay.begin(line):
                return False
            self._relaying = relay
        else:
            relay.line(line)
        match = _LITERAL_AT_END.search(line) if line.endswith(b"}") else None
        if match is not None:
            self._remaining = int(match.group(1))  # {0}: the next line follows at once
        else:
            self._relaying = None
            relay.end()
        return True

    def _starts_literal(self, line: bytes) -> bool:
        """A line ending in ``{n}`` announces a literal: start spooling it."""
        match = _LITERAL_AT_END.search(line) if line.endswith(b"}") else None
        if match is None:
            return False
        self._pieces.append(line[: match.start()])
        self._remaining = int(match.group(1))
        self._literal = Spool(self._memory_limit, self._spool_dir)
        if self._remaining == 0:
            self._pieces.append(self._literal)
            self._literal = None
        return True


# -- parsing a response -----------------------------------------------------------


def parse_response(pieces: list[bytes | Spool]) -> Response:
    """The :data:`Response` of a complete response's pieces (ResponseSyntaxError if malformed)."""
    first = pieces[0]
    assert isinstance(first, bytes)
    tag, _, rest = first.partition(b" ")
    if tag == b"+":
        return Continuation(rest)
    word, _, text = rest.partition(b" ")
    if word.upper() in _STATUS and len(pieces) == 1:
        code = None
        if text.startswith(b"["):
            close = text.find(b"]")
            if close < 0:
                raise ResponseSyntaxError("unterminated response code")
            code, text = text[1:close], text[close + 1 :].lstrip(b" ")
        return StatusResponse(tag, word.upper(), code, text)
    if tag != b"*":
        raise ResponseSyntaxError("tagged response that is not a status")
    return DataResponse(tuple(_tokens([rest, *pieces[1:]])))


#: One token of a response line: ``(``, ``)``, a quoted string, or an atom (with an
#: optional bracketed part that may hold spaces and parentheses, ``BODY[HEADER.FIELDS (A)]``).
_TOKEN = re.compile(
    rb' *(?:(?P<open>\()|(?P<close>\))|"(?P<quoted>(?:[^"\\\r\n]|\\.)*)"'
    rb"|(?P<atom>[^ ()\[\]\"\r\n]*\[[^\]\r\n]*\][^ ()\r\n]*|[^ ()\[\]\"\r\n]+))"
)
_UNESCAPE = re.compile(rb"\\(.)")


def _tokens(pieces: list[bytes | Spool]) -> list[Any]:
    """The tokens of a data response's pieces, lists nested (see the module docstring)."""
    top: list[Any] = []
    stack = [top]
    for piece in pieces:
        if isinstance(piece, Spool):
            stack[-1].append(String(piece.getvalue()) if piece.in_memory else piece)
            continue
        position, size = 0, len(piece)
        while position < size:
            match = _TOKEN.match(piece, position)
            if match is None or match.end() == position:
                if piece[position:].strip(b" "):
                    raise ResponseSyntaxError("unexpected octets in a response")
                break
            position = match.end()
            if match.group("open") is not None:
                inner: list[Any] = []
                stack[-1].append(inner)
                stack.append(inner)
            elif match.group("close") is not None:
                if len(stack) == 1:
                    raise ResponseSyntaxError("unbalanced ')'")
                stack.pop()
            elif match.group("quoted") is not None:
                stack[-1].append(String(_UNESCAPE.sub(rb"\1", match.group("quoted"))))
            else:
                atom = match.group("atom")
                stack[-1].append(None if atom.upper() == b"NIL" else atom)
    if len(stack) != 1:
        raise ResponseSyntaxError("unterminated list")
    return top


# -- writing commands ------------------------------------------------------------------


def quote(value: bytes) -> bytes | None:
    """``value`` as a quoted string, or None if it needs a literal (CR, LF, NUL, 8-bit)."""
    if any(b in (0, 0x0A, 0x0D) or b > 0x7F for b in value):
        return None
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def format_uid_set(uids: list[int]) -> bytes:
    """``1:3,7`` for ``[1, 2, 3, 7]`` (ascending, merged runs)."""
    out: list[bytes] = []
    ordered = sorted(set(uids))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(b"%d" % ordered[i] if i == j else b"%d:%d" % (ordered[i], ordered[j]))
        i = j + 1
    return b",".join(out)
