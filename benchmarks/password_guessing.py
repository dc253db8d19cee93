"""Parallel password guessing against the real server: guesses a second, the owner's wait (issue 8).

    python benchmarks/password_guessing.py              # 2 scenarios x 30 s: about 70 s
    python benchmarks/password_guessing.py --seconds 10 # a shorter run

Issue 8 item 4: failed logins were slowed per connection only; 40 parallel
connections made 8.2 wrong guesses a second and the right password then
logged in at once.  Done when "40 parallel guessers get fewer than 1 guess a
second in total".

Starts ``twistd -n transcoder`` on a free loopback port with a fresh data
directory for each scenario, and runs ``--guessers`` threads (default 40),
each an imaplib client that sends wrong LOGINs one after the other --
another as soon as one is answered, a new connection when the server says
BYE -- for ``--seconds``:

* ``one address``: every guesser connects from 127.0.0.1, all against one
  account (the issue's replay);
* ``many addresses``: guesser *i* connects from 127.0.0.(i+2), all against
  one account (a botnet on one account).

A guess is a ``NO [AUTHENTICATIONFAILED]`` answer (a credential check that
ran); ``NO [UNAVAILABLE]`` answers are attempts the throttle refused
unchecked.  The server's log counts its own ``authentication failed`` lines
as a cross-check.  The account's owner logs in with the right password
halfway through the attack from a new address and from the address they
had logged in from before it, and after the attack from the attacked
address; the waits are printed.  A script to run by hand, not a timed test.
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import PASSWORD, Server, add_account, load_note, machine, work_directory

VICTIM = "victim@example.org"
#: The owner's usual address (logged in from before the attack) and its label.
KNOWN = "127.0.0.251"
KNOWN_DURING = "known address, during"


class SourceIMAP4(imaplib.IMAP4):
    """imaplib connecting from a chosen loopback source address."""

    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=300)

    def _create_socket(self, timeout: Any) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )


@dataclass
class Tally:
    """Answers counted across the guesser threads (inside the measured window only)."""

    stop_at: float
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    open: set[SourceIMAP4] = field(default_factory=set)

    def count(self, what: str) -> None:
        """Count one answer if it came before the end of the window."""
        if time.monotonic() <= self.stop_at:
            with self.lock:
                self.counts[what] += 1

    def running(self) -> bool:
        """Whether the window is still open."""
        return time.monotonic() < self.stop_at


def guess(imap: SourceIMAP4, tally: Tally, n: int) -> None:
    """One wrong LOGIN; count its answer.  Raises abort/OSError when the connection ends."""
    try:
        imap.login(VICTIM, f"wrong guess {n}")
        tally.count("logged in (!)")
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as e:
        text = str(e)
        if "AUTHENTICATIONFAILED" in text:
            tally.count("guesses")
        elif "UNAVAILABLE" in text:
            tally.count("refused unchecked")
        else:
            tally.count("other answers")


def guesser(port: int, source: str, tally: Tally) -> None:
    """Guess until the window closes, reconnecting after BYE."""
    n = 0
    while tally.running():
        try:
            imap = SourceIMAP4(port, source)
        except OSError:
            tally.count("connect failures")
            time.sleep(0.2)
            continue
        if not imap.welcome.startswith(b"* OK"):
            tally.count("connections refused")
        with tally.lock:
            tally.open.add(imap)
        try:
            while tally.running():
                n += 1
                guess(imap, tally, n)
        except (imaplib.IMAP4.abort, OSError):
            tally.count("connections closed by the server")
        finally:
            with tally.lock:
                tally.open.discard(imap)
            with contextlib.suppress(Exception):
                imap.sock.close()


def owner_wait(port: int, source: str, give_up: float = 120.0) -> tuple[float | None, int]:
    """Seconds until the right password from ``source`` logged in (None: gave up), and refusals.

    A refusal (``NO [UNAVAILABLE]``: too many attempts wait on the key) is
    retried a second later, as a mail client retries.
    """
    started, refusals = time.monotonic(), 0
    imap = SourceIMAP4(port, source)
    try:
        while time.monotonic() - started < give_up:
            try:
                imap.login(VICTIM, PASSWORD)
                return time.monotonic() - started, refusals
            except imaplib.IMAP4.abort:
                imap = SourceIMAP4(port, source)
            except imaplib.IMAP4.error as e:
                if "UNAVAILABLE" not in str(e):
                    raise
                refusals += 1
            time.sleep(1)
        return None, refusals
    finally:
        with contextlib.suppress(Exception):
            imap.logout()


def owners_during(port: int, at: float, waits: dict[str, Any]) -> list[threading.Thread]:
    """Threads that log the owner in at ``at`` (monotonic) from a new and from a known address."""

    def owner(where: str, source: str) -> None:
        time.sleep(max(0.0, at - time.monotonic()))
        waits[where] = owner_wait(port, source)

    threads = [
        threading.Thread(target=owner, args=(w, s), daemon=True)
        for w, s in (("new address, during", "127.0.0.250"), (KNOWN_DURING, KNOWN))
    ]
    for t in threads:
        t.start()
    return threads


def scenario(work: Path, name: str, sources: list[str], seconds: float) -> dict[str, Any]:
    """Run one scenario on a fresh server; its figures."""
    data = work / name.replace(" ", "-") / "data"
    add_account(data, VICTIM)
    with Server(data) as server:
        owner_wait(server.port, KNOWN)  # the owner's usual address, before the attack
        tally = Tally(stop_at=time.monotonic() + seconds)
        threads = [
            threading.Thread(target=guesser, args=(server.port, s, tally), daemon=True)
            for s in sources
        ]
        for t in threads:
            t.start()
        waits: dict[str, Any] = {}
        owners = owners_during(server.port, tally.stop_at - seconds / 2, waits)
        time.sleep(max(0.0, tally.stop_at - time.monotonic()))
        with tally.lock:  # unblock guessers still waiting for an answer
            for imap in list(tally.open):
                with contextlib.suppress(OSError):
                    imap.sock.shutdown(socket.SHUT_RDWR)
        for t in threads + owners:
            t.join(timeout=130)
        logged = server.log.read_text().count("authentication failed")
        waits["attacked address, after"] = owner_wait(server.port, sources[0])
    return {"counts": tally.counts, "logged": logged, "waits": waits, "seconds": seconds}


def report(name: str, guessers: int, figures: dict[str, Any]) -> None:
    """Print one scenario's figures."""
    counts, seconds = figures["counts"], figures["seconds"]
    print(f"\n{name}: {guessers} parallel guessers for {seconds:.0f} s against {VICTIM}")
    print(f"  guesses (checks answered NO [AUTHENTICATIONFAILED]): {counts['guesses']}")
    print(f"  guesses a second: {counts['guesses'] / seconds:.3f}")
    print(f"  server log 'authentication failed' lines: {figures['logged']}")
    for what, n in sorted(counts.items()):
        if what != "guesses":
            print(f"  {what}: {n}")
    print("  the owner's right password (NO [UNAVAILABLE] retried every second):")
    for where, (wait, refusals) in sorted(figures["waits"].items()):
        outcome = "gave up after 120 s" if wait is None else f"logged in after {wait:.2f} s"
        print(f"    from the {where}: {outcome}, {refusals} refusals before")


def main() -> None:
    """Run the scenarios and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each scenario")
    parser.add_argument("--guessers", type=int, default=40, help="parallel guessing clients")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    print(machine())
    print(load_note())
    one = ["127.0.0.1"] * args.guessers
    many = [f"127.0.0.{i + 2}" for i in range(args.guessers)]
    with work_directory("password-guessing-", args.keep) as work:
        for name, sources in (("one address", one), ("many addresses", many)):
            report(name, args.guessers, scenario(work, name, sources, args.seconds))


if __name__ == "__main__":
    main()
