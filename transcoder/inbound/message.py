"""Sans-IO: which APPENDed messages are encrypted, and the message stored once decrypted.

* ``classify`` reads the top-level header block: an S/MIME enveloped message
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

import re
from email.parser import BytesHeaderParser
from email.policy import compat32

_FIELD = re.compile(rb"^[!-9;-~]+:")
_CMS_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")


def split_header(message: bytes) -> tuple[bytes, bytes]:
    """(header block with its final line end, body) of a message."""
    found = [(at, sep) for sep in (b"\r\n\r\n", b"\n\n") if (at := message.find(sep)) >= 0]
    if not found:
        return message, b""
    at, sep = min(found)
    return message[: at + len(sep) // 2], message[at + len(sep) :]


def classify(header: bytes) -> str | None:
    """``"smime"``, ``"openpgp"`` or ``None`` (not encrypted) from a message's header block."""
    head = BytesHeaderParser(policy=compat32).parsebytes(header)
    ctype = head.get_content_type()
    if ctype in _CMS_TYPES:
        smime_type = str(head.get_param("smime-type") or "enveloped-data").lower()
        return "smime" if smime_type in ("enveloped-data", "authenveloped-data") else None
    if ctype == "multipart/encrypted":
        protocol = str(head.get_param("protocol") or "").lower()
        return "openpgp" if protocol == "application/pgp-encrypted" else None
    return None


def stored_prefix(outer_header: bytes, inner_start: bytes) -> bytes:
    """What goes in front of the decrypted inner entity (whose first octets are
    ``inner_start``) in the stored message; see the module doc."""
    inner_head = split_header(inner_start)[0]
    if not _FIELD.match(inner_head):
        return _outer_fields(outer_header) + b"Content-Type: text/plain\r\n\r\n"
    if BytesHeaderParser(policy=compat32).parsebytes(inner_head).get_param("hp") is not None:
        return b""
    return _outer_fields(outer_header)


def stored_message(outer: bytes, inner: bytes) -> bytes:
    """The message to store for ``outer`` whose encrypted content decrypted to ``inner``."""
    return stored_prefix(split_header(outer)[0], inner) + inner


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
