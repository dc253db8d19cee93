"""A mailbox selected on the backend, as the IMAP layer's session object (issue 11).

(Its message octets are loaded by :mod:`.octets`; COPY, MOVE and SEARCH are
handed to the backend by :mod:`.relay`.)

:class:`BackendMailbox` offers what :class:`transcoder.store.session.MailboxSession`
offers the IMAP layer -- counts, UIDVALIDITY/UIDNEXT, flags, ``fetch``,
``store``, ``expunge``, ``poll`` -- over the client session's backend
connection, on which it is the selected mailbox.

Two pictures of the mailbox are kept:

* the *mirror*: the backend's sequence of UIDs and their flags, kept in step
  with every untagged ``EXISTS``, ``EXPUNGE`` and ``FETCH`` the backend sends,
  whenever it sends them (the connection's listener).  New messages
  (``EXISTS`` growing) get their UIDs and flags by a ``UID FETCH n:* (UID
  FLAGS)`` issued at once;
* the *snapshot*: the UIDs the front's client was told of, in its sequence
  numbers.  It changes only in :meth:`BackendMailbox.poll`, which the IMAP
  layer calls where RFC 3501 sections 5.2 and 7.4.1 allow untagged updates
  (never an EXPUNGE during FETCH, STORE or SEARCH), exactly as for the
  built-in store: the backend's changes reach the client as the same
  ``MailboxUpdates``.

A message the backend expunged stays in the snapshot until reported (FETCH
leaves it out).  Flags that change on the backend -- another client, a
sieve script -- are reported as ``FETCH (UID n FLAGS ...)`` at the next poll.

The backend only tells of changes in answer to a command -- or while it
IDLEs: while the front's client IDLEs, the backend connection IDLEs too
between commands (:meth:`BackendMailbox.start_idle`) and its news are
reported at the front's next IDLE poll.  Otherwise a poll (every command's
end) starts a ``NOOP`` when the connection was quiet for
:data:`NOOP_INTERVAL` seconds; what it brings is reported at the next poll.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail import imap4
from zope.interface import implementer

from transcoder.backend.connection import BackendProtocol, CommandResult
from transcoder.backend.fetch_data import fetch_items, flag_list, parse_internal_date
from transcoder.backend.message import BackendMessage
from transcoder.backend.octets import OctetsMixin
from transcoder.backend.relay import NotCarried, RelayMixin
from transcoder.backend.response_syntax import (
    DataResponse,
    Response,
    StatusResponse,
    format_uid_set,
)
from transcoder.errors import BadCommand, MailboxReadOnly, MessageNotFound
from transcoder.store.interfaces import MailboxUpdates
from transcoder.store.session import status_items

if TYPE_CHECKING:
    from transcoder.backend.account import BackendAccount

log = Logger()

#: A poll starts a backend NOOP when the connection was quiet this long (seconds).
NOOP_INTERVAL = 1.0
RECENT = "\\Recent"


def _ranges(messages: imap4.MessageSet, last: int) -> list[tuple[int, int]]:
    """Inclusive ranges with ``*`` as ``last`` (either order, RFC 3501 section 9 seq-range)."""
    out = []
    for low, high in messages.ranges:
        low = last if low is None else int(low)
        high = last if high is None else int(high)
        out.append((min(low, high), max(low, high)))
    return out


@implementer(imap4.IMailbox, imap4.ICloseableMailbox)
class BackendMailbox(OctetsMixin, RelayMixin):
    """The selected backend mailbox as one client sees it (see the module docstring)."""

    def __init__(
        self, account: BackendAccount, name: str, rw: bool, clock: Any, selected: CommandResult
    ) -> None:
        self.account = account
        self.name = name
        self.rw = rw
        self.clock = clock
        self.connection: BackendProtocol = account.connection
        self._listeners: list[Any] = []
        self._closed = False
        self._flags: dict[int, tuple[str, ...]] = {}
        self._mirror: list[int] = []
        self._expunged: set[int] = set()
        self._flag_news: set[int] = set()
        self._exists = 0
        self._recent = 0
        self._recent_told = 0
        self._validity = 0
        self._next_uid = 0
        self._unseen: int | None = None
        self._mailbox_flags: tuple[str, ...] = ()
        self._permanent: tuple[str, ...] = ()
        self._told_mailbox_flags: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._last_activity = clock.seconds()
        self._noop: defer.Deferred[Any] | None = None
        self._catching_up: defer.Deferred[Any] | None = None
        for response in selected.untagged:
            self._take_select_response(response)
        self._told_mailbox_flags = (tuple(self.getFlags()), tuple(self.permanent_flags()))
        self._uids: list[int] = []
        self._readahead: list[BackendMessage] = []
        self._readahead_index: dict[int, int] = {}
        #: RFC822.SIZE and INTERNALDATE of each UID fetched so far.  Both are fixed for
        #: as long as the UID lives (RFC 3501 section 2.3.1.1), so a FETCH of messages
        #: already seen -- a client re-reading cached views -- asks the backend nothing.
        self._facts: dict[int, tuple[int, datetime]] = {}

    # -- opening -------------------------------------------------------------------

    def _take_select_response(self, response: Response) -> None:
        if isinstance(response, StatusResponse):
            name, argument = response.code_name, response.code_argument
            if name == b"UIDVALIDITY" and argument.isdigit():
                self._validity = int(argument)
            elif name == b"UIDNEXT" and argument.isdigit():
                self._next_uid = int(argument)
            elif name == b"UNSEEN" and argument.isdigit():
                self._unseen = int(argument)
            elif name == b"PERMANENTFLAGS":
                self._permanent = tuple(
                    f.decode("utf-8", "replace") for f in argument.strip(b"()").split()
                )
        elif isinstance(response, DataResponse):
            if response.name == b"FLAGS":
                self._mailbox_flags = flag_list(response.tokens[1])
            elif response.name == b"EXISTS" and response.number is not None:
                self._exists = response.number
            elif response.name == b"RECENT" and response.number is not None:
                self._recent = self._recent_told = response.number

    async def load_snapshot(self) -> None:
        """The UIDs and flags of every message (``UID FETCH 1:* (UID FLAGS)``); then listen."""
        self.connection.listener = self._backend_said
        if self._exists:
            result = await self.connection.command(b"FETCH 1:* (UID FLAGS)")
            for response in result.data(b"FETCH"):
                self._take_fetch(response, initial=True)
        self._uids = list(self._mirror)

    # -- what the backend says ---------------------------------------------------------

    def _backend_said(self, response: Response) -> None:
        """The connection's listener: keep the mirror in step (see the module docstring)."""
        self._last_activity = self.clock.seconds()
        if isinstance(response, StatusResponse):
            if response.code_name == b"PERMANENTFLAGS":
                self._take_select_response(response)
            return
        if not isinstance(response, DataResponse):
            return
        name, number = response.name, response.number
        if name == b"EXPUNGE" and number is not None and 0 < number <= len(self._mirror):
            uid = self._mirror.pop(number - 1)
            self._flags.pop(uid, None)
            self._facts.pop(uid, None)
            self._expunged.add(uid)
            self._exists = max(0, self._exists - 1)
        elif name == b"EXISTS" and number is not None:
            grew = number > self._exists
            self._exists = number
            if grew:
                self._catch_up()
        elif name == b"RECENT" and number is not None:
            self._recent = number
        elif name == b"FETCH":
            self._take_fetch(response)
        elif name == b"FLAGS" and len(response.tokens) > 1:
            self._mailbox_flags = flag_list(response.tokens[1])

    def _take_fetch(self, response: DataResponse, initial: bool = False) -> None:
        items = fetch_items(response)
        number = response.number or 0
        uid_token = items.get(b"UID")
        if isinstance(uid_token, bytes) and uid_token.isdigit():
            uid = int(uid_token)
        elif 0 < number <= len(self._mirror):
            uid = self._mirror[number - 1]
        else:
            return
        if uid not in self._flags and uid not in self._expunged:
            if self._mirror and uid < self._mirror[-1]:
                bisect.insort(self._mirror, uid)
            elif not self._mirror or uid > self._mirror[-1]:
                self._mirror.append(uid)
            self._next_uid = max(self._next_uid, uid + 1)
            self._flags[uid] = flag_list(items.get(b"FLAGS"))
            return
        if b"FLAGS" in items and uid in self._flags:
            flags = flag_list(items[b"FLAGS"])
            if flags != self._flags[uid] and not initial:
                self._flag_news.add(uid)
            self._flags[uid] = flags

    def _catch_up(self) -> None:
        """EXISTS grew: learn the new messages' UIDs and flags."""
        if self._catching_up is not None:
            return
        after = (self._mirror[-1] if self._mirror else 0) + 1
        d = self.connection.command(b"UID FETCH %d:* (UID FLAGS)" % after)

        def done(result: Any) -> None:
            self._catching_up = None
            if len(self._mirror) < self._exists and not self._closed:
                self._catch_up()  # more arrived meanwhile

        d.addCallbacks(done, lambda f: setattr(self, "_catching_up", None))
        self._catching_up = d

    def settled(self) -> defer.Deferred[Any]:
        """Fires once the new messages announced so far have their UIDs."""
        if self._catching_up is None:
            return defer.succeed(None)
        d: defer.Deferred[Any] = defer.Deferred()
        self._catching_up.addBoth(lambda result: (d.callback(None), result)[1])
        return d

    # -- IMailboxInfo / IMailbox queries ------------------------------------------------

    def getFlags(self) -> list[str]:
        """The flags the backend announced for this mailbox."""
        return list(self._mailbox_flags)

    def permanent_flags(self) -> list[str]:
        """PERMANENTFLAGS as the backend announced them (none when read-only)."""
        return list(self._permanent) if self.rw else []

    def getHierarchicalDelimiter(self) -> str:
        """``/`` (checked at login, :mod:`.auth`)."""
        return "/"

    def getUIDValidity(self) -> int:
        """The backend's UIDVALIDITY (the front adds the view epoch)."""
        return self._validity

    def getUIDNext(self) -> int:
        """The backend's UIDNEXT."""
        return self._next_uid

    def getUID(self, message: int) -> int:
        """The UID of sequence number ``message``."""
        if not 0 < message <= len(self._uids):
            raise MessageNotFound(f"No message {message}")
        return self._uids[message - 1]

    @property
    def uids(self) -> Sequence[int]:
        """The UIDs of the client's snapshot, in sequence-number order."""
        return tuple(self._uids)

    def getMessageCount(self) -> int:
        """EXISTS: the messages in the client's snapshot."""
        return len(self._uids)

    def getRecentCount(self) -> int:
        """RECENT as the backend last said."""
        return self._recent_told

    def getUnseenCount(self) -> int:
        """Snapshot messages without ``\\Seen``."""
        return sum(1 for uid in self._uids if "\\Seen" not in self._flags.get(uid, ("\\Seen",)))

    def first_unseen(self) -> int | None:
        """The sequence number of the first message without ``\\Seen``, or None."""
        for seq, uid in enumerate(self._uids, 1):
            if uid in self._flags and "\\Seen" not in self._flags[uid]:
                return seq
        return None

    def isWriteable(self) -> bool:
        """True for SELECT, False for EXAMINE."""
        return self.rw

    def requestStatus(self, names: Iterable[str | bytes]) -> dict[str, int]:
        """STATUS items from the selection's picture (the account asks the backend otherwise)."""
        return status_items(self, names)

    def flags_of(self, uid: int, default: tuple[str, ...]) -> tuple[str, ...]:
        """The current flags of ``uid`` (for :class:`BackendMessage`)."""
        return self._flags.get(uid, default)

    # -- listeners, lifecycle --------------------------------------------------------------

    def addListener(self, listener: Any) -> None:
        """Remember ``listener``; changes are reported through :meth:`poll`."""
        self._listeners.append(listener)

    def removeListener(self, listener: Any) -> None:
        """Forget ``listener`` (ValueError if it was not added)."""
        self._listeners.remove(listener)

    def destroy(self) -> None:
        """The mailbox is being deleted (not reached: DELETE of the selected one is refused)."""

    def close(self) -> None:
        """The client left the mailbox: stop following the backend's updates."""
        self._closed = True
        self._listeners.clear()
        if self.connection.listener == self._backend_said:
            self.connection.listener = None
            self.connection.set_idle(False)

    def start_idle(self) -> None:
        """The client IDLEs: so does the backend connection between commands (RFC 2177).

        Its EXISTS / EXPUNGE / FETCH arrive as they happen and are reported at
        the front's next IDLE poll; no NOOP is needed meanwhile.
        """
        if not self._closed:
            self.connection.set_idle(True)

    def stop_idle(self) -> None:
        """The client's IDLE ended (DONE)."""
        self.connection.set_idle(False)

    # -- resolving message sets ---------------------------------------------------------

    def _resolve(self, messages: imap4.MessageSet, uid: bool) -> list[tuple[int, int]]:
        if not self._uids:
            return []
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

    # -- FETCH ------------------------------------------------------------------------------

    def resolve_present(self, messages: imap4.MessageSet, uid: bool) -> list[tuple[int, int]]:
        """``(seq, uid)`` of the snapshot's messages named, less those the backend expunged."""
        return [(s, u) for s, u in self._resolve(messages, uid) if u not in self._expunged]

    def uid_at(self, number: int) -> int | None:
        """The UID of the backend's sequence number ``number`` (the mirror's), or None."""
        return self._mirror[number - 1] if 0 < number <= len(self._mirror) else None

    def relayed_flags(self, uid: int, flags: tuple[str, ...]) -> None:
        """A relayed FETCH response told the client ``uid``'s flags (:mod:`.fetch_relay`)."""
        if uid in self._flags:
            self._flags[uid] = flags
            self._flag_news.discard(uid)

    def fetch(
        self, messages: imap4.MessageSet, uid: bool
    ) -> defer.Deferred[list[tuple[int, BackendMessage]]]:
        """``(seq, message)`` for ``messages``; ones the backend expunged are left out.

        Only the UIDs whose size and date are not known yet are asked of the backend
        (one ``UID FETCH``); a message expunged meanwhile by another session is then
        found gone when its octets are loaded (``MessageExpunged``), as RFC 2180
        section 4.1 allows."""
        wanted = self.resolve_present(messages, uid)
        if not wanted:
            return defer.succeed([])
        missing = [u for _, u in wanted if u not in self._facts]
        if not missing:
            return defer.succeed(self._messages(None, wanted))
        d = self.connection.command(
            b"UID FETCH " + format_uid_set(missing) + b" (UID FLAGS RFC822.SIZE INTERNALDATE)"
        )
        return d.addCallback(self._messages, wanted)

    def _messages(
        self, result: CommandResult | None, wanted: list[tuple[int, int]]
    ) -> list[tuple[int, BackendMessage]]:
        answered: dict[int, tuple[str, ...]] = {}
        for response in result.data(b"FETCH") if result is not None else ():
            items = fetch_items(response)
            token = items.get(b"UID")
            size_token = items.get(b"RFC822.SIZE")
            if isinstance(token, bytes) and token.isdigit() and isinstance(size_token, bytes):
                when = parse_internal_date(items.get(b"INTERNALDATE"))
                self._facts[int(token)] = (int(size_token), when)
                answered[int(token)] = flag_list(items.get(b"FLAGS"))
        out = []
        for seq, uid in wanted:
            fact = self._facts.get(uid)
            if fact is None or uid in self._expunged:
                continue
            flags = answered.get(uid) or self._flags.get(uid, ())
            out.append((seq, BackendMessage(self, uid, fact[0], fact[1], flags)))
        self._readahead = [message for _, message in out]
        self._readahead_index = {m.uid: i for i, m in enumerate(self._readahead)}
        return out

    # -- changes ------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if not self.rw:
            raise MailboxReadOnly("Mailbox is read-only")

    def store(
        self, messages: imap4.MessageSet, flags: Iterable[str | bytes], mode: int, uid: bool
    ) -> defer.Deferred[dict[int, list[str]]]:
        """STORE through the backend (``UID STORE``); the new flags by sequence number."""
        self._check_writable()
        wanted = [(s, u) for s, u in self._resolve(messages, uid) if u not in self._expunged]
        if not wanted:
            return defer.succeed({})
        names = [f if isinstance(f, bytes) else f.encode("utf-8") for f in flags]
        if any(not n or b" " in n or b"(" in n or b")" in n for n in names):
            raise BadCommand("Invalid flag")
        verb = {1: b"+FLAGS", -1: b"-FLAGS"}.get(mode, b"FLAGS")
        uid_set = format_uid_set([u for _, u in wanted])
        line = b"UID STORE " + uid_set + b" " + verb + b" (" + b" ".join(names) + b")"
        return self.connection.command(line).addCallback(self._stored, wanted)

    def _stored(self, result: CommandResult, wanted: list[tuple[int, int]]) -> dict[int, list[str]]:
        out = {}
        for seq, uid in wanted:
            if uid in self._flags:
                self._flag_news.discard(uid)  # the client hears of its own change now
                out[seq] = list(self._flags[uid])
        return out

    def expunge(self) -> defer.Deferred[list[int]]:
        """EXPUNGE on the backend; the sequence numbers to report, descending."""
        self._check_writable()
        d = self.connection.command(b"EXPUNGE")
        return d.addCallback(lambda _: self._commit_expunges())

    def uid_expunge(self, uids: Iterable[int]) -> defer.Deferred[list[int]]:
        """UID EXPUNGE (RFC 4315) on the backend; the sequence numbers to report."""
        self._check_writable()
        uid_set = format_uid_set(list(uids))
        if not uid_set:
            return defer.succeed(self._commit_expunges())
        d = self.connection.command(b"UID EXPUNGE " + uid_set)
        return d.addCallback(lambda _: self._commit_expunges())

    def addMessage(self, message: Any, flags: Any = (), date: Any = None) -> defer.Deferred[int]:
        """APPEND to this mailbox on the backend (IMailbox); fires with the UID."""
        if not self.rw:
            return defer.fail(MailboxReadOnly("Mailbox is read-only"))
        return self.account.append(self.name, message, flags, date)

    def copy(self, message: Any) -> defer.Deferred[int]:
        """Never called: the server mixin relays COPY (:meth:`copy_on_backend`)."""
        return defer.fail(NotCarried("COPY is relayed to the backend"))

    def search(self, query: Any, uid: bool) -> Any:
        """Never called: the server mixin relays SEARCH (:meth:`search_on_backend`)."""
        raise NotCarried("SEARCH is relayed to the backend")

    # -- reporting ----------------------------------------------------------------------------

    def _commit_expunges(self) -> list[int]:
        seqs = []
        for uid in sorted(self._expunged, reverse=True):
            i = bisect.bisect_left(self._uids, uid)
            if i < len(self._uids) and self._uids[i] == uid:
                del self._uids[i]
                seqs.append(i + 1)
        self._expunged.clear()
        return seqs

    def poll(self, allow_expunge: bool = True) -> MailboxUpdates:
        """What changed since the client was last told, now committed to its snapshot."""
        self._refresh_soon()
        count = len(self._uids)
        expunged = tuple(self._commit_expunges()) if allow_expunge else ()
        told_upto = self._uids[-1] if self._uids else 0
        pending = self._expunged
        new = [u for u in self._mirror if u > told_upto and u not in pending]
        self._uids.extend(new)
        flags = []
        for uid in sorted(self._flag_news):
            i = bisect.bisect_left(self._uids, uid)
            if uid <= told_upto and i < len(self._uids) and self._uids[i] == uid:
                flags.append((i + 1, uid, self._flags[uid]))
        self._flag_news.clear()
        recent = None
        if self._recent != self._recent_told:
            recent = self._recent_told = self._recent
        mailbox_flags = (tuple(self.getFlags()), tuple(self.permanent_flags()))
        news = None
        if mailbox_flags != self._told_mailbox_flags:
            news = self._told_mailbox_flags = mailbox_flags
        return MailboxUpdates(
            expunged=expunged,
            exists=len(self._uids) if new or len(self._uids) != count else None,
            recent=recent,
            flags=tuple(flags),
            mailbox_flags=news,
        )

    def _refresh_soon(self) -> None:
        """Ask the backend for news (NOOP) when it was quiet; reported at a later poll."""
        quiet = self.clock.seconds() - self._last_activity >= NOOP_INTERVAL
        if self._closed or self._noop is not None or not quiet or self.connection.idling:
            return
        if not self.connection.connected_now:
            return
        self._noop = self.connection.command(b"NOOP")

        def done(result: Any) -> None:
            self._noop = None

        self._noop.addBoth(done)

    def refresh(self) -> defer.Deferred[Any]:
        """NOOP on the backend now, then wait for new messages' UIDs (the front's NOOP)."""
        d = self.connection.command(b"NOOP")
        return d.addCallback(lambda _: self.settled())
