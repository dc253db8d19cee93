"""The arguments of FETCH, parsed by hand: ``sequence-set`` and ``fetch-att`` (RFC 3501 section 9).

Pure: no twisted import.  :func:`parse_fetch_items` turns the items of a
FETCH command into immutable :class:`FetchItem` values and
:func:`parse_sequence_set` its message set into ranges; anything the grammar
does not allow raises :class:`~transcoder.errors.BadCommand` (``BAD
[CLIENTBUG]``), never another exception.

Why not Twisted's ``IMAP4Server.arg_fetchatt`` / ``_FetchParser`` and
``arg_seqset``: the fetch parser raises bare ``Exception`` and ``ValueError``
for ``BINARY[1]``, ``MODSEQ``, ``X-GM-MSGID``, nested parentheses, ``()``,
``(ALL)``, ``<1.2.3>``, ``BODY[-1.2]`` or ``BODY[TEXT.1]`` (answered ``NO
[SERVERBUG]`` with a traceback, issue 8 item 5), and accepts what RFC 3501
forbids: part ``0`` (``BODY[0]``, ``BODY[1.0]``), a negative partial origin
(``<-1.5>``, which then crashed the writer), a zero length, numbers past
2^32-1, ``BODY.PEEK`` without a section, an empty header list and a FETCH
without any item.  ``parseIdList`` merges its ranges once per number, which
is quadratic: a 54 KB sequence set held the reactor for 19 s.

Grammar (RFC 3501 section 9, keywords case-insensitive)::

    fetch-items     = "ALL" / "FULL" / "FAST" / fetch-att / "(" fetch-att *(SP fetch-att) ")"
    fetch-att       = "ENVELOPE" / "FLAGS" / "INTERNALDATE" /
                      "RFC822" [".HEADER" / ".SIZE" / ".TEXT"] /
                      "BODY" ["STRUCTURE"] / "UID" /
                      "BODY" section ["<" number "." nz-number ">"] /
                      "BODY.PEEK" section ["<" number "." nz-number ">"] /
                      "BINARY" [".PEEK"] section-binary [partial] /   ; RFC 3516 section 7
                      "BINARY.SIZE" section-binary
    section-binary  = "[" [section-part] "]"                         ; RFC 3516 section 7
    section         = "[" [section-spec] "]"
    section-spec    = section-msgtext / (section-part ["." section-text])
    section-msgtext = "HEADER" / "HEADER.FIELDS" [".NOT"] SP header-list / "TEXT"
    section-part    = nz-number *("." nz-number)
    section-text    = section-msgtext / "MIME"
    header-list     = "(" header-fld-name *(SP header-fld-name) ")"
    sequence-set    = (seq-number / seq-range) *("," (seq-number / seq-range))
    seq-range       = seq-number ":" seq-number
    seq-number      = nz-number / "*"

A header field name may be an atom or a quoted string (a literal is not
accepted: ``BAD``), and must be an RFC 5322 field name (printable ASCII
without ``:``).  Runs of spaces between items are tolerated.
"""

from __future__ import annotations

from dataclasses import dataclass

from transcoder.errors import BadCommand

#: The largest ``number`` / ``nz-number`` (RFC 3501 section 9: unsigned 32-bit).
MAX_NUMBER = 2**32 - 1

#: Items named by a keyword alone.
SIMPLE_ITEMS = frozenset(
    {
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "BODY",
        "BODYSTRUCTURE",
        "UID",
    }
)
#: The macros (RFC 3501 section 6.4.5), allowed only as the whole argument.
MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
#: The BINARY items (RFC 3516 section 4.2), each followed by a section-binary.
BINARY_ITEMS = frozenset({"BINARY", "BINARY.PEEK", "BINARY.SIZE"})
#: Items of extensions this server does not offer, with why they are refused.
_NOT_OFFERED = {
    "MODSEQ": "MODSEQ needs CONDSTORE (RFC 7162), which is not offered",
}
_SECTION_TEXTS = ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME")
#: atom-specials of RFC 3501 section 9 besides CTL and SP; "]" is allowed in an astring.
_ATOM_SPECIALS = frozenset(b'(){%*"\\')
_QUOTED_SPECIALS = frozenset(b'"\\')
_DIGITS = frozenset(b"0123456789")
_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")


