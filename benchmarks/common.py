"""Shared pieces of the FETCH benchmarks: a real server, accounts, mail, RSS and timing.

The FETCH benchmarks (``fetch_smime.py``, ``fetch_openpgp.py``) measure the
server as a user meets it: a ``twistd -n transcoder`` process on a free
loopback port with a fresh data directory, driven by the standard library's
:mod:`imaplib`.  This module gives them

* :class:`Server`: start / stop that process, wait for the view cache to
  settle after an invalidation;
* :func:`add_account`, :func:`login`, :func:`provision`: accounts through
  ``transcoder-admin`` and keys through :class:`transcoder.client.XKeyClient`;
* :func:`drop_messages`: many messages into a mailbox at once, the way an
  MDA delivers (files into ``new/``; the server assigns UIDs at SELECT);
* :class:`RssMonitor`: the peak RSS growth of a process during a block, from
  ``/proc/<pid>/status`` (``VmHWM`` reset through ``clear_refs``, plus
  ``VmRSS`` sampling), with the peak of its child processes (gpg) apart;
* :func:`timed_fetch`, :class:`Timing`, :func:`measure_large_fetch`,
  :func:`measure_small_fetch`: time FETCHes read to their end (wall clock
  and the server's CPU seconds), best and median of several runs.

Run the benchmarks as scripts (``python benchmarks/fetch_smime.py``); this
file is not a test and never runs under pytest.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from transcoder.client import XKeyClient  # noqa: E402
from transcoder.store.intake import UniqueNames  # noqa: E402
from transcoder.store.maildir import MaildirStore  # noqa: E402

PASSWORD = "benchmark password"
#: The account served transcoded views (MODE ALWAYS) and the one served as stored (OFF).
ENCRYPTED = "reader@example.org"
OFF = "plain@example.org"
MB = 1_000_000
MiB = 2**20
#: How long a server may take to greet after start.
START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_note() -> str:
    """The load average, with a warning when other processes compete for the CPUs."""
    load = os.getloadavg()[0]
    busy = load > 0.5
    warning = " -- other processes are busy: figures will be noisy" if busy else ""
    return f"load average {load:.2f} on {os.cpu_count()} CPUs{warning}"


def machine() -> str:
    """One line describing where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()},"
        f" Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"
    )


def admin(data: Path, *args: str, stdin: str = "") -> None:
    """Run ``transcoder-admin --data DATA ARGS``; raise with its stderr on failure."""
    done = subprocess.run(
        [sys.executable, "-m", "transcoder.admin", "--data", str(data), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"transcoder-admin {' '.join(args)}: {done.stderr}")


def add_account(data: Path, address: str) -> None:
    """Create the account ``address`` with :data:`PASSWORD`."""
    admin(data, "user", "add", address, stdin=PASSWORD + "\n")


def prepare_accounts(data: Path) -> None:
    """A fresh data directory with the accounts :data:`ENCRYPTED` and :data:`OFF`."""
    for address in (ENCRYPTED, OFF):
        add_account(data, address)


@dataclass
class Server:
    """A ``twistd -n transcoder`` process on a free loopback port (no implicit TLS)."""

    data: Path
    extra_args: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        """twistd's log file (next to the data directory)."""
        return self.data.with_name(self.data.name + "-twistd.log")

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None, "server not started"
        return self.process.pid

    def start(self) -> None:
        """Start the server and wait until it greets."""
        command = [
            *(sys.executable, "-c", "from twisted.scripts.twistd import run; run()"),
            *("-n", "--pidfile=", f"--logfile={self.log}", "transcoder"),
            *("--data", str(self.data), "--imaps", "none", "--log-level", "warn"),
            *("--imap", f"tcp:{self.port}:interface=127.0.0.1", *self.extra_args),
        ]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log.read_text() if self.log.exists() else ""
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{log}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as s,
            ):
                if s.recv(100).startswith(b"* OK"):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server did not greet within {START_TIMEOUT:.0f} s")

    def stop(self) -> None:
        """SIGTERM, as a service manager would; SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def wait_views_settled(self, timeout: float = 60.0) -> None:
        """Wait until invalidated views have been removed from ``DATA/views``.

        An invalidation renames the account's view directory aside and
        removes it in a worker thread; a cold run should not share the disk
        and CPUs with that removal.
        """
        deadline = time.monotonic() + timeout
        while any((self.data / "views").glob("*/*.trash*")):
            if time.monotonic() > deadline:
                raise RuntimeError("view cache invalidation did not finish")
            time.sleep(0.02)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def login(server: Server, address: str) -> imaplib.IMAP4:
    """An imaplib connection to ``server``, logged in as ``address`` (plaintext loopback)."""
    imap = imaplib.IMAP4("127.0.0.1", server.port, timeout=600)
    imap.login(address, PASSWORD)
    return imap


def provision(imap: imaplib.IMAP4, key: bytes, fmt: str) -> None:
    """Store ``key`` over XKEY and set the policy to ``MODE ALWAYS, FORMAT fmt``."""
    xkey = XKeyClient(imap)
    xkey.provision(key)
    xkey.set_policy(mode="always", format=fmt)


def make_views_cold(imap: imaplib.IMAP4, server: Server) -> None:
    """Drop the account's cached views: any XKEY POLICY change invalidates them."""
    XKeyClient(imap).set_policy(mode="always")
    server.wait_views_settled()


