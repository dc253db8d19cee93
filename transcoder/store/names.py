"""Mailbox names: validation, the Maildir++ directory mapping, LIST patterns.

IMAP side (RFC 3501 section 5.1): a mailbox name is a Unicode string (the
server decodes modified UTF-7 off the wire) whose hierarchy levels are
separated by ``/``.  ``INBOX`` is case-insensitive and is the account's
Maildir root.

Disk side (Maildir++): every other mailbox is a directory ``.<l1>.<l2>...``
directly under the account root, one ``.``-separated component per level.
Each level is written in **modified UTF-7** (RFC 3501 section 5.1.3) with one
addition: ``.`` is not written as itself but base64-encoded like a non-ASCII
character (``.`` becomes ``&AC4-``), so a ``.`` inside a level can never be
mistaken for the level separator, and ``/`` never reaches the disk.  Examples::

    INBOX            -> <root>            (cur/ new/ tmp/ at the account root)
    Sent             -> .Sent
    Lists/twisted    -> .Lists.twisted
    a.b              -> .a&AC4-b
    Entwürfe         -> .Entw&APw-rfe
    INBOX/Old        -> .INBOX.Old

A directory name only counts as a mailbox when it decodes and re-encodes to
itself, so foreign or hand-made directories cannot alias each other.
"""

from __future__ import annotations

import base64
import unicodedata
from collections.abc import Iterable

from transcoder.errors import InvalidMailboxName
from transcoder.store.patterns import ListPattern

#: The IMAP hierarchy delimiter (RFC 3501 section 6.3.8).
DELIMITER = "/"
INBOX = "INBOX"
#: Longest directory name most file systems accept.
_MAX_DIRNAME = 255


def _b64(chars: str) -> str:
    raw = chars.encode("utf-16-be")
    return "&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-"


def encode_mutf7(text: str, escape: str = "") -> str:
    """``text`` in modified UTF-7 (RFC 3501 section 5.1.3).

    Characters in ``escape`` are base64-encoded even if printable ASCII.

    Raises UnicodeEncodeError for lone surrogates.
    """
    out: list[str] = []
    pending: list[str] = []
    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E and ch not in escape:
            if pending:
                out.append(_b64("".join(pending)))
                pending.clear()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    if pending:
        out.append(_b64("".join(pending)))
    return "".join(out)


