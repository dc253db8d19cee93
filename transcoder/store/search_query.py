"""The SEARCH query tree (RFC 3501 section 6.4.4) and how each key matches one message.

Keys are immutable values built by :mod:`transcoder.store.search_syntax`.
:meth:`SearchKey.evaluate` is a generator: it yields while it reads a
message file (once per chunk) and returns whether the message matches, so a
driver can run a search in bounded steps.  Every key has a cost -- flags,
sizes, numbers and internal dates are free, headers need the parsed MIME
tree, bodies need the file -- and AND / OR evaluate cheaper operands first,
so most messages are decided before their file is touched.

No twisted import here.
"""

from __future__ import annotations

import email.utils
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import BinaryIO, ClassVar, Protocol

from transcoder.mime.entity import Entity
from transcoder.store.search_text import (
    ADDRESS_FIELDS,
    address_texts,
    decode_header_value,
    fold,
    scan_body,
)

#: Costs of evaluating a key: known without I/O, needs the header, needs the body.
FREE, HEADER, BODY = 0, 1, 2

Steps = Generator[None, None, bool]


class SearchableMessage(Protocol):
    """What the evaluator needs of a stored message (the store's MaildirMessage)."""

    @property
    def uid(self) -> int: ...

    @property
    def internal_date(self) -> datetime: ...

    @property
    def size(self) -> int: ...

    def open(self) -> BinaryIO: ...

    def entity(self) -> Entity: ...


@dataclass(frozen=True)
class MailboxFacts:
    """What ``*`` stands for in the searched mailbox (RFC 3501 section 9, ``seq-number``)."""

    count: int
    max_uid: int


@dataclass(frozen=True)
class Candidate:
    """One message as a search sees it: sequence number, message, case-folded flags."""

    seq: int
    message: SearchableMessage
    flags: frozenset[str]
    mailbox: MailboxFacts


@dataclass(frozen=True)
class SequenceSet:
    """A sequence-set; ``None`` stands for ``*`` (RFC 3501 section 9).

    A range covers the values between its ends in either order, and ``*``
    is resolved against the mailbox at evaluation time.
    """

    ranges: tuple[tuple[int | None, int | None], ...]

    def contains(self, value: int, star: int) -> bool:
        """Whether ``value`` lies in the set when ``*`` means ``star``."""
        for first, last in self.ranges:
            low, high = sorted((star if first is None else first, star if last is None else last))
            if low <= value <= high:
                return True
        return False


class SearchKey:
    """Base of every search key: a predicate over one :class:`Candidate`."""

    @property
    def cost(self) -> int:
        """How much I/O deciding this key takes (:data:`FREE`, :data:`HEADER`, :data:`BODY`)."""
        return FREE

    def test(self, candidate: Candidate) -> bool:
        """Decide the key at once; keys that read bodies override :meth:`evaluate` instead."""
        raise NotImplementedError

    def evaluate(self, candidate: Candidate) -> Steps:
        """Steps deciding whether ``candidate`` matches; the generator returns the answer."""
        yield from ()
        return self.test(candidate)


@dataclass(frozen=True)
class All(SearchKey):
    """ALL: every message."""

    def test(self, candidate: Candidate) -> bool:
        return True


@dataclass(frozen=True)
class Flag(SearchKey):
    """A flag is set (ANSWERED, SEEN, KEYWORD ...); ``name`` is case-folded, e.g. ``\\seen``."""

    name: str

    def test(self, candidate: Candidate) -> bool:
        return self.name in candidate.flags


@dataclass(frozen=True)
class Larger(SearchKey):
    """LARGER n: RFC822.SIZE above ``octets``."""

    octets: int

    def test(self, candidate: Candidate) -> bool:
        return candidate.message.size > self.octets


@dataclass(frozen=True)
class Smaller(SearchKey):
    """SMALLER n: RFC822.SIZE below ``octets``."""

    octets: int

    def test(self, candidate: Candidate) -> bool:
        return candidate.message.size < self.octets


