"""The state of one Maildir mailbox, shared by every session of this process.

:class:`MailboxState` is the single owner of a mailbox's in-memory picture
(:class:`~transcoder.store.index.MailboxIndex`) and makes every change to it:
flags (file renames), expunges (unlinks), new messages (tmp/ -> cur/ with the
next UID), \\Recent claims.  Sessions hold the state and learn of each
other's changes through its change logs when they poll.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall

from transcoder.errors import MailboxNotFoundTryCreate, StoreError
from transcoder.files import fsync_dir, write_atomically
from transcoder.store.flags import KEYWORDS_FILE
from transcoder.store.group_sync import GroupCommit
from transcoder.store.index import MailboxIndex, MessageRecord

#: Seconds within which a \\Recent claim or an expunge reaches the uid list
#: (see MailboxState.claim_recent and remove).
LIST_SAVE_DELAY = 1.0


def _move_no_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (a hard link never overwrites)."""
    try:
        os.link(src, dst)
    except (FileExistsError, FileNotFoundError):
        raise
    except OSError:  # a file system without hard links
        if dst.exists():
            raise FileExistsError(dst) from None
        os.rename(src, dst)
    else:
        os.unlink(src)


class MailboxState(MailboxIndex):
    """One mailbox as this process sees it, and every change made to it."""

    _cur_unsynced = False
    _list_save: IDelayedCall | None = None
    _group: GroupCommit | None = None

    def new_session_id(self) -> int:
        """A number identifying a session as the author of flag changes."""
        self._next_session += 1
        return self._next_session

    # -- changes -------------------------------------------------------------

    def claim_recent(self, uids: Iterable[int]) -> set[int]:
        """Mark ``uids`` as announced; returns those no session was told of before (\\Recent).

        The claim is made in memory at once and written to the uid list
        within :data:`LIST_SAVE_DELAY` -- with the list's next write (an
        APPEND, an EXPUNGE) or on its own -- instead of an fsync'ed rewrite
        per message announced, which cost as much as the APPEND itself.
        What that gives up (RFC 3501 section 2.3.2 leaves it open which
        session sees \\Recent): after a crash in that second a message is
        \\Recent once more, and another process on the same Maildir sees
        the claim only once it is written.
        """
        candidates = [uid for uid in uids if uid > self.recent_upto]
        if not candidates or self.deleted:
            return set()
        if self._list_changed_elsewhere():
            with self._lock.held():
                self._sync_uidlist()  # another process's claims first
        claimed = {uid for uid in candidates if uid > self.recent_upto}
        if claimed:
            self.recent_upto = max(claimed)
            self._save_later()
        return claimed

    def _save_later(self) -> None:
        if self._list_save is None or not self._list_save.active():
            self._list_save = self.clock.callLater(LIST_SAVE_DELAY, self.save_list)

    def save_list(self) -> None:
        """Write what the uid list lacks: \\Recent claims, entries of expunged messages."""
        if self._list_save is not None and self._list_save.active():
            self._list_save.cancel()
        self._list_save = None
        if self.deleted or not (self.recent_upto > self.recent_written or self._list_stale):
            return
        with self._lock.held():
            self._sync_uidlist()
            if not (self.recent_upto > self.recent_written or self._list_stale):
                return
            if self._list_writer is not None:  # the server's: written in a worker, in order
                self._list_writer.request()
            else:
                self._write_uidlist()

    def register_keywords(self, flags: Iterable[str]) -> None:
        """Give letters to the keywords among ``flags`` (raises KeywordLimit when full)."""
        keywords = [flag for flag in flags if not flag.startswith("\\")]
        self.keywords.load()
        if all(self.keywords.knows(k) for k in keywords):
            return
        with self._lock.held():
            self.keywords.register(keywords)

    def set_flags(
        self, uid: int, flags: Callable[[tuple[str, ...]], Iterable[str]], changer: int
    ) -> tuple[str, ...] | None:
        """Store ``flags(current)`` on message ``uid``; the new flags, or None if it is gone."""
        for attempt in (1, 2):
            rec = self.records.get(uid)
            if rec is None:
                return None
            new = tuple(flags(self.keywords.flags(rec.info)))
            info = self.keywords.info(new, keep=rec.info)
            if info == rec.info:
                return self.keywords.flags(info)
            target = f"{rec.base}:2,{info}"
            try:
                os.rename(self.cur / rec.filename, self.cur / target)
            except FileNotFoundError:
                if attempt == 2:
                    return None
                self.refresh(force=True)  # renamed or removed by another program
                continue
            self._own_change(rec.filename, target)
            self._cur_unsynced = True
            self._set_info(uid, info, changer)
            return self.keywords.flags(info)
        return None

    def sync_flags(self) -> None:
        """Make the flag changes (and expunges) so far durable: one fsync of ``cur/``.

        A flag change is a rename, an expunge an unlink; the tagged OK of the
        command that made it promises it survives a crash, so the command
        calls this once, after its last change and before its answer.
        """
        if self._cur_unsynced:
            self._cur_unsynced = False
            fsync_dir(self.cur)

    def flags_durable(self, run_blocking: Callable[..., Any]) -> defer.Deferred[None]:
        """Like :meth:`sync_flags`, off the reactor thread and shared (:mod:`.group_sync`).

        Fires once every flag change made so far is durable.
        """
        if self._group is None:
            self._group = GroupCommit(self._prepare_cur_sync, run_blocking)
        self._group.run_blocking = run_blocking
        if not self._cur_unsynced and not self._group.running:
            return defer.succeed(None)
        return self._group.wait()

    def _prepare_cur_sync(self) -> tuple[Callable[[], object], Callable[[], None]]:
        """An fsync of ``cur/`` is starting: it covers every rename and unlink made until now."""
        self._cur_unsynced = False
        cur = self.cur
        return (lambda: fsync_dir(cur)), (lambda: None)

    def remove(self, uids: Iterable[int], sync: bool = True) -> None:
        """Delete the files of ``uids`` and forget them (EXPUNGE).

        The unlinks are durable when this returns (one fsync of ``cur/``)
        unless ``sync`` is false: then the caller waits for
        :meth:`flags_durable`, which covers them too.  The uid list drops
        the expunged entries within :data:`LIST_SAVE_DELAY` (with its next
        write, or on its own): until then it names files that are gone, which
        every reader skips, and an fsync'ed rewrite per EXPUNGE is spared.
        """
        with self._lock.held():
            self._sync_uidlist()
            missed = self._unlink(uids)
            if missed:
                self._rescan()  # renamed by another program meanwhile: find the new names
                self._unlink(missed)
        self._list_stale = True
        self._save_later()
        self._cur_unsynced = True
        if sync:
            self.sync_flags()

    def _unlink(self, uids: Iterable[int]) -> list[int]:
        missed = []
        for uid in list(uids):
            rec = self.records.get(uid)
            if rec is None:
                continue
            try:
                os.unlink(self.cur / rec.filename)
            except FileNotFoundError:
                missed.append(uid)
                continue
            self._own_change(rec.filename, None)
            self._forget(uid)
            self._uid_of_base.pop(rec.base, None)
        return missed

    def move_all(self, dest: Path) -> list[tuple[int, str]]:
        """Move every message into the mailbox directory ``dest`` (RENAME INBOX, RFC 3501 6.3.5).

        Returns the ``(uid, base name)`` of each message moved; the keyword
        table is copied first so the file names keep their meaning.
        """
        moved: list[tuple[int, str]] = []
        with self._lock.held():
            self._rescan()
            if (self.path / KEYWORDS_FILE).exists():
                shutil.copyfile(self.path / KEYWORDS_FILE, dest / KEYWORDS_FILE)
            for uid in list(self.uids):
                rec = self.records[uid]
                try:
                    os.rename(self.cur / rec.filename, dest / "cur" / rec.filename)
                except FileNotFoundError:
                    continue
                self._own_change(rec.filename, None)
                moved.append((uid, rec.base))
                self._forget(uid)
                self._uid_of_base.pop(rec.base, None)
            fsync_dir(dest / "cur")
            self._write_uidlist()
        return moved

    def add_file(self, tmp_name: str, flags: Iterable[str]) -> int:
        """Move ``tmp/<tmp_name>`` into ``cur/`` with ``flags`` and give it the next UID.

        Durable when it returns: ``cur/`` and the uid list are fsync'ed on
        the calling thread (see :meth:`add_file_durably` for the server's way).
        """
        with self._lock.held():
            rec = self._link_new(tmp_name, flags)
            fsync_dir(self.cur)
            self._write_uidlist()
        self._show(rec)
        return rec.uid

    def add_file_durably(
        self, tmp_name: str, flags: Iterable[str], run_blocking: Callable[..., Any]
    ) -> defer.Deferred[int]:
        """:meth:`add_file` whose fsyncs run off the reactor thread, shared (group commit).

        The UID is taken and the file linked at once, under the uid list
        lock, which stays held until the list is on disk (so no other
        process can read a list without it).  The Deferred fires with the
        UID once ``cur/`` and the list are durable; only then do sessions
        see the message, so no client learns a UID a crash could undo.
        """
        with self._lock.held():
            rec = self._link_new(tmp_name, flags)
            self._adding.add(rec.base)
            if self._list_writer is None:
                self._list_writer = GroupCommit(self._prepare_list_write, run_blocking)
            self._list_writer.run_blocking = run_blocking
            d = self._list_writer.wait()

        def shown(_: object) -> int:
            self._adding.discard(rec.base)
            self._show(rec)
            return rec.uid

        def failed(failure: Any) -> Any:
            self._adding.discard(rec.base)
            self._names = None  # the file is in cur/: the next scan decides about it
            return failure

        return d.addCallbacks(shown, failed)

    def _link_new(self, tmp_name: str, flags: Iterable[str]) -> MessageRecord:
        """Under the lock: the file into ``cur/``, its UID taken; not yet shown to sessions."""
        flags = tuple(flags)
        if self.deleted:
            self.discard_tmp(tmp_name)
            raise MailboxNotFoundTryCreate(f"Mailbox {self.name} no longer exists")
        if self._list_changed_elsewhere():
            self._rescan()  # lower UIDs another process assigned must be known first
        self.keywords.register([f for f in flags if not f.startswith("\\")])
        info = self.keywords.info(flags)
        base = tmp_name
        while base in self._uid_of_base or base in self._by_base:
            base += "_"  # never replace another message, however unlikely the clash
        target = self.cur / f"{base}:2,{info}"
        try:
            _move_no_replace(self.tmp / tmp_name, target)
            st = os.stat(target)
        except FileNotFoundError as e:
            raise StoreError(f"message file vanished while adding to {self.name}") from e
        self._own_change(None, target.name)
        uid = self.next_uid
        self.next_uid += 1
        self._uid_of_base[base] = uid
        return MessageRecord(uid, base, info, st.st_size, st.st_mtime)

    def _show(self, rec: MessageRecord) -> None:
        """Sessions see the message from their next poll (unless a re-scan showed it first)."""
        if rec.uid in self.records or self.deleted:
            return
        self.records[rec.uid] = rec
        self._by_base[rec.base] = rec.uid
        bisect.insort(self.uids, rec.uid)

    def _prepare_list_write(self) -> tuple[Callable[[], object], Callable[[], None]]:
        """A uid list write is starting: the lock is held until it ends, the list rendered now."""
        lock = self._lock
        lock.acquire()
        try:
            path, data = self._render_uidlist()
        except BaseException:
            lock.release()
            raise
        cur = self.cur

        def work() -> None:
            fsync_dir(cur)  # the new links first, then the list naming them
            write_atomically(path, data)

        return work, lock.release

    def discard_tmp(self, tmp_name: str) -> None:
        """Remove a ``tmp/`` file whose message will not be added after all."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp / tmp_name)
