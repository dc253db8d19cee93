"""FETCH served as PGP/MIME by the real server, against the gpg command line (issues 5, 12).

    python benchmarks/fetch_openpgp.py            # the issue's sizes: 100 MB, 1,000 x 4 KB
    python benchmarks/fetch_openpgp.py --quick    # small sizes, a few seconds (a smoke run)
    python benchmarks/fetch_openpgp.py --encoder native   # one encoder only (default: both)

Runs everything below once per encoder, in one run on the same data: the
native encoder (``--openpgp-encoder native``, the default since issue 12)
and gpg, one process per message (``--openpgp-encoder gpg``).  The summary
table checks issue 12's targets on the native figures: 1,000 x 4 KB cold
>= 3,000 msg/s and <= 6 x policy OFF's time; 100 MB cold >= 1.0 x ``gpg
--encrypt`` to /dev/null; RSS growth <= 64 MB.

Starts ``twistd -n transcoder`` on a free loopback port with a fresh data
directory, two accounts -- one with a Curve25519 OpenPGP key (``gpg
--quick-gen-key ... future-default``: ed25519 primary, cv25519 encryption
subkey) and policy ``MODE ALWAYS FORMAT OPENPGP``, one with policy OFF --
and measures, in one run, with imaplib:

1. ``FETCH 1 BODY[]`` of a 100 MB message: plaintext MB/s cold (native:
   streamed as it is encrypted, its size and structure predicted; gpg: its
   armored output is written to the view cache, then sent) and cached,
   against ``gpg --encrypt --armor --compress-algo none --trust-model always
   -r KEY`` from the same file into a file (and into /dev/null), in a home
   holding only the public key.  Target: cold / gpg >= 0.8.
2. The server's peak RSS growth while serving it: <= 64 MB (gpg's own RSS,
   a child process, is printed apart).
3. 1,000 messages of 4 KB: ``FETCH 1:1000 BODY.PEEK[]`` cold, in messages
   per second, next to policy OFF, the cached re-fetch and the bare cost of
   one gpg process per message (sequential, on the command line).

Each timing is the best of ``--runs`` (the median is printed too).  The
fetched view's armored part is decrypted once with ``gpg --decrypt`` and
checked against the stored message.  A script to run by hand, not a timed
test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cms_encode import make_message
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
    prepare_accounts,
    provision,
    same_tail,
    small_message,
    work_directory,
)
from gpg_encrypt import gpg, gpg_command_line
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

BEGIN = b"-----BEGIN PGP MESSAGE-----"
END = b"-----END PGP MESSAGE-----"
TO_FILE, TO_NULL = "gpg -> file", "gpg -> /dev/null"
#: Messages the bare per-process cost of gpg is measured on.
BARE_SAMPLE = 50


def make_key(work: Path) -> tuple[str, bytes, Path, Path]:
    """A Curve25519 key for :data:`ENCRYPTED`.

    Returns (fingerprint, public key, home with the secret key, home with the public key only).
    """
    secret_home, public_home = work / "gpg-secret", work / "gpg-public"
    for home in (secret_home, public_home):
        home.mkdir(mode=0o700)
    gpg(secret_home, "--quick-gen-key", f"<{ENCRYPTED}>", "future-default", "default", "never")
    listing = gpg(secret_home, "--with-colons", "--list-keys").decode()
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
    )
    public = gpg(secret_home, "--export", fingerprint)
    gpg(public_home, "--import", stdin=public)
    return fingerprint, public, secret_home, public_home


def run_gpg(src: Path, dst: Path, home: Path, fingerprint: str) -> float:
    """Seconds of the issue's plain ``gpg --encrypt --armor`` from ``src`` into ``dst``."""
    start = time.perf_counter()
    with src.open("rb") as source, dst.open("wb") as out:
        subprocess.run(gpg_command_line(home, fingerprint), stdin=source, stdout=out, check=True)
    return time.perf_counter() - start


def gpg_decrypts(view: Path, source: Path, secret_home: Path, scratch: Path) -> bool:
    """Whether ``gpg --decrypt`` opens the armored part of ``view`` into ``source``'s body."""
    armored, plain = scratch / "part.asc", scratch / "decrypted.eml"
    content = view.read_bytes()
    start, end = content.find(BEGIN), content.find(END)
    if start < 0 or end < 0:
        return False
    armored.write_bytes(content[start : end + len(END)] + b"\r\n")
    del content
    try:
        gpg(secret_home, "--output", str(plain), "--decrypt", str(armored))
    except subprocess.CalledProcessError as error:
        print(error.stderr.decode(errors="replace"), file=sys.stderr)
        return False
    offset, _ = body_of(source)
    same = same_tail(plain, source, offset)
    armored.unlink()
    plain.unlink()
    return same


