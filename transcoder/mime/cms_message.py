"""Is this exactly one CMS EnvelopedData or AuthEnvelopedData?  Streaming and sans-IO.

:class:`EnvelopeCheck` is fed the decoded octets of an
``application/pkcs7-mime`` body in pieces and answers at the end which
enveloping it is, or ``None``.  Memory stays bounded: a BER walker
(:class:`BerOutline`) checks every tag-length-value of the whole encoding
(X.690 section 8.1: definite and indefinite lengths, each value inside its
parent, the first value ending exactly at the end of the data) but keeps
only an outline of the first levels, and skips contents it does not need --
the encrypted content above all.  What the outline must be:

* ``ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content }`` with
  contentType id-envelopedData (RFC 5652 section 6.1) or
  id-ct-authEnvelopedData (RFC 5083 section 2.1);
* the content a SEQUENCE of exactly ``version``, ``recipientInfos`` (a
  non-empty SET of recipient infos: SEQUENCE or ``[1]``..``[4]``) and the
  (auth)encryptedContentInfo (contentType, algorithm and a present
  ``[0]`` encryptedContent), plus the ``mac`` OCTET STRING for
  AuthEnvelopedData; versions as the RFCs allow.
* **No** originatorInfo, unprotectedAttrs, authAttrs or unauthAttrs: they
  are readable by anyone (certificates, attribute values), not ciphertext.

Bodies up to :data:`FULL_PARSE_LIMIT` are also parsed whole with
asn1crypto (``cms.ContentInfo``), which looks inside the recipient infos.

No twisted import here.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import cms, core

#: Decoded bodies up to this size are parsed whole by asn1crypto as well.
FULL_PARSE_LIMIT = 1 << 20
#: Deepest nesting walked, and the depth down to which the outline is kept.
MAX_DEPTH = 32
OUTLINE_DEPTH = 4
#: Most values kept in the outline; primitive contents kept up to this size.
MAX_OUTLINE = 4096
MAX_KEPT_CONTENT = 64

ENVELOPED_DATA = "enveloped-data"
AUTH_ENVELOPED_DATA = "authEnveloped-data"
_CONTENT_TYPES = {
    core.ObjectIdentifier("1.2.840.113549.1.7.3").contents: ENVELOPED_DATA,
    core.ObjectIdentifier("1.2.840.113549.1.9.16.1.23").contents: AUTH_ENVELOPED_DATA,
}
#: (class, number) of the universal types and context tags the outline is checked for.
_SEQUENCE, _SET, _INTEGER, _OID, _OCTET_STRING = (0, 16), (0, 17), (0, 2), (0, 6), (0, 4)
_RECIPIENT_INFO_TAGS = {_SEQUENCE, (2, 1), (2, 2), (2, 3), (2, 4)}
_VERSIONS = {ENVELOPED_DATA: {0, 2, 3, 4}, AUTH_ENVELOPED_DATA: {0}}


class _Malformed(Exception):
    """Not a BER encoding, or not the structure accepted here."""


@dataclass(frozen=True)
class Value:
    """One value of the outline: its parent's index (-1 for the first), tag and content."""

    parent: int
    tag: tuple[int, int]  # (class, number), X.690 section 8.1.2
    constructed: bool
    content: bytes | None  # primitive contents up to MAX_KEPT_CONTENT octets, else None


@dataclass
class _Frame:
    index: int  # in the outline, -1 when not kept
    end: int | None  # offset just past the contents; None: indefinite length
    limit: int | None  # the nearest definite end among this frame and its parents


def _identifier(head: bytearray) -> tuple[tuple[int, int], bool, int] | None:
    """(class, number), constructed, octets used; None: need more."""
    first = head[0]
    number = first & 0x1F
    used = 1
    if number == 0x1F:  # high tag number form (X.690 section 8.1.2.4)
        number = 0
        while True:
            if used >= len(head):
                return None
            octet = head[used]
            used += 1
            number = (number << 7) | (octet & 0x7F)
            if not octet & 0x80:
                break
            if used > 4:
                raise _Malformed("tag number too long")
    return (first >> 6, number), bool(first & 0x20), used


