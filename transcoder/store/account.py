"""One user's Maildir++ tree as a Twisted IMAP account.

The hierarchy operations follow RFC 3501 section 6.3:

* CREATE makes missing superiors too (as selectable mailboxes); a trailing
  ``/`` only declares the intent to create children and is dropped.
* DELETE of a mailbox with inferiors empties it and leaves it ``\\Noselect``;
  DELETE of a ``\\Noselect`` mailbox with inferiors is refused.
* RENAME moves the inferiors too; RENAME of INBOX moves its messages into the
  new mailbox (keeping their order and UIDs under a new UIDVALIDITY) and
  leaves INBOX empty, its inferiors untouched.

Directory changes run under the account's ``transcoder-mailboxes.lock``;
removed directories are first renamed to a ``..transcoder-trash.*`` name
(never a valid mailbox) so a crash cannot leave half a mailbox visible.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.mail import imap4
from zope.interface import implementer

from transcoder.errors import (
    ClientError,
    InvalidMailboxName,
    MailboxError,
    MailboxExists,
    MailboxNotFound,
    MailboxNotFoundTryCreate,
    MessageNotFound,
)
from transcoder.files import fsync_dir, write_atomically
from transcoder.store import names as mbnames
from transcoder.store.flags import parse_flags
from transcoder.store.intake import parse_date, write_new_file
from transcoder.store.listing import (
    MailboxInfo,
    attributes,
    is_selectable,
    listing_order,
    scan_hierarchy,
)
from transcoder.store.mailbox import MailboxState
from transcoder.store.message import MaildirMessage
from transcoder.store.names import DELIMITER, INBOX, is_inferior, normalize, parents
from transcoder.store.session import MailboxSession
from transcoder.store.subscriptions import Subscriptions
from transcoder.store.uidlist import UIDLIST_FILE, FileLock, UidList

if TYPE_CHECKING:
    from transcoder.store.maildir import MaildirStore

ACCOUNT_LOCK = "transcoder-mailboxes.lock"
_TRASH_PREFIX = "..transcoder-trash."


def _text(name: str | bytes) -> str:
    if isinstance(name, str):
        return name
    try:
        return mbnames.decode_mutf7(name.decode("ascii"))
    except ValueError as e:  # UnicodeDecodeError included
        raise InvalidMailboxName("Mailbox name is not modified UTF-7") from e


@implementer(imap4.IAccount, imap4.INamespacePresenter)
class MaildirAccount:
    """The mailboxes of one address (see the module docstring)."""

    def __init__(self, store: MaildirStore, address: str, root: Path) -> None:
        self.store = store
        self.address = address
        self.root = root
        self._lock = FileLock(root / ACCOUNT_LOCK)
        self._subscriptions = Subscriptions(root)

    # -- lookup ------------------------------------------------------------------

    def mailbox_path(self, name: str) -> Path:
        """The directory of mailbox ``name`` (whether or not it exists); InvalidMailboxName."""
        return self.root / mbnames.dirname(mbnames.split_name(name))

    def exists(self, name: str | bytes) -> bool:
        """Whether ``name`` is a selectable mailbox (INBOX in any case); no directory scan."""
        try:
            return is_selectable(self.mailbox_path(normalize(_text(name))))
        except InvalidMailboxName:
            return False

    def _state(self, name: str | bytes) -> MailboxState | None:
        canonical = normalize(_text(name))
        path = self.mailbox_path(canonical)
        if not is_selectable(path):
            return None
        return self.store.mailbox_state(self, path, canonical)

    def _require(self, name: str | bytes) -> MailboxState:
        state = self._state(name)
        if state is None:
            raise MailboxNotFoundTryCreate(f"No mailbox {_text(name)}")
        return state

    def select(self, name: str | bytes, rw: bool = True) -> MailboxSession | None:
        """A new session on mailbox ``name``, or None if it does not exist or is \\Noselect."""
        try:
            state = self._state(name)
        except InvalidMailboxName:
            return None
        return None if state is None else MailboxSession(state, self, rw)

    def mailbox_names(self) -> list[str]:
        """The selectable mailboxes, INBOX first."""
        return sorted((n for n, sel in scan_hierarchy(self.root).items() if sel), key=listing_order)

    def listMailboxes(
        self, ref: str | bytes, wildcard: str | bytes
    ) -> list[tuple[str, MailboxInfo]]:
        """LIST (RFC 3501 section 6.3.8): ``(name, MailboxInfo)`` of the matching names."""
        pattern = _text(wildcard)
        if pattern == "":
            return [("", MailboxInfo(("\\Noselect",)))]  # the root name and the delimiter
        matcher = mbnames.compile_pattern(_text(ref), pattern)  # capped before any scan
        attrs = attributes(scan_hierarchy(self.root))
        names = matcher.select(sorted(attrs, key=listing_order))
        return [(name, MailboxInfo(attrs[name])) for name in names]

    def list_subscribed(
        self, ref: str | bytes, wildcard: str | bytes
    ) -> list[tuple[str, MailboxInfo]]:
        """LSUB (RFC 3501 section 6.3.9): subscribed names matching the pattern.

        With a trailing ``%``, an unsubscribed superior of a subscribed name
        that matches is returned as ``\\Noselect``.
        """
        matcher = mbnames.compile_pattern(_text(ref), _text(wildcard))  # capped before any scan
        subscribed = self._subscriptions.names()
        attrs = attributes(scan_hierarchy(self.root))
        found = {name: attrs.get(name, ()) for name in subscribed}
        if (_text(ref) + _text(wildcard)).endswith("%"):
            for name in subscribed:
                for parent in parents(name):
                    found.setdefault(parent, ("\\Noselect",))
        names = matcher.select(sorted(found, key=listing_order))
        return [(name, MailboxInfo(found[name])) for name in names]

    # -- hierarchy ---------------------------------------------------------------

    def _make(self, path: Path) -> None:
        path.mkdir(mode=0o700, exist_ok=True)
        for sub in ("tmp", "new", "cur"):  # cur/ last: it makes the mailbox selectable
            (path / sub).mkdir(mode=0o700, exist_ok=True)
        fsync_dir(path)
        fsync_dir(self.root)

    def _make_parents(self, name: str) -> None:
        for parent in parents(name):
            path = self.mailbox_path(parent)
            if parent != INBOX and not path.exists():
                self._make(path)

    def create(self, pathspec: str | bytes) -> bool:
        """CREATE (RFC 3501 section 6.3.3); MailboxExists, InvalidMailboxName."""
        text = _text(pathspec)
        if len(text) > 1 and text.endswith(DELIMITER):
            text = text[:-1]  # "intends to create names under this name"
        canonical = normalize(text)
        if canonical == INBOX:
            raise MailboxExists("INBOX always exists")
        with self._lock.held():
            self._make_parents(canonical)
            path = self.mailbox_path(canonical)
            if is_selectable(path):
                raise MailboxExists(f"Mailbox {canonical} already exists")
            self._make(path)
        return True

    def addMailbox(self, name: str | bytes, mbox: Any = None) -> bool:
        """IAccount's single-level create; only ``mbox=None`` (a Maildir mailbox) is possible."""
        if mbox is not None:
            raise MailboxError("Cannot add a foreign mailbox object to a Maildir account")
        return self.create(name)

    def _trash(self, path: Path) -> None:
        trash = self.root / (_TRASH_PREFIX + self.store.names.next())
        os.rename(path, trash)
        fsync_dir(self.root)
        self._discard(trash)

    def _empty(self, path: Path) -> None:
        """Remove a mailbox's messages and metadata, keeping the directory (``\\Noselect``)."""
        trash = self.root / (_TRASH_PREFIX + self.store.names.next())
        trash.mkdir(mode=0o700)
        for entry in sorted(os.listdir(path), key=lambda n: n != "cur"):
            os.rename(path / entry, trash / entry)
        fsync_dir(path)
        self._discard(trash)

    def _discard(self, trash: Path) -> None:
        """Remove a renamed-aside directory off the reactor thread: its size is the mailbox's."""
        self.store.run_blocking(shutil.rmtree, trash, True).addErrback(
            lambda failure: None  # a leftover trash directory is harmless
        )

    def delete(self, name: str | bytes) -> bool:
        """DELETE (RFC 3501 section 6.3.4); MailboxNotFound, MailboxError."""
        canonical = normalize(_text(name))
        if canonical == INBOX:
            raise MailboxError("INBOX cannot be deleted")
        with self._lock.held():
            universe = scan_hierarchy(self.root)
            if canonical not in universe:
                raise MailboxNotFound(f"No mailbox {canonical}")
            has_children = any(is_inferior(other, canonical) for other in universe)
            if has_children and not universe[canonical]:
                raise MailboxError(f"{canonical} has inferiors and is already \\Noselect")
            path = self.mailbox_path(canonical)
            self.store.forget_state(path)
            if has_children:
                self._empty(path)
            else:
                self._trash(path)
        return True

    def rename(self, oldname: str | bytes, newname: str | bytes) -> bool:
        """RENAME (RFC 3501 section 6.3.5); MailboxNotFound, MailboxExists, MailboxError."""
        old, new = normalize(_text(oldname)), normalize(_text(newname))
        if new == INBOX:
            raise MailboxExists("INBOX always exists")
        if old == INBOX:
            return self._rename_inbox(new)
        if new == old or is_inferior(new, old):
            raise MailboxError("Cannot rename a mailbox into itself")
        with self._lock.held():
            universe = scan_hierarchy(self.root)
            if not self.mailbox_path(old).is_dir():
                raise MailboxNotFound(f"No mailbox {old}")
            if new in universe:
                raise MailboxExists(f"Mailbox {new} already exists")
            moving = [n for n in universe if (n == old or is_inferior(n, old))]
            targets = {n: normalize(new + n[len(old) :]) for n in moving}  # validates lengths
            self._make_parents(new)
            for name in sorted(moving):
                src, dst = self.mailbox_path(name), self.mailbox_path(targets[name])
                if src.is_dir():
                    os.rename(src, dst)
                    self.store.move_state(src, dst, targets[name])
            fsync_dir(self.root)
        return True

    def _rename_inbox(self, new: str) -> bool:
        with self._lock.held():
            if new in scan_hierarchy(self.root):
                raise MailboxExists(f"Mailbox {new} already exists")
            self._make_parents(new)
            dest = self.mailbox_path(new)
            self._make(dest)
            inbox = self._require(INBOX)
            moved = inbox.move_all(dest)
            # UIDs keep their order under a fresh UIDVALIDITY; all \Recent in their new home.
            uidlist = UidList(self.allocate_validity(0), inbox.next_uid, 0, 1, tuple(moved))
            write_atomically(dest / UIDLIST_FILE, uidlist.render())
        return True

    def allocate_validity(self, above: int) -> int:
        """A new UIDVALIDITY for a mailbox of this account (see :mod:`.uidlist`)."""
        return self.store.allocate_validity(self.root, above)

    # -- subscriptions ------------------------------------------------------------

    def subscribe(self, name: str | bytes) -> bool:
        """SUBSCRIBE (RFC 3501 section 6.3.6); the mailbox need not exist."""
        self._subscriptions.add(normalize(_text(name)))
        return True

    def unsubscribe(self, name: str | bytes) -> bool:
        """UNSUBSCRIBE (RFC 3501 section 6.3.7); MailboxError if not subscribed."""
        self._subscriptions.remove(normalize(_text(name)))
        return True

    def isSubscribed(self, name: str | bytes) -> bool:
        """True if ``name`` is on the subscription list."""
        try:
            return normalize(_text(name)) in self._subscriptions
        except InvalidMailboxName:
            return False

    # -- namespaces (RFC 2342) ---------------------------------------------------------

    def getPersonalNamespaces(self) -> list[list[str]]:
        """One personal namespace: ``("" "/")``."""
        return [["", DELIMITER]]

    def getSharedNamespaces(self) -> list[list[str]] | None:
        """None: no shared namespaces."""
        return None

    def getUserNamespaces(self) -> list[list[str]] | None:
        """None: no other users' namespaces."""
        return None

    getOtherNamespaces = getUserNamespaces

    # -- adding messages --------------------------------------------------------------

    def append(
        self,
        name: str | bytes,
        source: IO[bytes],
        flags: Iterable[str | bytes] = (),
        internal_date: datetime | str | bytes | None = None,
    ) -> defer.Deferred[int]:
        """APPEND: fires with the new UID; MailboxNotFoundTryCreate if there is no such mailbox.

        The octets are copied CRLF-canonical into ``tmp/`` and fsync'ed off the
        reactor thread; the rename into ``cur/`` and the UID happen on it.
        """
        try:
            state = self._require(name)
        except ClientError:
            return defer.fail()
        return self.append_to(state, source, flags, internal_date)

    def append_to(
        self, state: MailboxState, source: IO[bytes], flags: Iterable[str | bytes], date: Any
    ) -> defer.Deferred[int]:
        """APPEND into an already looked-up mailbox (see :meth:`append`)."""
        try:
            wanted = parse_flags(flags)
            when = parse_date(date)
        except ClientError:
            return defer.fail()
        mtime = None if when is None else when.timestamp()
        return self._add(state, lambda path: write_new_file(path, source, mtime=mtime), wanted)

    def _add(
        self, state: MailboxState, writer: Callable[[Path], int], flags: tuple[str, ...]
    ) -> defer.Deferred[int]:
        tmp_name = self.store.names.next()
        d: defer.Deferred[Any] = self.store.run_blocking(writer, state.tmp / tmp_name)
        d.addCallback(lambda _: state.add_file_durably(tmp_name, flags, self.store.run_blocking))

        def _discard(failure: Any) -> Any:
            state.discard_tmp(tmp_name)
            return failure

        d.addErrback(_discard)
        return d

    def copy_to(self, state: MailboxState, message: Any) -> defer.Deferred[int]:
        """COPY ``message`` into ``state``'s mailbox: a hard link when possible, else a copy."""
        try:
            flags = parse_flags(message.getFlags())
            if isinstance(message, MaildirMessage):
                return self._link_copy(state, message, flags)
            when = parse_date(message.getInternalDate())
        except ClientError:
            return defer.fail()
        source = imap4.IMessageFile(message).open()
        mtime = None if when is None else when.timestamp()
        return self._add(state, lambda path: write_new_file(path, source, mtime=mtime), flags)

    def _link_copy(
        self, state: MailboxState, message: MaildirMessage, flags: tuple[str, ...]
    ) -> defer.Deferred[int]:
        tmp_name = self.store.names.next()
        try:
            message.link_to(state.tmp / tmp_name)
        except FileNotFoundError:
            return defer.fail(MessageNotFound(f"Message UID {message.uid} was expunged"))
        except OSError:  # no hard links across file systems (EXDEV) or here at all
            mtime = message.internal_date.timestamp()

            def _copy_octets(path: Path) -> int:
                with message.open() as src:
                    return write_new_file(path, src, canonical=False, mtime=mtime)

            return self._add(state, _copy_octets, flags)
        try:
            return state.add_file_durably(tmp_name, flags, self.store.run_blocking)
        except Exception:
            state.discard_tmp(tmp_name)
            return defer.fail()
