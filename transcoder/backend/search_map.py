"""SEARCH criteria with the client's sequence numbers turned into UIDs, sans-IO (issue 11).

RFC 3501 section 7.4.1: while the backend has expunged messages the client
has not been told of yet, the client's sequence numbers are not the
backend's -- they are numbers in the snapshot the client was told.  So the
front cannot pass ``SEARCH 3:5`` on as it is.  :func:`criteria_by_uid`
rewrites the (already validated) criteria: every sequence-set search key
becomes ``UID set`` of the UIDs those numbers name in the client's snapshot
(``*`` being the snapshot's last message, section 9 ``seq-number``), and a
``*`` in a ``UID`` key becomes the snapshot's highest UID.  A set naming no
message of the snapshot becomes ``NOT ALL`` (one search key matching
nothing).  Strings go out quoted when they can be, else as literals
(section 4.3), so no octet of the client's criteria is reinterpreted.
"""

from __future__ import annotations

import re

from transcoder.backend.connection import Literal
from transcoder.backend.response_syntax import format_uid_set
from transcoder.store.search_syntax import Token, tokenize

#: Keys without arguments (RFC 3501 section 6.4.4).
_NO_ARGUMENT = frozenset(
    b"ALL ANSWERED DELETED DRAFT FLAGGED NEW OLD RECENT SEEN "
    b"UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNSEEN".split()
)
#: Keys with one argument (a string, date, number or keyword).
_ONE_ARGUMENT = frozenset(
    b"BCC BEFORE BODY CC FROM KEYWORD LARGER ON SENTBEFORE SENTON SENTSINCE SINCE "
    b"SMALLER SUBJECT TEXT TO UNKEYWORD".split()
)
#: What a quoted string may hold as it is (RFC 3501 section 9 ``QUOTED-CHAR``, 7-bit).
_QUOTABLE = re.compile(rb"[\x20-\x7e]*")


def sequence_uids(raw: bytes, uids: list[int]) -> list[int]:
    """The UIDs a sequence set (validated) names in the snapshot ``uids``, in order."""
    count = len(uids)
    chosen: set[int] = set()
    for item in raw.split(b","):
        ends = [count if part == b"*" else int(part) for part in item.split(b":")]
        low, high = min(ends[0], ends[-1]), max(ends[0], ends[-1])
        chosen.update(range(max(low, 1), min(high, count) + 1))
    return [uids[n - 1] for n in sorted(chosen)]


def _string(token: Token) -> bytes | Literal:
    value = token.value
    if _QUOTABLE.fullmatch(value):
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return Literal(value)


class _Rewriter:
    def __init__(self, tokens: list[Token], uids: list[int]) -> None:
        self.tokens = tokens
        self.uids = uids
        self.pos = 0
        self.out: list[bytes | Literal] = []

    def copy(self) -> None:
        token = self.tokens[self.pos]
        self.pos += 1
        if token.kind == "string":
            self.out.append(_string(token))
        elif token.kind in ("(", ")"):
            self.out.append(token.kind.encode("ascii"))
        else:
            self.out.append(token.value)

    def key(self) -> None:
        token = self.tokens[self.pos]
        if token.kind == "(":
            self.copy()
            while self.tokens[self.pos].kind != ")":
                self.key()
            self.copy()
            return
        name = token.value.upper()
        if name[:1].isdigit() or name[:1] == b"*":
            self.pos += 1
            found = sequence_uids(token.value, self.uids)
            self.out.append(b"UID " + format_uid_set(found) if found else b"NOT ALL")
        elif name == b"UID":
            self.copy()
            value = self.tokens[self.pos].value
            self.pos += 1
            if b"*" in value and self.uids:
                value = value.replace(b"*", b"%d" % max(self.uids))
            self.out.append(value)
        elif name == b"NOT":
            self.copy()
            self.key()
        elif name == b"OR":
            self.copy()
            self.key()
            self.key()
        elif name == b"HEADER":
            for _ in range(3):
                self.copy()
        elif name in _ONE_ARGUMENT:
            self.copy()
            self.copy()
        else:  # a key without arguments (the criteria were validated before)
            self.copy()


def criteria_by_uid(criteria: bytes, uids: list[int]) -> list[bytes | Literal]:
    """``criteria`` (validated SEARCH arguments, literals inline) for the backend's ``UID
    SEARCH``, sequence numbers read in the client's snapshot ``uids`` (module docstring)."""
    rewriter = _Rewriter(tokenize(criteria), uids)
    tokens = rewriter.tokens
    if tokens and tokens[0].kind == "word" and tokens[0].value.upper() == b"CHARSET":
        rewriter.copy()
        rewriter.copy()
    while rewriter.pos < len(tokens):
        rewriter.key()
    return rewriter.out
