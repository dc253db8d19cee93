"""Pure parsing of the server's XKEY responses: bytes in, values out (no sockets).

A small tokenizer for the subset of RFC 3501 section 9 response syntax XKEY
uses -- atoms, ``NIL``, quoted strings with ``\\"`` and ``\\\\`` escapes,
synchronizing literals ``{n}CRLF...`` and parenthesised lists, separated by
single spaces -- and the mapping of its output onto :class:`KeyInfo` and
:class:`PolicyInfo`.  Anything else is answered with
``XKeyError("PROTOCOL", ...)``; nothing here is evaluated or regex-matched.

Tokenizer output (:data:`Value`): an atom or string is ``str`` (quoted
strings and literals decoded as UTF-8, RFC 6855), ``NIL`` is ``None``, a
parenthesised list is a ``list``.  Atoms and strings are not told apart:
``STATUS ACTIVE`` and ``STATUS "ACTIVE"`` mean the same, but ``"NIL"`` stays
the text ``NIL``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TypeAlias

from transcoder.client.model import KeyInfo, PolicyInfo, ServerKeyInfo, XKeyError

Value: TypeAlias = str | list["Value"] | None

#: Deepest list nesting accepted (XKEY needs 2); bounds the recursion.
MAX_DEPTH = 8
#: Longest literal length prefix accepted, in digits (RFC 3501 number: 32 bits).
MAX_LITERAL_DIGITS = 10

# RFC 3501 section 9: atom-specials are "(" ")" "{" SP CTL list-wildcards
# quoted-specials resp-specials; an ATOM-CHAR is any other 7-bit CHAR.
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]')


def _is_atom_char(byte: int) -> bool:
    return 0x20 < byte < 0x7F and byte not in _ATOM_SPECIALS


def _protocol(why: str, data: bytes, pos: int) -> XKeyError:
    excerpt = data[max(0, pos - 20) : pos + 20]
    return XKeyError("PROTOCOL", f"malformed server response: {why} at offset {pos}: {excerpt!r}")


class _Tokenizer:
    """A cursor over one response's data; each ``_read_*`` consumes one value."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def error(self, why: str) -> XKeyError:
        return _protocol(why, self.data, self.pos)

    def read_sequence(self, depth: int, closing: int | None) -> list[Value]:
        """Values separated by single spaces, up to ``closing`` (or the end)."""
        values: list[Value] = []
        while True:
            at_end = self.pos == len(self.data)
            if at_end or self.data[self.pos] == closing:
                if at_end and closing is not None:
                    raise self.error("unbalanced parenthesis")
                return values
            if values:
                if self.data[self.pos] == ord(")"):
                    raise self.error("unbalanced parenthesis")
                if self.data[self.pos] != 0x20:
                    raise self.error("expected a space between values")
                self.pos += 1
            values.append(self.read_value(depth))

    def read_value(self, depth: int) -> Value:
        """One atom, NIL, quoted string, literal or parenthesised list."""
        if self.pos == len(self.data):
            raise self.error("expected a value")
        byte = self.data[self.pos]
        if byte == ord("("):
            if depth >= MAX_DEPTH:
                raise self.error("lists nested too deeply")
            self.pos += 1
            values = self.read_sequence(depth + 1, ord(")"))
            self.pos += 1
            return values
        if byte == ord('"'):
            return self.read_quoted()
        if byte == ord("{"):
            return self.read_literal()
        return self.read_atom()

    def read_atom(self) -> Value:
        start = self.pos
        while self.pos < len(self.data) and _is_atom_char(self.data[self.pos]):
            self.pos += 1
        if self.pos == start:
            raise self.error(f"unexpected character {self.data[start : start + 1]!r}")
        atom = self.data[start : self.pos].decode("ascii")
        return None if atom.upper() == "NIL" else atom

    def read_quoted(self) -> str:
        # RFC 3501 quoted: only \" and \\ may be escaped; CR and LF never appear.
        self.pos += 1
        out = bytearray()
        while self.pos < len(self.data):
            byte = self.data[self.pos]
            self.pos += 1
            if byte == ord('"'):
                return self.decode(bytes(out))
            if byte in (0x0D, 0x0A, 0x00):
                raise self.error("CR, LF or NUL in a quoted string")
            if byte == ord("\\"):
                if self.pos == len(self.data) or self.data[self.pos] not in b'"\\':
                    raise self.error("bad escape in a quoted string")
                byte = self.data[self.pos]
                self.pos += 1
            out.append(byte)
        raise self.error("unterminated quoted string")

    def read_literal(self) -> str:
        # RFC 3501 literal: "{" number "}" CRLF *CHAR8 (synchronizing form only).
        close = self.data.find(b"}", self.pos)
        digits = self.data[self.pos + 1 : close] if close > 0 else b""
        if not digits.isdigit() or len(digits) > MAX_LITERAL_DIGITS:
            raise self.error("bad literal length")
        if self.data[close + 1 : close + 3] != b"\r\n":
            raise self.error("literal length not followed by CRLF")
        start = close + 3
        end = start + int(digits)
        if end > len(self.data):
            raise self.error("literal shorter than announced")
        self.pos = end
        return self.decode(self.data[start:end])

    def decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("string is not UTF-8") from None


