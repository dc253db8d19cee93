"""Signed S/MIME views (issue 16): the S/MIME transcoder with the server's signing key.

openssl decrypts the view and verifies the multipart/signed inside against the
signing certificate; the prediction is the view's size and structure; the octets
are the same every time; a large message streams."""

from __future__ import annotations

import dataclasses
import io
import random
import tracemalloc
from pathlib import Path

import pytest

from tests.integration.transcoding import expected_inner
from tests.keys.certs import NOW
from tests.signing.signed_views import decrypt, smime_signer, verify
from tests.transcoders.large_message import write_large_message
from tests.transcoders.smime_keys import identity
from transcoder.cms import CmsSettings
from transcoder.keys.model import KeyFormat
from transcoder.mime.entity import parse_message, parse_shape
from transcoder.transcoders import TranscodeFailed, TranscodeRequest
from transcoder.transcoders.derivation import ViewIdentity, ViewSecret
from transcoder.transcoders.interfaces import ViewSigner, can_sign
from transcoder.transcoders.smime import SmimeTranscoder

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: board minutes\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"The numbers are in.\r\n"
)


def request(message: bytes, signer: ViewSigner | None, seed: int = 7) -> TranscodeRequest:
    """A request for ``message`` to ALICE's P-256 key, signed by ``signer``."""
    return TranscodeRequest(
        io.BytesIO(message),
        len(message),
        (identity("p256").key,),
        NOW,
        random.Random(seed).randbytes,
        signer=signer,
    )


def view_of(message: bytes, signer: ViewSigner | None, **settings: str) -> bytes:
    """The view, checked against its prediction (size and structure)."""
    transcoder = SmimeTranscoder(CmsSettings(**settings))  # type: ignore[arg-type]
    out = io.BytesIO()
    size = transcoder.transcode(request(message, signer), out).size
    view = out.getvalue()
    assert size == len(view) == transcoder.predicted_size(request(message, signer))
    shape = transcoder.predicted_layout(request(message, signer))
    assert shape.size == len(view)
    predicted = parse_shape(shape.prefix, shape.body_size, shape.body_lines, shape.suffix)
    served = parse_message(io.BytesIO(view))
    assert (predicted.body_start, predicted.end) == (served.body_start, served.end)
    assert predicted.body_lines == served.body_lines
    return view


def alice_files(tmp_path: Path) -> tuple[Path, Path]:
    """ALICE's certificate and key as PEM files (the view's recipient)."""
    return identity("p256").write_pem(tmp_path)


@pytest.mark.parametrize(("algorithm", "cipher"), [("ec", "aes256-cbc"), ("rsa", "aes128-gcm")])
def test_openssl_decrypts_then_verifies_the_server_signature(
    tmp_path: Path, algorithm: str, cipher: str
) -> None:
    """The decrypted view is a multipart/signed that openssl cms and smime -verify accept
    against the signing certificate; its signed content is the protected inner entity."""
    signer, cert_pem = smime_signer(algorithm)
    view = view_of(MESSAGE, signer, cipher=cipher)
    signed = decrypt(view, *alice_files(tmp_path), tmp_path)
    assert signed.startswith(b"Content-Type: multipart/signed;")
    for tool in ("cms", "smime"):
        assert verify(signed, cert_pem, tmp_path, tool) == expected_inner(MESSAGE)


def test_a_flipped_octet_fails_verification(tmp_path: Path) -> None:
    """One octet of the signed content changed: openssl refuses the signature."""
    signer, cert_pem = smime_signer()
    signed = decrypt(view_of(MESSAGE, signer), *alice_files(tmp_path), tmp_path)
    assert verify(signed, cert_pem, tmp_path)
    tampered = signed.replace(b"numbers are in", b"numbers are In")
    assert tampered != signed
    assert verify(tampered, cert_pem, tmp_path) == b""


def test_another_key_does_not_verify(tmp_path: Path) -> None:
    """Verified against another signing certificate, the view is refused."""
    signer, _ = smime_signer()
    _, other_pem = smime_signer()
    signed = decrypt(view_of(MESSAGE, signer), *alice_files(tmp_path), tmp_path)
    assert verify(signed, other_pem, tmp_path) == b""


def test_byte_stable_and_distinct_from_the_unsigned_view() -> None:
    """Same request, same octets (deterministic signature); derived draws of a signed
    identity differ from the unsigned one's, so neither view repeats the other's key."""
    signer, _ = smime_signer("ec")
    assert view_of(MESSAGE, signer) == view_of(MESSAGE, signer)
    unsigned = view_of(MESSAGE, None)
    assert len(view_of(MESSAGE, signer)) > len(unsigned)
    secret = ViewSecret(bytes(32))
    base = ViewIdentity(bytes(32), ("a",), "smime", "s")
    signed_identity = dataclasses.replace(base, signer=signer.fingerprint)
    draw = secret.randomness(base).draw("cek", 32)
    assert secret.randomness(signed_identity).draw("cek", 32) != draw
    assert secret.randomness(base).draw("cek", 32) == draw


def test_signing_needs_an_smime_signer() -> None:
    """A signer of another format (or unparsed) fails closed, never an unsigned view."""
    signer, _ = smime_signer()
    assert can_sign(SmimeTranscoder())
    for wrong in (
        dataclasses.replace(signer, format=KeyFormat.OPENPGP),
        dataclasses.replace(signer, private_key=None),
    ):
        with pytest.raises(TranscodeFailed):
            SmimeTranscoder().transcode(request(MESSAGE, wrong), io.BytesIO())


def test_large_signed_view_streams_in_bounded_memory(tmp_path: Path) -> None:
    """A 24 MiB message: signed and encrypted with Python's peak allocation far below
    its size (the entity is read twice, never held), and openssl still verifies it."""
    path = tmp_path / "big.eml"
    size = write_large_message(path)
    signer, cert_pem = smime_signer("rsa")
    transcoder = SmimeTranscoder()
    with path.open("rb") as source, (tmp_path / "view.eml").open("wb") as out:
        req = dataclasses.replace(request(b"", signer), source=source, size=size)
        tracemalloc.start()
        try:
            written = transcoder.transcode(req, out).size
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert written == transcoder.predicted_size(req)
    assert peak < 8 * 2**20, peak
    view = (tmp_path / "view.eml").read_bytes()
    signed = decrypt(view, *alice_files(tmp_path), tmp_path)
    content = verify(signed, cert_pem, tmp_path)
    assert len(content) > size and content.endswith(path.read_bytes()[-1000:])
