"""Fire fuzzed IMAP commands at a real server and count what comes back (issue 8).

Issue 8's done-criterion: "50,000 fuzzed commands give no SERVERBUG and no
traceback".  This script starts ``twistd -n transcoder`` on a fresh data
directory (:class:`common.Server`), with two accounts -- one served as
stored, one with an S/MIME key and ``XKEY POLICY MODE ALWAYS`` so FETCH
transcodes -- and a few messages, then opens connection after connection
(``--workers`` at a time) and sends each up to ``--per-connection``
commands from :class:`tests.security.imap_grammar.CommandFuzzer`: most
connections log in first (and most of those SELECT INBOX), some stay
unauthenticated and connect from a random 127.x.y.z address (so the
failed-login throttle, which counts per address, does not slow the
others); some send their commands pipelined in batches of ten.  The client
waits for each command's answer, sending a literal's octets only after a
``+`` (RFC 3501 section 4.3).

At the end it prints: commands sent; tagged answers by status; untagged
``BAD`` for invalid tags; commands left without an answer; ``SERVERBUG``
answers (and for which commands); connections closed by the server, by the
reason in its ``BYE``, and dropped otherwise; and, from the server's log,
tracebacks and critical/error events.  The exit status is 1 when any
``SERVERBUG``, traceback or unanswered command was seen.

    .venv/bin/python benchmarks/fuzz_commands.py                # 50,000 commands
    .venv/bin/python benchmarks/fuzz_commands.py --quick        # 2,000: a smoke run
"""

from __future__ import annotations

import argparse
import itertools
import random
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from common import (
    ENCRYPTED,
    OFF,
    Server,
    drop_messages,
    load_note,
    login,
    machine,
    make_smime_certificate,
    prepare_accounts,
    provision,
    small_message,
    work_directory,
)
from fuzz_client import (
    Closed,
    Connection,
    Tally,
    Wire,
    expected,
    log_in,
    open_connection,
    pipelinable,
)

from tests.security.imap_grammar import CommandFuzzer

MESSAGES = (
    small_message(1, 2000),
    b"Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\none\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\n\r\ninner\r\n--b--\r\n",
    b"Subject: =?UTF-8?Q?=C3=9Cber?=\nContent-Type: text/plain; charset=utf-8\n\n\xc3\xbc\n",
)


@dataclass
class Fuzzing:
    """The fuzzing run: where the server is, the seed, the shared budget, where transcripts go."""

    port: int
    seed: int
    per_connection: int
    budget: Budget
    transcripts: Path | None

    def connection(self, index: int) -> Tally:
        """One connection's worth of fuzzing; its tally."""
        rng = random.Random(self.seed * 1_000_003 + index)
        roll = rng.random()
        state = "unauth" if roll < 0.1 else ("select" if roll < 0.75 else "auth")
        account = ENCRYPTED if rng.random() < 0.2 else OFF
        tally = Tally()
        conn: Connection | None = None
        taken = 0
        try:
            wire = open_connection(self.port, rng, unauth=state == "unauth")
            if state != "unauth":
                log_in(wire, account, select=state == "select")
            conn = Connection(wire, CommandFuzzer(rng, big=270_000), state)
            taken = self.budget.take(self.per_connection)
            self.fire(conn, taken, pipelined=rng.random() < 0.2)
            wire.send(b"zz LOGOUT\r\n")
            reason = "by the client (LOGOUT)"
        except Closed as why:
            reason = why.args[0] if isinstance(why.args[0], str) else repr(why.args[0])[:70]
        except OSError as e:
            reason = f"socket error {e.__class__.__name__}"
        tally.closed[reason] += 1
        self.budget.give_back(taken - (conn.tally.counts["commands sent"] if conn else 0))
        if conn is not None:
            conn.wire.sock.close()
            tally.add(conn.tally)
            if not expected(reason):
                tally.samples.setdefault(f"last commands before {reason}", conn.last)
                self.keep_transcript(index, reason, conn.wire)
        return tally

    @staticmethod
    def fire(conn: Connection, count: int, pipelined: bool) -> None:
        """Send ``count`` fuzzed commands, one by one or ten at a time."""
        numbers = itertools.count(1)
        while count > 0:
            if pipelined:
                batch = [conn.fuzzer.command(next(numbers), conn.state) for _ in range(10)]
                batch = [c for c in batch if pipelinable(c)][:count]
                count -= max(1, len(batch))
                conn.run_pipelined(batch)
            else:
                count -= 1
                conn.run(conn.fuzzer.command(next(numbers), conn.state))

    def keep_transcript(self, index: int, reason: str, wire: Wire) -> None:
        """Write what went each way on a connection that ended unexpectedly."""
        if self.transcripts is None:
            return
        self.transcripts.mkdir(exist_ok=True)
        path = self.transcripts / f"connection-{index}.txt"
        path.write_bytes(reason.encode() + b"\n" + b"\n".join(wire.transcript))