@dataclass(frozen=True)
class SectionSpec:
    """What ``[...]`` names: 1-based ``part`` numbers, then an optional section text.

    ``text`` is ``None`` (the part's body, or the whole message when
    ``part`` is empty), ``HEADER``, ``HEADER.FIELDS``, ``HEADER.FIELDS.NOT``,
    ``TEXT`` or ``MIME``; ``fields`` holds the header list, upper-cased.
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def label(self) -> bytes:
        """The section as the response echoes it (RFC 3501 section 7.4.2)."""
        spec = ".".join(str(p) for p in self.part)
        if self.text is not None:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(_quote_if_needed(f) for f in self.fields) + ")"
        return spec.encode("ascii")


@dataclass(frozen=True)
class FetchItem:
    """One ``fetch-att``.

    ``name`` is the upper-case keyword (``BODY.PEEK`` is ``BODY`` with
    ``peek``, ``BINARY.PEEK`` is ``BINARY`` with ``peek``); ``section`` is
    set for ``BODY[...]``, ``BINARY[...]`` and ``BINARY.SIZE[...]`` (whose
    spec holds part numbers only), ``partial`` is the ``(origin, length)``
    of ``<origin.length>``.
    """

    name: str
    section: SectionSpec | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None

    @property
    def binary(self) -> bool:
        """Whether this is ``BINARY[...]`` / ``BINARY.PEEK[...]`` (not ``BINARY.SIZE``)."""
        return self.name == "BINARY"

    def label(self) -> bytes:
        """The name in the response: ``BODY[1.TEXT]<0>``, ``BINARY[2]``, ``RFC822.SIZE`` ..."""
        if self.section is None:
            return self.name.encode("ascii")
        keyword = b"BODY" if self.name == "BODY" else self.name.encode("ascii")
        label = keyword + b"[" + self.section.label() + b"]"
        if self.partial is not None:
            # RFC 3501 section 7.4.2: only the origin octet is echoed.
            label += b"<%d>" % self.partial[0]
        return label


def parse_fetch_items(line: bytes) -> tuple[FetchItem, ...]:
    """The items of a FETCH command (everything after the sequence set), in order."""
    reader = _Reader(line)
    if reader.at(b"("):
        reader.pos += 1
        items = [_fetch_att(reader)]
        while not reader.at(b")"):
            reader.list_goes_on("FETCH item list")
            items.append(_fetch_att(reader))
        reader.pos += 1
    else:
        macro = MACROS.get(reader.keyword().upper())
        if macro is not None:
            items = [FetchItem(name) for name in macro]
        else:
            reader.pos = 0
            items = [_fetch_att(reader)]
    if not reader.done():
        raise BadCommand(f"Unexpected {reader.show_rest()} after the FETCH items")
    return tuple(dict.fromkeys(items))  # the same item twice is answered once


def parse_sequence_set(raw: bytes) -> tuple[tuple[int | None, int | None], ...]:
    """The ranges of a ``sequence-set``, each ``(low, high)`` with ``None`` for ``*``.

    ``low <= high`` when both are numbers; a ``*`` is always ``high``
    (``*:*`` is ``(None, None)``).  Numbers are 1 .. :data:`MAX_NUMBER`.
    """
    ranges = []
    for item in raw.split(b","):
        ends = item.split(b":")
        if len(ends) > 2:
            raise BadCommand(f"Invalid message set {_show(raw)}")
        low, high = (_seq_number(end, raw) for end in (ends[0], ends[-1]))
        if low is None or (high is not None and high < low):
            low, high = high, low
        ranges.append((low, high))
    return tuple(ranges)


def _seq_number(raw: bytes, whole: bytes) -> int | None:
    if raw == b"*":
        return None
    if not raw or not set(raw) <= _DIGITS or raw[:1] == b"0" or len(raw) > 10:
        raise BadCommand(f"Invalid message set {_show(whole)}")
    number = int(raw)
    if number > MAX_NUMBER:
        raise BadCommand(f"Message number out of range in {_show(whole)}")
    return number


class _Reader:
    """A position in the argument line."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def at(self, token: bytes) -> bool:
        return self.data.startswith(token, self.pos)

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def show_rest(self) -> str:
        return _show(self.data[self.pos :]) if not self.done() else "end of line"

    def expect(self, token: bytes, what: str) -> None:
        if not self.at(token):
            raise BadCommand(f"Expected {what}, found {self.show_rest()}")
        self.pos += len(token)

    def spaces(self) -> None:
        """One or more SP (RFC 3501 asks for one; more are harmless)."""
        start = self.pos
        while self.at(b" "):
            self.pos += 1
        if self.pos == start:
            raise BadCommand(f"Expected a space, found {self.show_rest()}")

    def list_goes_on(self, what: str) -> None:
        """Inside a parenthesised list, not at its ``)``: the spaces before the next element."""
        if self.done():
            raise BadCommand(f"Missing ) to close the {what}")
        self.spaces()

    def keyword(self) -> str:
        """The run of letters, digits, ``.`` and ``-`` here (possibly empty)."""
        start = self.pos
        while self.pos < len(self.data) and self.data[self.pos] in _WORD:
            self.pos += 1
        return self.data[start : self.pos].decode("ascii")

    def number(self, nonzero: bool, what: str) -> int:
        """``number`` or ``nz-number`` here."""
        start = self.pos
        while self.pos < len(self.data) and self.data[self.pos] in _DIGITS:
            self.pos += 1
        digits = self.data[start : self.pos]
        if not digits:
            raise BadCommand(f"Expected {what}, found {self.show_rest()}")
        if len(digits) > 10 or int(digits) > MAX_NUMBER:
            raise BadCommand(f"{what.capitalize()} out of range")
        if nonzero and digits[:1] == b"0":
            raise BadCommand(f"{what.capitalize()} must be a non-zero number without leading 0")
        return int(digits)


