"""A real server behind PROXY headers: ``twistd -n transcoder --imap haproxy:tcp:PORT``.

The tests play the load balancer: they connect to the ``haproxy:`` port and
send a PROXY header (v1 text or v2 binary, as HAProxy's ``send-proxy`` /
``send-proxy-v2`` do) naming a client address, then speak IMAP.  The
implicit-TLS port stays a plain listener, for direct connections.
"""

from __future__ import annotations

import imaplib
import ipaddress
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.integration.conftest import PASSWORD, REPO, RunningServer, admin, free_port

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(source: str, port: int = 55555, dest: str = "127.0.0.1", dport: int = 143) -> bytes:
    """A PROXY protocol v1 header (text) for a TCP client at ``source``."""
    family = "TCP6" if ipaddress.ip_address(source).version == 6 else "TCP4"
    return f"PROXY {family} {source} {dest} {port} {dport}\r\n".encode()


def proxy_v2(source: str, port: int = 55555, dest: str | None = None, dport: int = 143) -> bytes:
    """A PROXY protocol v2 header (binary, command PROXY, TCP) for a client at ``source``."""
    src = ipaddress.ip_address(source)
    dst = ipaddress.ip_address(dest or ("::1" if src.version == 6 else "127.0.0.1"))
    family = 0x21 if src.version == 6 else 0x11  # TCP over IPv6 / IPv4
    body = src.packed + dst.packed + struct.pack("!HH", port, dport)
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def tls_context() -> ssl.SSLContext:
    """A client context accepting the server's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ProxiedIMAP4(imaplib.IMAP4):
    """imaplib, as a load balancer would forward it: a PROXY header goes first."""

    def __init__(self, port: int, header: bytes) -> None:
        self.header = header
        super().__init__("127.0.0.1", port, timeout=60)

    def _create_socket(self, timeout: Any) -> socket.socket:
        sock = super()._create_socket(timeout)
        sock.sendall(self.header)
        return sock


class ProxiedServer(RunningServer):
    """A server whose ``--imap`` is ``haproxy:tcp:imap_port``; ``--imaps`` is direct."""

    password = PASSWORD

    def start(self) -> None:
        """Start it; ready when a connection with a PROXY header is greeted."""
        cmd = [
            *(sys.executable, "-c", "from twisted.scripts.twistd import run; run()"),
            *("-n", "--pidfile=", f"--logfile={self.log}", "transcoder", "--data", str(self.data)),
            *("--imap", f"haproxy:tcp:{self.imap_port}:interface=127.0.0.1"),
            *("--imaps", f"tcp:{self.imaps_port}:interface=127.0.0.1", *self.extra_args),
        ]
        self.process = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                with socket.create_connection(("127.0.0.1", self.imap_port), timeout=2) as s:
                    s.sendall(proxy_v1("192.0.2.1"))
                    if s.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start in 30 s")

    def proxied(self, source: str, version: int = 1) -> ProxiedIMAP4:
        """An imaplib connection through the ``haproxy:`` port as client ``source``."""
        header = proxy_v1(source) if version == 1 else proxy_v2(source)
        return ProxiedIMAP4(self.imap_port, header)

    def login_via_proxy(self, source: str, user: str, password: str, version: int = 1) -> bool:
        """STARTTLS and LOGIN as client ``source`` behind the balancer; whether it logged in."""
        imap = self.proxied(source, version)
        try:
            imap.starttls(ssl_context=tls_context())
            return _login(imap, user, password)
        finally:
            imap.shutdown()

    def login_direct(self, user: str, password: str) -> bool:
        """LOGIN on the implicit-TLS port, straight from 127.0.0.1; whether it logged in."""
        imap = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=tls_context())
        try:
            return _login(imap, user, password)
        finally:
            imap.shutdown()

    def wait_for_log_lines(self, text: str, count: int, timeout: float = 60) -> Path:
        """Wait until the log holds ``count`` lines containing ``text``; the log's path."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists() and self.log.read_text().count(text) >= count:
                return self.log
            time.sleep(0.1)
        raise AssertionError(f"fewer than {count} {text!r} lines in the log")


def _login(imap: imaplib.IMAP4, user: str, password: str) -> bool:
    try:
        imap.login(user, password)
    except imaplib.IMAP4.error:
        return False
    return True


@contextmanager
def proxied_server(tmp_path: Path, *extra_args: str) -> Iterator[ProxiedServer]:
    """A running ProxiedServer with alice@example.org and bob@example.org (PASSWORD)."""
    data = tmp_path / "data"
    for address in ("alice@example.org", "bob@example.org"):
        result = admin(data, "user", "add", address, stdin=PASSWORD + "\n")
        assert result.returncode == 0, result.stderr
    running = ProxiedServer(data, free_port(), free_port(), extra_args)
    running.start()
    try:
        yield running
    finally:
        running.stop()
