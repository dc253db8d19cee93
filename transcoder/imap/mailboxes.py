"""Mailbox commands: SELECT/EXAMINE, LIST/LSUB, CREATE/DELETE/RENAME, (UN)SUBSCRIBE, STATUS.

Also NAMESPACE (RFC 2342) and the MOVE/UIDPLUS capabilities.

Twisted's versions answer SELECT without UIDNEXT, PERMANENTFLAGS or UNSEEN
and with a bare ``[UIDVALIDITY n]`` (no text, against RFC 3501's
``resp-text``); match LIST patterns unanchored; send message flags as
mailbox attributes; quote names with rules that break on ``"`` and ``\\``;
and answer most refusals with ``BAD``.  These replacements take names in
modified UTF-7 (RFC 3501 section 5.1.3), answer every refusal with a tagged
``NO``/``BAD`` carrying an RFC 5530 response code, and leave mailbox
matching and attributes to the store.

APPEND, COPY and MOVE live in :mod:`transcoder.imap.transfer`.

The UIDVALIDITY answered by SELECT, EXAMINE and STATUS is the one the view
epoch mixin presents (:mod:`transcoder.imap.view_epoch`): the Maildir's own
while the account's views never changed, a new one after each change.

Deleting or renaming the mailbox this session has selected is refused with
``NO [INUSE]``: RFC 3501 does not forbid it, but the session's snapshot would
then describe a mailbox that is gone; CLOSE or UNSELECT first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from transcoder.errors import (
    InvalidMailboxName,
    MailboxError,
    MailboxExists,
    MailboxNotFound,
)
from transcoder.imap.mailbox_base import MailboxCommandMixin, close_session
from transcoder.imap.mailbox_syntax import (
    decode_mailbox_name,
    format_mailbox,
    format_string,
    is_same_or_inferior,
)
from transcoder.imap.responses import status_text
from transcoder.imap.transfer import TransferMixin
from transcoder.keys.view_epochs import presented_uid_validity
from transcoder.store.names import decode_list_pattern

_arg_mailbox = MailboxCommandMixin.arg_mailbox
_arg_list_mailbox = MailboxCommandMixin.arg_list_mailbox
_arg_status_items = MailboxCommandMixin.arg_status_items

#: Our one namespace: personal, no prefix, "/" as hierarchy delimiter (RFC 2342).
DELIMITER = "/"


def select_responses(session: Any, writeable: bool, validity: int | None = None) -> list[bytes]:
    """The untagged responses that open a SELECT/EXAMINE (RFC 3501 section 6.3.1).

    Every ``OK`` carries text after its response code (RFC 3501 ``resp-text``).
    EXAMINE, or a mailbox the store opened read-only, announces no permanent
    flags: the client can change none.  ``validity`` is the UIDVALIDITY to
    present (default: the session's own).
    """
    flags = " ".join(session.getFlags())
    lines = [
        b"FLAGS (" + flags.encode("ascii") + b")",
        b"%d EXISTS" % session.getMessageCount(),
        b"%d RECENT" % session.getRecentCount(),
    ]
    unseen = session.first_unseen()
    if unseen is not None:
        lines.append(b"OK " + status_text(f"UNSEEN {unseen}", f"Message {unseen} is first unseen"))
    if writeable and session.isWriteable():
        permanent = " ".join(session.permanent_flags())
        lines.append(b"OK " + status_text(f"PERMANENTFLAGS ({permanent})", "Flags permitted"))
    else:
        lines.append(b"OK " + status_text("PERMANENTFLAGS ()", "Read-only mailbox"))
    if validity is None:
        validity = session.getUIDValidity()
    lines.append(b"OK " + status_text(f"UIDVALIDITY {validity}", "UIDs valid"))
    lines.append(b"OK " + status_text(f"UIDNEXT {session.getUIDNext()}", "Predicted next UID"))
    return lines


def list_line(command: bytes, name: str, attributes: list[str], delimiter: str | None) -> bytes:
    """One untagged LIST/LSUB response (RFC 3501 section 7.2.2)."""
    delim = b"NIL" if delimiter is None else format_string(delimiter.encode("ascii"))
    attrs = " ".join(attributes).encode("ascii")
    return command + b" (" + attrs + b") " + delim + b" " + format_mailbox(name)


class MailboxesMixin(TransferMixin):
    """Mailbox-level commands of TranscodingIMAP4Server."""

    # Provided by the view epoch mixin (declared for the type checker only).
    current_view_epoch: Callable[[], defer.Deferred[int | None]]
    view_epoch: int | None

    def capabilities(self) -> dict[bytes, Any]:
        """Add MOVE (RFC 6851) and UIDPLUS (RFC 4315: APPENDUID, COPYUID, UID EXPUNGE)."""
        caps: dict[bytes, Any] = super().capabilities()
        caps[b"MOVE"] = None
        caps[b"UIDPLUS"] = None
        caps[b"NAMESPACE"] = None
        return caps

    # -- SELECT / EXAMINE (RFC 3501 6.3.1, 6.3.2) ---------------------------------

    def do_SELECT(self, tag: bytes, raw_name: bytes, writeable: bool = True) -> None:
        """Open a mailbox; the one selected before is closed even if this fails."""
        self.leave_selected_mailbox()
        self.run_command(tag, self._select, raw_name, writeable)

    auth_SELECT = (do_SELECT, _arg_mailbox, True)
    select_SELECT = auth_SELECT
    auth_EXAMINE = (do_SELECT, _arg_mailbox, False)
    select_EXAMINE = auth_EXAMINE

    async def _select(self, tag: bytes, raw_name: bytes, writeable: bool) -> None:
        name = decode_mailbox_name(raw_name)
        # The epoch first: FETCH later checks that its views are still this epoch's.
        epoch = await self.current_view_epoch()
        session = await defer.maybeDeferred(self.account.select, name, writeable)
        if session is None:
            raise MailboxNotFound("No such mailbox")
        try:
            stored = int(session.getUIDValidity())
            validity = stored if epoch is None else presented_uid_validity(stored, epoch)
            lines = select_responses(session, writeable, validity)
        except BaseException:
            close_session(session)
            raise
        for line in lines:
            self.sendUntaggedResponse(line)
        session.addListener(self)
        self.mbox, self.state, self.selected_name = session, "select", name
        self.view_epoch = epoch
        access = b"READ-WRITE" if writeable and session.isWriteable() else b"READ-ONLY"
        command = b"SELECT" if writeable else b"EXAMINE"
        self.sendPositiveResponse(tag, b"[" + access + b"] " + command + b" completed")

    def leave_selected_mailbox(self) -> None:
        """Close the selected mailbox (without expunging) and return to authenticated state."""
        mbox, self.mbox = self.mbox, None
        if mbox is None:
            return
        self.state = "auth"
        with contextlib.suppress(ValueError):  # already removed: nothing to undo
            mbox.removeListener(self)
        close_session(mbox)

    # -- LIST / LSUB (RFC 3501 6.3.8, 6.3.9) ---------------------------------------

    def do_LIST(self, tag: bytes, raw_ref: bytes, raw_pattern: bytes, command: bytes) -> None:
        """LIST or LSUB: the store matches the pattern and knows the subscriptions."""
        self.run_command(tag, self._list, raw_ref, raw_pattern, command)

    auth_LIST = (do_LIST, _arg_mailbox, _arg_list_mailbox, b"LIST")
    select_LIST = auth_LIST
    auth_LSUB = (do_LIST, _arg_mailbox, _arg_list_mailbox, b"LSUB")
    select_LSUB = auth_LSUB

    async def _list(self, tag: bytes, raw_ref: bytes, raw_pattern: bytes, command: bytes) -> None:
        # Reference and pattern are patterns, not names: any octets answer
        # (issue 10, item 3); the store caps and matches them in linear time.
        ref = decode_list_pattern(raw_ref)
        pattern = decode_list_pattern(raw_pattern)
        if not pattern:
            # RFC 3501 6.3.8: an empty pattern asks for the delimiter and the
            # root of the reference; every name here lives under root "".
            self.sendUntaggedResponse(list_line(command, "", ["\\Noselect"], DELIMITER))
        else:
            # LSUB (RFC 3501 6.3.9) lists the subscription list, which may
            # name mailboxes that no longer exist; the store applies the
            # \Noselect-parent rule for "%".
            lister = (
                self.account.list_subscribed if command == b"LSUB" else self.account.listMailboxes
            )
            entries = await defer.maybeDeferred(lister, ref, pattern)
            for name, info in entries:
                attributes = list(info.getFlags())
                line = list_line(command, name, attributes, info.getHierarchicalDelimiter())
                self.sendUntaggedResponse(line)
        self.sendPositiveResponse(tag, command + b" completed")

    # -- CREATE / DELETE / RENAME (RFC 3501 6.3.3 - 6.3.5) -------------------------

    def do_CREATE(self, tag: bytes, raw_name: bytes) -> None:
        """Create a mailbox (and, in the store, any missing superior)."""
        self.run_command(tag, self._create, raw_name)

    auth_CREATE = (do_CREATE, _arg_mailbox)
    select_CREATE = auth_CREATE

    async def _create(self, tag: bytes, raw_name: bytes) -> None:
        # RFC 3501 6.3.3: a trailing delimiter only declares the intent to
        # create inferiors; the name created is the one without it.
        name = decode_mailbox_name(raw_name).rstrip(DELIMITER)
        if not name:
            raise InvalidMailboxName("Empty mailbox name")
        if name.upper() == "INBOX":
            raise MailboxExists("INBOX always exists")
        created = await defer.maybeDeferred(self.account.create, name)
        if not created:
            raise MailboxError("Mailbox not created")
        self.sendPositiveResponse(tag, b"CREATE completed")

    def do_DELETE(self, tag: bytes, raw_name: bytes) -> None:
        """Delete a mailbox; never INBOX, never the one this session has selected."""
        self.run_command(tag, self._delete, raw_name)

    auth_DELETE = (do_DELETE, _arg_mailbox)
    select_DELETE = auth_DELETE

    async def _delete(self, tag: bytes, raw_name: bytes) -> None:
        name = decode_mailbox_name(raw_name)
        if name == "INBOX":
            raise MailboxError("INBOX cannot be deleted")  # RFC 3501 6.3.4
        if name == self.selected_mailbox_name():
            raise MailboxError("Mailbox is selected; CLOSE it first", code="INUSE")
        await defer.maybeDeferred(self.account.delete, name)
        self.sendPositiveResponse(tag, b"DELETE completed")

    def do_RENAME(self, tag: bytes, raw_old: bytes, raw_new: bytes) -> None:
        """Rename a mailbox and its inferiors (RENAME INBOX is the store's special case)."""
        self.run_command(tag, self._rename, raw_old, raw_new)

    auth_RENAME = (do_RENAME, _arg_mailbox, _arg_mailbox)
    select_RENAME = auth_RENAME

    async def _rename(self, tag: bytes, raw_old: bytes, raw_new: bytes) -> None:
        old, new = decode_mailbox_name(raw_old), decode_mailbox_name(raw_new.rstrip(b"/"))
        if not new:
            raise InvalidMailboxName("Empty mailbox name")
        if new == "INBOX":
            raise MailboxExists("INBOX always exists")
        selected = self.selected_mailbox_name()
        if selected is not None and is_same_or_inferior(selected, old, DELIMITER):
            raise MailboxError("Mailbox is selected; CLOSE it first", code="INUSE")
        await defer.maybeDeferred(self.account.rename, old, new)
        self.sendPositiveResponse(tag, b"RENAME completed")

    # -- SUBSCRIBE / UNSUBSCRIBE (RFC 3501 6.3.6, 6.3.7) ---------------------------

    def do_SUBSCRIBE(self, tag: bytes, raw_name: bytes, subscribe: bool = True) -> None:
        """Add a name to (or remove it from) the subscription list."""
        self.run_command(tag, self._subscribe, raw_name, subscribe)

    auth_SUBSCRIBE = (do_SUBSCRIBE, _arg_mailbox, True)
    select_SUBSCRIBE = auth_SUBSCRIBE
    auth_UNSUBSCRIBE = (do_SUBSCRIBE, _arg_mailbox, False)
    select_UNSUBSCRIBE = auth_UNSUBSCRIBE

    async def _subscribe(self, tag: bytes, raw_name: bytes, subscribe: bool) -> None:
        name = decode_mailbox_name(raw_name)
        if subscribe:
            await defer.maybeDeferred(self.account.subscribe, name)
            self.sendPositiveResponse(tag, b"SUBSCRIBE completed")
        else:
            await defer.maybeDeferred(self.account.unsubscribe, name)
            self.sendPositiveResponse(tag, b"UNSUBSCRIBE completed")

    # -- STATUS (RFC 3501 6.3.10) ---------------------------------------------------

    def do_STATUS(self, tag: bytes, raw_name: bytes, items: list[str]) -> None:
        """Report counters of a mailbox, the selected one included, without selecting it."""
        self.run_command(tag, self._status, raw_name, items)

    auth_STATUS = (do_STATUS, _arg_mailbox, _arg_status_items)
    select_STATUS = auth_STATUS

    async def _status(self, tag: bytes, raw_name: bytes, items: list[str]) -> None:
        name = decode_mailbox_name(raw_name)
        session = await defer.maybeDeferred(self.account.select, name, False)
        if session is None:
            raise MailboxNotFound("No such mailbox")
        try:
            values = await defer.maybeDeferred(session.requestStatus, items)
        finally:
            close_session(session)
        if "UIDVALIDITY" in values:
            values["UIDVALIDITY"] = await self.presented_validity(int(values["UIDVALIDITY"]))
        body = " ".join(f"{item} {int(values[item])}" for item in items).encode("ascii")
        self.sendUntaggedResponse(b"STATUS " + format_mailbox(name) + b" (" + body + b")")
        self.sendPositiveResponse(tag, b"STATUS completed")

    # -- NAMESPACE (RFC 2342) ---------------------------------------------------------

    def do_NAMESPACE(self, tag: bytes) -> None:
        """One personal namespace with no prefix; no shared or other-users namespaces."""
        delimiter = format_string(DELIMITER.encode("ascii"))
        self.sendUntaggedResponse(b'NAMESPACE (("" ' + delimiter + b")) NIL NIL")
        self.sendPositiveResponse(tag, b"NAMESPACE completed")

    auth_NAMESPACE = (do_NAMESPACE,)
    select_NAMESPACE = auth_NAMESPACE