def _value_header(head: bytearray) -> tuple[tuple[int, int], bool, int | None, int] | None:
    """(tag, constructed, length or None if indefinite, header octets); None: need more."""
    identifier = _identifier(head)
    if identifier is None or identifier[2] >= len(head):
        return None
    tag, constructed, at = identifier
    first = head[at]
    if first < 0x80:
        return tag, constructed, first, at + 1
    if first == 0x80:
        if not constructed:
            raise _Malformed("indefinite length on a primitive value")
        return tag, constructed, None, at + 1
    count = first & 0x7F
    if count > 8 or first == 0xFF:
        raise _Malformed("length too long")
    if at + 1 + count > len(head):
        return None
    return tag, constructed, int.from_bytes(head[at + 1 : at + 1 + count], "big"), at + 1 + count


class BerOutline:
    """Walks one BER value fed in pieces; keeps the outline of its first levels."""

    def __init__(self) -> None:
        self.ok = True
        #: The first value ended; anything after it is not part of it.
        self.complete = False
        self.outline: list[Value] = []
        self.offset = 0  # octets consumed
        self._stack: list[_Frame] = []
        self._head = bytearray()
        self._skip = 0
        self._kept: bytearray | None = None  # primitive contents being kept
        self._kept_parent = -1

    def feed(self, data: bytes) -> int:
        """Walk ``data``; the number of octets that belonged to the value (the rest trails)."""
        if not self.ok or self.complete:
            return 0
        try:
            return self._walk(data)
        except _Malformed:
            self.ok = False
            return len(data)

    def _walk(self, data: bytes) -> int:
        pos = 0
        while pos < len(data) and not self.complete:
            if self._skip:
                taken = min(self._skip, len(data) - pos)
                if self._kept is not None:
                    self._kept += data[pos : pos + taken]
                self._skip -= taken
                pos += taken
                self.offset += taken
                if not self._skip:
                    self._primitive_ended()
                continue
            self._head.append(data[pos])
            pos += 1
            self.offset += 1
            self._value()
        return pos

    def _value(self) -> None:
        decoded = _value_header(self._head)
        if decoded is None:
            if len(self._head) > 16:
                raise _Malformed("header too long")
            return
        self._head.clear()
        tag, constructed, length, _ = decoded
        parent = self._stack[-1] if self._stack else None
        limit = parent.limit if parent is not None else None
        if limit is not None and self.offset > limit:
            raise _Malformed("header runs past its parent")
        if tag == (0, 0) and not constructed and length == 0:  # end-of-contents
            if parent is None or parent.end is not None:
                raise _Malformed("end-of-contents outside an indefinite length")
            self._stack.pop()
            self._ended()
            return
        end = None if length is None else self.offset + length
        if end is not None and limit is not None and end > limit:
            raise _Malformed("value longer than its parent")
        if len(self._stack) >= MAX_DEPTH:
            raise _Malformed("nested too deeply")
        index = self._keep(tag, constructed, parent, length)
        if constructed:
            self._stack.append(_Frame(index, end, limit if end is None else end))
            if length == 0:
                self._ended()
        else:
            self._skip = length or 0
            if not self._skip:
                self._primitive_ended()

    def _keep(
        self, tag: tuple[int, int], constructed: bool, parent: _Frame | None, length: int | None
    ) -> int:
        """Add the value to the outline when shallow enough; its index, or -1."""
        if len(self._stack) > OUTLINE_DEPTH or (parent is not None and parent.index < 0):
            return -1
        if len(self.outline) >= MAX_OUTLINE:
            raise _Malformed("too many values")
        keep = not constructed and length is not None and length <= MAX_KEPT_CONTENT
        self._kept = bytearray() if keep else None
        self._kept_parent = parent.index if parent is not None else -1
        self.outline.append(Value(self._kept_parent, tag, constructed, None))
        return len(self.outline) - 1

    def _primitive_ended(self) -> None:
        if self._kept is not None:
            last = self.outline[-1]
            self.outline[-1] = Value(last.parent, last.tag, False, bytes(self._kept))
            self._kept = None
        self._ended()

    def _ended(self) -> None:
        """A value ended: close every definite-length parent that ends here too."""
        while self._stack and self._stack[-1].end == self.offset:
            self._stack.pop()
        self.complete = not self._stack

    def finish(self) -> bool:
        """Whether exactly one whole value was fed (trailing octets are the caller's)."""
        self.ok = self.ok and self.complete and not self._head
        return self.ok


