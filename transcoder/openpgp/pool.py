"""A bound on concurrent gpg processes.

Each transcoding runs in a worker thread of the IMAP layer; many FETCHes at
once would otherwise start as many gpg processes, each wanting a whole CPU
(gpg encrypts at roughly 100 MB/s on one core).  :class:`GpgPool` is a
counting semaphore: a worker blocks in :meth:`GpgPool.slot` until fewer than
``max_concurrent`` gpg processes run.  Blocking: use it in worker threads
only, never in the reactor thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class GpgPool:
    """At most ``max_concurrent`` gpg processes at a time (default: the number of CPUs)."""

    def __init__(self, max_concurrent: int | None = None) -> None:
        if max_concurrent is None:
            max_concurrent = os.cpu_count() or 1
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.max_concurrent = max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._count_lock = threading.Lock()
        self._in_use = 0

    @property
    def in_use(self) -> int:
        """How many slots are taken now."""
        return self._in_use

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the duration of the ``with`` block (blocks until one is free)."""
        self._slots.acquire()
        with self._count_lock:
            self._in_use += 1
        try:
            yield
        finally:
            with self._count_lock:
                self._in_use -= 1
            self._slots.release()

    def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``function(*args, **kwargs)`` while holding a slot."""
        with self.slot():
            return function(*args, **kwargs)
