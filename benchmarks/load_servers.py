"""The servers the load generator drives: ours and Dovecot, with the same accounts and mail.

* :func:`prepare_ours`: a fresh data directory -- accounts through
  ``transcoder-admin`` (run in-process: ``transcoder.admin.main``), an
  ``Archive`` mailbox, ``messages`` small messages in each INBOX dropped as
  an MDA does; with transcoding, an RSA-2048 S/MIME certificate per account
  stored with ``transcoder-admin key import`` and policy ``MODE ALWAYS
  FORMAT SMIME``.  :func:`our_server` gives the :class:`common.Server` to
  start on it.
* :class:`Dovecot`: an unprivileged Dovecot instance of its own
  (:class:`transcoder.backend.dovecot.DovecotInstance`, which the backend
  tests share: ``dovecot -F -c CONFIG``, stopped by its PID, on a free
  loopback port, everything in one directory) holding the same accounts and
  messages.  No SSL, plaintext LOGIN allowed.
* :func:`tree_memory`: RSS and PSS summed over a process and its
  descendants (Dovecot runs one process per session).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable
from pathlib import Path

from common import Server, drop_messages, make_smime_certificate, small_message
from load_mix import Account

from transcoder import admin
from transcoder.backend.dovecot import DovecotInstance
from transcoder.store.maildir import MaildirStore

ARCHIVE_MESSAGES = 10


def accounts_for(clients: int, per_account: int, password: str) -> list[Account]:
    """Enough accounts for ``clients`` clients, ``per_account`` sharing each."""
    count = max(1, -(-clients // per_account))
    return [Account(f"load{i}@example.org", password) for i in range(count)]


def _admin(data: Path, *args: str, stdin: str = "") -> None:
    out = io.StringIO()
    if admin.main(["--data", str(data), *args], stdin=io.StringIO(stdin), stdout=out) != 0:
        raise RuntimeError(f"transcoder-admin {' '.join(args)} failed")


def prepare_ours(
    data: Path, accounts: Iterable[Account], messages: int, transcoding: bool, scratch: Path
) -> None:
    """Accounts, mailboxes, mail and (with ``transcoding``) keys and policy in ``data``."""
    from twisted.internet import reactor

    store = MaildirStore(data / "mail", reactor)
    for account in accounts:
        _admin(data, "user", "add", account.address, stdin=account.password + "\n")
        store.account(account.address).create("Archive")
        drop_messages(data, account.address, "INBOX", (small_message(i) for i in range(messages)))
        mail = (small_message(i) for i in range(ARCHIVE_MESSAGES))
        drop_messages(data, account.address, "Archive", mail)
        if transcoding:
            directory = scratch / account.address
            directory.mkdir(parents=True, exist_ok=True)
            cert, _ = make_smime_certificate(directory, account.address, 2048)
            _admin(data, "key", "import", account.address, str(cert))
            _admin(data, "policy", account.address, "--mode", "always", "--format", "smime")


def our_server(data: Path, clients: int) -> Server:
    """``twistd -n transcoder`` on ``data``, taking ``clients`` connections from 127.0.0.1."""
    room = str(clients + 10)
    limits = ("--max-connections", room, "--max-connections-per-address", room)
    return Server(data, extra_args=limits)


class Dovecot(DovecotInstance):
    """:class:`transcoder.backend.dovecot.DovecotInstance` holding the load's accounts and mail."""

    def prepare(  # type: ignore[override]  # the load's accounts, not mailbox names
        self, accounts: Iterable[Account], messages: int, clients: int
    ) -> None:
        """Configuration, passwd-file and Maildirs for ``accounts``: INBOX and ``Archive``."""
        accounts = list(accounts)
        self.users = {account.address: account.password for account in accounts}
        self.client_limit = clients
        super().prepare(["Archive"])
        for account in accounts:
            for mailbox, count in (("INBOX", messages), ("Archive", ARCHIVE_MESSAGES)):
                for i in range(count):
                    name = f"{1_700_000_000 + i}.M{i}P1.load"
                    self.drop(account.address, small_message(i), mailbox, name)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with contextlib.suppress(OSError):
                    todo += [
                        int(k)
                        for k in Path(f"/proc/{current}/task/{task}/children").read_text().split()
                    ]
    return found


def _kib(path: str, field: str) -> int:
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def tree_rss(pid: int) -> int:
    """The summed RSS of ``pid`` and its descendants, in octets."""
    return sum(_kib(f"/proc/{p}/status", "VmRSS") for p in descendants(pid)) * 1024


def tree_memory(pid: int) -> tuple[int, int, int]:
    """(processes, summed RSS, summed PSS) of ``pid`` and its descendants, in octets."""
    pids = descendants(pid)
    rss = sum(_kib(f"/proc/{p}/status", "VmRSS") for p in pids)
    pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss") for p in pids)
    return len(pids), rss * 1024, pss * 1024
