"""The view cache for recomputable views (issue 9): memory for small, unsynced files for large.

A deterministic view can be dropped and made again identically, so the cache
keeps small ones in memory, large ones in ``views/volatile/`` without fsync,
and nothing at all with ``max_bytes=0``; views that cannot be recomputed
(``durable=True``) stay one synced file each, whatever the cap.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from twisted.internet import defer

from tests.imap.test_view import key, read, result, sync
from transcoder.imap.view import MEMORY_CAP, SMALL_VIEW, ViewCache


class Derived:
    """A deterministic transcoder stand-in: octets that depend on the key only; counts calls."""

    def __init__(self, size: int, seed: bytes = b"view") -> None:
        self.calls = 0
        self.size = size
        self.seed = seed

    def __call__(self, out: BinaryIO) -> int:
        self.calls += 1
        block = hashlib.sha256(self.seed).digest()
        out.write((block * (self.size // len(block) + 1))[: self.size])
        return self.size


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts os.fsync calls (the real call still runs)."""
    calls: list[int] = []
    real = os.fsync

    def counted(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counted)
    return calls


def files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_small_views_live_in_memory_no_file_no_fsync(tmp_path: Path, fsyncs: list[int]) -> None:
    """1,000 small recomputable views: served again without transcoding, no file, no fsync."""
    cache = ViewCache(tmp_path, sync)
    made = [Derived(6000, b"%d" % uid) for uid in range(1000)]
    first = [
        read(result(cache.get(key(uid), t, durable=False, small=True)))
        for uid, t in enumerate(made)
    ]
    again = [
        read(result(cache.get(key(uid), t, durable=False, small=True)))
        for uid, t in enumerate(made)
    ]
    assert again == first and {t.calls for t in made} == {1}
    assert files(tmp_path) == [] and fsyncs == []
    assert cache.memory_bytes == 6000 * 1000


def test_large_recomputable_views_are_unsynced_files_dropped_at_start(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    """A large view is kept in a file (never synced); a restart drops it; remade identically."""
    cache = ViewCache(tmp_path, sync)
    transcode = Derived(SMALL_VIEW * 3)
    first = read(result(cache.get(key(), transcode, durable=False)))
    assert read(result(cache.get(key(), transcode, durable=False))) == first
    assert transcode.calls == 1 and fsyncs == []
    assert [p.relative_to(tmp_path).parts[0] for p in files(tmp_path)] == ["volatile"]
    restarted = ViewCache(tmp_path, sync)
    assert files(tmp_path) == [] and restarted.lookup(key()) is None
    assert read(result(restarted.get(key(), transcode, durable=False))) == first
    assert transcode.calls == 2


@pytest.mark.parametrize("size", [1000, SMALL_VIEW * 3])
def test_cache_off_keeps_nothing_and_recomputes_identically(tmp_path: Path, size: int) -> None:
    """max_bytes=0: every get transcodes again, the octets are the same, nothing stays behind."""
    cache = ViewCache(tmp_path, sync, max_bytes=0)
    transcode = Derived(size)
    small = size <= SMALL_VIEW
    first = result(cache.get(key(), transcode, durable=False, small=small))
    octets = read(first)
    assert read(result(cache.get(key(), transcode, durable=False, small=small))) == octets
    assert transcode.calls == 2 and cache.lookup(key()) is None and cache.total_bytes == 0
    del first  # the FETCH that served it is over: its spool file goes
    assert files(tmp_path) == []


def test_cache_off_still_keeps_views_that_cannot_be_recomputed(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    """A durable view (gpg's randomness) is one synced file even with max_bytes=0, and survives."""
    cache = ViewCache(tmp_path, sync, max_bytes=0)
    first = read(result(cache.get(key(), Derived(1000, os.urandom(8)))))
    assert len(fsyncs) == 1
    again = Derived(1000)
    assert read(result(ViewCache(tmp_path, sync, max_bytes=0).get(key(), again))) == first
    assert again.calls == 0


def test_memory_is_capped_least_recently_used_first(tmp_path: Path) -> None:
    """The memory tier holds at most its cap; the oldest views go first and are remade."""
    cache = ViewCache(tmp_path, sync, max_bytes=100_000)
    for uid in range(30):
        result(cache.get(key(uid), Derived(10_000), durable=False, small=True))
    assert cache.memory_bytes <= 100_000 <= MEMORY_CAP
    recent, oldest = Derived(10_000), Derived(10_000)
    result(cache.get(key(29), recent, durable=False, small=True))
    result(cache.get(key(0), oldest, durable=False, small=True))
    assert (recent.calls, oldest.calls) == (0, 1)


def test_invalidate_account_drops_memory_and_volatile_views(tmp_path: Path) -> None:
    """A key change drops the account's views in every tier; another account's stay."""
    cache = ViewCache(tmp_path, sync)
    alice, bob = "alice@example.org", "bob@example.org"
    for account in (alice, bob):
        result(cache.get(key(1, account), Derived(100), durable=False, small=True))
        result(cache.get(key(2, account), Derived(SMALL_VIEW * 2), durable=False))
    cache.invalidate_account(alice)
    assert cache.lookup(key(1, alice)) is None and cache.lookup(key(2, alice)) is None
    assert cache.lookup(key(1, bob)) is not None and cache.lookup(key(2, bob)) is not None
    assert cache.total_bytes == 100 + SMALL_VIEW * 2


def test_small_views_are_made_at_once_large_ones_in_a_worker_once(tmp_path: Path) -> None:
    """A small view needs no worker hop; two FETCHes of a cold large one share one transcoding."""
    started: list[tuple[Any, tuple[Any, ...], defer.Deferred[Any]]] = []

    def deferred_run(f: Any, *args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        started.append((f, args, d))
        return d

    cache = ViewCache(tmp_path, deferred_run)
    small = Derived(500)
    assert len(read(result(cache.get(key(1), small, durable=False, small=True)))) == 500
    assert started == [] and small.calls == 1
    large = Derived(SMALL_VIEW * 2)
    a = cache.get(key(2), large, durable=False)
    b = cache.get(key(2), large, durable=False)
    f, args, d = started[0]
    d.callback(f(*args))
    assert len(started) == 1 and read(result(a)) == read(result(b)) and large.calls == 1
