"""Measuring the server during the FETCH benchmarks: timings, CPU, RSS, summaries.

* :func:`timed_fetch`, :class:`Timing`: one FETCH read to its tagged OK
  (wall clock, octets, the server's CPU seconds), best and median of runs;
* :func:`measure_large_fetch`: one large message cold and cached, in rounds
  with the command-line tools it is compared with, and the server's RSS;
* :func:`measure_small_fetch`: many small messages, policy OFF vs transcoded;
* :class:`RssMonitor`: the peak RSS growth of a process during a block, from
  ``/proc/<pid>/status`` (``VmHWM`` reset through ``clear_refs``, plus
  ``VmRSS`` sampling), with the peak of its child processes (gpg) apart;
* :func:`print_rates`, :func:`print_speeds`, :func:`ratio`,
  :func:`print_table`: what the scripts print.

The server side (process, accounts, mail) is :mod:`common`.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from common import MB, Server, check_ok, make_views_cold


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
