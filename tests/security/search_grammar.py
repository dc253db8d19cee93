"""SEARCH criteria for the fuzzers (RFC 3501 sections 6.4.4 and 9): every key, nested, mutated.

:func:`search_criteria` draws a whole argument list -- an optional CHARSET,
then search keys with their arguments -- with the helpers of
:class:`~tests.security.tokens.Tokens` for strings, numbers and sequence
sets, so literals, huge numbers and broken quoting reach the SEARCH parser
too.
"""

from __future__ import annotations

from tests.security.tokens import Glued, Part, Tokens

_SIMPLE = (
    *(b"ALL", b"ANSWERED", b"DELETED", b"DRAFT", b"FLAGGED", b"NEW", b"OLD", b"RECENT", b"SEEN"),
    *(b"UNANSWERED", b"UNDELETED", b"UNDRAFT", b"UNFLAGGED", b"UNSEEN", b"all", b"Seen"),
)
_STRING_KEYS = (b"BCC", b"BODY", b"CC", b"FROM", b"SUBJECT", b"TEXT", b"TO")
_DATE_KEYS = (b"BEFORE", b"ON", b"SINCE", b"SENTBEFORE", b"SENTON", b"SENTSINCE")
_DATES = (
    *(b"1-Feb-2021", b"01-Feb-2021", b'"5-Mar-2021"', b"31-Feb-2021", b"1-Foo-2021"),
    *(b"1-Jan-0000", b"1-Jan-99999", b"99-Jan-2021", b"1-feb-2021", b"2021-02-01", b"-Jan-"),
)
_CHARSETS = (b"UTF-8", b"US-ASCII", b"utf-8", b"ISO-8859-1", b'"UTF-8"', b"KOI8-R", b"\xff")


def search_criteria(t: Tokens) -> list[Part]:
    """A SEARCH command's arguments: ``[CHARSET name] key *(SP key)``."""
    r = t.rng
    parts: list[Part] = []
    if r.random() < 0.15:
        parts += [b"CHARSET", r.choice((*_CHARSETS, t.astring()))]
    for _ in range(r.randrange(0 if r.random() < 0.05 else 1, 5)):
        parts += search_key(t, 0)
    return parts


def search_key(t: Tokens, depth: int) -> list[Part]:
    """One search key with its arguments, nesting NOT / OR / parentheses up to a depth."""
    r = t.rng
    roll = r.random()
    if depth < 4 and roll < 0.15:
        inner = [p for _ in range(r.randrange(1, 4)) for p in search_key(t, depth + 1)]
        return [t.plist(inner)]
    if depth < 4 and roll < 0.25:
        return [b"NOT", *search_key(t, depth + 1)]
    if depth < 4 and roll < 0.35:
        return [b"OR", *search_key(t, depth + 1), *search_key(t, depth + 1)]
    if roll < 0.37:  # nesting far past any sane limit
        return [Glued((b"NOT " * r.choice((65, 300, 3000)), b"ALL"))]
    return _leaf(t)


def _leaf(t: Tokens) -> list[Part]:
    r = t.rng
    kind = r.randrange(9)
    if kind == 0:
        return [r.choice(_SIMPLE)]
    if kind == 1:
        return [r.choice(_STRING_KEYS), t.astring()]
    if kind == 2:
        return [r.choice(_DATE_KEYS), r.choice((*_DATES, t.atom()))]
    if kind == 3:
        return [b"HEADER", t.astring(), t.astring()]
    if kind == 4:
        return [r.choice((b"KEYWORD", b"UNKEYWORD")), t.flag()]
    if kind == 5:
        return [r.choice((b"LARGER", b"SMALLER")), t.number()]
    if kind == 6:
        return [b"UID", t.seqset()]
    if kind == 7:
        return [t.seqset()]
    return [r.choice((t.atom(), t.quoted(), b"(", b")", b"{5}", b"CHARSET"))]
