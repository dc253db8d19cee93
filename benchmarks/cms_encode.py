"""Throughput of the CMS encoder against ``openssl cms -encrypt -stream``, on the same file.

    python benchmarks/cms_encode.py [--size-mb 100] [--runs 5] [--cipher aes256-cbc]

Creates a mail-like message of ``--size-mb`` MB (10^6 octets) and an RSA-3072
key and self-signed certificate in a temporary directory, then alternates, run
by run:

* ours: ``transcoder.cms.encrypt_to_smime_body`` from the file into an S/MIME
  message file (the RFC 8551 header, then the base64 body);
* openssl: ``openssl cms -encrypt -stream -aes256 -outform SMIME`` (the flag
  follows ``--cipher``) from the same file into a message file.

It prints the plaintext MB/s of each (best and median of the runs, wall
clock; openssl's includes its process start-up, a few milliseconds) with the
ratio ours / openssl, and the CPU seconds each used.  Our output is then
decrypted once with ``openssl cms -decrypt`` and compared with the input.
``--devnull`` sends both outputs to /dev/null instead (the pure encoding
cost, without the file writes; nothing to verify then).  On a machine with
other load, compare medians of several runs.  This is a script to run by
hand, not a timed test.
"""

from __future__ import annotations

import argparse
import base64
import filecmp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transcoder.cms import (
    CIPHERS,
    CmsSettings,
    Recipient,
    encrypt_to_smime_body,
    smime_type,
)

OPENSSL_CIPHER = {
    "aes256-cbc": "-aes256",
    "aes128-cbc": "-aes128",
    "aes256-gcm": "-aes-256-gcm",
    "aes128-gcm": "-aes-128-gcm",
}


def make_message(path: Path, size: int) -> None:
    """A message of ``size`` octets: a header, then base64 text lines (like an attachment)."""
    header = (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: benchmark\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    block = base64.encodebytes(os.urandom(57 * 4096)).replace(b"\n", b"\r\n")
    with path.open("wb") as out:
        out.write(header)
        left = size - len(header)
        while left > 0:
            out.write(block[:left])
            left -= min(left, len(block))


def make_certificate(directory: Path, bits: int) -> tuple[Path, Path, bytes]:
    """An RSA key and a self-signed certificate as PEM files; returns (cert, key, cert DER)."""
    key = rsa.generate_private_key(65537, bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "benchmark")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


def run_ours(
    src: Path, dst: Path, recipient: Recipient, settings: CmsSettings
) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one encryption of ``src`` into an S/MIME message."""
    header = (
        "MIME-Version: 1.0\r\n"
        f"Content-Type: application/pkcs7-mime; smime-type={smime_type(settings)};"
        ' name="smime.p7m"\r\nContent-Transfer-Encoding: base64\r\n'
        'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n'
    ).encode("ascii")
    size = src.stat().st_size
    cpu, wall = time.process_time(), time.perf_counter()
    with src.open("rb") as source, dst.open("wb") as out:
        out.write(header)
        encrypt_to_smime_body(source, size, out, [recipient], settings)
    return time.perf_counter() - wall, time.process_time() - cpu


def run_openssl(src: Path, dst: Path, cert: Path, cipher: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``openssl cms -encrypt -stream`` on ``src``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(
        [
            *("openssl", "cms", "-encrypt", "-stream", OPENSSL_CIPHER[cipher]),
            *("-outform", "SMIME", "-in", str(src), "-out", str(dst), str(cert)),
        ],
        check=True,
    )
    elapsed = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def verify(ours: Path, src: Path, cert: Path, key: Path, scratch: Path) -> bool:
    """True when openssl decrypts our message back to ``src``."""
    plain = scratch / "decrypted.bin"
    subprocess.run(
        [
            *("openssl", "cms", "-decrypt", "-binary", "-inform", "SMIME", "-in", str(ours)),
            *("-recip", str(cert), "-inkey", str(key), "-out", str(plain)),
        ],
        check=True,
    )
    same = filecmp.cmp(plain, src, shallow=False)
    plain.unlink()
    return same


def report(label: str, size: int, runs: list[tuple[float, float]]) -> tuple[float, float]:
    """Print one line of figures; return (best MB/s, median MB/s)."""
    walls = [wall for wall, _ in runs]
    best, median = size / min(walls) / 1e6, size / statistics.median(walls) / 1e6
    cpu = min(cpu for _, cpu in runs)
    print(f"{label:<9} best {best:7.1f} MB/s   median {median:7.1f} MB/s   min CPU {cpu:6.3f} s")
    return best, median


def main() -> None:
    """Parse the options, run the comparison, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cipher", choices=CIPHERS, default="aes256-cbc")
    parser.add_argument("--rsa-bits", type=int, default=3072)
    parser.add_argument("--devnull", action="store_true", help="write both outputs to /dev/null")
    args = parser.parse_args()
    if shutil.which("openssl") is None:
        sys.exit("openssl is not installed")
    settings = CmsSettings(args.cipher)
    with tempfile.TemporaryDirectory(prefix="cms-bench-") as tmp:
        scratch = Path(tmp)
        src, ours, theirs = scratch / "message.eml", scratch / "ours.p7m", scratch / "openssl.p7m"
        if args.devnull:
            ours = theirs = Path(os.devnull)
        make_message(src, args.size_mb * 1_000_000)
        cert, key, cert_der = make_certificate(scratch, args.rsa_bits)
        recipient = Recipient.from_certificate(cert_der)
        size = src.stat().st_size
        target = "/dev/null" if args.devnull else "files"
        print(
            f"{size / 1e6:.0f} MB message, {args.cipher}, RSA-{args.rsa_bits},"
            f" {args.runs} runs, output to {target}"
        )
        print(subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip())
        mine: list[tuple[float, float]] = []
        openssl: list[tuple[float, float]] = []
        for _ in range(args.runs):
            mine.append(run_ours(src, ours, recipient, settings))
            openssl.append(run_openssl(src, theirs, cert, args.cipher))
        our_best, our_median = report("ours", size, mine)
        their_best, their_median = report("openssl", size, openssl)
        ratios = f"best {our_best / their_best:.2f}, median {our_median / their_median:.2f}"
        print(f"ratio ours/openssl: {ratios}")
        if not args.devnull:
            decrypts = verify(ours, src, cert, key, scratch)
            print("openssl decrypts ours:", "yes" if decrypts else "NO")


if __name__ == "__main__":
    main()
