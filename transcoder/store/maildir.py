"""The Maildir++ mail store: accounts under one root, and local delivery.

Layout: ``<root>/<address, lowercased>/`` is an account's Maildir++ root and
its INBOX (``cur/ new/ tmp/``); other mailboxes are ``.Name`` directories in
it (see :mod:`.names`).  Per mailbox: ``transcoder-uidlist`` (UIDs,
:mod:`.uidlist`), ``dovecot-keywords`` (:mod:`.flags`).  Per account:
``subscriptions``, ``transcoder-uidvalidity``.

The store keeps one :class:`~transcoder.store.mailbox.MailboxState` per
mailbox directory for the whole process, so every session on a mailbox sees
the others' changes at its next poll; states nobody uses are dropped (a few
recently used ones are kept to spare a re-scan).
"""

from __future__ import annotations

import os
import unicodedata
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread

from transcoder.errors import InvalidAccount, MailboxNotFound
from transcoder.files import fsync_dir
from transcoder.store.account import MaildirAccount
from transcoder.store.entity_cache import EntityCache
from transcoder.store.intake import IntakeGate, UniqueNames, write_new_file
from transcoder.store.mailbox import MailboxState
from transcoder.store.uidlist import allocate_uidvalidity

#: Runs ``f(*args)`` off the reactor thread; returns a Deferred of its result.
RunBlocking = Callable[..., Any]
_KEEP_STATES = 64
#: How stale another program's changes may be when a session polls, in the server.
SERVER_RESCAN_INTERVAL = 0.05


def check_address(address: str) -> str:
    """``address`` lowercased if it is safe as one directory name, else InvalidAccount."""
    if not isinstance(address, str):
        raise InvalidAccount("Account name must be text")
    folded = address.strip().lower()
    if not folded or folded.startswith(".") or len(folded.encode("utf-8")) > 255:
        raise InvalidAccount(f"Invalid account name {address!r}")
    for ch in folded:
        if ch in "/\\" or unicodedata.category(ch)[0] in "CZ":
            raise InvalidAccount(f"Invalid character {ch!r} in account name")
    return folded


class MaildirStore:
    """All accounts' Maildirs under ``root`` (``DIR/mail``).

    ``clock`` gives UIDVALIDITY and file-name times; ``run_blocking`` runs
    the file copies of APPEND/COPY and STORE's fsyncs (default: Twisted's
    thread pool); ``random_bytes`` and ``hostname`` make unique file names;
    ``rescan_interval`` is how long a mailbox listing stays good enough
    for other programs' changes (see :mod:`.index`; the server's is
    :data:`SERVER_RESCAN_INTERVAL`, 0 looks at every refresh);
    ``intake_gate`` admits files other programs deliver into ``new/`` (the
    server's with ``--clamd``: :mod:`transcoder.scan.delivery`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        clock: IReactorTime | None = None,
        *,
        run_blocking: RunBlocking = deferToThread,
        random_bytes: Callable[[int], bytes] = os.urandom,
        hostname: str | None = None,
        rescan_interval: float = 0.0,
        intake_gate: IntakeGate | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        assert clock is not None
        self.root = Path(root)
        self.clock = clock
        self.run_blocking = run_blocking
        self.rescan_interval = rescan_interval
        self.intake_gate = intake_gate
        self.names = UniqueNames(clock, random_bytes, hostname)
        self._states: weakref.WeakValueDictionary[str, MailboxState] = weakref.WeakValueDictionary()
        self._kept: OrderedDict[str, MailboxState] = OrderedDict()
        #: Parsed MIME trees of every mailbox's messages (see entity_cache).
        self.entity_cache = EntityCache()

    def account(self, address: str) -> MaildirAccount:
        """The account of ``address``; its Maildir and INBOX are created on first use."""
        folded = check_address(address)
        path = self.root / folded
        if not (path / "cur").is_dir():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.mkdir(mode=0o700, exist_ok=True)
            for sub in ("tmp", "new", "cur"):
                (path / sub).mkdir(mode=0o700, exist_ok=True)
            fsync_dir(path)
            fsync_dir(self.root)
        return MaildirAccount(self, folded, path)

    def deliver(self, address: str, source: BinaryIO, mailbox: str = "INBOX") -> str:
        """Deliver a message as an MDA does: ``tmp/``, fsync, rename into ``new/``.

        Synchronous.  No UID is assigned here: a server picks the file up at
        its next poll.  Returns the file's name in ``new/``.
        """
        account = self.account(address)
        path = account.mailbox_path(mailbox)
        if not (path / "new").is_dir() or not (path / "cur").is_dir():
            raise MailboxNotFound(f"No mailbox {mailbox}")
        name = self.names.next()
        write_new_file(path / "tmp" / name, source, canonical=False)
        os.rename(path / "tmp" / name, path / "new" / name)
        fsync_dir(path / "new")
        return name

    # -- the registry of mailbox states (used by MaildirAccount) ------------------

    def allocate_validity(self, account_root: Path, above: int) -> int:
        """A fresh UIDVALIDITY for a mailbox under ``account_root``."""
        return allocate_uidvalidity(account_root, self.clock.seconds(), above)

    def mailbox_state(self, account: MaildirAccount, path: Path, name: str) -> MailboxState:
        """The one state of the mailbox at ``path`` in this process."""
        key = str(path)
        state = self._states.get(key)
        if state is None or state.deleted:
            state = MailboxState(
                path,
                name,
                self.clock,
                lambda above: account.allocate_validity(above),
                self.entity_cache,
                self.rescan_interval,
                self.intake_gate,
            )
            self._states[key] = state
        self._kept[key] = state
        self._kept.move_to_end(key)
        while len(self._kept) > _KEEP_STATES:
            self._kept.popitem(last=False)
        return state

    def forget_state(self, path: Path) -> None:
        """The mailbox at ``path`` is being deleted: its sessions see every message go."""
        key = str(path)
        self._kept.pop(key, None)
        state = self._states.pop(key, None)
        if state is not None:
            state.mark_deleted()

    def move_state(self, old: Path, new: Path, name: str) -> None:
        """The mailbox directory ``old`` was renamed to ``new`` (IMAP name ``name``)."""
        state = self._states.pop(str(old), None)
        self._kept.pop(str(old), None)
        if state is not None:
            state.relocate(new, name)
            self._states[str(new)] = state
