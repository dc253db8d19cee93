"""A FETCH burst against the real server: its memory, and another client's wait (issue 8 item 6).

    python benchmarks/fetch_burst.py            # the finding: 20 clients x FETCH 1:* of 5,000
    python benchmarks/fetch_burst.py --quick    # 5 clients x 1,000 messages: a few seconds

Replays the attack run's finding: twenty clients log in to one account
(policy OFF) holding 5,000 small messages and each sends ``FETCH 1:*
(UID FLAGS BODY.PEEK[])``, then reads the answer slowly (``--rate`` octets a
second per client, a small socket receive buffer).  Meanwhile another client
connects every ``--probe-interval`` seconds and times LOGIN + SELECT INBOX +
LOGOUT.  Printed: the server's RSS when idle, once every client has logged
in and selected (LOGIN's scrypt takes 16 MiB per concurrent login, which
the C allocator keeps), its peak during the FETCHes (sampled from ``/proc``
every 5 ms and ``VmHWM``) and after every client has gone; the probe
latencies during the burst next to an idle baseline; the time the burst
took.  A script to run by hand, not a timed test.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field

from common import (
    MB,
    OFF,
    PASSWORD,
    Server,
    drop_messages,
    load_note,
    machine,
    prepare_accounts,
    small_message,
    work_directory,
)
from measure import RssMonitor, _status_kib


class Connection:
    """A raw IMAP connection: commands out, lines in, reading at a chosen pace."""

    def __init__(self, port: int, receive_buffer: int | None = None) -> None:
        self.sock = socket.socket()
        if receive_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(600)
        self.sock.connect(("127.0.0.1", port))
        self.pending = b""
        self.received = 0
        self.read_until(b"\r\n")  # the greeting

    def read_until(self, marker: bytes, rate: float | None = None) -> None:
        """Read until ``marker`` has arrived, at most ``rate`` octets a second."""
        started = time.monotonic()
        while marker not in self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.received += len(data)
            self.pending = (self.pending + data)[-len(marker) - 65536 :]
            if rate is not None:
                ahead = self.received / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        self.pending = self.pending[self.pending.index(marker) + len(marker) :]

    def command(self, tag: bytes, line: bytes, rate: float | None = None) -> None:
        """Send ``tag line`` and read to its tagged OK."""
        self.pending = b"\r\n" + self.pending  # responses start at a line's beginning
        self.sock.sendall(tag + b" " + line + b"\r\n")
        self.read_until(b"\r\n" + tag + b" OK", rate)
        self.read_until(b"\r\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def login_line(address: str) -> bytes:
    """``LOGIN "address" "password"``."""
    return b'LOGIN "%s" "%s"' % (address.encode(), PASSWORD.encode())


@dataclass
class Burst:
    """What the fetching clients and the probing client saw."""

    fetch_seconds: list[float] = field(default_factory=list)
    fetched_octets: int = 0
    probes: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def fetching_client(
    port: int, items: bytes, rate: float, start: threading.Barrier, out: Burst
) -> None:
    """LOGIN, SELECT, then one FETCH 1:* read at ``rate`` octets a second."""
    try:
        conn = Connection(port, receive_buffer=64 * 1024)
        conn.command(b"l", login_line(OFF))
        conn.command(b"s", b"SELECT INBOX")
        start.wait()
        began = time.perf_counter()
        conn.command(b"f", b"FETCH 1:* " + items, rate)
        with out.lock:
            out.fetch_seconds.append(time.perf_counter() - began)
            out.fetched_octets += conn.received
        conn.command(b"o", b"LOGOUT")
        conn.close()
    except Exception as error:
        out.errors.append(f"fetching client: {error!r}")
        start.abort()


def probe(port: int) -> float:
    """Seconds for LOGIN + SELECT INBOX + LOGOUT on a fresh connection."""
    began = time.perf_counter()
    conn = Connection(port)
    conn.command(b"l", login_line(OFF))
    conn.command(b"s", b"SELECT INBOX")
    elapsed = time.perf_counter() - began
    conn.command(b"o", b"LOGOUT")
    conn.close()
    return elapsed


def probing_client(port: int, interval: float, done: threading.Event, out: Burst) -> None:
    """A probe every ``interval`` seconds until ``done``."""
    while not done.wait(interval):
        try:
            out.probes.append(probe(port))
        except Exception as error:
            out.errors.append(f"probe: {error!r}")


def rss(pid: int) -> int:
    """The server's resident set size, in octets."""
    return _status_kib(pid, ("VmRSS",)).get("VmRSS", 0) * 1024


