"""The grammar of CONVERSIONS and CONVERT (RFC 5259 section 10) parsed by hand; the responses.

Pure: no twisted import.  Anything the grammar does not allow raises
:class:`~transcoder.errors.BadCommand` (``BAD [CLIENTBUG]``), never another
exception.  Keywords and parameter names are case-insensitive; parameter
values keep their case.  Grammar accepted::

    conversions-cmd = "CONVERSIONS" SP mime-type-req SP mime-type-req  ; atom or quoted
    mime-type-req   = "*" / type-name "/" "*" / type-name "/" subtype-name
    convert         = "CONVERT" SP sequence-set SP convert-params SP
                      ( convert-att / "(" convert-att *(SP convert-att) ")" )
    convert-params  = "(" (quoted-to-mime-type / "NIL") [SP "(" transcoding-params ")"] ")"
    transcoding-params = transcoding-param-name SP transcoding-param-value *(SP ...)
    convert-att     = "UID" / "BODYPARTSTRUCTURE" section-binary /
                      "BINARY" section-binary [partial] / "BINARY.SIZE" section-binary /
                      "BODY[HEADER]" / "BODY[" section-part ".HEADER]" /
                      "BODY[" section-part ".MIME]" / "AVAILABLECONVERSIONS" section-binary
    section-binary  = "[" [section-part] "]"
    partial         = "<" number "." nz-number ">"

Parameter names and values are atoms or quoted strings; a literal is
refused (``BAD``): no conversion parameter needs one.  A target media type
may also be written as an atom (``TEXT/PLAIN``).  ``BODY[...HEADER]`` and
``BODY[...MIME]`` go with the default conversion only (section 6): with a
target media type they are ``BAD``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from transcoder.convert.model import (
    MISSINGPARAMETERS,
    TEMPFAIL,
    ConversionFailed,
    ConversionRequest,
)
from transcoder.convert.registry import ConversionLine
from transcoder.errors import BadCommand

#: RFC 6838 section 4.2 restricted-name.
_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_CONCRETE = re.compile(rf"{_NAME}/{_NAME}\Z")
_REQ = re.compile(rf"(\*|{_NAME}/\*|{_NAME}/{_NAME})\Z")
_MAX_NUMBER = 2**32 - 1
_ATOM_SPECIALS = frozenset(b'(){%*"\\]')
_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")
#: The most conversion parameters one command may carry.
MAX_PARAMETERS = 32


@dataclass(frozen=True)
class ConvertItem:
    """One ``convert-att``: ``name`` upper-case (``BODY`` for the header items), the part
    numbers, ``text`` (``HEADER`` or ``MIME`` for ``BODY``) and ``partial`` ``(origin, length)``."""

    name: str
    part: tuple[int, ...] = ()
    text: str | None = None
    partial: tuple[int, int] | None = None

    @property
    def section(self) -> str:
        """The section part as written: ``2.1``, or empty for the whole message."""
        return ".".join(str(p) for p in self.part)

    def label(self) -> bytes:
        """The item as the response names it: ``BINARY[2]<2001>``, ``BODY[1.MIME]``, ``UID``."""
        if self.name == "UID":
            return b"UID"
        spec = self.section
        if self.text is not None:
            spec = f"{spec}.{self.text}" if spec else self.text
        label = f"{self.name}[{spec}]".encode("ascii")
        if self.partial is not None:
            label += b"<%d>" % self.partial[0]  # RFC 3516: the origin alone is echoed
        return label


@dataclass(frozen=True)
class ConvertArguments:
    """A CONVERT command's conversion request and items, in order (duplicates once)."""

    request: ConversionRequest
    items: tuple[ConvertItem, ...]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def at(self, token: bytes) -> bool:
        return self.data.startswith(token, self.pos)

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def rest(self) -> str:
        raw = self.data[self.pos : self.pos + 40]
        text = "".join(chr(c) if 32 <= c < 127 else "?" for c in raw)
        return repr(text) if text else "end of line"

    def expect(self, token: bytes, what: str) -> None:
        if not self.at(token):
            raise BadCommand(f"Expected {what}, found {self.rest()}")
        self.pos += len(token)

    def space(self) -> None:
        self.expect(b" ", "a space")
        while self.at(b" "):
            self.pos += 1

    def word(self) -> str:
        start = self.pos
        while self.pos < len(self.data) and self.data[self.pos] in _WORD:
            self.pos += 1
        return self.data[start : self.pos].decode("ascii").upper()

    def number(self, nonzero: bool, what: str) -> int:
        start = self.pos
        while self.pos < len(self.data) and self.data[self.pos : self.pos + 1].isdigit():
            self.pos += 1
        digits = self.data[start : self.pos]
        if not digits or len(digits) > 10 or int(digits) > _MAX_NUMBER:
            raise BadCommand(f"Expected {what}, found {self.rest()}")
        if nonzero and digits[:1] == b"0":
            raise BadCommand(f"{what.capitalize()} must be non-zero, without a leading 0")
        return int(digits)

    def astring(self, what: str) -> str:
        """An atom or a quoted string (ASCII, or UTF-8 in a quoted string)."""
        if self.at(b'"'):
            return self._quoted()
        if self.at(b"{") or self.at(b"~{"):
            raise BadCommand(f"A literal is not accepted for {what}")
        start = self.pos
        while self.pos < len(self.data):
            c = self.data[self.pos]
            if c <= 32 or c >= 127 or c in _ATOM_SPECIALS:
                break
            self.pos += 1
        if self.pos == start:
            raise BadCommand(f"Expected {what}, found {self.rest()}")
        return self.data[start : self.pos].decode("ascii")

    def _quoted(self) -> str:
        self.pos += 1
        out = bytearray()
        while self.pos < len(self.data) and self.data[self.pos] != ord('"'):
            c = self.data[self.pos]
            if c == ord("\\"):
                self.pos += 1
                if self.pos >= len(self.data) or self.data[self.pos] not in b'"\\':
                    raise BadCommand("Invalid escape in a quoted string")
                c = self.data[self.pos]
            elif c in (0, 10, 13):
                raise BadCommand("Invalid character in a quoted string")
            out.append(c)
            self.pos += 1
        self.expect(b'"', "the closing quote")
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError:
            raise BadCommand("A quoted string is not UTF-8") from None


