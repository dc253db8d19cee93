"""Is this text exactly one armored, encrypted OpenPGP message?  Streaming and sans-IO.

:class:`ArmoredMessageCheck` is fed the text in pieces of any size and
answers at the end; memory stays bounded whatever the size (a 100 MB
message is never held), and only packet headers are looked at: the large
encrypted data packet is skipped by its length.  Used by
:mod:`transcoder.mime.ciphertext` to decide whether a message may pass
through untouched.  What it accepts, strictly:

* Armor (RFC 9580 section 6.2): white space, then the line
  ``-----BEGIN PGP MESSAGE-----``, a blank line, base64 lines of at most 76
  characters, an optional ``=`` CRC-24 line, ``-----END PGP MESSAGE-----``,
  then white space only.  Line ends CRLF or LF, trailing blanks allowed.
  **No armor headers**: ``Comment:`` and ``Version:`` are free text that
  would cross the network in clear, so a message carrying any is not
  accepted (it is then encrypted like any other message).
* The CRC-24, when present, matches the decoded octets (section 6.1).  It is
  computed with polynomial arithmetic on Python integers, a megabyte per
  step, not a loop per octet.
* Packets (RFC 9580 sections 4.2 and 10.3): an encrypted message, i.e. zero
  or more PKESK (tag 1, version 3 or 6) or SKESK (tag 3, version 4 to 6)
  packets, then exactly one encrypted data packet -- SED (tag 9), SEIPD
  (tag 18, version 1 or 2) or the LibrePGP OCB packet (tag 20, version 1)
  -- and nothing after it.  Old and new header formats; partial lengths only
  for the data packet, the first at least 512 octets (section 4.2.1.4); an
  old-format indeterminate length only for a data packet, which then runs
  to the end.

No twisted import here.
"""

from __future__ import annotations

import enum
import functools
import re

from transcoder.mime.base64stream import WHITESPACE, Base64Decoder

#: CRC-24 of RFC 9580 section 6.1: generator polynomial (with x^24) and initial value.
CRC24_POLY = 0x1864CFB
CRC24_INIT = 0xB704CE
#: Longest line looked at in one piece; a longer one is not armor.
MAX_LINE = 1024

_BEGIN = re.compile(rb"-----BEGIN PGP MESSAGE-----[ \t]*\r?\n")
_END = re.compile(rb"-----END PGP MESSAGE-----[ \t]*\r?\n")
_BLANK = re.compile(rb"[ \t]*\r?\n")
_CRC = re.compile(rb"=([A-Za-z0-9+/]{4})[ \t]*\r?\n")
_PAYLOAD_LINES = re.compile(rb"(?:[A-Za-z0-9+/]{1,76}={0,2}[ \t]*\r?\n)+")
_LEADING_SPACE = re.compile(rb"[ \t\r\n]*")

#: Encrypted-session-key packets and the versions accepted (RFC 9580 sections 5.1, 5.3).
_ESK_VERSIONS = {1: (3, 6), 3: (4, 5, 6)}
#: Encrypted data packets; the versions accepted, ``None``: the packet has no version octet.
_DATA_VERSIONS: dict[int, tuple[int, ...] | None] = {9: None, 18: (1, 2), 20: (1,)}
_MIN_FIRST_PARTIAL = 512


# -- CRC-24 -------------------------------------------------------------------------------


def _clmul(a: int, b: int) -> int:
    """Carry-less product of two GF(2) polynomials (``b`` small)."""
    product = 0
    while b:
        low = b & -b
        product ^= a << (low.bit_length() - 1)
        b ^= low
    return product


def _reduce_small(a: int) -> int:
    """``a mod CRC24_POLY`` by long division (for ``a`` of a few dozen bits)."""
    size = a.bit_length()
    while size > 24:
        a ^= CRC24_POLY << (size - 25)
        size = a.bit_length()
    return a


@functools.lru_cache(maxsize=256)
def _x_power(k: int) -> int:
    """``x**k mod CRC24_POLY`` by square and multiply."""
    result, base = 1, 2
    while k:
        if k & 1:
            result = _reduce_small(_clmul(result, base))
        base = _reduce_small(_clmul(base, base))
        k >>= 1
    return result


def _reduce(a: int, bits: int) -> int:
    """``a mod CRC24_POLY`` for ``a`` below ``2**bits``: fold the top half down until small.

    ``hi * x**k + lo`` is congruent to ``hi * (x**k mod P) + lo``, which is
    about half as long: each fold is a couple of dozen shifts and XORs of
    big integers, done in C.
    """
    while bits > 64:
        k = bits // 2
        high = a >> k
        a = (a & ((1 << k) - 1)) ^ _clmul(high, _x_power(k))
        bits = max(k, bits - k + 24)
    return _reduce_small(a)