def run_burst(server: Server, args: argparse.Namespace) -> tuple[Burst, RssMonitor]:
    """Start the clients at once; probe until they are done."""
    out = Burst()
    start = threading.Barrier(args.clients + 1)
    items = args.items.encode("ascii")
    rate = args.rate * MB
    clients = [
        threading.Thread(target=fetching_client, args=(server.port, items, rate, start, out))
        for _ in range(args.clients)
    ]
    for thread in clients:
        thread.start()
    start.wait()
    done = threading.Event()
    prober = threading.Thread(
        target=probing_client, args=(server.port, args.probe_interval, done, out)
    )
    with RssMonitor(server.pid) as monitor:
        prober.start()
        for thread in clients:
            thread.join()
        done.set()
        prober.join()
    return out, monitor


def describe(latencies: list[float]) -> str:
    """Median and max of ``latencies`` in ms, with their count."""
    if not latencies:
        return "no probe completed"
    median = statistics.median(latencies) * 1000
    return f"median {median:.0f} ms, max {max(latencies) * 1000:.0f} ms ({len(latencies)} probes)"


def main() -> None:
    """Set the server up, measure idle, run the burst, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 clients, 1,000 messages")
    parser.add_argument("--clients", type=int, help="fetching clients (default 20)")
    parser.add_argument("--messages", type=int, help="messages in INBOX (default 5,000)")
    parser.add_argument("--size", type=int, default=2048, help="octets per message (2,048)")
    parser.add_argument("--rate", type=float, default=2.0, help="MB/s each client reads (2)")
    parser.add_argument("--items", default="(UID FLAGS BODY.PEEK[])", help="the FETCH items")
    parser.add_argument("--probe-interval", type=float, default=0.5, help="seconds (0.5)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    args.clients = args.clients or (5 if args.quick else 20)
    args.messages = args.messages or (1000 if args.quick else 5000)
    print(machine())
    print(load_note())
    with work_directory("bench-fetch-burst-", args.keep) as work:
        data = work / "data"
        prepare_accounts(data)
        with Server(data) as server:
            with contextlib.closing(Connection(server.port)) as conn:
                conn.command(b"l", login_line(OFF))  # creates the account's mailboxes
            messages = (small_message(i, args.size) for i in range(args.messages))
            drop_messages(data, OFF, "INBOX", messages)
            idle = [probe(server.port) for _ in range(5)]  # also numbers the new messages
            before = rss(server.pid)
            began = time.perf_counter()
            burst, monitor = run_burst(server, args)
            took = time.perf_counter() - began
            time.sleep(2.0)
            after = rss(server.pid)
    print(
        f"{args.clients} clients x FETCH 1:* {args.items} of {args.messages} x {args.size} octets,"
        f" each read at {args.rate:g} MB/s"
    )
    print(f"  burst took {took:.1f} s; {burst.fetched_octets / MB:.0f} MB read by the clients")
    print(
        f"  server RSS: idle {before / MB:.0f} MB; all clients logged in and SELECTed"
        f" {monitor.start_rss / MB:.0f} MB; peak during the FETCHes {monitor.peak_rss / MB:.0f} MB"
        f" (+{monitor.growth / MB:.0f} MB); {after / MB:.0f} MB 2 s after the clients left"
    )
    print(f"  LOGIN+SELECT+LOGOUT idle:   {describe(idle)}")
    print(f"  LOGIN+SELECT+LOGOUT during: {describe(burst.probes)}")
    for error in burst.errors[:5]:
        print("  error:", error)
    print(load_note())


if __name__ == "__main__":
    main()
