"""Sans-IO: which APPENDed messages are encrypted, and the message stored once decrypted.

* ``classify`` reads the top-level header: an S/MIME enveloped message
  (``application/pkcs7-mime``, or the ``x-`` form, with ``smime-type``
  ``enveloped-data`` / ``authEnveloped-data`` or none -- RFC 8551 section
  3.2.2) or a PGP/MIME encrypted one (``multipart/encrypted; protocol=
  "application/pgp-encrypted"``, RFC 3156 section 4).  Anything else is
  stored untouched, without looking further.
* ``stored_message`` puts the decrypted inner entity in place of the outer
  one.  When the inner Content-Type carries ``hp`` (RFC 9788 section 2.1:
  the inner header fields are the protected, authoritative ones), the inner
  entity *is* the message.  Otherwise the outer header fields other than
  ``Content-*`` are kept in front of the inner entity's own (which then
  carry its Content-Type).  An inner part without a header block is text:
  it gets ``Content-Type: text/plain`` (RFC 2045 section 5.2's default, made
  explicit).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32

_FIELD = re.compile(rb"^[!-9;-~]+:")
_CMS_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")


@dataclass(frozen=True)
class Encrypted:
    """An encrypted APPEND: ``kind`` ``smime`` (``payload``: the DER) or ``openpgp``
    (``payload``: the armored OpenPGP message)."""

    kind: str
    payload: bytes


def split_header(message: bytes) -> tuple[bytes, bytes]:
    """(header block with its final line end, body) of a message."""
    found = [(at, sep) for sep in (b"\r\n\r\n", b"\n\n") if (at := message.find(sep)) >= 0]
    if not found:
        return message, b""
    at, sep = min(found)
    return message[: at + len(sep) // 2], message[at + len(sep) :]


def classify(message: bytes) -> Encrypted | None:
    """The encrypted content of an APPENDed message, or ``None`` when it is not encrypted."""
    head = BytesHeaderParser(policy=compat32).parsebytes(split_header(message)[0])
    ctype = head.get_content_type()
    if ctype in _CMS_TYPES:
        smime_type = head.get_param("smime-type") or "enveloped-data"
        if str(smime_type).lower() not in ("enveloped-data", "authenveloped-data"):
            return None
        body = split_header(message)[1]
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            return None
        return Encrypted("smime", der) if der else None
    if ctype == "multipart/encrypted":
        if str(head.get_param("protocol") or "").lower() != "application/pgp-encrypted":
            return None
        parsed: Message = BytesParser(policy=compat32).parsebytes(message)
        parts = parsed.get_payload()
        if not isinstance(parts, list) or len(parts) != 2:
            return None
        second = parts[1]
        if not isinstance(second, Message):
            return None
        payload = second.get_payload(decode=True)
        if not isinstance(payload, bytes) or b"-----BEGIN PGP MESSAGE-----" not in payload:
            return None
        return Encrypted("openpgp", payload)
    return None


def stored_message(outer: bytes, inner: bytes) -> bytes:
    """The message to store for ``outer`` whose encrypted content decrypted to ``inner``."""
    inner_head = split_header(inner)[0]
    if not _FIELD.match(inner_head):
        return _outer_fields(outer) + b"Content-Type: text/plain\r\n\r\n" + inner
    parsed = BytesHeaderParser(policy=compat32).parsebytes(inner_head)
    if parsed.get_param("hp") is not None:
        return inner
    return _outer_fields(outer) + inner


def _outer_fields(outer: bytes) -> bytes:
    """The outer header's fields other than Content-* (folded lines kept with theirs)."""
    head = split_header(outer)[0]
    kept: list[bytes] = []
    keep = False
    for line in head.splitlines(keepends=True):
        if not line.strip():
            continue
        if line[:1] in (b" ", b"\t"):
            if keep:
                kept.append(line)
            continue
        keep = not line.lower().startswith(b"content-")
        if keep:
            kept.append(line if line.endswith(b"\n") else line + b"\r\n")
    return b"".join(kept)
