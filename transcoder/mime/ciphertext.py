"""Which stored messages are already ciphertext, so that FETCH may serve them as they are.

A message that arrived encrypted to the user is its own transcoded view: it
is never encrypted twice.  Labels prove nothing -- anyone can write
``multipart/encrypted`` above a plaintext -- so :func:`is_ciphertext`
passes a message through only when **all of its body is ciphertext the
user's client will decrypt**, checked octet by octet:

* **S/MIME**: a whole-message ``application/pkcs7-mime`` (or
  ``x-pkcs7-mime``), base64 or binary, whose body is exactly one CMS
  EnvelopedData or AuthEnvelopedData (:mod:`.cms_message`); an
  ``smime-type`` parameter, when present, must name that same type.
  Signed data, certificates and anything that only has a ``.p7m`` name are
  not ciphertext.
* **PGP/MIME** (RFC 3156 section 4): ``multipart/encrypted;
  protocol="application/pgp-encrypted"`` with exactly two parts, the
  ``application/pgp-encrypted`` control part holding ``Version: 1`` and an
  ``application/octet-stream`` part that is exactly one armored encrypted
  OpenPGP message (:mod:`.pgp_message`); preamble and epilogue white space
  only (but for the one-line notice PGP/MIME writers put in the preamble,
  :data:`PGP_MIME_PREAMBLES`); the parts' header fields only ``Content-*``.
* **Inline PGP**: a ``text/plain`` body (7bit/8bit/binary or base64) that is
  exactly one armored encrypted OpenPGP message, white space around it.

Everything else is not ciphertext and gets the view: text after or around
the armored block, a third part, plaintext under an S/MIME label.  A
message (or part) with two Content-Type or Content-Transfer-Encoding fields
is refused too: clients may read the other one.  The top-level header
fields are outside the check -- the view keeps them outside as well.

Bodies are read in :data:`CHUNK`-sized pieces and checked as they stream;
nothing grows with the message.  The same answer is given for a FETCH of
the size alone and for a FETCH of the content, so RFC822.SIZE is the size
of what is served.  No twisted import here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO, Protocol

from transcoder.mime.base64stream import WHITESPACE, Base64Decoder
from transcoder.mime.cms_message import AUTH_ENVELOPED_DATA, ENVELOPED_DATA, EnvelopeCheck
from transcoder.mime.entity import Entity, parse_message
from transcoder.mime.pgp_message import ArmoredMessageCheck

#: Octets read at a time.
CHUNK = 1 << 16
#: Longest control part, preamble, epilogue or delimiter line looked at.
MAX_FRAMING = 1 << 16
_IDENTITY = frozenset({"", "7bit", "8bit", "binary"})
_SMIME_TYPES = {"enveloped-data": ENVELOPED_DATA, "authenveloped-data": AUTH_ENVELOPED_DATA}
_PGP_PROTOCOL = "application/pgp-encrypted"
#: The one line of preamble PGP/MIME writers put there (Thunderbird, Enigmail, our own
#: views): text no client shows, allowed as the only thing in the preamble besides white space.
PGP_MIME_PREAMBLES = (
    b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)",
    b"This is an OpenPGP/MIME encrypted message (RFC 2440 and 3156)",
)
_PREAMBLE = (
    rb"[ \t\r\n]*(?:(?:"
    + b"|".join(re.escape(p) for p in PGP_MIME_PREAMBLES)
    + rb")[ \t]*\r?\n[ \t\r\n]*)?"
)


class _NotCiphertext(Exception):
    """Some of the body is not ciphertext (or cannot be shown to be)."""


class _Check(Protocol):
    ok: bool

    def feed(self, data: bytes) -> None: ...


def is_ciphertext(entity: Entity, fp: BinaryIO) -> bool:
    """Whether the message ``entity`` (parsed from ``fp``) is all ciphertext (module doc).

    ``entity`` may be shallow (:func:`~transcoder.mime.protect.parse_top_level`):
    a multipart/encrypted is split here.  The position of ``fp`` is restored.
    """
    position = fp.tell()
    try:
        ct = entity.content_type
        if (ct.maintype, ct.subtype) == ("multipart", "encrypted"):
            return _pgp_mime(entity, fp)
        if ct.maintype == "application" and ct.subtype in ("pkcs7-mime", "x-pkcs7-mime"):
            return _smime(entity, fp)
        if (ct.maintype, ct.subtype) == ("text", "plain"):
            return _inline_pgp(entity, fp)
        return False
    except _NotCiphertext:
        return False
    finally:
        fp.seek(position)


def _encoding(entity: Entity) -> str:
    """The entity's transfer encoding, lowercased; refused when the field is repeated."""
    for name in ("content-type", "content-transfer-encoding"):
        if len(entity.get_all(name)) > 1:
            raise _NotCiphertext(f"two {name} fields")
    return (entity.get("content-transfer-encoding") or "").strip().lower()


def _raw_chunks(entity: Entity, fp: BinaryIO) -> Iterator[bytes]:
    """The body octets as stored, in pieces of at most CHUNK octets."""
    fp.seek(entity.body_start)
    left = entity.body_size
    while left > 0:
        chunk = fp.read(min(CHUNK, left))
        if not chunk:
            raise _NotCiphertext("body shorter than parsed")
        left -= len(chunk)
        yield chunk


