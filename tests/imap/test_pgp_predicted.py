"""PGP/MIME views predicted and streamed on first FETCH (issue 12 on issue 9's machinery).

A real TranscodingIMAP4Server in process, a real Maildir and keystore, the
native PGP/MIME transcoder and the view secret; large views go through the
real :class:`~transcoder.imap.view_stream.ViewStream` thread, whose hand-overs
the test thread runs as the reactor would.  What is checked is what a
client sees: RFC822.SIZE and BODYSTRUCTURE of a listing (no content fetched,
so predicted) equal those of the view fetched whole, in a fresh server; a
streamed view decrypts with ``gpg`` and ``sq``; slices reassemble to it --
with the view cache on and off.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool

from tests.imap.harness import InlineKeyStore, Session, make_session
from tests.imap.test_derived_views import SECRET
from tests.imap.test_view_stream import Reactor
from tests.integration.transcoding import expected_inner
from tests.openpgp.native_keys import NativeKeys, native
from tests.transcoders.test_pgpmime import armored_part
from transcoder.imap import transcoding as transcoding_module
from transcoder.imap.transcoding import PredictedView, TranscodingConfig
from transcoder.imap.view import ViewCache
from transcoder.imap.view_stream import StreamedView, stream_starter
from transcoder.imap.xkey import KeyAccess
from transcoder.keys.keystore import KeyStore
from transcoder.transcoders.derivation import ViewSecret
from transcoder.transcoders.pgpmime import NativePgpMimeTranscoder
from transcoder.transcoders.registry import TranscoderRegistry

__all__ = ["native"]

MARKER = b"PGP-STREAMED-MARKER-41d7"
HEADER = (
    b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: large and encrypted\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
)
#: Above the small-view limit: streamed on first FETCH (its view under fetch.THREAD_PARSE_LIMIT,
#: since a view held whole is parsed in a reactor thread, which this harness does not run).
LARGE = HEADER + (MARKER + b" " + b"p" * 50 + b"\r\n") * 6_000
SMALL = HEADER + b"A short one, made in memory.\r\n" * 20
_LITERAL = re.compile(rb"\{(\d+)\}\r\n")


def _tagged_done(out: bytes, tag: bytes) -> bool:
    return re.search(rb"(^|\n)" + re.escape(tag) + rb" (OK|NO|BAD)", out) is not None


class Server:
    """One session of a server with the native PGP/MIME transcoder, and its "reactor"."""

    def __init__(self, session: Session, reactor: Reactor, cache: ViewCache) -> None:
        self.session = session
        self.reactor = reactor
        self.cache = cache
        self._tags = 0

    def run(self, command: bytes, timeout: float = 60) -> bytes:
        """Send ``<tag> command``; run the stream threads' hand-overs until it is answered."""
        self._tags += 1
        tag = b"p%d" % self._tags
        self.session.send(tag + b" " + command + b"\r\n")
        out = b""
        deadline = time.monotonic() + timeout
        while True:
            self.session.clock.advance(0)  # the server's later turns (Clock-driven)
            out += self.session.output()
            if _tagged_done(out, tag):
                break
            assert time.monotonic() < deadline, out[-300:]
            try:
                f, args = self.reactor.calls.get(timeout=0.05)
            except Exception:  # queue.Empty: the thread is still encrypting
                continue
            f(*args)
        assert re.search(re.escape(tag) + rb" OK", out), out[-300:]
        return out

    def literal(self, command: bytes) -> bytes:
        """The octets of the one literal ``command`` answers."""
        out = self.run(command)
        match = _LITERAL.search(out)
        assert match, out[:300]
        return out[match.end() : match.end() + int(match.group(1))]

    def listing(self, uid: int) -> bytes:
        """``RFC822.SIZE`` and ``BODYSTRUCTURE`` of ``uid``, as one line."""
        out = self.run(b"UID FETCH %d (RFC822.SIZE BODYSTRUCTURE)" % uid)
        line = out.split(b"\r\n")[0]
        assert b"RFC822.SIZE" in line and b"BODYSTRUCTURE" in line, out
        return line[line.index(b"RFC822.SIZE") :]


