"""The transcoded view of a message and the on-disk cache that keeps it byte-stable.

Encryption is randomised, yet an IMAP message must never change under a
client (docs/design.md, invariant 1): every FETCH of a message -- whole, in
partial slices, its size and structure, in this session and the next -- must
describe the same octets.  So a view is transcoded once, written to
``DIR/views/`` atomically, and served from there until its key or the
transcoder's settings change:

* the cache key is (account, mailbox UIDVALIDITY, UID, key fingerprint,
  transcoder name and settings); a new key or new settings simply name a
  different entry;
* entries live in one directory per account, so a key or policy change
  drops them all with one ``rmtree`` (:meth:`ViewCache.invalidate_account`);
* the cache is size-capped and evicts the least recently used entries;
* two FETCHes racing for the same cold entry share one transcoding.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from transcoder.mime.entity import Entity, parse_message
from transcoder.store.interfaces import IParsedMessage

log = Logger()

GiB = 1024**3
#: Entry paths remembered, so that a cached hit costs no hashing and no path
#: building (about 600 octets each: at most 2.5 MB).
PATH_MEMO = 4096


@dataclass(frozen=True)
class ViewKey:
    """Everything that determines a transcoded view's octets."""

    account: str
    uidvalidity: int
    uid: int
    fingerprint: str
    transcoder: str
    settings_id: str

    def relative_path(self) -> Path:
        """Where the entry lives below the cache root: one directory per account."""
        account = hashlib.sha256(self.account.encode()).hexdigest()[:32]
        entry = hashlib.sha256(
            "\0".join(
                (
                    str(self.uidvalidity),
                    str(self.uid),
                    self.fingerprint,
                    self.transcoder,
                    self.settings_id,
                )
            ).encode()
        ).hexdigest()
        return Path(account[:2], account, entry[:2], entry + ".eml")


@implementer(IParsedMessage)
class TranscodedView:
    """A transcoded message on disk: what FETCH serves under policy ALWAYS."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._entity: Entity | None = None

    def open(self) -> BinaryIO:
        """The view's octets from position 0 (a fresh handle each call)."""
        return open(self.path, "rb")

    def entity(self) -> Entity:
        """The MIME structure of the view (parsed once, cached)."""
        if self._entity is None:
            with self.open() as fp:
                self._entity = parse_message(fp)
        return self._entity


Transcode = Callable[[BinaryIO], int]


class SharedResult:
    """One Deferred's result handed to any number of later waiters.

    The source Deferred's chain ends here, so a failure is never left
    unhandled; each :meth:`fork` gets the outcome, now or when it comes.
    """

    _pending = object()

    def __init__(self, source: defer.Deferred[Any]) -> None:
        self._result: Any = self._pending
        self._waiters: list[defer.Deferred[Any]] = []
        source.addBoth(self._arrived)

    def _arrived(self, result: Any) -> None:
        self._result = result
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._deliver(waiter)

    def _deliver(self, waiter: defer.Deferred[Any]) -> None:
        if isinstance(self._result, Failure):
            waiter.errback(self._result)
        else:
            waiter.callback(self._result)

    @property
    def done(self) -> bool:
        """Whether the outcome has arrived."""
        return self._result is not self._pending

    @property
    def succeeded(self) -> bool:
        """Whether the outcome has arrived and is a result, not a failure."""
        return self._result is not self._pending and not isinstance(self._result, Failure)

    @property
    def result(self) -> Any:
        """The outcome, once :attr:`succeeded` (no Deferred needed to read it then)."""
        if not self.succeeded:
            raise LookupError("no result yet")
        return self._result

    def fork(self) -> defer.Deferred[Any]:
        """A new Deferred firing with the shared outcome."""
        waiter: defer.Deferred[Any] = defer.Deferred()
        if self._result is self._pending:
            self._waiters.append(waiter)
        else:
            self._deliver(waiter)
        return waiter


