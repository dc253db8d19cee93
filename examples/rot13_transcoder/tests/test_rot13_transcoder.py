"""Tests of the rot13 demo plugin: imap-transcoder's conformance mixin plus its own checks."""

from __future__ import annotations

import dataclasses
import io
import random
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, distribution

import pytest
from rot13_transcoder import Rot13Transcoder, rot13

from transcoder.keys import KeyFormat, KeyStatus, KeyUsage, OpenPgpDetails, StoredKey
from transcoder.testing import TranscoderConformance
from transcoder.transcoders import GROUP, TranscodeRequest, TranscoderRegistry

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def demo_key(address: str = "demo@example.org") -> StoredKey:
    """An active OpenPGP encryption key on a reserved test domain (no real key material)."""
    return StoredKey(
        format=KeyFormat.OPENPGP,
        fingerprint="0" * 40,
        addresses=(address,),
        not_after=None,
        usages=frozenset({KeyUsage.ENCRYPT}),
        material=b"",
        key_algorithm="demo",
        details=OpenPgpDetails(encryption_subkeys=("0" * 40,)),
        account=address,
        status=KeyStatus.ACTIVE,
        created_at=NOW,
        activated_at=NOW,
    )


class TestRot13Conformance(TranscoderConformance):
    """The demo passes every check imap-transcoder asks of a transcoder."""

    def make_transcoder(self) -> Rot13Transcoder:
        return Rot13Transcoder()

    def make_key(self) -> StoredKey:
        return demo_key()

    def request_time(self) -> datetime:
        return NOW


def test_refuses_real_domains() -> None:
    """A key with any address outside the reserved test domains is never served."""
    real = dataclasses.replace(demo_key(), addresses=("demo@example.org", "me@gmail.com"))
    assert not Rot13Transcoder().can_serve((real,))
    assert Rot13Transcoder().can_serve((demo_key("x@mail.test"),))


def test_rot13_of_the_view_gives_back_the_message() -> None:
    """Undoing rot13 on the view's body yields the inner entity, message body unchanged."""
    message = b"Subject: hi\r\nContent-Type: text/plain\r\n\r\nHello, World!\r\n"
    request = TranscodeRequest(
        io.BytesIO(message), len(message), (demo_key(),), NOW, random.Random(0).randbytes
    )
    out = io.BytesIO()
    Rot13Transcoder().transcode(request, out)
    _, _, body = out.getvalue().partition(b"DEMO ONLY - rot13 is not encryption\r\n\r\n")
    inner = rot13(body)
    assert inner.endswith(b"\r\n\r\nHello, World!\r\n")
    assert b'hp="cipher"' in inner and b"Subject: hi\r\n" in inner


def test_installed_entry_point_is_found() -> None:
    """Once installed, imap-transcoder's registry finds the plugin by its entry point."""
    try:
        distribution("rot13-transcoder-demo")
    except PackageNotFoundError:
        pytest.skip("rot13-transcoder-demo is not installed")
    registry, failures = TranscoderRegistry.from_entry_points(())
    assert not [f for f in failures if f.entry_point.startswith("rot13-demo ")]
    assert isinstance(registry.get("rot13-demo"), Rot13Transcoder)
    assert GROUP == "transcoder.transcoders"