@contextmanager
def server(
    root: Path,
    keys: NativeKeys,
    key_types: tuple[str, ...],
    cache_bytes: int,
    *messages: bytes,
    secret: ViewSecret | None = SECRET,
) -> Iterator[Server]:
    """A server under ``root`` serving ``messages`` PGP/MIME to ``key_types`` (MODE ALWAYS)."""
    root.mkdir(parents=True, exist_ok=True)
    reactor = Reactor()
    with KeyStore(root / "keys.db") as store:
        session = make_session(root)
        cache = ViewCache(
            root / "views",
            defer.maybeDeferred,
            max_bytes=cache_bytes,
            streams=stream_starter(reactor.call_from_thread),
        )
        registry = TranscoderRegistry([NativePgpMimeTranscoder()])
        clock = Clock()
        clock.advance(time.time())  # the native keys were made just now
        session.server.keys = KeyAccess(InlineKeyStore(store, clock, ThreadPool()), clock)
        session.server.transcoding = TranscodingConfig(registry, cache, view_secret=secret)
        for key_type in key_types:
            material = keys.keys[key_type].material
            session.send(b"k XKEY PUT {%d+}\r\n" % len(material) + material + b"\r\n")
            assert b"k OK" in session.output()
        for setting in (b"FORMAT OPENPGP", b"MODE ALWAYS"):
            _, done = session.command(b"XKEY POLICY " + setting)
            assert b"OK" in done, done
        for message in messages:
            session.deliver(message)
        _, done = session.command(b"SELECT INBOX")
        assert b"OK" in done, done
        yield Server(session, reactor, cache)


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every view the server's transcoding hands to FETCH (predicted, streamed...)."""
    views: list[Any] = []
    real = transcoding_module.TranscodingMixin._view_for

    def spy(self: Any, *args: Any) -> Any:
        d = real(self, *args)
        if isinstance(d, defer.Deferred):
            d.addCallback(lambda v: views.append(v) or v)
        return d

    monkeypatch.setattr(transcoding_module.TranscodingMixin, "_view_for", spy)
    return views


@pytest.mark.parametrize("cache_bytes", [0, 2**30])
def test_predicted_listing_equals_the_view_fetched_whole(
    native: NativeKeys, tmp_path: Path, cache_bytes: int, seen: list[Any]
) -> None:
    """Listing first (predicted: both parts, the drawn boundary), then the whole view: the
    same size and structure as a fresh server computes from the served octets."""
    keys = ("cv25519",)
    with server(tmp_path / "a", native, keys, cache_bytes, SMALL, LARGE) as first:
        listed = {uid: first.listing(uid) for uid in (1, 2)}
        assert all(isinstance(v, PredictedView) for v in seen), seen  # no encryption
        assert all(b'"encrypted" ("protocol"' in line.lower() for line in listed.values())
        assert all(b'"application" "pgp-encrypted"' in line.lower() for line in listed.values())
        assert all(b'"application" "octet-stream"' in line.lower() for line in listed.values())
        views = {uid: first.literal(b"UID FETCH %d (BODY.PEEK[])" % uid) for uid in (1, 2)}
        assert any(isinstance(v, StreamedView) for v in seen)  # the large one streamed
        again = {uid: first.listing(uid) for uid in (1, 2)}
    for uid, view in views.items():
        size = int(re.search(rb"RFC822.SIZE (\d+)", listed[uid]).group(1))  # type: ignore[union-attr]
        assert size == len(view)
        boundary = re.search(rb'boundary="([^"]+)"', view).group(1)  # type: ignore[union-attr]
        assert boundary.lower() in listed[uid].lower()
    assert listed == again
    # A server that had never predicted, holding the view as a file: the same numbers.
    with server(tmp_path / "b", native, keys, 2**30, SMALL, LARGE) as second:
        for uid in (1, 2):
            assert second.literal(b"UID FETCH %d (BODY.PEEK[])" % uid) == views[uid]
        assert {uid: second.listing(uid) for uid in (1, 2)} == listed
    armored = armored_part(views[2])
    assert native.gpg_decrypt(armored).stdout == expected_inner(LARGE)
    assert MARKER not in views[2]


