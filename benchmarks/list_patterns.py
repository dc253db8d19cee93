"""LIST/LSUB with hostile patterns against the real server, and another client's NOOPs (issue 8).

    python benchmarks/list_patterns.py            # 200 rounds of every pattern, a few seconds
    python benchmarks/list_patterns.py --rounds 3 # a smoke run

Issue 8 item 1: patterns became backtracking regular expressions run on the
reactor thread; ``LIST "" "%%%%%%Z"`` against one 200-character mailbox
name did not finish in 120 s and froze every other client.  Done when
"every LIST pattern answers within 50 ms while another client's NOOP stays
under 50 ms".

Starts ``twistd -n transcoder`` on a free loopback port with a fresh data
directory and one account holding INBOX, 15 other mailboxes, a 200-character
name, a 199-character one ending in ``Z`` and one with atom-specials, all
subscribed.  One imaplib
client sends the issue's patterns (12 and 14 ``%`` + ``Z``, ``%%%%%%Z``, a
32-wildcard LSUB, the caps' neighbours, atom-specials), each ``--rounds``
times, timing each answer; meanwhile a second client, on its own
connection and thread, sends NOOP after NOOP and times each.  Prints each
pattern's median and worst latency, the overall worst LIST/LSUB latency and the worst
NOOP latency seen during the run (and before it, idle).  A script to run by
hand, not a timed test.
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import statistics
import threading
import time
from pathlib import Path

from common import (
    PASSWORD,
    Server,
    add_account,
    check_ok,
    load_note,
    machine,
    work_directory,
)

from transcoder.errors import PatternTooComplex
from transcoder.store.names import decode_list_pattern, match_names

ACCOUNT = "lister@example.org"
LONG = "a" * 200
MAILBOXES = [
    *("Archive", "Drafts", "Junk", "Sent", "Trash", "Lists", "Lists/twisted"),
    *("Lists/python-dev", "Work", "Work/projects", "Work/reports", "Family"),
    *("Travel", "Receipts", "Zed", LONG, LONG[:-1] + "Z"),
    "!#$&-'+,-.box",  # on the wire: "!#$&'+,-.box" in modified UTF-7
]
#: (command, pattern): the issue's findings, then the caps' neighbours.
PATTERNS = [
    ("LIST", "%" * 12 + "Z"),
    ("LIST", "%" * 14 + "Z"),
    ("LIST", "%%%%%%Z"),
    ("LSUB", "%*" * 16 + "Z"),
    ("LSUB", "%" * 32 + "Z"),
    ("LIST", "*a" * 32 + "Z"),
    ("LIST", ("%a" * 32)[:-1] + "Z"),  # 32 wildcards, a literal between each
    ("LIST", "%" * 64 + "Z"),  # at the wildcard cap
    ("LIST", "%" * 65 + "Z"),  # over it: BAD [LIMIT]
    ("LIST", "*" + "a" * 1022 + "Z"),  # at the length cap
    ("LIST", "!#$&'+,-.%*"),  # atom-specials (issue 10 item 3)
    ("LIST", "*"),
]


def connect(server: Server) -> imaplib.IMAP4:
    """A logged-in imaplib connection."""
    imap = imaplib.IMAP4("127.0.0.1", server.port, timeout=600)
    imap.login(ACCOUNT, PASSWORD)
    return imap


def populate(imap: imaplib.IMAP4) -> None:
    """Create and subscribe :data:`MAILBOXES`."""
    for name in MAILBOXES:
        check_ok(imap.create(f'"{name}"'), f"CREATE {name[:20]}")
        check_ok(imap.subscribe(f'"{name}"'), f"SUBSCRIBE {name[:20]}")


def timed(imap: imaplib.IMAP4, command: str, pattern: str) -> tuple[float, str, int]:
    """(seconds, tagged status, names listed) of one LIST/LSUB."""
    start = time.perf_counter()
    try:
        status, data = imap._simple_command(command, '""', f'"{pattern}"')
        data = imap._untagged_response(status, data, command)[1]
    except imaplib.IMAP4.error as error:  # BAD raises in imaplib
        return time.perf_counter() - start, str(error)[:40], 0
    listed = [d for d in data if d is not None]
    return time.perf_counter() - start, status, len(listed)


class NoopClient(threading.Thread):
    """Sends NOOP after NOOP on its own connection, recording each latency."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.imap = connect(server)
        self.latencies: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        """NOOPs until :meth:`stop`."""
        while not self.stopping.is_set():
            start = time.perf_counter()
            check_ok(self.imap.noop(), "NOOP")
            self.latencies.append(time.perf_counter() - start)
            time.sleep(0.001)

    def stop(self) -> list[float]:
        """Stop, log out, and return the latencies."""
        self.stopping.set()
        self.join()
        self.imap.logout()
        return self.latencies


