"""A sans-IO first look at OpenPGP key data, before gpg ever sees it.

It answers two questions: is this one transferable public key (RFC 9580
section 10.1), and nothing else?  And what did the client send: which
primary key, subkeys and user IDs, by our own reading of the packets?
Secret key packets (tags 5 and 7) are refused here, before import, so that
secret material never reaches a gpg process, a keyring or a log line.  It
does not judge keys -- gpg does that -- but what gpg kept is compared with
what was sent (:mod:`transcoder.keys.openpgp`): gpg re-encodes what it
reads (an MPI's bit count, for one), so a key it stores can have another
fingerprint than the packets the client computed theirs from.

Armor (RFC 9580 section 6.2): every ``-----BEGIN PGP ...-----`` block is
decoded and the blocks concatenated; armor headers are skipped and the
optional CRC-24 (section 6.1) is checked when present.  Only whitespace
may surround the blocks: text or binary packets outside the armor would be
read by some tools and ignored by others.  gpg is given the decoded binary,
so it imports exactly the packets screened here.  Packet framing (RFC 9580
section 4.2): old and new formats; partial and indeterminate lengths only
occur in data packets, so they are refused here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from transcoder.keys.errors import KeyInvalid

#: Tags of a transferable public key: signature, public key, marker, trust,
#: user ID, public subkey, user attribute, padding (RFC 9580 section 5).
PUBLIC_KEY_TAGS = frozenset({2, 6, 10, 12, 13, 14, 17, 21})
SECRET_KEY_TAGS = frozenset({5, 7})
PUBLIC_KEY_TAG = 6
USER_ID_TAG = 13
PUBLIC_SUBKEY_TAG = 14

#: Public-key algorithms that can encrypt (RFC 9580 section 9.1): RSA,
#: RSA encrypt-only, ElGamal, ECDH, X25519, X448 (and the retired ElGamal 20).
ENCRYPTION_ALGORITHMS = frozenset({1, 2, 16, 18, 20, 25, 26})

SECRET_MESSAGE = "secret key material"

_BEGIN = re.compile(rb"^-----BEGIN PGP ([A-Z0-9 ,/]+)-----[ \t]*\r?$", re.MULTILINE)
_HEADER = re.compile(rb"^[A-Za-z0-9-]+: ")
_CRC24_INIT = 0xB704CE
_CRC24_POLY = 0x1864CFB


@dataclass(frozen=True)
class Packet:
    """One OpenPGP packet: its tag and its body (the header stripped)."""

    tag: int
    body: bytes


@dataclass(frozen=True)
class SubmittedSubkey:
    """A public subkey packet as sent: its fingerprint and algorithm ID."""

    fingerprint: str
    algorithm: int

    @property
    def can_encrypt(self) -> bool:
        """Whether its algorithm can encrypt (its key flags are gpg's to judge)."""
        return self.algorithm in ENCRYPTION_ALGORITHMS


@dataclass(frozen=True)
class SubmittedKey:
    """The one transferable public key the client sent, by our own reading.

    ``binary`` is the de-armored packet stream, what gpg is given;
    fingerprints are upper-case hex, computed from the packets as sent.
    """

    binary: bytes
    fingerprint: str
    subkeys: tuple[SubmittedSubkey, ...]
    user_ids: tuple[str, ...]


def crc24(data: bytes) -> int:
    """The CRC-24 of ASCII armor (RFC 9580 section 6.1)."""
    crc = _CRC24_INIT
    for octet in data:
        crc ^= octet << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= _CRC24_POLY
    return crc & 0xFFFFFF


def dearmor(data: bytes) -> bytes:
    """The binary packets of ``data``: decoded from ASCII armor, or ``data`` itself."""
    blocks = list(_BEGIN.finditer(data))
    if not blocks:
        return data
    decoded = bytearray()
    outside = [data[: blocks[0].start()]]
    for begin in blocks:
        label = begin.group(1).decode("ascii")
        if label == "PRIVATE KEY BLOCK":
            raise KeyInvalid(SECRET_MESSAGE)
        if label != "PUBLIC KEY BLOCK":
            raise KeyInvalid(f"PGP {label} is not a public key")
        end_line = b"-----END PGP " + begin.group(1) + b"-----"
        end = data.find(end_line, begin.end())
        if end < 0:
            raise KeyInvalid("ASCII armor without its END line")
        decoded += _armor_body(data[begin.end() : end])
        outside.append(data[end + len(end_line) : _next_start(blocks, begin, data)])
    if any(part.strip() for part in outside):
        raise KeyInvalid("data outside the ASCII armor; send the key block alone")
    return bytes(decoded)


def _next_start(blocks: list[re.Match[bytes]], begin: re.Match[bytes], data: bytes) -> int:
    """Where the block after ``begin`` starts, or the end of ``data``."""
    later = [block.start() for block in blocks if block.start() > begin.start()]
    return later[0] if later else len(data)


def _armor_body(body: bytes) -> bytes:
    lines = body.strip().splitlines()
    index = 0
    while index < len(lines) and _HEADER.match(lines[index]):
        index += 1
    payload = [line.strip() for line in lines[index:]]
    checksum = payload.pop()[1:] if payload and payload[-1].startswith(b"=") else None
    try:
        decoded = base64.b64decode(b"".join(payload), validate=True)
        expected = base64.b64decode(checksum, validate=True) if checksum is not None else None
    except (binascii.Error, ValueError):
        raise KeyInvalid("damaged ASCII armor") from None
    if expected is not None and expected != crc24(decoded).to_bytes(3, "big"):
        raise KeyInvalid("damaged ASCII armor: checksum mismatch")
    return decoded


def read_packets(binary: bytes) -> list[Packet]:
    """Every packet in ``binary``, in order; KeyInvalid if the framing is broken."""
    packets: list[Packet] = []
    position = 0
    while position < len(binary):
        tag, length, position = _header(binary, position)
        if position + length > len(binary):
            raise KeyInvalid("truncated OpenPGP packet")
        packets.append(Packet(tag, binary[position : position + length]))
        position += length
    return packets


def packet_tags(binary: bytes) -> list[int]:
    """The tag of every packet in ``binary``, in order; KeyInvalid if the framing is broken."""
    return [packet.tag for packet in read_packets(binary)]


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


def key_fingerprint(body: bytes) -> str:
    """The fingerprint of a key packet body, upper-case hex (RFC 9580 section 5.5.4).

    Version 4: SHA-1 over ``0x99``, a two-octet length and the body; version
    6: SHA-256 over ``0x9B``, a four-octet length and the body (version 5, of
    LibrePGP, the same with ``0x9A``).  Version 3 keys are refused (RFC 9580
    section 5.5.2: MUST NOT be generated; their MD5 fingerprints are forgeable).
    """
    version = body[0] if body else 0
    if version == 4:
        if len(body) > 0xFFFF:
            raise KeyInvalid("OpenPGP v4 key packet longer than 65535 octets")
        prefix, digest = b"\x99" + len(body).to_bytes(2, "big"), hashlib.sha1
    elif version in (5, 6):
        prefix, digest = bytes([0x95 + version]) + len(body).to_bytes(4, "big"), hashlib.sha256
    else:
        raise KeyInvalid(f"OpenPGP key packet version {version} is not accepted")
    return digest(prefix + body).hexdigest().upper()


def _algorithm(body: bytes) -> int:
    """The public-key algorithm ID of a v4/v5/v6 key packet body (after version and time)."""
    if len(body) < 6:
        raise KeyInvalid("truncated OpenPGP key packet")
    return body[5]


def check_public_key_data(data: bytes) -> SubmittedKey:
    """The one transferable public key in ``data``; KeyInvalid for anything else.

    Refuses secret packets, foreign packets, more than one primary key and
    key packets of versions other than 4, 5 and 6.
    """
    if not data.strip():
        raise KeyInvalid("empty key material")
    binary = dearmor(data)
    packets = read_packets(binary)
    tags = [packet.tag for packet in packets]
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
    return SubmittedKey(
        binary=binary,
        fingerprint=key_fingerprint(packets[0].body),
        subkeys=tuple(
            SubmittedSubkey(key_fingerprint(p.body), _algorithm(p.body))
            for p in packets
            if p.tag == PUBLIC_SUBKEY_TAG
        ),
        user_ids=tuple(p.body.decode("utf-8", "replace") for p in packets if p.tag == USER_ID_TAG),
    )
