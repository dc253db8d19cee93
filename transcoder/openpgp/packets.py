"""OpenPGP packet framing and the few encodings the encoder writes.  Sans-IO.

Everything here is RFC 9580 (which keeps RFC 4880's v4 formats unchanged):

* new-format packet headers (section 4.2.1) with one-, two- and five-octet
  body lengths (sections 4.2.1.1-4.2.1.3), always the shortest, as gpg
  writes them; the encoder knows every body length in advance, so it never
  needs partial body lengths (section 4.2.1.4);
* multiprecision integers (section 3.2): a two-octet bit count, then the
  big-endian octets without leading zeros;
* public-key packet fields of version 4 keys (section 5.5.2), read by
  :mod:`transcoder.openpgp.recipients`.

No twisted import here.
"""

from __future__ import annotations

from transcoder.openpgp.errors import OpenPgpError

#: Packet tags (RFC 9580 section 5).
PKESK_TAG = 1
LITERAL_DATA_TAG = 11
SEIPD_TAG = 18
MDC_TAG = 19

#: The largest body a five-octet length can describe (RFC 9580 section 4.2.1.3).
MAX_BODY_LENGTH = 0xFFFFFFFF


def length_size(length: int) -> int:
    """Octets of the new-format length field for a body of ``length`` octets."""
    if length < 0 or length > MAX_BODY_LENGTH:
        raise OpenPgpError(f"packet body of {length} octets cannot be framed")
    if length < 192:
        return 1
    if length < 8384:
        return 2
    return 5


def header(tag: int, length: int) -> bytes:
    """A new-format packet header (RFC 9580 section 4.2.1): CTB ``0xC0 | tag`` and the length."""
    ctb = bytes([0xC0 | tag])
    size = length_size(length)
    if size == 1:  # section 4.2.1.1
        return ctb + bytes([length])
    if size == 2:  # section 4.2.1.2: ((1st - 192) << 8) + 2nd + 192
        rest = length - 192
        return ctb + bytes([(rest >> 8) + 192, rest & 0xFF])
    return ctb + b"\xff" + length.to_bytes(4, "big")  # section 4.2.1.3


def packet_size(length: int) -> int:
    """Octets of a whole packet (header and body) whose body is ``length`` octets."""
    return 1 + length_size(length) + length


def mpi(octets: bytes) -> bytes:
    """The MPI of the big-endian unsigned integer ``octets`` (RFC 9580 section 3.2)."""
    stripped = octets.lstrip(b"\x00")
    bits = len(stripped) * 8 - (8 - stripped[0].bit_length()) if stripped else 0
    return bits.to_bytes(2, "big") + stripped


def read_mpi(body: bytes, at: int) -> tuple[bytes, int]:
    """The MPI at ``body[at:]``: its octets and the position after it; OpenPgpError if truncated."""
    if at + 2 > len(body):
        raise OpenPgpError("truncated MPI")
    bits = int.from_bytes(body[at : at + 2], "big")
    end = at + 2 + (bits + 7) // 8
    if end > len(body):
        raise OpenPgpError("truncated MPI")
    return body[at + 2 : end], end


__all__ = [
    "LITERAL_DATA_TAG",
    "MAX_BODY_LENGTH",
    "MDC_TAG",
    "PKESK_TAG",
    "SEIPD_TAG",
    "header",
    "length_size",
    "mpi",
    "packet_size",
    "read_mpi",
]
