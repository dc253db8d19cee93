"""A real HAProxy before the fronts: ``mode tcp``, ``send-proxy-v2``, health checks.

:class:`HAProxyInstance` writes its own ``haproxy.cfg`` into a directory of
its own and runs Debian's ``haproxy`` (package ``haproxy``) in the
foreground (``-db``), unprivileged, on loopback; it is stopped by its PID
(SIGUSR1 first: a soft stop that lets sessions finish, then SIGTERM).

* ``port`` is the balancer: round robin over every front (``balance
  roundrobin``; set ``balance`` to ``leastconn`` for long IMAP sessions, as
  the example configuration does).
* ``direct_ports[name]`` is a second listener per front that reaches that
  front only, still through HAProxy and with the PROXY header -- what a test
  uses to land on a chosen front.
* Each server line has ``send-proxy-v2`` (the client's address in a PROXY v2
  header before any IMAP octet; the front listens on a ``haproxy:``
  endpoint) and ``check`` with ``check-send-proxy``: every ``inter``
  seconds HAProxy connects, sends the header and expects the IMAP greeting
  (``* OK``); after ``fall`` failed checks the front is taken out, after
  ``rise`` good ones it is back.  ``option redispatch`` and ``retries`` send
  a connection whose front refuses it to another.

:func:`config` is the text alone, also what ``examples/cluster/haproxy.cfg``
shows a hoster.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from transcoder.backend.dovecot import free_port


class HAProxyMissing(RuntimeError):
    """haproxy is not installed (Debian package ``haproxy``)."""


def binary() -> str | None:
    """The ``haproxy`` binary on the PATH or in /usr/sbin, or None."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


def config(
    port: int,
    fronts: Mapping[str, int],
    direct_ports: Mapping[str, int] | None = None,
    *,
    host: str = "127.0.0.1",
    balance: str = "roundrobin",
    inter_ms: int = 500,
    fall: int = 2,
    rise: int = 1,
) -> str:
    """``haproxy.cfg`` for fronts named ``fronts`` (name -> port on ``host``)."""
    check = f"check inter {inter_ms} fall {fall} rise {rise} check-send-proxy"
    servers = "\n".join(
        f"    server {name} {host}:{front_port} send-proxy-v2 {check}"
        for name, front_port in fronts.items()
    )
    direct = ""
    for name, direct_port in (direct_ports or {}).items():
        direct += f"""
# {name} alone (tests and diagnostics), still with the PROXY header.
listen direct_{name}
    bind {host}:{direct_port}
    server {name} {host}:{fronts[name]} send-proxy-v2
"""
    return f"""\
global
    maxconn 4096

defaults
    mode tcp
    timeout connect 5s
    # IMAP sessions idle up to 30 minutes (RFC 3501 section 5.4; IDLE renews within that).
    timeout client 31m
    timeout server 31m
    timeout check 2s
    retries 2
    option redispatch

frontend imap
    bind {host}:{port}
    default_backend fronts

backend fronts
    balance {balance}
    # Health check: a PROXY header, then the front's greeting.
    option tcp-check
    tcp-check expect rstring ^\\*\\ OK
{servers}
{direct}"""


@dataclass
class HAProxyInstance:
    """HAProxy in ``directory`` before ``fronts`` (name -> loopback port); see the module doc."""

    directory: Path
    fronts: Mapping[str, int]
    port: int = 0
    direct_ports: dict[str, int] = field(default_factory=dict)
    balance: str = "roundrobin"
    process: subprocess.Popen[bytes] | None = None

    def prepare(self) -> Path:
        """Choose the ports and write ``haproxy.cfg``; its path."""
        if binary() is None:
            raise HAProxyMissing("haproxy is not installed (Debian package haproxy)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        for name in self.fronts:
            self.direct_ports.setdefault(name, free_port())
        path = self.directory / "haproxy.cfg"
        path.write_text(config(self.port, self.fronts, self.direct_ports, balance=self.balance))
        return path

    @property
    def pid(self) -> int:
        """HAProxy's process id."""
        assert self.process is not None, "HAProxy not started"
        return self.process.pid

    def start(self, timeout: float = 30.0) -> None:
        """``haproxy -db -f haproxy.cfg``; wait until the balancer greets through a front."""
        path = self.prepare()
        check = subprocess.run(
            [str(binary()), "-c", "-q", "-f", str(path)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy.cfg refused: {check.stdout}{check.stderr}")
        out = (self.directory / "haproxy.log").open("ab")
        self.process = subprocess.Popen(
            [str(binary()), "-db", "-f", str(path)], stdout=out, stderr=subprocess.STDOUT
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.logs()}")
            if greets(self.port):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"no greeting through haproxy within {timeout:.0f} s: {self.logs()}")

    def logs(self) -> str:
        """The tail of HAProxy's output."""
        with contextlib.suppress(OSError):
            return (self.directory / "haproxy.log").read_text()[-2000:]
        return ""

    def stop(self) -> None:
        """SIGUSR1 (soft stop), then SIGTERM after 2 s, SIGKILL after 10 more; by PID."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGUSR1, 2.0), (signal.SIGTERM, 10.0)):
            process.send_signal(sig)
            try:
                process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
        process.kill()
        process.wait()

    def __enter__(self) -> HAProxyInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def greets(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a connection to ``host:port`` is greeted with ``* OK`` within 2 s."""
    with (
        contextlib.suppress(OSError),
        socket.create_connection((host, port), timeout=2) as s,
    ):
        return s.recv(200).startswith(b"* OK")
    return False
