"""S/MIME signing with the server's signing key (issue 16, groundwork for signed views):
``openssl cms -verify`` accepts the multipart/signed against the published signing
certificate, a flipped octet fails it, and the octets are the same every time."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from transcoder.keys.model import KeyUsage
from transcoder.keys.server_keys import generate_smime
from transcoder.signing.smime import multipart_signed

ENTITY = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nsigned by the server\r\n"


def verify(message: bytes, cert: Path, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    (tmp_path / "signed.eml").write_bytes(b"Subject: view\r\nMIME-Version: 1.0\r\n" + message)
    return subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-in",
            str(tmp_path / "signed.eml"),
            "-CAfile",
            str(cert),
            "-purpose",
            "any",
        ],
        capture_output=True,
        check=False,
    )


@pytest.mark.parametrize("algorithm", ["ec", "rsa"])
def test_openssl_verifies_and_detects_a_flipped_octet(tmp_path: Path, algorithm: str) -> None:
    """Verified against the signing certificate (its content as signed); one flipped
    octet of the signed entity makes openssl refuse it; signing twice gives the same
    octets (RFC 6979 ECDSA, PKCS#1 v1.5)."""
    key = (
        ec.generate_private_key(ec.SECP256R1())
        if algorithm == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    cert = generate_smime(KeyUsage.SIGN, datetime.now(UTC) - timedelta(minutes=1), key)
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "sign.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    signed = multipart_signed(ENTITY, cert, key)
    assert signed == multipart_signed(ENTITY, cert, key)
    done = verify(signed, tmp_path / "sign.pem", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.replace(b"\r\n", b"\n").endswith(b"signed by the server\n")
    flipped = signed.replace(b"signed by the server", b"signed by the serveR")
    assert verify(flipped, tmp_path / "sign.pem", tmp_path).returncode != 0


def test_entity_must_be_canonical() -> None:
    """A bare LF in the entity is refused: it would be signed differently than sent."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = generate_smime(KeyUsage.SIGN, datetime.now(UTC), key)
    with pytest.raises(ValueError):
        multipart_signed(b"Content-Type: text/plain\n\nx\n", cert, key)
