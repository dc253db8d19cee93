"""What is in one Maildir mailbox: the scan of its directories and its uid list.

:class:`MailboxIndex` maps UIDs to message files and keeps them in step with
the disk, the truth.  :meth:`MailboxIndex.refresh` re-scans only when
``cur/`` or ``new/`` changed (directory mtimes; a change within the last
second keeps the mailbox "unsettled" so a same-tick modification is not
missed).  With a ``rescan_interval`` (the server's: 50 ms), a mailbox listed
less than that long ago is not looked at again: changes made through this
process are in the state at once, and another program's change reaches
sessions at most that much later -- on a busy mailbox, whose directories
always changed within the last second, this spares a listing of ``cur/``
per command.  A scan runs under the uid list lock (see :mod:`.uidlist`) and:

1. moves files from ``new/`` into ``cur/`` (CRLF-canonical, see
   :mod:`.intake`); a ``new/`` file whose base name is already in ``cur/`` is
   what a crash between rename and unlink left behind and is deleted;
2. drops messages whose file is gone (expunged elsewhere) and notes flag
   changes other programs made by renaming files;
3. gives files nobody numbered yet fresh UIDs, in arrival order, so UIDs
   grow strictly (RFC 3501 section 2.3.1.1).

The listing is compared with the names the last scan saw plus this
process's own renames, unlinks and additions since, so only what other
programs changed is looked at (a set difference, not a pass over every
message).

It also keeps the two change logs sessions read when they poll:

* ``flag_log`` -- ``uid -> (modseq, changer)`` in modseq order: the last flag
  change of each message and which session made it (0 = another process).
* ``expunge_count`` -- grows with every message that disappears; a session
  that saw a different count looks for its vanished UIDs.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from transcoder.files import fsync_dir, write_atomically
from transcoder.store import intake
from transcoder.store.entity_cache import EntityCache
from transcoder.store.flags import KEYWORDS_FILE, Keywords, split_filename
from transcoder.store.group_sync import GroupCommit
from transcoder.store.uidlist import (
    UIDLIST_FILE,
    UIDLIST_LOCK,
    CorruptUidListError,
    FileLock,
    UidList,
    read_uidlist,
    read_version,
    salvage_validity,
)

if TYPE_CHECKING:
    from transcoder.mime.entity import Entity

log = Logger()
#: Changer id of flag changes made by another process (found by a re-scan).
EXTERNAL = 0


@dataclass(frozen=True)
class MessageRecord:
    """One message file: its UID, base name, ``:2,`` info letters, size and mtime."""

    uid: int
    base: str
    info: str
    size: int
    mtime: float

    @property
    def filename(self) -> str:
        """The file's name in ``cur/``."""
        return f"{self.base}:2,{self.info}"


def _arrival_key(name: str) -> tuple[int, str]:
    head = name.split(".", 1)[0]
    return (int(head) if head.isdigit() else 0, name)


