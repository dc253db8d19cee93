"""CONVERT's conversions alone (issue 15): one attachment part, sans-IO, no IMAP.

    python benchmarks/convert_parts.py [--size-mb 10] [--runs 3]

Builds a multipart message with a base64 attachment of ``--size-mb`` MB and a
latin-1 text part, then times, run by run:

* ``application/pkcs7-mime`` (AES-256-CBC and AES-256-GCM) of the attachment
  to an RSA-2048 certificate, with the view secret's derived randomness;
* ``multipart/encrypted`` of the same part to a freshly made Curve25519 key
  (gpg makes the key; the native encoder encrypts);
* ``text/plain`` charset conversion of the text part to UTF-8 (0.12 MB:
  timed over 300 runs, for one takes a fraction of a millisecond).

Each case runs once untimed first (codecs, keys and the CMS code load then).

The message is read from a temporary file, as the server reads the stored
message, and each result goes to the engine's spooled temporary file (on
disk past 1 MiB).  It prints MB/s (best and median, of the part's stored
octets) and the growth of this process's peak RSS during the conversions
(constant: neither the part nor its conversion is held whole).  Not a test;
runs vary with the machine's load.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.convert.support import context
from tests.openpgp.gpgkeys import cleanup, session_keys
from tests.transcoders.smime_keys import identity
from transcoder.convert import ConversionRequest, convert_part, source_part
from transcoder.convert.registry import ConversionRegistry
from transcoder.mime.entity import parse_message

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Timed runs of a part under 1 MB (at least ``--runs``).
SMALL_RUNS = 300


def message(size: int) -> bytes:
    """A two-part message: latin-1 text, then a base64 attachment of ``size`` octets."""
    attachment = base64.encodebytes(os.urandom(size)).replace(b"\n", b"\r\n")
    return (
        b'Subject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n"
        + "Grüße ".encode("latin-1")
        * 20000
        + b"\r\n--b\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + attachment + b"--b--\r\n"
    )


def _kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def timed(path: Path, part: tuple[int, ...], request: ConversionRequest, keys: tuple) -> float:
    with path.open("rb") as fp:
        source = source_part(fp, parse_message(fp), part)
        assert source is not None
        start = time.perf_counter()
        converted = convert_part(ConversionRegistry(), source, request, context(keys))
        elapsed = time.perf_counter() - start
    spool = getattr(converted, "file", None)  # None: a checkout that held results in memory
    if spool is not None:
        spool.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data = message(int(args.size_mb * 1024 * 1024))
    entity = parse_message(io.BytesIO(data))
    workdir = Path(tempfile.mkdtemp(prefix="convert-bench-"))
    path = workdir / "message.eml"
    path.write_bytes(data)
    del data
    sizes = {
        p: entity.children[p[0] - 1].end - entity.children[p[0] - 1].header_start
        for p in ((1,), (2,))
    }
    smime = (identity("rsa2048").key,)
    pgp = (session_keys().x25519,)
    cases = {
        "pkcs7-mime aes256-cbc": ((2,), ConversionRequest("application/pkcs7-mime"), smime),
        "pkcs7-mime aes256-gcm": (
            (2,),
            ConversionRequest("application/pkcs7-mime", (("smime-cipher", "aes256-gcm"),)),
            smime,
        ),
        "multipart/encrypted": ((2,), ConversionRequest("multipart/encrypted"), pgp),
        "text/plain to utf-8": ((1,), ConversionRequest("text/plain", (("charset", "utf-8"),)), ()),
    }
    before = _kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) counts from here
    print(f"load {os.getloadavg()[0]:.2f}; attachment part {sizes[(2,)] / 1e6:.1f} MB stored")
    for name, (part, request, keys) in cases.items():
        mb = sizes[part] / 1e6
        timed(path, part, request, keys)  # warm: first calls load codecs and keys
        # A part under 1 MB converts in well under a millisecond: many runs, not 3.
        count = args.runs if mb >= 1 else max(args.runs, SMALL_RUNS)
        runs = [timed(path, part, request, keys) for _ in range(count)]
        print(
            f"{name:24} best {mb / min(runs):7.1f} MB/s  median {mb / statistics.median(runs):7.1f}"
            f" MB/s  ({mb:.2f} MB, {count} runs, median {statistics.median(runs) * 1e3:.3f} ms)"
        )
    grown = (_kib("VmHWM") - before) / 1024
    print(f"peak RSS grew {grown:.0f} MB; load {os.getloadavg()[0]:.2f}")
    shutil.rmtree(workdir)
    cleanup()


if __name__ == "__main__":
    main()
