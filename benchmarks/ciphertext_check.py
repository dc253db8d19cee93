"""How fast, and in how much memory, a stored message is found to be ciphertext already.

``transcoder.mime.ciphertext.is_ciphertext`` reads every octet of a message
that looks encrypted before it may pass through untranscoded (issue 8,
finding 2).  This script makes genuine messages of ``--size-mb`` megabytes
with the real tools -- ``openssl cms -encrypt`` (S/MIME) and ``gpg
--encrypt`` in a scratch home (PGP/MIME and inline PGP) -- plus a plain
text message of the same size, and prints for each the best of three runs
of the check: seconds, MB/s and the peak of Python memory (tracemalloc,
measured on a separate run).  Not a test: it asserts nothing.

    .venv/bin/python benchmarks/ciphertext_check.py              # 100 MB
    .venv/bin/python benchmarks/ciphertext_check.py --quick      # 5 MB
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transcoder.mime.ciphertext import is_ciphertext
from transcoder.mime.protect import parse_top_level

HEADER = b"From: dave@example.net\r\nTo: alice@example.org\r\nSubject: large\r\n"


def run(*command: str, stdin: bytes | None = None) -> bytes:
    """Run a tool; its standard output (stops the script on failure)."""
    return subprocess.run(command, input=stdin, capture_output=True, check=True).stdout


def make_plaintext(work: Path, size: int) -> Path:
    """A MIME entity of ``size`` random octets in base64 lines (what gets encrypted)."""
    path = work / "plain.eml"
    with path.open("wb") as out:
        out.write(
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        )
        left = size
        while left > 0:
            block = os.urandom(min(left, 57 * 1024))
            out.write(b"\r\n".join(run_lines(block)) + b"\r\n")
            left -= len(block)
    return path


def run_lines(block: bytes) -> list[bytes]:
    """``block`` in 76-character base64 lines."""
    import base64

    return [base64.b64encode(block[i : i + 57]) for i in range(0, len(block), 57)]


def make_smime(work: Path, plain: Path) -> Path:
    """``openssl cms -encrypt -binary`` to a fresh self-signed RSA-2048 certificate."""
    key, cert = work / "key.pem", work / "cert.pem"
    run(
        *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
        *("-subj", "/CN=bench", "-keyout", str(key), "-out", str(cert)),
    )
    path = work / "smime.eml"
    run(
        *("openssl", "cms", "-encrypt", "-aes256", "-binary", "-in", str(plain)),
        *("-out", str(path), str(cert)),
    )
    return crlf_with_header(path)


def make_armored(work: Path, plain: Path) -> Path:
    """``gpg --armor --encrypt`` to a fresh Curve25519 key in a scratch home."""
    home = work / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ("gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback")
    run(*gpg, "--passphrase", "", "--quick-gen-key", "Bench <b@example.org>", "future-default")
    armored = work / "message.asc"
    run(
        *gpg,
        *("--trust-model", "always", "--compress-algo", "none", "--armor", "--encrypt"),
        *("-r", "b@example.org", "--output", str(armored), str(plain)),
    )
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    return armored


def wrap(work: Path, name: str, head: bytes, source: Path, tail: bytes) -> Path:
    """``HEADER + head + source (CRLF) + tail`` written to ``work/name``, streamed."""
    path = work / name
    with path.open("wb") as out, source.open("rb") as fp:
        out.write(HEADER + head)
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            out.write(chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        out.write(tail)
    return path


def crlf_with_header(path: Path) -> Path:
    """The message at ``path`` with HEADER in front and CRLF line ends."""
    return wrap(path.parent, path.stem + "-crlf.eml", b"", path, b"")


def measure(path: Path) -> tuple[bool, float, int]:
    """(answer, best of three seconds, peak Python memory in octets)."""
    best = float("inf")
    answer = False
    for _ in range(3):
        with path.open("rb") as fp:
            start = time.perf_counter()
            answer = is_ciphertext(parse_top_level(fp), fp)
            best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    with path.open("rb") as fp:
        is_ciphertext(parse_top_level(fp), fp)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return answer, best, peak


def main() -> None:
    """Make the messages, check each, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="5 MB")
    args = parser.parse_args()
    size = (5 if args.quick else args.size_mb) * 1_000_000
    work = Path(tempfile.mkdtemp(prefix="ciphertext-bench-"))
    try:
        plain = make_plaintext(work, size * 3 // 4)
        armored = make_armored(work, plain)
        control = (
            b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";'
            b' boundary="b"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\n'
            b"Version: 1\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        messages = {
            "S/MIME (openssl cms)": make_smime(work, plain),
            "PGP/MIME (gpg)": wrap(work, "pgp-mime.eml", control, armored, b"\r\n--b--\r\n"),
            "inline PGP (gpg)": wrap(work, "inline.eml", b"\r\n", armored, b""),
            "plain text (rejected)": wrap(work, "text.eml", b"\r\n", plain, b""),
        }
        print(f"{'message':<24} {'MB':>7} {'answer':>7} {'s':>7} {'MB/s':>7} {'peak KiB':>9}")
        for name, path in messages.items():
            megabytes = path.stat().st_size / 1e6
            answer, seconds, peak = measure(path)
            print(
                f"{name:<24} {megabytes:7.1f} {answer!s:>7} {seconds:7.3f}"
                f" {megabytes / seconds:7.0f} {peak / 1024:9.0f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
