"""DER length arithmetic for the parts of the message we frame ourselves.

The components (identifiers, algorithm identifiers, versions) are built with
asn1crypto.  The constructed values that enclose the encrypted content are
framed here, because their lengths must be known before the content exists:
we write their headers from the plaintext length alone and stream the content
after them (definite-length DER throughout, X.690 section 8.1.3).  The few
SEQUENCEs around per-message values (encrypted keys, ephemeral points) are
framed here too, around components asn1crypto built once per recipient.
"""

from __future__ import annotations

#: Identifier octets used by the enveloping structures (X.690 section 8.1.2).
SEQUENCE = 0x30
SET = 0x31
OCTET_STRING = 0x04
BIT_STRING = 0x03
CONTEXT_0_CONSTRUCTED = 0xA0
CONTEXT_1_CONSTRUCTED = 0xA1
#: ``[0] IMPLICIT OCTET STRING``, primitive: encryptedContent (RFC 5652 section 6.1).
CONTEXT_0_PRIMITIVE = 0x80


def encode_length(length: int) -> bytes:
    """The length octets of a definite-length encoding (X.690 section 8.1.3).

    Short form below 128; otherwise the long form with the minimum number of
    octets, as DER requires (X.690 section 10.1).
    """
    if length < 0:
        raise ValueError(f"negative length {length}")
    if length < 0x80:
        return bytes((length,))
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def header(tag: int, length: int) -> bytes:
    """Identifier and length octets of a single-octet-tag value of ``length`` content octets."""
    return bytes((tag,)) + encode_length(length)


def header_size(length: int) -> int:
    """Octets of the identifier and length of a value of ``length`` content octets."""
    return 1 + len(encode_length(length))


def tlv_size(length: int) -> int:
    """Octets of a whole encoding (header and content) of ``length`` content octets."""
    return header_size(length) + length
