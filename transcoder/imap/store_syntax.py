"""STORE's flag argument, parsed by hand: ``store-att-flags`` (RFC 3501 sections 6.4.6 and 9).

Twisted's ``arg_atom`` + ``arg_flaglist`` crashed on ``STORE 2:*,2:*
FLAGS.SILENT`` (no flags: a ``TypeError`` on ``None``, answered ``NO
[SERVERBUG]`` with a traceback; found by ``benchmarks/fuzz_commands.py``),
passed 8-bit and unknown system flags on to the store (``BAD Server error``
without a response code) and parsed the message set with the quadratic
``parseIdList``.  :func:`parse_store_action` is a pure function: anything
the grammar does not allow raises :class:`~transcoder.errors.BadCommand`
(``BAD [CLIENTBUG]``); the message set goes through
:func:`~transcoder.imap.fetch_syntax.parse_sequence_set` like FETCH's.

Grammar (keywords case-insensitive)::

    store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list / (flag *(SP flag)))
    flag-list       = "(" [flag *(SP flag)] ")"
    flag            = "\\Answered" / "\\Flagged" / "\\Deleted" / "\\Seen" / "\\Draft" /
                      flag-keyword / flag-extension
    flag-keyword    = atom

A flag is checked as APPEND checks it (:func:`~.mailbox_syntax.parse_flag`):
``\\Recent`` (server-set, not a ``flag``), ``\\*`` and system flags this
server does not know are refused, system flags are canonicalised.
"""

from __future__ import annotations

from dataclasses import dataclass

from transcoder.errors import BadCommand
from transcoder.imap.mailbox_syntax import parse_flag

#: The item names, and whether each is ``.SILENT``.
_ITEMS = {b"FLAGS": False, b"FLAGS.SILENT": True}
#: The prefix of the item name, as the store's mode: add, remove; none replaces.
_MODES = {b"+": 1, b"-": -1}


@dataclass(frozen=True)
class StoreAction:
    """What one STORE does to each message it names."""

    #: 1 adds the flags, -1 removes them, 0 replaces the message's flags with them.
    mode: int
    #: ``.SILENT``: no untagged FETCH responses with the new flags.
    silent: bool
    #: The flags, canonical, without duplicates (case-insensitive), in the order given.
    flags: tuple[str, ...]


def parse_store_action(line: bytes) -> StoreAction:
    """The ``store-att-flags`` that is the whole of ``line``."""
    item, space, rest = line.partition(b" ")
    mode = _MODES.get(item[:1], 0)
    silent = _ITEMS.get((item[1:] if mode else item).upper())
    if silent is None:
        raise BadCommand("STORE expects FLAGS, +FLAGS or -FLAGS, optionally with .SILENT")
    if not space or not rest:
        raise BadCommand("STORE expects a flag list after " + item.decode("ascii", "replace"))
    if rest[:1] == b"(":
        if rest[-1:] != b")":
            raise BadCommand("Malformed flag list")
        words = rest[1:-1].split(b" ") if len(rest) > 2 else []
    else:
        words = rest.split(b" ")
    flags: dict[str, str] = {}
    for word in words:
        flag = parse_flag(word)  # an empty word (two spaces) is refused there too
        flags.setdefault(flag.lower(), flag)
    return StoreAction(mode, silent, tuple(flags.values()))
