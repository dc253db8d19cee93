"""The built-in S/MIME transcoder, checked by a real peer: ``openssl cms -decrypt``."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import hashlib
import io
import random
import subprocess
import tracemalloc
from datetime import datetime
from pathlib import Path

import pytest
from asn1crypto import cms

from tests.integration.transcoding import expected_inner, smime_der
from tests.keys.certs import NOW
from tests.transcoders.large_message import write_large_message
from tests.transcoders.smime_keys import SmimeIdentity, identity
from transcoder.cms import CmsSettings
from transcoder.keys.model import KeyStatus, StoredKey
from transcoder.mime.entity import parse_message
from transcoder.mime.protect import protect
from transcoder.testing import TranscoderConformance
from transcoder.transcoders import TranscodeFailed, TranscodeRequest
from transcoder.transcoders.smime import SmimeTranscoder, smime_headers

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: board minutes\r\n"
    b"Date: Mon, 2 Mar 2026 09:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="sep"\r\n'
    b"\r\n"
    b"--sep\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    + "Grüße, the numbers are in.\r\n".encode()
    + b"--sep\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: bob@example.net\r\nSubject: fwd\r\n\r\nforwarded text\r\n"
    b"--sep--\r\n"
)


def request(
    message: bytes, *identities: SmimeIdentity, obscure_subject: bool = False
) -> TranscodeRequest:
    """A request for ``message`` to the keys of ``identities`` at the certificates' NOW."""
    keys = tuple(i.key for i in identities)
    rng = random.Random(len(message)).randbytes
    return TranscodeRequest(io.BytesIO(message), len(message), keys, NOW, rng, obscure_subject)


def transcode(message: bytes, *identities: SmimeIdentity, **options: object) -> bytes:
    """The view of ``message``; ``options`` go to CmsSettings or the request."""
    obscure = bool(options.pop("obscure_subject", False))
    transcoder = SmimeTranscoder(CmsSettings(**options))  # type: ignore[arg-type]
    out = io.BytesIO()
    result = transcoder.transcode(request(message, *identities, obscure_subject=obscure), out)
    assert result.size == len(out.getvalue())
    return out.getvalue()


