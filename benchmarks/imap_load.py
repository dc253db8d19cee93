"""IMAP load generator: many pipelining clients that check the protocol, ours vs Dovecot (issue 10).

    python benchmarks/imap_load.py                          # 10 clients, transcoding off, 30 s
    python benchmarks/imap_load.py --clients 10 50 200 --transcoding off on
    python benchmarks/imap_load.py --quick                  # 4 clients, 5 s: a smoke run

For each number of ``--clients`` and each ``--transcoding`` setting, starts
``twistd -n transcoder`` on a free loopback port with a fresh data directory
(accounts ``load<i>@example.org``, ``--per-account`` clients sharing each,
``--messages`` 4 KB messages in each INBOX, 10 in ``Archive``; with
transcoding on, an S/MIME certificate per account and policy MODE ALWAYS),
and, when ``dovecot`` is installed (``dovecot-imapd``; this script installs
nothing), an unprivileged Dovecot of its own with the same accounts and
messages (see :mod:`load_servers`; once per number of clients: it does not
transcode).  Each account logs in once first (login caches warm on both),
then the clients run for ``--duration`` seconds the pipelined mix of
:mod:`load_mix` -- LOGIN, LIST, STATUS, SELECT, FETCH, STORE (\\Seen and
new keywords), SEARCH, EXPUNGE, APPEND, IDLE, LOGOUT -- each client checking
the responses itself (:mod:`load_checks`: sequence numbers and UIDs across
EXISTS/EXPUNGE/FETCH, RFC 3501 7.4.1's EXPUNGE rule, keywords announced in
FLAGS, one tagged response per command, NO/BAD).

Prints for each run the operations per second and p50/p95 latency per
command and in total, the server's RSS at the end (``/proc/PID/status``;
for Dovecot summed over its processes, with PSS), server and load-generator
CPU, and the protocol errors grouped by kind; then the ratio ours/Dovecot
per command and in total, and a summary.  The load generator runs on the
same CPUs as the server: when its CPU share nears a core, it is the
bottleneck.  Loopback only; every run stops by itself.  A script to run by
hand, not a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import time
from pathlib import Path

from common import PASSWORD, load_note, machine, work_directory
from load_checks import ErrorLog
from load_client import Connection, SessionAborted, Spec, Stats
from load_mix import Account, Mix, client
from load_report import RunResult, print_ratio, print_run, print_summary
from load_servers import (
    Dovecot,
    accounts_for,
    descendants,
    our_server,
    prepare_ours,
    tree_memory,
    tree_rss,
)
from measure import server_cpu


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid``, its live descendants and the children it reaped."""
    total = 0.0
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            total += server_cpu(p)
    return total


async def warm_up(port: int, accounts: list[Account], timeout: float) -> None:
    """One LOGIN/LOGOUT per account, so that login caches are warm for the run."""
    errors, stats = ErrorLog(), Stats(0.0)
    for account in accounts:
        connection = await Connection.open(port, errors, stats, timeout)
        login = b'LOGIN "%s" "%s"' % (account.address.encode(), account.password.encode())
        try:
            await connection.run([Spec("LOGIN", login)])
            await connection.run([Spec("LOGOUT", b"LOGOUT")])
        except SessionAborted:
            pass
        await connection.close()
    if errors.total:
        raise RuntimeError(f"warm-up failed: {dict(errors.counts)}")


async def drive(
    port: int, pid: int, accounts: list[Account], clients: int, mix: Mix, duration: float, seed: int
) -> tuple[Stats, ErrorLog, tuple[int, int, int, int], float]:
    """Run the clients for ``duration`` seconds; (stats, errors, memory at end + peak, CPU)."""
    await warm_up(port, accounts, mix.timeout)
    loop = asyncio.get_running_loop()
    cpu = tree_cpu(pid)
    stats, errors = Stats(loop.time() + duration), ErrorLog()
    tasks = [
        asyncio.create_task(client(port, accounts[i % len(accounts)], mix, errors, stats, seed + i))
        for i in range(clients)
    ]
    peak = 0
    while loop.time() < stats.deadline:
        peak = max(peak, tree_rss(pid))
        await asyncio.sleep(min(0.5, max(0.0, stats.deadline - loop.time())))
    processes, rss, pss = tree_memory(pid)
    used = tree_cpu(pid) - cpu
    _, pending = await asyncio.wait(tasks, timeout=mix.timeout + 15)
    for task in pending:
        errors.add("client still running long after the end of the run", "")
        task.cancel()
    return stats, errors, (processes, rss, max(peak, rss), pss), used


