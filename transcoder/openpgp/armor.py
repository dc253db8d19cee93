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
be reduced modulo
``x**(2**23 - 1) - 1``, which is nothing but XOR-folding ``S`` into
8,388,607-bit pieces: each megabyte costs a shift and an XOR of big
integers.  The expensive reduction modulo ``P``
(:func:`transcoder.mime.pgp_message.crc24`) then runs once, at the end,
on at most one megabyte.

No twisted import here.
"""

from __future__ import annotations

import binascii
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


class Crc24:
    """The OpenPGP CRC-24 of octets given in pieces (module docstring: fold, then reduce)."""

    def __init__(self) -> None:
        self._value = 0  # S so far, reduced modulo x**CRC_FOLD_BITS - 1
        self._bits = 0
        self._head = b""  # the first octets, while fewer than three

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
            self._append(head.to_bytes(3, "big"))
        self._append(data)

    def _append(self, data: bytes) -> None:
        self._value = (self._value << (8 * len(data))) | int.from_bytes(data, "big")
        self._bits += 8 * len(data)
        while self._bits > CRC_FOLD_BITS:
            # hi * x**m + lo == hi + lo (mod x**m - 1)
            self._value = (self._value >> CRC_FOLD_BITS) ^ (self._value & _FOLD_MASK)
            self._bits = max(self._bits - CRC_FOLD_BITS, CRC_FOLD_BITS)

    def digest(self) -> int:
        """The CRC-24 of everything given (a 24-bit integer)."""
        if len(self._head) < 3:
            return crc24(self._head)
        octets = self._value.to_bytes((self._bits + 7) // 8, "big")
        return crc24(octets, 0)  # S * x**24 mod P: leading zero octets change nothing


def armored_size(binary_length: int) -> int:
    """Octets :class:`ArmorWriter` writes for ``binary_length`` octets of packets."""
    chars = (binary_length + 2) // 3 * 4
    lines = (chars + LINE_CHARS - 1) // LINE_CHARS
    return len(BEGIN) + chars + 2 * lines + len(b"=XXXX\r\n") + len(END)


def _lines(octets: bytes) -> bytes:
    """Base64 of ``octets`` in CRLF-terminated lines of :data:`LINE_CHARS` characters."""
    encoded = binascii.b2a_base64(octets, newline=False)
    return (
        b"\r\n".join([encoded[i : i + LINE_CHARS] for i in range(0, len(encoded), LINE_CHARS)])
        + b"\r\n"
    )


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


__all__ = ["BEGIN", "END", "ArmorWriter", "Crc24", "armored_size"]
