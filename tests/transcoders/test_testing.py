"""transcoder.testing catches broken transcoders (and passes a sound one)."""

from __future__ import annotations

import base64
import io
import os
import unittest
from collections.abc import Sequence
from datetime import datetime
from typing import BinaryIO

import pytest
from zope.interface import implementer

from tests.keys.certs import NOW
from tests.transcoders.smime_keys import identity
from transcoder.keys.model import KeyFormat, KeyStatus, StoredKey
from transcoder.mime.protect import open_inner, parse_top_level, protect
from transcoder.testing import TranscoderConformance
from transcoder.transcoders import (
    ITranscoder,
    TranscodeFailed,
    TranscodeRequest,
    TranscodeResult,
    usable_keys,
)


@implementer(ITranscoder)
class Toy:
    """A toy transcoder: XOR with request randomness, with one optional flaw.

    Not secure (the key stream is the request's randomness); good enough to
    check that the conformance checks tell sound from broken.
    """

    name = "toy"
    media_type = "application/x-toy"
    key_format = KeyFormat.SMIME
    settings_id = "toy"

    def __init__(self, flaw: str = "") -> None:
        self.flaw = flaw

    def can_serve(self, keys: Sequence[StoredKey]) -> bool:
        return self.flaw == "serves-anything" or any(
            k.format is KeyFormat.SMIME and k.status is KeyStatus.ACTIVE and k.can_encrypt
            for k in keys
        )

    def _scramble(self, data: bytes, request: TranscodeRequest) -> bytes:
        if self.flaw == "cleartext":
            return data
        if self.flaw == "base64":
            return base64.encodebytes(data)
        if self.flaw == "system-random":
            pad = os.urandom(len(data))
        else:
            pad = request.random_bytes(len(data))
        return bytes(a ^ b for a, b in zip(data, pad, strict=True))

    def transcode(self, request: TranscodeRequest, out: BinaryIO) -> TranscodeResult:
        usable = usable_keys(request.keys, self.key_format, request.now)
        if not usable and self.flaw != "serves-anything":
            raise TranscodeFailed("no key")
        obscure = request.obscure_subject and self.flaw != "ignores-obscure"
        parts = protect(parse_top_level(request.source, request.size), obscure)
        header = parts.outer_header + b"Content-Type: application/x-toy\r\n\r\n"
        out.write(header)
        body = self._scramble(open_inner(request.source, parts).read(), request)
        out.write(body)
        size = len(header) + len(body) + (1 if self.flaw == "miscounts" else 0)
        return TranscodeResult(size, self.media_type)


class ToyChecks(TranscoderConformance):
    """The conformance checks aimed at a Toy with ``flaw``."""

    def __init__(self, flaw: str) -> None:
        self.flaw = flaw

    def make_transcoder(self) -> Toy:
        return Toy(self.flaw)

    def make_key(self) -> StoredKey:
        return identity("p256").key

    def request_time(self) -> datetime:
        return NOW


CHECKS = sorted(name for name in dir(TranscoderConformance) if name.startswith("test_"))


@pytest.mark.parametrize("check", CHECKS)
def test_sound_transcoder_passes_every_check(check: str) -> None:
    """A transcoder without a flaw passes each check (predicted size: skipped, not offered)."""
    checks = ToyChecks("")
    if check == "test_predicted_size_matches":
        with pytest.raises(unittest.SkipTest):
            getattr(checks, check)()
        return
    getattr(checks, check)()


@pytest.mark.parametrize(
    ("flaw", "check"),
    [
        ("cleartext", "test_output_never_contains_plaintext_marker"),
        ("base64", "test_output_never_contains_plaintext_marker"),
        ("miscounts", "test_result_size_is_octets_written"),
        ("serves-anything", "test_refuses_keys_it_cannot_serve"),
        ("serves-anything", "test_refuses_key_expired_at_request_time"),
        ("ignores-obscure", "test_obscured_subject_stays_inside"),
        ("system-random", "test_same_draws_give_the_same_octets"),
    ],
)
def test_flawed_transcoder_fails_its_check(flaw: str, check: str) -> None:
    """Each flaw makes the check written for it fail."""
    with pytest.raises(AssertionError):
        getattr(ToyChecks(flaw), check)()


def test_marker_is_found_in_a_cleartext_view() -> None:
    """Sanity: the toy's cleartext flaw really does put the marker in its output."""
    checks = ToyChecks("cleartext")
    request = checks.make_request(b"Subject: s\r\n\r\nhello MARK\r\n", (checks.make_key(),))
    out = io.BytesIO()
    Toy("cleartext").transcode(request, out)
    assert b"hello MARK" in out.getvalue()
