"""The whole scale-out stack on loopback: Dovecot, PostgreSQL, N fronts, HAProxy.

:class:`Stack` starts, in a directory of its own, a Dovecot holding the mail
(:mod:`transcoder.backend.dovecot`), a PostgreSQL holding keys and policies
(:mod:`.postgres`), one view secret file, ``fronts`` fronts
(:mod:`.fronts`) and an HAProxy before them (:mod:`.haproxy`) -- and stops
them all by PID, in reverse order, whatever happened.  ``examples/cluster/run.py``
and ``benchmarks/cluster.py`` drive it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from transcoder.backend.dovecot import DovecotInstance, free_port
from transcoder.cluster.fronts import FrontProcess, write_view_secret
from transcoder.cluster.haproxy import HAProxyInstance
from transcoder.cluster.postgres import PostgresServer


@dataclass
class Stack:
    """The stack (see the module doc); ``users`` maps addresses to passwords (Dovecot's)."""

    users: Mapping[str, str]
    fronts: int = 2
    client_limit: int = 200
    front_options: tuple[str, ...] = ()
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="transcoder-stack-")))
    dovecot: DovecotInstance | None = None
    postgres: PostgresServer | None = None
    keystore: str = ""
    front_processes: dict[str, FrontProcess] = field(default_factory=dict)
    balancer: HAProxyInstance | None = None

    def start(self) -> None:
        """Start every part, the mail and the keystore first; stop all if one fails."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.root.chmod(0o755)  # Dovecot's mail processes (as nobody under root) walk it
        self.dovecot = DovecotInstance(
            self.root / "dovecot", dict(self.users), client_limit=self.client_limit
        )
        self.dovecot.prepare()
        self.dovecot.start()
        self.postgres = PostgresServer()
        self.postgres.start()
        self.keystore = self.postgres.new_database()
        secret = write_view_secret(self.root / "view-secret")
        backend = f"imap://127.0.0.1:{self.dovecot.port}"
        for n in range(1, self.fronts + 1):
            front = FrontProcess(
                self.root / f"front{n}",
                free_port(),
                backend,
                self.keystore,
                secret,
                self.front_options,
            )
            self.front_processes[f"front{n}"] = front
            front.start()
        self.balancer = self.balancer_for(list(self.front_processes), "haproxy")
        self.balancer.start()

    def balancer_for(self, names: list[str], directory: str) -> HAProxyInstance:
        """An HAProxy (not started) before the fronts ``names``, in ``root/directory``."""
        ports = {name: self.front_processes[name].port for name in names}
        return HAProxyInstance(self.root / directory, ports, balance="leastconn")

    @property
    def port(self) -> int:
        """The balancer's port."""
        assert self.balancer is not None, "stack not started"
        return self.balancer.port

    def pids(self) -> dict[str, int]:
        """Every running part's process id."""
        found: dict[str, int] = {}
        if self.dovecot is not None and self.dovecot.process is not None:
            found["dovecot"] = self.dovecot.pid
        if self.postgres is not None and self.postgres.pid is not None:
            found["postgres"] = self.postgres.pid
        for name, front in self.front_processes.items():
            if front.process is not None:
                found[name] = front.pid
        if self.balancer is not None and self.balancer.process is not None:
            found["haproxy"] = self.balancer.pid
        return found

    def stop(self) -> None:
        """Stop everything by PID (balancer, fronts, keystore, mail) and remove the directory."""
        if self.balancer is not None:
            self.balancer.stop()
        for front in self.front_processes.values():
            front.stop()
        if self.postgres is not None:
            self.postgres.remove()
        if self.dovecot is not None:
            self.dovecot.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
