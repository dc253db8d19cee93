"""The native PGP/MIME transcoder: views gpg and sq open, the same octets from the same
inputs, sizes known in advance, and gpg for the keys it refuses."""

from __future__ import annotations

import hashlib
import io
import random
import subprocess
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zope.interface.verify import verifyObject

from tests.integration.transcoding import expected_inner as rfc9788_inner
from tests.openpgp.gpgkeys import PgpTestKeys, pgp
from tests.openpgp.native_keys import TYPES, NativeKeys, native
from tests.transcoders.large_message import write_large_message
from tests.transcoders.test_pgpmime import MESSAGE, armored_part, expected_inner
from transcoder.keys.model import KeyFormat, Policy, PolicyMode, StoredKey
from transcoder.mime.entity import parse_message, parse_shape
from transcoder.openpgp.keyring import Keyring
from transcoder.openpgp.pool import GpgPool
from transcoder.testing import TranscoderConformance, sample_messages
from transcoder.transcoders import (
    TranscodeFailed,
    TranscodeRequest,
    TranscoderRegistry,
    select_transcoder,
)
from transcoder.transcoders.derivation import ViewIdentity, ViewSecret
from transcoder.transcoders.interfaces import ISizePredictor, ITranscoder, is_deterministic
from transcoder.transcoders.pgpmime import NativePgpMimeTranscoder, PgpMimeTranscoder
from transcoder.transcoders.smime import SmimeTranscoder

__all__ = ["native", "pgp"]


def derived_request(
    message: bytes, keys: tuple[StoredKey, ...], secret: bytes = b"k" * 32
) -> TranscodeRequest:
    """A request drawing as the server does: HKDF of a view secret and the view's identity."""
    identity = ViewIdentity(
        hashlib.sha256(message).digest(),
        tuple(sorted(k.fingerprint for k in keys)),
        NativePgpMimeTranscoder.name,
        NativePgpMimeTranscoder.settings_id,
    )
    randomness = ViewSecret(secret).randomness(identity)
    return TranscodeRequest(io.BytesIO(message), len(message), keys, datetime.now(UTC), randomness)


def view_of(request: TranscodeRequest, transcoder: NativePgpMimeTranscoder | None = None) -> bytes:
    out = io.BytesIO()
    result = (transcoder or NativePgpMimeTranscoder()).transcode(request, out)
    assert result.size == len(out.getvalue())
    assert result.media_type == "multipart/encrypted"
    return out.getvalue()


class TestNativePgpMimeConformance(TranscoderConformance):
    """NativePgpMimeTranscoder (Curve25519 key) passes the public conformance checks,
    the same-draws-same-octets check included."""

    @pytest.fixture(autouse=True)
    def _keys(self, pgp: PgpTestKeys) -> Iterator[None]:
        self.keys = pgp
        yield

    def make_transcoder(self) -> NativePgpMimeTranscoder:
        return NativePgpMimeTranscoder()

    def make_key(self) -> StoredKey:
        return self.keys.x25519


def test_provides_the_interface_and_is_deterministic(tmp_path: Path) -> None:
    transcoder = NativePgpMimeTranscoder()
    verifyObject(ITranscoder, transcoder)
    assert is_deterministic(transcoder)
    assert not is_deterministic(PgpMimeTranscoder(Keyring(tmp_path / "gnupg"), GpgPool(1)))


@pytest.mark.parametrize("key_type", sorted(TYPES))
def test_gpg_and_sq_open_the_view(native: NativeKeys, key_type: str) -> None:
    """Each key type: the armored part decrypts, with gpg and with sq, to the inner entity."""
    view = view_of(derived_request(MESSAGE, (native.keys[key_type],)))
    armored = armored_part(view)
    by_gpg = native.gpg_decrypt(armored)
    assert by_gpg.returncode == 0, by_gpg.stderr
    assert by_gpg.stdout == rfc9788_inner(MESSAGE)  # the independent model of RFC 9788
    by_sq = native.sq_decrypt(armored, key_type)
    assert by_sq.returncode == 0, by_sq.stderr
    assert by_sq.stdout == rfc9788_inner(MESSAGE)
    assert b"numbers are in" not in view and b"forwarded text" not in view


