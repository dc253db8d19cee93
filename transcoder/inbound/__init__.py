"""Encrypted APPEND (issue 16): messages clients encrypt to the server's key, decrypted.

draft-maes-lemonade-xencrypted section 3.2: a client encrypts what it
APPENDs (a draft, a sent message) to the server's public encryption key
(``XKEY SERVER``), so it crosses the network as ciphertext; the server
decrypts it before storing, so search, sieve, virus scanning and the user's
own views work on the plaintext.  :func:`decrypt_append` is what the IMAP
layer calls, in a worker thread, before the store:

* not encrypted, or encrypted to keys that are not the server's (the user's
  own ciphertext): ``None``, stored as sent;
* encrypted to a current or retired server encryption key: the
  :class:`Decrypted` message to store (:mod:`.message`);
* encrypted to a server key but not decryptable: ``NotDecryptable``
  (``NO [CANNOT]``): storing it would keep octets nobody can read.
"""

from __future__ import annotations

import base64
import binascii
import shutil
import tempfile
from dataclasses import dataclass
from typing import BinaryIO

from transcoder.inbound.cms_decrypt import (
    NotDecryptable,
    decrypt_cms_file,
    load_decryption_key,
)
from transcoder.inbound.message import classify, split_header, stored_prefix
from transcoder.inbound.pgp_decrypt import decrypt_openpgp, extract_armored
from transcoder.keys.model import KeyFormat
from transcoder.keys.server_keys_files import ServerKeyFiles

__all__ = ["Decrypted", "DecryptedFile", "NotDecryptable", "decrypt_append", "decrypt_append_file"]

#: How much of an APPEND is read to see whether it is encrypted at all.
HEADER_PEEK = 64 * 1024
CHUNK = 64 * 1024


@dataclass(frozen=True)
class DecryptedFile:
    """A decrypted APPEND: the message to store (a temporary file, at its start), its
    size, and which server key opened it."""

    file: BinaryIO
    size: int
    format: KeyFormat
    fingerprint: str


@dataclass(frozen=True)
class Decrypted:
    """:class:`DecryptedFile` with the message in memory (for small messages and tests)."""

    message: bytes
    format: KeyFormat
    fingerprint: str


def decrypt_append(message: bytes, files: ServerKeyFiles) -> Decrypted | None:
    """``message`` decrypted with the server's keys, or ``None`` to store it as sent."""
    import io

    found = decrypt_append_file(io.BytesIO(message), files)
    if found is None:
        return None
    with found.file:
        return Decrypted(found.file.read(), found.format, found.fingerprint)


def decrypt_append_file(source: BinaryIO, files: ServerKeyFiles) -> DecryptedFile | None:
    """An APPEND's literal file decrypted with the server's keys, in constant memory
    (temporary files hold the intermediate octets); ``None`` to store it as sent, with
    ``source`` rewound.  A message whose header names no encrypted type is not read
    beyond its first ``HEADER_PEEK`` octets."""
    source.seek(0)
    head = source.read(HEADER_PEEK)
    header, body = split_header(head)
    kind = classify(header) if len(body) < len(head) or head.endswith(b"\n") else None
    if kind is None:
        source.seek(0)
        return None
    offset = len(head) - len(body)
    with tempfile.TemporaryFile() as plain:
        source.seek(offset)
        if kind == "smime":
            opened = _open_smime(source, files, plain)
        else:
            opened = _open_openpgp(source, files, plain)
        source.seek(0)
        if opened is None:
            return None
        plain.seek(0)
        prefix = stored_prefix(header, plain.read(HEADER_PEEK))
        plain.seek(0)
        result = tempfile.TemporaryFile()  # noqa: SIM115 -- handed to the caller, who closes it
        result.write(prefix)
        shutil.copyfileobj(plain, result, CHUNK)
        size = result.tell()
    result.seek(0)
    return DecryptedFile(result, size, opened[0], opened[1])


def _open_smime(
    source: BinaryIO, files: ServerKeyFiles, plain: BinaryIO
) -> tuple[KeyFormat, str] | None:
    keys = [
        load_decryption_key(k.public, files.private(k), k.fingerprint)
        for k in files.decryption_keys(KeyFormat.SMIME)
    ]
    with tempfile.TemporaryFile() as der, tempfile.TemporaryFile() as spool:
        if not _base64_to(source, der):
            return None
        der.seek(0)
        key = decrypt_cms_file(der, keys, plain, spool)
    return None if key is None else (KeyFormat.SMIME, key.fingerprint)


def _base64_to(source: BinaryIO, out: BinaryIO) -> bool:
    """Decode the base64 body of ``source`` into ``out`` chunk by chunk; False if not base64."""
    carry = b""
    while block := source.read(CHUNK):
        text = carry + block.translate(None, b" \t\r\n")
        whole = len(text) // 4 * 4
        carry = text[whole:]
        try:
            out.write(base64.b64decode(text[:whole], validate=True))
        except (binascii.Error, ValueError):
            return False
    return not carry and out.tell() > 0


def _open_openpgp(
    source: BinaryIO, files: ServerKeyFiles, plain: BinaryIO
) -> tuple[KeyFormat, str] | None:
    pgp_keys = [k for k in files.decryption_keys(KeyFormat.OPENPGP) if k.subkeys]
    secrets = {k.subkeys[0]: files.private(k) for k in pgp_keys}
    with tempfile.TemporaryFile() as armored:
        if not extract_armored(source, armored):
            return None
        subkey = decrypt_openpgp(armored, secrets, plain, files.gpg_binary)
    if subkey is None:
        return None
    return KeyFormat.OPENPGP, next(k.fingerprint for k in pgp_keys if k.subkeys[0] == subkey)