def _fetch_att(reader: _Reader) -> FetchItem:
    """One ``fetch-att`` at the reader's position."""
    word = reader.keyword()
    name = word.upper()
    if name in ("BODY", "BODY.PEEK") and reader.at(b"["):
        section = _section(reader)
        partial = _partial(reader) if reader.at(b"<") else None
        return FetchItem("BODY", section, name == "BODY.PEEK", partial)
    if name in BINARY_ITEMS:
        return _binary_att(reader, name)
    if name in SIMPLE_ITEMS:
        if reader.at(b"[") or reader.at(b"<"):
            raise BadCommand(f"{name} takes no section or partial")
        return FetchItem(name)
    if name == "BODY.PEEK":
        raise BadCommand("BODY.PEEK needs a section, e.g. BODY.PEEK[]")
    if name in _NOT_OFFERED:
        raise BadCommand(_NOT_OFFERED[name])
    if name in MACROS:
        raise BadCommand(f"{name} cannot be combined with other items (RFC 3501 section 6.4.5)")
    if not word:
        raise BadCommand(f"Expected a FETCH item, found {reader.show_rest()}")
    raise BadCommand(f"Unknown FETCH item {_show(word.encode('ascii'))}")


def _binary_att(reader: _Reader, name: str) -> FetchItem:
    """``"BINARY" [".PEEK"] section-binary [partial]`` / ``"BINARY.SIZE" section-binary``.

    RFC 3516 section 7: ``section-binary = "[" [section-part] "]"`` -- part
    numbers only, no HEADER, TEXT or MIME; BINARY.SIZE takes no partial.
    """
    if not reader.at(b"["):
        raise BadCommand(f"{name} needs a section, e.g. {name}[] (RFC 3516 section 7)")
    reader.pos += 1
    part: list[int] = []
    if not reader.at(b"]"):
        part.append(reader.number(True, "a part number"))
        while reader.at(b"."):
            reader.pos += 1
            part.append(reader.number(True, "a part number"))
    if not reader.at(b"]"):
        raise BadCommand(
            f"{name} takes part numbers only, found {reader.show_rest()} (RFC 3516 section 7)"
        )
    reader.pos += 1
    section = SectionSpec(tuple(part))
    if name == "BINARY.SIZE":
        if reader.at(b"<"):
            raise BadCommand("BINARY.SIZE takes no partial (RFC 3516 section 7)")
        return FetchItem(name, section)
    partial = _partial(reader) if reader.at(b"<") else None
    return FetchItem("BINARY", section, name == "BINARY.PEEK", partial)


def _section(reader: _Reader) -> SectionSpec:
    """``"[" [section-spec] "]"``."""
    reader.expect(b"[", "[")
    part: list[int] = []
    text = None
    fields: tuple[str, ...] = ()
    if reader.pos < len(reader.data) and reader.data[reader.pos] in _DIGITS:
        part.append(reader.number(True, "a part number"))
        while reader.at(b".") and reader.data[reader.pos + 1 : reader.pos + 2].isdigit():
            reader.pos += 1
            part.append(reader.number(True, "a part number"))
        if reader.at(b"."):
            reader.pos += 1
            text = _section_text(reader, allow_mime=True)
    elif not reader.at(b"]"):
        text = _section_text(reader, allow_mime=False)
    if text is not None and text.startswith("HEADER.FIELDS"):
        reader.expect(b" ", "a space before the header list")
        fields = _header_list(reader)
    reader.expect(b"]", "] after the section")
    return SectionSpec(tuple(part), text, fields)