@dataclass(frozen=True)
class Sequence(SearchKey):
    """A bare sequence-set: message sequence numbers."""

    numbers: SequenceSet

    def test(self, candidate: Candidate) -> bool:
        return self.numbers.contains(candidate.seq, candidate.mailbox.count)


@dataclass(frozen=True)
class Uid(SearchKey):
    """UID sequence-set: ``*`` is the highest UID in the mailbox."""

    uids: SequenceSet

    def test(self, candidate: Candidate) -> bool:
        return self.uids.contains(candidate.message.uid, candidate.mailbox.max_uid)


def _compare(day: date | None, relation: str, bound: date) -> bool:
    """``day`` before / on / since ``bound``; an unknown day matches nothing."""
    if day is None:
        return False
    if relation == "before":
        return day < bound
    if relation == "on":
        return day == bound
    return day >= bound


@dataclass(frozen=True)
class InternalDate(SearchKey):
    """BEFORE / ON / SINCE: the INTERNALDATE's date in its own zone (time and zone disregarded)."""

    relation: str
    day: date

    def test(self, candidate: Candidate) -> bool:
        return _compare(candidate.message.internal_date.date(), self.relation, self.day)


def sent_day(value: str | None) -> date | None:
    """The date of a Date: header value in its own zone (RFC 5322 section 3.3), or ``None``."""
    if not value:
        return None
    try:
        parts = email.utils.parsedate_tz(value)
        return None if parts is None else date(parts[0], parts[1], parts[2])
    except Exception:  # the stdlib parser raises assorted errors on junk
        return None


@dataclass(frozen=True)
class SentDate(SearchKey):
    """SENTBEFORE / SENTON / SENTSINCE: the Date: header's date; no valid Date matches nothing."""

    relation: str
    day: date

    @property
    def cost(self) -> int:
        return HEADER

    def test(self, candidate: Candidate) -> bool:
        return _compare(sent_day(candidate.message.entity().get("date")), self.relation, self.day)


@dataclass(frozen=True)
class Header(SearchKey):
    """FROM, TO, CC, BCC, SUBJECT, HEADER: ``needle`` in a decoded field called ``name``.

    An empty needle matches every message having the field (RFC 3501 6.4.4, HEADER).
    An address field (From, To, Cc, ...; by its key or by HEADER) also matches
    when the needle is in one of its addresses written without comments and
    folding (RFC 3501 6.4.4 defines FROM and its kin on the ENVELOPE's
    addresses): ``user@domain.org`` finds ``<user (c)@ (c) domain.org>``.
    """

    name: str
    needle: str

    @property
    def cost(self) -> int:
        return HEADER

    def test(self, candidate: Candidate) -> bool:
        needle = fold(self.needle)
        texts = searchable_texts(candidate.message.entity(), self.name)
        return any(needle in text for text in texts)


def searchable_texts(entity: Entity, name: str) -> tuple[str, ...]:
    """What a needle is looked for in, for each field called ``name``: the decoded value
    case-folded and, for an address field, each of its addresses (comments and folding removed).

    Kept on the entity (``extra``), which the store caches per message: a mailbox searched
    again and again decodes each header once (issue 10).
    """
    key = "search-texts:" + name.lower()
    cached = entity.extra.get(key)
    if isinstance(cached, tuple):
        return cached
    addresses = name.lower() in ADDRESS_FIELDS
    texts: list[str] = []
    for value in entity.get_all(name):
        texts.append(fold(decode_header_value(value)))
        if addresses:
            texts.extend(fold(text) for text in address_texts(value))
    result = tuple(texts)
    entity.extra[key] = result
    return result


def _fields_contain(entity: Entity, needle: str) -> bool:
    """Whether a decoded ``Name: value`` line of ``entity``'s header contains ``needle``."""
    for field in entity.header:
        if needle in fold(f"{field.name}: {decode_header_value(field.value)}"):
            return True
    return False