@pytest.mark.parametrize(
    ("key_type", "cache_bytes"), [("cv25519", 0), ("nistp256", 2**30), ("rsa3072", 0)]
)
def test_a_streamed_view_decrypts_with_gpg_and_sq(
    native: NativeKeys, tmp_path: Path, key_type: str, cache_bytes: int, seen: list[Any]
) -> None:
    """The first FETCH of a large view streams it; both peers open it; it stays the same."""
    with server(tmp_path, native, (key_type,), cache_bytes, LARGE) as srv:
        view = srv.literal(b"UID FETCH 1 (BODY.PEEK[])")
        assert isinstance(seen[-1], StreamedView)
        assert srv.literal(b"UID FETCH 1 (BODY.PEEK[])") == view
    assert MARKER not in view
    armored = armored_part(view)
    by_gpg = native.gpg_decrypt(armored)
    assert by_gpg.returncode == 0, by_gpg.stderr
    assert by_gpg.stdout == expected_inner(LARGE)
    by_sq = native.sq_decrypt(armored, key_type)
    assert by_sq.returncode == 0, by_sq.stderr
    assert by_sq.stdout == expected_inner(LARGE)


def test_without_a_view_secret_nothing_drawn_is_predicted(
    native: NativeKeys, tmp_path: Path, seen: list[Any]
) -> None:
    """No secret: a boundary drawn for a prediction would not be the stored view's, so the
    listing makes (and keeps) the view, and its numbers are the view's."""
    with server(tmp_path, native, ("cv25519",), 0, SMALL, secret=None) as srv:
        listed = srv.listing(1)
        assert not any(isinstance(v, PredictedView) for v in seen)
        view = srv.literal(b"UID FETCH 1 (BODY.PEEK[])")
        assert srv.listing(1) == listed
    size = int(re.search(rb"RFC822.SIZE (\d+)", listed).group(1))  # type: ignore[union-attr]
    assert size == len(view)
    assert re.search(rb'boundary="([^"]+)"', view).group(1).lower() in listed.lower()  # type: ignore[union-attr]


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    lines=st.integers(min_value=4_000, max_value=12_000),
    slice_size=st.integers(min_value=40_000, max_value=900_000),
    cache_bytes=st.sampled_from([0, 2**30]),
)
def test_predicted_equals_streamed_equals_partial_reassembly(
    native: NativeKeys,
    tmp_path_factory: pytest.TempPathFactory,
    lines: int,
    slice_size: int,
    cache_bytes: int,
) -> None:
    """For random sizes: RFC822.SIZE (predicted) == the streamed BODY[] == its slices joined."""
    message = HEADER + (b"line of a large message, number in the middle\r\n" * lines)
    with server(tmp_path_factory.mktemp("h"), native, ("rsa2048",), cache_bytes, message) as srv:
        listed = srv.listing(1)
        size = int(re.search(rb"RFC822.SIZE (\d+)", listed).group(1))  # type: ignore[union-attr]
        # Slices first, each from a fresh first FETCH when the cache is off.
        pieces = [
            srv.literal(b"UID FETCH 1 (BODY.PEEK[]<%d.%d>)" % (offset, slice_size))
            for offset in range(0, size, slice_size)
        ]
        whole = srv.literal(b"UID FETCH 1 (BODY.PEEK[])")
    assert size == len(whole) == sum(len(p) for p in pieces)
    assert b"".join(pieces) == whole
    assert native.gpg_decrypt(armored_part(whole)).stdout == expected_inner(message)
