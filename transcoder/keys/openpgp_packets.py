"""A sans-IO first look at OpenPGP key data, before gpg ever sees it.

It answers one question: is this one transferable public key (RFC 9580
section 10.1), and nothing else?  Secret key packets (tags 5 and 7) are
refused here, before import, so that secret material never reaches a gpg
process, a keyring or a log line.  It does not judge keys -- gpg does that.

Armor (RFC 9580 section 6.2): every ``-----BEGIN PGP ...-----`` block is
decoded and the blocks concatenated; armor headers and the optional CRC-24
line are skipped (gpg checks the checksum when it imports).  Packet framing
(RFC 9580 section 4.2): old and new formats; partial and indeterminate
lengths only occur in data packets, so they are refused here.
"""

from __future__ import annotations

import base64
import binascii
import re

from transcoder.keys.errors import KeyInvalid

#: Tags of a transferable public key: signature, public key, marker, trust,
#: user ID, public subkey, user attribute, padding (RFC 9580 section 5).
PUBLIC_KEY_TAGS = frozenset({2, 6, 10, 12, 13, 14, 17, 21})
SECRET_KEY_TAGS = frozenset({5, 7})
PUBLIC_KEY_TAG = 6

SECRET_MESSAGE = "secret key material"

_BEGIN = re.compile(rb"^-----BEGIN PGP ([A-Z0-9 ,/]+)-----[ \t]*\r?$", re.MULTILINE)
_HEADER = re.compile(rb"^[A-Za-z0-9-]+: ")


def dearmor(data: bytes) -> bytes:
    """The binary packets of ``data``: decoded from ASCII armor, or ``data`` itself."""
    blocks = list(_BEGIN.finditer(data))
    if not blocks:
        return data
    decoded = bytearray()
    for begin in blocks:
        label = begin.group(1).decode("ascii")
        if label == "PRIVATE KEY BLOCK":
            raise KeyInvalid(SECRET_MESSAGE)
        if label != "PUBLIC KEY BLOCK":
            raise KeyInvalid(f"PGP {label} is not a public key")
        end = data.find(b"-----END PGP " + begin.group(1) + b"-----", begin.end())
        if end < 0:
            raise KeyInvalid("ASCII armor without its END line")
        decoded += _armor_body(data[begin.end() : end])
    return bytes(decoded)


def _armor_body(body: bytes) -> bytes:
    lines = body.strip().splitlines()
    index = 0
    while index < len(lines) and _HEADER.match(lines[index]):
        index += 1
    payload = [line.strip() for line in lines[index:]]
    if payload and payload[-1].startswith(b"="):
        payload.pop()  # the CRC-24 checksum line
    try:
        return base64.b64decode(b"".join(payload), validate=True)
    except (binascii.Error, ValueError):
        raise KeyInvalid("damaged ASCII armor") from None


def packet_tags(binary: bytes) -> list[int]:
    """The tag of every packet in ``binary``, in order; KeyInvalid if the framing is broken."""
    tags: list[int] = []
    position = 0
    while position < len(binary):
        tag, length, position = _header(binary, position)
        if position + length > len(binary):
            raise KeyInvalid("truncated OpenPGP packet")
        tags.append(tag)
        position += length
    return tags


def _header(data: bytes, position: int) -> tuple[int, int, int]:
    """``(tag, body length, body start)`` of the packet header at ``position``."""
    ctb = data[position]
    if not ctb & 0x80:
        raise KeyInvalid("not OpenPGP data")
    position += 1
    if ctb & 0x40:  # new format (RFC 9580 section 4.2.1)
        tag = ctb & 0x3F
        first = _octets(data, position, 1)
        if first < 192:
            return tag, first, position + 1
        if first < 224:
            return tag, ((first - 192) << 8) + _octets(data, position + 1, 1) + 192, position + 2
        if first == 255:
            return tag, _octets(data, position + 1, 4), position + 5
        raise KeyInvalid("partial-length packet in key data")
    tag = (ctb >> 2) & 0x0F  # legacy format (RFC 9580 section 4.2.2)
    length_type = ctb & 0x03
    if length_type == 3:
        raise KeyInvalid("indeterminate-length packet in key data")
    size = (1, 2, 4)[length_type]
    return tag, _octets(data, position, size), position + size


def _octets(data: bytes, position: int, count: int) -> int:
    if position + count > len(data):
        raise KeyInvalid("truncated OpenPGP packet")
    return int.from_bytes(data[position : position + count], "big")


def check_public_key_data(data: bytes) -> None:
    """KeyInvalid unless ``data`` is exactly one transferable public key, free of secrets."""
    if not data.strip():
        raise KeyInvalid("empty key material")
    tags = packet_tags(dearmor(data))
    if SECRET_KEY_TAGS.intersection(tags):
        raise KeyInvalid(SECRET_MESSAGE)
    foreign = sorted(set(tags) - PUBLIC_KEY_TAGS)
    if foreign:
        raise KeyInvalid(f"OpenPGP packet of type {foreign[0]} does not belong in a public key")
    if not tags or tags[0] != PUBLIC_KEY_TAG:
        raise KeyInvalid("no OpenPGP public key found")
    primaries = tags.count(PUBLIC_KEY_TAG)
    if primaries > 1:
        raise KeyInvalid(f"{primaries} primary keys; send exactly one")