def crc24(data: bytes, crc: int = CRC24_INIT) -> int:
    """The OpenPGP CRC-24 of ``data`` continuing from ``crc`` (RFC 9580 section 6.1).

    The register after ``data`` is ``(crc * x**(8n) + data * x**24) mod P``.
    """
    bits = 8 * len(data)
    return _reduce((crc << bits) ^ (int.from_bytes(data, "big") << 24), bits + 48)


# -- packets ------------------------------------------------------------------------------


class _Malformed(Exception):
    """The octets are not the OpenPGP message accepted here."""


def _length(head: bytes | bytearray, at: int) -> tuple[int, bool, int] | None:
    """New-format body length at ``head[at:]``: (length, partial, octets used); None: need more."""
    if at >= len(head):
        return None
    first = head[at]
    if first < 192:
        return first, False, 1
    if first < 224:
        if at + 2 > len(head):
            return None
        return ((first - 192) << 8) + head[at + 1] + 192, False, 2
    if first < 255:
        return 1 << (first & 0x1F), True, 1
    if at + 5 > len(head):
        return None
    return int.from_bytes(head[at + 1 : at + 5], "big"), False, 5


def _header(head: bytearray) -> tuple[int, int | None, bool] | None:
    """(tag, length or None for indeterminate, partial) of a packet header; None: need more."""
    ctb = head[0]
    if not ctb & 0x80:
        raise _Malformed("not a packet header")
    if ctb & 0x40:  # new format (RFC 9580 section 4.2.1)
        decoded = _length(head, 1)
        if decoded is None:
            return None
        if 1 + decoded[2] != len(head):
            raise _Malformed("header octets left over")
        return ctb & 0x3F, decoded[0], decoded[1]
    length_type = ctb & 0x03  # legacy format (RFC 9580 section 4.2.2)
    if length_type == 3:
        return (ctb >> 2) & 0x0F, None, False
    size = (1, 2, 4)[length_type]
    if len(head) < 1 + size:
        return None
    return (ctb >> 2) & 0x0F, int.from_bytes(head[1 : 1 + size], "big"), False


class _Walk(enum.Enum):
    HEADER = "header"  # reading a packet header
    BODY = "body"  # skipping a packet body (or one partial chunk of it)
    CHUNK_LENGTH = "chunk length"  # reading the length of the next partial chunk
    REST = "rest"  # an indeterminate-length data packet: all the rest is its body
    DONE = "done"  # the data packet ended: nothing may follow


