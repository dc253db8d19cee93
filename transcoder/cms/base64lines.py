"""Streaming base64 in 76-character CRLF lines (RFC 2045 section 6.8).

Base64 turns each 3 octets into 4 characters, so a 76-character line holds
exactly 57 octets.  :class:`Base64LineWriter` keeps fewer than 57 octets back
(the carry) between writes and encodes everything else in whole lines, so the
lines do not depend on how the input was cut; only the final line is short
(and padded with ``=``).  Every line, the last one included, ends with CRLF.

Speed matters here (a 100 MB message is 1.8 million lines), so there is no
per-line Python code: a run of lines is encoded by one ``binascii.b2a_base64``
call, cut into 76-octet fields by one ``struct`` unpack and laid out in
78-octet rows of a reused output buffer by one ``struct`` pack; the CRLFs go
in with two strided slice assignments.  The hot path
(:meth:`Base64LineWriter.write_chunk`) takes the data in a buffer with
headroom in front, where the carry is put, so no chunk is ever copied whole.
"""

from __future__ import annotations

import binascii
import struct
from functools import lru_cache
from typing import BinaryIO

#: Octets per line of base64, characters per line, line terminator (RFC 2045 section 6.8).
LINE_OCTETS = 57
LINE_CHARS = 76
CRLF = b"\r\n"
ROW = LINE_CHARS + len(CRLF)
#: Free octets callers of :meth:`Base64LineWriter.write_chunk` leave before the data.
HEADROOM = LINE_OCTETS


def base64_lines_size(length: int) -> int:
    """Octets of the base64 of ``length`` octets, in 76-character lines each ending in CRLF."""
    full, rest = divmod(length, LINE_OCTETS)
    size = full * ROW
    if rest:
        size += (rest + 2) // 3 * 4 + len(CRLF)
    return size


@lru_cache(maxsize=16)
def _line_codec(lines: int) -> tuple[struct.Struct, struct.Struct]:
    """(split, layout) for ``lines`` lines: 76-octet fields, and the same in 78-octet rows."""
    return struct.Struct("76s" * lines), struct.Struct("76s2x" * lines)


class Base64LineWriter:
    """Writes the base64 of everything it is given to ``dst``, in CRLF-terminated lines.

    Call :meth:`write` or :meth:`write_chunk` any number of times, then
    :meth:`close` once.  ``written`` counts the octets written so far.
    """

    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst
        self._carry = b""
        self._rows = bytearray()
        self.written = 0

    def write(self, data: bytes) -> None:
        """Append ``data`` (copied; meant for the small DER prefix and suffix)."""
        joined = memoryview(self._carry + bytes(data))
        whole = len(joined) - len(joined) % LINE_OCTETS
        self._write_lines(joined[:whole])
        self._carry = bytes(joined[whole:])

    def write_chunk(self, buffer: memoryview, end: int) -> None:
        """Append ``buffer[HEADROOM:end]``, using ``buffer[:HEADROOM]`` as scratch for the carry."""
        start = HEADROOM - len(self._carry)
        buffer[start:HEADROOM] = self._carry
        whole = (end - start) - (end - start) % LINE_OCTETS
        self._write_lines(buffer[start : start + whole])
        self._carry = bytes(buffer[start + whole : end])

    def close(self) -> int:
        """Write the final, possibly short line; return the octets written in all."""
        if self._carry:
            line = binascii.b2a_base64(self._carry, newline=False) + CRLF
            self._dst.write(line)
            self.written += len(line)
            self._carry = b""
        return self.written

    def _write_lines(self, octets: memoryview) -> None:
        """Write ``octets`` (a multiple of 57 long) as whole lines."""
        lines = len(octets) // LINE_OCTETS
        if not lines:
            return
        size = lines * ROW
        if len(self._rows) < size:
            self._rows = bytearray(size)
        split, layout = _line_codec(lines)
        encoded = binascii.b2a_base64(octets, newline=False)
        layout.pack_into(self._rows, 0, *split.unpack(encoded))
        # The pad octets of the layout are zero: put CR and LF over them.
        self._rows[LINE_CHARS:size:ROW] = b"\r" * lines
        self._rows[LINE_CHARS + 1 : size : ROW] = b"\n" * lines
        with memoryview(self._rows) as rows:
            self._dst.write(rows[:size])
        self.written += size