def _is_text(entity: Entity) -> bool:
    """Leaves searched as text: text/*, message/* (e.g. delivery reports), unsplit multiparts.

    RFC 3501 6.4.4 lets servers skip other media types: an image or archive
    holds no text a user could have meant.
    """
    return entity.content_type.maintype in ("text", "message", "multipart")


def _scan_entity(fp: BinaryIO, entity: Entity, needle: str) -> Steps:
    """Whether the body of ``entity``, part by part and decoded, contains ``needle``."""
    encapsulates = entity.content_type.maintype == "message"
    for child in entity.children:
        if encapsulates and _fields_contain(child, needle):
            return True
        if (yield from _scan_entity(fp, child, needle)):
            return True
    if entity.children or not _is_text(entity):
        return False
    return (
        yield from scan_body(
            fp,
            entity.body_start,
            entity.end,
            entity.get("content-transfer-encoding"),
            entity.content_type.param("charset"),
            needle,
        )
    )


def _scan_message(message: SearchableMessage, needle: str, with_header: bool) -> Steps:
    root = message.entity()
    if with_header and _fields_contain(root, needle):
        return True
    with message.open() as fp:
        return (yield from _scan_entity(fp, root, needle))


@dataclass(frozen=True)
class Body(SearchKey):
    """BODY: ``needle`` in the decoded text of the body, nested messages' headers included."""

    needle: str
    #: Whether the message's own header fields are searched too (TEXT).
    with_header: ClassVar[bool] = False

    @property
    def cost(self) -> int:
        return BODY

    def evaluate(self, candidate: Candidate) -> Steps:
        if not self.needle:
            return True
        return (yield from _scan_message(candidate.message, fold(self.needle), self.with_header))


@dataclass(frozen=True)
class Text(Body):
    """TEXT: ``needle`` in the decoded header fields or the body."""

    with_header: ClassVar[bool] = True


@dataclass(frozen=True)
class Not(SearchKey):
    """NOT key."""

    key: SearchKey

    @property
    def cost(self) -> int:
        return self.key.cost

    def evaluate(self, candidate: Candidate) -> Steps:
        return not (yield from self.key.evaluate(candidate))


@dataclass(frozen=True)
class And(SearchKey):
    """Keys that must all match: a parenthesised list, or the whole criteria."""

    keys: tuple[SearchKey, ...]

    @classmethod
    def of(cls, keys: Iterable[SearchKey]) -> SearchKey:
        """The conjunction of ``keys``: nested ANDs flattened, cheapest first, one key unwrapped."""
        flat: list[SearchKey] = []
        for key in keys:
            flat.extend(key.keys if isinstance(key, And) else (key,))
        flat.sort(key=lambda key: key.cost)
        return flat[0] if len(flat) == 1 else cls(tuple(flat))

    @property
    def cost(self) -> int:
        return max((key.cost for key in self.keys), default=FREE)

    def evaluate(self, candidate: Candidate) -> Steps:
        for key in self.keys:
            if not (yield from key.evaluate(candidate)):
                return False
        return True


@dataclass(frozen=True)
class Or(SearchKey):
    """OR key1 key2; the cheaper operand is tried first."""

    left: SearchKey
    right: SearchKey

    @property
    def cost(self) -> int:
        return max(self.left.cost, self.right.cost)

    def evaluate(self, candidate: Candidate) -> Steps:
        first, second = sorted((self.left, self.right), key=lambda key: key.cost)
        return (yield from first.evaluate(candidate)) or (yield from second.evaluate(candidate))


@dataclass(frozen=True)
class SearchQuery:
    """Parsed SEARCH criteria: the key tree and the CHARSET its strings were given in."""

    key: SearchKey
    charset: str = "US-ASCII"

    @property
    def reads_messages(self) -> bool:
        """Whether evaluating the query opens message files (headers or bodies)."""
        return self.key.cost > FREE
