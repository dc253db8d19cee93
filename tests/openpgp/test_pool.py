"""GpgPool: a bound on how many gpg processes run at once."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from transcoder.openpgp.pool import GpgPool


def test_default_is_one_slot_per_cpu() -> None:
    """Without an argument the pool allows as many processes as there are CPUs."""
    assert GpgPool().max_concurrent == (os.cpu_count() or 1)


@pytest.mark.parametrize("bad", [0, -1])
def test_needs_at_least_one_slot(bad: int) -> None:
    """A pool of no slots would block forever: refused."""
    with pytest.raises(ValueError):
        GpgPool(bad)


def test_never_more_than_max_concurrent() -> None:
    """Eight workers through a pool of two: at most two run inside at any moment, all finish."""
    pool = GpgPool(2)
    lock = threading.Lock()
    inside = peak = 0

    def work(i: int) -> int:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        time.sleep(0.02)
        with lock:
            inside -= 1
        return i

    with ThreadPoolExecutor(8) as executor:
        results = list(executor.map(lambda i: pool.run(work, i), range(8)))
    assert results == list(range(8))
    assert peak == 2
    assert pool.in_use == 0


def test_slot_released_on_error() -> None:
    """An exception inside a slot gives the slot back."""
    pool = GpgPool(1)
    with pytest.raises(RuntimeError), pool.slot():
        raise RuntimeError("gpg broke")
    assert pool.in_use == 0
    with pool.slot():
        assert pool.in_use == 1
