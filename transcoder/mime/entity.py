"""Sans-IO MIME entity splitting with byte offsets (RFC 5322, RFC 2045, RFC 2046).

A message is parsed once into a tree of :class:`Entity` values that record
where each header and body lies in the source bytes; bodies are never held in
memory, so a 100 MB message costs only its headers.  IMAP FETCH sections,
BODYSTRUCTURE and the transcoders all work from these offsets.

No twisted import here: pure functions over binary files.

Decisions the RFCs leave open, taken here:

* Line ends may be CRLF or bare LF; offsets are exact either way.  A bare CR
  is an ordinary octet.
* A header line that has no colon and is not a continuation (8-bit garbage, a
  stray word) becomes a :class:`HeaderField` of its own with ``name == ""``;
  header parsing carries on after it (Python's :mod:`email` would end the
  header there instead).  A continuation line before any field is kept the
  same way.
* A header block is capped at :data:`MAX_HEADER` octets; past the cap the rest
  is body.  Nesting deeper than :data:`MAX_DEPTH` and parts beyond
  :data:`MAX_PARTS` are not split further (their bytes stay in the enclosing
  body), so hostile input costs bounded work.
* ``message/rfc822`` and ``message/global`` are parsed as encapsulated
  messages only with an identity transfer encoding (RFC 2046 section 5.2.1:
  7bit, 8bit or binary); otherwise they are opaque leaves.
* ``body_lines`` counts LF octets, plus one when a non-empty body does not
  end with LF (its last line is still a line).
"""

from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from transcoder.mime.headers import Params, parse_media_type
from transcoder.mime.scanner import Reader, Stop

#: Longest header block kept; the rest of an over-long header is treated as body.
MAX_HEADER = 1 << 20
#: Deepest nesting of multiparts and encapsulated messages that is split.
MAX_DEPTH = 100
#: Most entities one message is split into.
MAX_PARTS = 10_000
_IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})


@dataclass(frozen=True)
class HeaderField:
    """One header field exactly as it appears in the source.

    ``name`` is the field name as written (decoded latin-1, so any octet
    survives; trailing blanks before the colon dropped, RFC 5322 section
    4.5.8); ``raw`` is the whole field -- name, colon, value, continuation
    lines and the terminating line break -- byte for byte.  A line with no
    colon has ``name == ""``.
    """

    name: str
    raw: bytes

    @property
    def value(self) -> str:
        """The unfolded value (RFC 5322 section 2.2.3), stripped, decoded latin-1."""
        first_line_end = self.raw.find(b"\n")
        colon = self.raw.find(b":", 0, first_line_end if first_line_end >= 0 else len(self.raw))
        value = self.raw[colon + 1 :] if colon >= 0 else self.raw
        # Every line break inside a field is followed by WSP; removing them all unfolds.
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
        return value.strip(b" \t\r").decode("latin-1")


@dataclass(frozen=True)
class ContentType:
    """A parsed Content-Type (RFC 2045 section 5.1).

    ``maintype``/``subtype`` are lowercased; parameter names are lowercased,
    parameter *values keep their case* (a boundary is case-sensitive).
    RFC 2231 continuations are joined and encoded values decoded in
    ``params``; ``wire_params`` (``None``: same as ``params``) keeps RFC 2231
    values encoded (``("name*", "utf-8''%E2%82%AC")``) for IMAP BODYSTRUCTURE.
    """

    maintype: str = "text"
    subtype: str = "plain"
    params: tuple[tuple[str, str], ...] = (("charset", "us-ascii"),)
    wire_params: tuple[tuple[str, str], ...] | None = None

    def param(self, name: str) -> str | None:
        """The value of parameter ``name`` (case-insensitive name), or ``None``."""
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return value
        return None

    @property
    def imap_params(self) -> tuple[tuple[str, str], ...]:
        """The parameters as IMAP reports them (``wire_params`` or ``params``)."""
        return self.params if self.wire_params is None else self.wire_params


#: RFC 2046 section 5.1.5: the default type of a part of a multipart/digest.
DIGEST_DEFAULT = ContentType("message", "rfc822", ())


