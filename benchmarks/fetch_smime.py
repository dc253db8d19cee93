"""FETCH served as S/MIME by the real server, against ``openssl cms -encrypt -stream`` (issue 4).

    python benchmarks/fetch_smime.py            # the issue's sizes: 100 MB, 1,000 x 4 KB
    python benchmarks/fetch_smime.py --quick    # small sizes, a few seconds (a smoke run)

Starts ``twistd -n transcoder`` on a free loopback port with a fresh data
directory, two accounts -- one with an RSA-3072 certificate and policy
``MODE ALWAYS FORMAT SMIME`` (AES-256-CBC, PKCS#1 v1.5: the server's
defaults), one with policy OFF -- and measures, in one run, with imaplib:

1. ``FETCH 1 BODY[]`` of a 100 MB message: plaintext MB/s cold (the view
   is transcoded, written to the view cache and sent) and cached (sent from
   the cache), against ``openssl cms -encrypt -stream -aes256 -outform
   SMIME`` on the same file, writing to a file and to /dev/null (openssl's
   time includes its start-up, a few ms).  "Cold" means the account's views
   were dropped just before (an ``XKEY POLICY`` command does that); the
   stored file is in the page cache for both.  Targets: cold / openssl >= 1.0,
   cached >= 3x cold.
2. The server's peak RSS growth while serving it (``/proc``): <= 64 MB.
3. ``FETCH 1:1000 BODY.PEEK[]`` of 1,000 messages of 4 KB, transcoded vs
   policy OFF, cold and cached: time ratios <= 2.0 and <= 1.2.
4. ``FETCH 1:1000 (FLAGS RFC822.SIZE BODYSTRUCTURE)`` cold, transcoded vs
   OFF: time ratio <= 2.0.

Each timing is the best of ``--runs`` (the median is printed too).  The
fetched view is decrypted once with ``openssl cms -decrypt`` and checked
against the stored message.  A script to run by hand, not a timed test.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from cms_encode import make_message, run_openssl
from common import (
    ENCRYPTED,
    MB,
    OFF,
    Server,
    body_of,
    check_ok,
    drop_messages,
    fetch_to_file,
    load_note,
    login,
    machine,
    make_smime_certificate,
    prepare_accounts,
    provision,
    same_tail,
    small_message,
    work_directory,
)
from measure import (
    LargeFetch,
    SmallFetch,
    measure_large_fetch,
    measure_small_fetch,
    print_rates,
    print_speeds,
    print_table,
    ratio,
)

TO_FILE, TO_NULL = "openssl -> file", "openssl -> /dev/null"


def openssl_decrypts(view: Path, source: Path, cert: Path, key: Path, scratch: Path) -> bool:
    """Whether ``openssl cms -decrypt`` opens ``view`` and it holds ``source``'s body."""
    plain = scratch / "decrypted.eml"
    done = subprocess.run(
        [
            *("openssl", "cms", "-decrypt", "-binary", "-inform", "SMIME", "-in", str(view)),
            *("-recip", str(cert), "-inkey", str(key), "-out", str(plain)),
        ],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        print(done.stderr.decode(errors="replace"), file=sys.stderr)
        return False
    offset, _ = body_of(source)
    same = same_tail(plain, source, offset)
    plain.unlink()
    return same


def large_part(
    server: Server, big: Path, cert: Path, key: Path, work: Path, runs: int
) -> LargeFetch:
    """Items 1 and 2: the large message over IMAP, and openssl on the same file."""
    size = big.stat().st_size
    imap = login(server, ENCRYPTED)
    check_ok(imap.select("Big"), "SELECT Big")
    fetched = measure_large_fetch(
        server,
        imap,
        runs,
        {
            TO_FILE: lambda: run_openssl(big, work / "openssl.p7m", cert, "aes256-cbc")[0],
            TO_NULL: lambda: run_openssl(big, Path("/dev/null"), cert, "aes256-cbc")[0],
        },
    )
    (work / "openssl.p7m").unlink()
    view = work / "view.eml"
    fetch_to_file(imap, view)
    opened = openssl_decrypts(view, big, cert, key, work)
    view.unlink()
    imap.logout()
    print(f"1. FETCH 1 BODY[] of a {size / MB:.0f} MB message, view {fetched.octets / MB:.1f} MB")
    print_speeds(
        size,
        [
            ("cold (transcode+send)", fetched.cold),
            ("cached re-fetch", fetched.cached),
            ("openssl cms -> file", fetched.references[TO_FILE]),
            ("openssl cms -> /dev/null", fetched.references[TO_NULL]),
        ],
    )
    print("   openssl cms -decrypt opens the fetched view:", "yes" if opened else "NO")
    print(
        f"2. server peak RSS growth {fetched.rss_growth / MB:.1f} MB"
        f" (child processes' peak RSS {fetched.children_peak / MB:.1f} MB)"
    )
    return fetched


def small_part(server: Server, count: int, runs: int) -> tuple[SmallFetch, SmallFetch]:
    """Items 3 and 4: ``count`` small messages, transcoded vs policy OFF."""
    transcoded, plain = login(server, ENCRYPTED), login(server, OFF)
    for imap in (transcoded, plain):
        check_ok(imap.select("INBOX"), "SELECT INBOX")
    bodies = measure_small_fetch(server, transcoded, plain, count, "BODY.PEEK[]", runs)
    meta_items = "(FLAGS RFC822.SIZE BODYSTRUCTURE)"
    meta = measure_small_fetch(server, transcoded, plain, count, meta_items, runs, cached=False)
    for imap in (transcoded, plain):
        imap.logout()
    print(f"3. FETCH 1:{count} BODY.PEEK[] ({count} x 4 KB)")
    print_rates(
        count,
        [
            ("policy OFF", bodies.off),
            ("S/MIME cold", bodies.cold),
            ("S/MIME cached", bodies.cached),
        ],
    )
    print(f"4. FETCH 1:{count} {meta_items}")
    print_rates(count, [("policy OFF", meta.off), ("S/MIME cold", meta.cold)])
    return bodies, meta


def main() -> None:
    """Parse the options, set the server up, run every part, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 MB and 100 messages, 1 run")
    parser.add_argument("--size-mb", type=int, help="size of the large message (default 100)")
    parser.add_argument("--messages", type=int, help="number of 4 KB messages (default 1000)")
    parser.add_argument("--runs", type=int, help="runs of each measurement (default 5)")
    parser.add_argument("--rsa-bits", type=int, default=3072)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    size_mb = args.size_mb or (5 if args.quick else 100)
    count = args.messages or (100 if args.quick else 1000)
    runs = args.runs or (1 if args.quick else 5)
    if shutil.which("openssl") is None:
        sys.exit("openssl is not installed")
    print(machine())
    version = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout
    print(version.strip(), "--", load_note())
    with work_directory("bench-fetch-smime-", args.keep) as work:
        data = work / "data"
        prepare_accounts(data)
        cert, key = make_smime_certificate(work, ENCRYPTED, args.rsa_bits)
        big = work / "big.eml"
        make_message(big, size_mb * MB)
        with Server(data) as server:
            imap = login(server, ENCRYPTED)
            provision(imap, cert.read_bytes(), "smime")
            check_ok(imap.create("Big"), "CREATE Big")
            imap.logout()
            drop_messages(data, ENCRYPTED, "Big", [big])
            for address in (ENCRYPTED, OFF):
                drop_messages(data, address, "INBOX", (small_message(i) for i in range(count)))
            print(f"RSA-{args.rsa_bits}, AES-256-CBC, PKCS#1 v1.5; best of {runs} run(s)")
            large = large_part(server, big, cert, key, work, runs)
            bodies, meta = small_part(server, count, runs)
    print(load_note())
    summarize(size_mb, count, large, bodies, meta)


def summarize(
    size_mb: int, count: int, large: LargeFetch, bodies: SmallFetch, meta: SmallFetch
) -> None:
    """The table: each item, its figure, the target, met or not."""
    assert bodies.cached is not None
    cold, cold_text = ratio(large.references[TO_FILE], large.cold)
    _, cold_null_text = ratio(large.references[TO_NULL], large.cold)
    cached, cached_text = ratio(large.cold, large.cached)
    growth = large.rss_growth / MB
    body_cold, body_cold_text = ratio(bodies.cold, bodies.off)
    body_cached, body_cached_text = ratio(bodies.cached, bodies.off)
    meta_cold, meta_cold_text = ratio(meta.cold, meta.off)
    print_table(
        [
            (f"1. {size_mb} MB cold, MB/s ours / openssl -> file", cold_text, ">= 1.0", cold >= 1),
            (f"   {size_mb} MB cold, MB/s ours / openssl -> /dev/null", cold_null_text, "", None),
            (f"1. {size_mb} MB cached MB/s / cold MB/s", cached_text, ">= 3.0", cached >= 3),
            ("2. server peak RSS growth, MB", f"{growth:.1f}", "<= 64", growth <= 64),
            (
                f"3. {count} x 4 KB BODY.PEEK[] cold, time / OFF",
                body_cold_text,
                "<= 2.0",
                body_cold <= 2,
            ),
            (
                f"3. {count} x 4 KB BODY.PEEK[] cached, time / OFF",
                body_cached_text,
                "<= 1.2",
                body_cached <= 1.2,
            ),
            (
                f"4. {count} x (FLAGS RFC822.SIZE BODYSTRUCTURE) cold / OFF",
                meta_cold_text,
                "<= 2.0",
                meta_cold <= 2,
            ),
        ]
    )


if __name__ == "__main__":
    main()