def measure(
    name: str, port: int, pid: int, accounts: list[Account], options: argparse.Namespace
) -> RunResult:
    """One run against the server listening on ``port`` (process ``pid``)."""
    mix = Mix(rounds=options.rounds, idle=options.idle, timeout=options.timeout)
    started = time.process_time()
    stats, errors, memory, used = asyncio.run(
        drive(port, pid, accounts, options.clients_now, mix, options.duration, options.seed)
    )
    processes, rss, peak, pss = memory
    return RunResult(
        name, options.clients_now, options.duration, stats, errors, processes, rss, peak, pss,
        used, time.process_time() - started, load=load_note(),
    )  # fmt: skip


#: Log lines reporting errors: twistd's ``[namespace#error]``/``#critical``, Dovecot's ``Error:``.
_LOG_ERROR = re.compile(r"#(?:error|critical)\]|\b(?:Error|Panic|Fatal): ")


def log_problems(log: Path) -> list[str]:
    """The lines of a server's log that report errors."""
    if not log.exists():
        return []
    return [
        line for line in log.read_text(errors="replace").splitlines() if _LOG_ERROR.search(line)
    ]


def run_ours(work: Path, transcoding: bool, options: argparse.Namespace) -> RunResult:
    """Our server, freshly provisioned, under the load."""
    label = f"ours, transcoding {'on' if transcoding else 'off'}"
    data = work / f"ours-{'on' if transcoding else 'off'}-{options.clients_now}" / "data"
    accounts = accounts_for(options.clients_now, options.per_account, PASSWORD)
    prepare_ours(data, accounts, options.messages, transcoding, data.parent / "keys")
    with our_server(data, options.clients_now) as server:
        result = measure(label, server.port, server.pid, accounts, options)
    result.log_problems = log_problems(server.log)
    return result


def run_dovecot(work: Path, options: argparse.Namespace) -> RunResult:
    """Dovecot, freshly provisioned with the same accounts and messages, under the load."""
    accounts = accounts_for(options.clients_now, options.per_account, PASSWORD)
    dovecot = Dovecot(work / f"dovecot-{options.clients_now}")
    dovecot.prepare(accounts, options.messages, options.clients_now)
    name = f"Dovecot {Dovecot.version().split()[0]}"
    with dovecot:
        result = measure(name, dovecot.port, dovecot.pid, accounts, options)
    result.log_problems = log_problems(dovecot.directory / "dovecot.log")
    return result


def parse_options() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10], help="default: 10")
    parser.add_argument("--transcoding", choices=("off", "on"), nargs="+", default=["off"])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run (30)")
    parser.add_argument("--per-account", type=int, default=5, help="clients sharing an account (5)")
    parser.add_argument("--messages", type=int, default=200, help="messages in each INBOX (200)")
    parser.add_argument("--rounds", type=int, default=5, help="pipelined rounds per session (5)")
    parser.add_argument("--idle", type=float, default=0.2, help="seconds of IDLE per session (0.2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a command may take")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-dovecot", action="store_true", help="only our server")
    parser.add_argument("--quick", action="store_true", help="4 clients, 5 s, 60 messages")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    options = parser.parse_args()
    if options.quick:
        options.clients, options.duration, options.messages = [4], 5.0, 60
    return options


def main() -> None:
    """Every configuration in turn, the ratios, the summary."""
    options = parse_options()
    dovecot = not options.no_dovecot and Dovecot.installed()
    print(machine())
    print(f"{load_note()}; Dovecot: {Dovecot.version() if dovecot else 'not used'}")
    rows: list[tuple[RunResult, RunResult | None]] = []
    with work_directory("imap-load-", options.keep) as work:
        for clients in options.clients:
            options.clients_now = clients
            reference: RunResult | None = None
            for i, setting in enumerate(options.transcoding):
                ours = run_ours(work, setting == "on", options)
                print_run(ours)
                if dovecot and reference is None:
                    reference = run_dovecot(work, options)
                    print_run(reference)
                if reference is not None:
                    print_ratio(ours, reference)
                rows.append((ours, reference))
                if reference is not None and i == 0:
                    rows.append((reference, None))
    print_summary(rows)
    print(load_note())


if __name__ == "__main__":
    main()