def test_every_sample_shape_round_trips(native: NativeKeys) -> None:
    keys = (native.keys["cv25519"], native.keys["rsa2048"])
    for name, message in sample_messages(b"MARKER").items():
        armored = armored_part(view_of(derived_request(message, keys)))
        for key_type in ("cv25519", "rsa2048"):
            assert native.sq_decrypt(armored, key_type).stdout == expected_inner(message), name


def test_two_servers_one_secret_identical_octets(native: NativeKeys) -> None:
    """Two transcoders (two servers) with one secret: the same view; another secret: another."""
    keys = (native.keys["nistp256"], native.keys["rsa3072"])
    first = view_of(derived_request(MESSAGE, keys), NativePgpMimeTranscoder())
    second = view_of(derived_request(MESSAGE, keys), NativePgpMimeTranscoder())
    assert first == second
    other = view_of(derived_request(MESSAGE, keys, secret=b"j" * 32))
    assert other != first and len(other) == len(first)
    assert armored_part(other) != armored_part(first)
    assert native.gpg_decrypt(armored_part(other)).stdout == rfc9788_inner(MESSAGE)


def session_key(pgp: PgpTestKeys, armored: bytes) -> str:
    """The session key gpg finds in ``armored`` (``--show-session-key``)."""
    done = subprocess.run(
        [
            *("gpg", "--homedir", str(pgp.decrypt_home), "--batch", "--no-tty"),
            *("--status-fd", "2", "--show-session-key", "--decrypt"),
        ],
        input=armored,
        capture_output=True,
        timeout=60,
        check=True,
    )
    lines = done.stderr.decode().splitlines()
    return next(line.split()[2] for line in lines if line.startswith("[GNUPG:] SESSION_KEY "))


def test_a_new_encryption_subkey_gets_a_new_session_key(pgp: PgpTestKeys) -> None:
    """Same primary fingerprint (the same view identity), a new subkey: a new session key."""
    assert pgp.x25519.fingerprint == pgp.x25519_v2.fingerprint
    old = armored_part(view_of(derived_request(MESSAGE, (pgp.x25519,))))
    new = armored_part(view_of(derived_request(MESSAGE, (pgp.x25519_v2,))))
    assert session_key(pgp, old) != session_key(pgp, new)
    again = armored_part(view_of(derived_request(MESSAGE, (pgp.x25519,))))
    assert session_key(pgp, again) == session_key(pgp, old) and again == old


def test_predicted_size_is_exact(native: NativeKeys) -> None:
    """predicted_size equals the size written, for every sample and each key type (no draw)."""
    transcoder = NativePgpMimeTranscoder()

    def refuse(size: int) -> bytes:
        raise AssertionError("predicted_size drew")

    for key_type in sorted(TYPES):
        for name, message in sample_messages(b"SIZE").items():
            request = derived_request(message, (native.keys[key_type],))
            predicting = TranscodeRequest(
                io.BytesIO(message), len(message), request.keys, request.now, refuse
            )
            assert transcoder.predicted_size(predicting) == len(view_of(request)), name


def test_provides_isizepredictor() -> None:
    verifyObject(ISizePredictor, NativePgpMimeTranscoder())


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.integers(min_value=0, max_value=1 << 20),
    key_type=st.sampled_from(["cv25519", "rsa2048"]),
)
def test_predicted_layout_is_the_view_but_its_armor(
    native: NativeKeys, size: int, key_type: str
) -> None:
    """For random sizes 0..1 MiB: the layout's prefix and suffix are the view's own octets
    (the boundary drawn alike), its body the armor's exact size and lines, and the structure
    parsed from it equals the view's, offsets and line counts included; gpg decrypts."""
    message = b"From: bob@example.org\r\nSubject: sized\r\n\r\n" + bytes(
        (48 + i % 75) if i % 77 else 10 for i in range(size)
    )
    request = derived_request(message, (native.keys[key_type],))
    shape = NativePgpMimeTranscoder().predicted_layout(derived_request(message, request.keys))
    view = view_of(request)
    assert shape.size == len(view)
    assert view.startswith(shape.prefix) and view.endswith(shape.suffix)
    body = view[len(shape.prefix) : len(view) - len(shape.suffix)]
    assert len(body) == shape.body_size and body.count(b"\n") == shape.body_lines
    assert body.startswith(b"-----BEGIN PGP MESSAGE-----")
    assert parse_shape(shape.prefix, shape.body_size, shape.body_lines, shape.suffix) == (
        parse_message(io.BytesIO(view))
    )
    assert native.gpg_decrypt(armored_part(view)).stdout == expected_inner(message)