def _section_text(reader: _Reader, allow_mime: bool) -> str:
    """``HEADER``, ``HEADER.FIELDS[.NOT]``, ``TEXT`` or (after a part) ``MIME``."""
    upper = reader.data[reader.pos : reader.pos + 17].upper()
    for text in _SECTION_TEXTS:
        if upper.startswith(text.encode("ascii")):
            after = reader.data[reader.pos + len(text) : reader.pos + len(text) + 1]
            if after in (b"]", b" ", b""):
                break
    else:
        raise BadCommand(f"Invalid section {reader.show_rest()}")
    if text == "MIME" and not allow_mime:
        raise BadCommand("MIME needs a part number (RFC 3501 section 6.4.5)")
    reader.pos += len(text)
    return text


def _header_list(reader: _Reader) -> tuple[str, ...]:
    """``"(" header-fld-name *(SP header-fld-name) ")"``, names upper-cased."""
    reader.expect(b"(", "( to open the header list")
    names = [_header_name(reader)]
    while not reader.at(b")"):
        reader.list_goes_on("header list")
        names.append(_header_name(reader))
    reader.pos += 1
    return tuple(names)


def _header_name(reader: _Reader) -> str:
    """One ``header-fld-name`` (an atom or quoted string) that is an RFC 5322 field name."""
    raw = _quoted(reader) if reader.at(b'"') else _astring_atom(reader)
    if not raw or any(c < 33 or c > 126 or c == ord(":") for c in raw):
        raise BadCommand(f"Invalid header field name {_show(raw)}")
    return raw.decode("ascii").upper()


def _astring_atom(reader: _Reader) -> bytes:
    """``1*ASTRING-CHAR``: ATOM-CHARs and ``]``; a ``]`` ending the section is left."""
    start = reader.pos
    data = reader.data
    while reader.pos < len(data):
        c = data[reader.pos]
        if c <= 32 or c >= 127 or c in _ATOM_SPECIALS:
            break
        reader.pos += 1
    if reader.pos == start:
        raise BadCommand(f"Expected a header field name, found {reader.show_rest()}")
    return data[start : reader.pos]


def _quoted(reader: _Reader) -> bytes:
    """``quoted`` (RFC 3501 section 9): DQUOTE, QUOTED-CHARs, DQUOTE."""
    reader.pos += 1
    out = bytearray()
    data = reader.data
    while reader.pos < len(data) and data[reader.pos] != ord('"'):
        c = data[reader.pos]
        if c == ord("\\"):
            reader.pos += 1
            if reader.pos >= len(data) or data[reader.pos] not in _QUOTED_SPECIALS:
                raise BadCommand("Invalid escape in a quoted string")
            c = data[reader.pos]
        elif c in (0, 10, 13) or c > 127:
            raise BadCommand("Invalid character in a quoted string")
        out.append(c)
        reader.pos += 1
    reader.expect(b'"', "the closing quote")
    return bytes(out)


def _partial(reader: _Reader) -> tuple[int, int]:
    """``"<" number "." nz-number ">"``: (origin, length)."""
    reader.expect(b"<", "<")
    origin = reader.number(False, "a partial origin")
    reader.expect(b".", ". between the partial origin and length")
    length = reader.number(True, "a partial length")
    reader.expect(b">", "> after the partial")
    return origin, length


def _quote_if_needed(name: str) -> str:
    """``name`` as an atom, or quoted when it holds atom-specials (RFC 3501 section 4.3)."""
    if all(c not in _ATOM_SPECIALS and c != ord("]") for c in name.encode("ascii")):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _show(raw: bytes) -> str:
    """``raw`` safe to echo in a response text: printable ASCII, at most 40 characters."""
    text = "".join(chr(c) if 32 <= c < 127 else "?" for c in raw[:40])
    return repr(text + ("..." if len(raw) > 40 else ""))


__all__ = [
    "BINARY_ITEMS",
    "MACROS",
    "MAX_NUMBER",
    "SIMPLE_ITEMS",
    "FetchItem",
    "SectionSpec",
    "parse_fetch_items",
    "parse_sequence_set",
]