def openssl_decrypt(view: bytes, who: SmimeIdentity, tmp_path: Path) -> bytes:
    """What ``openssl cms -decrypt`` makes of the view, read as an S/MIME message."""
    message = tmp_path / "view.eml"
    message.write_bytes(view)
    cert, key = who.write_pem(tmp_path)
    out = tmp_path / "decrypted"
    subprocess.run(
        [
            "openssl",
            "cms",
            "-decrypt",
            "-in",
            str(message),
            "-recip",
            str(cert),
            "-inkey",
            str(key),
            "-out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


class TestSmimeConformance(TranscoderConformance):
    """SmimeTranscoder (RSA, default settings) passes the public conformance checks."""

    def make_transcoder(self) -> SmimeTranscoder:
        return SmimeTranscoder()

    def make_key(self) -> StoredKey:
        return identity("rsa2048").key

    def request_time(self) -> datetime:
        return NOW


class TestSmimeConformanceEcGcm(TestSmimeConformance):
    """SmimeTranscoder with an EC key and AES-GCM passes the conformance checks too."""

    def make_transcoder(self) -> SmimeTranscoder:
        return SmimeTranscoder(CmsSettings(cipher="aes128-gcm"))

    def make_key(self) -> StoredKey:
        return identity("p256").key


@pytest.mark.parametrize(
    ("kind", "cipher", "padding"),
    [
        ("rsa2048", "aes256-cbc", "pkcs1v15"),
        ("rsa2048", "aes128-gcm", "oaep"),
        ("p256", "aes256-cbc", "pkcs1v15"),
        ("p384", "aes256-gcm", "pkcs1v15"),
        ("p521", "aes128-cbc", "pkcs1v15"),
    ],
)
def test_openssl_decrypts_the_protected_inner_entity(
    kind: str, cipher: str, padding: str, tmp_path: Path
) -> None:
    """openssl opens the view; the plaintext is the protected inner entity, body unchanged."""
    who = identity(kind)
    view = transcode(MESSAGE, who, cipher=cipher, rsa_padding=padding)
    decrypted = openssl_decrypt(view, who, tmp_path)
    assert decrypted == expected_inner(MESSAGE)
    body_start = MESSAGE.index(b"\r\n\r\n") + 4
    assert decrypted.endswith(b"\r\n\r\n" + MESSAGE[body_start:])
    assert b"numbers are in" not in view and b"forwarded text" not in view


def test_view_header_is_outer_header_plus_smime_fields() -> None:
    """The view's header is the protected outer header and the RFC 8551 fields; parsers agree."""
    who = identity("rsa2048")
    view = transcode(MESSAGE, who, cipher="aes256-gcm")
    parts = protect(parse_message(io.BytesIO(MESSAGE)))
    header = parts.outer_header + smime_headers(CmsSettings(cipher="aes256-gcm"))
    assert view.startswith(header)
    parsed = email.message_from_bytes(view, policy=email.policy.default)
    assert parsed.get_content_type() == "application/pkcs7-mime"
    assert parsed.get_param("smime-type") == "authEnveloped-data"
    assert parsed.get_filename() == "smime.p7m"
    assert parsed["Subject"] == "board minutes" and parsed["To"] == "alice@example.org"
    ours = parse_message(io.BytesIO(view))
    assert ours.content_type.param("name") == "smime.p7m"
    assert ours.get("Content-Transfer-Encoding") == "base64"


def test_obscured_subject_is_only_inside(tmp_path: Path) -> None:
    """With obscure_subject the outer Subject is [...]; the decrypted inner has the real one."""
    who = identity("p256")
    view = transcode(MESSAGE, who, obscure_subject=True)
    assert b"\r\nSubject: [...]\r\n" in view and b"board minutes" not in view
    decrypted = openssl_decrypt(view, who, tmp_path)
    assert decrypted == expected_inner(MESSAGE, obscure_subject=True)
    assert b"\r\nSubject: board minutes\r\n" in decrypted
    assert b"HP-Outer: Subject: [...]\r\n" in decrypted


def test_every_usable_key_can_open_the_view(tmp_path: Path) -> None:
    """With two active certificates, each private key decrypts the same view."""
    rsa_id, ec_id = identity("rsa2048"), identity("p384")
    view = transcode(MESSAGE, rsa_id, ec_id)
    for who in (rsa_id, ec_id):
        directory = tmp_path / who.key.key_algorithm
        directory.mkdir()
        assert openssl_decrypt(view, who, directory) == expected_inner(MESSAGE)


def test_retired_keys_are_not_encrypted_to(tmp_path: Path) -> None:
    """Only usable keys become recipients: a retired one cannot open the view."""
    active, retired = identity("p256"), identity("rsa2048")
    retired = dataclasses.replace(
        retired, key=dataclasses.replace(retired.key, status=KeyStatus.RETIRED)
    )
    view = transcode(MESSAGE, active, retired)
    recipients = cms.ContentInfo.load(smime_der(view))["content"]["recipient_infos"]
    assert len(recipients) == 1
    assert openssl_decrypt(view, active, tmp_path) == expected_inner(MESSAGE)
    with pytest.raises(subprocess.CalledProcessError):
        openssl_decrypt(view, retired, tmp_path)


@pytest.mark.parametrize("cipher", ["aes256-cbc", "aes128-gcm"])
def test_predicted_size_is_exact(cipher: str) -> None:
    """predicted_size equals the octets written, for bodies of many lengths."""
    transcoder = SmimeTranscoder(CmsSettings(cipher=cipher))
    who = identity("p256")
    for length in [*range(0, 70), 1000, 4095, 4096, 4097, 65535, 65536, 65537, 200_001]:
        message = b"Subject: n\r\n\r\n" + b"x" * length
        predicted = transcoder.predicted_size(request(message, who))
        out = io.BytesIO()
        assert transcoder.transcode(request(message, who), out).size == predicted, length
        assert len(out.getvalue()) == predicted, length


def test_unusable_certificate_fails_closed() -> None:
    """A key whose material is not a usable certificate: TranscodeFailed, nothing written."""
    who = identity("rsa2048")
    broken = dataclasses.replace(who.key, material=b"not a certificate")
    out = io.BytesIO()
    with pytest.raises(TranscodeFailed) as caught:
        SmimeTranscoder().transcode(request(MESSAGE, dataclasses.replace(who, key=broken)), out)
    assert out.getvalue() == b""
    assert caught.value.code == "TRANSCODE-FAILED"
    assert "certificate" in caught.value.detail and "certificate" not in caught.value.text


def test_truncated_source_fails_closed() -> None:
    """A source shorter than announced: TranscodeFailed, never a short message."""
    who = identity("rsa2048")
    req = request(MESSAGE, who)
    short = dataclasses.replace(req, source=io.BytesIO(MESSAGE[:-5]))
    with pytest.raises(TranscodeFailed):
        SmimeTranscoder().transcode(short, io.BytesIO())


def test_settings_id_names_the_settings() -> None:
    """Every cipher/padding combination has its own settings_id (the view-cache key)."""
    ids = {
        SmimeTranscoder(CmsSettings(c, p)).settings_id
        for c in ("aes256-cbc", "aes128-cbc", "aes256-gcm", "aes128-gcm")
        for p in ("pkcs1v15", "oaep")
    }
    assert len(ids) == 8
    assert SmimeTranscoder().settings_id == SmimeTranscoder(CmsSettings()).settings_id


def test_large_message_streams_in_constant_memory(tmp_path: Path) -> None:
    """A 24 MB message is transcoded with bounded memory and openssl decrypts it intact."""
    who = identity("rsa2048")
    source_path, view_path = tmp_path / "big.eml", tmp_path / "view.eml"
    size = write_large_message(source_path)
    with source_path.open("rb") as src, view_path.open("wb") as out:
        req = TranscodeRequest(src, size, (who.key,), NOW, random.Random(1).randbytes)
        tracemalloc.start()
        try:
            result = SmimeTranscoder().transcode(req, out)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4 * 2**20  # the CMS encoder holds a few 64 KiB buffers; 24 MB never are
    assert result.size == view_path.stat().st_size
    decrypted = openssl_decrypt(view_path.read_bytes(), who, tmp_path)
    with source_path.open("rb") as src:
        expected = expected_inner(src.read())
    assert hashlib.sha256(decrypted).digest() == hashlib.sha256(expected).digest()
