"""SEARCH over a selected Maildir mailbox (RFC 3501 section 6.4.4).

The public surface of the search work:

* :func:`parse_search` / :func:`parse_search_arguments` turn criteria into an
  immutable :class:`SearchQuery` tree (:mod:`.search_syntax`), raising
  :class:`SearchSyntaxError` (``BAD [CLIENTBUG]``) or
  :class:`UnsupportedCharsetError` (``NO [BADCHARSET (US-ASCII UTF-8)]``);
* :class:`SearchRun` evaluates a query over a mailbox session in small steps
  (one per message, one per body chunk) so the server can interleave it with
  other connections;
* :func:`search` runs one to completion: what the store's
  ``ISearchableMailbox.search`` delegates to.

Results are message sequence numbers, as ``ISearchableMailbox`` promises;
UID SEARCH maps them to UIDs (:attr:`SearchRun.uids`).  SEARCH works on the
stored message, never a transcoded view (docs/design.md, invariant 4).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any, Protocol

from twisted.mail.imap4 import MessageSet

from transcoder.store.search_query import (
    Candidate,
    MailboxFacts,
    SearchableMessage,
    SearchKey,
    SearchQuery,
    Steps,
)
from transcoder.store.search_syntax import (
    SUPPORTED_CHARSETS,
    SearchSyntaxError,
    UnsupportedCharsetError,
    parse_search,
    parse_search_arguments,
    pending_literal,
)

__all__ = [
    "SUPPORTED_CHARSETS",
    "SearchKey",
    "SearchQuery",
    "SearchRun",
    "SearchSyntaxError",
    "SearchableMessage",
    "UnsupportedCharsetError",
    "parse_search",
    "parse_search_arguments",
    "pending_literal",
    "search",
]


_ATOM = re.compile(rb'[^\x00-\x20\x7f(){"\\]+')


class SearchableSession(Protocol):
    """What a search needs of the selected mailbox (the store's MailboxSession)."""

    def getMessageCount(self) -> int: ...

    def getUID(self, message: int) -> int: ...

    def fetch(self, messages: MessageSet, uid: bool) -> Any: ...


def message_flags(message: Any) -> frozenset[str]:
    """The message's flags as FETCH FLAGS reports them (``\\Recent`` included), case-folded.

    Flag names are case-insensitive (RFC 3501 section 9: ``flag`` and the
    system flag names are ABNF literals).
    """
    return _folded(tuple(message.getFlags()))


@functools.lru_cache(maxsize=1024)
def _folded(flags: tuple[str | bytes, ...]) -> frozenset[str]:
    """Case-folded flag names; the same few combinations recur in every mailbox."""
    return frozenset(
        (flag.decode("utf-8", "replace") if isinstance(flag, bytes) else flag).casefold()
        for flag in flags
    )


class SearchRun:
    """One evaluation of a query over a session's messages, advanced by :meth:`steps`.

    The message list and the meaning of ``*`` are captured when the run is
    created; each message's flags are read when its turn comes.  Both
    happen on the thread that owns the session; the steps in between only
    read message files.
    """

    def __init__(self, session: SearchableSession, query: SearchQuery) -> None:
        self.query = query
        count = session.getMessageCount()
        found = session.fetch(MessageSet(1, count), uid=False) if count else []
        #: ``(sequence number, message)`` pairs to evaluate, ascending.
        self.messages: list[tuple[int, SearchableMessage]] = sorted(found, key=lambda p: p[0])
        # UID "*" is the UID of the session's last message (RFC 3501 section 9, seq-number).
        self.facts = MailboxFacts(count, session.getUID(count) if count else 0)
        #: (sequence number, UID) of each matching message, ascending.
        self.matches: list[tuple[int, int]] = []

    def candidate(self, seq: int, message: SearchableMessage) -> Candidate:
        """The message as the query sees it, with its flags as of now."""
        return Candidate(seq, message, message_flags(message), self.facts)

    @property
    def sequence_numbers(self) -> list[int]:
        """Sequence numbers of the matching messages (the SEARCH response)."""
        return [seq for seq, _ in self.matches]

    @property
    def uids(self) -> list[int]:
        """UIDs of the matching messages (the UID SEARCH response)."""
        return [uid for _, uid in self.matches]

    def steps(self) -> Iterator[None]:
        """Evaluate every candidate, yielding between messages and between body chunks."""
        for seq, message in self.messages:
            yield from self.check(self.candidate(seq, message))
            yield None

    def check(self, candidate: Candidate) -> Steps:
        """Steps deciding one candidate, recording it in :attr:`matches` when it matches.

        A message whose file vanished does not match: another session may
        expunge it while this search runs; it is still in this session's view
        (RFC 3501 section 7.4.1) but has no content left to match.
        """
        try:
            matched = yield from self.query.key.evaluate(candidate)
        except FileNotFoundError:
            matched = False
        if matched:
            self.matches.append((candidate.seq, candidate.message.uid))
        return matched


def _from_twisted(query: list[Any]) -> bytes:
    """Criteria bytes from Twisted's parsed form: the nested lists stock IMAP4Server passes.

    Words that are not atoms (spaces, quotes, empty) were quoted strings.
    """
    parts = []
    for item in query:
        if isinstance(item, list):
            parts.append(b"(" + _from_twisted(item) + b")")
        elif item and _ATOM.fullmatch(item):
            parts.append(item)
        else:
            parts.append(b'"' + item.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"')
    return b" ".join(parts)


def search(
    session: SearchableSession, query: SearchQuery | bytes | list[Any], uid: bool = False
) -> list[int]:
    """Sequence numbers of the messages in ``session`` matching ``query``, ascending.

    ``query`` is a parsed :class:`SearchQuery`, raw criteria bytes
    (``[CHARSET name] keys``), or the nested lists stock Twisted passes.
    ``uid`` is accepted for ``ISearchableMailbox.search``; the caller maps
    the result to UIDs.
    """
    if isinstance(query, list):
        query = _from_twisted(query)
    if isinstance(query, bytes):
        query = parse_search_arguments(query)
    run = SearchRun(session, query)
    for _ in run.steps():
        pass
    return run.sequence_numbers
