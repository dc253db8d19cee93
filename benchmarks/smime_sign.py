"""What signing costs the S/MIME transcoder (issue 16, signed views).  Sans-IO, no server.

    python benchmarks/smime_sign.py            # 1,000 x 4 KB and 64 MB
    python benchmarks/smime_sign.py --quick    # 100 x 4 KB and 8 MB (a smoke run)

Times :meth:`transcoder.transcoders.smime.SmimeTranscoder.transcode` into a
discarding file to a P-256 recipient, without a signer and with a server
signing key made as the server makes it (EC P-256, RFC 6979 ECDSA) and an
RSA-3072 one: messages per second for small messages (where the signature
dominates) and MB/s for a large one (where the second read -- the SHA-256
pass before encrypting -- does), with Python's peak allocation.  The
signature memo (:func:`transcoder.signing.smime.signature_for`) is cleared
before each run and every message differs, so every view is signed.  Each figure is the best of
``--runs``.  One view of each kind is checked with ``openssl cms -decrypt``
and ``openssl cms -verify``.  A script to run by hand, not a timed test.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from transcoder.keys.model import KeyStatus, KeyUsage, StoredKey
from transcoder.keys.server_keys import (
    generate_smime,
    new_private_key,
    private_pem,
    smime_server_key,
)
from transcoder.keys.smime import validate_certificate
from transcoder.signing import smime as signing
from transcoder.signing.signers import load_signer
from transcoder.transcoders.interfaces import TranscodeRequest, ViewSigner
from transcoder.transcoders.smime import SmimeTranscoder

NOW = datetime.now(UTC)
USER = "bench@example.org"


class Discard(io.RawIOBase):
    """A writable file that keeps nothing (counts octets)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.count += len(data)
        return len(data)


def user_key() -> tuple[object, ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A P-256 recipient certificate for USER, validated as XKEY would, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(USER)]), False)
        .add_extension(
            x509.KeyUsage(True, False, False, False, True, False, False, False, False), True
        )
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    validated = validate_certificate(der, USER, NOW)
    stored = StoredKey(
        **{f.name: getattr(validated, f.name) for f in fields(validated)},
        account=USER,
        status=KeyStatus.ACTIVE,
        created_at=NOW,
        activated_at=NOW,
    )
    return stored, key, cert


def signer(algorithm: str) -> tuple[ViewSigner, bytes]:
    key = new_private_key(algorithm)
    cert = generate_smime(KeyUsage.SIGN, NOW - timedelta(minutes=1), key)
    entry = smime_server_key(cert, KeyUsage.SIGN, NOW)
    return load_signer(entry, private_pem(key)), entry.public


def message(size: int) -> bytes:
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
    body = line * (size // len(line) + 1)
    return b"Subject: bench\r\nContent-Type: text/plain\r\n\r\n" + body[:size]


def run(stored: object, base: bytes, count: int, who: ViewSigner | None) -> tuple[float, int]:
    """Seconds for ``count`` views of distinct messages like ``base`` (each one signed:
    the memo never hits), and the peak allocation of the last one."""
    transcoder = SmimeTranscoder()
    signing._signatures.clear()
    messages = [base + b"%d\r\n" % i for i in range(count)] if count > 1 else [base]
    start = time.perf_counter()
    peak = 0
    for i, data in enumerate(messages):
        if i == count - 1:
            tracemalloc.start()
        request = TranscodeRequest(
            io.BytesIO(data),
            len(data),
            (stored,),
            NOW,
            os.urandom,
            signer=who,  # type: ignore[arg-type]
        )
        transcoder.transcode(request, Discard())  # type: ignore[arg-type]
        if i == count - 1:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    return time.perf_counter() - start, peak


def check(stored: object, key: object, cert: x509.Certificate, who: ViewSigner, pem: bytes) -> None:
    """One signed view through openssl: decrypt, then verify against the signing cert."""
    data = message(4096)
    out = io.BytesIO()
    request = TranscodeRequest(io.BytesIO(data), len(data), (stored,), NOW, os.urandom, signer=who)  # type: ignore[arg-type]
    SmimeTranscoder().transcode(request, out)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "view.eml").write_bytes(out.getvalue())
        (d / "me.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / "me.key").write_bytes(private_pem(key))  # type: ignore[arg-type]
        (d / "sign.pem").write_bytes(pem)
        subprocess.run(
            ["openssl", "cms", "-decrypt", "-in", str(d / "view.eml"), "-recip", str(d / "me.pem"),
             "-inkey", str(d / "me.key"), "-out", str(d / "signed.eml")], check=True,
        )  # fmt: skip
        subprocess.run(
            ["openssl", "cms", "-verify", "-in", str(d / "signed.eml"), "-CAfile",
             str(d / "sign.pem"), "-purpose", "any", "-out", os.devnull],
            check=True, capture_output=True,
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    small_count, large_mb = (100, 8) if args.quick else (1000, 64)
    stored, key, cert = user_key()
    signers = {"none": (None, b""), "ec-p256": signer("ec"), "rsa-3072": signer("rsa")}
    for who, pem in signers.values():
        if who is not None:
            check(stored, key, cert, who, pem)
    small, large = message(4096), message(large_mb * 2**20)
    for name, (who, _) in signers.items():
        best_small = min(run(stored, small, small_count, who)[0] for _ in range(args.runs))
        timings = [run(stored, large, 1, who) for _ in range(args.runs)]
        best_large = min(t for t, _ in timings)
        peak = max(p for _, p in timings)
        print(
            f"{name:9} {small_count / best_small:8.0f} msg/s (4 KB)"
            f"  {large_mb / best_large:6.1f} MB/s ({large_mb} MB)"
            f"  peak {peak / 2**20:.1f} MiB"
        )


if __name__ == "__main__":
    main()
