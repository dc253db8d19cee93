"""Signed PGP/MIME views (issue 16): both transcoders, given the server's signing key,
serve views whose encrypted part gpg and sq decrypt and verify as signed by it.

The native view is a function of its inputs (the same octets from two
transcoder instances, as after a restart) and its predicted layout is the
view's exact octets but the armor; the gpg transcoder signs with
``gpg --sign --encrypt``.  Signed and unsigned views differ; a view signed
for another format, or without a signing subkey, fails closed.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.openpgp.native_keys import NativeKeys, native
from tests.openpgp.signing_keys import ServerSigningKeys, cleanup, server_signing_keys
from tests.transcoders.test_pgpmime import MESSAGE, armored_part, expected_inner
from transcoder.keys.model import KeyFormat, StoredKey
from transcoder.keys.server_keys_gpg import OpenPgpServerKey
from transcoder.mime.entity import parse_message, parse_shape
from transcoder.openpgp.keyring import Keyring
from transcoder.openpgp.pool import GpgPool
from transcoder.openpgp.sign import signing_key_from_secret
from transcoder.transcoders import TranscodeFailed, TranscodeRequest
from transcoder.transcoders.derivation import ViewIdentity, ViewSecret
from transcoder.transcoders.interfaces import ViewSigner, can_sign
from transcoder.transcoders.pgpmime import NativePgpMimeTranscoder, PgpMimeTranscoder

__all__ = ["native"]


@pytest.fixture(scope="module")
def server(native: NativeKeys) -> Iterator[ServerSigningKeys]:
    """Server keys with Ed25519 and RSA signing subkeys, and a verifier home."""
    yield server_signing_keys(native)
    cleanup()


def view_signer(made: OpenPgpServerKey, parsed: bool = True) -> ViewSigner:
    """The ViewSigner the server's loader hands out for ``made`` (parsed key or not)."""
    subkey = made.entry.subkeys[1]
    return ViewSigner(
        format=KeyFormat.OPENPGP,
        fingerprint=made.entry.fingerprint,
        public=made.entry.public,
        secret=made.secret,
        signing_subkey=subkey,
        private_key=signing_key_from_secret(made.secret, subkey) if parsed else None,
    )


def request(
    message: bytes, keys: tuple[StoredKey, ...], signer: ViewSigner | None
) -> TranscodeRequest:
    """A request drawing as the server does, the signer part of the view's identity."""
    identity = ViewIdentity(
        hashlib.sha256(message).digest(),
        tuple(sorted(k.fingerprint for k in keys)),
        NativePgpMimeTranscoder.name,
        NativePgpMimeTranscoder.settings_id,
        signer.fingerprint if signer else "",
    )
    randomness = ViewSecret(b"k" * 32).randomness(identity)
    return TranscodeRequest(
        io.BytesIO(message), len(message), keys, datetime.now(UTC), randomness, signer=signer
    )


def view_of(transcoder: object, req: TranscodeRequest) -> bytes:
    out = io.BytesIO()
    result = transcoder.transcode(req, out)  # type: ignore[attr-defined]
    assert result.size == len(out.getvalue())
    return out.getvalue()


def test_both_transcoders_declare_they_sign(tmp_path: Path) -> None:
    """can_sign is true for the native and the gpg PGP/MIME transcoders."""
    assert can_sign(NativePgpMimeTranscoder())
    assert can_sign(PgpMimeTranscoder(Keyring(tmp_path / "gnupg")))


@pytest.mark.parametrize("signer", ["ed25519", "rsa", "nistp256"])
def test_native_view_verifies_with_gpg_and_sq(
    native: NativeKeys, server: ServerSigningKeys, signer: str
) -> None:
    """The native signed view: gpg GOODSIG/VALIDSIG by the server's signing subkey over the
    inner entity; sq decrypt --signer-cert succeeds."""
    made = server.keys[signer]
    view = view_of(
        NativePgpMimeTranscoder(), request(MESSAGE, (native.keys["cv25519"],), view_signer(made))
    )
    armored = armored_part(view)
    result = server.gpg_verify(armored)
    assert result.returncode == 0, result.status
    assert result.plaintext == expected_inner(MESSAGE)
    (validsig,) = result.keyword("VALIDSIG")
    assert validsig[0].lower() == made.entry.subkeys[1]
    assert validsig[-1].lower() == made.entry.fingerprint
    by_sq = server.sq_verify(armored, native.secret_files["cv25519"], signer)
    assert by_sq.returncode == 0, by_sq.status
    assert by_sq.plaintext == expected_inner(MESSAGE)


