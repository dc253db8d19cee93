"""Cached hits of the view cache: lookup without transcoding, files removed behind its back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet import defer

from transcoder.imap.view import SharedResult, ViewCache, ViewKey


def key(uid: int = 1) -> ViewKey:
    return ViewKey("alice@example.org", 1700000000, uid, "ab" * 32, "smime", "aes256-cbc")


def sync(f: Any, *args: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(f, *args)


class Counting:
    """A transcoder stand-in writing random octets, counting its calls."""

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
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


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
