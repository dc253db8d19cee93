"""Derived randomness (issue 9): HKDF-SHA-256 over the view identity, one draw per label."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import os
from datetime import UTC, datetime

import pytest
from zope.interface.verify import verifyObject

from transcoder.transcoders.derivation import (
    CONTEXT,
    CallableRandom,
    DerivedRandom,
    IRandomSource,
    SystemRandom,
    ViewIdentity,
    ViewRandomness,
    ViewSecret,
    message_digest,
)
from transcoder.transcoders.interfaces import TranscodeRequest

SECRET = bytes(range(32))
IDENTITY = ViewIdentity(
    hashlib.sha256(b"Subject: x\r\n\r\nbody\r\n").digest(),
    ("0a" * 32, "0b" * 32),
    "smime",
    "smime-v1;aes256-cbc+pkcs1v15",
)


def lp(data: bytes) -> bytes:
    """Length-prefixed, as the module docstring specifies."""
    return len(data).to_bytes(4, "big") + data


def rfc5869_draw(secret: bytes, identity: ViewIdentity, label: str, size: int) -> bytes:
    """The draw written out from RFC 5869 with the stdlib's hmac (the independent model)."""
    keys = b"".join(lp(f.encode()) for f in identity.fingerprints)
    ikm = b"".join(
        lp(x)
        for x in (
            CONTEXT,
            identity.message_sha256,
            keys,
            identity.transcoder.encode(),
            identity.settings_id.encode(),
        )
    )
    prk = hmac.digest(secret, ikm, "sha256")  # Extract, salt = secret
    out = b""
    for block, start in enumerate(range(0, size, 255 * 32)):
        info = lp(label.encode()) + size.to_bytes(8, "big") + block.to_bytes(4, "big")
        t, okm, counter = b"", b"", 1
        while len(okm) < min(255 * 32, size - start):  # Expand, section 2.3
            t = hmac.digest(prk, t + info + bytes([counter]), "sha256")
            okm += t
            counter += 1
        out += okm[: min(255 * 32, size - start)]
    return out


@pytest.mark.parametrize("size", [0, 1, 16, 32, 33, 512, 8160, 8161, 20000])
def test_draw_is_hkdf_sha256_as_documented(size: int) -> None:
    """Every draw equals HKDF-Extract/Expand computed independently, long draws included."""
    source = DerivedRandom(SECRET, IDENTITY)
    assert source.draw("cms/cek", size) == rfc5869_draw(SECRET, IDENTITY, "cms/cek", size)


def test_same_inputs_same_octets_across_instances() -> None:
    """Two sources with the same secret and identity draw the same octets, in any order."""
    first, second = DerivedRandom(SECRET, IDENTITY), DerivedRandom(SECRET, IDENTITY)
    a = [first.draw("cms/cek", 32), first.draw("cms/iv", 16)]
    b = [second.draw("cms/iv", 16), second.draw("cms/cek", 32)]
    assert a == b[::-1]
    assert first.draw("cms/cek", 32) == a[0]  # and again


@pytest.mark.parametrize(
    "change",
    [
        {"message_sha256": bytes(32)},
        {"fingerprints": ("0a" * 32,)},
        {"fingerprints": ("0b" * 32, "0a" * 32)},
        {"transcoder": "pgp-mime"},
        {"settings_id": "smime-v1;aes256-gcm+pkcs1v15"},
    ],
)
def test_every_identity_field_changes_every_draw(change: dict[str, object]) -> None:
    """Changing any part of the identity gives other octets for the same label."""
    other = dataclasses.replace(IDENTITY, **change)  # type: ignore[arg-type]
    assert DerivedRandom(SECRET, other).draw("cms/cek", 32) != DerivedRandom(SECRET, IDENTITY).draw(
        "cms/cek", 32
    )


def test_another_secret_changes_every_draw() -> None:
    """The same identity under another secret draws other octets."""
    other = bytes(31) + b"\x01"
    assert DerivedRandom(other, IDENTITY).draw("x", 32) != DerivedRandom(SECRET, IDENTITY).draw(
        "x", 32
    )


def test_labels_and_sizes_separate_draws() -> None:
    """Different labels are independent, and a short draw is no prefix of a long one."""
    source = DerivedRandom(SECRET, IDENTITY)
    assert source.draw("cms/cek", 32) != source.draw("cms/iv", 32)
    assert not source.draw("cms/cek", 64).startswith(source.draw("cms/cek", 32))