def check_ok(answer: tuple[str, Any], what: str) -> Any:
    """The data of an imaplib answer; raise unless it is OK."""
    typ, data = answer
    if typ != "OK":
        raise RuntimeError(f"{what}: {typ} {data!r}")
    return data


def drop_messages(data: Path, address: str, mailbox: str, messages: Iterable[bytes | Path]) -> int:
    """Put ``messages`` into ``mailbox`` as an MDA does (``tmp/``, rename into ``new/``).

    No fsync (benchmark data); names sort in arrival order, so the server
    numbers them in the order given at the next SELECT.  The mailbox must
    exist.  Returns how many were dropped.
    """
    from twisted.internet import reactor  # only its clock: UniqueNames reads seconds()

    store = MaildirStore(data / "mail", reactor)
    path = store.account(address).mailbox_path(mailbox)
    names = UniqueNames(reactor)
    count = 0
    for message in messages:
        name = names.next()
        tmp = path / "tmp" / name
        if isinstance(message, Path):
            shutil.copyfile(message, tmp)
        else:
            tmp.write_bytes(message)
        os.rename(tmp, path / "new" / name)
        count += 1
    return count


def _status_kib(pid: int, names: Sequence[str]) -> dict[str, int]:
    """``{name: kiB}`` of the named fields of ``/proc/<pid>/status`` (missing: absent)."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in names:
                found[key] = int(value.split()[0])
    return found


def _children(pid: int) -> list[int]:
    """The pids of ``pid``'s direct children (every thread's)."""
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
    return kids


class RssMonitor:
    """Peak RSS growth of process ``pid`` over a ``with`` block, in octets.

    Growth = the highest RSS during the block minus the RSS at its start.
    The high-water mark ``VmHWM`` is reset at the start (``clear_refs`` 5,
    Linux 4.0+) so that spikes between samples count too; ``VmRSS`` is also
    sampled every ``interval`` seconds in case the reset is refused.  The
    summed RSS of the process's children (gpg) is sampled as
    ``children_peak``: it is not the server's growth, but it is memory
    spent on the FETCH.
    """

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid = pid
        self.interval = interval
        self.start_rss = 0
        self.peak_rss = 0
        self.children_peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _rss(self) -> int:
        return _status_kib(self.pid, ("VmRSS",)).get("VmRSS", 0) * 1024

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, self._rss())
            kids = sum(
                _status_kib(kid, ("VmRSS",)).get("VmRSS", 0) * 1024 for kid in _children(self.pid)
            )
            self.children_peak = max(self.children_peak, kids)

    def __enter__(self) -> RssMonitor:
        with contextlib.suppress(OSError), open(f"/proc/{self.pid}/clear_refs", "w") as refs:
            refs.write("5")  # reset VmHWM to the current RSS
        self.start_rss = self.peak_rss = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        hwm = _status_kib(self.pid, ("VmHWM",)).get("VmHWM", 0) * 1024
        self.peak_rss = max(self.peak_rss, hwm, self._rss())

    @property
    def growth(self) -> int:
        """Peak RSS during the block minus RSS at its start."""
        return self.peak_rss - self.start_rss


def fetch_octets(data: Sequence[Any]) -> int:
    """Octets of the literals and lines of an imaplib FETCH answer."""
    total = 0
    for item in data:
        if isinstance(item, tuple):
            total += sum(len(part) for part in item)
        elif isinstance(item, bytes):
            total += len(item)
    return total


def server_cpu(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` and its children it has waited for (gpg)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class Sample(NamedTuple):
    """One FETCH: wall-clock seconds, octets received, server CPU seconds (gpg included)."""

    seconds: float
    octets: int
    cpu: float


def timed_fetch(server: Server, imap: imaplib.IMAP4, message_set: str, items: str) -> Sample:
    """One FETCH, its response read to the tagged OK."""
    cpu = server_cpu(server.pid)
    start = time.perf_counter()
    data = check_ok(imap.fetch(message_set, items), f"FETCH {message_set} {items}")
    elapsed = time.perf_counter() - start
    return Sample(elapsed, fetch_octets(data), server_cpu(server.pid) - cpu)


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated runs of one measurement, and the server's CPU seconds."""

    runs: tuple[float, ...]
    cpu: tuple[float, ...] = ()

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Timing:
        """The timing of FETCH samples."""
        return cls(tuple(s.seconds for s in samples), tuple(s.cpu for s in samples))

    @property
    def best(self) -> float:
        """The fastest run."""
        return min(self.runs)

    @property
    def median(self) -> float:
        """The median run."""
        return statistics.median(self.runs)

    def describe(self) -> str:
        """``best x s, median y s[, server CPU z s] (n runs)``."""
        cpu = f", server CPU {statistics.median(self.cpu):.2f} s" if self.cpu else ""
        return f"best {self.best:.3f} s, median {self.median:.3f} s{cpu} ({len(self.runs)} runs)"