def message_file_names(directory: Path) -> set[str]:
    """The names of the message files in ``directory`` (missing dir = none)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return set()
    return {name for name in names if not name.startswith(".") and "\n" not in name}


def _by_base(names: set[str]) -> dict[str, str]:
    """``base -> file name`` of ``names``; of two names with one base, the first sorted."""
    found: dict[str, str] = {}
    for name in sorted(names):
        base, _ = split_filename(name)
        found.setdefault(base, name)  # a duplicate base is ignored, the first kept
    return found


def _listing(directory: Path) -> dict[str, str]:
    """``base -> file name`` of the message files in ``directory`` (missing dir = empty)."""
    return _by_base(message_file_names(directory))


class MailboxIndex:
    """The messages of one mailbox and their files; see the module docstring."""

    def __init__(
        self,
        path: Path,
        name: str,
        clock: IReactorTime,
        allocate_validity: Callable[[int], int],
        entity_cache: EntityCache | None = None,
        rescan_interval: float = 0.0,
        intake_gate: intake.IntakeGate | None = None,
    ) -> None:
        self.path = path
        #: Admits new/ files into the mailbox (None: every file at once), see intake.
        self.intake_gate = intake_gate
        #: Counts expect_change() calls (one during a scan means: look again).
        self._expected = 0
        self.rescan_interval = rescan_interval
        self._listed_at: float | None = None
        self.name = name
        self.clock = clock
        self._allocate_validity = allocate_validity
        self.records: dict[int, MessageRecord] = {}
        self.uids: list[int] = []
        self._by_base: dict[str, int] = {}
        self._uid_of_base: dict[str, int] = {}
        self.validity = 0
        self.next_uid = 1
        self.recent_upto = 0
        #: The highest \\Recent claim in the uid list on disk.
        self.recent_written = 0
        #: The uid list on disk still names files this process expunged.
        self._list_stale = False
        #: Writes the uid list in a worker thread (MailboxState.add_file_durably).
        self._list_writer: GroupCommit | None = None
        #: Base names this process is adding, not shown until durable.
        self._adding: set[str] = set()
        self._generation = 0
        self._version: tuple[int, int] | None = None
        self.keywords = Keywords(path / KEYWORDS_FILE)
        self.modseq = 0
        self.flag_log: dict[int, tuple[int, int]] = {}
        self.expunge_count = 0
        self.deleted = False
        #: Parsed MIME trees (see MaildirMessage.entity), shared with the store's other mailboxes.
        self.entity_cache = EntityCache() if entity_cache is None else entity_cache
        self._entity_owner = self.entity_cache.new_owner()
        self._stamp: tuple[int, int] | None = None
        #: The names in ``cur/`` as of the last scan, with our own changes since
        #: (None: unknown, the next scan compares every message).
        self._names: set[str] | None = None
        self._lock = FileLock(path / UIDLIST_LOCK)
        self._next_session = 1
        intake.remove_stale_tmp(path / "tmp", clock.seconds())
        self.refresh(force=True)

    # -- paths ---------------------------------------------------------------

    @property
    def cur(self) -> Path:
        """The ``cur/`` directory."""
        return self.path / "cur"

    @property
    def tmp(self) -> Path:
        """The ``tmp/`` directory."""
        return self.path / "tmp"

    def file_of(self, uid: int) -> Path | None:
        """The current path of message ``uid``'s file, or None if it is gone."""
        rec = self.records.get(uid)
        return None if rec is None else self.cur / rec.filename

    def flags_of(self, uid: int) -> tuple[str, ...]:
        """The stored flags of message ``uid`` (empty if gone)."""
        rec = self.records.get(uid)
        return () if rec is None else self.keywords.flags(rec.info)

    def cached_entity(self, uid: int) -> Entity | None:
        """The parsed structure of message ``uid`` if it is cached (reactor thread only)."""
        return self.entity_cache.get(self._entity_owner, uid)

    def keep_entity(self, uid: int, entity: Entity) -> None:
        """Cache the parsed structure of message ``uid`` (reactor thread only)."""
        if uid in self.records:
            self.entity_cache.put(self._entity_owner, uid, entity)

    def relocate(self, path: Path, name: str) -> None:
        """The mailbox's directory was renamed (RENAME): follow it."""
        self.path, self.name = path, name
        self.keywords = Keywords(path / KEYWORDS_FILE)
        self._lock = FileLock(path / UIDLIST_LOCK)
        self._stamp = None

    def mark_deleted(self) -> None:
        """The mailbox was deleted: every message is gone for every session."""
        for uid in list(self.uids):
            self._forget(uid)
        self.deleted = True

    # -- scanning ------------------------------------------------------------

    def _dir_stamp(self) -> tuple[int, int] | None:
        try:
            return (os.stat(self.cur).st_mtime_ns, os.stat(self.path / "new").st_mtime_ns)
        except FileNotFoundError:
            return None

    def refresh(self, force: bool = False) -> None:
        """Re-scan the disk if ``cur/`` or ``new/`` changed since the last scan (or ``force``)."""
        if self.deleted:
            return
        now = self.clock.seconds()
        if (
            not force
            and self._listed_at is not None
            and now - self._listed_at < self.rescan_interval
        ):
            # Listed moments ago: this process's own changes are in the state
            # already; another program's wait for the next refresh.
            return
        stamp = self._dir_stamp()
        if stamp is None and not self.cur.is_dir():
            self.mark_deleted()  # removed (or made \Noselect) behind our back
            return
        if not force and stamp is not None and stamp == self._stamp:
            return
        expected = self._expected
        with self._lock.held():
            self._rescan()
        if expected != self._expected:
            return  # the intake gate asked for another look meanwhile
        self._listed_at = now
        settled = self.clock.seconds() - 1.0
        # A directory changed within the last second may change again within
        # the same mtime tick; keep it unsettled so the next refresh looks again.
        if stamp is not None and max(stamp) < settled * 1e9:
            self._stamp = stamp
        else:
            self._stamp = None

    def expect_change(self) -> None:
        """Look at the directories again at the next refresh (the intake gate's answer
        about a ``new/`` file changed)."""
        self._expected += 1
        self._stamp = None
        self._listed_at = None

    def _rescan(self) -> None:
        self.keywords.load()
        dirty = self._sync_uidlist()  # forgets the known names if another writer changed it
        known, self._names = self._names, None  # unknown again should anything below fail
        names = message_file_names(self.cur)
        self._pickup_new(names)
        changed = None if known is None else self._apply_changes(known, names)
        if changed is None:
            changed = self._match_all(names)
        if dirty or changed:
            self._write_uidlist()
        self._names = names

    def _match_all(self, names: set[str]) -> bool:
        """Bring the records in line with ``names``, message by message; True if UIDs changed."""
        cur_files = _by_base(names)
        dirty = False
        for uid in list(self.uids):
            rec = self.records[uid]
            name = cur_files.pop(rec.base, None)
            if name is None or self._uid_of_base.get(rec.base) != uid:
                self._forget(uid)
            elif split_filename(name)[1] != rec.info:
                self._set_info(uid, split_filename(name)[1], EXTERNAL)
        for base in [b for b in self._uid_of_base if b not in cur_files and b not in self._by_base]:
            del self._uid_of_base[base]
            dirty = True
        for base, name in sorted(cur_files.items(), key=lambda item: _arrival_key(item[1])):
            dirty = self._adopt(base, name) or dirty
        return dirty

    def _apply_changes(self, known: set[str], names: set[str]) -> bool | None:
        """Apply only what differs between ``known`` and ``names`` (the usual case).

        ``known`` is what the last scan listed plus this process's own
        renames, unlinks and additions since, so the difference is what other
        programs did: a set difference instead of a pass over every message.
        True if UIDs changed; None (nothing applied) when the difference is
        unusual -- two files with one base name -- and :meth:`_match_all`
        must decide.
        """
        gone, came = known - names, names - known
        if not gone and not came:
            return False
        arrived: dict[str, str] = {}
        for name in came:
            base = split_filename(name)[0]
            if base in arrived:
                return None
            arrived[base] = name
        gone_by_base = {split_filename(name)[0]: name for name in gone}
        if len(gone_by_base) != len(gone):
            return None
        for base in arrived:
            uid = self._by_base.get(base)
            if uid is not None and gone_by_base.get(base) != self.records[uid].filename:
                return None  # a second file for a message we show
        dirty = False
        for base, name in gone_by_base.items():
            uid = self._by_base.get(base)
            if uid is None or self.records[uid].filename != name:
                continue  # a file we never showed
            renamed = arrived.pop(base, None)
            if renamed is None:  # expunged by another program
                self._forget(uid)
                self._uid_of_base.pop(base, None)
                dirty = True
            else:  # flags changed by another program
                self._set_info(uid, split_filename(renamed)[1], EXTERNAL)
        for base, name in sorted(arrived.items(), key=lambda item: _arrival_key(item[1])):
            dirty = self._adopt(base, name) or dirty
        return dirty

    def _own_change(self, old: str | None, new: str | None) -> None:
        """This process renamed, removed or added a file of ``cur/``: keep the known names."""
        if self._names is not None:
            if old is not None:
                self._names.discard(old)
            if new is not None:
                self._names.add(new)

    def _pickup_new(self, names: set[str]) -> None:
        new = self.path / "new"
        arrivals = _listing(new)
        if not arrivals:
            return
        bases = {split_filename(name)[0] for name in names}
        moved = False
        gate = self.intake_gate
        for base, name in sorted(arrivals.items(), key=lambda item: _arrival_key(item[1])):
            src = new / name
            try:
                if base in bases:
                    os.unlink(src)  # already moved before a crash; never twice
                    continue
                if gate is not None and not gate.admit(self, name):
                    continue  # held in new/ (e.g. not yet scanned): unseen, no UID
                target = f"{base}:2,{split_filename(name)[1]}"
                intake.rewrite_canonical(src, self.tmp / (base + ".intake"), self.cur / target)
            except FileNotFoundError:
                continue  # another program took it first
            names.add(target)
            bases.add(base)
            moved = True
        if moved:
            fsync_dir(self.cur)

    def _adopt(self, base: str, name: str) -> bool:
        """Take file ``name`` of ``cur/`` into the records; True if it needed a new UID."""
        if base in self._adding:
            return False  # ours, shown once durable (MailboxState.add_file_durably)
        path = self.cur / name
        uid = self._uid_of_base.get(base)
        try:
            if uid is None:
                intake.rewrite_canonical(path, self.tmp / (base + ".intake"), path)
            st = os.stat(path)
        except FileNotFoundError:
            return False
        fresh = uid is None
        if uid is None:
            uid = self.next_uid
            self.next_uid += 1
            self._uid_of_base[base] = uid
        rec = MessageRecord(uid, base, split_filename(name)[1], st.st_size, st.st_mtime)
        self.records[uid] = rec
        self._by_base[base] = uid
        bisect.insort(self.uids, uid)
        return fresh

    def _forget(self, uid: int) -> None:
        rec = self.records.pop(uid)
        del self.uids[bisect.bisect_left(self.uids, uid)]
        self._by_base.pop(rec.base, None)
        self.flag_log.pop(uid, None)
        self.entity_cache.drop(self._entity_owner, uid)
        self.expunge_count += 1

    def _set_info(self, uid: int, info: str, changer: int) -> None:
        self.records[uid] = dataclasses.replace(self.records[uid], info=info)
        self.modseq += 1
        self.flag_log.pop(uid, None)
        self.flag_log[uid] = (self.modseq, changer)

    # -- the uid list --------------------------------------------------------

    def _sync_uidlist(self) -> bool:
        """Load the uid list if another writer changed it; True if it must be rewritten."""
        if self._list_busy():
            return False  # ours is being written, under our lock: the disk lags it
        path = self.path / UIDLIST_FILE
        version = read_version(path)
        if version is not None and version == self._version:
            return False
        try:
            uidlist = read_uidlist(path)
        except CorruptUidListError:
            log.warn("uid list of {path} is damaged; new UIDVALIDITY", path=str(path))
            uidlist = self._fresh_uidlist(salvage_validity(path))
        if uidlist is None:
            uidlist = self._fresh_uidlist(0)
        recent_upto = uidlist.recent_upto
        if uidlist.validity != self.validity:
            for uid in list(self.uids):  # UIDs of another UIDVALIDITY mean nothing now
                self._forget(uid)
        else:  # our own claims not written yet stay claimed (MailboxState.claim_recent)
            recent_upto = max(recent_upto, self.recent_upto)
        self.validity, self.next_uid = uidlist.validity, uidlist.next_uid
        self.recent_upto, self._generation = recent_upto, uidlist.generation
        self.recent_written = uidlist.recent_upto
        self._version = (uidlist.validity, uidlist.generation)
        self._uid_of_base = {base: uid for uid, base in uidlist.entries}
        # Another writer numbered files: the next scan compares every message
        # against the new list, whatever the directories' times say.
        self._names, self._stamp = None, None
        return uidlist.generation == 0

    def _fresh_uidlist(self, above: int) -> UidList:
        return UidList(self._allocate_validity(above), 1, 0, 0, ())

    def _write_uidlist(self) -> None:
        """Write the uid list now (the caller holds the lock).

        While a write runs in a worker (:meth:`MailboxState.add_file_durably`)
        another one is asked of it instead: writes must land in the order
        they were rendered.
        """
        if self._list_busy():
            assert self._list_writer is not None
            self._list_writer.request()
            return
        path, data = self._render_uidlist()
        write_atomically(path, data)

    def _render_uidlist(self) -> tuple[Path, bytes]:
        """The uid list's path and bytes as of now, counted as written (a new generation)."""
        self._generation += 1
        self._version = (self.validity, self._generation)
        entries = tuple(sorted((uid, base) for base, uid in self._uid_of_base.items()))
        uidlist = UidList(self.validity, self.next_uid, self.recent_upto, self._generation, entries)
        self.recent_written = self.recent_upto
        self._list_stale = False
        return self.path / UIDLIST_FILE, uidlist.render()

    def _list_busy(self) -> bool:
        """A uid list write is running in a worker; this process holds the lock meanwhile."""
        return self._list_writer is not None and self._list_writer.running

    def _list_changed_elsewhere(self) -> bool:
        """Another process wrote the uid list since this one last read or wrote it."""
        if self._list_busy():
            return False  # we hold the lock: nobody else wrote; the disk lags our own write
        return read_version(self.path / UIDLIST_FILE) != self._version
