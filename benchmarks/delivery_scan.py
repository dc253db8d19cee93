"""The virus scan of delivered mail (issue 16) on the real server, and another client's NOOPs.

    python benchmarks/delivery_scan.py [--messages 200] [--size-kb 100] [--quick]

Starts a real clamd (Debian's, with the tests' one-signature database:
``tests/scan/clamd_fixture.py``) and a ``twistd -n transcoder --clamd`` on a
fresh data directory.  Then:

1. baseline: another account's client sends NOOP after NOOP, idle;
2. ``--messages`` messages of ``--size-kb`` KB (one in twenty the EICAR file)
   are dropped into the receiver's ``new/`` at once, as an MDA would; the
   receiver's session NOOPs until every clean one is shown and every EICAR
   is in ``DIR/quarantine/`` -- while the other client keeps NOOPing on its
   own connection and mailbox;
3. the same delivery with a server without ``--clamd``, for the pickup's own
   cost.

Prints the time until the receiver sees everything (and messages/s), the
other client's NOOP latency (median, p95, max) idle and during the scans,
and the load average (the machine is shared).  Not a test.
"""

from __future__ import annotations

import argparse
import imaplib
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    PASSWORD,
    Server,
    add_account,
    check_ok,
    drop_messages,
    load_note,
    machine,
    work_directory,
)
from tests.scan.clamd_fixture import EICAR, running_clamd

RECEIVER = "receiver@example.org"
OTHER = "other@example.org"


class NoopClient(threading.Thread):
    """Sends NOOP after NOOP on its own connection, recording each latency."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.imap = imaplib.IMAP4("127.0.0.1", server.port, timeout=600)
        self.imap.login(OTHER, PASSWORD)
        check_ok(self.imap.select("INBOX"), "SELECT")
        self.latencies: list[float] = []
        self._done = threading.Event()

    def run(self) -> None:
        """NOOPs until :meth:`finish`."""
        while not self._done.is_set():
            start = time.perf_counter()
            check_ok(self.imap.noop(), "NOOP")
            self.latencies.append(time.perf_counter() - start)

    def finish(self) -> list[float]:
        """Stop, log out, and return the latencies."""
        self._done.set()
        self.join()
        self.imap.logout()
        return self.latencies


def message(index: int, size: int, infected: bool) -> bytes:
    head = f"From: sender@example.net\r\nSubject: delivery {index}\r\n\r\n".encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"
    body = line * (size // len(line))
    return head + (EICAR + b"\r\n" if infected else b"") + body


def deliver_and_wait(server: Server, messages: list[bytes], infected: int) -> float:
    """Drop ``messages`` into the receiver's new/ and NOOP until all are dealt with."""
    receiver = imaplib.IMAP4("127.0.0.1", server.port, timeout=600)
    receiver.login(RECEIVER, PASSWORD)
    check_ok(receiver.select("INBOX"), "SELECT")
    quarantine = server.data / "quarantine" / RECEIVER
    start = time.perf_counter()
    drop_messages(server.data, RECEIVER, "INBOX", messages)
    expected = len(messages) - infected
    shown = 0
    while True:
        check_ok(receiver.noop(), "NOOP")  # the mailbox's refresh: the pickup of new/
        _, exists = receiver.response("EXISTS")
        if exists and exists[-1] is not None:
            shown = int(exists[-1])
        held = len(list(quarantine.iterdir())) if quarantine.exists() else 0
        if shown >= expected and held >= infected:
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    receiver.logout()
    return elapsed


def quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"{len(values)} NOOPs, median {statistics.median(values) * 1e3:.2f} ms,"
        f" p95 {p95 * 1e3:.2f} ms, max {max(values) * 1e3:.2f} ms"
    )


def run_once(
    work: Path, label: str, extra: list[str], messages: list[bytes], infected: int
) -> None:
    """One server (``extra`` options), the baseline, then the delivery."""
    data = work / label.replace(" ", "_")
    for address in (RECEIVER, OTHER):
        add_account(data, address)
    with Server(data, extra_args=extra) as server:
        idle = NoopClient(server)
        idle.start()
        time.sleep(2)
        baseline = idle.finish()
        noops = NoopClient(server)
        noops.start()
        elapsed = deliver_and_wait(server, messages, infected if extra else 0)
        during = noops.finish()
    rate = len(messages) / elapsed
    print(f"{label}: {len(messages)} delivered, all dealt with in {elapsed:.2f} s ({rate:.0f}/s)")
    print(f"  other client idle:   {quantiles(baseline)}")
    print(f"  other client during: {quantiles(during)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size-kb", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="20 messages of 10 KB")
    args = parser.parse_args()
    count, size = (20, 10) if args.quick else (args.messages, args.size_kb)
    flags = [i % 20 == 7 for i in range(count)]
    messages = [message(i, size * 1000, bad) for i, bad in enumerate(flags)]
    print(machine())
    print(load_note())
    with work_directory("tc-delivery-scan-") as work, running_clamd() as clamd:
        run_once(work, "with --clamd", ["--clamd", clamd.address], messages, sum(flags))
        run_once(work, "without --clamd", [], messages, 0)
    print(load_note())


if __name__ == "__main__":
    main()
