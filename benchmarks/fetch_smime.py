"""FETCH served as S/MIME by the real server, cache on and off, against openssl (issues 4, 9).

    python benchmarks/fetch_smime.py            # the issue's sizes: 100 MB, 1,000 x 4 KB
    python benchmarks/fetch_smime.py --quick    # small sizes, a few seconds (a smoke run)
    python benchmarks/fetch_smime.py --profile out.txt   # also py-spy the 1,000 x 4 KB cold path
    git archive <commit> | tar -x -C /tmp/base
    python benchmarks/fetch_smime.py --baseline /tmp/base  # before/after in the same run

Starts two ``twistd -n transcoder`` servers on free loopback ports with
fresh data directories: ``cache on`` (the default cache) and ``cache off``
(``--view-cache-size 0``, sharing the first one's ``--view-secret``).  Each
has two accounts -- one with an RSA-3072 certificate and policy ``MODE
ALWAYS FORMAT SMIME`` (AES-256-CBC, PKCS#1 v1.5: the server's defaults), one
with policy OFF -- and is measured, in one run, with imaplib:

1. ``FETCH 1 BODY[]`` of a 100 MB message cold: plaintext MB/s against
   ``openssl cms -encrypt -stream -aes256 -outform SMIME`` on the same file
   writing to /dev/null (and to a file); cache on, also the re-fetch.  The
   server's peak RSS growth.  Target: cold / openssl-to-/dev/null >= 1.0.
2. ``FETCH 1:1000 BODY.PEEK[]`` of 1,000 messages of 4 KB, cold, time /
   policy OFF (target <= 4; cache on, also the re-fetch).
3. ``FETCH 1:1000 (FLAGS RFC822.SIZE BODYSTRUCTURE)`` cold / OFF (<= 1.5).
4. Disk used by ``DIR/views`` after the cold 1,000-message fetch (target:
   no per-message file for small views).

With ``--baseline DIR`` (another checkout of the project, e.g. the commit
before a change) a third server runs that checkout's code (cache on), and
items 2-3 are measured on it in the same rounds: before and after figures
from one run, under the same load.

"Cold" is the first FETCH of messages nobody has fetched before: each run
delivers fresh copies into a new mailbox (policy OFF measured the same
way), so no cache of any kind helps; the stored files are in the page cache
for both sides.  Each timing is the best of ``--runs`` (the median is
printed too); ``os.getloadavg()`` is printed with the figures.  The fetched
views are decrypted once with ``openssl cms -decrypt`` and checked against
the stored message, and the two servers' views compared.  A script to run
by hand, not a timed test.
"""

from __future__ import annotations

import argparse
import imaplib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cms_encode import make_message, run_openssl
from common import (
    ENCRYPTED,
    MB,
    OFF,
    START_TIMEOUT,
    Server,
    body_of,
    check_ok,
    drop_messages,
    load_note,
    login,
    machine,
    make_smime_certificate,
    prepare_accounts,
    provision,
    same_tail,
    small_message,
    wait_for_greeting,
    work_directory,
)
from measure import (
    RssMonitor,
    Sample,
    Timing,
    print_rates,
    print_speeds,
    print_table,
    ratio,
    timed_fetch,
)

TO_FILE, TO_NULL = "openssl -> file", "openssl -> /dev/null"
#: The name of the ``--baseline`` server's figures (cache on, the other checkout's code).
BASELINE = "on, baseline"
META = "(FLAGS RFC822.SIZE BODYSTRUCTURE)"


@dataclass
class Figures:
    """What one server measured (timings over the runs)."""

    large_cold: list[Sample]
    large_cached: list[Sample]
    rss_growth: int
    bodies_off: list[Sample]
    bodies_cold: list[Sample]
    bodies_cached: list[Sample]
    meta_off: list[Sample]
    meta_cold: list[Sample]
    views_disk: tuple[int, int] = (0, 0)  # files, octets added by the cold small FETCH


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


