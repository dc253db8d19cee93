"""The transcoded view of a message and the cache of views (issue 9: an optimisation only).

Every FETCH of a message -- whole, in partial slices, its size and
structure, in this session and the next -- must describe the same octets
(docs/design.md, invariant 1).  How that holds depends on the transcoder:

* **Deterministic views** (a transcoder with ``deterministic = True`` and a
  view secret, :func:`~transcoder.transcoders.interfaces.is_deterministic`;
  S/MIME and native PGP/MIME): the view is a pure function of its inputs, so a copy is kept only
  to save work.  A lost copy is recomputed identically, so nothing here is
  ever synced.  Small views (at most :data:`SMALL_VIEW` octets) are made on
  the reactor thread and kept in memory, in a byte-capped LRU; large ones
  -- worth keeping because clients fetch them in partial slices -- are
  written to ``DIR/views/volatile/`` without fsync (mostly while they are
  streamed, :mod:`transcoder.imap.view_stream`), and that directory is
  emptied at start (an entry a crash
  left half written is never served).  ``--view-cache-size 0`` keeps no copy
  at all: each FETCH transcodes into memory (small) or a spool file under
  ``DIR/views/spool/`` removed once the view is dropped (large), or streams
  (:mod:`transcoder.imap.view_stream`).
* **Views that cannot be recomputed** (gpg's own randomness in PGP/MIME
  for the keys the native encoder refuses, or no view secret): the copy
  *is* the view.  It is written once to ``DIR/views/`` atomically and
  synced (one file and one fsync per view), survives restarts and is
  served until its key or the settings change.  These are kept whatever
  ``--view-cache-size`` says (up to :data:`DURABLE_FLOOR` when it is 0).

Common to both: the cache key is (account, mailbox UIDVALIDITY, UID, key
fingerprint, transcoder name and settings); a new key or new settings simply
name a different entry.  A key or policy change drops an account's entries
at once (:meth:`ViewCache.invalidate_account`).  Two FETCHes racing for the
same cold entry share one transcoding.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import shutil
import tempfile
import weakref
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

MiB = 1024**2
GiB = 1024**3
#: Views up to this size are made in memory and, when cached, kept there.
#: 256 KiB: a 4 KB message's view is ~6 KB; a client's partial slices of a
#: large message are typically 64-512 KiB, and only larger views are fetched
#: that way, so they alone are worth a file.
SMALL_VIEW = 256 * 1024
#: The memory share of the cache: at most this many octets of small views.
MEMORY_CAP = 64 * MiB
#: Views that cannot be recomputed are kept up to this even with the cache off.
DURABLE_FLOOR = GiB
#: Entry paths remembered, so that a cached hit costs no hashing and no path
#: building (about 600 octets each: at most 2.5 MB).
PATH_MEMO = 4096
#: Subdirectories of the cache root: recomputable large views, and spool files.
VOLATILE = "volatile"
SPOOL = "spool"


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
        return account_directory(self.account) / entry[:2] / (entry + ".eml")


@functools.lru_cache(maxsize=1024)
def account_directory(account: str) -> Path:
    """The account's directory below a cache root (its name is a digest of the account)."""
    digest = hashlib.sha256(account.encode()).hexdigest()[:32]
    return Path(digest[:2], digest)


@implementer(IParsedMessage)
class TranscodedView:
    """A transcoded message in a file: what FETCH serves under policy ALWAYS."""

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


@implementer(IParsedMessage)
class MemoryView:
    """A (small) transcoded message held in memory."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self._entity: Entity | None = None

    def open(self) -> BinaryIO:
        """The view's octets from position 0 (a fresh handle each call)."""
        return io.BytesIO(self.data)

    def entity(self) -> Entity:
        """The MIME structure of the view (parsed once, cached)."""
        if self._entity is None:
            self._entity = parse_message(self.open())
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


