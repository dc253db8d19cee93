"""Parsed MIME trees of stored messages, shared by every mailbox of a store.

A Maildir message file never changes once it has a UID, so its parsed
structure (:class:`~transcoder.mime.entity.Entity`: header fields and part
offsets, no body octets) can be kept for as long as the message lives.
SEARCH on a header (FROM, SUBJECT, ...) reads every message of the mailbox
and FETCH of BODYSTRUCTURE, ENVELOPE or a header section reads the same
structure again: parsing a 4 KB message costs about 0.2 ms (its body is
scanned for line counts), a cache hit nothing.

The cache is bounded by an estimate of the memory its trees hold (header
octets and a fixed cost per part), not by a count: one message with 10,000
parts or a 1 MB header weighs as much as thousands of ordinary ones.  The
least recently used trees go first.  Only the reactor thread uses it.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transcoder.mime.entity import Entity

#: Default budget, in estimated octets of memory (about 8,000 small messages).
DEFAULT_BUDGET = 16 << 20
#: Estimated cost of one part besides its header octets (objects, offsets).
PART_COST = 1024


def weight(entity: Entity) -> int:
    """Estimated memory held by ``entity`` and its parts."""
    total, stack = 0, [entity]
    while stack:
        node = stack.pop()
        total += PART_COST + 2 * node.header_size
        stack.extend(node.children)
    return total


class EntityCache:
    """Entities by (mailbox, UID), least recently used dropped past ``budget``."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[tuple[int, int], tuple[Entity, int]] = OrderedDict()
        self._owners = itertools.count(1)

    def new_owner(self) -> int:
        """A key prefix for one mailbox's messages."""
        return next(self._owners)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, owner: int, uid: int) -> Entity | None:
        """The cached entity of message ``uid`` of ``owner``, or None."""
        item = self._items.get((owner, uid))
        if item is None:
            return None
        self._items.move_to_end((owner, uid))
        return item[0]

    def put(self, owner: int, uid: int, entity: Entity) -> None:
        """Keep ``entity``; drop the least recently used ones past the budget."""
        self.drop(owner, uid)
        cost = weight(entity)
        if cost > self.budget:
            return
        self._items[(owner, uid)] = (entity, cost)
        self.used += cost
        while self.used > self.budget:
            _, (_, dropped) = self._items.popitem(last=False)
            self.used -= dropped

    def drop(self, owner: int, uid: int) -> None:
        """Forget message ``uid`` of ``owner`` (expunged)."""
        item = self._items.pop((owner, uid), None)
        if item is not None:
            self.used -= item[1]