def parse_values(data: bytes) -> list[Value]:
    """Tokenize one response's data (what follows ``* XKEY``) into values."""
    return _Tokenizer(data).read_sequence(0, None)


def join_untagged(items: Iterable[bytes | tuple[bytes, bytes] | None]) -> list[bytes]:
    """Rebuild whole responses from imaplib's ``untagged_responses`` entries.

    imaplib stores a response containing literals as ``(text up to {n}, literal)``
    tuples followed by the text after the literal; joining them back with the
    CRLF the tokenizer expects yields one byte string per response.
    """
    responses: list[bytes] = []
    pending = b""
    waiting = False
    for item in items:
        if item is None:
            continue
        if isinstance(item, tuple):
            pending += item[0] + b"\r\n" + item[1]
            waiting = True
            continue
        responses.append(pending + item)
        pending, waiting = b"", False
    if waiting:
        responses.append(pending)
    return responses


def parse_status_text(text: bytes | str) -> tuple[str | None, str]:
    """``(code, text)`` of a status response's text: ``[XKEY-ADDRESS] why`` gives
    ``("XKEY-ADDRESS", "why")`` (RFC 3501 section 7.1); no brackets, no code."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        inside = text[1:close].split(" ", 1)[0] if close > 0 else ""
        if inside:
            return inside.upper(), text[close + 1 :].strip()
    return None, text


def _properties(values: list[Value], what: str) -> dict[str, Value]:
    """A ``(NAME value NAME value ...)`` list as a dict with upper-case names."""
    if len(values) % 2:
        raise XKeyError("PROTOCOL", f"{what}: odd number of items in {values!r}")
    found: dict[str, Value] = {}
    for name, value in zip(values[::2], values[1::2], strict=True):
        if not isinstance(name, str):
            raise XKeyError("PROTOCOL", f"{what}: {name!r} is not an item name")
        if name.upper() in found:
            raise XKeyError("PROTOCOL", f"{what}: {name} given twice")
        found[name.upper()] = value
    return found


def _text(props: dict[str, Value], name: str, what: str, *, nil: bool = False) -> str | None:
    if name not in props:
        raise XKeyError("PROTOCOL", f"{what}: no {name}")
    value = props[name]
    if isinstance(value, str) and value:
        return value
    if value is None and nil:
        return None
    raise XKeyError("PROTOCOL", f"{what}: bad {name} {value!r}")


def _words(props: dict[str, Value], name: str, what: str) -> tuple[str, ...]:
    value = props.get(name)
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return tuple(v for v in value if isinstance(v, str))
    raise XKeyError("PROTOCOL", f"{what}: {name} is not a list of strings: {value!r}")


def parse_timestamp(text: str) -> datetime:
    """A NOT-AFTER value (``2027-01-31T00:00:00Z``) as an aware UTC datetime."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise XKeyError("PROTOCOL", f"NOT-AFTER {text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None or "T" not in text:
        raise XKeyError("PROTOCOL", f"NOT-AFTER {text!r} has no time zone")
    return when.astimezone(UTC)


def parse_key(values: list[Value]) -> KeyInfo:
    """A key's property list (``FORMAT SMIME FINGERPRINT "..." ...``) as :class:`KeyInfo`."""
    props = _properties(values, "XKEY key")
    not_after = _text(props, "NOT-AFTER", "XKEY key", nil=True) if "NOT-AFTER" in props else None
    return KeyInfo(
        format=str(_text(props, "FORMAT", "XKEY key")).upper(),
        fingerprint=str(_text(props, "FINGERPRINT", "XKEY key")),
        addresses=_words(props, "ADDRESSES", "XKEY key"),
        not_after=None if not_after is None else parse_timestamp(not_after),
        usage=tuple(word.upper() for word in _words(props, "USAGE", "XKEY key")),
        status=str(_text(props, "STATUS", "XKEY key")).upper(),
    )


def parse_policy(values: list[Value]) -> PolicyInfo:
    """A policy's property list (``MODE ALWAYS FORMAT SMIME``) as :class:`PolicyInfo`."""
    props = _properties(values, "XKEY POLICY")
    fmt = _text(props, "FORMAT", "XKEY POLICY", nil=True) if "FORMAT" in props else None
    sign = str(_text(props, "SIGN", "XKEY POLICY")).upper() if "SIGN" in props else None
    if sign not in (None, "ON", "OFF"):
        raise XKeyError("PROTOCOL", f"XKEY POLICY: SIGN {sign} is neither ON nor OFF")
    return PolicyInfo(
        mode=str(_text(props, "MODE", "XKEY POLICY")).upper(),
        format=None if fmt is None else fmt.upper(),
        sign=None if sign is None else sign == "ON",
    )


def parse_xkey_responses(
    items: Iterable[bytes | tuple[bytes, bytes] | None],
) -> tuple[list[KeyInfo], list[PolicyInfo]]:
    """Every key and policy in a command's untagged XKEY responses, in order.

    ``* XKEY (...)`` is a key, ``* XKEY POLICY (...)`` a policy; a response
    starting with any other atom is some later extension's and is skipped.
    """
    keys: list[KeyInfo] = []
    policies: list[PolicyInfo] = []
    for response in join_untagged(items):
        values = parse_values(response)
        head = values[0] if values else None
        if isinstance(head, list):
            if len(values) != 1:
                raise XKeyError("PROTOCOL", f"text after a key's list: {response!r}")
            keys.append(parse_key(head))
        elif isinstance(head, str) and head.upper() == "POLICY":
            if len(values) != 2 or not isinstance(values[1], list):
                raise XKeyError("PROTOCOL", f"malformed XKEY POLICY response: {response!r}")
            policies.append(parse_policy(values[1]))
        elif not values:
            raise XKeyError("PROTOCOL", "empty XKEY response")
    return keys, policies


def parse_server_key(values: list[Value]) -> ServerKeyInfo:
    """A server key's property list (``FORMAT SMIME USAGE (ENCRYPT) ...``)."""
    what = "XKEY SERVER"
    props = _properties(values, what)
    times = []
    for name in ("NOT-BEFORE", "NOT-AFTER"):
        text = _text(props, name, what, nil=True) if name in props else None
        times.append(None if text is None else parse_timestamp(text))
    return ServerKeyInfo(
        format=str(_text(props, "FORMAT", what)).upper(),
        usage=tuple(word.upper() for word in _words(props, "USAGE", what)),
        fingerprint=str(_text(props, "FINGERPRINT", what)),
        subkeys=_words(props, "SUBKEYS", what),
        not_before=times[0],
        not_after=times[1],
        material=str(_text(props, "MATERIAL", what)),
    )


def parse_server_keys(items: Iterable[bytes | tuple[bytes, bytes] | None]) -> list[ServerKeyInfo]:
    """Every ``* XKEY SERVER (...)`` among a command's untagged XKEY responses."""
    found = []
    for response in join_untagged(items):
        values = parse_values(response)
        head = values[0] if values else None
        if isinstance(head, str) and head.upper() == "SERVER":
            if len(values) != 2 or not isinstance(values[1], list):
                raise XKeyError("PROTOCOL", f"malformed XKEY SERVER response: {response[:200]!r}")
            found.append(parse_server_key(values[1]))
    return found
