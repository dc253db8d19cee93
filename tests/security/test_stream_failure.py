"""A streamed view whose encryption fails after its literal began: the connection is dropped.

Issue 9: a large S/MIME view is sent while a worker thread encrypts it, so
the literal's length is on the wire before the last octet exists.  If the
encryption then fails, the response cannot be completed honestly: padding
would corrupt the view and plaintext would break fail-closed (docs/design.md
invariant 3).  The server drops the connection and logs why; nothing of the
stored body crosses in clear and no tagged answer follows the cut literal.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from twisted.internet import defer
from twisted.logger import eventAsText

from tests.imap.harness import enable_smime, make_session
from tests.imap.test_derived_views import SECRET
from tests.imap.test_view_stream import Reactor
from tests.transcoders.smime_keys import identity
from transcoder.cms import CmsSettings
from transcoder.imap.transcoding import TranscodingConfig
from transcoder.imap.view import ViewCache
from transcoder.imap.view_stream import stream_starter
from transcoder.keys.keystore import KeyStore
from transcoder.transcoders.interfaces import TranscodeRequest, TranscodeResult
from transcoder.transcoders.registry import TranscoderRegistry
from transcoder.transcoders.smime import SmimeTranscoder

MARKER = b"STREAMED-BODY-MARKER-5f0c"
#: Large enough to be streamed (not made in memory): about 3 MB.
MESSAGE = (
    b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: big\r\n\r\n"
    + (MARKER + b" " + b"z" * 60 + b"\r\n") * 40_000
)
#: Where the encryption fails: after some of the view was sent (chunks of 1 MiB).
FAIL_AT = 2_500_000


class _FailingOut:
    """The transcoder's output, which breaks once ``FAIL_AT`` octets went through."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.written = 0

    def write(self, data: Any) -> int:
        if self.written + len(data) > FAIL_AT:
            raise RuntimeError("encryptor state lost (simulated hardware fault)")
        self.written += len(data)
        return self._out.write(data)


class FailingSmime(SmimeTranscoder):
    """The real S/MIME transcoder (same prediction) whose encryption fails part-way."""

    def transcode(self, request: TranscodeRequest, out: BinaryIO) -> TranscodeResult:
        return super().transcode(request, _FailingOut(out))  # type: ignore[arg-type]


@pytest.mark.parametrize("cache_mib", [0, 64])
def test_encryption_failing_mid_stream_drops_the_connection(
    tmp_path: Path, logged: list[dict[str, Any]], cache_mib: int
) -> None:
    """Literal begun, encryption fails: connection aborted, reason logged, no plaintext, no tag."""
    reactor = Reactor()
    with KeyStore(tmp_path / "keys.db") as store:
        session = make_session(tmp_path)
        cache = ViewCache(
            tmp_path / "views",
            defer.maybeDeferred,
            max_bytes=cache_mib * 2**20,
            streams=stream_starter(reactor.call_from_thread),
        )
        registry = TranscoderRegistry([FailingSmime(CmsSettings())])
        config = TranscodingConfig(registry, cache, view_secret=SECRET)
        enable_smime(session, store, config, identity("rsa2048").cert_der)
        session.deliver(MESSAGE)
        _, done = session.command(b"SELECT INBOX")
        assert b"OK" in done, done
        session.send(b"f FETCH 1 (BODY[])\r\n")
        while not session.transport.disconnecting:  # run the thread's hand-overs
            f, args = reactor.calls.get(timeout=30)
            f(*args)
        out = session.output()
    literal = re.search(rb"^\* 1 FETCH \(BODY\[\] \{(\d+)\}\r\n", out, re.M)
    assert literal, out[:300]
    sent = len(out) - literal.end()
    assert 0 < sent < int(literal.group(1))  # cut short mid-stream, not padded
    assert MARKER not in out
    assert not re.search(rb"^f (OK|NO|BAD)", out, re.M)
    assert session.transport.disconnected  # aborted, not closed after a flush
    text = "\n".join(eventAsText(e) for e in logged)
    assert "connection dropped" in text and "simulated hardware fault" in text
    assert not [p for p in (tmp_path / "views").rglob("*.eml")]  # nothing half-made is kept