def views_on_disk(data: Path) -> tuple[int, int]:
    """(files, octets) under ``DATA/views``."""
    files = [p for p in (data / "views").rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


@contextmanager
def fresh_mailbox(
    server: Server, address: str, name: str, messages: list[bytes | Path]
) -> Iterator[imaplib.IMAP4]:
    """A new mailbox of ``address`` holding copies of ``messages``, selected; deleted after."""
    imap = login(server, address)
    check_ok(imap.create(name), f"CREATE {name}")
    drop_messages(server.data, address, name, messages)
    check_ok(imap.select(name), f"SELECT {name}")
    try:
        yield imap
    finally:
        imap.close()
        check_ok(imap.delete(name), f"DELETE {name}")
        imap.logout()


class CheckoutServer(Server):
    """A :class:`Server` running the code of another checkout (``--baseline``)."""

    checkout: Path = Path()

    def start(self) -> None:
        """Start ``twistd`` in the checkout, so its ``transcoder`` package is imported."""
        command = [
            *(sys.executable, "-c", "from twisted.scripts.twistd import run; run()"),
            *("-n", "--pidfile=", f"--logfile={self.log}", "transcoder"),
            *("--data", str(self.data), "--imaps", "none", "--log-level", "warn"),
            *("--imap", f"tcp:{self.port}:interface=127.0.0.1", *self.extra_args),
        ]
        self.process = subprocess.Popen(command, cwd=self.checkout, stdout=subprocess.DEVNULL)
        if not wait_for_greeting(self.process, self.port, START_TIMEOUT):
            raise RuntimeError(f"baseline server did not start (see {self.log})")


def setup_server(
    data: Path, cert: Path, extra: tuple[str, ...], checkout: Path | None = None
) -> Server:
    """A started server on ``data``: ENCRYPTED provisioned with ``cert`` (MODE ALWAYS)."""
    prepare_accounts(data)
    server = Server(data, extra)
    if checkout is not None:
        server = CheckoutServer(data, extra)
        server.checkout = checkout
    server.start()
    imap = login(server, ENCRYPTED)
    provision(imap, cert.read_bytes(), "smime")
    imap.logout()
    return server


class Bench:
    """The measurements of one run, on both servers, in the same rounds."""

    def __init__(self, big: Path, count: int, profile: Path | None) -> None:
        self.big = big
        self.smalls: list[bytes | Path] = [small_message(i) for i in range(count)]
        self.count = count
        self.profile = profile
        self.round = 0

    def large(self, server: Server, figures: Figures, cached: bool) -> bytes:
        """Item 1: the 100 MB message cold (and re-fetched with the cache on); the view's tail."""
        self.round += 1
        with fresh_mailbox(server, ENCRYPTED, f"Big{self.round}", [self.big]) as imap:
            with RssMonitor(server.pid) as rss:
                figures.large_cold.append(timed_fetch(server, imap, "1", "BODY.PEEK[]"))
            figures.rss_growth = max(figures.rss_growth, rss.growth)
            if cached:
                figures.large_cached.append(timed_fetch(server, imap, "1", "BODY.PEEK[]"))
            data = check_ok(imap.fetch("1", "BODY.PEEK[]<0.4096>"), "FETCH head")
            return next(item[1] for item in data if isinstance(item, tuple))

    def small(self, server: Server, figures: Figures, cached: bool, profile: bool) -> None:
        """Items 2-4: 1,000 x 4 KB cold BODY.PEEK[] and cold metadata, each vs policy OFF."""
        self.round += 1
        n = f"1:{self.count}"
        with fresh_mailbox(server, OFF, f"Small{self.round}", self.smalls) as imap:
            figures.bodies_off.append(timed_fetch(server, imap, n, "BODY.PEEK[]"))
        with fresh_mailbox(server, ENCRYPTED, f"Small{self.round}", self.smalls) as imap:
            before = views_on_disk(server.data)
            with self.profiling(server, profile):
                figures.bodies_cold.append(timed_fetch(server, imap, n, "BODY.PEEK[]"))
            after = views_on_disk(server.data)
            figures.views_disk = (after[0] - before[0], after[1] - before[1])
            if cached:
                figures.bodies_cached.append(timed_fetch(server, imap, n, "BODY.PEEK[]"))
        with fresh_mailbox(server, OFF, f"Meta{self.round}", self.smalls) as imap:
            figures.meta_off.append(timed_fetch(server, imap, n, META))
        with fresh_mailbox(server, ENCRYPTED, f"Meta{self.round}", self.smalls) as imap:
            figures.meta_cold.append(timed_fetch(server, imap, n, META))

    @contextmanager
    def profiling(self, server: Server, wanted: bool) -> Iterator[None]:
        """py-spy the server while the block runs (``--profile``), collapsed stacks to a file."""
        if not wanted or self.profile is None:
            yield
            return
        spy = subprocess.Popen(
            [
                *(py_spy(), "record", "--pid", str(server.pid), "--format", "raw"),
                *("--rate", "500", "--threads", "-o", str(self.profile)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # py-spy attaches
        try:
            yield
        finally:
            time.sleep(0.2)
            spy.send_signal(2)
            spy.wait(timeout=30)


def py_spy() -> str:
    """The py-spy next to this Python (``pip install py-spy`` into the venv), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else "py-spy"


#: Leaf frames of threads waiting for work (py-spy counts some of them as active).
IDLE = ("Condition.wait", "EPollReactor.doPoll (twisted/internet/epollreactor.py:227)", "_worker (")


def summarize_profile(path: Path, top: int = 20) -> None:
    """Where the busy samples went, from py-spy's collapsed stacks: per thread, then
    the project's functions by inclusive share (waiting threads left out)."""
    threads: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if len(frames) < 2 or any(idle in frames[-1] for idle in IDLE):
            continue
        total += int(count)
        thread = frames[0].rpartition(":")[2].strip().rstrip("0123456789-_")
        threads[thread] = threads.get(thread, 0) + int(count)
        for frame in set(frames[1:]):
            if "transcoder/" in frame:
                inclusive[frame] = inclusive.get(frame, 0) + int(count)
    print(f"\nprofile of the first cold 1,000 x 4 KB FETCH, cache on ({total} busy samples):")
    for thread, count in sorted(threads.items(), key=lambda kv: -kv[1]):
        print(f"  {100 * count / max(total, 1):5.1f}%  thread {thread}")
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * count / max(total, 1):5.1f}%  {frame}")


def main() -> None:
    """Parse the options, set the servers up, run every part, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 MB and 100 messages, 1 run")
    parser.add_argument("--size-mb", type=int, help="size of the large message (default 100)")
    parser.add_argument("--messages", type=int, help="number of 4 KB messages (default 1000)")
    parser.add_argument("--runs", type=int, help="runs of each measurement (default 3)")
    parser.add_argument("--rsa-bits", type=int, default=3072)
    parser.add_argument("--profile", type=Path, help="py-spy the cold small FETCH into this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout: its server measured alongside (2-3)"
    )
    args = parser.parse_args()
    size_mb = args.size_mb or (5 if args.quick else 100)
    count = args.messages or (100 if args.quick else 1000)
    runs = args.runs or (1 if args.quick else 3)
    if shutil.which("openssl") is None:
        sys.exit("openssl is not installed")
    print(machine())
    version = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout
    print(version.strip(), "--", load_note())
    with work_directory("bench-fetch-smime-", args.keep) as work:
        cert, key = make_smime_certificate(work, ENCRYPTED, args.rsa_bits)
        big = work / "big.eml"
        make_message(big, size_mb * MB)
        on = setup_server(work / "on", cert, ())
        secret = ("--view-secret", str(work / "on" / "view-secret"))
        off = setup_server(work / "off", cert, (*secret, "--view-cache-size", "0"))
        base = None
        if args.baseline is not None:
            base = setup_server(work / "base", cert, secret, args.baseline.resolve())
        try:
            figures, openssl, heads = measure(
                on, off, big, cert, count, runs, args.profile, work, base
            )
            opened = check_view(on, big, cert, key, work)
        finally:
            on.stop()
            off.stop()
            if base is not None:
                base.stop()
    print(load_note())
    report(size_mb, count, runs, figures, openssl, heads, opened)
    if args.profile is not None and args.profile.exists():
        summarize_profile(args.profile)


def measure(
    on: Server,
    off: Server,
    big: Path,
    cert: Path,
    count: int,
    runs: int,
    profile: Path | None,
    work: Path,
    base: Server | None = None,
) -> tuple[dict[str, Figures], dict[str, Timing], set[bytes]]:
    """``runs`` rounds: openssl, then each server's large and small parts (the baseline's
    small parts only)."""
    bench = Bench(big, count, profile)
    names = ("on", "off") if base is None else ("on", "off", BASELINE)
    figures = {name: Figures([], [], 0, [], [], [], [], []) for name in names}
    references: dict[str, Callable[[], float]] = {
        TO_FILE: lambda: run_openssl(big, work / "openssl.p7m", cert, "aes256-cbc")[0],
        TO_NULL: lambda: run_openssl(big, Path("/dev/null"), cert, "aes256-cbc")[0],
    }
    measured: dict[str, list[float]] = {name: [] for name in references}
    heads: set[bytes] = set()
    for run in range(runs):
        for name, reference in references.items():
            measured[name].append(reference())
        (work / "openssl.p7m").unlink(missing_ok=True)
        for name, server in (("on", on), ("off", off)):
            heads.add(bench.large(server, figures[name], cached=name == "on"))
            bench.small(
                server, figures[name], cached=name == "on", profile=run == 0 and name == "on"
            )
        if base is not None:
            bench.small(base, figures[BASELINE], cached=True, profile=False)
    return figures, {k: Timing(tuple(v)) for k, v in measured.items()}, heads


def check_view(server: Server, big: Path, cert: Path, key: Path, work: Path) -> bool:
    """Fetch the large view once more (fresh mailbox) and let openssl open it."""
    with fresh_mailbox(server, ENCRYPTED, "Check", [big]) as imap:
        data = check_ok(imap.fetch("1", "BODY.PEEK[]"), "FETCH check")
        view = work / "view.eml"
        view.write_bytes(next(item[1] for item in data if isinstance(item, tuple)))
    opened = openssl_decrypts(view, big, cert, key, work)
    view.unlink()
    return opened


def report(
    size_mb: int,
    count: int,
    runs: int,
    figures: dict[str, Figures],
    openssl: dict[str, Timing],
    heads: set[bytes],
    opened: bool,
) -> None:
    """Every figure, then the table of targets."""
    size = size_mb * MB
    print(f"RSA-3072, AES-256-CBC, PKCS#1 v1.5; best of {runs} run(s)")
    print(f"1. FETCH 1 BODY[] of a {size_mb} MB message, cold (fresh mailbox each run)")
    rows = [(TO_FILE, openssl[TO_FILE]), (TO_NULL, openssl[TO_NULL])]
    for name, f in figures.items():
        if not f.large_cold:
            continue
        rows.append((f"cache {name}: cold", Timing.of(f.large_cold)))
        if f.large_cached:
            rows.append((f"cache {name}: re-fetch", Timing.of(f.large_cached)))
    print_speeds(size, rows)
    print("   openssl cms -decrypt opens the fetched view:", "yes" if opened else "NO")
    print("   both servers sent the same view (first 4 KB of each run):", len(heads) == 1)
    table = []
    for name, f in figures.items():
        if not f.large_cold:
            continue
        cold = Timing.of(f.large_cold)
        value, text = ratio(openssl[TO_NULL], cold)  # speed ratio = time ratio inverted
        table.append(
            (
                f"1. cache {name}: {size_mb} MB cold MB/s / openssl->/dev/null",
                text,
                ">= 1.0",
                value >= 1,
            )
        )
        growth = f.rss_growth / MB
        table.append(
            (f"   cache {name}: server peak RSS growth, MB", f"{growth:.1f}", "<= 64", growth <= 64)
        )
    for name, f in figures.items():
        print(f"2.-3. cache {name}: FETCH 1:{count}, 4 KB messages")
        print_rates(
            count,
            [
                ("BODY.PEEK[] policy OFF", Timing.of(f.bodies_off)),
                ("BODY.PEEK[] S/MIME cold", Timing.of(f.bodies_cold)),
                (
                    "BODY.PEEK[] S/MIME re-fetch",
                    Timing.of(f.bodies_cached) if f.bodies_cached else None,
                ),
                ("metadata policy OFF", Timing.of(f.meta_off)),
                ("metadata S/MIME cold", Timing.of(f.meta_cold)),
            ],
        )
        value, text = ratio(Timing.of(f.bodies_cold), Timing.of(f.bodies_off))
        table.append(
            (f"2. cache {name}: {count} x 4 KB BODY.PEEK[] cold / OFF", text, "<= 4", value <= 4)
        )
        value, text = ratio(Timing.of(f.meta_cold), Timing.of(f.meta_off))
        table.append(
            (f"3. cache {name}: {count} x {META} cold / OFF", text, "<= 1.5", value <= 1.5)
        )
        files, octets = f.views_disk
        table.append(
            (
                f"4. cache {name}: DIR/views after the cold fetch",
                f"{files} files, {octets / MB:.1f} MB",
                "0 files",
                files == 0,
            )
        )
    print_table(table)


if __name__ == "__main__":
    main()
