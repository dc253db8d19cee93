"""Helpers of the signed-view tests: server signing keys and openssl's verdict on a view."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from transcoder.keys.model import KeyUsage
from transcoder.keys.server_keys import (
    generate_smime,
    new_private_key,
    private_pem,
    smime_server_key,
)
from transcoder.signing.signers import load_signer
from transcoder.transcoders.interfaces import ViewSigner

START = datetime.now(UTC) - timedelta(minutes=1)


def smime_signer(algorithm: str = "ec") -> tuple[ViewSigner, bytes]:
    """A fresh server S/MIME signing key (``ec`` or ``rsa``) as a signer, and its PEM cert."""
    key = new_private_key(algorithm)
    certificate = generate_smime(KeyUsage.SIGN, START, key)
    entry = smime_server_key(certificate, KeyUsage.SIGN, START)
    return load_signer(entry, private_pem(key)), entry.public


def openssl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """``openssl ARGS``: its result, whatever its status."""
    return subprocess.run(
        ["openssl", *args], input=data, capture_output=True, check=False, timeout=120
    )


def decrypt(view: bytes, cert: Path, key: Path, workdir: Path) -> bytes:
    """``openssl cms -decrypt`` of the S/MIME view (asserted to succeed): the plaintext."""
    (workdir / "view.eml").write_bytes(view)
    done = openssl(
        "cms", "-decrypt", "-binary", "-in", str(workdir / "view.eml"),
        "-recip", str(cert), "-inkey", str(key),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def verify(signed: bytes, signing_cert_pem: bytes, workdir: Path, tool: str = "cms") -> bytes:
    """``openssl cms|smime -verify`` of a ``multipart/signed`` entity against the signing
    certificate (its own trust anchor): the signed content, or ``b""`` when refused."""
    (workdir / "signed.eml").write_bytes(signed)
    (workdir / "signer.pem").write_bytes(signing_cert_pem)
    done = openssl(
        tool, "-verify", "-in", str(workdir / "signed.eml"),
        "-CAfile", str(workdir / "signer.pem"), "-purpose", "any",
    )  # fmt: skip
    return done.stdout if done.returncode == 0 else b""


def signer_of(signed: bytes, workdir: Path) -> x509.Certificate:
    """The certificate ``openssl cms -verify -signer`` names as the signer."""
    (workdir / "signed.eml").write_bytes(signed)
    out = workdir / "signer-out.pem"
    done = openssl(
        "cms", "-verify", "-noverify", "-in", str(workdir / "signed.eml"), "-signer", str(out)
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return x509.load_pem_x509_certificate(out.read_bytes())


def pem(certificate: x509.Certificate) -> bytes:
    """``certificate`` as PEM."""
    return certificate.public_bytes(serialization.Encoding.PEM)
