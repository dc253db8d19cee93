"""Encrypt a plaintext stream into the base64 body of an S/MIME message, in constant memory.

The flow (RFC 5652 section 6.3, RFC 5083 section 2.1, RFC 8551 section 3.3):

1. draw the content-encryption key and the IV/nonce from ``random_bytes``;
2. build one RecipientInfo per recipient (key transport or key agreement);
3. write the DER prefix, whose lengths follow from the plaintext length;
4. encrypt the plaintext chunk by chunk straight into the base64 writer's
   buffer (CBC: PKCS#7 padding added to the last block by hand);
5. write the suffix (GCM: the ``mac`` OCTET STRING holding the tag).

Memory is a few buffers of :data:`CHUNK` octets, whatever the message size.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from transcoder.cms.base64lines import HEADROOM, Base64LineWriter, base64_lines_size
from transcoder.cms.ecdh import EphemeralFactory, default_ephemeral
from transcoder.cms.envelope import (
    AES_BLOCK,
    check_recipients,
    content_algorithm,
    enveloped_size,
    frame,
    iv_length,
)
from transcoder.cms.errors import CmsError, InputTooShort
from transcoder.cms.recipients import Recipient, recipient_info
from transcoder.cms.settings import CmsSettings

#: Plaintext octets read and encrypted per step: large enough that per-call
#: overhead is negligible, small enough that a chunk's ciphertext, base64 and
#: lines stay in the CPU caches (measured fastest between 128 and 512 KiB).
CHUNK = 256 * 1024
#: From this plaintext length on, AES runs on a helper thread (see _encrypt_into).
PARALLEL_THRESHOLD = 4 * CHUNK


def smime_body_size(plain_len: int, recipients: Sequence[Recipient], settings: CmsSettings) -> int:
    """Octets of the base64 body :func:`encrypt_to_smime_body` writes; no encryption needed."""
    return base64_lines_size(enveloped_size(plain_len, recipients, settings))


def encrypt_to_smime_body(
    src: BinaryIO,
    plain_len: int,
    dst: BinaryIO,
    recipients: Sequence[Recipient],
    settings: CmsSettings,
    random_bytes: Callable[[int], bytes] = os.urandom,
    ec_ephemeral: EphemeralFactory | None = None,
) -> int:
    """Encrypt ``plain_len`` octets read from ``src`` to ``recipients``; write base64 to ``dst``.

    The output is the DER ContentInfo (EnvelopedData for CBC, AuthEnvelopedData
    for GCM) in base64, 76-character lines each ending in CRLF: the body of an
    ``application/pkcs7-mime`` entity.  ``random_bytes`` supplies the CEK and
    the IV/nonce; ``ec_ephemeral`` the ephemeral key of each EC recipient.
    Returns the octets written, always ``smime_body_size(...)``.  Raises
    :class:`InputTooShort` if ``src`` ends early (``dst`` then holds a partial,
    useless body).  Exactly ``plain_len`` octets are read from ``src``; from
    :data:`PARALLEL_THRESHOLD` octets on, the reads and writes happen on a
    helper thread (one at a time, in order), which is gone when this returns.
    """
    found = check_recipients(recipients)
    if plain_len < 0:
        raise ValueError(f"negative plaintext length {plain_len}")
    cek = _random(random_bytes, settings.key_size)
    iv = _random(random_bytes, iv_length(settings))
    factory = ec_ephemeral or default_ephemeral
    infos = [recipient_info(r, cek, settings, factory) for r in found]
    framing = frame(infos, content_algorithm(settings, iv), settings, plain_len)
    writer = Base64LineWriter(dst)
    writer.write(framing.prefix)
    if settings.authenticated:
        gcm = Cipher(algorithms.AES(cek), modes.GCM(iv)).encryptor()
        _encrypt_into(src, plain_len, gcm, writer, dst)
        gcm.finalize()
        writer.write(framing.suffix(gcm.tag))
    else:
        cbc = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
        _encrypt_into(src, plain_len, cbc, writer, dst)
        # PKCS#7 padding (RFC 5652 section 6.3): 1..16 octets, each the pad length.
        pad = AES_BLOCK - plain_len % AES_BLOCK
        writer.write(cbc.update(bytes((pad,)) * pad) + cbc.finalize())
    return writer.close()


def _random(random_bytes: Callable[[int], bytes], size: int) -> bytes:
    value = random_bytes(size)
    if len(value) != size:
        raise CmsError(f"random source returned {len(value)} octets, {size} wanted")
    return value


class _ChunkSource:
    """Reads the plaintext in chunks and encrypts each into a buffer with headroom."""

    def __init__(self, src: BinaryIO, plain_len: int, encryptor: CipherContext) -> None:
        self._src = src
        self._encryptor = encryptor
        self._plain_len = plain_len
        self.remaining = plain_len
        self._chunk = bytearray(CHUNK)

    def fill(self, out: memoryview) -> int:
        """Read the next chunk, encrypt it into ``out[HEADROOM:]``; return the end offset."""
        view = memoryview(self._chunk)[: min(self.remaining, CHUNK)]
        got = 0
        while got < len(view):
            count = _read_into(self._src, view[got:])
            if not count:
                missing = self.remaining - got
                raise InputTooShort(f"plaintext ended {missing} octets short of {self._plain_len}")
            got += count
        self.remaining -= got
        return HEADROOM + self._encryptor.update_into(view, out[HEADROOM:])


def _read_into(src: BinaryIO, view: memoryview) -> int:
    readinto = getattr(src, "readinto", None)
    if readinto is not None:
        return int(readinto(view) or 0)
    data = src.read(len(view))
    view[: len(data)] = data
    return len(data)


def _new_buffer() -> memoryview:
    # Headroom for the base64 carry, and room for the block a CBC encryptor
    # may release on top of the chunk (cryptography's update_into contract).
    return memoryview(bytearray(HEADROOM + CHUNK + AES_BLOCK))


def _encrypt_into(
    src: BinaryIO,
    plain_len: int,
    encryptor: CipherContext,
    writer: Base64LineWriter,
    dst: BinaryIO,
) -> None:
    """Encrypt exactly ``plain_len`` octets of ``src`` into ``writer`` (which writes to ``dst``).

    Large messages run the reading, the AES and the writing on a helper
    thread while this one encodes base64: cryptography and file I/O release
    the GIL, binascii and struct do not, so on two cores the two overlap.  The
    helper runs its tasks one at a time in submission order, which keeps the
    output in order and tells us when a buffer is free again (see below).
    """
    source = _ChunkSource(src, plain_len, encryptor)
    if plain_len < PARALLEL_THRESHOLD:
        buffer = _new_buffer()
        while source.remaining:
            writer.write_chunk(buffer, source.fill(buffer))
        return
    buffers = (_new_buffer(), _new_buffer())
    writes: deque[Future[int]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cms-encrypt") as pool:
        pending: Future[int] | None = pool.submit(source.fill, buffers[0])
        turn = 0
        while pending is not None:
            end = pending.result()
            # Tasks run in order: with this fill done, so is every write
            # submitted before it -- among them the one of the row buffer the
            # next encode_chunk reuses.  Raise any error they had.
            while writes and writes[0].done():
                writes.popleft().result()
            pending = pool.submit(source.fill, buffers[1 - turn]) if source.remaining else None
            writes.append(pool.submit(dst.write, writer.encode_chunk(buffers[turn], end)))
            turn = 1 - turn
    for write in writes:
        write.result()