def test_native_view_is_byte_stable_and_predicted(
    native: NativeKeys, server: ServerSigningKeys
) -> None:
    """Two transcoder instances (a restart) make the same octets, with the key parsed by the
    loader or from the secret here; the predicted layout is the view but its armor."""
    keys = (native.keys["rsa2048"],)
    signer = view_signer(server.keys["ed25519"])
    first = view_of(NativePgpMimeTranscoder(), request(MESSAGE, keys, signer))
    again = view_of(
        NativePgpMimeTranscoder(),
        request(MESSAGE, keys, view_signer(server.keys["ed25519"], parsed=False)),
    )
    assert again == first
    shape = NativePgpMimeTranscoder().predicted_layout(request(MESSAGE, keys, signer))
    assert shape.size == len(first)
    assert NativePgpMimeTranscoder().predicted_size(request(MESSAGE, keys, signer)) == len(first)
    assert first.startswith(shape.prefix) and first.endswith(shape.suffix)
    body = first[len(shape.prefix) : len(first) - len(shape.suffix)]
    assert len(body) == shape.body_size and body.count(b"\n") == shape.body_lines
    assert parse_shape(
        shape.prefix, shape.body_size, shape.body_lines, shape.suffix
    ) == parse_message(io.BytesIO(first))


def test_signed_and_unsigned_views_differ(native: NativeKeys, server: ServerSigningKeys) -> None:
    """Without a signer the view has no signature (gpg reports none); with one it is longer."""
    keys = (native.keys["cv25519"],)
    unsigned = view_of(NativePgpMimeTranscoder(), request(MESSAGE, keys, None))
    signed = view_of(
        NativePgpMimeTranscoder(), request(MESSAGE, keys, view_signer(server.keys["ed25519"]))
    )
    assert len(signed) > len(unsigned)
    plain = server.gpg_verify(armored_part(unsigned))
    assert plain.returncode == 0 and not plain.keyword("GOODSIG") and not plain.keyword("NEWSIG")


def test_gpg_transcoder_view_verifies(
    native: NativeKeys, server: ServerSigningKeys, tmp_path: Path
) -> None:
    """pgp-mime-gpg with a signer (an ElGamal recipient only gpg serves, and a Curve25519 one):
    gpg reports GOODSIG by the server's signing subkey, sq verifies the Curve25519 view."""
    made = server.keys["ed25519"]
    transcoder = PgpMimeTranscoder(Keyring(tmp_path / "gnupg"), GpgPool(1))
    for key_type in ("elgamal", "cv25519"):
        key = native.elgamal if key_type == "elgamal" else native.keys[key_type]
        req = TranscodeRequest(
            io.BytesIO(MESSAGE),
            len(MESSAGE),
            (key,),
            datetime.now(UTC),
            random.Random(1).randbytes,
            signer=view_signer(made),
        )
        armored = armored_part(view_of(transcoder, req))
        result = server.gpg_verify(armored)
        assert result.returncode == 0, result.status
        assert result.plaintext == expected_inner(MESSAGE)
        (validsig,) = result.keyword("VALIDSIG")
        assert validsig[0].lower() == made.entry.subkeys[1]
    by_sq = server.sq_verify(armored, native.secret_files["cv25519"], "ed25519")
    assert by_sq.returncode == 0, by_sq.status


def test_a_signer_of_another_format_fails_closed(
    native: NativeKeys, server: ServerSigningKeys, tmp_path: Path
) -> None:
    """An S/MIME signer, or an OpenPGP one without a signing subkey: TranscodeFailed, nothing
    unsigned is served in its place."""
    made = server.keys["ed25519"]
    wrong = [
        ViewSigner(KeyFormat.SMIME, "ab" * 32, b"cert", b"key"),
        ViewSigner(KeyFormat.OPENPGP, made.entry.fingerprint, made.entry.public, made.secret),
        ViewSigner(
            KeyFormat.OPENPGP,
            made.entry.fingerprint,
            made.entry.public,
            made.entry.public,
            made.entry.subkeys[1],
        ),
    ]
    keys = (native.keys["cv25519"],)
    for signer in wrong:
        with pytest.raises(TranscodeFailed):
            view_of(NativePgpMimeTranscoder(), request(MESSAGE, keys, signer))
    with pytest.raises(TranscodeFailed):
        view_of(
            PgpMimeTranscoder(Keyring(tmp_path / "gnupg"), GpgPool(1)),
            request(MESSAGE, keys, wrong[0]),
        )
