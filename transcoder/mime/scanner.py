"""A forward-only window on a binary file that finds MIME delimiter lines (RFC 2046 section 5.1.1).

The streaming half of :mod:`transcoder.mime.entity`: it holds a few chunks of
the file at a time, counts LF octets as it moves (for body line counts), and
finds the next delimiter line of any active boundary with one regular
expression search per chunk -- C speed, no Python loop per line.

No twisted import here.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import BinaryIO

#: Octets read from the file at a time.
CHUNK = 1 << 16
#: Longest transport padding accepted after a boundary (RFC 2046 section 5.1.1).
MAX_PADDING = 1024
#: Longest boundary RFC 2046 section 5.1.1 allows; longer ones are still honoured.
MAX_BOUNDARY = 70
#: Octets kept before the read position, to look at the line break before a delimiter.
_LOOKBACK = 4
_LF, _CR = 0x0A, 0x0D
_PADDING = re.compile(rb"[ \t]*\r?\Z")


@dataclass(frozen=True)
class Stop:
    """What ended an entity: a delimiter line of boundary ``index``, or the data (-1)."""

    pos: int  # start of the delimiter line, or the end of the data
    lf: int  # LF octets before ``pos``
    index: int  # index into the active boundaries, -1 at the end of the data
    close: bool  # a close delimiter ("--boundary--")
    after: int  # just past the delimiter line


@functools.lru_cache(maxsize=128)
def _delimiter_regex(bounds: tuple[bytes, ...]) -> re.Pattern[bytes]:
    """Candidates for a delimiter line of any of ``bounds``.

    LF, ``--``, a boundary, then (looking ahead) an optional ``--``, blanks
    and the line end: checking the tail in the pattern keeps lines that only
    start like a delimiter out of the Python loop.  ``\\Z`` may be the end of
    the buffer rather than of the data; :meth:`Reader.delimiter_at` decides.

    A boundary longer than RFC 2046's 70 octets contributes only its first
    70, without the tail: compiling costs time in proportion to the
    pattern, and 100 nested multiparts with 10,000-octet boundaries made
    50 million octets of patterns (minutes of CPU for one 3 MB message).
    :meth:`Reader.delimiter_at` checks each candidate in full anyway.
    """
    whole = sorted({b for b in bounds if len(b) <= MAX_BOUNDARY}, key=len, reverse=True)
    cut = sorted({b[:MAX_BOUNDARY] for b in bounds if len(b) > MAX_BOUNDARY})
    alternatives = []
    if whole:
        tail = rb"(?=(?:--)?[ \t]*\r?(?:\n|\Z))"
        alternatives.append(b"(?:" + b"|".join(re.escape(b) for b in whole) + b")" + tail)
    alternatives += [re.escape(b) for b in cut]
    return re.compile(b"\n--(?:" + b"|".join(alternatives) + b")")


class Reader:
    """A forward-only window on ``fp[start:limit]`` that counts LF octets as it advances.

    ``buf`` holds the octets from ``base``; at most a few chunks (plus one
    header line) are held, whatever the size of the data.
    """

    def __init__(self, fp: BinaryIO, start: int, limit: int) -> None:
        fp.seek(start)
        self._fp = fp
        self.limit = limit
        self.buf = b""
        self.base = start
        self.pos = start
        self.lf = 0
        self.parts = 0

    @property
    def buf_end(self) -> int:
        """Absolute offset just past the buffered octets."""
        return self.base + len(self.buf)

    def fill(self, until: int) -> None:
        """Buffer the data up to ``until`` (or its end), dropping what lies behind ``pos``."""
        until = min(until, self.limit)
        if self.buf_end >= until:
            return
        drop = max(0, self.pos - _LOOKBACK - self.base)
        pieces, have = [self.buf[drop:]], self.buf_end
        self.base += drop
        while have < until:
            data = self._fp.read(min(max(CHUNK, until - have), self.limit - have))
            if not data:  # the file is shorter than promised: it ends here
                self.limit = have
                break
            pieces.append(data)
            have += len(data)
        self.buf = b"".join(pieces)

    def advance(self, to: int) -> None:
        """Move ``pos`` forward to ``to`` (buffered), counting the LF octets passed."""
        self.lf += self.buf.count(b"\n", self.pos - self.base, to - self.base)
        self.pos = to

    def byte_at(self, offset: int) -> int:
        """The octet at absolute ``offset`` (normally still buffered)."""
        i = offset - self.base
        if 0 <= i < len(self.buf):
            return self.buf[i]
        here = self._fp.tell()
        self._fp.seek(offset)
        data = self._fp.read(1)
        self._fp.seek(here)
        return data[0] if data else -1

    def readline(self, cap: int) -> bytes:
        """The line at ``pos`` through its LF, at most ``cap`` octets; advances past it."""
        searched = self.pos
        while True:
            stop = min(self.pos + cap, self.limit)
            i = self.buf.find(b"\n", searched - self.base, stop - self.base)
            if i >= 0:
                stop = self.base + i + 1
                break
            if self.buf_end >= stop:
                break
            searched = self.buf_end
            self.fill(self.buf_end + CHUNK)
        line = self.buf[self.pos - self.base : stop - self.base]
        self.advance(stop)
        return line

    def eof(self) -> Stop:
        """The stop at the end of the data (``pos`` must be there)."""
        return Stop(self.limit, self.lf, -1, False, self.limit)

    def delimiter_at(self, at: int, bounds: tuple[bytes, ...]) -> Stop | None:
        """The delimiter line at ``at`` (== ``pos``), innermost boundary first, if any."""
        self.fill(at + 4 + max(map(len, bounds)) + MAX_PADDING)
        i = at - self.base
        for index in range(len(bounds) - 1, -1, -1):
            dash = b"--" + bounds[index]
            if not self.buf.startswith(dash, i):
                continue
            tail_start = i + len(dash)
            nl = self.buf.find(b"\n", tail_start, tail_start + MAX_PADDING)
            if nl >= 0:
                tail, after = self.buf[tail_start:nl], self.base + nl + 1
            elif self.buf_end == self.limit and len(self.buf) - tail_start <= MAX_PADDING:
                tail, after = self.buf[tail_start:], self.limit
            else:
                continue
            close = tail.startswith(b"--")
            # RFC 2046 section 5.1.1: only transport padding may follow the boundary.
            if _PADDING.match(tail, 2 if close else 0):
                return Stop(at, self.lf, index, close, after)
        return None

    def scan(self, bounds: tuple[bytes, ...]) -> Stop:
        """Advance to the next delimiter line of any of ``bounds``, or to the end."""
        if not bounds:
            while self.pos < self.limit:
                self.fill(self.pos + CHUNK)
                self.advance(self.buf_end)
            return self.eof()
        pattern = _delimiter_regex(bounds)
        reach = 3 + max(map(len, bounds))
        while True:
            self.fill(self.pos + CHUNK + reach)
            # An LF just before ``pos`` makes ``pos`` itself a line start.
            m = pattern.search(self.buf, max(self.pos - 1 - self.base, 0))
            while m is not None:
                candidate = self.base + m.start() + 1
                self.advance(candidate)
                stop = self.delimiter_at(candidate, bounds)
                if stop is not None:
                    return stop
                m = pattern.search(self.buf, candidate - self.base)
            if self.buf_end >= self.limit:
                self.advance(self.limit)
                return self.eof()
            self.advance(max(self.pos, self.buf_end - reach))

    def end_before(self, stop: Stop, floor: int) -> tuple[int, int]:
        """``(offset, LF count)`` where an entity ending at ``stop`` ends (never before ``floor``).

        RFC 2046 section 5.1.1: the line break before a delimiter belongs to it.
        """
        end, lf = stop.pos, stop.lf
        if stop.index >= 0 and end - 1 >= floor and self.byte_at(end - 1) == _LF:
            end, lf = end - 1, lf - 1
            if end - 1 >= floor and self.byte_at(end - 1) == _CR:
                end -= 1
        return end, lf

    def lines(self, start: int, end: int, lf_start: int, lf_end: int) -> int:
        """Lines of ``start..end`` given the LF counts at both ends."""
        if end <= start:
            return 0
        return lf_end - lf_start + (0 if self.byte_at(end - 1) == _LF else 1)
