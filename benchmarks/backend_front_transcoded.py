"""The front before Dovecot (issue 11, benchmark item 2): MODE ALWAYS FETCH, front / built-in store.

Starts an unprivileged Dovecot holding :data:`~common.ENCRYPTED`'s mail, a
front before it (``twistd -n transcoder --backend imap://...``) and a
built-in store server (no ``--backend``) holding the same mail; on both the
account gets an RSA-3072 certificate and ``MODE ALWAYS FORMAT SMIME``.  In
the same rounds it measures, as ``benchmarks/fetch_smime.py`` does for the
built-in store ("Stateless views" figures):

1. ``FETCH 1:N BODY.PEEK[]`` of ``--messages`` 4 KB messages: cold (a fresh
   mailbox each round, no view cached) and cached (the same FETCH again);
2. ``FETCH 1 BODY.PEEK[]`` of one ``--large-mb`` message, cold and cached.

and prints each time and the ratio front / built-in store (issue target:
within 1.2x).  The large view fetched through the front is opened with
``openssl cms -decrypt`` and compared with the stored message.  The load
average is printed with the figures: other processes make them noisy.

    python benchmarks/backend_front_transcoded.py [--messages 1000] [--large-mb 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cms_encode import make_message
from common import (
    ENCRYPTED,
    PASSWORD,
    Server,
    add_account,
    check_ok,
    drop_messages,
    load_note,
    login,
    machine,
    make_smime_certificate,
    provision,
    small_message,
)
from fetch_smime import openssl_decrypts

from transcoder.backend.dovecot import DovecotInstance

Filler = Callable[[str, list[bytes | Path]], None]


@contextlib.contextmanager
def fresh_mailbox(
    server: Server, name: str, messages: list[bytes | Path], fill: Filler
) -> Iterator[imaplib.IMAP4]:
    """A new mailbox of ENCRYPTED holding ``messages`` (by ``fill``), selected; deleted after."""
    imap = login(server, ENCRYPTED)
    check_ok(imap.create(name), f"CREATE {name}")
    fill(name, messages)
    check_ok(imap.select(name), f"SELECT {name}")
    try:
        yield imap
    finally:
        imap.close()
        check_ok(imap.delete(name), f"DELETE {name}")
        imap.logout()


def timed(imap: imaplib.IMAP4, message_set: str) -> tuple[float, list[object]]:
    """Seconds of one ``FETCH message_set BODY.PEEK[]``, and imaplib's data."""
    started = time.perf_counter()
    data = check_ok(imap.fetch(message_set, "(BODY.PEEK[])"), f"FETCH {message_set}")
    return time.perf_counter() - started, data


def openssl_opens(data: list[object], stored: Path, cert: Path, key: Path, work: Path) -> bool:
    """Whether ``openssl cms -decrypt`` opens the fetched view and it holds the stored body."""
    view = next(item[1] for item in data if isinstance(item, tuple))
    (work / "view.eml").write_bytes(view)  # type: ignore[arg-type]
    opened = openssl_decrypts(work / "view.eml", stored, cert, key, work)
    (work / "view.eml").unlink()
    return opened


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--large-mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    if not DovecotInstance.installed():
        sys.exit("dovecot is not installed (Debian: apt-get install dovecot-imapd)")
    root = Path(tempfile.mkdtemp(prefix="transcoder-bench-front-"))
    try:
        run(root, options.messages, options.large_mb, options.runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, count: int, large_mb: int, runs: int) -> None:
    """Start the three servers, measure ``runs`` rounds, print."""
    cert, key = make_smime_certificate(root, ENCRYPTED, 3072)
    big = root / "large.eml"
    make_message(big, large_mb * 1_000_000)
    smalls: list[bytes | Path] = [small_message(i) for i in range(count)]
    dovecot = DovecotInstance(root / "dovecot", {ENCRYPTED: PASSWORD})
    dovecot.prepare()
    front = Server(root / "front", ("--backend", f"imap://127.0.0.1:{dovecot.port}"))
    builtin = Server(root / "builtin")
    add_account(builtin.data, ENCRYPTED)

    def into_dovecot(name: str, messages: list[bytes | Path]) -> None:
        for n, m in enumerate(messages):
            octets = m.read_bytes() if isinstance(m, Path) else m
            dovecot.drop(ENCRYPTED, octets, name=f"{1_700_000_000 + n}.M{n}P1.b", mailbox=name)

    def into_maildir(name: str, messages: list[bytes | Path]) -> None:
        drop_messages(builtin.data, ENCRYPTED, name, messages)

    servers = {"front": (front, into_dovecot), "built-in store": (builtin, into_maildir)}
    times: dict[str, dict[str, list[float]]] = {name: {} for name in servers}
    opened = True
    print(f"{machine()}\n{load_note()}; Dovecot {DovecotInstance.version()}")
    with dovecot, front, builtin:
        for server, _ in servers.values():
            imap = login(server, ENCRYPTED)
            provision(imap, cert.read_bytes(), "smime")
            imap.logout()
        for round_ in range(runs):
            for name, (server, fill) in servers.items():
                got = times[name]
                with fresh_mailbox(server, f"Small{round_}", smalls, fill) as imap:
                    got.setdefault("small cold", []).append(timed(imap, f"1:{count}")[0])
                    got.setdefault("small cached", []).append(timed(imap, f"1:{count}")[0])
                with fresh_mailbox(server, f"Large{round_}", [big], fill) as imap:
                    seconds, data = timed(imap, "1")
                    got.setdefault("large cold", []).append(seconds)
                    got.setdefault("large cached", []).append(timed(imap, "1")[0])
                if round_ == 0 and name == "front":
                    opened = openssl_opens(data, big, cert, key, root)
    report(times, count, large_mb, runs, opened)


def report(
    times: dict[str, dict[str, list[float]]], count: int, large_mb: int, runs: int, opened: bool
) -> None:
    """Best times, and front / built-in store for each."""
    print(f"\nMODE ALWAYS, S/MIME (RSA-3072, AES-256-CBC); best of {runs}")
    labels = {
        "small cold": f"FETCH 1:{count} BODY.PEEK[], 4 KB each, cold",
        "small cached": f"FETCH 1:{count} BODY.PEEK[], 4 KB each, cached",
        "large cold": f"FETCH 1 BODY.PEEK[], {large_mb} MB, cold",
        "large cached": f"FETCH 1 BODY.PEEK[], {large_mb} MB, cached",
    }
    for item, label in labels.items():
        front, builtin = min(times["front"][item]), min(times["built-in store"][item])
        ratio = front / builtin
        met = "met" if ratio <= 1.2 else "MISSED"
        print(
            f"   {label:48} front {front:7.3f} s  built-in {builtin:7.3f} s"
            f"  front / built-in {ratio:5.2f} (target <= 1.2: {met})"
        )
    print("   openssl cms -decrypt opens the large view fetched through the front:", opened)
    print(f"   {load_note()}")


if __name__ == "__main__":
    main()