def parse_conversions(line: bytes) -> tuple[str, str]:
    """The source and target ``mime-type-req`` of a CONVERSIONS command, lower-cased."""
    reader = _Reader(line)
    found: list[str] = []
    for what in ("a source media type", "a target media type"):
        if found:
            reader.space()
        value = reader.astring(what)
        if not _REQ.match(value):
            raise BadCommand(f"{value[:40]!r} is not a media type, type/* or *")
        found.append(value.lower())
    if not reader.done():
        raise BadCommand(f"Unexpected {reader.rest()} after CONVERSIONS' arguments")
    return found[0], found[1]


def _request(reader: _Reader) -> ConversionRequest:
    """``convert-params``."""
    reader.expect(b"(", "( to open the conversion parameters")
    if reader.data[reader.pos : reader.pos + 3].upper() == b"NIL" and not reader.at(b'"'):
        reader.pos += 3
        target = None
    else:
        target = reader.astring("a target media type")
        if not _CONCRETE.match(target):
            raise BadCommand(f"{target[:40]!r} is not a media type (type/subtype)")
        target = target.lower()
    params: list[tuple[str, str]] = []
    if reader.at(b" "):
        reader.space()
        reader.expect(b"(", "( to open the transcoding parameters")
        while True:
            name = reader.astring("a conversion parameter name").lower()
            reader.space()
            value = reader.astring(f"the value of {name[:40]!r}")
            if any(n == name for n, _ in params):
                raise BadCommand(f"Conversion parameter {name[:40]!r} given twice")
            params.append((name, value))
            if len(params) > MAX_PARAMETERS:
                raise BadCommand(f"More than {MAX_PARAMETERS} conversion parameters")
            if reader.at(b")"):
                reader.pos += 1
                break
            reader.space()
    reader.expect(b")", ") to close the conversion parameters")
    return ConversionRequest(target, tuple(params))


def _section_part(reader: _Reader) -> tuple[int, ...]:
    """``[section-part]`` after ``[``: numbers separated by dots (possibly none)."""
    part: list[int] = []
    while reader.pos < len(reader.data) and reader.data[reader.pos : reader.pos + 1].isdigit():
        part.append(reader.number(True, "a part number"))
        if reader.at(b".") and reader.data[reader.pos + 1 : reader.pos + 2].isdigit():
            reader.pos += 1
    return tuple(part)


