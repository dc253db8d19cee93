"""Fronts for a local cluster: ``twistd -n transcoder`` on a ``haproxy:`` endpoint, by PID.

:class:`FrontProcess` runs one front -- ``--backend`` (the mail), ``--keystore``
(PostgreSQL), ``--view-secret`` (one file for all), listening for
connections that start with a PROXY header (``--imap
haproxy:tcp:PORT:interface=127.0.0.1``, no implicit-TLS port) -- in the
foreground with its own data directory and log, and stops it by its PID
(SIGTERM, as systemd does; SIGKILL after 15 s).  Its readiness check speaks
as HAProxy does: a PROXY v1 header, then the greeting must come.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transcoder.cluster.process import stop_process

#: The checkout (when run from one): twistd finds the plugin in its ``twisted/plugins``.
SOURCE = Path(__file__).resolve().parents[2]


def write_view_secret(path: Path) -> Path:
    """A new 32-octet view secret at ``path`` (mode 0600), as every front of a cluster reads it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, os.urandom(32))
    finally:
        os.close(fd)
    return path


def proxy_greets(port: int, client: str = "192.0.2.1", host: str = "127.0.0.1") -> bool:
    """Whether a front behind ``haproxy:`` greets after a PROXY v1 header naming ``client``."""
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.sendall(f"PROXY TCP4 {client} {host} 40000 {port}\r\n".encode())
            return s.recv(200).startswith(b"* OK")
    except OSError:
        return False


@dataclass
class FrontProcess:
    """One front (see the module doc); ``extra`` options go after the cluster's own."""

    data: Path
    port: int
    backend: str
    keystore: str
    view_secret: Path
    extra: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.data.parent / f"{self.data.name}.log"

    def command(self) -> list[str]:
        """The ``twistd`` command line."""
        return [
            *(sys.executable, "-c", "from twisted.scripts.twistd import run; run()"),
            *("-n", "--pidfile=", f"--logfile={self.log}", "transcoder"),
            *("--data", str(self.data)),
            *("--imap", f"haproxy:tcp:{self.port}:interface=127.0.0.1", "--imaps", "none"),
            *("--backend", self.backend, "--keystore", self.keystore),
            *("--view-secret", str(self.view_secret), *self.extra),
        ]

    @property
    def pid(self) -> int:
        """The front's process id."""
        assert self.process is not None, "front not started"
        return self.process.pid

    def start(self, timeout: float = 60.0) -> None:
        """Start the front and wait until it greets behind a PROXY header."""
        self.data.mkdir(parents=True, exist_ok=True)
        cwd = SOURCE if (SOURCE / "twisted" / "plugins").is_dir() else self.data
        err = self.log.with_suffix(".stderr")
        with err.open("ab") as out:  # a file, not a pipe: nobody reads it while it runs
            self.process = subprocess.Popen(
                self.command(), cwd=cwd, stdout=subprocess.DEVNULL, stderr=out
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"front exited: {err.read_text()}\n{self.logs()}")
            if proxy_greets(self.port):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"front did not greet within {timeout:.0f} s: {self.logs()}")

    def logs(self) -> str:
        """The front's log (twistd's)."""
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM by PID (SIGKILL after 15 s)."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, signal.SIGTERM, grace=15)
