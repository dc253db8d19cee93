"""The mailbox hierarchy of an account as LIST sees it (RFC 3501 section 6.3.8, RFC 3348).

:func:`scan_hierarchy` reads the Maildir++ directories once per LIST; names
that only exist as superiors of others (a ``.a.b`` directory without ``.a``,
left by another tool) are part of the hierarchy but not selectable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from twisted.mail import imap4
from zope.interface import implementer

from transcoder.store.names import DELIMITER, INBOX, name_of_dir, parents


@implementer(imap4.IMailboxInfo)
@dataclass(frozen=True)
class MailboxInfo:
    """What LIST/LSUB report of a name: its attributes (RFC 3501 section 7.2.2, RFC 3348)."""

    attributes: tuple[str, ...] = ()

    def getFlags(self) -> list[str]:
        """The mailbox attributes (``\\Noselect``, ``\\HasChildren``...), never message flags."""
        return list(self.attributes)

    def getHierarchicalDelimiter(self) -> str:
        """``/``."""
        return DELIMITER


def is_selectable(path: Path) -> bool:
    """A mailbox directory is selectable when it has ``cur/``."""
    return (path / "cur").is_dir()


def scan_hierarchy(root: Path) -> dict[str, bool]:
    """Every name in the account's hierarchy -> whether it is selectable."""
    found = {INBOX: True}
    with os.scandir(root) as entries:
        for entry in entries:
            name = name_of_dir(entry.name)
            if name is not None and entry.is_dir():
                found[name] = is_selectable(Path(entry.path))
    for name in list(found):
        for parent in parents(name):
            found.setdefault(parent, False)
    return found


def attributes(hierarchy: dict[str, bool]) -> dict[str, tuple[str, ...]]:
    """The LIST attributes of every name: ``\\Noselect``, ``\\HasChildren``/``\\HasNoChildren``."""
    with_children = {parent for name in hierarchy for parent in parents(name)}
    return {
        name: (() if selectable else ("\\Noselect",))
        + (("\\HasChildren",) if name in with_children else ("\\HasNoChildren",))
        for name, selectable in hierarchy.items()
    }


def listing_order(name: str) -> tuple[bool, str]:
    """Sort key: INBOX and its inferiors first, then by name."""
    return (name != INBOX and not name.startswith(INBOX + DELIMITER), name)
