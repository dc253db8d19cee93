"""Encrypt a plaintext stream into the base64 body of an S/MIME message, in constant memory.

The flow (RFC 5652 section 6.3, RFC 5083 section 2.1, RFC 8551 section 3.3):

1. draw the content-encryption key and the IV/nonce (labelled draws,
   :mod:`transcoder.cms.randomness`: derived ones make the output a pure
   function of its inputs);
2. build one RecipientInfo per recipient (key transport or key agreement);
3. write the DER prefix, whose lengths follow from the plaintext length;
4. encrypt the plaintext chunk by chunk into a buffer that leaves headroom
   for the base64 carry, and hand it to the line writer (CBC: the PKCS#7
   padding is added to the last block by hand); large messages encrypt the
   next chunk on a helper thread meanwhile;
5. write the suffix (GCM: the ``mac`` OCTET STRING holding the tag).

Memory is a few buffers of :data:`CHUNK` octets, whatever the message size.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from transcoder.cms.base64lines import HEADROOM, Base64LineWriter, base64_lines_size
from transcoder.cms.envelope import (
    AES_BLOCK,
    check_recipients,
    content_algorithm_der,
    enveloped_size,
    frame,
    iv_length,
)
from transcoder.cms.errors import InputTooShort
from transcoder.cms.randomness import CEK, IV, Draw, draw_exactly, system_draw
from transcoder.cms.recipients import Recipient, recipient_info
from transcoder.cms.settings import CmsSettings

#: Plaintext octets read and encrypted per step: large enough that per-call
#: overhead is negligible, small enough that a chunk's ciphertext, base64 and
#: lines stay in the CPU caches (measured fastest between 128 and 512 KiB).
CHUNK = 256 * 1024
#: From this plaintext length on, AES runs on a helper thread (see _encrypt_overlapped).
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
    draw: Draw = system_draw,
) -> int:
    """Encrypt ``plain_len`` octets read from ``src`` to ``recipients``; write base64 to ``dst``.

    The output is the DER ContentInfo (EnvelopedData for CBC, AuthEnvelopedData
    for GCM) in base64, 76-character lines each ending in CRLF: the body of an
    ``application/pkcs7-mime`` entity.  ``draw`` supplies every random value:
    the CEK, the IV/nonce, each RSA recipient's padding and each EC
    recipient's ephemeral key (labels in :mod:`transcoder.cms.randomness`).
    Returns the octets written, always ``smime_body_size(...)``.  Raises
    :class:`InputTooShort` if ``src`` ends early (``dst`` then holds a partial,
    useless body).  Exactly ``plain_len`` octets are read from ``src``.  From
    :data:`PARALLEL_THRESHOLD` octets on, AES runs on a helper thread, which
    is gone when this function returns; ``src`` and ``dst`` are only used
    from the calling thread.
    """
    found = check_recipients(recipients)
    if plain_len < 0:
        raise ValueError(f"negative plaintext length {plain_len}")
    cek = draw_exactly(draw, CEK, settings.key_size)
    iv = draw_exactly(draw, IV, iv_length(settings))
    infos = [recipient_info(r, i, cek, settings, draw) for i, r in enumerate(found)]
    framing = frame(infos, content_algorithm_der(settings, iv), settings, plain_len)
    writer = Base64LineWriter(dst)
    writer.write(framing.prefix)
    if settings.authenticated:
        gcm = Cipher(algorithms.AES(cek), modes.GCM(iv)).encryptor()
        _encrypt_into(src, plain_len, gcm, writer)
        gcm.finalize()
        writer.write(framing.suffix(gcm.tag))
    else:
        cbc = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
        _encrypt_into(src, plain_len, cbc, writer)
        # PKCS#7 padding (RFC 5652 section 6.3): 1..16 octets, each the pad length.
        pad = AES_BLOCK - plain_len % AES_BLOCK
        writer.write(cbc.update(bytes((pad,)) * pad) + cbc.finalize())
    return writer.close()


class _Chunks:
    """The plaintext, read in chunks of :data:`CHUNK` octets; exactly ``plain_len`` in all."""

    def __init__(self, src: BinaryIO, plain_len: int) -> None:
        self._src = src
        self._plain_len = plain_len
        self.remaining = plain_len

    def read(self, buffer: memoryview) -> memoryview:
        """Fill the start of ``buffer`` with the next chunk and return that part."""
        view = buffer[: min(self.remaining, CHUNK)]
        got = 0
        while got < len(view):
            count = _read_into(self._src, view[got:])
            if not count:
                missing = self.remaining - got
                raise InputTooShort(f"plaintext ended {missing} octets short of {self._plain_len}")
            got += count
        self.remaining -= got
        return view


def _read_into(src: BinaryIO, view: memoryview) -> int:
    readinto = getattr(src, "readinto", None)
    if readinto is not None:
        return int(readinto(view) or 0)
    data = src.read(len(view))
    view[: len(data)] = data
    return len(data)


class _Slot:
    """A plaintext buffer and the ciphertext buffer it is encrypted into.

    ``size`` is :data:`CHUNK`, or the whole plaintext when it is smaller: a
    4 KB message need not allocate (and fault in) half a megabyte.
    """

    def __init__(self, size: int = CHUNK) -> None:
        self.plain = memoryview(bytearray(size))
        # Headroom for the base64 carry, and room for the block a CBC
        # encryptor may release on top of the chunk (update_into's contract).
        self.cipher = memoryview(bytearray(HEADROOM + size + AES_BLOCK))


def _encrypt_into(
    src: BinaryIO, plain_len: int, encryptor: CipherContext, writer: Base64LineWriter
) -> None:
    """Encrypt exactly ``plain_len`` octets of ``src`` into ``writer``."""
    chunks = _Chunks(src, plain_len)
    if plain_len < PARALLEL_THRESHOLD:
        slot = _Slot(max(1, min(CHUNK, plain_len)))
        while chunks.remaining:
            count = encryptor.update_into(chunks.read(slot.plain), slot.cipher[HEADROOM:])
            writer.write_chunk(slot.cipher, HEADROOM + count)
    else:
        _encrypt_overlapped(chunks, encryptor, writer)


def _encrypt_overlapped(
    chunks: _Chunks, encryptor: CipherContext, writer: Base64LineWriter
) -> None:
    """Encrypt chunk k+1 on a helper thread while this one base64-encodes and writes chunk k.

    cryptography releases the GIL while it encrypts; binascii and struct hold
    it.  A thread waiting for the GIL only gets it when the holder blocks (or
    after the 5 ms switch interval, longer than a chunk's encoding), so we
    block until the helper is inside ``update_into`` before encoding: from
    then on the two run on two cores.  The helper takes the GIL back while we
    write (file writes release it) or wait for its result.  Reads, encodes
    and writes stay on this thread, in order.
    """
    slots = (_Slot(), _Slot())
    started = threading.Event()

    def encrypt(slot: _Slot, data: memoryview) -> int:
        started.set()
        return HEADROOM + encryptor.update_into(data, slot.cipher[HEADROOM:])

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cms-encrypt") as pool:

        def submit(slot: _Slot) -> Future[int]:
            data = chunks.read(slot.plain)
            started.clear()
            future = pool.submit(encrypt, slot, data)
            started.wait()
            return future

        pending: Future[int] | None = submit(slots[0])
        turn = 0
        while pending is not None:
            end = pending.result()
            # The other slot is free: its chunk was encoded last round.
            pending = submit(slots[1 - turn]) if chunks.remaining else None
            writer.write_chunk(slots[turn].cipher, end)
            turn = 1 - turn
