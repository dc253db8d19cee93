"""Sans-IO-ish: walk a BER/DER file element by element, small parts in memory, content streamed.

Enough of X.690 to stream a CMS EnvelopedData / AuthEnvelopedData from a
file in constant memory: element headers (low tag numbers, definite and
indefinite lengths, section 8.1), whole small elements read into memory
(recipient infos, algorithm identifiers), and the octets of an OCTET STRING
-- primitive, or constructed of primitive segments as ``openssl cms -stream``
writes it (section 8.7.3) -- copied in chunks.  Reads from any binary file
object; raises ValueError on malformed input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 64 * 1024
#: Elements read whole into memory are small (recipient infos, parameters): cap them.
MAX_ELEMENT = 1024 * 1024
EOC = b"\0\0"
#: Nesting deeper than this is refused (CMS needs a handful of levels).
MAX_DEPTH = 32


@dataclass(frozen=True)
class Header:
    """One element's identifier and length octets."""

    tag: int  # the identifier octet (class, constructed bit, tag number < 31)
    length: int | None  # None: indefinite
    raw: bytes

    @property
    def constructed(self) -> bool:
        """Whether the element holds other elements."""
        return bool(self.tag & 0x20)


class BerReader:
    """Reads elements from ``source`` in order."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source

    def _exactly(self, n: int) -> bytes:
        data = self.source.read(n)
        if len(data) != n:
            raise ValueError("BER input ends early")
        return data

    def header(self) -> Header:
        """The next element's header."""
        first = self._exactly(1)
        if first[0] & 0x1F == 0x1F:
            raise ValueError("high tag numbers are not used by CMS")
        octet = self._exactly(1)
        if octet[0] < 0x80:
            return Header(first[0], octet[0], first + octet)
        if octet[0] == 0x80:
            return Header(first[0], None, first + octet)
        count = octet[0] & 0x7F
        if count > 8:
            raise ValueError("BER length too long")
        size = self._exactly(count)
        return Header(first[0], int.from_bytes(size, "big"), first + octet + size)

    def element(self, header: Header | None = None, depth: int = 0) -> bytes:
        """The next element (or the one whose ``header`` was just read), whole."""
        if depth > MAX_DEPTH:
            raise ValueError("BER nested too deeply")
        head = header or self.header()
        if head.length is not None:
            if head.length > MAX_ELEMENT:
                raise ValueError("BER element too large to read whole")
            return head.raw + self._exactly(head.length)
        parts = [head.raw]
        total = 0
        while True:
            inner = self.element(depth=depth + 1)
            if inner == EOC:
                return b"".join(parts) + EOC
            total += len(inner)
            if total > MAX_ELEMENT:
                raise ValueError("BER element too large to read whole")
            parts.append(inner)

    def end_of_contents(self) -> None:
        """Consume the end-of-contents octets closing an indefinite element."""
        if self._exactly(2) != EOC:
            raise ValueError("missing end-of-contents")

    def copy_octets(self, header: Header, out: BinaryIO, depth: int = 0) -> int:
        """Copy the content of the OCTET STRING whose ``header`` was read; octets copied."""
        if depth > MAX_DEPTH:
            raise ValueError("BER nested too deeply")
        if not header.constructed:
            if header.length is None:
                raise ValueError("a primitive element has a definite length")
            left = header.length
            while left:
                block = self._exactly(min(CHUNK, left))
                out.write(block)
                left -= len(block)
            return header.length
        # Constructed (X.690 8.7.3.2): primitive OCTET STRING segments, ended by
        # end-of-contents (indefinite) or by the length (definite; the file is seekable).
        end = None if header.length is None else self.source.tell() + header.length
        copied = 0
        while end is None or self.source.tell() < end:
            inner = self.header()
            if inner.tag == 0 and inner.length == 0 and end is None:
                return copied
            if inner.tag not in (0x04, 0x24):
                raise ValueError("a constructed OCTET STRING holds only OCTET STRINGs")
            copied += self.copy_octets(inner, out, depth + 1)
        return copied
