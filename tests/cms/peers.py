"""Run our encoder, and the real peers that decrypt its output (openssl, gpgsm, cryptography)."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from tests.cms.parties import Party
from transcoder.cms import (
    CmsSettings,
    Recipient,
    encrypt_to_smime_body,
    smime_body_size,
    smime_type,
)

OPENSSL = shutil.which("openssl")
GPGSM = shutil.which("gpgsm")
GPGCONF = shutil.which("gpgconf")


def encrypt(
    plaintext: bytes, recipients: Sequence[Recipient], settings: CmsSettings, **kwargs: Any
) -> bytes:
    """The base64 body for ``plaintext``; checks the returned count and the prediction."""
    out = io.BytesIO()
    written = encrypt_to_smime_body(
        io.BytesIO(plaintext), len(plaintext), out, recipients, settings, **kwargs
    )
    body = out.getvalue()
    assert written == len(body) == smime_body_size(len(plaintext), recipients, settings)
    return body


def body_lines(body: bytes) -> list[bytes]:
    """The lines of a base64 body, each checked to be CRLF-terminated and at most 76 columns."""
    assert body.endswith(b"\r\n")
    lines = body[:-2].split(b"\r\n")
    assert all(len(line) == 76 for line in lines[:-1])
    assert 0 < len(lines[-1]) <= 76
    assert b"\n" not in b"".join(lines) and b"\r" not in b"".join(lines)
    return lines


def body_to_der(body: bytes) -> bytes:
    """The DER a base64 body carries (strictly decoded: only the base64 alphabet)."""
    return base64.b64decode(b"".join(body_lines(body)), validate=True)


def smime_message(body: bytes, settings: CmsSettings) -> bytes:
    """A complete application/pkcs7-mime message around ``body`` (RFC 8551 section 3.3)."""
    header = (
        "MIME-Version: 1.0\r\n"
        f"Content-Type: application/pkcs7-mime; smime-type={smime_type(settings)};"
        ' name="smime.p7m"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        "\r\n"
    )
    return header.encode("ascii") + body


def require(tool: str | None, name: str) -> str:
    """The tool's path, or skip the test when it is not installed."""
    if tool is None:
        pytest.skip(f"{name} is not installed")
    return tool


def openssl_decrypt(tmp_path: Path, der: bytes, party: Party, *, inform: str = "DER") -> bytes:
    """Plaintext from ``openssl cms -decrypt`` (fails the test if openssl refuses)."""
    openssl = require(OPENSSL, "openssl")
    src = tmp_path / f"msg-{party.name}.{inform.lower()}"
    dst = tmp_path / f"plain-{party.name}.bin"
    src.write_bytes(der)
    result = subprocess.run(
        [
            *(openssl, "cms", "-decrypt", "-binary", "-inform", inform, "-in", str(src)),
            *("-recip", str(party.cert_path), "-inkey", str(party.key_path), "-out", str(dst)),
        ],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return dst.read_bytes()


def openssl_opens(view: bytes, party: Party, workdir: Path) -> bytes:
    """``openssl cms -decrypt`` of the S/MIME message ``view`` with ``party``'s key.

    The plaintext, or ``b""`` when openssl cannot open it (not a recipient).
    """
    (workdir / "view.eml").write_bytes(view)
    done = subprocess.run(
        [
            *(require(OPENSSL, "openssl"), "cms", "-decrypt", "-in", str(workdir / "view.eml")),
            *("-recip", str(party.cert_path), "-inkey", str(party.key_path)),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    return done.stdout if done.returncode == 0 else b""


#: Fresh PKCS#12 files offered to gpgsm before its import counts as failed.
IMPORT_ATTEMPTS = 5


class GpgsmHome:
    """A throw-away GNUPGHOME with one party's key imported into gpgsm."""

    PASSPHRASE = b"cms-test"

    def __init__(self, home: Path, party: Party) -> None:
        self.home = home
        self.home.mkdir(mode=0o700)
        self.env = dict(os.environ, GNUPGHOME=str(home))
        # gpgsm 2.2 reads PKCS#12 only with the legacy PBE (3DES, SHA-1 MAC).
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
            .build(self.PASSPHRASE)
        )
        # gpgsm 2.2 now and then fails to read a PKCS#12 that openssl reads fine
        # ("data error at shrouded_key_bag.decrypted-text", or "error at
        # bag.encryptedData ... possibly bad passphrase"): it depends on the random
        # salts, so a fresh PKCS#12 (new salts) is tried a few times.
        for attempt in range(IMPORT_ATTEMPTS):
            p12 = pkcs12.serialize_key_and_certificates(
                party.name.encode(), party.key, party.cert, None, encryption
            )
            (home / "key.p12").write_bytes(p12)
            result = self._run(["--import", str(home / "key.p12")])
            if result.returncode == 0:
                return
            if attempt == IMPORT_ATTEMPTS - 1:
                raise AssertionError(result.stderr.decode(errors="replace"))

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[bytes]:
        gpgsm = require(GPGSM, "gpgsm")
        # Loopback pinentry: the passphrase comes on stdin (--passphrase-fd 0),
        # both to open the PKCS#12 and to unlock the imported key.
        return subprocess.run(
            [
                *(gpgsm, "--batch", "--pinentry-mode", "loopback", "--passphrase-fd", "0"),
                *("--disable-crl-checks", "--disable-policy-checks", *args),
            ],
            input=self.PASSPHRASE + b"\n",
            capture_output=True,
            env=self.env,
            timeout=60,
        )

    def _gpgsm(self, args: list[str]) -> bytes:
        result = self._run(args)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        return result.stdout

    def decrypt(self, der: bytes) -> bytes:
        """Plaintext from ``gpgsm --decrypt``."""
        path = self.home / "msg.der"
        path.write_bytes(der)
        return self._gpgsm(["--decrypt", str(path)])

    def close(self) -> None:
        """Stop the gpg-agent this home started."""
        if GPGCONF is not None:
            subprocess.run(
                [GPGCONF, "--kill", "gpg-agent"], env=self.env, capture_output=True, timeout=30
            )


def cryptography_decrypt_der(der: bytes, party: Party) -> bytes:
    """Plaintext from cryptography's ``pkcs7_decrypt_der`` (RSA PKCS#1 v1.5, AES-CBC only)."""
    return pkcs7.pkcs7_decrypt_der(der, party.cert, party.key, [])


def cryptography_decrypt_smime(message: bytes, party: Party) -> bytes:
    """Plaintext from cryptography's ``pkcs7_decrypt_smime`` on a whole S/MIME message."""
    return pkcs7.pkcs7_decrypt_smime(message, party.cert, party.key, [])
