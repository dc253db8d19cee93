"""Conformance tests for transcoder plugins: a public mixin for plugin authors.

Mix :class:`TranscoderConformance` into a test class and say how to build
your transcoder and a key it serves; every ``test_*`` method then checks one
promise the server relies on (docs/design.md, "Invariants")::

    from transcoder.testing import TranscoderConformance

    class TestMyTranscoder(TranscoderConformance):
        def make_transcoder(self):
            return MyTranscoder()

        def make_key(self):
            return StoredKey(...)  # an active key your transcoder encrypts to

The checks use plain ``assert`` and in-memory files, so they run under
pytest as written and under :mod:`unittest` when mixed into a
``TestCase``.  Requests carry draws derived as the server derives them
(:class:`~transcoder.transcoders.derivation.DerivedRandom` under a fixed
test secret), and one check holds the server's promise that the same
message, keys and draws give the same octets.  Override
:meth:`TranscoderConformance.request_time` when your key is only valid at a
fixed moment, and
:meth:`~TranscoderConformance.unservable_key_sets` to add keys of your own
that must be refused.

No twisted import here.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import random
import unittest
from datetime import UTC, datetime, timedelta
from typing import cast

from zope.interface.verify import verifyObject

from transcoder.keys.model import KeyFormat, KeyStatus, KeyUsage, StoredKey
from transcoder.transcoders.derivation import DerivedRandom, ViewIdentity
from transcoder.transcoders.errors import TranscodeFailed
from transcoder.transcoders.interfaces import (
    ISizePredictor,
    ITranscoder,
    SizePredictor,
    Transcoder,
    TranscodeRequest,
    TranscodeResult,
)
from transcoder.transcoders.registry import check_transcoder

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: The view secret of conformance requests (a test value, no secret).
TEST_SECRET = bytes(range(32))


def plaintext_marker(seed: int = 0) -> bytes:
    """A 32-letter token that appears nowhere but where a test message puts it."""
    rng = random.Random(seed)
    return b"Mk" + "".join(rng.choice(_LETTERS) for _ in range(30)).encode("ascii")


def sample_messages(marker: bytes) -> dict[str, bytes]:
    """Stored messages (CRLF) of several shapes, each with ``marker`` in a body only."""
    head = b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: sample\r\n"
    mime = b"MIME-Version: 1.0\r\n"
    return {
        "plain": head + b"\r\nHello,\r\n" + marker + b"\r\n",
        "no-content-headers-no-final-crlf": head + b"\r\n" + marker,
        "multipart": head
        + mime
        + b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        + b"--b1\r\nContent-Type: text/plain\r\n\r\npart one "
        + marker
        + b"\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
        + b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n--b1--\r\n",
        "attached-message": head
        + mime
        + b'Content-Type: multipart/mixed;\r\n boundary="b2"\r\n\r\n'
        + b"--b2\r\nContent-Type: message/rfc822\r\n\r\n"
        + b"From: carol@example.net\r\nSubject: inner\r\n\r\n"
        + marker
        + b"\r\n--b2--\r\n",
        "8bit-folded": b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\r\n"
        + "Subject: Grüße\r\n aus Köln\r\n".encode()
        + mime
        + b"Content-Type: text/plain; charset=utf-8\r\n"
        + b"Content-Transfer-Encoding: 8bit\r\n\r\n"
        + "Grüße ".encode()
        + marker
        + b"\r\n",
    }


def _encoded_forms(marker: bytes) -> list[bytes]:
    """``marker`` and what base64 makes of it at each alignment (catches encode-not-encrypt)."""
    forms = [marker]
    for shift in range(3):
        # Whole base64 groups of the marker from the alignment ``shift``; the last
        # group also depends on the octets after the marker, so it is left out.
        forms.append(base64.b64encode(marker[shift:])[:-4])
    return forms


class TranscoderConformance:
    """Checks any :class:`~transcoder.transcoders.interfaces.ITranscoder` must pass."""

    def make_transcoder(self) -> Transcoder:
        """Override: a new instance of the transcoder under test."""
        raise NotImplementedError

    def make_key(self) -> StoredKey:
        """Override: an active key, valid at :meth:`request_time`, the transcoder can serve."""
        raise NotImplementedError

    def request_time(self) -> datetime:
        """The ``now`` of every request (timezone-aware); override for fixed-date keys."""
        return datetime.now(UTC)

    def unservable_key_sets(self) -> list[tuple[StoredKey, ...]]:
        """Key sets the transcoder must refuse; extend to add your own."""
        key = self.make_key()
        other = next(f for f in KeyFormat if f is not key.format)
        return [
            (),
            (dataclasses.replace(key, status=KeyStatus.RETIRED),),
            (dataclasses.replace(key, status=KeyStatus.EXPIRED),),
            (dataclasses.replace(key, usages=frozenset({KeyUsage.SIGN})),),
            (dataclasses.replace(key, format=other),),
        ]

    def make_request(
        self,
        message: bytes,
        keys: tuple[StoredKey, ...],
        *,
        obscure_subject: bool = False,
        seed: int = 0,
    ) -> TranscodeRequest:
        """A request for ``message``, its source positioned at the end.

        Its draws are derived as the server derives them, from a fixed test
        secret and an identity made of the message's digest, the keys and ``seed``.
        """
        source = io.BytesIO(message)
        source.seek(0, io.SEEK_END)  # a transcoder must seek, not assume position 0
        identity = ViewIdentity(
            hashlib.sha256(message).digest(),
            tuple(sorted(k.fingerprint for k in keys)),
            "conformance",
            f"seed={seed}",
        )
        return TranscodeRequest(
            source,
            len(message),
            keys,
            self.request_time(),
            DerivedRandom(TEST_SECRET, identity),
            obscure_subject,
        )

    def _run(self, request: TranscodeRequest) -> tuple[TranscodeResult, bytes]:
        """Transcode into a buffer that already holds a prefix; the result and the new octets."""
        out = io.BytesIO(b"prefix")
        out.seek(0, io.SEEK_END)
        result = self.make_transcoder().transcode(request, out)
        assert not out.closed and not request.source.closed, "transcode closed a file"
        return result, out.getvalue()[len(b"prefix") :]

    def _assert_no_marker(self, output: bytes, marker: bytes) -> None:
        """Neither ``marker`` nor its base64 forms occur in ``output``."""
        flat = output.replace(b"\r\n", b"").replace(b"\n", b"")
        for form in _encoded_forms(marker):
            assert form not in output and form not in flat, "plaintext reached the output"

    def test_provides_itranscoder(self) -> None:
        """The transcoder provides ITranscoder with well-typed attributes."""
        transcoder = self.make_transcoder()
        assert verifyObject(ITranscoder, transcoder)
        assert check_transcoder(transcoder) is None, check_transcoder(transcoder)

    def test_serves_its_key(self) -> None:
        """can_serve accepts the key the test provides."""
        assert self.make_transcoder().can_serve((self.make_key(),))

    def test_refuses_keys_it_cannot_serve(self) -> None:
        """Retired, expired, sign-only, foreign or no keys: can_serve is False, transcode fails."""
        marker = plaintext_marker(1)
        message = sample_messages(marker)["plain"]
        for keys in self.unservable_key_sets():
            assert not self.make_transcoder().can_serve(keys), keys
            out = io.BytesIO()
            try:
                self.make_transcoder().transcode(self.make_request(message, keys), out)
            except TranscodeFailed:
                pass
            else:
                raise AssertionError(f"transcode served {keys!r}")
            self._assert_no_marker(out.getvalue(), marker)

    def test_refuses_key_expired_at_request_time(self) -> None:
        """A key whose not_after passed before the request's ``now`` is refused."""
        now = self.request_time()
        stale = dataclasses.replace(self.make_key(), not_after=now - timedelta(seconds=1))
        request = self.make_request(b"Subject: x\r\n\r\nbody\r\n", (stale,))
        try:
            self.make_transcoder().transcode(request, io.BytesIO())
        except TranscodeFailed:
            return
        raise AssertionError("transcode used a key past its not_after")

    def test_result_size_is_octets_written(self) -> None:
        """TranscodeResult.size counts exactly the octets written; media_type is as declared."""
        transcoder = self.make_transcoder()
        for name, message in sample_messages(plaintext_marker(2)).items():
            result, output = self._run(self.make_request(message, (self.make_key(),)))
            assert result.size == len(output), name
            assert result.media_type == transcoder.media_type, name

    def test_size_is_deterministic(self) -> None:
        """The same request transcoded twice reports the same size."""
        for name, message in sample_messages(plaintext_marker(3)).items():
            first, _ = self._run(self.make_request(message, (self.make_key(),)))
            second, _ = self._run(self.make_request(message, (self.make_key(),)))
            assert first.size == second.size, name

    def test_same_draws_give_the_same_octets(self) -> None:
        """The same message, keys and derived draws give the same view, octet for octet.

        What lets every server sharing a view secret serve the same octets
        without keeping a copy: all randomness must come from the request.
        """
        for name, message in sample_messages(plaintext_marker(7)).items():
            _, first = self._run(self.make_request(message, (self.make_key(),)))
            _, second = self._run(self.make_request(message, (self.make_key(),)))
            assert first == second, f"{name}: the view changed between two runs"

    def test_predicted_size_matches(self) -> None:
        """A transcoder that predicts its size (ISizePredictor) predicts it exactly."""
        transcoder = self.make_transcoder()
        if not ISizePredictor.providedBy(transcoder):
            raise unittest.SkipTest("the transcoder does not provide ISizePredictor")
        predictor = cast(SizePredictor, transcoder)
        for name, message in sample_messages(plaintext_marker(4)).items():
            predicted = predictor.predicted_size(self.make_request(message, (self.make_key(),)))
            header, size = predictor.predicted_shape(self.make_request(message, (self.make_key(),)))
            result, output = self._run(self.make_request(message, (self.make_key(),)))
            assert predicted == size == result.size, name
            assert output.startswith(header) and header.endswith(b"\r\n\r\n"), name

    def test_output_never_contains_plaintext_marker(self) -> None:
        """No body text, raw or base64-encoded, reaches the output."""
        marker = plaintext_marker(5)
        for message in sample_messages(marker).values():
            _, output = self._run(self.make_request(message, (self.make_key(),)))
            self._assert_no_marker(output, marker)

    def test_obscured_subject_stays_inside(self) -> None:
        """With obscure_subject the Subject text does not reach the output in clear."""
        marker = plaintext_marker(6)
        message = b"From: a@example.org\r\nSubject: " + marker + b"\r\n\r\nbody\r\n"
        request = self.make_request(message, (self.make_key(),), obscure_subject=True)
        _, output = self._run(request)
        self._assert_no_marker(output, marker)


__all__ = ["TranscoderConformance", "plaintext_marker", "sample_messages"]
