"""Derived S/MIME views (issue 9): the predicted size is the size written, for any message size."""

from __future__ import annotations

import functools
import hashlib
import io

from hypothesis import given
from hypothesis import strategies as st

from tests.keys.certs import NOW
from tests.transcoders.smime_keys import SmimeIdentity, identity
from transcoder.cms import CIPHERS, RSA_PADDINGS, CmsSettings
from transcoder.transcoders.derivation import DerivedRandom, ViewIdentity
from transcoder.transcoders.interfaces import TranscodeRequest
from transcoder.transcoders.smime import SmimeTranscoder

HEADER = b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: sizes\r\n\r\n"


@functools.cache
def key(kind: str) -> SmimeIdentity:
    """One key per kind for the whole module (RSA generation is slow)."""
    return identity(kind)


def derived_request(message: bytes, who: SmimeIdentity, secret: bytes) -> TranscodeRequest:
    """A request whose draws are derived, as the server derives them."""
    view = ViewIdentity(hashlib.sha256(message).digest(), (who.key.fingerprint,), "smime", "t")
    draws = DerivedRandom(secret, view)
    return TranscodeRequest(io.BytesIO(message), len(message), (who.key,), NOW, draws)


@given(
    body_size=st.integers(min_value=0, max_value=70_000),
    kind=st.sampled_from(["rsa2048", "p256", "p384", "p521"]),
    cipher=st.sampled_from(CIPHERS),
    rsa_padding=st.sampled_from(RSA_PADDINGS),
    secret=st.binary(min_size=32, max_size=32),
)
def test_predicted_size_equals_the_derived_view_size(
    body_size: int, kind: str, cipher: str, rsa_padding: str, secret: bytes
) -> None:
    """predicted_size == octets written == TranscodeResult.size, and the view repeats exactly."""
    message = HEADER + (b"0123456789abcdef" * (body_size // 16 + 1))[:body_size]
    transcoder = SmimeTranscoder(CmsSettings(cipher, rsa_padding))
    who = key(kind)
    predicted = transcoder.predicted_size(derived_request(message, who, secret))
    outputs = []
    for _ in range(2):
        out = io.BytesIO()
        result = transcoder.transcode(derived_request(message, who, secret), out)
        assert predicted == result.size == len(out.getvalue())
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1]
