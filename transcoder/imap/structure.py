"""IMAP encodings of a message's structure: BODY, BODYSTRUCTURE and ENVELOPE.

RFC 3501 section 7.4.2 and the ``body``/``envelope`` rules of section 9.
Pure: no twisted import; every function returns octets ready for the wire.

Conventions (each is free in the grammar; all these tokens are case-insensitive):

* Media type, subtype and the known transfer encodings are upper-cased, as
  in RFC 3501's examples (``("TEXT" "PLAIN" ...``).  Parameter names and the
  disposition type are sent lowercased, as the MIME layer normalises them
  (``("charset" "us-ascii")``, ``("attachment" ("filename" "a.pdf"))``, the
  form Dovecot sends).  Parameter *values* are sent as written: a boundary
  keeps its case.
* Strings go out as quoted strings when they are 7-bit without CR/LF, else as
  literals (``{n}\\r\\n...``); NUL octets, which neither may carry, are dropped.
  Header values are sent raw (RFC 2047 encoded-words are not decoded).
* Sizes are the body's own octets (``Entity.body_size``), line counts
  ``Entity.body_lines``.
* A multipart with no parts is described with one empty ``TEXT/PLAIN`` part
  (the grammar needs at least one); a ``MESSAGE/RFC822`` whose body was not
  parsed (non-identity transfer encoding) gets an empty envelope and body.
  ``MESSAGE/GLOBAL`` is described as a basic type: RFC 3501's ``body-type-msg``
  is for ``MESSAGE/RFC822`` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from transcoder.mime.entity import ContentType, Entity
from transcoder.mime.headers import Address, parse_address_list, parse_disposition

NIL = b"NIL"
_ENCODINGS = frozenset({"7bit", "8bit", "binary", "base64", "quoted-printable"})
#: Octets a quoted string may carry besides the escaped ones (RFC 3501 section 9 ``QUOTED-CHAR``).
_UNSAFE_IN_QUOTED = frozenset(range(0x80, 0x100)) | {0x0A, 0x0D}


def _octets(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("latin-1")  # header text is latin-1 decoded: this restores it
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace")


def string(value: str | bytes) -> bytes:
    """An IMAP ``string``: quoted when 7-bit and single-line, else a literal."""
    data = _octets(value).replace(b"\x00", b"")
    if any(b in _UNSAFE_IN_QUOTED for b in data):
        return b"{%d}\r\n" % len(data) + data
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def nstring(value: str | bytes | None) -> bytes:
    """An IMAP ``nstring``: ``NIL`` for ``None``, else :func:`string`."""
    return NIL if value is None else string(value)


def _params(pairs: Sequence[tuple[str, str]]) -> bytes:
    """``body-fld-param``: ``("name" "value" ...)`` or ``NIL``."""
    if not pairs:
        return NIL
    return b"(" + b" ".join(string(k) + b" " + string(v) for k, v in pairs) + b")"


def _disposition(entity: Entity) -> bytes:
    """``body-fld-dsp`` from Content-Disposition (RFC 2183)."""
    value = entity.get("content-disposition")
    parsed = None if value is None else parse_disposition(value)
    if parsed is None:
        return NIL
    kind, _, wire = parsed
    return b"(" + string(kind) + b" " + _params(wire) + b")"


def _language(entity: Entity) -> bytes:
    """``body-fld-lang`` from Content-Language (RFC 3282): a string, a list or ``NIL``."""
    value = entity.get("content-language")
    tags = [t.strip() for t in (value or "").split(",") if t.strip()]
    if not tags:
        return NIL
    if len(tags) == 1:
        return string(tags[0])
    return b"(" + b" ".join(string(t) for t in tags) + b")"


def _encoding(entity: Entity) -> bytes:
    """``body-fld-enc``: the transfer encoding, ``7BIT`` when absent (RFC 2045 section 6.1)."""
    value = (entity.get("content-transfer-encoding") or "").strip()
    if not value:
        return b'"7BIT"'
    return string(value.upper() if value.lower() in _ENCODINGS else value)


def _extension(entity: Entity, first: bytes) -> bytes:
    """``body-ext-1part``/``body-ext-mpart``: ``first``, disposition, language, location."""
    location = nstring(entity.get("content-location"))
    return b" ".join((first, _disposition(entity), _language(entity), location))


def _empty(at: int, content_type: ContentType = ContentType()) -> Entity:  # noqa: B008
    """An empty entity at offset ``at``: what a missing part or message is described as."""
    return Entity(at, at, at, (), content_type)


def _multipart(entity: Entity, extended: bool) -> bytes:
    """``body-type-mpart``: the parts, the subtype, then the extension data."""
    ct = entity.content_type
    parts = entity.children or (_empty(entity.body_start),)
    out = b"".join(_body(p, extended) for p in parts) + b" " + string(ct.subtype.upper())
    if extended:
        out += b" " + _extension(entity, _params(ct.imap_params))
    return out


def _single(entity: Entity, extended: bool) -> bytes:
    """``body-type-1part``: basic, text (with lines) or message (with envelope, body, lines)."""
    ct = entity.content_type
    fields = (
        string(ct.maintype.upper()),
        string(ct.subtype.upper()),
        _params(ct.imap_params),
        nstring(entity.get("content-id")),
        nstring(entity.get("content-description")),
        _encoding(entity),
        b"%d" % entity.body_size,
    )
    out = b" ".join(fields)
    if ct.maintype == "text":
        out += b" %d" % entity.body_lines
    elif (ct.maintype, ct.subtype) == ("message", "rfc822"):
        inner = entity.children[0] if entity.children else _empty(entity.end)
        out += b" " + envelope(inner) + b" " + _body(inner, extended)
        out += b" %d" % entity.body_lines
    if extended:
        out += b" " + _extension(entity, nstring(entity.get("content-md5")))
    return out


def _body(entity: Entity, extended: bool) -> bytes:
    if entity.content_type.maintype == "multipart":
        return b"(" + _multipart(entity, extended) + b")"
    return b"(" + _single(entity, extended) + b")"


def body_structure(entity: Entity, extended: bool) -> bytes:
    """``BODYSTRUCTURE`` (``extended=True``) or ``BODY`` (``False``) of a message.

    RFC 3501 section 7.4.2: the ``body`` production, with extension data
    (MD5, disposition, language, location; parameters for multiparts) when
    ``extended``.
    """
    return _body(entity, extended)


def _address(a: Address) -> bytes:
    """``address``: ``(name adl mailbox host)``."""
    return b"(" + b" ".join(nstring(v) for v in (a.name, a.route, a.mailbox, a.host)) + b")"


def address_list(addresses: Iterable[Address]) -> bytes:
    """``env-from`` and friends: ``(address...)`` with no separator, or ``NIL`` when empty."""
    encoded = b"".join(_address(a) for a in addresses)
    return b"(" + encoded + b")" if encoded else NIL


def _addresses(entity: Entity, name: str) -> tuple[Address, ...]:
    value = entity.get(name)
    return () if value is None else parse_address_list(value)


def envelope(entity: Entity) -> bytes:
    """``ENVELOPE`` of a message (RFC 3501 section 7.4.2).

    Date, subject, in-reply-to and message-id are the raw unfolded values
    (``NIL`` when absent, ``""`` when empty).  Sender and reply-to are the
    from addresses when absent or empty.
    """
    sender_from = _addresses(entity, "from")
    members = (
        nstring(entity.get("date")),
        nstring(entity.get("subject")),
        address_list(sender_from),
        address_list(_addresses(entity, "sender") or sender_from),
        address_list(_addresses(entity, "reply-to") or sender_from),
        address_list(_addresses(entity, "to")),
        address_list(_addresses(entity, "cc")),
        address_list(_addresses(entity, "bcc")),
        nstring(entity.get("in-reply-to")),
        nstring(entity.get("message-id")),
    )
    return b"(" + b" ".join(members) + b")"


__all__ = ["NIL", "address_list", "body_structure", "envelope", "nstring", "string"]
