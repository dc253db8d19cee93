"""Durable writes shared by every command waiting for them (group commit).

A flag change is a rename in ``cur/``, an expunge an unlink, an APPEND a
new link and a uid list rewrite; the tagged OK of the command promises the
change survives a crash, which takes fsyncs.  On a loaded server many
sessions change the same mailbox in the same moment, and each fsync forces
a journal commit (about 0.5 ms of system time here, longer in wall time).
A :class:`GroupCommit` runs the work off the reactor thread and lets every
command that asks while it is under way share the next run:

* a waiter is answered only by a run that *started* after it asked, so the
  changes it made before asking are covered;
* while a run is under way, new waiters queue; when it ends, one run starts
  for all of them.

``prepare`` is called on the reactor thread as a run starts: it returns the
blocking work (what to fsync, the bytes to write, taken then) and what to
call on the reactor thread once that work has ended.  A failed run fails
every command of its batch (they answer NO, not OK).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

#: ``prepare()`` -> (blocking work, reactor-side completion).
Prepare = Callable[[], tuple[Callable[[], object], Callable[[], None]]]


class GroupCommit:
    """Group commit of the work ``prepare`` gives, run with ``run_blocking`` (a worker thread).

    ``run_blocking`` may be replaced between runs (the store's executor).
    """

    def __init__(self, prepare: Prepare, run_blocking: Callable[..., defer.Deferred[Any]]) -> None:
        self._prepare = prepare
        self.run_blocking = run_blocking
        self._waiting: list[defer.Deferred[None]] = []
        self.running = False
        #: Runs started so far (each one serves a whole batch).
        self.count = 0

    def wait(self) -> defer.Deferred[None]:
        """Fires once a run that started after this call has completed."""
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(d)
        if not self.running:
            self._start()
        return d

    def request(self) -> None:
        """Ask for a run nobody waits for (its failure is logged)."""
        self.wait().addErrback(lambda f: log.failure("background durable write failed", f))

    def _start(self) -> None:
        batch, self._waiting = self._waiting, []
        self.running = True
        self.count += 1
        try:
            work, finished = self._prepare()
        except BaseException:
            self.running = False
            failure = Failure()
            for waiter in batch:
                waiter.errback(failure)
            return
        d = defer.maybeDeferred(self.run_blocking, work)
        d.addBoth(self._done, batch, finished)

    def _done(self, result: Any, batch: list[defer.Deferred[None]], finished: Any) -> None:
        self.running = False
        if self._waiting:
            self._start()  # before ``finished``: a lock held across runs is never let go between
        finished()
        for waiter in batch:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)