class PacketWalker:
    """Checks that octets fed in pieces form one encrypted OpenPGP message (module doc)."""

    def __init__(self) -> None:
        self.ok = True
        self._state = _Walk.HEADER
        self._head = bytearray()
        self._left = 0
        self._tag = 0
        self._versions: tuple[int, ...] | None = None  # version octet still to check
        self._partial = False
        self._rest_seen = False

    def feed(self, data: bytes) -> None:
        """Walk ``data``, the octets after those already fed."""
        if not self.ok:
            return
        try:
            self._walk(data)
        except _Malformed:
            self.ok = False

    def _walk(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._state is _Walk.BODY:
                if self._versions is not None:
                    if data[pos] not in self._versions:
                        raise _Malformed(f"packet {self._tag}: version {data[pos]}")
                    self._versions = None
                taken = min(self._left, end - pos)
                self._left -= taken
                pos += taken
                if not self._left:
                    self._body_ended()
            elif self._state is _Walk.REST:
                self._rest_seen = True
                return
            elif self._state is _Walk.DONE:
                raise _Malformed("octets after the encrypted data packet")
            else:
                self._head.append(data[pos])
                pos += 1
                if self._state is _Walk.HEADER:
                    self._packet_header()
                else:
                    self._chunk_length()

    def _packet_header(self) -> None:
        decoded = _header(self._head)
        if decoded is None:
            return
        self._head.clear()
        tag, length, partial = decoded
        if tag in _ESK_VERSIONS and length is not None and not partial:
            self._versions = _ESK_VERSIONS[tag]
        elif tag in _DATA_VERSIONS:
            self._versions = _DATA_VERSIONS[tag]
            if partial and (length or 0) < _MIN_FIRST_PARTIAL:
                raise _Malformed("first partial chunk shorter than 512 octets")
        else:
            raise _Malformed(f"packet {tag} does not belong in an encrypted message")
        self._tag, self._partial = tag, partial
        if length is None:  # legacy indeterminate length: runs to the end
            self._state = _Walk.REST
        elif length == 0:
            raise _Malformed(f"packet {tag} is empty")
        else:
            self._left, self._state = length, _Walk.BODY

    def _chunk_length(self) -> None:
        decoded = _length(self._head, 0)
        if decoded is None:
            return
        self._head.clear()
        self._left, self._partial, _ = decoded
        self._state = _Walk.BODY
        if not self._left:
            self._body_ended()

    def _body_ended(self) -> None:
        if self._partial:
            self._state = _Walk.CHUNK_LENGTH
        elif self._tag in _DATA_VERSIONS:
            self._state = _Walk.DONE
        else:
            self._state = _Walk.HEADER

    def finish(self) -> bool:
        """Whether everything fed was exactly one encrypted message."""
        complete = self._state is _Walk.DONE or (self._state is _Walk.REST and self._rest_seen)
        self.ok = self.ok and complete and not self._head
        return self.ok


# -- armor --------------------------------------------------------------------------------


class _Armor(enum.Enum):
    LEADING = "leading white space"
    BLANK = "blank line after BEGIN"
    PAYLOAD = "base64 lines"
    END = "END line after the checksum"
    TRAILING = "trailing white space"


class ArmoredMessageCheck:
    """Checks that text fed in pieces is exactly one armored encrypted message (module doc)."""

    def __init__(self) -> None:
        self.ok = True
        self._state = _Armor.LEADING
        self._rest = b""
        self._base64 = Base64Decoder()
        self._packets = PacketWalker()
        self._crc = CRC24_INIT
        self._claimed_crc: bytes | None = None

    def feed(self, text: bytes) -> None:
        """Check ``text``, the characters after those already fed."""
        if not self.ok:
            return
        if self._state is _Armor.TRAILING:
            self.ok = not text.translate(None, WHITESPACE)
            return
        buffer = self._rest + text
        pos = self._lines(buffer)
        self._rest = buffer[pos:]
        if len(self._rest) > MAX_LINE and self._state is not _Armor.TRAILING:
            self.ok = False

    def _lines(self, buffer: bytes) -> int:
        """Consume the complete lines of ``buffer``; the position of the first one left."""
        pos = 0
        while self.ok:
            if self._state is _Armor.LEADING:
                pos = _LEADING_SPACE.match(buffer, pos).end()  # type: ignore[union-attr]
                if pos == len(buffer):
                    return pos
            if self._state is _Armor.PAYLOAD:
                lines = _PAYLOAD_LINES.match(buffer, pos)
                if lines is not None:
                    self._payload(buffer[pos : lines.end()])
                    pos = lines.end()
            if self._state is _Armor.TRAILING:
                self.ok = not buffer[pos:].translate(None, WHITESPACE)
                return len(buffer)
            newline = buffer.find(b"\n", pos)
            if newline < 0:
                return pos
            self._line(buffer[pos : newline + 1])
            pos = newline + 1
        return pos

    def _line(self, line: bytes) -> None:
        """One complete line that is not white space before BEGIN nor plain base64."""
        state = self._state
        if state is _Armor.LEADING and _BEGIN.fullmatch(line):
            self._state = _Armor.BLANK
        elif state is _Armor.BLANK and _BLANK.fullmatch(line):
            self._state = _Armor.PAYLOAD
        elif state is _Armor.PAYLOAD and (crc := _CRC.fullmatch(line)):
            self._claimed_crc = crc.group(1)
            self._state = _Armor.END
        elif state in (_Armor.PAYLOAD, _Armor.END) and _END.fullmatch(line):
            self._state = _Armor.TRAILING
        else:
            self.ok = False  # armor headers, text, another block, a damaged line

    def _payload(self, lines: bytes) -> None:
        octets = self._base64.feed(lines)
        if not self._base64.ok:
            self.ok = False
            return
        if octets:
            self._crc = crc24(octets, self._crc)
            self._packets.feed(octets)
            self.ok = self._packets.ok

    def finish(self) -> bool:
        """Whether all the text fed was one armored encrypted message and white space."""
        if self.ok and self._rest:
            self.feed(b"\n")  # a last line without a line end
        if not (self.ok and self._state is _Armor.TRAILING):
            return False
        if not (self._base64.finish() and self._packets.finish()):
            return False
        if self._claimed_crc is not None:
            claimed = int.from_bytes(Base64Decoder().feed(self._claimed_crc), "big")
            return claimed == self._crc
        return True


__all__ = ["CRC24_INIT", "ArmoredMessageCheck", "PacketWalker", "crc24"]
