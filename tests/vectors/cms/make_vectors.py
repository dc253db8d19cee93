"""Regenerate the CMS encoder's fixed vectors (run from the repository root).

    python tests/vectors/cms/make_vectors.py

Writes ``vectors.json``: for each case the inputs (cipher, plaintext, the
CEK and IV draws, the ephemeral EC scalar) and the base64 body
our encoder produced from them.  The recipient's P-256 key and self-signed
certificate are created on the first run (``p256.key.pem``,
``p256.cert.pem``) and reused afterwards: the certificate's ECDSA signature is
randomised, so it cannot be derived again.

The independent check is ``openssl cms -decrypt``
of each stored body with the stored key (tests/cms/test_vectors.py).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.cms.draws import vector_draws  # noqa: E402
from tests.cms.parties import make_cert  # noqa: E402
from transcoder.cms import CmsSettings, Recipient, encrypt_to_smime_body  # noqa: E402

#: The recipient's static key scalar (only used when p256.key.pem does not exist yet).
RECIPIENT_SCALAR = 0x5EED_0F_C0FFEE_0123456789ABCDEF
CASES = [
    {
        "name": "p256-aes128-cbc",
        "cipher": "aes128-cbc",
        "plaintext": "Content-Type: text/plain\r\n\r\nHello, CMS.\r\n",
        "random": "000102030405060708090a0b0c0d0e0f" + "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
        "ephemeral": "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
    },
    {
        "name": "p256-aes256-gcm",
        "cipher": "aes256-gcm",
        "plaintext": "Content-Type: text/plain\r\n\r\n" + "0123456789" * 20 + "\r\n",
        "random": "00" * 32 + "cafebabefacedbaddecaf888",
        "ephemeral": "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100",
    },
]


def recipient_files() -> tuple[Path, Path]:
    """The key and certificate files, created on the first run."""
    key_path, cert_path = HERE / "p256.key.pem", HERE / "p256.cert.pem"
    if not key_path.exists():
        key = ec.derive_private_key(RECIPIENT_SCALAR, ec.SECP256R1())
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert = make_cert(key, "vector", serial=0x0C5)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def body_for(case: dict[str, str], recipient: Recipient) -> str:
    """The base64 body our encoder makes for ``case``."""
    plaintext = case["plaintext"].encode()
    out = io.BytesIO()
    encrypt_to_smime_body(
        io.BytesIO(plaintext),
        len(plaintext),
        out,
        [recipient],
        CmsSettings(case["cipher"]),
        draw=vector_draws(case),
    )
    return out.getvalue().decode("ascii")


def main() -> None:
    """Write vectors.json next to this script."""
    _, cert_path = recipient_files()
    der = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    recipient = Recipient.from_certificate(der)
    vectors = [dict(case, body=body_for(case, recipient)) for case in CASES]
    (HERE / "vectors.json").write_text(json.dumps(vectors, indent=2) + "\n")


if __name__ == "__main__":
    main()