def make_smime_certificate(directory: Path, address: str, bits: int) -> tuple[Path, Path]:
    """An RSA key and a self-signed S/MIME certificate naming ``address``; (cert, key) PEM."""
    key = rsa.generate_private_key(65537, bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
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
    return cert_path, key_path


def small_message(index: int, size: int = 4096) -> bytes:
    """A ``size``-octet plain-text message, distinct per ``index``."""
    header = (
        f"From: sender{index}@example.org\r\nTo: reader@example.org\r\n"
        f"Subject: benchmark message {index}\r\nDate: Sun, 22 Nov 2026 12:00:00 +0000\r\n"
        f"Message-ID: <bench-{index}@example.org>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode("ascii")
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * ((size - len(header)) // len(line) + 1)
    return header + body[: size - len(header)]


@contextlib.contextmanager
def work_directory(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A scratch directory, removed at the end unless ``keep``."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class LargeFetch:
    """FETCH BODY[] of one large message: cold and cached timings, RSS growth, octets.

    ``references`` are the timings of the command-line tools it is compared
    with, measured in the same rounds.
    """

    cold: Timing
    cached: Timing
    references: dict[str, Timing]
    rss_growth: int
    children_peak: int
    octets: int


def measure_large_fetch(
    server: Server,
    imap: imaplib.IMAP4,
    runs: int,
    references: dict[str, Callable[[], float]],
) -> LargeFetch:
    """Time ``FETCH 1 BODY[]`` in the selected mailbox: cold (views dropped first), then cached.

    Each of ``runs`` rounds runs every reference (a callable returning its
    seconds), then the cold and the cached FETCH, so that a burst of load
    from other processes hits both sides alike.  The server's RSS growth is
    the largest seen over every FETCH.
    """
    cold: list[Sample] = []
    cached: list[Sample] = []
    measured: dict[str, list[float]] = {name: [] for name in references}
    growth = children = 0
    for _ in range(runs):
        for name, reference in references.items():
            measured[name].append(reference())
        make_views_cold(imap, server)
        for into in (cold, cached):
            with RssMonitor(server.pid) as rss:
                into.append(timed_fetch(server, imap, "1", "BODY[]"))
            growth = max(growth, rss.growth)
            children = max(children, rss.children_peak)
    timings = {name: Timing(tuple(values)) for name, values in measured.items()}
    octets = cold[-1].octets
    return LargeFetch(Timing.of(cold), Timing.of(cached), timings, growth, children, octets)


def fetch_to_file(imap: imaplib.IMAP4, path: Path) -> int:
    """Write the literal of ``FETCH 1 BODY.PEEK[]`` (selected mailbox) to ``path``; its size."""
    data = check_ok(imap.fetch("1", "BODY.PEEK[]"), "FETCH 1 BODY.PEEK[]")
    literal = next(item[1] for item in data if isinstance(item, tuple))
    path.write_bytes(literal)
    return len(literal)


def body_of(path: Path) -> tuple[int, int]:
    """(offset, length) of the body of the message in ``path`` (after the blank line)."""
    with path.open("rb") as f:
        head = f.read(64 * 1024)
    offset = head.index(b"\r\n\r\n") + 4
    return offset, path.stat().st_size - offset


def same_tail(whole: Path, part: Path, offset: int) -> bool:
    """Whether ``whole`` ends with the octets of ``part`` from ``offset`` on."""
    length = part.stat().st_size - offset
    if whole.stat().st_size < length:
        return False
    with whole.open("rb") as a, part.open("rb") as b:
        a.seek(whole.stat().st_size - length)
        b.seek(offset)
        while True:
            x, y = a.read(MiB), b.read(MiB)
            if x != y:
                return False
            if not x:
                return True


@dataclass(frozen=True)
class SmallFetch:
    """``FETCH 1:N`` of many small messages: each timing is over the whole command."""

    off: Timing
    cold: Timing
    cached: Timing | None


def measure_small_fetch(
    server: Server,
    transcoded: imaplib.IMAP4,
    plain: imaplib.IMAP4,
    count: int,
    items: str,
    runs: int,
    cached: bool = True,
) -> SmallFetch:
    """``FETCH 1:count items`` with policy OFF, transcoded cold and (if ``cached``) re-fetched.

    Both connections have their mailbox of ``count`` messages selected.  One
    untimed FETCH on each first, so that the stored files are in the page
    cache for every timed run; then ``runs`` rounds of OFF, cold (views
    dropped just before) and cached.
    """
    message_set = f"1:{count}"
    for imap in (plain, transcoded):
        timed_fetch(server, imap, message_set, items)
    off: list[Sample] = []
    cold: list[Sample] = []
    again: list[Sample] = []
    for _ in range(runs):
        off.append(timed_fetch(server, plain, message_set, items))
        make_views_cold(transcoded, server)
        cold.append(timed_fetch(server, transcoded, message_set, items))
        if cached:
            again.append(timed_fetch(server, transcoded, message_set, items))
    return SmallFetch(Timing.of(off), Timing.of(cold), Timing.of(again) if again else None)


def print_rates(count: int, rows: Sequence[tuple[str, Timing | None]]) -> None:
    """One line per timing of ``count`` messages: messages per second (best run) and details."""
    for label, timing in rows:
        if timing is not None:
            print(f"   {label:<26} {count / timing.best:7.0f} msg/s   {timing.describe()}")


def print_speeds(size: int, rows: Sequence[tuple[str, Timing]]) -> None:
    """One line per timing of ``size`` plaintext octets: MB/s (best run) and details."""
    for label, timing in rows:
        print(f"   {label:<26} {size / MB / timing.best:7.1f} MB/s   {timing.describe()}")


def ratio(numerator: Timing, denominator: Timing) -> tuple[float, str]:
    """``best / best`` and, for the table, ``"x.xx (median y.yy)"``."""
    best = numerator.best / denominator.best
    return best, f"{best:.2f} (med {numerator.median / denominator.median:.2f})"


def print_table(rows: Sequence[tuple[str, str, str, bool | None]]) -> None:
    """The closing summary: item, figure (best runs; medians in parentheses), target, met?"""
    print()
    print(f"{'item':<54} {'figure':>18}  {'target':<8} met?")
    for item, figure, target, met in rows:
        verdict = "-" if met is None else ("yes" if met else "NO")
        print(f"{item:<54} {figure:>18}  {target:<8} {verdict}")
