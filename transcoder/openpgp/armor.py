"""Streaming ASCII armor for an OpenPGP message (RFC 9580 section 6).  Sans-IO.

:class:`ArmorWriter` is given binary packets in pieces and writes::

    -----BEGIN PGP MESSAGE-----<CRLF>
    <CRLF>                                   no armor headers (section 6.2.2)
    <base64, 64 characters a line, CRLF>     as gpg writes them (at most 76 allowed)
    =<CRC-24 in base64><CRLF>                section 6.1
    -----END PGP MESSAGE-----<CRLF>

CRLF line ends because the armor goes into a MIME body part (RFC 5322
section 2.1).  :func:`armored_size` gives the exact size for a binary
length without encoding anything.

The CRC-24 (section 6.1, generator 0x1864CFB, initial value 0xB704CE) is
computed on Python integers: the CRC of octets ``D`` is ``(S * x**24) mod
P`` where ``S`` is ``D`` with the initial value XORed onto its first three
octets, read as one polynomial over GF(2).  The generator has the property
``x**(2**23 - 1) == 1 (mod P)`` (checked in the tests), so ``S`` may first
be reduced modulo ``x**m - 1`` with ``m = 2**23 - 1``: appending a block
of octets to ``S`` is then a rotation of an m-bit integer and an XOR, a
few C-speed big-integer operations per megabyte.  The expensive reduction
modulo ``P`` (:func:`transcoder.mime.pgp_message.crc24`, about 5 ms a
megabyte) runs once, at the end, on about one megabyte.

No twisted import here.
"""

from __future__ import annotations

import binascii
import operator
import struct
from typing import BinaryIO

from transcoder.mime.pgp_message import CRC24_INIT, crc24

BEGIN = b"-----BEGIN PGP MESSAGE-----\r\n\r\n"
END = b"-----END PGP MESSAGE-----\r\n"
#: Base64 characters a line, and the binary octets they carry.
LINE_CHARS = 64
LINE_OCTETS = LINE_CHARS // 4 * 3
#: Binary octets encoded at once (whole lines).
BATCH = LINE_OCTETS * 1024
#: The order of x modulo the CRC-24 generator (see the module docstring).
CRC_FOLD_BITS = (1 << 23) - 1
_FOLD_MASK = (1 << CRC_FOLD_BITS) - 1
#: Octets folded at a time: the most that fit in CRC_FOLD_BITS bits (about a megabyte).
_FOLD_OCTETS = CRC_FOLD_BITS // 8
#: Octets reduced modulo the generator at a time, at the end.
_REDUCE_OCTETS = 64 * 1024


class Crc24:
    """The OpenPGP CRC-24 of octets given in pieces (module docstring: fold, then reduce)."""

    def __init__(self) -> None:
        self._value = 0  # S so far, reduced modulo x**CRC_FOLD_BITS - 1
        self._size = 0  # octets folded into _value
        self._head = b""  # the first octets, while fewer than three
        self._pending: list[bytes] = []
        self._pending_size = 0

    def update(self, data: bytes) -> None:
        """Append ``data`` to the octets checked."""
        if not data:
            return
        if len(self._head) < 3:
            # The register starts at the initial value: x**24 * (D + init * x**(8n - 24))
            # is the CRC, i.e. the initial value is XORed onto the first three octets.
            wanted = 3 - len(self._head)
            start, data = data[:wanted], data[wanted:]
            self._head += start
            if len(self._head) < 3:
                return
            head = int.from_bytes(self._head, "big") ^ CRC24_INIT
            self._pending.append(head.to_bytes(3, "big"))
            self._pending_size += 3
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= _FOLD_OCTETS:
            joined = b"".join(self._pending)
            self._pending = []
            whole = len(joined) - len(joined) % _FOLD_OCTETS
            view = memoryview(joined)
            for offset in range(0, whole, _FOLD_OCTETS):
                self._absorb(view[offset : offset + _FOLD_OCTETS])
            self._pending = [joined[whole:]]
            self._pending_size = len(joined) - whole

    def _absorb(self, block: bytes | memoryview) -> None:
        """``S = S * x**(8 len) + block``, modulo ``x**m - 1``: a rotation of at most m bits
        and an XOR (``block`` has fewer than m bits)."""
        shift = 8 * len(block)
        if self._size:  # rotate left by ``shift`` within m bits, no temporary above m bits
            keep = CRC_FOLD_BITS - shift
            high = self._value >> keep
            self._value &= (1 << keep) - 1
            self._value <<= shift
            self._value |= high
        self._value ^= int.from_bytes(block, "big")
        self._size += len(block)

    def digest(self) -> int:
        """The CRC-24 of everything given (a 24-bit integer)."""
        if len(self._head) < 3:
            return crc24(self._head)
        octets = b"".join(self._pending)
        if self._size:
            self._pending, self._pending_size = [], 0
            self._absorb(octets)  # S modulo x**m - 1, which P divides: the same CRC
            octets = self._value.to_bytes(_FOLD_OCTETS + 1, "big")
        crc = 0  # S * x**24 mod P, where S is the octets; leading zero octets change nothing
        for start in range(0, len(octets), _REDUCE_OCTETS):  # small pieces: small temporaries
            crc = crc24(octets[start : start + _REDUCE_OCTETS], crc)
        return crc


