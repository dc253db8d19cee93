"""The servers the load generator drives: ours and Dovecot, with the same accounts and mail.

* :func:`prepare_ours`: a fresh data directory -- accounts through
  ``transcoder-admin`` (run in-process: ``transcoder.admin.main``), an
  ``Archive`` mailbox, ``messages`` small messages in each INBOX dropped as
  an MDA does; with transcoding, an RSA-2048 S/MIME certificate per account
  stored with ``transcoder-admin key import`` and policy ``MODE ALWAYS
  FORMAT SMIME``.  :func:`our_server` gives the :class:`common.Server` to
  start on it.
* :class:`Dovecot`: an unprivileged Dovecot instance of its own (``dovecot
  -F -c CONFIG``, stopped by its PID) on a free loopback port, everything in
  one directory: configuration, passwd-file (plaintext passwords, test
  accounts), Maildirs holding the same messages, base_dir, state_dir, log.
  No SSL, plaintext LOGIN allowed.  Run as root, it uses the Debian
  package's ``dovecot``/``dovenull`` users for its own processes and
  ``nobody`` for the mail (Dovecot refuses to access mail as root); run as
  anyone else, the current user for everything.
* :func:`tree_memory`: RSS and PSS summed over a process and its
  descendants (Dovecot runs one process per session).
"""

from __future__ import annotations

import contextlib
import grp
import io
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from common import (
    Server,
    drop_messages,
    free_port,
    make_smime_certificate,
    small_message,
    terminate,
    wait_for_greeting,
)
from load_mix import Account

from transcoder import admin
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


@dataclass
class Dovecot:
    """An unprivileged Dovecot instance in ``directory``; see the module docstring."""

    directory: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def installed() -> bool:
        """Whether a ``dovecot`` binary is on the PATH (or in /usr/sbin)."""
        return Dovecot.binary() is not None

    @staticmethod
    def binary() -> str | None:
        """The ``dovecot`` binary."""
        return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")

    @staticmethod
    def version() -> str:
        """``dovecot --version``."""
        done = subprocess.run([str(Dovecot.binary()), "--version"], capture_output=True, text=True)
        return done.stdout.strip()

    @property
    def pid(self) -> int:
        """The master process's id."""
        assert self.process is not None, "Dovecot not started"
        return self.process.pid

    def prepare(self, accounts: Iterable[Account], messages: int, clients: int) -> None:
        """Configuration, passwd-file and Maildirs for ``accounts``."""
        root = os.geteuid() == 0
        mail_user = pwd.getpwnam("nobody") if root else pwd.getpwuid(os.getuid())
        self.directory.mkdir(parents=True)
        if root:  # the mail processes run as nobody: let them reach their Maildirs
            for path in (self.directory.parent, self.directory):
                os.chmod(path, os.stat(path).st_mode | 0o011)
        lines = []
        for account in accounts:
            home = self.directory / "mail" / account.address
            self._maildirs(home / "Maildir", messages)
            lines.append(
                f"{account.address}:{{PLAIN}}{account.password}:{mail_user.pw_uid}:"
                f"{mail_user.pw_gid}::{home}::"
            )
        (self.directory / "passwd").write_text("\n".join(lines) + "\n")
        if root:
            for path in (self.directory / "mail").rglob("*"):
                os.chown(path, mail_user.pw_uid, mail_user.pw_gid)
            os.chown(self.directory / "mail", mail_user.pw_uid, mail_user.pw_gid)
        self.port = free_port()
        (self.directory / "dovecot.conf").write_text(self._config(root, clients))

    def _maildirs(self, maildir: Path, messages: int) -> None:
        """INBOX (the Maildir++ root) and ``.Archive``, mail dropped into ``new/``."""
        for path, count in ((maildir, messages), (maildir / ".Archive", ARCHIVE_MESSAGES)):
            for sub in ("tmp", "new", "cur"):
                (path / sub).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (path / "new" / f"{1_700_000_000 + i}.M{i}P1.load").write_bytes(small_message(i))

    def _config(self, root: bool, clients: int) -> str:
        me = pwd.getpwuid(os.getuid())
        group = grp.getgrgid(me.pw_gid).gr_name
        login_user, internal_user = ("dovenull", "dovecot") if root else (me.pw_name, me.pw_name)
        internal_group = "dovecot" if root else group
        d = self.directory
        limit = max(100, clients + 10)
        return f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_max_userip_connections = {limit}
default_process_limit = {limit}
default_client_limit = {4 * limit}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = {d}/passwd
}}
service imap-login {{
  {"" if root else "chroot ="}
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  {"" if root else "chroot ="}
}}
"""

    def start(self, timeout: float = 30.0) -> None:
        """``dovecot -F -c CONFIG``; wait until it greets on the port."""
        config = self.directory / "dovecot.conf"
        out = (self.directory / "stdout.log").open("wb")
        self.process = subprocess.Popen(
            [str(self.binary()), "-F", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
        if wait_for_greeting(self.process, self.port, timeout):
            return
        if self.process.poll() is not None:
            raise RuntimeError(f"dovecot exited: {self._logs()}")
        raise RuntimeError(f"dovecot did not greet within {timeout:.0f} s: {self._logs()}")

    def _logs(self) -> str:
        texts = []
        for name in ("stdout.log", "dovecot.log"):
            with contextlib.suppress(OSError):
                texts.append((self.directory / name).read_text()[-2000:])
        return "\n".join(texts)

    def stop(self) -> None:
        """SIGTERM to the master (it stops its children); SIGKILL if it lingers."""
        if self.process is not None:
            terminate(self.process)
        self.process = None

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
