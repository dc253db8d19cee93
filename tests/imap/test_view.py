"""The view cache: byte-stable, single-flight, restart-surviving, LRU-capped, per-account."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from twisted.internet import defer

from transcoder.imap.view import SharedResult, ViewCache, ViewKey


def key(uid: int = 1, account: str = "alice@example.org", fingerprint: str = "ab" * 32) -> ViewKey:
    return ViewKey(account, 1700000000, uid, fingerprint, "smime", "aes256-cbc/pkcs1v15")


def sync(f: Any, *args: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(f, *args)


class Counting:
    """A transcoder stand-in that writes random octets, as encryption would, and counts calls."""

    def __init__(self, size: int = 1000) -> None:
        self.calls = 0
        self.size = size

    def __call__(self, out: BinaryIO) -> int:
        self.calls += 1
        out.write(os.urandom(self.size))
        return self.size


def result(d: defer.Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "deferred has not fired"
    if isinstance(out[0], Exception) or hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def read(view: Any) -> bytes:
    with view.open() as fp:
        return fp.read()


def test_second_get_serves_identical_octets_without_transcoding(tmp_path: Path) -> None:
    """Randomised output is transcoded once; later gets return the very same octets."""
    cache = ViewCache(tmp_path, sync)
    transcode = Counting()
    first = read(result(cache.get(key(), transcode)))
    second = read(result(cache.get(key(), transcode)))
    assert first == second and transcode.calls == 1


def test_views_survive_a_restart(tmp_path: Path) -> None:
    """A new cache on the same directory serves the earlier view, not a new encryption."""
    first = read(result(ViewCache(tmp_path, sync).get(key(), Counting())))
    transcode = Counting()
    again = read(result(ViewCache(tmp_path, sync).get(key(), transcode)))
    assert again == first and transcode.calls == 0


def test_concurrent_gets_share_one_transcoding(tmp_path: Path) -> None:
    """Two FETCHes of one cold message wait for the same transcoding and get the same view."""
    started: list[defer.Deferred[Any]] = []
    calls: list[tuple[Any, ...]] = []

    def deferred_run(f: Any, *args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        started.append(d)
        calls.append((f, args))
        return d

    cache = ViewCache(tmp_path, deferred_run)
    transcode = Counting()
    a, b = cache.get(key(), transcode), cache.get(key(), transcode)
    assert len(started) == 1
    f, args = calls[0]
    started[0].callback(f(*args))
    assert read(result(a)) == read(result(b)) and transcode.calls == 1


def test_failed_transcoding_leaves_nothing_and_fails_every_waiter(tmp_path: Path) -> None:
    """A transcoder error reaches the caller; no partial file is left to be served later."""

    def broken(out: BinaryIO) -> int:
        out.write(b"partial")
        raise RuntimeError("gpg died")

    cache = ViewCache(tmp_path, sync)
    with pytest.raises(RuntimeError):
        result(cache.get(key(), broken))
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    assert read(result(cache.get(key(), Counting(10)))) != b"partial"


def test_least_recently_used_views_are_evicted(tmp_path: Path) -> None:
    """Past the size cap the least recently used entry goes; a recently read one stays."""
    cache = ViewCache(tmp_path, sync, max_bytes=2500)
    for uid in (1, 2):
        result(cache.get(key(uid), Counting()))
    result(cache.get(key(1), Counting()))  # uid 1 is now the most recent
    result(cache.get(key(3), Counting()))
    assert cache.total_bytes <= 2500
    again = Counting()
    result(cache.get(key(1), again))
    assert again.calls == 0
    evicted = Counting()
    result(cache.get(key(2), evicted))
    assert evicted.calls == 1


def test_invalidate_account_drops_only_that_account(tmp_path: Path) -> None:
    """A key or policy change of one account re-transcodes its views, not others'."""
    cache = ViewCache(tmp_path, sync)
    result(cache.get(key(account="alice@example.org"), Counting()))
    result(cache.get(key(account="bob@example.org"), Counting()))
    cache.invalidate_account("alice@example.org")
    alice, bob = Counting(), Counting()
    result(cache.get(key(account="alice@example.org"), alice))
    result(cache.get(key(account="bob@example.org"), bob))
    assert (alice.calls, bob.calls) == (1, 0)


def test_new_key_fingerprint_names_a_new_view(tmp_path: Path) -> None:
    """A message fetched after the key changed is transcoded for the new key."""
    cache = ViewCache(tmp_path, sync)
    result(cache.get(key(fingerprint="aa" * 32), Counting()))
    fresh = Counting()
    result(cache.get(key(fingerprint="bb" * 32), fresh))
    assert fresh.calls == 1


def test_lookup_serves_a_cached_view_and_never_transcodes(tmp_path: Path) -> None:
    """lookup() answers None for a cold key and the very view get() made for a warm one."""
    cache = ViewCache(tmp_path, sync)
    assert cache.lookup(key()) is None
    made = result(cache.get(key(), Counting()))
    found = cache.lookup(key())
    assert found is not None and found.path == made.path and found.size == made.size


def test_view_removed_behind_the_cache_is_made_again_and_counted_once(tmp_path: Path) -> None:
    """A view file deleted on disk is re-transcoded on the next get; the size total stays exact."""
    cache = ViewCache(tmp_path, sync)
    transcode = Counting(700)
    view = result(cache.get(key(), transcode))
    view.path.unlink()
    assert cache.lookup(key()) is None
    again = result(cache.get(key(), transcode))
    assert transcode.calls == 2 and again.path.exists()
    assert cache.total_bytes == 700


def test_shared_result_exposes_a_success_but_not_a_failure_or_a_pending_outcome() -> None:
    """SharedResult.succeeded/result: readable at once after success only."""
    pending: defer.Deferred[Any] = defer.Deferred()
    shared = SharedResult(pending)
    assert not shared.succeeded
    pending.callback("selection")
    assert shared.succeeded and shared.result == "selection"
    failed = SharedResult(defer.fail(ValueError("no key")))
    assert failed.done and not failed.succeeded
    result_or_error: list[Any] = []
    failed.fork().addErrback(lambda f: result_or_error.append(f.value))
    assert isinstance(result_or_error[0], ValueError)
