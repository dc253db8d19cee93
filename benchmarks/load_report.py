"""What the load generator prints: per-command figures, errors, memory, ratios to Dovecot."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from load_checks import ErrorLog
from load_client import Stats

MB = 1_000_000
#: The order commands are listed in (others follow, sorted).
ORDER = (
    "LOGIN", "LIST", "STATUS", "SELECT", "UID FETCH", "NOOP", "FETCH flags", "FETCH header",
    "FETCH body", "STORE", "SEARCH", "UID SEARCH", "EXPUNGE", "APPEND", "IDLE", "LOGOUT",
)  # fmt: skip


@dataclass
class RunResult:
    """Everything measured in one run of one server configuration."""

    name: str
    clients: int
    seconds: float
    stats: Stats
    errors: ErrorLog
    processes: int = 1
    rss_end: int = 0
    rss_peak: int = 0
    pss_end: int = 0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    log_problems: list[str] = field(default_factory=list)
    load: str = ""  # the load average at the end of the run

    @property
    def total_ops(self) -> int:
        """Commands completed within the run's duration."""
        return sum(len(v) for v in self.stats.latencies.values())

    @property
    def cpu_per_op(self) -> float:
        """Server CPU milliseconds per completed command: comparable on a busy machine."""
        return self.server_cpu * 1000 / self.total_ops if self.total_ops else 0.0

    def rate(self, label: str | None = None) -> float:
        """Commands per second, of one label or of all."""
        count = self.total_ops if label is None else len(self.stats.latencies.get(label, ()))
        return count / self.seconds


def labels(results: Sequence[RunResult]) -> list[str]:
    """Every command label seen, in :data:`ORDER`."""
    seen = {label for r in results for label in r.stats.latencies}
    return [x for x in ORDER if x in seen] + sorted(seen - set(ORDER))


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def median_ms(result: RunResult, label: str) -> float:
    """The median latency of ``label`` in milliseconds; 0 if it never completed."""
    times = result.stats.latencies.get(label)
    return statistics.median(times) * 1000 if times else 0.0


def print_run(result: RunResult) -> None:
    """The per-command table, memory, CPU and the protocol errors of one run."""
    print(f"\n== {result.name}: {result.clients} clients, {result.seconds:.0f} s ==")
    if result.load:
        print(result.load)
    print(f"{'command':14} {'ops':>7} {'ops/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'NO/BAD':>7}")
    for label in labels([result]):
        times = result.stats.latencies[label]
        p50, p95 = statistics.median(times) * 1000, percentile(times, 0.95) * 1000
        refused = result.stats.refused.get(label, 0)
        print(
            f"{label:14} {len(times):7d} {result.rate(label):8.1f}"
            f" {p50:8.1f} {p95:8.1f} {refused:7d}"
        )
    print(f"{'total':14} {result.total_ops:7d} {result.rate():8.1f}")
    memory = (
        f"server RSS at the end {result.rss_end / MB:.0f} MB (peak {result.rss_peak / MB:.0f} MB)"
    )
    if result.processes > 1:
        memory += f", summed over {result.processes} processes; PSS {result.pss_end / MB:.0f} MB"
    print(memory)
    print(
        f"CPU: server {result.server_cpu:.1f} s"
        f" ({result.server_cpu / result.seconds:.0%} of a core, {result.cpu_per_op:.2f} ms/op),"
        f" load generator {result.client_cpu:.1f} s ({result.client_cpu / result.seconds:.0%})"
    )
    if result.log_problems:
        first = result.log_problems[0][:200]
        print(f"server log: {len(result.log_problems)} error lines, the first: {first}")
    print_errors(result.errors)


def print_errors(errors: ErrorLog) -> None:
    """Protocol errors grouped by kind, most frequent first, one example each."""
    print(f"protocol errors: {errors.total}")
    for kind, count in errors.counts.most_common():
        print(f"  {count:6d}  {kind}")
        if errors.examples[kind]:
            print(f"          e.g. {errors.examples[kind][:200]}")
    for kind, count in errors.expunge_issued.most_common():
        print(f"  (allowed, RFC 2180) {count} x {kind}")


def print_ratio(ours: RunResult, dovecot: RunResult) -> None:
    """Operations per second and p50 latency, ours / Dovecot, per command and in total."""
    print(f"\n-- {ours.name} / {dovecot.name}, {ours.clients} clients --")
    print(f"{'command':14} {'ops/s':>8} {'Dovecot':>8} {'ratio':>6} {'p50 ms':>8} {'Dovecot':>8}")
    for label in labels([ours, dovecot]):
        mine, theirs = ours.rate(label), dovecot.rate(label)
        ratio = f"{mine / theirs:6.2f}" if theirs else "     -"
        p50s = [median_ms(r, label) for r in (ours, dovecot)]
        print(f"{label:14} {mine:8.1f} {theirs:8.1f} {ratio} {p50s[0]:8.1f} {p50s[1]:8.1f}")
    total = ours.rate() / dovecot.rate() if dovecot.rate() else 0.0
    print(f"{'total':14} {ours.rate():8.1f} {dovecot.rate():8.1f} {total:6.2f}")
    if ours.cpu_per_op and dovecot.cpu_per_op:
        print(
            f"server CPU per command: {ours.cpu_per_op:.2f} ms / {dovecot.cpu_per_op:.2f} ms;"
            f" Dovecot / ours = {dovecot.cpu_per_op / ours.cpu_per_op:.2f}"
            " (the ops/s ratio at equal CPU)"
        )


def print_summary(rows: Sequence[tuple[RunResult, RunResult | None]]) -> None:
    """One line per run: ops/s, ratio, LOGIN p50, errors, RSS."""
    print("\n== summary ==")
    print(
        f"{'server':34} {'clients':>7} {'ops/s':>8} {'/Dovecot':>8} {'LOGIN p50':>9}"
        f" {'errors':>7} {'RSS MB':>7}"
    )
    for result, dovecot in rows:
        ratio = (
            f"{result.rate() / dovecot.rate():8.2f}" if dovecot and dovecot.rate() else "       -"
        )
        logins = result.stats.latencies.get("LOGIN", [])
        login = f"{statistics.median(logins) * 1000:9.1f}" if logins else "        -"
        print(
            f"{result.name:34} {result.clients:7d} {result.rate():8.1f} {ratio} {login}"
            f" {result.errors.total:7d} {result.rss_end / MB:7.0f}"
        )