def _decoded_chunks(entity: Entity, fp: BinaryIO, base64_allowed: bool) -> Iterator[bytes]:
    """The body transfer-decoded (identity or, if allowed, strict base64), in pieces."""
    encoding = _encoding(entity)
    if encoding in _IDENTITY:
        yield from _raw_chunks(entity, fp)
        return
    if encoding != "base64" or not base64_allowed:
        raise _NotCiphertext(f"transfer encoding {encoding}")
    decoder = Base64Decoder()
    for chunk in _raw_chunks(entity, fp):
        decoded = decoder.feed(chunk)
        if not decoder.ok:
            raise _NotCiphertext("invalid base64")
        yield decoded
    if not decoder.finish():
        raise _NotCiphertext("truncated base64")


def _run(check: _Check, chunks: Iterator[bytes]) -> None:
    """Feed every piece to ``check``, stopping at the first that fails it."""
    for chunk in chunks:
        check.feed(chunk)
        if not check.ok:
            raise _NotCiphertext("check failed")


def _smime(entity: Entity, fp: BinaryIO) -> bool:
    """An application/pkcs7-mime body that is one EnvelopedData or AuthEnvelopedData."""
    label = entity.content_type.param("smime-type")
    wanted = None if label is None else _SMIME_TYPES.get(label.lower())
    if label is not None and wanted is None:
        return False  # signed-data, certs-only, compressed-data: not ciphertext
    check = EnvelopeCheck(trailing_whitespace=_encoding(entity) in _IDENTITY)
    _run(check, _decoded_chunks(entity, fp, base64_allowed=True))
    found = check.finish()
    return found is not None and wanted in (None, found)


def _armored(entity: Entity, fp: BinaryIO, base64_allowed: bool) -> bool:
    """Whether the body is exactly one armored encrypted OpenPGP message."""
    check = ArmoredMessageCheck()
    _run(check, _decoded_chunks(entity, fp, base64_allowed))
    return check.finish()


#: What an armored message's text starts with (after white space).
_ARMOR_START = b"-----BEGIN PGP MESSAGE-----"


def _inline_pgp(entity: Entity, fp: BinaryIO) -> bool:
    """A text/plain body that is one armored encrypted message and white space.

    Most text is refused by its first octets: an identity-encoded body that
    does not begin (after white space) with the BEGIN line is not one, and
    its remaining octets need not be read (a cheap answer for every plain
    message served encrypted).
    """
    if _encoding(entity) in _IDENTITY:
        fp.seek(entity.body_start)
        head = fp.read(min(entity.body_size, 256)).lstrip(WHITESPACE)
        if head and not head.startswith(_ARMOR_START[: len(head)]):
            return False
    return _armored(entity, fp, base64_allowed=True)


def _read(fp: BinaryIO, start: int, end: int) -> bytes:
    """``fp[start:end]``, refused when longer than MAX_FRAMING."""
    if end - start > MAX_FRAMING:
        raise _NotCiphertext("framing too long")
    fp.seek(start)
    return fp.read(end - start)


def _structural_fields_only(part: Entity) -> None:
    """A part's header may hold Content-* fields only (others would cross in clear)."""
    for field in part.header:
        if not field.name.lower().startswith("content-"):
            raise _NotCiphertext(f"field {field.name!r} in a part")


def _framing(message: Entity, fp: BinaryIO, boundary: bytes) -> None:
    """The octets around the two parts are delimiter lines and white space only."""
    control, data = message.children
    delimiter = b"--" + re.escape(boundary)
    gaps = [
        (message.body_start, control.header_start, _PREAMBLE + delimiter + rb"[ \t]*\r?\n"),
        (control.end, data.header_start, rb"\r?\n" + delimiter + rb"[ \t]*\r?\n"),
        (data.end, message.end, rb"\r?\n" + delimiter + rb"--[ \t\r\n]*"),
    ]
    for start, end, pattern in gaps:
        if not re.fullmatch(pattern, _read(fp, start, end)):
            raise _NotCiphertext("text around the parts")


def _pgp_mime(entity: Entity, fp: BinaryIO) -> bool:
    """RFC 3156 section 4: the control part and one armored encrypted message, nothing else."""
    protocol = entity.content_type.param("protocol")
    boundary = entity.content_type.param("boundary")
    if (protocol or "").lower() != _PGP_PROTOCOL or not boundary:
        return False
    _encoding(entity)
    message = parse_message(fp, entity.header_start, entity.end)
    if len(message.children) != 2:
        return False
    control, data = message.children
    for part, media in ((control, _PGP_PROTOCOL), (data, "application/octet-stream")):
        _structural_fields_only(part)
        ct = part.content_type
        if f"{ct.maintype}/{ct.subtype}" != media or _encoding(part) not in _IDENTITY:
            return False
    try:
        _framing(message, fp, boundary.encode("latin-1"))
    except UnicodeEncodeError:
        return False
    if _read(fp, control.body_start, control.end).strip(WHITESPACE) != b"Version: 1":
        return False
    return _armored(data, fp, base64_allowed=False)


__all__ = ["CHUNK", "PGP_MIME_PREAMBLES", "is_ciphertext"]