def _children(outline: list[Value], parent: int) -> list[tuple[int, Value]]:
    return [(i, v) for i, v in enumerate(outline) if v.parent == parent]


def _integer(value: Value) -> int:
    if value.tag != _INTEGER or value.constructed or not value.content:
        raise _Malformed("not an INTEGER")
    return int.from_bytes(value.content, "big", signed=True)


def _tags(values: list[tuple[int, Value]]) -> list[tuple[int, int]]:
    return [v.tag for _, v in values]


def enveloping(outline: list[Value]) -> str:
    """The enveloping type the outline has (module doc); _Malformed otherwise."""
    if not outline or outline[0].tag != _SEQUENCE or not outline[0].constructed:
        raise _Malformed("not a ContentInfo")
    info = _children(outline, 0)
    if _tags(info) != [_OID, (2, 0)] or not info[1][1].constructed:
        raise _Malformed("not a ContentInfo")
    kind = _CONTENT_TYPES.get(info[0][1].content or b"")
    if kind is None:
        raise _Malformed("not an enveloping content type")
    content = _children(outline, info[1][0])
    if _tags(content) != [_SEQUENCE] or not content[0][1].constructed:
        raise _Malformed("content is not one SEQUENCE")
    fields = _children(outline, content[0][0])
    expected = [_INTEGER, _SET, _SEQUENCE]
    if kind == AUTH_ENVELOPED_DATA:
        expected.append(_OCTET_STRING)  # mac (RFC 5083 section 2.1)
    if _tags(fields) != expected or _integer(fields[0][1]) not in _VERSIONS[kind]:
        raise _Malformed("unexpected fields in the enveloped data")
    recipients = _children(outline, fields[1][0])
    if not recipients or not set(_tags(recipients)) <= _RECIPIENT_INFO_TAGS:
        raise _Malformed("no recipient infos")
    encrypted = _children(outline, fields[2][0])
    if _tags(encrypted) != [_OID, _SEQUENCE, (2, 0)]:
        raise _Malformed("no encrypted content")
    return kind


class EnvelopeCheck:
    """Checks that octets fed in pieces are one CMS enveloping (module doc)."""

    def __init__(self, trailing_whitespace: bool = False) -> None:
        #: Whether white space may follow the encoding (a body in the binary transfer encoding).
        self.trailing_whitespace = trailing_whitespace
        self.ok = True
        self._walker = BerOutline()
        self._copy: bytearray | None = bytearray()

    def feed(self, data: bytes) -> None:
        """Check ``data``, the octets after those already fed."""
        if not self.ok:
            return
        used = self._walker.feed(data)
        if self._copy is not None:
            self._copy += data[:used]
            if len(self._copy) > FULL_PARSE_LIMIT:
                self._copy = None
        trailing = data[used:]
        if trailing and not (self.trailing_whitespace and not trailing.strip(b" \t\r\n")):
            self.ok = False
        self.ok = self.ok and self._walker.ok

    def finish(self) -> str | None:
        """:data:`ENVELOPED_DATA` or :data:`AUTH_ENVELOPED_DATA`; ``None`` if it is not one."""
        if not (self.ok and self._walker.finish()):
            return None
        try:
            kind = enveloping(self._walker.outline)
        except _Malformed:
            return None
        if self._copy is not None and not _parses(bytes(self._copy)):
            return None
        return kind


def _parses(der: bytes) -> bool:
    """Whether asn1crypto parses ``der`` whole as an enveloping ContentInfo."""
    try:
        info = cms.ContentInfo.load(der, strict=True)
        native = info.native
    except Exception:  # a third-party parser of hostile input: any failure is "no"
        return False
    return native["content_type"] in ("enveloped_data", "authenticated_enveloped_data")


__all__ = [
    "AUTH_ENVELOPED_DATA",
    "ENVELOPED_DATA",
    "FULL_PARSE_LIMIT",
    "BerOutline",
    "EnvelopeCheck",
    "Value",
    "enveloping",
]
