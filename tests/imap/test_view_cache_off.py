"""A FETCH with the view cache off, or with its entries lost, serves the same octets (issue 9).

Each server is a real TranscodingIMAP4Server over its own Maildir, keystore
and view directory, with a view secret: the S/MIME view is then a pure
function of its inputs, so the cache only saves work.  What ``FETCH BODY[]``
sends is compared octet for octet and opened with ``openssl cms -decrypt``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from twisted.internet import defer

from tests.imap.harness import Session, enable_smime, make_session
from tests.imap.test_derived_views import MESSAGE, SECRET, fetch_body
from tests.imap.test_fetch_races import openssl_decrypt
from tests.integration.transcoding import expected_inner
from tests.transcoders.smime_keys import identity
from transcoder.cms import CmsSettings
from transcoder.imap.transcoding import TranscodingConfig
from transcoder.imap.view import ViewCache
from transcoder.keys.keystore import KeyStore
from transcoder.transcoders.registry import TranscoderRegistry
from transcoder.transcoders.smime import SmimeTranscoder

#: Large enough that its view is made in a file, not in memory.
LARGE = MESSAGE + (b"y" * 998 + b"\r\n") * 400


@contextmanager
def server(root: Path, cache_mib: int, message: bytes = MESSAGE) -> Iterator[Session]:
    """A server under ``root`` whose cache holds ``cache_mib`` MiB; ``message`` in INBOX."""
    root.mkdir(parents=True, exist_ok=True)
    with KeyStore(root / "keys.db") as store:
        session = make_session(root)
        registry = TranscoderRegistry([SmimeTranscoder(CmsSettings())])
        cache = ViewCache(root / "views", defer.maybeDeferred, max_bytes=cache_mib * 2**20)
        transcoding = TranscodingConfig(registry, cache, view_secret=SECRET)
        enable_smime(session, store, transcoding, identity("rsa2048").cert_der)
        session.deliver(message)
        _, done = session.command(b"SELECT INBOX")
        assert b"OK" in done, done
        yield session


def view_files(root: Path) -> list[Path]:
    return [p for p in (root / "views").rglob("*") if p.is_file()]


@pytest.mark.parametrize("message", [MESSAGE, LARGE], ids=["small", "large"])
def test_cache_off_serves_the_cached_octets_again_and_again(tmp_path: Path, message: bytes) -> None:
    """Cache off: each FETCH recomputes the very octets a caching server serves; no file left."""
    with server(tmp_path / "on", 1024, message) as cached:
        expected = fetch_body(cached)
        assert fetch_body(cached) == expected
    with server(tmp_path / "off", 0, message) as uncached:
        assert fetch_body(uncached) == expected
        assert fetch_body(uncached) == expected
        assert uncached.server.transcoding.cache.total_bytes == 0
    assert view_files(tmp_path / "off") == []
    who = identity("rsa2048")
    assert openssl_decrypt(expected, who, tmp_path) == expected_inner(message)


def test_small_views_leave_no_file_with_the_cache_on(tmp_path: Path) -> None:
    """Cache on: a small view is kept in memory (served again from there), never written out."""
    with server(tmp_path / "a", 1024) as session:
        first = fetch_body(session)
        cache = session.server.transcoding.cache
        assert cache.memory_bytes == len(first)
        assert fetch_body(session) == first
    assert view_files(tmp_path / "a") == []


def test_large_view_cached_on_disk_dropped_at_restart_recomputed(tmp_path: Path) -> None:
    """A large view's cache file is gone after a restart; the next FETCH sends the same octets."""
    with server(tmp_path / "a", 1024, LARGE) as session:
        first = fetch_body(session)
        assert len(view_files(tmp_path / "a")) == 1
    cache = ViewCache(tmp_path / "a" / "views", defer.maybeDeferred)
    assert view_files(tmp_path / "a") == [] and cache.total_bytes == 0
    with server(tmp_path / "b", 0, LARGE) as other:
        assert fetch_body(other) == first
