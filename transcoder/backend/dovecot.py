"""An unprivileged Dovecot of its own: the real backend of the tests and benchmarks (issue 11).

:class:`DovecotInstance` runs Debian's ``dovecot`` (package ``dovecot-imapd``)
as ``dovecot -F -c CONFIG`` on a free loopback port, everything in one
directory: configuration, passwd-file (plaintext passwords: test accounts
only), one Maildir per account, base_dir, state_dir, log.  It is stopped by
its PID (SIGTERM to the master, which stops its children; SIGKILL if it
lingers), never by name.

* The personal namespace uses ``/`` as hierarchy delimiter (the front's,
  docs/design.md "Backend front"); the Maildir++ layout on disk is unchanged.
* Plain IMAP on ``port``; with ``tls=(cert, key)`` also implicit TLS on
  ``tls_port`` (for ``imaps://`` backends).
* Run as root, Dovecot's own processes use the Debian package's
  ``dovecot``/``dovenull`` users and the mail is accessed as ``nobody``
  (Dovecot refuses to access mail as root); run as anyone else, the current
  user does everything.

Mail is put in place as an MDA would (:meth:`DovecotInstance.drop`: a file in
the mailbox's ``new/``), so Dovecot assigns UIDs at its next look.

Not a test module: ``benchmarks/load_servers.py`` and ``tests/backend/`` share
it, and it imports nothing from Twisted.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from transcoder.cluster.process import stop_process

#: The Maildir of an account, below its home directory.
MAILDIR = "Maildir"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _greets(port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), timeout=1) as s,
    ):
        return s.recv(100).startswith(b"* OK")
    return False


@dataclass
class DovecotInstance:
    """An unprivileged Dovecot in ``directory`` (see the module docstring).

    ``users`` maps each address to its password.  ``client_limit`` sizes
    Dovecot's process and client limits (and connections per user and address).
    """

    directory: Path
    users: Mapping[str, str] = field(default_factory=dict)
    tls: tuple[Path, Path] | None = None
    client_limit: int = 100
    port: int = 0
    tls_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _prepared: bool = False

    # -- the binary ---------------------------------------------------------------

    @staticmethod
    def binary() -> str | None:
        """The ``dovecot`` binary on the PATH or in /usr/sbin, or None."""
        return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")

    @staticmethod
    def installed() -> bool:
        """Whether Dovecot is installed."""
        return DovecotInstance.binary() is not None

    @staticmethod
    def version() -> str:
        """``dovecot --version``."""
        done = subprocess.run(
            [str(DovecotInstance.binary()), "--version"], capture_output=True, text=True
        )
        return done.stdout.strip()

    # -- setting up ---------------------------------------------------------------

    @property
    def as_root(self) -> bool:
        """Whether this process is root (Dovecot then drops to its own users)."""
        return os.geteuid() == 0

    def _mail_user(self) -> pwd.struct_passwd:
        return pwd.getpwnam("nobody") if self.as_root else pwd.getpwuid(os.getuid())

    def home(self, address: str) -> Path:
        """The home directory of ``address``."""
        return self.directory / "mail" / address

    def maildir(self, address: str, mailbox: str = "INBOX") -> Path:
        """The Maildir++ directory of ``mailbox`` (``/`` separated) of ``address``."""
        root = self.home(address) / MAILDIR
        if mailbox.upper() == "INBOX":
            return root
        return root / ("." + mailbox.replace("/", "."))

    def prepare(self, mailboxes: Iterable[str] = ()) -> None:
        """Configuration, passwd-file and a Maildir per user with ``mailboxes`` besides INBOX."""
        mail_user = self._mail_user()
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.as_root:  # the mail processes run as nobody: let them reach their Maildirs
            for path in (self.directory, *self.directory.resolve().parents):
                mode = os.stat(path).st_mode
                if mode & 0o011 != 0o011:
                    os.chmod(path, mode | 0o011)
        lines = []
        for address, password in self.users.items():
            for name in ("INBOX", *mailboxes):
                for sub in ("tmp", "new", "cur"):
                    (self.maildir(address, name) / sub).mkdir(parents=True, exist_ok=True)
            lines.append(
                f"{address}:{{PLAIN}}{password}:{mail_user.pw_uid}:"
                f"{mail_user.pw_gid}::{self.home(address)}::"
            )
        (self.directory / "passwd").write_text("\n".join(lines) + "\n")
        # Plaintext passwords: readable by Dovecot's auth process (group dovecot as root) only.
        os.chmod(self.directory / "passwd", 0o640)
        if self.as_root:
            os.chown(self.directory / "passwd", 0, grp.getgrnam("dovecot").gr_gid)
        self._own_mail()
        self.port = self.port or free_port()
        if self.tls is not None:
            self.tls_port = self.tls_port or free_port()
        (self.directory / "dovecot.conf").write_text(self.config())
        self._prepared = True

    def _own_mail(self) -> None:
        if not self.as_root or not (self.directory / "mail").exists():
            return
        user = self._mail_user()
        os.chown(self.directory / "mail", user.pw_uid, user.pw_gid)
        for path in (self.directory / "mail").rglob("*"):
            os.chown(path, user.pw_uid, user.pw_gid)

    def drop(self, address: str, message: bytes, mailbox: str = "INBOX", name: str = "") -> Path:
        """Deliver ``message`` as an MDA does (``tmp/`` then ``new/``); the file's path."""
        directory = self.maildir(address, mailbox)
        name = name or f"{time.time_ns()}.M{os.getpid()}P{len(os.listdir(directory / 'tmp'))}.test"
        tmp = directory / "tmp" / name
        tmp.write_bytes(message)
        if self.as_root:
            user = self._mail_user()
            os.chown(tmp, user.pw_uid, user.pw_gid)
        os.rename(tmp, directory / "new" / name)
        return directory / "new" / name

    def config(self) -> str:
        """The ``dovecot.conf`` of this instance."""
        me = pwd.getpwuid(os.getuid())
        group = grp.getgrgid(me.pw_gid).gr_name
        root = self.as_root
        login_user, internal_user = ("dovenull", "dovecot") if root else (me.pw_name, me.pw_name)
        internal_group = "dovecot" if root else group
        d = self.directory
        limit = max(100, self.client_limit + 10)
        chroot = "" if root else "chroot ="
        if self.tls is None:
            ssl = "ssl = no"
            imaps = "inet_listener imaps {\n    port = 0\n  }"
        else:
            cert, key = self.tls
            ssl = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}"
            imaps = (
                "inet_listener imaps {\n    address = 127.0.0.1\n"
                f"    port = {self.tls_port}\n    ssl = yes\n  }}"
            )
        return f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
