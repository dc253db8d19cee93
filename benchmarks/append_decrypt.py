"""Encrypted APPEND's decryption (issue 16) alone, against ``openssl cms -decrypt``.

    python benchmarks/append_decrypt.py [--size-mb 50] [--runs 3] [--quick]

Makes server keys in a temporary ``server-keys/`` (EC P-256 and an RSA-3072
encryption key), a mail-like entity of ``--size-mb`` MB, and encrypts it with
``openssl cms -encrypt -stream`` to each key (AES-256-CBC and AES-256-GCM).
Then, run by run, alternating:

* ours: ``transcoder.inbound.decrypt_append_file`` from the message file (the
  server's APPEND path without IMAP) into its temporary result file;
* openssl: ``openssl cms -decrypt`` of the same message with the same key.

It prints the MB/s of each (best and median), the ratio ours / openssl, the
growth of this process's peak RSS over the runs (the message is never held
in memory: it should stay a few MB whatever ``--size-mb``), and the load
average at the start and the end (the machine is shared).  Not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.inbound.streamed import write_streamed_cms_message
from transcoder.inbound import decrypt_append_file
from transcoder.keys.model import KeyFormat, KeyUsage
from transcoder.keys.server_keys_files import ServerKeyFiles

OUTER = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: large draft\r\n"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 MB, 1 run")
    args = parser.parse_args()
    size = (2 if args.quick else args.size_mb) * 10**6
    runs = 1 if args.quick else args.runs
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = ServerKeyFiles(work / "server-keys", gpg_binary="no-such-gpg")
        now = datetime.now(UTC) - timedelta(minutes=1)
        files.ensure(now, algorithm="rsa")
        files.rotate(KeyFormat.SMIME, now, algorithm="ec")
        line = b"a line of a large draft, 64 octets long, for the benchmark....\r\n"
        entity = work / "entity"
        with open(entity, "wb") as out:  # written in blocks: the RSS figure is ours alone
            out.write(b"Content-Type: text/plain\r\n\r\n")
            for _ in range(size // len(line) // 1024):
                out.write(line * 1024)
        rss_before = rss_mb()
        for key in files.decryption_keys(KeyFormat.SMIME):
            if KeyUsage.ENCRYPT not in key.usages:
                continue
            (work / "cert.pem").write_bytes(key.public)
            (work / "key.pem").write_bytes(files.private(key))
            for cipher in ("aes-256-cbc", "aes-256-gcm"):
                message = work / "message"
                write_streamed_cms_message(message, OUTER, entity, work / "cert.pem", cipher)
                ours, theirs = [], []
                for _ in range(runs):
                    start = time.perf_counter()
                    with open(message, "rb") as source:
                        found = decrypt_append_file(source, files)
                    ours.append(time.perf_counter() - start)
                    assert found is not None
                    found.file.close()
                    start = time.perf_counter()
                    subprocess.run(
                        [
                            "openssl",
                            "cms",
                            "-decrypt",
                            "-binary",
                            "-in",
                            str(message),
                            "-inkey",
                            str(work / "key.pem"),
                            "-out",
                            str(work / "plain"),
                        ],
                        check=True,
                    )
                    theirs.append(time.perf_counter() - start)
                mb = size / 10**6
                print(
                    f"{key.algorithm:<13} {cipher}: ours {mb / min(ours):6.1f} MB/s"
                    f" (median {mb / statistics.median(ours):6.1f}),"
                    f" openssl {mb / min(theirs):6.1f} MB/s"
                    f" (median {mb / statistics.median(theirs):6.1f}),"
                    f" ours/openssl {min(theirs) / min(ours):.2f}"
                    f" (medians {statistics.median(theirs) / statistics.median(ours):.2f})"
                )
        print(
            f"peak RSS growth over all runs: {rss_mb() - rss_before:.1f} MB"
            f" (message: {size / 10**6:.0f} MB)"
        )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
