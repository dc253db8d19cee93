"""Sans-IO pieces of the wire fixes: tags, literals, skipping refused commands, resp-text, ID.

Pure functions over bytes, used by :mod:`transcoder.imap.wire`; no Twisted here.
"""

from __future__ import annotations

import re

#: RFC 3501 section 9: ``tag = 1*<any ASTRING-CHAR except "+">``.
_TAG = re.compile(b"[" + re.escape(bytes(set(range(0x21, 0x7F)) - set(b'(){%*"\\+'))) + b"]+")
#: Command names we look up: an ASCII atom of letters, digits and hyphens.
_COMMAND = re.compile(rb"[A-Z][A-Z0-9-]*")
_OCTETS = re.compile(rb"(\d+)(\+?)")
#: Bytes kept from the end of a skipped line: enough for ``{<20 digits>+}``.
TAIL = 32
#: The size given to a literal whose octet count has more than 20 digits.
HUGE_LITERAL = 10**20

_STATUSES = frozenset({b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH"})
_DEFAULT_TEXT = {
    b"OK": b"Completed",
    b"NO": b"Failed",
    b"BAD": b"Invalid command",
    b"BYE": b"Closing connection",
    b"PREAUTH": b"Logged in",
}
_CODE_TEXT = {
    b"UIDVALIDITY": b"UIDs valid",
    b"UIDNEXT": b"Predicted next UID",
    b"UNSEEN": b"First unseen message",
    b"PERMANENTFLAGS": b"Flags permitted",
    b"READ-WRITE": b"Mailbox is read-write",
    b"READ-ONLY": b"Mailbox is read-only",
    b"CAPABILITY": b"Capabilities",
}
_CODE_ONLY = re.compile(rb"\[([A-Za-z0-9.-]+)(?: [^\]]*)?\]\s*")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')


class IdSyntaxError(ValueError):
    """An ID parameter list that breaks RFC 2971's grammar or limits."""


def is_tag(word: bytes) -> bool:
    """Whether ``word`` is a valid command tag (7-bit, no ``+``, no atom-specials but ``]``)."""
    return _TAG.fullmatch(word) is not None


def command_name(cmd: bytes) -> str | None:
    """The upper-cased command name as text, or None when it cannot name a command."""
    upper = cmd.upper()
    return upper.decode("ascii") if _COMMAND.fullmatch(upper) else None


def literal_at_end(line: bytes) -> tuple[int, bool] | None:
    """``(octets, non_synchronizing)`` of the literal ending ``line`` (RFC 3501 4.3, RFC 7888).

    None when the line announces no literal; ``(-1, False)`` for a ``{...}``
    that is not a valid octet count.
    """
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    if start < 0 or b"}" in line[start + 1 : -1]:
        return None
    octets = _OCTETS.fullmatch(line, start + 1, len(line) - 1)
    if octets is None:
        return (-1, False)
    digits = octets.group(1)
    return (int(digits) if len(digits) <= 20 else HUGE_LITERAL, bool(octets.group(2)))


class CommandSkipper:
    """Skips what is left of a refused command: literal octets, then its line to CRLF.

    A skipped line that ends in a non-synchronizing literal announces more
    octets of the same command, which are skipped too (RFC 7888 section 4).
    Memory stays constant whatever the sizes.
    """

    def __init__(self, literal: int | None, tail: bytes = b"") -> None:
        #: Literal octets still to skip; None while skipping to the end of a line.
        self.literal = literal
        self._tail = tail[-TAIL:]

    def feed(self, data: bytes) -> bytes | None:
        """Skip through ``data``: the octets after the command, or None while it goes on."""
        while True:
            if self.literal is not None:
                if len(data) < self.literal:
                    self.literal -= len(data)
                    return None
                data, self.literal, self._tail = data[self.literal :], None, b""
            buf = self._tail + data
            end = buf.find(b"\r\n")
            if end < 0:
                self._tail = buf[-TAIL:]
                return None
            literal = literal_at_end(buf[max(0, end - TAIL) : end])
            data = buf[end + 2 :]
            if literal is None or not literal[1]:
                return data
            self.literal = literal[0]


def complete_status(
    state: bytes, tag: bytes | None, message: bytes | None
) -> tuple[bytes, bytes | None]:
    """``(state, message)`` of a response, a status one given text after its code.

    RFC 3501 section 9: ``resp-text = ["[" resp-text-code "]" SP] text`` and
    text is not empty.  Twisted also sends ``* [READ-WRITE]`` without ``OK``.
    """
    if not message:
        status, _, rest = state.partition(b" ")
        if state[:1] == b"[":
            state, message = b"OK", state
        elif tag is None and status in _STATUSES and rest:
            state, message = status, rest
    if state not in _STATUSES:
        return state, message
    if not message:
        return state, _DEFAULT_TEXT[state]
    code_only = _CODE_ONLY.fullmatch(message)
    if code_only is not None:
        text = _CODE_TEXT.get(code_only.group(1).upper(), _DEFAULT_TEXT[state])
        message = message.rstrip() + b" " + text
    return state, message


def split_id_value(rest: bytes) -> tuple[bytes | None, bytes]:
    """One ``nstring`` of an ID list, quoted or NIL, and what follows (RFC 2971 section 4)."""
    quoted = _QUOTED.match(rest)
    if quoted is not None:
        return re.sub(rb'\\(["\\])', rb"\1", quoted.group(1)), rest[quoted.end() :]
    if rest[:3].upper() == b"NIL" and rest[3:4] in (b"", b" ", b")"):
        return None, rest[3:]
    raise IdSyntaxError("Malformed ID parameter list")


def id_pairs(items: list[bytes | None]) -> list[tuple[bytes, bytes | None]]:
    """Field/value pairs from a flat ID list, within RFC 2971 section 3.3's limits."""
    fields, values = items[0::2], items[1::2]
    if len(fields) != len(values) or len(fields) > 30:
        raise IdSyntaxError("ID takes up to 30 field-value pairs")
    pairs: list[tuple[bytes, bytes | None]] = []
    for field, value in zip(fields, values, strict=True):
        if field is None or len(field) > 30 or (value is not None and len(value) > 1024):
            raise IdSyntaxError("ID fields are strings of up to 30 octets, values up to 1024")
        pairs.append((field, value))
    return pairs