class Budget:
    """The commands still to send, shared by the workers."""

    def __init__(self, total: int, deadline: float) -> None:
        self.left = total
        self.deadline = deadline
        self.lock = threading.Lock()

    def take(self, wanted: int) -> int:
        """Up to ``wanted`` commands from what is left (none once the time is up)."""
        with self.lock:
            if time.monotonic() > self.deadline:
                return 0
            got = min(wanted, self.left)
            self.left -= got
            return got

    def done(self) -> bool:
        """Whether every command has been handed out (or the time is up)."""
        with self.lock:
            return self.left <= 0 or time.monotonic() > self.deadline

    def give_back(self, unused: int) -> None:
        """Return commands a connection could not send (it was closed early)."""
        with self.lock:
            self.left += unused


def fuzz(port: int, args: argparse.Namespace, transcripts: Path | None) -> tuple[Tally, float]:
    """Run the workers until the budget is spent; the tally and the seconds it took."""
    tally = Tally()
    start = time.monotonic()
    budget = Budget(args.commands, start + args.max_seconds)
    run = Fuzzing(port, args.seed, args.per_connection, budget, transcripts)
    indices = itertools.count()

    def worker() -> None:
        while not budget.done():
            tally.add(run.connection(next(indices)))

    threads = [threading.Thread(target=worker) for _ in range(args.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally, time.monotonic() - start


def prepare(server: Server, scratch: Path) -> None:
    """Both accounts' INBOX gets MESSAGES; ENCRYPTED gets an S/MIME key and MODE ALWAYS."""
    for account in (ENCRYPTED, OFF):
        drop_messages(server.data, account, "INBOX", MESSAGES)
    cert, _ = make_smime_certificate(scratch, ENCRYPTED, 2048)
    imap = login(server, ENCRYPTED)
    provision(imap, cert.read_bytes(), "smime")
    imap.logout()


def server_log_findings(log: Path) -> Counter[str]:
    """Tracebacks, critical and error events and SERVERBUG mentions in the server's log."""
    found: Counter[str] = Counter()
    text = log.read_text(errors="replace") if log.exists() else ""
    found["tracebacks"] = text.count("Traceback (most recent call last)")
    found["critical events"] = len(re.findall(r"#critical\]", text))
    found["error events"] = len(re.findall(r"#error\]", text))
    found["SERVERBUG mentions"] = text.count("SERVERBUG")
    return found


def report(tally: Tally, seconds: float, findings: Counter[str]) -> bool:
    """Print the figures; True when nothing was wrong."""
    counts = tally.counts
    answered = (
        sum(v for k, v in counts.items() if k.startswith("tagged "))
        + counts["untagged BAD for an invalid tag"]
    )
    print(f"\ncommands sent: {counts['commands sent']} in {seconds:.0f} s", end=" ")
    print(f"({counts['commands sent pipelined']} pipelined)")
    for key in (
        "tagged OK",
        "tagged NO",
        "tagged BAD",
        "untagged BAD for an invalid tag",
        "empty lines (nothing to answer)",
    ):
        print(f"  {key}: {counts[key]}")
    print(f"  answers in all: {answered}")
    for key in ("continuation for an oversized literal", "unexpected continuation request"):
        print(f"  {key}: {counts[key]}")
    for key, count in sorted(counts.items()):
        if key.startswith(("left unanswered", "cut off")):
            print(f"  {key}: {count}")
    print(f"SERVERBUG answers: {sum(tally.serverbug.values())}", dict(tally.serverbug) or "")
    print(f"connections: {sum(tally.closed.values())}, ended:")
    for reason, count in tally.closed.most_common():
        print(f"  {count:6d}  {reason}")
    print("slowest answers (seconds waited in all, slowest one):")
    for name, total in tally.seconds.most_common(6):
        took, wire = tally.slowest[name]
        print(f"  {name}: {total:.1f} s, slowest {took:.2f} s {wire[:80]!r}")
    print("server log:", ", ".join(f"{k} {v}" for k, v in findings.items()))
    for what, sample in tally.samples.items():
        print(f"  sample {what}: {sample!r}")
    wrong = [
        sum(tally.serverbug.values()),
        findings["tracebacks"],
        findings["critical events"],
        sum(v for k, v in counts.items() if k.startswith("left unanswered")),
        counts["continuation for an oversized literal"],
        counts["unexpected continuation request"],
    ]
    return not any(wrong)


def main() -> int:
    """Parse the options, run the server and the fuzzing, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=50_000)
    parser.add_argument("--per-connection", type=int, default=100)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument("--quick", action="store_true", help="2,000 commands")
    parser.add_argument("--keep", action="store_true", help="keep the data directory and log")
    args = parser.parse_args()
    if args.quick:
        args.commands = min(args.commands, 2_000)
    print(machine())
    print(load_note())
    with work_directory("fuzz-commands-", keep=args.keep) as scratch:
        data = scratch / "data"
        prepare_accounts(data)
        with Server(data) as server:
            prepare(server, scratch)
            transcripts = scratch / "transcripts" if args.keep else None
            tally, seconds = fuzz(server.port, args, transcripts)
            alive = server.process is not None and server.process.poll() is None
        print(load_note())
        print("server still running at the end:", alive)
        clean = report(tally, seconds, server_log_findings(server.log)) and alive
        if not clean:
            log = server.log.read_text(errors="replace") if server.log.exists() else ""
            print("\nfirst tracebacks in the server log:")
            for block in log.split("Traceback (most recent call last)")[1:4]:
                print("Traceback" + block[:1500])
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
