"""The native OpenPGP encoder: one armored, encrypted message, streamed.  Sans-IO.

What :func:`encrypt_armored` writes (RFC 9580; every packet in the new
format, with definite lengths since every length is known before the
first octet is written)::

    PKESK v3      one per recipient (sections 5.1, 5.1.3 RSA, 5.1.4 ECDH)
    SEIPD v1      section 5.13.1: AES-256 in OpenPGP CFB mode, IV of zeros,
                  no resynchronisation (section 5.13.1, not the SED quirk)
      random prefix: 16 octets, then its last two again (section 5.13.1)
      Literal Data  section 5.9: format 'b', empty file name, date 0
      MDC           section 5.14: 0xD3 0x14, then SHA-1 of prefix, the
                    Literal Data packet and the MDC's own two header octets

armored as :mod:`transcoder.openpgp.armor` describes.  No compression
(compression would leak the plaintext's redundancy through the length; gpg
is run with ``--compress-algo none`` for the same reason).  With a
``signer`` (a :class:`~transcoder.openpgp.sign.LiteralSigner`, signed views
of issue 16) the Literal Data packet is preceded by a One-Pass Signature
packet and followed by the Signature packet, inside the SEIPD (RFC 3156
section 6.2; :mod:`transcoder.openpgp.sign`): still one pass, and still of a
size known in advance.

Why SEIPD version 1 and not version 2 (AEAD): gpg 2.2, which Debian ships,
does not read version 2; every OpenPGP implementation reads version 1 with
the MDC (RFC 9580 section 5.13.1 keeps it for v4 keys).

Every random value is drawn by purpose from ``draw`` (labels under the
given prefix): ``session-key`` (32 octets), ``cfb-prefix`` (16) and, per
recipient ``i`` with the (sub)key fingerprint ``fpr``, ``recipient/<i>/<fpr>/...``
(see :mod:`transcoder.openpgp.recipients`): no padding or ephemeral key is
ever drawn for two different keys.  The same draws, plaintext and
recipients give the same octets.

:func:`armored_message_size` gives the exact output size from the
plaintext's size and the recipients, without encrypting or drawing.

Memory: one read buffer (:data:`CHUNK`) and the armor of one chunk.

No twisted import here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import BinaryIO, Protocol

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from transcoder.cms.randomness import Draw
from transcoder.openpgp.armor import ArmorWriter, armored_lines, armored_size
from transcoder.openpgp.errors import OpenPgpError
from transcoder.openpgp.packets import (
    LITERAL_DATA_TAG,
    MAX_BODY_LENGTH,
    MDC_TAG,
    PKESK_TAG,
    SEIPD_TAG,
    header,
    packet_size,
)
from transcoder.openpgp.recipients import SESSION_KEY_SIZE, Recipient, exact
from transcoder.openpgp.sign import LiteralSigner, SigningKey, one_pass_signature, signed_overhead

#: Plaintext octets read at a time.
CHUNK = 256 * 1024
#: AES block size: the random prefix of SEIPD is one block (RFC 9580 section 5.13.1).
BLOCK_SIZE = 16
#: Literal Data fields before the data: format 'b', file name length 0, date (section 5.9).
LITERAL_FORMAT = b"b"
LITERAL_DATE = 0
LITERAL_PREFIX = LITERAL_FORMAT + b"\x00" + LITERAL_DATE.to_bytes(4, "big")
#: The MDC packet's header, hashed with the rest (RFC 9580 section 5.14).
MDC_HEADER = bytes([0xC0 | MDC_TAG, 20])
MDC_SIZE = len(MDC_HEADER) + 20

SESSION_KEY_LABEL = "session-key"
CFB_PREFIX_LABEL = "cfb-prefix"


class Readable(Protocol):
    """A source of plaintext: ``read(size)`` gives up to ``size`` octets, ``b""`` at the end."""

    def read(self, size: int = -1, /) -> bytes | None:
        """Up to ``size`` octets."""
        ...


def literal_body_size(plain_size: int) -> int:
    """Octets of the Literal Data packet's body for ``plain_size`` octets of data."""
    return len(LITERAL_PREFIX) + plain_size


def seipd_body_size(plain_size: int, signer: SigningKey | None = None) -> int:
    """Octets of the SEIPD body: version, prefix, Literal Data packet (signed by ``signer``:
    with the One-Pass Signature and Signature packets), MDC packet."""
    signature = 0 if signer is None else signed_overhead(signer)
    return 1 + BLOCK_SIZE + 2 + packet_size(literal_body_size(plain_size)) + signature + MDC_SIZE