def content_type(value: str | None, default: ContentType = ContentType()) -> ContentType:
    """Parse a Content-Type value; ``default`` when absent, text/plain when unparsable.

    RFC 2045 section 5.2: an invalid Content-Type means ``text/plain;
    charset=us-ascii``; RFC 2046 section 4.1.2: text/plain without charset is
    US-ASCII, so that parameter is added.  Parsed values are remembered
    (:data:`CONTENT_TYPE_MEMO` of them): a mailbox repeats a few values.
    """
    if value is None:
        return default
    if len(value) > _MEMO_VALUE:
        return _content_type(value)
    return _remembered_content_type(value)


#: Content-Type values remembered, and the longest remembered.
CONTENT_TYPE_MEMO = 1024
_MEMO_VALUE = 256


def _content_type(value: str) -> ContentType:
    """:func:`content_type` of a present value, parsed."""
    parsed = parse_media_type(value)
    if parsed is None:
        return ContentType()
    maintype, subtype, params, wire = parsed
    if (maintype, subtype) == ("text", "plain") and not any(k == "charset" for k, _ in params):
        params += (("charset", "us-ascii"),)
        wire += (("charset", "us-ascii"),)
    return ContentType(maintype, subtype, params, None if wire == params else wire)


_remembered_content_type = functools.lru_cache(maxsize=CONTENT_TYPE_MEMO)(_content_type)