def large_part(
    server: Server, big: Path, key: tuple[str, bytes, Path, Path], work: Path, runs: int
) -> LargeFetch:
    """Items 1 and 2: the large message over IMAP, and gpg's command line on the same file."""
    fingerprint, _, secret_home, public_home = key
    size = big.stat().st_size
    imap = login(server, ENCRYPTED)
    check_ok(imap.select("Big"), "SELECT Big")
    fetched = measure_large_fetch(
        server,
        imap,
        runs,
        {
            TO_FILE: lambda: run_gpg(big, work / "gpg.asc", public_home, fingerprint),
            TO_NULL: lambda: run_gpg(big, Path("/dev/null"), public_home, fingerprint),
        },
    )
    (work / "gpg.asc").unlink()
    view = work / "view.eml"
    fetch_to_file(imap, view)
    opened = gpg_decrypts(view, big, secret_home, work)
    view.unlink()
    imap.logout()
    print(f"1. FETCH 1 BODY[] of a {size / MB:.0f} MB message, view {fetched.octets / MB:.1f} MB")
    print_speeds(
        size,
        [
            ("cold (encrypt+send)", fetched.cold),
            ("cached re-fetch", fetched.cached),
            ("gpg --encrypt -> file", fetched.references[TO_FILE]),
            ("gpg --encrypt -> /dev/null", fetched.references[TO_NULL]),
        ],
    )
    print("   gpg --decrypt opens the fetched view:", "yes" if opened else "NO")
    if not opened:
        raise SystemExit("the fetched view does not decrypt to the message")
    print(
        f"2. server peak RSS growth {fetched.rss_growth / MB:.1f} MB"
        f" (gpg child process peak RSS {fetched.children_peak / MB:.1f} MB)"
    )
    return fetched


def bare_gpg_cost(key: tuple[str, bytes, Path, Path]) -> float:
    """Seconds per message of one plain gpg process per 4 KB message, sequentially."""
    fingerprint, _, _, public_home = key
    command = gpg_command_line(public_home, fingerprint)
    message = small_message(0)
    start = time.perf_counter()
    for _ in range(BARE_SAMPLE):
        subprocess.run(command, input=message, capture_output=True, check=True)
    return (time.perf_counter() - start) / BARE_SAMPLE


def small_part(server: Server, count: int, runs: int) -> SmallFetch:
    """Item 3: ``count`` small messages, transcoded vs policy OFF."""
    transcoded, plain = login(server, ENCRYPTED), login(server, OFF)
    for imap in (transcoded, plain):
        check_ok(imap.select("INBOX"), "SELECT INBOX")
    bodies = measure_small_fetch(server, transcoded, plain, count, "BODY.PEEK[]", runs)
    for imap in (transcoded, plain):
        imap.logout()
    print(f"3. FETCH 1:{count} BODY.PEEK[] ({count} x 4 KB)")
    print_rates(
        count,
        [
            ("policy OFF", bodies.off),
            ("OpenPGP cold", bodies.cold),
            ("OpenPGP cached", bodies.cached),
        ],
    )
    return bodies


#: The server's encoders, by the value of ``--openpgp-encoder``.
ENCODERS = ("native", "gpg")


