"""One SELECT or EXAMINE of a mailbox: a client's view with its own sequence numbers.

A :class:`MailboxSession` keeps the snapshot of UIDs its client was told
(RFC 3501 section 2.3.1.2: sequence numbers are per session).  What other
sessions or processes do reaches it only through :meth:`poll`, which the
IMAP layer calls where RFC 3501 sections 5.2 and 7.4.1 allow untagged
updates.  Messages another session expunged stay in the snapshot until then
(:meth:`fetch` skips them); with ``poll(allow_expunge=False)`` they wait for
a later poll.

Keywords (RFC 3501 section 7.2.6): a session remembers the keywords its
client was told of (SELECT's FLAGS).  A keyword new to the mailbox --
through STORE, APPEND or COPY in any session -- is announced to each client
before flags naming it reach that client: by :meth:`poll`'s update, or, when
flags are handed out between polls (STORE's results, a FETCH's messages), at
once through the listeners' :class:`~transcoder.store.interfaces.IKeywordListener`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.mail import imap4
from zope.interface import implementer

from transcoder.errors import BadCommand, MailboxReadOnly, MessageNotFound
from transcoder.store.flags import RECENT, SYSTEM_FLAGS, apply_mode, parse_flags
from transcoder.store.interfaces import IKeywordListener, MailboxUpdates
from transcoder.store.mailbox import MailboxState
from transcoder.store.message import MaildirMessage
from transcoder.store.names import DELIMITER

if TYPE_CHECKING:
    from transcoder.store.account import MaildirAccount


def _ranges(messages: imap4.MessageSet, last: int) -> list[tuple[int, int]]:
    """The inclusive ranges of ``messages`` with ``*`` resolved to ``last``.

    ``n:*`` with ``n > last`` is ``last:n`` (RFC 3501 section 6.4.8 and 9,
    ``seq-range``: the order of the two ends does not matter).
    """
    out = []
    for low, high in messages.ranges:
        low = last if low is None else int(low)
        high = last if high is None else int(high)
        out.append((min(low, high), max(low, high)))
    return out


def status_items(mailbox: Any, names: Iterable[str | bytes]) -> dict[str, int]:
    """STATUS items of a selected ``mailbox`` (RFC 3501 section 6.3.10) from its counters.

    ``mailbox`` has Twisted's IMailboxInfo counters (``getMessageCount`` ...);
    an unknown item is a BadCommand.  Shared by the Maildir and backend sessions.
    """
    values = {
        "MESSAGES": mailbox.getMessageCount,
        "RECENT": mailbox.getRecentCount,
        "UIDNEXT": mailbox.getUIDNext,
        "UIDVALIDITY": mailbox.getUIDValidity,
        "UNSEEN": mailbox.getUnseenCount,
    }
    out = {}
    for raw in names:
        item = (raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw).upper()
        if item not in values:
            raise BadCommand(f"Unknown STATUS item {item}")
        out[item] = values[item]()
    return out


@implementer(
    imap4.IMailbox, imap4.IMessageCopier, imap4.ICloseableMailbox, imap4.ISearchableMailbox
)
class MailboxSession:
    """A selected mailbox as one client sees it (see the module docstring)."""

    def __init__(self, state: MailboxState, account: MaildirAccount, rw: bool = True) -> None:
        self.state = state
        self.account = account
        self.rw = bool(rw)
        self._id = state.new_session_id()
        self._listeners: list[Any] = []
        self._destroyed = False
        state.refresh()
        self._uids: list[int] = list(state.uids)
        self._seen_upto = self._uids[-1] if self._uids else 0
        self._flag_mark = state.modseq
        self._expunge_mark = state.expunge_count
        self._pending: set[int] = set()
        self._recent = self._claim(self._uids)
        self._told_keywords = tuple(state.keywords.names())
        self._told_folded = {k.lower() for k in self._told_keywords}

    # -- identity --------------------------------------------------------------

    @property
    def name(self) -> str:
        """The mailbox's current name (follows a RENAME)."""
        return self.state.name

    @property
    def uids(self) -> Sequence[int]:
        """The UIDs of this session's snapshot, in sequence-number order."""
        return tuple(self._uids)

    def _claim(self, uids: list[int]) -> set[int]:
        # RFC 3501 2.3.2 / 6.3.2: \Recent belongs to the first session told of a
        # message; EXAMINE and STATUS must not take it away from others.
        if self.rw:
            return self.state.claim_recent(uids)
        return {uid for uid in uids if uid > self.state.recent_upto}

    # -- IMailboxInfo / IMailbox queries --------------------------------------

    def getFlags(self) -> list[str]:
        """The flags messages may carry here: system flags and the keywords in use."""
        flags = [*SYSTEM_FLAGS, *self.state.keywords.names()]
        return [*flags, "\\Noselect"] if self._destroyed else flags

    def permanent_flags(self) -> list[str]:
        """PERMANENTFLAGS (RFC 3501 section 7.1).

        None when read-only; ``\\*`` (new keywords allowed) while keywords fit.
        """
        if not self.rw:
            return []
        flags = [*SYSTEM_FLAGS, *self.state.keywords.names()]
        return [*flags, "\\*"] if self.state.keywords.has_room() else flags

    def getHierarchicalDelimiter(self) -> str:
        """``/``."""
        return DELIMITER

    def getUIDValidity(self) -> int:
        """UIDVALIDITY (RFC 3501 section 2.3.1.1)."""
        return self.state.validity

    def getUIDNext(self) -> int:
        """The UID the next message will get."""
        return self.state.next_uid

    def getUID(self, message: int) -> int:
        """The UID of sequence number ``message``."""
        if not 0 < message <= len(self._uids):
            raise MessageNotFound(f"No message {message}")
        return self._uids[message - 1]

    def getMessageCount(self) -> int:
        """EXISTS: the messages in this session's snapshot."""
        return len(self._uids)

    def getRecentCount(self) -> int:
        """RECENT: snapshot messages that are \\Recent for this session."""
        return len(self._recent)

    def _is_seen(self, uid: int) -> bool:
        return "\\Seen" in self.state.flags_of(uid)

    def getUnseenCount(self) -> int:
        """Messages without \\Seen."""
        return sum(1 for uid in self._uids if uid in self.state.records and not self._is_seen(uid))

    def first_unseen(self) -> int | None:
        """The sequence number of the first message without \\Seen (SELECT's UNSEEN), or None."""
        for seq, uid in enumerate(self._uids, 1):
            if uid in self.state.records and not self._is_seen(uid):
                return seq
        return None

    def isWriteable(self) -> bool:
        """True for SELECT, False for EXAMINE."""
        return self.rw

    def requestStatus(self, names: Iterable[str | bytes]) -> dict[str, int]:
        """STATUS items (RFC 3501 section 6.3.10); BadCommand for an unknown one."""
        return status_items(self, names)

    # -- listeners, lifecycle ----------------------------------------------------

    def addListener(self, listener: Any) -> None:
        """Remember ``listener``; changes are reported through :meth:`poll`, not callbacks."""
        self._listeners.append(listener)

    def removeListener(self, listener: Any) -> None:
        """Forget ``listener`` (ValueError if it was not added)."""
        self._listeners.remove(listener)

    def destroy(self) -> None:
        """The mailbox is about to be deleted: it becomes \\Noselect for this session."""
        self._destroyed = True

    def close(self) -> None:
        """End the session (CLOSE, UNSELECT, SELECT of another mailbox, logout).

        What the uid list lacks (\\Recent claims, expunged entries) is
        written now, so nothing is pending on a clock once the sessions are gone.
        """
        self._listeners.clear()
        self.state.save_list()

    # -- resolving message sets ---------------------------------------------------

    def _resolve(self, messages: imap4.MessageSet, uid: bool) -> list[tuple[int, int]]:
        """``(seq, uid)`` of the snapshot messages ``messages`` names, ascending."""
        if not self._uids:
            return []
        ranges = messages.ranges
        if len(ranges) == 1 and not uid:  # the usual "n" or "n:m": no set, no sort
            ((low, high),) = _ranges(messages, len(self._uids))
            stop = min(high, len(self._uids))
            return [(seq, self._uids[seq - 1]) for seq in range(max(low, 1), stop + 1)]
        found: set[int] = set()
        if uid:
            for low, high in _ranges(messages, self._uids[-1]):
                start = bisect.bisect_left(self._uids, low)
                stop = bisect.bisect_right(self._uids, high)
                found.update(range(start + 1, stop + 1))
        else:
            count = len(self._uids)
            for low, high in _ranges(messages, count):
                found.update(range(max(low, 1), min(high, count) + 1))
        return [(seq, self._uids[seq - 1]) for seq in sorted(found)]

    def _flags_for(self, uid: int) -> tuple[str, ...]:
        flags = self.state.flags_of(uid)
        return (*flags, RECENT) if uid in self._recent else flags

    def fetch(self, messages: imap4.MessageSet, uid: bool) -> list[tuple[int, MaildirMessage]]:
        """``(seq, message)`` for ``messages``; messages expunged elsewhere are skipped."""
        out = []
        for seq, u in self._resolve(messages, uid):
            rec = self.state.records.get(u)
            if rec is not None and u not in self._pending:
                message = MaildirMessage(self.state, rec, u in self._recent, self._before_use)
                out.append((seq, message))
        return out

    # -- keywords the client was told of (RFC 3501 section 7.2.6) -----------------

    def _keyword_news(self) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """``(FLAGS, PERMANENTFLAGS)`` if the keywords changed since the client was told."""
        keywords = tuple(self.state.keywords.names())
        if keywords == self._told_keywords:
            return None
        self._told_keywords = keywords
        self._told_folded = {k.lower() for k in keywords}
        return tuple(self.getFlags()), tuple(self.permanent_flags())

    def _announce_keywords(self) -> None:
        """Tell the listeners of keywords their client has not heard of, now."""
        news = self._keyword_news()
        if news is None:
            return
        for listener in list(self._listeners):
            announcer: Any = IKeywordListener(listener, None)
            if announcer is not None:
                announcer.keywords_changed(*news)

    def _before_use(self, flags: Iterable[str]) -> None:
        """Flags are about to reach the client: announce any keyword it does not know."""
        if any(f[:1] != "\\" and f.lower() not in self._told_folded for f in flags):
            self._announce_keywords()

    # -- changes ------------------------------------------------------------------

    def _check_writable(self) -> None:
        if not self.rw:
            raise MailboxReadOnly("Mailbox is read-only")

    def store(
        self,
        messages: imap4.MessageSet,
        flags: Iterable[str | bytes],
        mode: int,
        uid: bool,
        sync: bool = True,
    ) -> dict[int, list[str]]:
        """STORE (RFC 3501 section 6.4.6): mode 1 adds, -1 removes, 0 replaces.

        Returns the new flags of each message by sequence number, durable
        (one fsync of ``cur/``) unless ``sync`` is false -- then the caller
        must wait for :meth:`flags_durable` before answering OK.
        """
        self._check_writable()
        change = parse_flags(flags)
        if mode >= 0:
            self.state.register_keywords(change)
        self.state.refresh()
        result = {}
        try:
            for seq, u in self._resolve(messages, uid):
                if u in self._pending:
                    continue
                new = self.state.set_flags(u, lambda cur: apply_mode(cur, change, mode), self._id)
                if new is not None:
                    result[seq] = list(self._flags_for(u))
        finally:
            if sync:
                self.state.sync_flags()  # one fsync for the command, before its OK
        # Before the caller sends the untagged FETCH responses naming them.
        self._announce_keywords()
        return result

    def store_durably(
        self, messages: imap4.MessageSet, flags: Iterable[str | bytes], mode: int, uid: bool
    ) -> defer.Deferred[dict[int, list[str]]]:
        """STORE whose result arrives once its renames are durable.

        The fsync runs in a worker thread and is shared with every other
        command on this mailbox asking meanwhile (:mod:`.group_sync`), so a
        busy mailbox pays one journal commit for many STOREs.
        """
        try:
            result = self.store(messages, flags, mode, uid, sync=False)
        except BaseException:
            self.state.sync_flags()  # what was renamed before the failure
            raise
        d = self.flags_durable()
        return d.addCallback(lambda _: result)

    def flags_durable(self) -> defer.Deferred[None]:
        """Fires once every flag change made on this mailbox so far is durable."""
        return self.state.flags_durable(self.account.store.run_blocking)

    def addMessage(
        self, message: IO[bytes], flags: Iterable[str | bytes] = (), date: Any = None
    ) -> defer.Deferred[int]:
        """APPEND here; fires with the new UID (the message shows up at the next poll)."""
        if not self.rw:
            return defer.fail(MailboxReadOnly("Mailbox is read-only"))
        return self.account.append_to(self.state, message, flags, date)

    def copy(self, message: Any) -> defer.Deferred[int]:
        """COPY ``message`` here (IMessageCopier), flags and date kept; fires with its UID."""
        if not self.rw:
            return defer.fail(MailboxReadOnly("Mailbox is read-only"))
        return self.account.copy_to(self.state, message)

    def expunge(self) -> list[int]:
        """Remove every \\Deleted message; the sequence numbers to report, descending."""
        return self._expunge(None)

    def uid_expunge(self, uids: Iterable[int]) -> list[int]:
        """UID EXPUNGE (RFC 4315 section 2.1): remove only the \\Deleted messages among ``uids``."""
        return self._expunge(set(uids))

    def expunge_durably(self, uids: Iterable[int] | None = None) -> defer.Deferred[list[int]]:
        """EXPUNGE (or UID EXPUNGE of ``uids``) answered once its unlinks are durable.

        As :meth:`store_durably`: the fsync of ``cur/`` runs in a worker
        thread, shared with the STOREs and EXPUNGEs of every session meanwhile.
        """
        try:
            seqs = self._expunge(None if uids is None else set(uids), sync=False)
        except BaseException:
            self.state.sync_flags()
            raise
        return self.flags_durable().addCallback(lambda _: seqs)

    def _expunge(self, only: set[int] | None, sync: bool = True) -> list[int]:
        self._check_writable()
        self.state.refresh()
        doomed = [
            u
            for u in self._uids
            if (only is None or u in only)
            and u not in self._pending
            and "\\Deleted" in self.state.flags_of(u)
        ]
        if doomed:
            self.state.remove(doomed, sync=sync)
        return self._commit_expunges()

    def _note_expunges(self) -> None:
        if self.state.expunge_count != self._expunge_mark:
            self._expunge_mark = self.state.expunge_count
            records = self.state.records
            self._pending.update(u for u in self._uids if u not in records)

    def _commit_expunges(self) -> list[int]:
        """Drop vanished messages from the snapshot; their sequence numbers, descending."""
        self._note_expunges()
        seqs = []
        for uid in sorted(self._pending, reverse=True):
            i = bisect.bisect_left(self._uids, uid)
            if i < len(self._uids) and self._uids[i] == uid:
                del self._uids[i]
                seqs.append(i + 1)
        self._recent -= self._pending
        self._pending.clear()
        return seqs

    def poll(self, allow_expunge: bool = True) -> MailboxUpdates:
        """What changed since this session was last told, now committed to its snapshot."""
        self.state.refresh()
        count, recent = len(self._uids), len(self._recent)
        if allow_expunge:
            expunged = tuple(self._commit_expunges())
        else:
            self._note_expunges()  # RFC 3501 7.4.1: reported at a later poll
            expunged = ()
        told_upto = self._seen_upto
        new = self.state.uids[bisect.bisect_right(self.state.uids, told_upto) :]
        if new:
            self._uids.extend(new)
            self._seen_upto = new[-1]
            self._recent |= self._claim(new)
        flags = self._flag_changes(told_upto)
        return MailboxUpdates(
            expunged=expunged,
            exists=len(self._uids) if new or len(self._uids) != count else None,
            recent=len(self._recent) if len(self._recent) != recent else None,
            flags=flags,
            mailbox_flags=self._keyword_news(),
        )

    def _flag_changes(self, told_upto: int) -> tuple[tuple[int, int, tuple[str, ...]], ...]:
        """Flag changes by others since the last poll, ``(seq, uid, flags)`` by sequence number.

        Sequence numbers are those after this poll's expunges and new messages.
        """
        out = []
        for uid, (modseq, changer) in reversed(self.state.flag_log.items()):
            if modseq <= self._flag_mark:
                break
            if changer == self._id or uid > told_upto or uid in self._pending:
                continue
            i = bisect.bisect_left(self._uids, uid)
            if i < len(self._uids) and self._uids[i] == uid:
                out.append((i + 1, uid, self._flags_for(uid)))
        self._flag_mark = self.state.modseq
        return tuple(sorted(out))

    # -- SEARCH -------------------------------------------------------------------

    def search(self, query: Any, uid: bool) -> Any:
        """SEARCH, delegated to :func:`transcoder.store.search.search`."""
        from transcoder.store.search import search

        return search(self, query, uid)