@dataclass(frozen=True)
class Entity:
    """A MIME entity and where its parts lie in the source bytes.

    Offsets are absolute positions in the file given to :func:`parse_message`:
    the header runs ``header_start``..``body_start`` (including the blank
    line that ends it), the body ``body_start``..``end``.
    ``children`` are the parts of a multipart, or the one encapsulated message
    of a ``message/rfc822`` (or ``message/global``) entity, else empty.
    """

    header_start: int
    body_start: int
    end: int
    header: tuple[HeaderField, ...]
    content_type: ContentType
    children: tuple[Entity, ...] = ()
    body_lines: int = 0
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def header_size(self) -> int:
        """Octets of the header, blank line included."""
        return self.body_start - self.header_start

    @property
    def body_size(self) -> int:
        """Octets of the body."""
        return self.end - self.body_start

    def get(self, name: str) -> str | None:
        """Unfolded value of the first field called ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        for f in self.header:
            if f.name.lower() == name:
                return f.value
        return None

    def get_all(self, name: str) -> list[str]:
        """Unfolded values of every field called ``name``, in order."""
        name = name.lower()
        return [f.value for f in self.header if f.name.lower() == name]


def _read_header(r: Reader, bounds: tuple[bytes, ...]) -> tuple[list[HeaderField], Stop | None]:
    """The header fields at ``pos``; a stop when a delimiter or the data ends the header first."""
    names: list[bytes] = []
    lines: list[list[bytes]] = []
    budget = MAX_HEADER
    stop = None
    while budget > 0:
        if r.pos >= r.limit:
            stop = r.eof()
            break
        if bounds:
            r.fill(r.pos + 2)
            if r.buf.startswith(b"--", r.pos - r.base):
                stop = r.delimiter_at(r.pos, bounds)
                if stop is not None:
                    break
        line = r.readline(budget)
        budget -= len(line)
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and lines:
            lines[-1].append(line)  # continuation (RFC 5322 section 2.2.3)
            continue
        colon = line.find(b":")
        names.append(line[:colon].rstrip(b" \t") if colon >= 0 else b"")
        lines.append([line])
    fields = [
        HeaderField(n.decode("latin-1"), b"".join(ls)) for n, ls in zip(names, lines, strict=True)
    ]
    return fields, stop


def _truncate(fields: list[HeaderField], start: int, end: int) -> tuple[HeaderField, ...]:
    """``fields`` (which begin at ``start``) cut off at ``end``."""
    out = []
    for f in fields:
        if start >= end:
            break
        out.append(HeaderField(f.name, f.raw[: end - start]))
        start += len(f.raw)
    return tuple(out)


def _boundary(ct: ContentType) -> bytes | None:
    """The boundary of a multipart as octets, ``None`` when missing or empty."""
    value = ct.param("boundary")
    if not value:
        return None
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace")


def _encapsulates(ct: ContentType, entity_header: list[HeaderField]) -> bool:
    """Whether the body is a message to parse (RFC 2046 section 5.2.1, RFC 6532 section 3.5)."""
    if ct.maintype != "message" or ct.subtype not in ("rfc822", "global"):
        return False
    encoding = next(
        (f.value for f in entity_header if f.name.lower() == "content-transfer-encoding"), ""
    )
    return encoding.lower() in _IDENTITY_ENCODINGS


def _parse_multipart(
    r: Reader, boundary: bytes, bounds: tuple[bytes, ...], default: ContentType, depth: int
) -> tuple[tuple[Entity, ...], Stop]:
    """The parts of a multipart body at ``pos`` (RFC 2046 section 5.1.1)."""
    inner = (*bounds, boundary)
    own = len(bounds)
    stop = r.scan(inner)  # the preamble belongs to no part
    children: list[Entity] = []
    while stop.index == own and not stop.close:
        r.advance(stop.after)
        following = r.delimiter_at(r.pos, inner)
        if following is not None and following.index == own:
            # RFC 2046 section 5.1.1 BNF: a body part is followed by CRLF then the
            # delimiter, so two delimiter lines in a row enclose no part.
            stop = following
            continue
        if r.parts >= MAX_PARTS:
            return tuple(children), r.scan(bounds)
        child, stop = _parse_entity(r, inner, default, depth + 1)
        children.append(child)
    if stop.index == own:  # close delimiter: the epilogue runs to the enclosing delimiter
        r.advance(stop.after)
        stop = r.scan(bounds)
    return tuple(children), stop


def _parse_body(
    r: Reader, ct: ContentType, fields: list[HeaderField], bounds: tuple[bytes, ...], depth: int
) -> tuple[tuple[Entity, ...], Stop]:
    """The children of the body at ``pos`` and the stop that ends it."""
    if depth < MAX_DEPTH and r.parts < MAX_PARTS:
        boundary = _boundary(ct) if ct.maintype == "multipart" else None
        if boundary is not None:
            default = DIGEST_DEFAULT if ct.subtype == "digest" else ContentType()
            return _parse_multipart(r, boundary, bounds, default, depth)
        if _encapsulates(ct, fields):
            child, stop = _parse_entity(r, bounds, ContentType(), depth + 1)
            return (child,), stop
    return (), r.scan(bounds)


def _parse_entity(
    r: Reader, bounds: tuple[bytes, ...], default: ContentType, depth: int
) -> tuple[Entity, Stop]:
    """The entity at ``pos``, ending at the next delimiter of ``bounds`` or the data's end."""
    start = r.pos
    r.parts += 1
    fields, stop = _read_header(r, bounds)
    ct = content_type(
        next((f.value for f in fields if f.name.lower() == "content-type"), None), default
    )
    if stop is not None:  # no blank line: all header, empty body
        end, _ = r.end_before(stop, start)
        return Entity(start, end, end, _truncate(fields, start, end), ct), stop
    body_start, lf_start = r.pos, r.lf
    children, stop = _parse_body(r, ct, fields, bounds, depth)
    if stop.index >= 0 and stop.pos == body_start:
        # The blank line that seemed to end the header is the line break of the
        # delimiter right after it (RFC 2046 section 5.1.1): all header, as above.
        end, _ = r.end_before(stop, start)
        return Entity(start, end, end, _truncate(fields, start, end), ct), stop
    # A line break that ends a child's delimiter line cannot also start the next one.
    end, lf_end = r.end_before(stop, children[-1].end if children else body_start)
    lines = r.lines(body_start, end, lf_start, lf_end)
    return Entity(start, body_start, end, tuple(fields), ct, children, lines), stop


def parse_message(fp: BinaryIO, start: int = 0, end: int | None = None) -> Entity:
    """Parse the message in ``fp[start:end]`` into an :class:`Entity` tree.

    Reads in bounded chunks; never raises on malformed input.
    """
    if end is None:
        end = fp.seek(0, 2)
    start = min(max(start, 0), end)
    entity, _ = _parse_entity(Reader(fp, start, end), (), ContentType(), 0)
    return entity