def armored_size(binary_length: int) -> int:
    """Octets :class:`ArmorWriter` writes for ``binary_length`` octets of packets."""
    chars = (binary_length + 2) // 3 * 4
    lines = (chars + LINE_CHARS - 1) // LINE_CHARS
    return len(BEGIN) + chars + 2 * lines + len(b"=XXXX\r\n") + len(END)


def armored_lines(binary_length: int) -> int:
    """Lines (LF octets) :class:`ArmorWriter` writes for ``binary_length`` octets of packets:
    BEGIN, the blank line, the base64 lines, the checksum and END."""
    chars = (binary_length + 2) // 3 * 4
    return 2 + (chars + LINE_CHARS - 1) // LINE_CHARS + 2


_LINE = struct.Struct(f"{LINE_OCTETS}s")
_first = operator.itemgetter(0)


def _lines(octets: bytes) -> bytes:
    """Base64 of ``octets`` in CRLF-terminated lines of :data:`LINE_CHARS` characters.

    One ``b2a_base64`` per line, iterated in C (``struct.iter_unpack`` and
    ``map``): the per-line cost is what dominates armoring.
    """
    whole = len(octets) - len(octets) % LINE_OCTETS
    encoded = b"".join(
        map(binascii.b2a_base64, map(_first, _LINE.iter_unpack(memoryview(octets)[:whole])))
    )
    if whole < len(octets):
        encoded += binascii.b2a_base64(octets[whole:])
    return encoded.replace(b"\n", b"\r\n")


class ArmorWriter:
    """Writes the armor of binary packets given in pieces to ``out`` (module docstring)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.written = 0
        self._crc = Crc24()
        self._pending = b""
        self._begun = False

    def _emit(self, data: bytes) -> None:
        self.out.write(data)
        self.written += len(data)

    def write(self, data: bytes) -> None:
        """Armor ``data``, the octets after those already given (whole lines are written)."""
        if not self._begun:
            self._emit(BEGIN)
            self._begun = True
        self._crc.update(data)
        if self._pending:
            data = self._pending + data
        whole = len(data) - len(data) % LINE_OCTETS
        for start in range(0, whole, BATCH):
            self._emit(_lines(data[start : min(start + BATCH, whole)]))
        self._pending = data[whole:]

    def finish(self) -> int:
        """Write the last line, the checksum and the END line; octets written in all."""
        if not self._begun:
            self._emit(BEGIN)
            self._begun = True
        if self._pending:
            self._emit(_lines(self._pending))
            self._pending = b""
        checksum = binascii.b2a_base64(self._crc.digest().to_bytes(3, "big"), newline=False)
        self._emit(b"=" + checksum + b"\r\n" + END)
        return self.written


__all__ = ["BEGIN", "END", "ArmorWriter", "Crc24", "armored_lines", "armored_size"]
