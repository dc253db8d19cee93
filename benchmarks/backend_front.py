"""The front before Dovecot (issue 11): policy-OFF FETCH through the front / straight from Dovecot.

Starts an unprivileged Dovecot (:class:`transcoder.backend.dovecot.DovecotInstance`)
with one account, drops ``--messages`` small messages (4 KB) and one large
message (``--large-mb``, default 100 MB) into it, starts ``twistd -n
transcoder --backend imap://...`` before it, and measures in the same run:

1. ``UID FETCH 1:N BODY.PEEK[]`` of the small messages, through the front and
   directly from Dovecot (best of ``--repeat`` runs, each on a fresh
   connection): messages/s and the ratio front / Dovecot (issue target >= 0.7);
2. ``UID FETCH n BODY.PEEK[]`` of the large message the same way: MB/s and
   the ratio;
3. the front's peak RSS growth over its idle RSS while it serves the large
   message (VmHWM - VmRSS before; issue target <= 64 MB).

The same FETCHes from the built-in Maildir store (``twistd -n transcoder``
without ``--backend``) are printed too: the front's cost beyond the server's own.

Every FETCH's octets are checked against what was dropped.  The load average
is printed with the figures: other processes on the machine make them noisy.

With ``--baseline DIR`` (another checkout of the project, e.g. ``git archive
HEAD`` unpacked before a change) a second front runs that checkout's code
before the same Dovecot, measured in the same rounds: before / after under
the same load.

    python benchmarks/backend_front.py [--messages 1000] [--large-mb 100] [--repeat 3]
                                       [--baseline DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import (
    PASSWORD,
    START_TIMEOUT,
    Server,
    add_account,
    drop_messages,
    load_note,
    machine,
    small_message,
    wait_for_greeting,
)

from transcoder.backend.dovecot import DovecotInstance

USER = "front@example.org"


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
            raise RuntimeError(f"baseline front did not start (see {self.log})")


def _kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def session(port: int) -> imaplib.IMAP4:
    """A fresh connection, logged in, INBOX selected (not timed)."""
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=600)
    imap.login(USER, PASSWORD)
    imap.select("INBOX")
    return imap


def fetch_all(imap: imaplib.IMAP4, count: int) -> int:
    """``UID FETCH 1:count BODY.PEEK[]``; the octets received (first and last checked)."""
    typ, data = imap.uid("FETCH", f"1:{count}", "(BODY.PEEK[])")
    assert typ == "OK", data
    bodies = [item[1] for item in data if isinstance(item, tuple)]
    assert len(bodies) == count, len(bodies)
    assert bodies[0] == small_message(0) and bodies[-1] == small_message(count - 1)
    return sum(len(b) for b in bodies)


def fetch_large(imap: imaplib.IMAP4, uid: int, expected: int) -> int:
    """``UID FETCH uid BODY.PEEK[]`` of the large message; its size (checked)."""
    typ, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
    assert typ == "OK", data
    body = data[0][1]
    assert len(body) == expected and body.startswith(b"Subject: large"), len(body)
    return len(body)


def best(repeat: int, port: int, run: Callable[[imaplib.IMAP4], int]) -> float:
    """The shortest of ``repeat`` timed runs on fresh sessions, in seconds (FETCH only)."""
    times = []
    for _ in range(repeat):
        imap = session(port)
        try:
            started = time.perf_counter()
            run(imap)
            times.append(time.perf_counter() - started)
        finally:
            imap.logout()
    return min(times)


def large_message(size: int) -> bytes:
    """A ``size``-octet message of 76-character base64-like lines."""
    line = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ABCDEFGHIJKL\r\n"
    header = b"Subject: large\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
    header += b"Content-Transfer-Encoding: base64\r\n\r\n"
    return header + line * ((size - len(header)) // len(line))


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--large-mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout: its front measured too")
    options = parser.parse_args()
    if not DovecotInstance.installed():
        sys.exit("dovecot is not installed (Debian: apt-get install dovecot-imapd)")
    root = Path(tempfile.mkdtemp(prefix="transcoder-bench-front-"))
    dovecot = DovecotInstance(root / "dovecot", {USER: PASSWORD})
    dovecot.prepare()
    for i in range(options.messages):
        dovecot.drop(USER, small_message(i), name=f"{1_700_000_000 + i}.M{i}P1.bench")
    large = large_message(options.large_mb * 1_000_000)
    dovecot.drop(USER, large, name=f"{1_800_000_000}.M0P1.large")
    large_uid = options.messages + 1
    print(f"{machine()}\n{load_note()}; Dovecot {DovecotInstance.version()}")
    backend = ("--backend", f"imap://127.0.0.1:{dovecot.port}")
    front = Server(root / "data", backend)
    # The same mail in the built-in Maildir store: what the front costs beyond the server.
    builtin = Server(root / "builtin")
    add_account(builtin.data, USER)
    drop_messages(builtin.data, USER, "INBOX", (small_message(i) for i in range(options.messages)))
    drop_messages(builtin.data, USER, "INBOX", [large])
    base: Server | None = None
    if options.baseline is not None:
        base = CheckoutServer(root / "base", backend)
        base.checkout = options.baseline.resolve()
    try:
        with contextlib.ExitStack() as stack:
            for server in (dovecot, front, builtin, base):
                if server is not None:
                    stack.enter_context(server)  # type: ignore[arg-type]
            ports = {"Dovecot": dovecot.port, "front": front.port, "built-in store": builtin.port}
            if base is not None:
                ports["front, baseline"] = base.port
            count = options.messages
            for port in ports.values():  # UIDs assigned, caches warm
                best(1, port, lambda c: fetch_all(c, count))
            octets = fetch_all(warm := session(front.port), count)
            warm.logout()
            times = {
                name: best(options.repeat, port, lambda c: fetch_all(c, count))
                for name, port in ports.items()
            }
            print(
                f"\n1. {count} x {octets // count} octets, "
                f"UID FETCH 1:{count} BODY.PEEK[] (best of {options.repeat})"
            )
            for name, seconds in times.items():
                print(f"   {name:16} {seconds:7.3f} s  {count / seconds:8.0f} messages/s")
            for name in ("front", "front, baseline"):
                if name in times:
                    ratio = times["Dovecot"] / times[name]
                    print(f"   {name} / Dovecot throughput: {ratio:.2f} (target >= 0.7)")
            print(
                "   front / built-in store throughput:",
                f"{times['built-in store'] / times['front']:.2f}",
            )
            print(f"   {load_note()}")

            size = len(large)
            for port in ports.values():
                best(1, port, lambda c: fetch_large(c, large_uid, size))
            times = {}
            growth = {}
            for name, port in ports.items():
                pid = {"front": front.pid}.get(
                    name, base.pid if base and name == "front, baseline" else None
                )
                before = _kib(pid, "VmRSS") if pid else 0
                times[name] = best(options.repeat, port, lambda c: fetch_large(c, large_uid, size))
                if pid:
                    growth[name] = (before, _kib(pid, "VmHWM"))
            print(
                f"\n2. one {size / 1e6:.0f} MB message, UID FETCH BODY.PEEK[]",
                f"(best of {options.repeat})",
            )
            for name, seconds in times.items():
                print(f"   {name:16} {seconds:7.3f} s  {size / seconds / 1e6:8.1f} MB/s")
            for name in ("front", "front, baseline"):
                if name in times:
                    ratio = times["Dovecot"] / times[name]
                    print(f"   {name} / Dovecot throughput: {ratio:.2f} (target >= 0.7)")
            print(
                "   front / built-in store throughput:",
                f"{times['built-in store'] / times['front']:.2f}",
            )
            print(f"   {load_note()}")
            for name, (before, peak) in growth.items():
                print(
                    f"\n3. {name} RSS {before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB:"
                    f" growth {(peak - before) / 1024:.0f} MiB (target <= 64 MB)"
                )
            print(f"\n{load_note()} (after)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        os.sync()


if __name__ == "__main__":
    main()