def decode_mutf7(text: str) -> str:
    """Decode modified UTF-7; raises ValueError when ``text`` is not valid."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ord(ch) < 0x20 or ord(ch) > 0x7E:
            raise ValueError("not modified UTF-7")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated base64 run")
        run = text[i + 1 : end]
        if not run:
            out.append("&")
        else:
            raw = base64.b64decode(run.replace(",", "/") + "=" * (-len(run) % 4), validate=True)
            if len(raw) % 2:
                raise ValueError("odd UTF-16 length")
            out.append(raw.decode("utf-16-be"))
        i = end + 1
    return "".join(out)


def _encode_level(level: str) -> str:
    return encode_mutf7(level, escape=".")


def _check_chars(name: str) -> None:
    for ch in name:
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs") or ch in "%*":
            raise InvalidMailboxName(f"Invalid character {ch!r} in mailbox name")


def split_name(name: str) -> tuple[str, ...]:
    """The levels of mailbox ``name``, validated; the first level ``INBOX`` case-normalised.

    Raises :class:`InvalidMailboxName` for an empty name, an empty level
    (``a//b``, a leading or trailing ``/``), ``.``/``..`` levels, control
    characters, lone surrogates, list wildcards (``%``, ``*``) or a name too
    long for a directory.
    """
    if not isinstance(name, str) or not name:
        raise InvalidMailboxName("Empty mailbox name")
    _check_chars(name)
    levels = name.split(DELIMITER)
    if any(level in ("", ".", "..") for level in levels):
        raise InvalidMailboxName("Invalid hierarchy level in mailbox name")
    if levels[0].upper() == INBOX:
        levels[0] = INBOX
    result = tuple(levels)
    if len(dirname(result).encode("utf-8")) > _MAX_DIRNAME:
        raise InvalidMailboxName("Mailbox name too long")
    return result


def normalize(name: str) -> str:
    """The canonical form of ``name`` (``inbox/x`` -> ``INBOX/x``), validated."""
    return DELIMITER.join(split_name(name))


def dirname(levels: tuple[str, ...]) -> str:
    """The Maildir++ directory name of a mailbox (``""`` for INBOX, the account root)."""
    if levels == (INBOX,):
        return ""
    try:
        return "." + ".".join(_encode_level(level) for level in levels)
    except UnicodeEncodeError as e:
        raise InvalidMailboxName("Mailbox name is not valid Unicode") from e


def name_of_dir(entry: str) -> str | None:
    """The IMAP name of directory ``entry`` under the account root, or None if it is none.

    Only names that map back to exactly ``entry`` are mailboxes (see module doc).
    """
    if not entry.startswith(".") or entry in (".", ".."):
        return None
    try:
        levels = tuple(decode_mutf7(part) for part in entry[1:].split("."))
        name = DELIMITER.join(levels)
        if split_name(name) != levels or dirname(levels) != entry:
            return None
    except (ValueError, InvalidMailboxName):
        return None
    return name


def parents(name: str) -> list[str]:
    """The superior names of ``name``, outermost first (``a/b/c`` -> ``a``, ``a/b``)."""
    levels = name.split(DELIMITER)
    return [DELIMITER.join(levels[:i]) for i in range(1, len(levels))]


def is_inferior(name: str, ancestor: str) -> bool:
    """True when ``name`` lies below ``ancestor`` in the hierarchy."""
    return name.startswith(ancestor + DELIMITER)


def _normalize_pattern(pattern: str) -> str:
    # INBOX is case-insensitive (RFC 3501 section 5.1); a literal leading
    # INBOX level in the pattern is matched as such.
    head, sep, tail = pattern.partition(DELIMITER)
    if head.upper() == INBOX:
        return INBOX + sep + tail
    return pattern


def compile_pattern(reference: str, pattern: str) -> ListPattern:
    """The matcher of the names selected by LIST ``reference`` ``pattern``.

    RFC 3501 section 6.3.8: the reference and the pattern are concatenated;
    ``*`` matches any characters, ``%`` any characters except the hierarchy
    delimiter; the match is anchored at both ends.  Matched in linear time
    and capped (:mod:`transcoder.store.patterns`): raises
    :class:`~transcoder.errors.PatternTooComplex` over the caps.
    """
    return ListPattern.compile(_normalize_pattern(reference + pattern), DELIMITER)


def match_names(reference: str, pattern: str, names: Iterable[str]) -> list[str]:
    """The names among ``names`` that LIST ``reference`` ``pattern`` selects, in order."""
    return compile_pattern(reference, pattern).select(names)


def decode_list_pattern(raw: bytes) -> str:
    """A LIST/LSUB reference or pattern off the wire, as text; never refused.

    A pattern is not a mailbox name (issue 10, item 3): it may hold
    atom-specials and ``&`` that start no valid modified UTF-7 shift
    (``!#$&'+,-.%*``).  Each ``&...-`` run that decodes (RFC 3501 section
    5.1.3) stands for its characters, as in a name; any other octet stands
    for itself (octets beyond ASCII as Latin-1: they match no name).
    """
    text = raw.decode("latin-1")
    out: list[str] = []
    i = 0
    while i < len(text):
        end = text.find("-", i + 1) if text[i] == "&" else -1
        decoded = _decode_shift(text[i + 1 : end]) if end > i else None
        if decoded is None:
            out.append(text[i])
            i += 1
        else:
            out.append(decoded)
            i = end + 1
    return "".join(out)


def _decode_shift(run: str) -> str | None:
    """The characters of the modified UTF-7 shift ``&run-``, or None if it is not one."""
    try:
        return decode_mutf7("&" + run + "-")
    except ValueError:  # binascii.Error and UnicodeDecodeError included
        return None
