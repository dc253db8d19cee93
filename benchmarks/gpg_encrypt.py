"""Benchmark: OpenPGP transcoding through our python-gnupg adapter vs the gpg command line.

Run:  python benchmarks/gpg_encrypt.py [--size-mb 100] [--messages 1000] [--key x25519|rsa]

1. One large message (default 100 MB): ``encrypt_armored`` (python-gnupg
   feeding gpg's stdin from the file and writing its armored output, converted
   to CRLF, to a file) and the whole ``PgpMimeTranscoder.transcode`` (header
   protection + PGP/MIME framing) against plain ``gpg --encrypt --armor
   --compress-algo none --trust-model always -r KEY`` from the file into a
   file, run alternately in the same process; best of ``--repeat`` runs.  The
   RSS growth of this process during our runs is sampled every 5 ms.
2. Many small messages (default 1,000 x 4 KB): transcodes per second one at a
   time, and from a thread pool through a :class:`GpgPool` of one gpg per CPU
   (what the server does with its worker threads), next to the bare cost of
   starting one gpg per message.

Everything lives in a temporary directory that is removed at the end; the key
is generated there and validated by the keystore's own validator.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transcoder.keys.model import KeyStatus, OpenPgpDetails, StoredKey
from transcoder.keys.openpgp import validate_openpgp_key
from transcoder.openpgp.keyring import Keyring
from transcoder.openpgp.pool import GpgPool
from transcoder.transcoders.interfaces import TranscodeRequest
from transcoder.transcoders.pgpmime import PgpMimeTranscoder

ACCOUNT = "bench@example.org"
MB = 1_000_000


def gpg(home: Path, *args: str, stdin: bytes = b"") -> bytes:
    """Run gpg unattended in ``home``; return stdout."""
    command = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--yes"]
    command += ["--pinentry-mode", "loopback", "--passphrase", ""]
    done = subprocess.run([*command, *args], input=stdin, capture_output=True, check=True)
    return done.stdout


def make_key(work: Path, kind: str) -> tuple[StoredKey, Path]:
    """A validated, stored-like key of ``kind`` and a plain gpg home holding its public key."""
    generate, plain = work / "generate", work / "plain-home"
    for home in (generate, plain):
        home.mkdir(mode=0o700)
    if kind == "rsa":
        gpg(generate, "--quick-gen-key", f"<{ACCOUNT}>", "rsa3072", "cert,sign", "never")
        fpr = gpg(generate, "--with-colons", "--list-keys").decode().split("fpr:::::::::")[1][:40]
        gpg(generate, "--quick-add-key", fpr, "rsa3072", "encr", "never")
    else:
        gpg(generate, "--quick-gen-key", f"<{ACCOUNT}>", "future-default", "default", "never")
    public = gpg(generate, "--export")
    subprocess.run(["gpgconf", "--homedir", str(generate), "--kill", "all"], check=False)
    gpg(plain, "--import", stdin=public)
    now = datetime.now(UTC)
    validated = validate_openpgp_key(public, ACCOUNT, now)
    values = {f.name: getattr(validated, f.name) for f in fields(validated)}
    key = StoredKey(
        **values, account=ACCOUNT, status=KeyStatus.ACTIVE, created_at=now, activated_at=now
    )
    return key, plain


def gpg_command_line(home: Path, fingerprint: str) -> list[str]:
    """The reference: the issue's plain gpg invocation, in a home holding the public key."""
    return [
        *("gpg", "--homedir", str(home), "--batch", "--encrypt", "--armor"),
        *("--compress-algo", "none", "--trust-model", "always", "-r", fingerprint),
    ]


@contextmanager
def rss_growth() -> Iterator[list[int]]:
    """Yields a list that ends up holding the peak RSS growth (octets) during the block."""

    def rss() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    start, peak, stop = rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], rss() - start)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result: list[int] = []
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
        result.append(peak[0])