class _DiskEntries:
    """The files of one tier (durable or volatile) under ``root``: an LRU capped in octets."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.lru: OrderedDict[Path, int] = OrderedDict()
        self.total = 0

    def load(self) -> None:
        """Rebuild the LRU order from the files a previous run left (oldest use first)."""
        found = []
        for path in self.root.rglob("*.eml"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            found.append((st.st_mtime, path, st.st_size))
        for _, path, size in sorted(found):
            self.lru[path] = size
            self.total += size

    def touch(self, path: Path) -> int | None:
        """The size of a kept entry, its use recorded; None if absent (or its file gone)."""
        size = self.lru.get(path)
        if size is None:
            return None
        try:
            # One system call both checks that the file is still there and
            # records the use, so that the LRU order survives a restart.
            os.utime(path)
        except FileNotFoundError:
            self.total -= self.lru.pop(path)
            return None
        self.lru.move_to_end(path)
        return size

    def add(self, path: Path, size: int) -> None:
        """Record a new entry and evict the least recently used ones over the cap."""
        self.lru[path] = size
        self.total += size
        while self.total > self.max_bytes and len(self.lru) > 1:
            oldest, old_size = next(iter(self.lru.items()))
            if oldest == path:
                self.lru.move_to_end(oldest)
                continue
            del self.lru[oldest]
            self.total -= old_size
            oldest.unlink(missing_ok=True)

    def forget_under(self, directory: Path) -> None:
        """Forget the entries below ``directory`` (its files are removed by the caller)."""
        for path in [p for p in self.lru if directory in p.parents]:
            self.total -= self.lru.pop(path)


class _MemoryEntries:
    """Small views in memory: an LRU capped in octets."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.lru: OrderedDict[ViewKey, MemoryView] = OrderedDict()
        self.total = 0

    def get(self, key: ViewKey) -> MemoryView | None:
        view = self.lru.get(key)
        if view is not None:
            self.lru.move_to_end(key)
        return view

    def add(self, key: ViewKey, view: MemoryView) -> None:
        if view.size > self.max_bytes or key in self.lru:
            return
        self.lru[key] = view
        self.total += view.size
        while self.total > self.max_bytes:
            _, oldest = self.lru.popitem(last=False)
            self.total -= oldest.size

    def forget_account(self, account: str) -> None:
        for key in [k for k in self.lru if k.account == account]:
            self.total -= self.lru.pop(key).size