def main() -> None:
    """Parse the options, set the server up, run every part per encoder, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 MB and 100 messages, 1 run")
    parser.add_argument("--size-mb", type=int, help="size of the large message (default 100)")
    parser.add_argument("--messages", type=int, help="number of 4 KB messages (default 1000)")
    parser.add_argument("--runs", type=int, help="runs of each measurement (default 5)")
    parser.add_argument("--encoder", choices=[*ENCODERS, "both"], default="both")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    size_mb = args.size_mb or (5 if args.quick else 100)
    count = args.messages or (100 if args.quick else 1000)
    runs = args.runs or (1 if args.quick else 5)
    encoders = ENCODERS if args.encoder == "both" else (args.encoder,)
    if shutil.which("gpg") is None:
        sys.exit("gpg is not installed")
    print(machine())
    version = subprocess.run(["gpg", "--version"], capture_output=True, text=True).stdout
    print(version.splitlines()[0], "--", load_note(), "-- os.getloadavg()", os.getloadavg())
    results: dict[str, tuple[LargeFetch, SmallFetch]] = {}
    with work_directory("bench-fetch-pgp-", args.keep) as work:
        data = work / "data"
        prepare_accounts(data)
        key = make_key(work)
        big = work / "big.eml"
        make_message(big, size_mb * MB)
        try:
            for index, encoder in enumerate(encoders):
                with Server(data, extra_args=("--openpgp-encoder", encoder)) as server:
                    if not index:
                        setup(server, data, key[1], big, count)
                    print(
                        f"== --openpgp-encoder {encoder}: Curve25519 (cv25519 subkey), AES-256,"
                        f" uncompressed; best of {runs} run(s); os.getloadavg() {os.getloadavg()}"
                    )
                    large = large_part(server, big, key, work, runs)
                    bodies = small_part(server, count, runs)
                    results[encoder] = (large, bodies)
            per_process = bare_gpg_cost(key)
        finally:
            for home in (key[2], key[3]):
                subprocess.run(
                    ["gpgconf", "--homedir", str(home), "--kill", "all"],
                    capture_output=True,
                    check=False,
                )
    print(load_note(), "-- os.getloadavg()", os.getloadavg())
    print(
        f"   bare gpg CLI, one process per 4 KB message: {per_process * 1000:.1f} ms each"
        f" ({1 / per_process:.0f} msg/s sequentially)"
    )
    summarize(size_mb, count, results)


def setup(server: Server, data: Path, public_key: bytes, big: Path, count: int) -> None:
    """Provision the key and the policy, create Big, drop the messages (first server only)."""
    imap = login(server, ENCRYPTED)
    provision(imap, public_key, "openpgp")
    check_ok(imap.create("Big"), "CREATE Big")
    imap.logout()
    drop_messages(data, ENCRYPTED, "Big", [big])
    for address in (ENCRYPTED, OFF):
        drop_messages(data, address, "INBOX", (small_message(i) for i in range(count)))


def summarize(size_mb: int, count: int, results: dict[str, tuple[LargeFetch, SmallFetch]]) -> None:
    """The table: each item per encoder, its figure, the target, met or not."""
    rows: list[tuple[str, str, str, bool | None]] = []
    for encoder, (large, bodies) in results.items():
        native = encoder == "native"
        _, cold_text = ratio(large.references[TO_FILE], large.cold)
        cold_null, cold_null_text = ratio(large.references[TO_NULL], large.cold)
        _, cached_text = ratio(large.cold, large.cached)
        growth = large.rss_growth / MB
        body_ratio, body_cold_text = ratio(bodies.cold, bodies.off)
        per_second = count / bodies.cold.best
        rate = f"{per_second:.0f} (med {count / bodies.cold.median:.0f})"
        rows += [
            (f"[{encoder}] 1. {size_mb} MB cold, MB/s ours / gpg -> file", cold_text, "", None),
            (
                f"[{encoder}]    {size_mb} MB cold, MB/s ours / gpg -> /dev/null",
                cold_null_text,
                ">= 1.0" if native else "",
                cold_null >= 1.0 if native else None,
            ),
            (f"[{encoder}]    {size_mb} MB cached MB/s / cold MB/s", cached_text, "", None),
            (f"[{encoder}] 2. server peak RSS growth, MB", f"{growth:.1f}", "<= 64", growth <= 64),
            (
                f"[{encoder}] 3. {count} x 4 KB BODY.PEEK[] cold, msg/s",
                rate,
                ">= 3000" if native else "",
                per_second >= 3000 if native else None,
            ),
            (
                f"[{encoder}]    {count} x 4 KB BODY.PEEK[] cold, time / OFF",
                body_cold_text,
                "<= 6" if native else "",
                body_ratio <= 6 if native else None,
            ),
        ]
    if "native" in results and "gpg" in results:
        speedup = results["gpg"][1].cold.best / results["native"][1].cold.best
        rows.append(
            (f"   {count} x 4 KB cold: native msg/s / gpg msg/s", f"{speedup:.1f}", "", None)
        )
        big_speedup = results["gpg"][0].cold.best / results["native"][0].cold.best
        rows.append(
            (f"   {size_mb} MB cold: native MB/s / gpg MB/s", f"{big_speedup:.2f}", "", None)
        )
    print_table(rows)


if __name__ == "__main__":
    main()