def test_elgamal_goes_to_gpg_and_is_reported_once(native: NativeKeys, tmp_path: Path) -> None:
    """A key the encoder refuses: the native transcoder declines (reported once), the gpg one
    is selected, and gpg decrypts its view."""
    reports: list[tuple[str, str]] = []
    native_transcoder = NativePgpMimeTranscoder(
        on_fallback=lambda key, why: reports.append((key.fingerprint, why))
    )
    gpg_transcoder = PgpMimeTranscoder(Keyring(tmp_path / "gnupg"), GpgPool(1))
    registry = TranscoderRegistry([SmimeTranscoder(), native_transcoder, gpg_transcoder])
    policy = Policy(PolicyMode.ALWAYS, KeyFormat.OPENPGP, True)
    now = datetime.now(UTC)
    for _ in range(3):
        selection = select_transcoder(policy, [native.elgamal], registry, now)
        assert selection is not None and selection.transcoder is gpg_transcoder
    assert reports == [(native.elgamal.fingerprint, "public-key algorithm 16")]
    mixed = select_transcoder(policy, [native.keys["cv25519"], native.elgamal], registry, now)
    assert mixed is not None and mixed.transcoder is gpg_transcoder
    alone = select_transcoder(policy, [native.keys["cv25519"]], registry, now)
    assert alone is not None and alone.transcoder is native_transcoder
    out = io.BytesIO()
    request = TranscodeRequest(
        io.BytesIO(MESSAGE), len(MESSAGE), (native.elgamal,), now, random.Random(1).randbytes
    )
    gpg_transcoder.transcode(request, out)
    assert native.gpg_decrypt(armored_part(out.getvalue())).stdout == rfc9788_inner(MESSAGE)
    with pytest.raises(TranscodeFailed):  # asked anyway, the native one fails closed
        native_transcoder.transcode(request, io.BytesIO())


def test_truncated_source_fails_closed(native: NativeKeys) -> None:
    request = derived_request(MESSAGE, (native.keys["cv25519"],))
    short = TranscodeRequest(
        io.BytesIO(MESSAGE[:-5]), len(MESSAGE), request.keys, request.now, request.random_bytes
    )
    out = io.BytesIO()
    with pytest.raises(TranscodeFailed):
        NativePgpMimeTranscoder().transcode(short, out)
    assert b"numbers are in" not in out.getvalue()


def test_large_message_streams_in_bounded_memory(native: NativeKeys, tmp_path: Path) -> None:
    """A 24 MB message: memory stays bounded, the size is the predicted one, sq decrypts it."""
    source_path, view_path = tmp_path / "big.eml", tmp_path / "view.eml"
    size = write_large_message(source_path)
    transcoder = NativePgpMimeTranscoder()
    keys = (native.keys["cv25519"],)
    with source_path.open("rb") as src, view_path.open("wb") as out:
        req = TranscodeRequest(src, size, keys, datetime.now(UTC), random.randbytes)
        predicted = transcoder.predicted_size(req)
        src.seek(0)
        tracemalloc.start()
        try:
            result = transcoder.transcode(req, out)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 8 * 2**20
    assert predicted == result.size == view_path.stat().st_size
    view = view_path.read_bytes()
    start = view.index(b"-----BEGIN PGP MESSAGE-----")
    end = view.index(b"-----END PGP MESSAGE-----\r\n") + 27
    armored = view[start:end]
    del view
    decrypted = native.sq_decrypt(armored, "cv25519")
    assert decrypted.returncode == 0, decrypted.stderr
    with source_path.open("rb") as src:
        expected = hashlib.sha256(expected_inner(src.read())).digest()
    assert hashlib.sha256(decrypted.stdout).digest() == expected