class ViewCache:
    """The cache of transcoded views under ``root`` (see the module docstring).

    ``max_bytes`` caps the recomputable views kept (0: none is kept; small
    ones take at most :data:`MEMORY_CAP` of it, in memory); views that
    cannot be recomputed are kept on disk up to ``max_bytes`` or
    :data:`DURABLE_FLOOR` when it is 0.  ``run_blocking(f, *args)`` runs
    transcoding off the reactor thread (``deferToThreadPool`` in the
    service; synchronous in protocol tests).  ``streams`` starts a
    transcoding that is sent as it is made (:mod:`transcoder.imap.view_stream`),
    or is None where there is no reactor to stream on.
    """

    def __init__(
        self,
        root: Path,
        run_blocking: Callable[..., defer.Deferred[Any]],
        max_bytes: int = GiB,
        streams: Any = None,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.streams = streams
        self._run_blocking = run_blocking
        self._inflight: dict[ViewKey, SharedResult] = {}
        self._durable = _DiskEntries(root, max_bytes or DURABLE_FLOOR)
        self._volatile = _DiskEntries(root / VOLATILE, max_bytes)
        self._memory = _MemoryEntries(min(max_bytes, MEMORY_CAP))
        #: The key of every volatile entry made by this process (all of them: that tier is
        #: emptied at start), so a lookup builds no path for a view never kept there.
        #: Evicted ones linger until looked up or pruned (:meth:`_kept_volatile`).
        self._volatile_keys: dict[ViewKey, Path] = {}
        self._trash_count = 0
        self._prepare()

    @property
    def enabled(self) -> bool:
        """Whether recomputable views are kept at all (``--view-cache-size`` above 0)."""
        return self.max_bytes > 0

    def _prepare(self) -> None:
        """Clear what a previous run left that must not be served, and index the rest."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in (VOLATILE, SPOOL):
            # Recomputable entries were never synced: one a crash cut short
            # could look whole.  They are dropped; spool files are unreferenced.
            shutil.rmtree(self.root / name, ignore_errors=True)
            (self.root / name).mkdir(mode=0o700)
        for trash in self.root.glob("*/*.trash*"):
            shutil.rmtree(trash, ignore_errors=True)  # an invalidation a crash interrupted
        for stale in self.root.rglob("*.tmp"):
            stale.unlink(missing_ok=True)  # a transcoding a crash interrupted
        self._durable.load()

    @property
    def total_bytes(self) -> int:
        """Octets held by the cache now: on disk and in memory."""
        return self._durable.total + self._volatile.total + self._memory.total

    @property
    def memory_bytes(self) -> int:
        """Octets of small views held in memory now."""
        return self._memory.total

    def run_blocking(self, f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """Run ``f(*args)`` where the cache runs its transcodings (a worker thread)."""
        return self._run_blocking(f, *args)

    def lookup(self, key: ViewKey) -> TranscodedView | MemoryView | None:
        """The cached view for ``key`` (its use recorded), or ``None``: no transcoding here."""
        view = self._memory.get(key)
        if view is not None:
            return view
        path = self._volatile_keys.get(key)
        if path is not None:
            size = self._volatile.touch(path)
            if size is not None:
                return TranscodedView(path, size)
            del self._volatile_keys[key]  # evicted
        if self._durable.lru:  # else no path to compute (a cold FETCH's common case)
            path = self._durable.root / _relative_path(key)
            size = self._durable.touch(path)
            if size is not None:
                return TranscodedView(path, size)
        return None

    def _kept_volatile(self, key: ViewKey, view: TranscodedView) -> None:
        """Record a volatile entry (made by this process); forget keys of evicted ones."""
        if view.path not in self._volatile.lru:
            self._volatile.add(view.path, view.size)
        self._volatile_keys[key] = view.path
        if len(self._volatile_keys) > 2 * len(self._volatile.lru) + 64:
            lru = self._volatile.lru
            self._volatile_keys = {k: p for k, p in self._volatile_keys.items() if p in lru}

    def pending(self, key: ViewKey) -> defer.Deferred[Any] | None:
        """The view being made for ``key`` by another FETCH, if any (shared)."""
        shared = self._inflight.get(key)
        return None if shared is None else shared.fork()

    def get(
        self, key: ViewKey, transcode: Transcode, durable: bool = True, small: bool = False
    ) -> defer.Deferred[Any]:
        """The view for ``key``: from the cache, or made by ``transcode(out) -> size`` once.

        ``durable``: the view cannot be recomputed identically, so it is
        written to disk and synced.  Otherwise ``small`` views are made in
        memory and large ones in a file (volatile when cached, else spooled).
        """
        cached = self.lookup(key)
        if cached is not None:
            return defer.succeed(cached)
        shared = self._inflight.get(key)
        if shared is None:  # else another FETCH is transcoding this entry: share it
            work = self._start(key, transcode, durable, small)
            shared = SharedResult(work.addBoth(self._landed, key, durable))
            if not shared.done:
                self._inflight[key] = shared
        return shared.fork()

    def _start(
        self, key: ViewKey, transcode: Transcode, durable: bool, small: bool
    ) -> defer.Deferred[Any]:
        if durable:
            path = self.root / _relative_path(key)
            return self._run_blocking(_materialize, path, transcode, True)
        if small:
            # On the calling (reactor) thread: for a view of a few KB the
            # thread hop and the GIL hand-offs cost more than the work (1,000
            # cold 4 KB views: 0.49-0.53 s inline, 0.76-0.80 s in the pool);
            # the FETCH gives the reactor back every 2 ms (fetch_stream.SLICE).
            return defer.maybeDeferred(_in_memory, transcode)
        if self.enabled:
            path = self.root / VOLATILE / _relative_path(key)
            return self._run_blocking(_materialize, path, transcode, False)
        return self._run_blocking(_spooled, self.root / SPOOL, transcode)

    def _landed(self, outcome: Any, key: ViewKey, durable: bool) -> Any:
        self._inflight.pop(key, None)
        if isinstance(outcome, MemoryView):
            if self.enabled and outcome.size <= SMALL_VIEW:
                self._memory.add(key, outcome)
        elif isinstance(outcome, _SpooledView):
            pass  # kept by nothing but the FETCH serving it
        elif isinstance(outcome, TranscodedView):
            if durable:
                self._durable.add(outcome.path, outcome.size)
            else:
                self._kept_volatile(key, outcome)
        return outcome

    def stream(self, key: ViewKey, transcode: Transcode, size: int) -> Any:
        """Start ``transcode`` as a stream (:mod:`transcoder.imap.view_stream`); the ViewStream.

        When the cache is on and the view fits it, the stream also writes the
        view into the cache.  A stream its reader left early (a partial
        FETCH) finishes that copy alone; FETCHes of the view meanwhile wait
        for it (:meth:`pending`) rather than encrypt it again.
        """
        keep = None
        if self.enabled and size <= self.max_bytes:
            keep = self.root / VOLATILE / _relative_path(key)
        stream = self.streams(transcode, keep)
        if keep is None:
            return stream
        landed: list[defer.Deferred[Any]] = []

        def detached() -> None:
            if key not in self._inflight:
                landed.append(defer.Deferred())
                self._inflight[key] = SharedResult(landed[0])

        def kept(outcome: Any) -> None:
            if landed:
                self._inflight.pop(key, None)
            if isinstance(outcome, TranscodedView):
                self._kept_volatile(key, outcome)
            if not landed:
                return None
            if isinstance(outcome, TranscodedView):
                landed[0].callback(outcome)
            else:  # a failure: the waiters make the view themselves
                landed[0].errback(
                    outcome
                    if isinstance(outcome, Failure)
                    else Failure(LookupError("streamed view not kept"))
                )
            return None

        stream.on_detach = detached
        stream.kept.addBoth(kept)
        return stream

    def invalidate_account(self, account: str) -> None:
        """Drop every view of ``account`` (its key or policy changed).

        The account's directories are renamed aside at once and removed off
        the reactor thread, so a large cache does not stall other clients.
        """
        relative = account_directory(account)
        self._memory.forget_account(account)
        for key in [k for k in self._volatile_keys if k.account == account]:
            del self._volatile_keys[key]
        for tier in (self._durable, self._volatile):
            account_dir = tier.root / relative
            tier.forget_under(account_dir)
            self._trash_count += 1
            trash = account_dir.with_name(f"{account_dir.name}.trash{self._trash_count}")
            try:
                account_dir.rename(trash)
            except FileNotFoundError:
                continue
            self._run_blocking(shutil.rmtree, trash, True)


@functools.lru_cache(maxsize=PATH_MEMO)
def _relative_path(key: ViewKey) -> Path:
    """``key.relative_path()``, memoised: FETCH asks for the same keys again and again."""
    return key.relative_path()


def _materialize(path: Path, transcode: Transcode, durable: bool) -> TranscodedView:
    """Run ``transcode`` into a temporary file and publish it atomically (worker thread).

    ``durable``: synced before it is published, for a view that cannot be
    recomputed; a recomputable one is not (a crash loses it, and its
    directory is emptied at start).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{id(path)}.tmp")
    try:
        with open(tmp, "wb") as out:
            size = transcode(out)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return TranscodedView(path, size)


def _in_memory(transcode: Transcode) -> MemoryView:
    """Run ``transcode`` into memory (worker thread)."""
    out = io.BytesIO()
    transcode(out)
    return MemoryView(out.getvalue())


class _SpooledView(TranscodedView):
    """A view in a spool file that is removed once nothing refers to the view any more."""

    def __init__(self, path: Path, size: int) -> None:
        super().__init__(path, size)
        weakref.finalize(self, path.unlink, missing_ok=True)


def _spooled(directory: Path, transcode: Transcode) -> _SpooledView:
    """Run ``transcode`` into a fresh spool file (worker thread)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(suffix=".eml", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            size = transcode(out)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return _SpooledView(path, size)
