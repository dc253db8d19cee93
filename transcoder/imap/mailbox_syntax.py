"""Wire syntax of the mailbox commands: names, strings, flag lists, date-time, uid sets.

Pure functions over bytes (RFC 3501 section 9 grammar); the server mixins
call them from their argument parsers.  Syntax errors raise
:class:`~transcoder.errors.BadCommand` (answered ``BAD``); a name that is not
valid modified UTF-7 raises :class:`~transcoder.errors.InvalidMailboxName`
(answered ``NO [CANNOT]``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

# Registers the "imap4-utf-7" codec (RFC 3501 section 5.1.3, modified UTF-7).
import twisted.mail.imap4  # noqa: F401

from transcoder.errors import BadCommand, InvalidMailboxName

#: Bytes that may not appear in an atom (RFC 3501 section 9, ``atom-specials``;
#: ``]`` is a resp-special but is allowed in astrings and list-mailboxes).
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x20)) | {0x7F}
_ASTRING_EXTRA = frozenset(b"]")
_LIST_EXTRA = frozenset(b"]%*")
_LITERAL = re.compile(rb"\{(\d{1,20})(\+?)\}")

#: The five system flags a client may set (RFC 3501 section 2.3.2); \Recent is
#: set by the server only.
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SYSTEM_BY_LOWER = {flag.lower(): flag for flag in SYSTEM_FLAGS}

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DATE_TIME = re.compile(
    rb" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)


@dataclass(frozen=True)
class LiteralAhead:
    """A literal ``{size}`` ends the line: its octets follow the continuation request."""

    size: int
    #: ``{size+}`` (RFC 7888): the client sends the octets without waiting.
    non_synchronizing: bool = False


def split_token(line: bytes, extra: frozenset[int] = _ASTRING_EXTRA) -> tuple[bytes, bytes]:
    """``(token, rest)`` for an atom-like token at the start of ``line``.

    ``extra`` are the otherwise special bytes the token may contain.  The token
    ends at a space or the end of the line; 8-bit bytes are let through so
    that name decoding can refuse them with a proper ``NO``.
    """
    end = line.find(b" ")
    token, rest = (line, b"") if end < 0 else (line[:end], line[end + 1 :])
    if not token:
        raise BadCommand("Missing argument")
    bad = [b for b in token if b in _ATOM_SPECIALS and b not in extra]
    if bad:
        raise BadCommand(f"Invalid character {chr(bad[0])!r} in argument")
    return token, rest


def split_quoted(line: bytes) -> tuple[bytes, bytes]:
    """``(value, rest)`` for a quoted string at the start of ``line`` (RFC 3501 ``quoted``)."""
    out = bytearray()
    i = 1
    while i < len(line):
        c = line[i]
        if c == 0x22:  # closing DQUOTE
            return bytes(out), _after_argument(line[i + 1 :])
        if c == 0x5C:  # backslash escapes only quoted-specials
            if i + 1 >= len(line) or line[i + 1] not in b'"\\':
                raise BadCommand("Invalid escape in quoted string")
            i += 1
            c = line[i]
        elif c in (0x00, 0x0A, 0x0D):
            raise BadCommand("Invalid character in quoted string")
        out.append(c)
        i += 1
    raise BadCommand("Unterminated quoted string")


def _after_argument(rest: bytes) -> bytes:
    """The remainder after an argument: nothing, or a space and the next argument."""
    if not rest:
        return b""
    if rest[:1] != b" ":
        raise BadCommand("Missing space between arguments")
    return rest[1:]


def split_string_argument(
    line: bytes, extra: frozenset[int] = _ASTRING_EXTRA
) -> tuple[bytes, bytes] | LiteralAhead:
    """An astring (or list-mailbox with ``extra=LIST_CHARS``) at the start of ``line``.

    Returns ``(value, rest)``, or :class:`LiteralAhead` when the argument is a
    literal, which must then end the line.
    """
    if line[:1] == b'"':
        return split_quoted(line)
    literal = _LITERAL.fullmatch(line)
    if literal is not None:
        return LiteralAhead(int(literal.group(1)), bool(literal.group(2)))
    if line[:1] == b"{":
        raise BadCommand("Malformed literal")
    return split_token(line, extra)


#: ``extra`` for :func:`split_string_argument` parsing a LIST/LSUB pattern.
LIST_CHARS = _LIST_EXTRA


def parse_literal_spec(line: bytes) -> LiteralAhead:
    """The ``{n}`` / ``{n+}`` that must make up all of ``line``."""
    literal = _LITERAL.fullmatch(line)
    if literal is None:
        raise BadCommand("Expected a literal")
    return LiteralAhead(int(literal.group(1)), bool(literal.group(2)))


def decode_mailbox_name(raw: bytes) -> str:
    """The mailbox name ``raw`` (modified UTF-7 on the wire) as text.

    Only the canonical encoding is accepted (RFC 3501 section 5.1.3: printable
    ASCII represents itself, ``&`` is ``&-``, every shift ends with ``-``), so
    one mailbox has one wire name.  ``INBOX`` is case-insensitive (section 5.1).
    """
    try:
        name = raw.decode("imap4-utf-7")
    except (UnicodeDecodeError, ValueError):
        raise InvalidMailboxName("Mailbox name is not valid modified UTF-7") from None
    # Control characters are never part of a name (and Twisted's encoder
    # mangles CR, LF and TAB, so they could not be sent back either).
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise InvalidMailboxName("Control character in mailbox name")
    if name.encode("imap4-utf-7") != raw:
        raise InvalidMailboxName("Mailbox name is not canonical modified UTF-7")
    if name.upper() == "INBOX":
        return "INBOX"
    return name


def encode_mailbox_name(name: str) -> bytes:
    """``name`` in modified UTF-7, as sent on the wire (before quoting)."""
    return name.encode("imap4-utf-7")


def format_string(value: bytes) -> bytes:
    """``value`` as an IMAP string: quoted, or a literal when it cannot be quoted."""
    if any(b in (0x00, 0x0A, 0x0D) or b > 0x7F for b in value):
        return b"{%d}\r\n%b" % (len(value), value)
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def format_mailbox(name: str) -> bytes:
    """A mailbox name ready for a response (``mailbox`` in RFC 3501 section 9)."""
    return format_string(encode_mailbox_name(name))


def split_flag_list(line: bytes) -> tuple[list[str], bytes]:
    """``(flags, rest)`` for the ``flag-list`` at the start of ``line`` (APPEND).

    System flags are canonicalised; ``\\Recent``, ``\\*`` and unknown system
    flags are refused (RFC 3501 section 2.3.2: the client cannot set them).
    """
    end = line.find(b")")
    if line[:1] != b"(" or end < 0:
        raise BadCommand("Malformed flag list")
    flags: list[str] = []
    for item in line[1:end].split(b" ") if end > 1 else []:
        flag = parse_flag(item)
        if flag.lower() not in (f.lower() for f in flags):
            flags.append(flag)
    return flags, _after_argument(line[end + 1 :])


def parse_flag(item: bytes) -> str:
    """One client-settable flag: a system flag or a keyword atom."""
    name = item[1:] if item[:1] == b"\\" else item
    if not name or any(b in _ATOM_SPECIALS or b > 0x7F for b in name):
        raise BadCommand(f"Invalid flag {item!r}")
    text = item.decode("ascii")
    if item[:1] == b"\\":
        try:
            return _SYSTEM_BY_LOWER[text.lower()]
        except KeyError:
            raise BadCommand(f"Flag {text} cannot be set by a client") from None
    return text


def parse_date_time(raw: bytes) -> datetime:
    """An RFC 3501 ``date-time`` (without its quotes) as an aware datetime."""
    match = _DATE_TIME.fullmatch(raw)
    if match is None:
        raise BadCommand("Invalid date-time")
    day, month, year, hour, minute, second, sign, zh, zm = match.groups()
    try:
        month_number = _MONTHS.index(month.decode("ascii").lower()) + 1
        offset = timedelta(hours=int(zh), minutes=int(zm))
        if int(zm) >= 60:
            raise ValueError("zone minutes")
        zone = timezone(-offset if sign == b"-" else offset)
        return datetime(
            int(year), month_number, int(day), int(hour), int(minute), int(second), tzinfo=zone
        )
    except ValueError:
        raise BadCommand("Invalid date-time") from None


def format_uid_set(uids: Iterable[int]) -> bytes:
    """``uids`` as a compact ``uid-set`` (RFC 4315 section 4), keeping their order."""
    ranges: list[list[int]] = []
    for uid in uids:
        if ranges and uid == ranges[-1][1] + 1:
            ranges[-1][1] = uid
        else:
            ranges.append([uid, uid])
    return b",".join(b"%d" % lo if lo == hi else b"%d:%d" % (lo, hi) for lo, hi in ranges)


#: STATUS data items (RFC 3501 section 6.3.10).
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")


def split_status_items(line: bytes) -> tuple[list[str], bytes]:
    """``(items, rest)`` for STATUS's parenthesised list of data item names."""
    end = line.find(b")")
    if line[:1] != b"(" or end < 0:
        raise BadCommand("Malformed STATUS item list")
    items: list[str] = []
    for raw in line[1:end].split(b" "):
        name = raw.decode("ascii", "replace").upper()
        if name not in STATUS_ITEMS:
            raise BadCommand(f"Unknown STATUS item {name!r}")
        if name not in items:
            items.append(name)
    return items, _after_argument(line[end + 1 :])


def is_same_or_inferior(name: str, ancestor: str, delimiter: str = "/") -> bool:
    """``name`` is ``ancestor`` or lies below it in the hierarchy."""
    return name == ancestor or name.startswith(ancestor + delimiter)