def binary_message_size(
    plain_size: int, recipients: Sequence[Recipient], signer: SigningKey | None = None
) -> int:
    """Octets of the binary message (before armor)."""
    if not recipients:
        raise OpenPgpError("no recipients")
    body = seipd_body_size(plain_size, signer)
    if body > MAX_BODY_LENGTH:
        raise OpenPgpError(f"a {plain_size}-octet message is too large to frame")
    return sum(packet_size(r.pkesk_body_size) for r in recipients) + packet_size(body)


def armored_message_size(
    plain_size: int, recipients: Sequence[Recipient], signer: SigningKey | None = None
) -> int:
    """Octets :func:`encrypt_armored` writes for ``plain_size`` octets to ``recipients``."""
    return armored_size(binary_message_size(plain_size, recipients, signer))


def armored_message_lines(
    plain_size: int, recipients: Sequence[Recipient], signer: SigningKey | None = None
) -> int:
    """Lines (LF octets) :func:`encrypt_armored` writes for ``plain_size`` octets."""
    return armored_lines(binary_message_size(plain_size, recipients, signer))


def encrypt_armored(
    src: Readable,
    plain_size: int,
    out: BinaryIO,
    recipients: Sequence[Recipient],
    draw: Draw,
    signer: LiteralSigner | None = None,
) -> int:
    """Encrypt the ``plain_size`` octets of ``src`` to ``recipients``; armor them into ``out``.

    With ``signer``, the plaintext is a signed message (module docstring).
    Returns the octets written (always :func:`armored_message_size`).
    Raises EOFError when ``src`` ends early, OpenPgpError when it runs
    longer than ``plain_size`` or a draw is refused; ``out`` then holds a
    useless partial message.
    """
    key = None if signer is None else signer.key
    total = binary_message_size(plain_size, recipients, key)
    session_key = exact(draw, SESSION_KEY_LABEL, SESSION_KEY_SIZE)
    armor = ArmorWriter(out)
    for index, recipient in enumerate(recipients):
        label = f"recipient/{index}/{recipient.fingerprint.hex()}"
        body = recipient.pkesk_body(session_key, draw, label)
        armor.write(header(PKESK_TAG, len(body)) + body)
    random_prefix = exact(draw, CFB_PREFIX_LABEL, BLOCK_SIZE)
    prefix = random_prefix + random_prefix[-2:]
    literal_size = literal_body_size(plain_size)
    one_pass = b"" if key is None else one_pass_signature(key)  # RFC 9580 section 5.4
    clear_head = prefix + one_pass + header(LITERAL_DATA_TAG, literal_size) + LITERAL_PREFIX
    mdc = hashlib.sha1(clear_head)  # SHA-1 is what the MDC is (section 5.14)
    # OpenPGP CFB for SEIPD is plain CFB-128 with an all-zero IV (RFC 9580 section 5.13.1).
    encryptor = Cipher(algorithms.AES(session_key), CFB(bytes(BLOCK_SIZE))).encryptor()
    seipd_size = seipd_body_size(plain_size, key)
    armor.write(header(SEIPD_TAG, seipd_size) + b"\x01" + encryptor.update(clear_head))
    remaining = plain_size
    while remaining:
        chunk = src.read(min(CHUNK, remaining))
        if not chunk:
            raise EOFError(f"plaintext ended {remaining} octets short of {plain_size}")
        remaining -= len(chunk)
        mdc.update(chunk)
        if signer is not None:
            signer.update(chunk)  # a binary document: the data alone (section 5.2.4)
        armor.write(encryptor.update(chunk))
    if src.read(1):
        raise OpenPgpError(f"plaintext longer than {plain_size} octets")
    if signer is not None:
        signature = signer.signature_packet()
        mdc.update(signature)
        armor.write(encryptor.update(signature))
    mdc.update(MDC_HEADER)
    armor.write(encryptor.update(MDC_HEADER + mdc.digest()) + encryptor.finalize())
    written = armor.finish()
    if written != armored_size(total):
        raise OpenPgpError("armored message of an unexpected size")
    return written


__all__ = [
    "CFB_PREFIX_LABEL",
    "SESSION_KEY_LABEL",
    "armored_message_lines",
    "armored_message_size",
    "binary_message_size",
    "encrypt_armored",
]