# Failed logins answered at once: the front's own throttle is what the tests look at.
auth_failure_delay = 0
# The front on loopback passes on its client's address (ID x-originating-ip); logged here.
login_trusted_networks = 127.0.0.0/8
imap_id_log = *
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = 1
mail_location = maildir:~/{MAILDIR}
mail_max_userip_connections = {limit}
default_process_limit = {limit}
default_client_limit = {4 * limit}
namespace inbox {{
  inbox = yes
  separator = /
  prefix =
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = {d}/passwd
}}
service imap-login {{
  {chroot}
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  {imaps}
}}
service anvil {{
  {chroot}
}}
"""

    # -- running --------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """``dovecot -F -c CONFIG``; wait until it greets on the port."""
        if not self._prepared:
            self.prepare()
        self._own_mail()
        config = self.directory / "dovecot.conf"
        out = (self.directory / "stdout.log").open("wb")
        self.process = subprocess.Popen(
            [str(self.binary()), "-F", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.logs()}")
            if _greets(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not greet within {timeout:.0f} s: {self.logs()}")

    @property
    def pid(self) -> int:
        """The master process's id."""
        assert self.process is not None, "Dovecot not started"
        return self.process.pid

    def logs(self) -> str:
        """The tail of Dovecot's output and log, for error messages."""
        texts = []
        for name in ("stdout.log", "dovecot.log"):
            with contextlib.suppress(OSError):
                texts.append((self.directory / name).read_text()[-2000:])
        return "\n".join(texts)

    def stop(self) -> None:
        """SIGTERM to the master (it stops its children); SIGKILL if it lingers 30 s."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, signal.SIGTERM, grace=30)

    def __enter__(self) -> DovecotInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