def _item(reader: _Reader, default: bool) -> ConvertItem:
    """One ``convert-att``."""
    name = reader.word()
    if name == "UID":
        return ConvertItem("UID")
    if name == "BODY":
        reader.expect(b"[", "[ after BODY")
        part = _section_part(reader)
        if part:
            reader.expect(b".", ". before HEADER or MIME")
        text = reader.word()
        if text not in ("HEADER", "MIME") or (text == "MIME" and not part):
            raise BadCommand("CONVERT names BODY[HEADER], BODY[n.HEADER] or BODY[n.MIME]")
        reader.expect(b"]", "] after the section")
        if not default:
            raise BadCommand(
                "BODY[...HEADER] and BODY[...MIME] go with the default conversion, NIL "
                "(RFC 5259 section 6)"
            )
        return ConvertItem("BODY", part, text)
    if name not in ("BINARY", "BINARY.SIZE", "BODYPARTSTRUCTURE", "AVAILABLECONVERSIONS"):
        raise BadCommand(
            f"Unknown CONVERT item {name[:40]!r}" if name else "Expected a CONVERT item"
        )
    reader.expect(b"[", f"[ after {name}")
    part = _section_part(reader)
    reader.expect(b"]", "] after the section")
    partial = None
    if name == "BINARY" and reader.at(b"<"):
        reader.pos += 1
        origin = reader.number(False, "a partial origin")
        reader.expect(b".", ". in the partial")
        partial = (origin, reader.number(True, "a partial length"))
        reader.expect(b">", "> after the partial")
    return ConvertItem(name, part, None, partial)


def parse_convert(line: bytes) -> ConvertArguments:
    """The arguments of CONVERT after its sequence set."""
    reader = _Reader(line)
    request = _request(reader)
    reader.space()
    default = request.target is None
    if reader.at(b"("):
        reader.pos += 1
        items = [_item(reader, default)]
        while not reader.at(b")"):
            if reader.done():
                raise BadCommand("Missing ) to close the CONVERT items")
            reader.space()
            items.append(_item(reader, default))
        reader.pos += 1
    else:
        items = [_item(reader, default)]
    if not reader.done():
        raise BadCommand(f"Unexpected {reader.rest()} after the CONVERT items")
    return ConvertArguments(request, tuple(dict.fromkeys(items)))


# -- responses -------------------------------------------------------------------------


def quoted(value: str) -> bytes:
    """``value`` as an IMAP quoted string (UTF-8; CR and LF replaced: never in our texts)."""
    text = value.replace("\r", " ").replace("\n", " ").replace("\\", "\\\\").replace('"', '\\"')
    return b'"' + text.encode("utf-8") + b'"'


def _strings(values: Iterable[str]) -> bytes:
    return b"(" + b" ".join(quoted(v) for v in values) + b")"


def conversion_response(line: ConversionLine) -> bytes:
    """``CONVERSION "source" "target" ("param" ...)`` (RFC 5259 section 5.2)."""
    out = b"CONVERSION " + quoted(line.source) + b" " + quoted(line.target)
    if line.parameters:
        out += b" " + _strings(line.parameters)
    return out


def mimetype_list(targets: Iterable[str]) -> bytes:
    """``(("type/subtype" ...))``: two levels, to tell it from an ERROR phrase (section 10)."""
    return b"(" + _strings(targets) + b")"


def error_phrase(failure: ConversionFailed) -> bytes:
    """``(ERROR "text" code ...)`` (RFC 5259 section 9)."""
    out = b"(ERROR " + quoted(failure.text or "Conversion failed") + b" "
    if failure.error == TEMPFAIL:
        return out + b"TEMPFAIL)"
    source = b"NIL" if failure.source is None else quoted(failure.source)
    target = quoted(failure.target or "application/octet-stream")
    if failure.error == MISSINGPARAMETERS:
        names = failure.missing or ("charset",)
        return out + b"MISSINGPARAMETERS " + source + b" " + target + b" " + _strings(names) + b")"
    out += b"BADPARAMETERS " + source + b" " + target
    if failure.params:
        out += b" " + _strings(v for pair in failure.params for v in pair)
    return out + b")"


__all__ = [
    "MAX_PARAMETERS",
    "ConvertArguments",
    "ConvertItem",
    "conversion_response",
    "error_phrase",
    "mimetype_list",
    "parse_conversions",
    "parse_convert",
    "quoted",
]
