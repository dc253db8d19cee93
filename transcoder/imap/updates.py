"""Mailbox changes reported to every session, IDLE, EXPUNGE, CLOSE, UNSELECT and STORE.

Twisted's server only learns of other sessions' changes through listener
callbacks that write untagged responses whenever they happen, and has no
EXPUNGE notification at all, so sequence numbers drift between sessions.
Here every session owns a snapshot of its mailbox (the store's
:class:`~transcoder.store.MailboxSession`) and learns what changed only by
``poll()``, which this mixin calls just before each tagged response -- the
moment RFC 3501 section 5.2 and 7.4.1 allow -- and periodically during IDLE
(RFC 2177).  Commands run one at a time (:mod:`.command_order`), so the
command completing is the only one in progress: EXPUNGE responses are held
back when it is a FETCH, STORE or SEARCH (RFC 3501 section 7.4.1), not
when it is one of their UID forms.

STORE's arguments are parsed by :mod:`.store_syntax` and its message set
like FETCH's (Twisted's parsers crash on a missing flag list and are
quadratic in the size of the set).

A keyword new to the mailbox is announced with ``FLAGS`` and
``OK [PERMANENTFLAGS ...]`` (RFC 3501 sections 7.2.6 and 7.1) before any
FETCH response names it: in the poll's updates, or at once when the store
hands out flags between polls (:meth:`UpdatesMixin.keywords_changed`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.mail import imap4
from zope.interface import implementer

from transcoder.errors import BadCommand, MailboxReadOnly
from transcoder.imap.fetch import FetchMixin, format_flags, sequence_set_argument
from transcoder.imap.responses import status_text
from transcoder.imap.store_syntax import StoreAction, parse_store_action
from transcoder.store.interfaces import IKeywordListener, MailboxUpdates

log = Logger()

#: Commands whose tagged response must not be preceded by mailbox updates:
#: they select, leave or end the mailbox (RFC 3501 6.3.1, 6.4.2; RFC 3691).
_NO_UPDATES = frozenset({None, b"SELECT", b"EXAMINE", b"CLOSE", b"UNSELECT", b"LOGOUT"})
#: Non-UID commands during which EXPUNGE must not be sent (RFC 3501 7.4.1).
_NO_EXPUNGE = frozenset({b"FETCH", b"STORE", b"SEARCH"})
#: A message set, parsed in linear time like FETCH's (not Twisted's ``arg_seqset``).
_arg_sequence_set = FetchMixin.arg_sequence_set


def mailbox_flags_lines(flags: Any, permanent: Any) -> list[bytes]:
    """``FLAGS (...)`` and ``OK [PERMANENTFLAGS (...)]`` (RFC 3501 sections 7.2.6, 7.1).

    No permanent flags means a read-only mailbox, as SELECT/EXAMINE say.
    """
    text = "Flags permitted" if permanent else "Read-only mailbox"
    code = "PERMANENTFLAGS " + format_flags(permanent).decode("utf-8")
    return [b"FLAGS " + format_flags(flags), b"OK " + status_text(code, text)]


def update_lines(updates: MailboxUpdates) -> list[bytes]:
    """The untagged responses reporting ``updates``, in the order they must be sent.

    New keywords come before the FETCH responses that may name them.
    """
    lines = [b"%d EXPUNGE" % seq for seq in updates.expunged]
    if updates.mailbox_flags is not None:
        lines += mailbox_flags_lines(*updates.mailbox_flags)
    if updates.exists is not None:
        lines.append(b"%d EXISTS" % updates.exists)
    if updates.recent is not None:
        lines.append(b"%d RECENT" % updates.recent)
    lines += [
        b"%d FETCH (UID %d FLAGS %s)" % (seq, uid, format_flags(flags))
        for seq, uid, flags in updates.flags
    ]
    return lines


@implementer(IKeywordListener)
class UpdatesMixin:
    """Per-session mailbox snapshots kept in step with other sessions."""

    _idle_tag: bytes | None = None
    _idle_loop: task.LoopingCall | None = None

    def capabilities(self) -> dict[bytes, Any]:
        """Add IDLE (RFC 2177), UNSELECT (RFC 3691) and UIDPLUS's UID EXPUNGE."""
        caps: dict[bytes, Any] = super().capabilities()  # type: ignore[misc]
        caps[b"IDLE"] = None
        caps[b"UNSELECT"] = None
        return caps

    def _respond(self, state: bytes, tag: bytes | None, message: bytes | None) -> None:
        """Before a tagged completion, report what changed in the selected mailbox."""
        # WireMixin.current_command names the command completing ("UID FETCH").
        command = getattr(self, "current_command", None)
        if tag and state in (b"OK", b"NO", b"BAD") and command not in _NO_UPDATES:
            self.send_mailbox_updates(allow_expunge=command not in _NO_EXPUNGE)
        super()._respond(state, tag, message)  # type: ignore[misc]

    def send_mailbox_updates(self, allow_expunge: bool = True) -> None:
        """Poll the selected mailbox and write the untagged responses for its changes."""
        mbox = getattr(self, "mbox", None)
        poll = getattr(mbox, "poll", None)
        if poll is None:
            return
        try:
            updates = poll(allow_expunge=allow_expunge)
        except Exception:
            log.failure("polling the selected mailbox failed")
            return
        for line in update_lines(updates):
            super()._respond(line, None, None)  # type: ignore[misc]

    # Twisted's listener callbacks write whenever the store calls them, which
    # would break RFC 3501 7.4.1's ordering; poll() at command boundaries
    # reports the same changes, so the callbacks are deliberately inert.
    def newMessages(self, exists: Any, recent: Any) -> None:
        """Ignored: changes are reported by :meth:`send_mailbox_updates`."""

    def flagsChanged(self, newFlags: Any) -> None:
        """Ignored: changes are reported by :meth:`send_mailbox_updates`."""

    def modeChanged(self, writeable: Any) -> None:
        """Ignored: a session's read-write mode is fixed when it is selected."""

    def keywords_changed(self, flags: Any, permanent: Any) -> None:
        """New keywords: announced now, before flags naming them are sent (RFC 3501 7.2.6).

        Untagged FLAGS may come at any time, even amid a command's responses.
        """
        for line in mailbox_flags_lines(flags, permanent):
            super()._respond(line, None, None)  # type: ignore[misc]

    # -- IDLE (RFC 2177) -------------------------------------------------------

    def do_IDLE(self, tag: bytes) -> None:
        """Enter IDLE: report changes as they are found until the client says DONE."""
        self_: Any = self
        self._idle_tag = tag
        self_.sendContinuationRequest(b"idling")
        self_.parseState = "idle"
        self.send_mailbox_updates()
        interval = self_.settings.idle_poll_interval
        self._idle_loop = task.LoopingCall(self.send_mailbox_updates)
        self._idle_loop.clock = self_.clock
        self._idle_loop.start(interval, now=False)

    auth_IDLE = (do_IDLE,)
    select_IDLE = (do_IDLE,)

    def parse_idle(self, line: bytes) -> None:
        """The line ending IDLE: ``DONE`` (RFC 2177 section 3), anything else is BAD."""
        self_: Any = self
        tag, self._idle_tag = self._idle_tag, None
        self._stop_idle()
        self_.parseState = "command"
        if line.strip().upper() == b"DONE":
            self_.sendPositiveResponse(tag, b"IDLE terminated")
        else:
            self_.sendBadResponse(tag, b"[CLIENTBUG] Expected DONE to end IDLE")

    def _stop_idle(self) -> None:
        if self._idle_loop is not None and self._idle_loop.running:
            self._idle_loop.stop()
        self._idle_loop = None

    def connectionLost(self, reason: Any) -> None:
        """Stop polling for a client that has gone."""
        self._stop_idle()
        mbox = getattr(self, "mbox", None)
        closer = imap4.ICloseableMailbox(mbox, None)
        if closer is not None:
            defer.maybeDeferred(closer.close).addErrback(
                lambda f: log.failure("closing mailbox", f)
            )
        super().connectionLost(reason)  # type: ignore[misc]

    # -- EXPUNGE, UID EXPUNGE (RFC 4315), CLOSE, UNSELECT (RFC 3691) ------------

    def do_EXPUNGE(self, tag: bytes, uids: Any = None) -> None:
        """EXPUNGE, or UID EXPUNGE of the \\Deleted messages among ``uids``."""
        self_: Any = self
        mbox = self_.mbox
        if not mbox.isWriteable():
            self_.send_error(tag, MailboxReadOnly("Mailbox is read-only"))
            return
        durably = getattr(mbox, "expunge_durably", None)
        if durably is not None:  # the Maildir store: fsync off the reactor thread, shared
            chosen = None if uids is None else _resolve_uids(mbox, uids)
            d = defer.maybeDeferred(durably, chosen)
        elif uids is None:
            d = defer.maybeDeferred(mbox.expunge)
        else:
            d = defer.maybeDeferred(lambda: mbox.uid_expunge(list(_resolve_uids(mbox, uids))))

        def expunged(seqs: list[int]) -> None:
            for seq in seqs:
                self_.sendUntaggedResponse(b"%d EXPUNGE" % seq)
            self_.sendPositiveResponse(tag, b"EXPUNGE completed")

        d.addCallbacks(expunged, lambda f: self_.send_error(tag, f))

    select_EXPUNGE = (do_EXPUNGE,)

    def do_UID(self, tag: bytes, command: bytes, line: bytes) -> Any:
        """UID EXPUNGE (RFC 4315 section 2.1) besides Twisted's UID COPY/FETCH/STORE/SEARCH."""
        if command.upper() == b"EXPUNGE":
            uids, rest = sequence_set_argument(line)
            if rest.strip():
                raise BadCommand("Too many arguments for UID EXPUNGE")
            return self.do_EXPUNGE(tag, uids)
        return super().do_UID(tag, command, line)  # type: ignore[misc]

    def do_CLOSE(self, tag: bytes) -> None:
        """Expunge silently (no untagged EXPUNGE, RFC 3501 6.4.2) and deselect."""
        self_: Any = self
        mbox = self_.mbox
        d = defer.maybeDeferred(mbox.expunge) if mbox.isWriteable() else defer.succeed(None)
        d.addCallback(lambda _: self._deselect(tag, b"CLOSE completed"))
        d.addErrback(lambda f: self_.send_error(tag, f))

    select_CLOSE = (do_CLOSE,)

    def do_UNSELECT(self, tag: bytes) -> None:
        """Deselect without expunging (RFC 3691)."""
        self._deselect(tag, b"UNSELECT completed")

    select_UNSELECT = (do_UNSELECT,)

    def _deselect(self, tag: bytes, text: bytes) -> None:
        self_: Any = self
        mbox, self_.mbox = self_.mbox, None
        self_.state = "auth"
        mbox.removeListener(self)
        closer = imap4.ICloseableMailbox(mbox, None)
        if closer is not None:
            defer.maybeDeferred(closer.close).addErrback(lambda f: log.failure("close", f))
        self_.sendPositiveResponse(tag, text)

    # -- STORE (RFC 3501 6.4.6) --------------------------------------------------

    def arg_store_action(self, line: bytes | None) -> tuple[StoreAction, bytes]:
        """``store-att-flags``: the rest of the line (:mod:`.store_syntax`)."""
        return parse_store_action(line or b""), b""

    def do_STORE(
        self, tag: bytes, messages: imap4.MessageSet, action: StoreAction, uid: int = 0
    ) -> defer.Deferred[None]:
        """STORE / UID STORE; NO [READ-ONLY] on an EXAMINEd mailbox (Twisted answers BAD)."""
        self_: Any = self
        mbox = self_.mbox
        if not mbox.isWriteable():
            raise MailboxReadOnly("Mailbox is read-only")
        # The Maildir store makes the renames durable off the reactor thread,
        # one fsync shared by the STOREs of every session meanwhile.
        store = getattr(mbox, "store_durably", mbox.store)
        d = defer.maybeDeferred(store, messages, list(action.flags), action.mode, bool(uid))
        return d.addCallback(self._stored, tag, mbox, bool(uid), action.silent)

    def _stored(
        self, changed: dict[int, Any], tag: bytes, mbox: Any, uid: bool, silent: bool
    ) -> None:
        """``* n FETCH (FLAGS ...)`` for each message changed, unless silent; then OK.

        UID STORE's responses carry the UID too (RFC 3501 section 6.4.8).
        """
        self_: Any = self
        for seq, flags in [] if silent else sorted(changed.items()):
            uid_item = b" UID %d" % mbox.getUID(seq) if uid else b""
            self_.sendUntaggedResponse(
                b"%d FETCH (FLAGS %s%s)" % (seq, format_flags(flags), uid_item)
            )
        self_.sendPositiveResponse(tag, b"STORE completed")

    select_STORE = (do_STORE, _arg_sequence_set, arg_store_action)


def _resolve_uids(mbox: Any, uids: imap4.MessageSet) -> list[int]:
    """The UIDs of ``uids`` that exist in the session (``*`` = the highest UID)."""
    found = mbox.fetch(uids, uid=True)
    return [message.getUID() for _, message in found]