def timed(action: Callable[[], object]) -> float:
    """Seconds ``action`` takes."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def write_source(path: Path, size: int) -> None:
    """A message of about ``size`` octets: a header and random base64-like text lines."""
    rng = random.Random(1)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    block = b"".join(bytes(rng.choice(alphabet) for _ in range(76)) + b"\r\n" for _ in range(13000))
    with path.open("wb") as f:
        f.write(b"From: a@example.org\r\nTo: bench@example.org\r\nSubject: big\r\n")
        f.write(b"Content-Type: text/plain\r\n\r\n")
        while f.tell() < size:
            f.write(block[: size - f.tell()])


def large(work: Path, key: StoredKey, plain_home: Path, size: int, repeat: int) -> None:
    """Part 1: one large message, ours vs gpg's command line."""
    keyring = Keyring(work / "gnupg")
    transcoder = PgpMimeTranscoder(keyring, GpgPool())
    source, out = work / "source.eml", work / "out"
    write_source(source, size)
    assert isinstance(key.details, OpenPgpDetails)

    def baseline() -> None:
        with source.open("rb") as src, out.open("wb") as dst:
            subprocess.run(
                gpg_command_line(plain_home, key.fingerprint),
                stdin=src,
                stdout=dst,
                check=True,
            )

    def adapter() -> None:
        with source.open("rb") as src, out.open("wb") as dst:
            keyring.encrypt_armored(src, dst, [key], datetime.now(UTC))

    def transcode() -> None:
        with source.open("rb") as src, out.open("wb") as dst:
            request = TranscodeRequest(src, size, (key,), datetime.now(UTC), os.urandom)
            transcoder.transcode(request, dst)

    best = {"gpg": float("inf"), "encrypt_armored": float("inf"), "transcode": float("inf")}
    growth = 0
    for _ in range(repeat):
        best["gpg"] = min(best["gpg"], timed(baseline))
        for name, action in (("encrypt_armored", adapter), ("transcode", transcode)):
            with rss_growth() as peak:
                best[name] = min(best[name], timed(action))
            growth = max(growth, peak[0])
    print(f"{size / MB:.0f} MB message, {key.key_algorithm}, best of {repeat}:")
    for name, seconds in best.items():
        ratio = best["gpg"] / seconds
        print(f"  {name:16s} {size / MB / seconds:7.1f} MB/s   ratio vs gpg {ratio:.2f}")
    print(f"  RSS growth during our runs: {growth / 2**20:.1f} MiB")


def small(work: Path, key: StoredKey, plain_home: Path, count: int) -> None:
    """Part 2: many 4 KB messages, sequential and through the pool."""
    keyring = Keyring(work / "gnupg-small")
    cpus = os.cpu_count() or 1
    transcoder = PgpMimeTranscoder(keyring, GpgPool(cpus))
    body = (b"x" * 74 + b"\r\n") * 52
    message = b"From: a@example.org\r\nSubject: small\r\n\r\n" + body[: 4096 - 40]

    def one(_: int) -> int:
        request = TranscodeRequest(
            io.BytesIO(message), len(message), (key,), datetime.now(UTC), os.urandom
        )
        return transcoder.transcode(request, io.BytesIO()).size

    def bare(_: int) -> int:
        return subprocess.run(
            gpg_command_line(plain_home, key.fingerprint),
            input=message,
            capture_output=True,
            check=True,
        ).returncode

    one(0)  # warm: python-gnupg's handle, the keyring file
    sequential = timed(lambda: [one(i) for i in range(count)])
    with ThreadPoolExecutor(cpus * 2) as pool:
        pooled = timed(lambda: list(pool.map(one, range(count))))
    bare_time = timed(lambda: [bare(i) for i in range(count)])
    print(f"{count} x {len(message)} octet messages, {key.key_algorithm}:")
    print(f"  sequential transcode     {count / sequential:7.0f} msg/s")
    print(f"  {cpus * 2} threads, pool of {cpus}   {count / pooled:7.0f} msg/s")
    print(f"  bare gpg CLI, sequential {count / bare_time:7.0f} msg/s")


def main() -> None:
    """Parse options, run both parts, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--key", choices=["x25519", "rsa"], default="x25519")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-gpg-"))
    try:
        key, plain_home = make_key(work, options.key)
        large(work, key, plain_home, options.size_mb * MB, options.repeat)
        small(work, key, plain_home, options.messages)
    finally:
        for home in (work / "generate", work / "plain-home"):
            subprocess.run(
                ["gpgconf", "--homedir", str(home), "--kill", "all"],
                capture_output=True,
                check=False,
            )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
