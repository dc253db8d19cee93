"""A PostgreSQL of its own: Debian's initdb into a temporary directory, on loopback.

:class:`PostgresServer` runs ``initdb`` and ``postgres`` from
``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql`` package; the
newest version installed) as an unprivileged user -- PostgreSQL refuses to
run as root: then ``nobody`` owns the directory and runs the server.  The
server listens on a free loopback port (and a unix socket in its own
directory), is started and stopped by PID (SIGINT: fast shutdown), and can
be stopped and started again on the same data (outages).  Durability is off
(``fsync=off``): the data lives as long as the directory.  Authentication is
``trust``: loopback tests and examples only.

:meth:`PostgresServer.standby_of` makes a hot standby of a running server
(``pg_basebackup -R``: streaming replication, the standard recipe), which
:meth:`~PostgresServer.promote` turns into the primary -- the failover a
hoster's PostgreSQL runs, for the fronts' multi-host keystore URI.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from transcoder.cluster.process import stop_process

#: A throw-away cluster: no fsync at initdb, C collation (times compare as text either way).
INITDB_OPTIONS = ("--no-sync", "--encoding=UTF8", "--locale=C")
#: Loopback only; durability off (the data lives as long as the directory).
SERVER_OPTIONS = (
    *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
    *("-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
)


class PostgresMissing(RuntimeError):
    """initdb or postgres is not installed (Debian package ``postgresql``)."""


def postgres_bin(name: str) -> str | None:
    """``name`` (initdb, postgres) of the newest PostgreSQL installed, or ``None``."""
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory (see the module doc)."""

    _names = itertools.count(1)

    def __init__(self, primary: PostgresServer | None = None) -> None:
        """A new cluster by initdb; or, given a running ``primary``, a hot standby of it."""
        initdb, postgres = postgres_bin("initdb"), postgres_bin("postgres")
        basebackup = postgres_bin("pg_basebackup")
        if initdb is None or postgres is None or basebackup is None:
            raise PostgresMissing("PostgreSQL is not installed (Debian package postgresql)")
        self.postgres = postgres
        self.root = Path(tempfile.mkdtemp(prefix="transcoder-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam("nobody")
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.root.chmod(0o755)
        self.socket_dir.mkdir()
        if self._as:
            os.chown(self.socket_dir, self._as["user"], self._as["group"])
        if primary is None:
            command = [initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust"]
            command += INITDB_OPTIONS
        else:  # initdb's pg_hba.conf lets loopback replication connections in (trust)
            command = [basebackup, "-D", str(self.data), "-R", "-X", "stream", "--no-sync"]
            command += ["--checkpoint=fast"]  # not a spread checkpoint: minutes
            command += ["-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"]
        subprocess.run(
            command,
            check=True,
            capture_output=True,
            cwd=self.root,
            timeout=120,
            **self._as,
        )

    @classmethod
    def standby_of(cls, primary: PostgresServer) -> PostgresServer:
        """A hot standby streaming from the running ``primary`` (not started)."""
        return cls(primary)

    def promote(self) -> None:
        """Make this standby the primary; return once it accepts writes (pg_promote)."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as connection:
            promoted = connection.execute("SELECT pg_promote(true, 60)").fetchone()
        if not promoted or not promoted[0]:
            raise RuntimeError("postgres was not promoted: " + self.log())

    def log(self) -> str:
        """What the server wrote to its log."""
        path = self.root / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def dsn(self, database: str = "postgres") -> str:
        """The URI of ``database`` on this server, as a front's ``--keystore`` takes it."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start the server (on the same port) and wait until it takes connections."""
        import psycopg  # the [postgresql] extra

        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 (the child keeps it)
        where = ("-D", str(self.data), "-p", str(self.port), "-k", str(self.socket_dir))
        self.process = subprocess.Popen(
            [self.postgres, *where, *SERVER_OPTIONS],
            stdout=log,
            stderr=log,
            cwd=self.root,
            **self._as,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("postgres did not start: " + self.log()) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT: sessions are ended, the data kept)."""
        if self.process is not None:
            stop_process(self.process, signal.SIGINT, grace=30)
        self.process = None

    def new_database(self) -> str:
        """A fresh, empty database on this server; its URI."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