def idle_noops(server: Server, count: int = 200) -> list[float]:
    """NOOP latencies with nothing else going on (the baseline)."""
    imap = connect(server)
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        check_ok(imap.noop(), "NOOP")
        latencies.append(time.perf_counter() - start)
    imap.logout()
    return latencies


def ms(seconds: float) -> str:
    """``seconds`` in milliseconds, for the table."""
    return f"{seconds * 1000:8.2f}"


def run(data: Path, rounds: int) -> None:
    """Start the server, populate, measure, print."""
    add_account(data, ACCOUNT)
    with Server(data) as server:
        lister = connect(server)
        populate(lister)
        baseline = idle_noops(server)
        noop = NoopClient(server)
        noop.start()
        times: dict[tuple[str, str], list[float]] = {key: [] for key in PATTERNS}
        answers: dict[tuple[str, str], str] = {}
        for _ in range(rounds):
            for command, pattern in PATTERNS:
                took, status, listed = timed(lister, command, pattern)
                times[command, pattern].append(took)
                answers[command, pattern] = f"{status} {listed} names"
        noops = noop.stop()
        lister.logout()
    print(f"{machine()}; {load_note()}")
    print(f"{len(MAILBOXES) + 1} mailboxes (one of 200 characters), {rounds} rounds\n")
    print(f"{'command':7} {'pattern':34} {'median':>8} {'max ms':>8}  answer")
    for (command, pattern), took in times.items():
        shown = pattern if len(pattern) <= 34 else pattern[:26] + f"..({len(pattern)})"
        middle = statistics.median(took)
        print(f"{command:7} {shown:34} {ms(middle)} {ms(max(took))}  {answers[command, pattern]}")
    list_max = max(max(took) for took in times.values())
    print(f"\nmax LIST/LSUB latency: {ms(list_max).strip()} ms (goal < 50 ms)")
    print(
        f"concurrent NOOPs: {len(noops)}, median {ms(statistics.median(noops)).strip()} ms,"
        f" max {ms(max(noops)).strip()} ms (goal < 50 ms)"
    )
    print(f"idle NOOPs: {len(baseline)}, max {ms(max(baseline)).strip()} ms")
    print(f"the matcher alone (no IMAP), slowest pattern: {matcher_alone() * 1e6:.0f} us")


def matcher_alone() -> float:
    """Seconds :func:`match_names` takes for the slowest pattern on the account's names."""
    names = ["INBOX", *(decode_list_pattern(name.encode("ascii")) for name in MAILBOXES)]
    slowest = 0.0
    for _, pattern in PATTERNS:
        start = time.perf_counter()
        with contextlib.suppress(PatternTooComplex):
            match_names("", pattern, names)
        slowest = max(slowest, time.perf_counter() - start)
    return slowest


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="times each pattern is sent")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    options = parser.parse_args()
    with work_directory("list-patterns-", options.keep) as scratch:
        run(scratch / "data", options.rounds)


if __name__ == "__main__":
    main()
