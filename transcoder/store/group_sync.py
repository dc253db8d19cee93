"""One directory fsync shared by every command waiting for it (group commit).

A flag change is a rename in ``cur/``; the tagged OK of a STORE promises it
survives a crash, which takes an fsync of the directory.  On a loaded server
many sessions change flags in the same moment, and each fsync forces a
journal commit (about 0.5 ms of system time here, longer in wall time).  A
:class:`GroupSync` runs the fsync off the reactor thread and lets every
command that asks while one is under way share the next one:

* a waiter is answered only by an fsync that *started* after it asked, so
  the renames it made before asking are covered;
* while an fsync runs, new waiters queue; when it ends, one fsync starts for
  all of them.

A failed fsync fails every command of its batch (they answer NO, not OK).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from transcoder.files import fsync_dir


class GroupSync:
    """Group commit of ``fsync(directory())``, run with ``run_blocking`` (a worker thread).

    ``run_blocking`` may be replaced between fsyncs (the store's executor).
    """

    def __init__(
        self,
        directory: Callable[[], Path],
        run_blocking: Callable[..., defer.Deferred[Any]],
        started: Callable[[], None] = lambda: None,
    ) -> None:
        self._directory = directory
        self.run_blocking = run_blocking
        self._started = started
        self._waiting: list[defer.Deferred[None]] = []
        self.running = False
        #: fsyncs started so far (each one serves a whole batch).
        self.count = 0

    def wait(self) -> defer.Deferred[None]:
        """Fires once an fsync that started after this call has completed."""
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(d)
        if not self.running:
            self._start()
        return d

    def _start(self) -> None:
        batch, self._waiting = self._waiting, []
        self.running = True
        self.count += 1
        self._started()
        d = defer.maybeDeferred(self.run_blocking, fsync_dir, self._directory())
        d.addBoth(self._done, batch)

    def _done(self, result: Any, batch: list[defer.Deferred[None]]) -> None:
        self.running = False
        for waiter in batch:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)
        if self._waiting:
            self._start()
