"""Message flags: validation and their Maildir encoding.

System flags (RFC 3501 section 2.3.2) live in the file name's ``:2,`` info as
the standard Maildir letters (``D`` \\Draft, ``F`` \\Flagged, ``R`` \\Answered,
``S`` \\Seen, ``T`` \\Deleted).  Keywords use Dovecot's scheme: the lowercase
letters ``a``..``z`` index a per-mailbox ``dovecot-keywords`` file of
``<index> <keyword>`` lines, so at most 26 keywords per mailbox.  Other info
letters (``P`` passed, from other programs) are kept untouched.

``\\Recent`` is session state, never stored (RFC 3501 section 2.3.2).
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterable
from pathlib import Path

from transcoder.errors import BadCommand, MailboxError
from transcoder.files import write_atomically

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
RECENT = "\\Recent"
_LETTER_OF = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}
_FLAG_OF = {letter: flag for flag, letter in _LETTER_OF.items()}
_SYSTEM_BY_LOWER = {flag.lower(): flag for flag in SYSTEM_FLAGS}
KEYWORD_LETTERS = string.ascii_lowercase
KEYWORDS_FILE = "dovecot-keywords"
#: Octets that may not appear in a keyword (RFC 3501 section 9 ``atom-specials``).
_ATOM_SPECIALS = frozenset('(){ %*"\\]')


class InvalidFlag(BadCommand):
    """Invalid flag."""


class KeywordLimitError(MailboxError):
    """Too many keywords in this mailbox."""

    code = "LIMIT"


def _as_text(flag: str | bytes) -> str:
    if isinstance(flag, bytes):
        try:
            return flag.decode("ascii")
        except UnicodeDecodeError as e:
            raise InvalidFlag("Flags must be ASCII") from e
    return flag


def _is_atom(word: str) -> bool:
    return bool(word) and all(0x21 <= ord(c) <= 0x7E and c not in _ATOM_SPECIALS for c in word)


def parse_flags(flags: Iterable[str | bytes]) -> tuple[str, ...]:
    """Validated flags a client asked to store, canonical case, ``\\Recent`` dropped.

    Raises :class:`InvalidFlag` for an unknown ``\\`` flag or a keyword that is
    not an atom (RFC 3501 section 9, ``flag``).
    """
    out: dict[str, str] = {}
    for raw in flags:
        flag = _as_text(raw)
        if flag.startswith("\\"):
            lower = flag.lower()
            if lower == RECENT.lower():
                continue  # the server alone sets \Recent (RFC 3501 section 2.3.2)
            if lower not in _SYSTEM_BY_LOWER:
                raise InvalidFlag(f"Unknown system flag {flag}")
            flag = _SYSTEM_BY_LOWER[lower]
        elif not _is_atom(flag):
            raise InvalidFlag(f"Invalid keyword {flag!r}")
        out.setdefault(flag.lower(), flag)
    return tuple(out.values())


def apply_mode(current: Iterable[str], change: Iterable[str], mode: int) -> tuple[str, ...]:
    """Flags after STORE ``mode`` (1 add, -1 remove, 0 replace).

    Keywords compare case-insensitively (RFC 3501 section 2.3.2).
    """
    if mode == 0:
        return tuple(change)
    result = {flag.lower(): flag for flag in current}
    for flag in change:
        if mode > 0:
            result.setdefault(flag.lower(), flag)
        else:
            result.pop(flag.lower(), None)
    return tuple(result.values())


def split_filename(name: str) -> tuple[str, str]:
    """``(base, info)`` of a Maildir file name (info = the letters after ``:2,``)."""
    base, sep, info = name.partition(":")
    return base, info[2:] if sep and info.startswith("2,") else ""


#: Distinct info strings whose flags a mailbox's table remembers.
_FLAGS_MEMO = 1024


class Keywords:
    """The keyword <-> letter table of one mailbox (Dovecot's ``dovecot-keywords``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._names: list[str | None] = [None] * len(KEYWORD_LETTERS)
        self._stamp: tuple[int, int, int] | None = None
        #: info letters -> flags, for the table as it is now (every FETCH FLAGS asks).
        self._flags_of_info: dict[str, tuple[str, ...]] = {}

    def load(self) -> None:
        """Re-read the file if it changed on disk; tolerant of stray lines."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._names = [None] * len(KEYWORD_LETTERS)
            self._stamp = None
            self._flags_of_info = {}
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        names: list[str | None] = [None] * len(KEYWORD_LETTERS)
        text = self.path.read_text("utf-8", errors="replace")
        for line in text.splitlines():
            index, _, word = line.strip().partition(" ")
            if index.isdigit() and int(index) < len(names) and _is_atom(word):
                names[int(index)] = word
        self._names = names
        self._stamp = stamp
        self._flags_of_info = {}

    def names(self) -> list[str]:
        """The keywords defined in this mailbox, in letter order."""
        return [name for name in self._names if name is not None]

    def has_room(self) -> bool:
        """True while a new keyword can still be given a letter."""
        return None in self._names

    def _index(self, keyword: str) -> int | None:
        lower = keyword.lower()
        for i, name in enumerate(self._names):
            if name is not None and name.lower() == lower:
                return i
        return None

    def knows(self, keyword: str) -> bool:
        """True when ``keyword`` already has a letter."""
        return self._index(keyword) is not None

    def register(self, keywords: Iterable[str]) -> None:
        """Give each new keyword a letter and save the file (caller holds the mailbox lock)."""
        self.load()
        added = False
        for keyword in keywords:
            if keyword.startswith("\\") or self._index(keyword) is not None:
                continue
            if None not in self._names:
                raise KeywordLimitError(f"No room for keyword {keyword}")
            self._names[self._names.index(None)] = keyword
            self._flags_of_info = {}
            added = True
        if added:
            lines = "".join(f"{i} {name}\n" for i, name in enumerate(self._names) if name)
            write_atomically(self.path, lines.encode("utf-8"))
            self.load()

    def info(self, flags: Iterable[str], keep: str = "") -> str:
        """The ``:2,`` info letters for ``flags``.

        Uppercase letters of ``keep`` that we don't map (``P``) are kept.
        """
        letters = {c for c in keep if c.isupper() and c not in _FLAG_OF}
        for flag in flags:
            if flag in _LETTER_OF:
                letters.add(_LETTER_OF[flag])
            else:
                index = self._index(flag)
                if index is None:
                    raise KeywordLimitError(f"Keyword {flag} has no letter")  # register() first
                letters.add(KEYWORD_LETTERS[index])
        return "".join(sorted(letters))

    def flags(self, info: str) -> tuple[str, ...]:
        """The IMAP flags that info letters stand for (unknown letters are skipped)."""
        known = self._flags_of_info.get(info)
        if known is not None:
            return known
        if len(self._flags_of_info) >= _FLAGS_MEMO:
            self._flags_of_info.clear()
        out = [flag for flag in SYSTEM_FLAGS if _LETTER_OF[flag] in info]
        for c in sorted(info):
            if c in KEYWORD_LETTERS:
                name = self._names[KEYWORD_LETTERS.index(c)]
                if name is not None:
                    out.append(name)
        result = self._flags_of_info[info] = tuple(out)
        return result