def _blank_line(data: bytes) -> tuple[int, int] | None:
    """Where the first blank line (``CRLF`` or a bare LF line) of ``data`` starts and ends."""
    for line in (b"\r\n", b"\n"):
        if data.startswith(line):
            return 0, len(line)
    crlf, lf = data.find(b"\n\r\n"), data.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf + 1, crlf + 3
    if lf >= 0:
        return lf + 1, lf + 2
    return None


#: A header field: its first line, and the continuation lines after it.
_FIELD = re.compile(rb"([^\n]*\n)((?:[ \t][^\n]*\n)*)")


def header_section(data: bytes, end: int) -> Entity | None:
    """The top-level entity of a message whose header ends inside ``data`` (its first
    octets), split with C-speed searches; None when the general parser must decide
    (no blank line in ``data``, a header over :data:`MAX_HEADER`).

    Gives exactly what :func:`parse_message` gives for a header section (the
    header fields of :func:`_read_header` with no enclosing boundary); the
    body is not split (no children, line count 0) and runs to ``end``.
    """
    blank = _blank_line(data)
    if blank is None or blank[1] > MAX_HEADER:
        return None
    header_end, body_start = blank
    fields = []
    # A field is a line and the continuation lines after it (RFC 5322 section 2.2.3); a
    # first line that starts with blanks, or has no colon, is a field too (as in entity.py).
    for first, folded in _FIELD.findall(data, 0, header_end):
        colon = first.find(b":")
        name = first[:colon].rstrip(b" \t").decode("latin-1") if colon >= 0 else ""
        fields.append(HeaderField(name, first + folded if folded else first))
    value = next((f.value for f in fields if f.name.lower() == "content-type"), None)
    return Entity(0, body_start, end, tuple(fields), content_type(value))


#: What stands for a body that only encryption makes when a view's shape is parsed:
#: one short line (no delimiter, no header can start with it).
SHAPE_FILLER = b".\r\n"


def _stretch(entity: Entity, cut: int, octets: int, lines: int, body_at: int) -> Entity:
    """``entity`` with every offset from ``cut`` on moved by ``octets``, and ``lines``
    added to the line count of each entity whose body holds the stand-in body at ``body_at``."""

    def move(offset: int) -> int:
        return offset + octets if offset >= cut else offset

    holds = entity.body_start <= body_at and entity.end >= cut
    return Entity(
        move(entity.header_start),
        move(entity.body_start),
        move(entity.end),
        entity.header,
        entity.content_type,
        tuple(_stretch(c, cut, octets, lines, body_at) for c in entity.children),
        entity.body_lines + lines if holds else entity.body_lines,
        dict(entity.extra),
    )


def parse_shape(prefix: bytes, body_size: int, body_lines: int, suffix: bytes = b"") -> Entity:
    """The :class:`Entity` tree of ``prefix + body + suffix`` where only the body's size
    and its LF count are known (a view not encrypted yet).

    ``prefix`` ends with the blank line of the header section the body
    belongs to, the body ends with a line break (or is empty) and is a leaf
    -- encrypted octets, never split into parts.  The
    octets are parsed with a one-line stand-in for the body, then every
    offset past it is moved by the difference: the offsets, sizes and line
    counts are those :func:`parse_message` gives for the real octets, and
    parsing costs the headers only, however large the body.
    """
    end = len(prefix) + body_size + len(suffix)
    if not suffix:
        # A single part (S/MIME): its header section is all there is to parse.
        top = header_section(prefix + SHAPE_FILLER, end)
        if (
            top is not None
            and top.body_start == len(prefix)
            and top.content_type.maintype not in ("multipart", "message")
        ):
            return replace(top, body_lines=body_lines if body_size else 0)
    filler = SHAPE_FILLER if body_size else b""
    parsed = parse_message(io.BytesIO(prefix + filler + suffix))
    cut = len(prefix) + len(filler)
    octets = body_size - len(filler)
    lines = body_lines - filler.count(b"\n")
    if not octets and not lines:
        return parsed
    return _stretch(parsed, cut, octets, lines, len(prefix))


__all__ = [
    "DIGEST_DEFAULT",
    "ContentType",
    "Entity",
    "HeaderField",
    "Params",
    "content_type",
    "header_section",
    "parse_message",
    "parse_shape",
]
