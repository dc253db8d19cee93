"""Matching the addresses a key names against the logged-in account.

One rule for both formats: the domains are equal ignoring ASCII case
(RFC 5321 section 2.4, RFC 5280 section 7.5), and so are the local parts.
RFC 5321 lets a server treat local parts case-sensitively, but this server
does not: account logins are case-insensitive (``normalize_address``
lowercases them), so ``Alice@example.org`` and ``alice@example.org`` are one
mailbox, and a certificate naming either is the account's own.  Accepting
it cannot let one account claim another's address.  Domains are compared in
the form given; an internationalized domain must appear in its ``xn--`` form
on both sides.
"""

from __future__ import annotations

import re

# An OpenPGP user ID is conventionally "Name (comment) <addr>" (RFC 9580
# section 5.11); some carry the bare address.  The expressions take a run of
# address characters and the code then looks for an "@" strictly inside it:
# "[^<>\s]+@[^<>\s]+" would backtrack quadratically over "<a@a@a@...".
_ANGLE = re.compile(r"<([^<>\s]+)>\s*$")
_BARE = re.compile(r"[^\s<>()\"]+")


def _inner_at(text: str) -> bool:
    """Whether ``text`` has an ``@`` with something before and after it."""
    return "@" in text[1:-1]


def split_address(address: str) -> tuple[str, str] | None:
    """``(local, domain)`` of ``local@domain``, or ``None`` when it is not of that shape."""
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        return None
    return local, domain


def address_matches(candidate: str, account: str) -> bool:
    """Whether the key's ``candidate`` address is the ``account`` address (rule above)."""
    mine = split_address(account)
    theirs = split_address(candidate.strip())
    if mine is None or theirs is None:
        return False
    return theirs[0].lower() == mine[0].lower() and theirs[1].lower() == mine[1].lower()


def user_id_address(user_id: str) -> str | None:
    """The email address in an OpenPGP user ID, or ``None`` when it holds none."""
    angle = _ANGLE.search(user_id)
    if angle and _inner_at(angle.group(1)):
        return angle.group(1)
    stripped = user_id.strip()
    return stripped if _BARE.fullmatch(stripped) and _inner_at(stripped) else None


def unique(addresses: list[str]) -> tuple[str, ...]:
    """``addresses`` without repeats, first occurrence kept, order preserved."""
    return tuple(dict.fromkeys(addresses))