class ViewCache:
    """Size-capped, LRU, restart-surviving cache of transcoded views under ``root``.

    ``run_blocking(f, *args)`` runs transcoding off the reactor thread
    (``deferToThreadPool`` in the service; synchronous in protocol tests).
    """

    def __init__(
        self,
        root: Path,
        run_blocking: Callable[..., defer.Deferred[Any]],
        max_bytes: int = GiB,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._run_blocking = run_blocking
        self._inflight: dict[Path, SharedResult] = {}
        self._lru: OrderedDict[Path, int] = OrderedDict()
        self._total = 0
        self._trash_count = 0
        self._load_index()

    def _load_index(self) -> None:
        """Rebuild the LRU order from the files a previous run left (oldest use first)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for trash in self.root.glob("*/*.trash*"):
            shutil.rmtree(trash, ignore_errors=True)  # an invalidation a crash interrupted
        found = []
        for path in self.root.rglob("*.eml"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            found.append((st.st_mtime, path, st.st_size))
        for stale in self.root.rglob("*.tmp"):
            stale.unlink(missing_ok=True)  # a transcoding a crash interrupted
        for _, path, size in sorted(found):
            self._lru[path] = size
            self._total += size

    @property
    def total_bytes(self) -> int:
        """Octets held by the cache now."""
        return self._total

    def run_blocking(self, f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """Run ``f(*args)`` where the cache runs its transcodings (a worker thread)."""
        return self._run_blocking(f, *args)

    def lookup(self, key: ViewKey) -> TranscodedView | None:
        """The cached view for ``key`` (its use recorded), or ``None``: no transcoding here."""
        path = _entry_path(self.root, key)
        size = self._lru.get(path)
        if size is not None and self._touch(path):
            return TranscodedView(path, size)
        return None

    def get(self, key: ViewKey, transcode: Transcode) -> defer.Deferred[TranscodedView]:
        """The view for ``key``: from disk, or made by ``transcode(out) -> size`` once."""
        cached = self.lookup(key)
        if cached is not None:
            return defer.succeed(cached)
        path = _entry_path(self.root, key)
        shared = self._inflight.get(path)
        if shared is None:  # else another FETCH is transcoding this entry: share it
            work = self._run_blocking(_materialize, path, transcode)
            shared = SharedResult(work.addBoth(self._landed, path))
            if not shared.done:
                self._inflight[path] = shared
        return shared.fork()

    def _landed(self, outcome: Any, path: Path) -> Any:
        self._inflight.pop(path, None)
        if isinstance(outcome, TranscodedView):
            self._lru[path] = outcome.size
            self._total += outcome.size
            self._evict(keep=path)
        return outcome

    def _touch(self, path: Path) -> bool:
        """Mark a cached entry used; False (and forget it) if its file has gone."""
        try:
            # One system call both checks that the file is still there and
            # records the use, so that the LRU order survives a restart.
            os.utime(path)
        except FileNotFoundError:
            self._total -= self._lru.pop(path)
            return False
        self._lru.move_to_end(path)
        return True

    def _evict(self, keep: Path) -> None:
        while self._total > self.max_bytes and len(self._lru) > 1:
            oldest, size = next(iter(self._lru.items()))
            if oldest == keep:
                self._lru.move_to_end(oldest)
                continue
            del self._lru[oldest]
            self._total -= size
            oldest.unlink(missing_ok=True)

    def invalidate_account(self, account: str) -> None:
        """Drop every view of ``account`` (its key or policy changed).

        The account's directory is renamed aside at once and removed off the
        reactor thread, so a large cache does not stall other clients.
        """
        probe = ViewKey(account, 0, 0, "", "", "").relative_path()
        account_dir = self.root / probe.parts[0] / probe.parts[1]
        for path in [p for p in self._lru if account_dir in p.parents]:
            self._total -= self._lru.pop(path)
        self._trash_count += 1
        trash = account_dir.with_name(f"{account_dir.name}.trash{self._trash_count}")
        try:
            account_dir.rename(trash)
        except FileNotFoundError:
            return
        self._run_blocking(shutil.rmtree, trash, True)


@functools.lru_cache(maxsize=PATH_MEMO)
def _entry_path(root: Path, key: ViewKey) -> Path:
    """``root / key.relative_path()``, memoised: FETCH asks for the same keys again and again."""
    return root / key.relative_path()


def _materialize(path: Path, transcode: Transcode) -> TranscodedView:
    """Run ``transcode`` into a temporary file and publish it atomically (worker thread)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{id(path)}.tmp")
    try:
        with open(tmp, "wb") as out:
            size = transcode(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return TranscodedView(path, size)
