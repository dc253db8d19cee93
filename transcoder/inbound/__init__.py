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

from dataclasses import dataclass
from typing import BinaryIO

from transcoder.inbound.cms_decrypt import NotDecryptable, decrypt_cms, load_decryption_key
from transcoder.inbound.message import classify, split_header, stored_message
from transcoder.inbound.pgp_decrypt import decrypt_openpgp
from transcoder.keys.model import KeyFormat
from transcoder.keys.server_keys_files import ServerKeyFiles

__all__ = ["Decrypted", "NotDecryptable", "decrypt_append", "decrypt_append_file"]


@dataclass(frozen=True)
class Decrypted:
    """A decrypted APPEND: the message to store, and which server key opened it."""

    message: bytes
    format: KeyFormat
    fingerprint: str


def decrypt_append(message: bytes, files: ServerKeyFiles) -> Decrypted | None:
    """``message`` decrypted with the server's keys, or ``None`` to store it as sent."""
    found = classify(message)
    if found is None:
        return None
    if found.kind == "smime":
        keys = [
            load_decryption_key(k.public, files.private(k), k.fingerprint)
            for k in files.decryption_keys(KeyFormat.SMIME)
        ]
        opened = decrypt_cms(found.payload, keys)
        if opened is None:
            return None
        inner, key = opened
        return Decrypted(stored_message(message, inner), KeyFormat.SMIME, key.fingerprint)
    pgp_keys = [k for k in files.decryption_keys(KeyFormat.OPENPGP) if k.subkeys]
    secrets = {k.subkeys[0]: files.private(k) for k in pgp_keys}
    pgp_opened = decrypt_openpgp(found.payload, secrets, files.gpg_binary)
    if pgp_opened is None:
        return None
    plain, subkey = pgp_opened
    fingerprint = next(k.fingerprint for k in pgp_keys if k.subkeys[0] == subkey)
    return Decrypted(stored_message(message, plain), KeyFormat.OPENPGP, fingerprint)


#: How much of an APPEND is read to see whether it is encrypted at all.
HEADER_PEEK = 64 * 1024
_HINTS = (b"pkcs7-mime", b"multipart/encrypted")


def decrypt_append_file(source: BinaryIO, files: ServerKeyFiles) -> Decrypted | None:
    """:func:`decrypt_append` on an APPEND's literal file.  A message whose header names
    no encrypted type is not read beyond its first ``HEADER_PEEK`` octets; ``source`` is
    left at its start whenever the answer is ``None`` (it is then stored as sent)."""
    source.seek(0)
    head = source.read(HEADER_PEEK)
    source.seek(0)
    header = split_header(head)[0].lower()
    if not any(hint in header for hint in _HINTS):
        return None
    found = decrypt_append(source.read(), files)
    source.seek(0)
    return found
