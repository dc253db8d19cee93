"""Benchmark: OpenPGP transcoding, native and through gpg, vs the gpg command line.

Run:  python benchmarks/gpg_encrypt.py [--size-mb 100] [--messages 1000] [--key x25519|rsa]

1. One large message (default 100 MB): the native encoder's
   ``NativePgpMimeTranscoder.transcode`` (issue 12: header protection,
   PGP/MIME framing, PKESK, AES-256 CFB with MDC, armor, all in-process),
   ``encrypt_armored`` (python-gnupg feeding gpg's stdin from the file and
   writing its armored output, converted to CRLF, to a file) and the gpg
   ``PgpMimeTranscoder.transcode`` against plain ``gpg --encrypt --armor
   --compress-algo none --trust-model always -r KEY`` from the file into a
   file and into /dev/null, run alternately in the same process; best of
   ``--repeat`` runs.  Our outputs go to a file.  The RSS growth of this
   process during our runs is sampled every 5 ms.
2. Many small messages (default 1,000 x 4 KB): transcodes per second, native
   and through gpg, one at a time and from a thread pool (for gpg through a
   :class:`GpgPool` of one gpg per CPU, what the server does with its worker
   threads), next to the bare cost of starting one gpg per message.

``os.getloadavg()`` is printed with the figures: other processes on the
machine slow every row, so compare rows of one run only.

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
from transcoder.transcoders.pgpmime import NativePgpMimeTranscoder, PgpMimeTranscoder

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
    """Part 1: one large message, ours (native and gpg) vs gpg's command line."""
    keyring = Keyring(work / "gnupg")
    transcoder = PgpMimeTranscoder(keyring, GpgPool())
    native = NativePgpMimeTranscoder()
    source, out = work / "source.eml", work / "out"
    write_source(source, size)
    assert isinstance(key.details, OpenPgpDetails)

    def baseline(into: Path) -> Callable[[], None]:
        def run() -> None:
            with source.open("rb") as src, into.open("wb") as dst:
                subprocess.run(
                    gpg_command_line(plain_home, key.fingerprint),
                    stdin=src,
                    stdout=dst,
                    check=True,
                )

        return run

    def adapter() -> None:
        with source.open("rb") as src, out.open("wb") as dst:
            keyring.encrypt_armored(src, dst, [key], datetime.now(UTC))

    def transcode_with(chosen: PgpMimeTranscoder | NativePgpMimeTranscoder) -> Callable[[], None]:
        def run() -> None:
            with source.open("rb") as src, out.open("wb") as dst:
                request = TranscodeRequest(src, size, (key,), datetime.now(UTC), os.urandom)
                chosen.transcode(request, dst)

        return run

    references = {"gpg -> file": baseline(out), "gpg -> /dev/null": baseline(Path("/dev/null"))}
    ours = {
        "native transcode": transcode_with(native),
        "gpg encrypt_armored": adapter,
        "gpg transcode": transcode_with(transcoder),
    }
    best = {name: float("inf") for name in (*references, *ours)}
    growth = {name: 0 for name in ours}
    for _ in range(repeat):
        for name, action in references.items():
            best[name] = min(best[name], timed(action))
        for name, action in ours.items():
            with rss_growth() as peak:
                best[name] = min(best[name], timed(action))
            growth[name] = max(growth[name], peak[0])
    print(f"{size / MB:.0f} MB message, {key.key_algorithm}, best of {repeat}:")
    print(f"  os.getloadavg() {os.getloadavg()}")
    for name, seconds in best.items():
        to_file = best["gpg -> file"] / seconds
        to_null = best["gpg -> /dev/null"] / seconds
        print(
            f"  {name:20s} {size / MB / seconds:7.1f} MB/s   speed / gpg -> file {to_file:.2f},"
            f" / gpg -> /dev/null {to_null:.2f}"
        )
    for name, octets in growth.items():
        print(f"  RSS growth during {name}: {octets / 2**20:.1f} MiB")


def small(work: Path, key: StoredKey, plain_home: Path, count: int) -> None:
    """Part 2: many 4 KB messages, native and through gpg, sequential and threaded."""
    keyring = Keyring(work / "gnupg-small")
    cpus = os.cpu_count() or 1
    transcoder = PgpMimeTranscoder(keyring, GpgPool(cpus))
    native = NativePgpMimeTranscoder()
    body = (b"x" * 74 + b"\r\n") * 52
    message = b"From: a@example.org\r\nSubject: small\r\n\r\n" + body[: 4096 - 40]

    def one_with(chosen: PgpMimeTranscoder | NativePgpMimeTranscoder) -> Callable[[int], int]:
        def one(_: int) -> int:
            request = TranscodeRequest(
                io.BytesIO(message), len(message), (key,), datetime.now(UTC), os.urandom
            )
            return chosen.transcode(request, io.BytesIO()).size

        return one

    def bare(_: int) -> int:
        return subprocess.run(
            gpg_command_line(plain_home, key.fingerprint),
            input=message,
            capture_output=True,
            check=True,
        ).returncode

    rates: dict[str, float] = {}
    for name, chosen in (("native", native), ("gpg", transcoder)):
        one = one_with(chosen)
        one(0)  # warm: the recipient cache, python-gnupg's handle, the keyring file
        rates[f"{name} sequential"] = count / timed(lambda f=one: [f(i) for i in range(count)])
        with ThreadPoolExecutor(cpus * 2) as pool:
            rates[f"{name} {cpus * 2} threads"] = count / timed(
                lambda f=one: list(pool.map(f, range(count)))  # type: ignore[misc]
            )
    rates["bare gpg CLI, sequential"] = count / timed(lambda: [bare(i) for i in range(count)])
    print(f"{count} x {len(message)} octet messages, {key.key_algorithm}:")
    print(f"  os.getloadavg() {os.getloadavg()}")
    for name, rate in rates.items():
        print(f"  {name:28s} {rate:7.0f} msg/s")
    native_best = max(rates["native sequential"], rates[f"native {cpus * 2} threads"])
    gpg_best = max(rates["gpg sequential"], rates[f"gpg {cpus * 2} threads"])
    print(f"  native / gpg (best of each)  {native_best / gpg_best:7.1f} x")


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