def test_identity_encoding_is_unambiguous() -> None:
    """Fields that concatenate alike still encode differently (length prefixes)."""
    a = dataclasses.replace(IDENTITY, fingerprints=("ab", "c"))
    b = dataclasses.replace(IDENTITY, fingerprints=("a", "bc"))
    c = dataclasses.replace(IDENTITY, transcoder="smime-v1", settings_id=";x")
    d = dataclasses.replace(IDENTITY, transcoder="smime", settings_id="-v1;x")
    assert a.encode() != b.encode() and c.encode() != d.encode()


def test_unlabelled_calls_are_a_deterministic_sequence() -> None:
    """The older ``random_bytes(n)`` form: each call new octets, the same sequence every time."""
    first, second = DerivedRandom(SECRET, IDENTITY), DerivedRandom(SECRET, IDENTITY)
    calls = [first(16), first(16)]
    assert calls[0] != calls[1] and [second(16), second(16)] == calls


def test_secret_checks_and_never_shows_itself() -> None:
    """A secret must be 32 octets; its repr does not contain it; its identifier names it."""
    with pytest.raises(ValueError):
        ViewSecret(bytes(31))
    with pytest.raises(ValueError):
        DerivedRandom(bytes(33), IDENTITY)
    secret = ViewSecret(SECRET)
    assert SECRET.hex() not in repr(secret) and repr(SECRET) not in repr(secret)
    assert len(secret.identifier) == 16
    assert secret.identifier == ViewSecret(SECRET).identifier != ViewSecret(bytes(32)).identifier
    assert secret.identifier not in SECRET.hex()


def test_identity_needs_a_sha256_digest() -> None:
    """The message digest is 32 octets; fingerprints are kept as a tuple."""
    with pytest.raises(ValueError):
        ViewIdentity(b"short", (), "smime", "s")
    listed = ViewIdentity(bytes(32), ["a"], "smime", "s")  # type: ignore[arg-type]
    assert listed.fingerprints == ("a",)


def test_message_digest_hashes_exactly_size_octets_from_the_start() -> None:
    """SHA-256 of the first ``size`` octets, read from position 0; a short file raises EOFError."""
    data = os.urandom(3 * 1024 * 1024 + 7)
    source = io.BytesIO(data + b"trailer")
    source.seek(100)
    assert message_digest(source, len(data)) == hashlib.sha256(data).digest()
    assert message_digest(io.BytesIO(b""), 0) == hashlib.sha256(b"").digest()
    with pytest.raises(EOFError):
        message_digest(io.BytesIO(b"abc"), 4)


def test_view_randomness_hashes_the_message_when_it_has_a_secret() -> None:
    """With a secret, a message's draws come from its identity; without, from the system."""
    message = b"Subject: x\r\n\r\nbody\r\n"
    fields = ("smime", "smime-v1;aes256-cbc+pkcs1v15")
    derived = ViewRandomness(ViewSecret(SECRET), IDENTITY.fingerprints, *fields)
    source = derived.for_message(io.BytesIO(message), len(message))
    assert source.draw("l", 32) == DerivedRandom(SECRET, IDENTITY).draw("l", 32)
    system = ViewRandomness(None, IDENTITY.fingerprints, *fields)
    assert isinstance(system.for_message(io.BytesIO(message), len(message)), SystemRandom)


def test_sources_provide_the_interface_and_check_labels() -> None:
    """Every source provides IRandomSource and refuses an empty label or a negative size."""
    sources = [SystemRandom(), CallableRandom(os.urandom), DerivedRandom(SECRET, IDENTITY)]
    for source in sources:
        assert verifyObject(IRandomSource, source)
        assert len(source.draw("x", 5)) == 5 and len(source(5)) == 5
        with pytest.raises(ValueError):
            source.draw("", 5)
        with pytest.raises(ValueError):
            source.draw("x", -1)


def test_request_wraps_a_plain_function_and_checks_draw_lengths() -> None:
    """A ``n -> bytes`` function still works as random_bytes; draw() checks the length."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    request = TranscodeRequest(io.BytesIO(), 0, (), now, lambda n: b"\x07" * n)
    assert isinstance(request.random_bytes, CallableRandom)
    assert request.draw("x", 3) == b"\x07\x07\x07" and request.random_bytes(2) == b"\x07\x07"
    short = TranscodeRequest(io.BytesIO(), 0, (), now, lambda n: b"\x07")
    with pytest.raises(ValueError):
        short.draw("x", 3)
    derived = DerivedRandom(SECRET, IDENTITY)
    assert TranscodeRequest(io.BytesIO(), 0, (), now, derived).random_bytes is derived
