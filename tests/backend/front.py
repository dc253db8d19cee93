"""The front under test: ``twistd -n transcoder --backend imap://...`` before a real Dovecot."""

from __future__ import annotations

import imaplib
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.backend.conftest import USERS
from tests.integration.conftest import PASSWORD, RunningServer, free_port
from transcoder.backend.dovecot import DovecotInstance


@dataclass
class FrontServer(RunningServer):
    """A :class:`RunningServer` that is a front: ``backend`` options come with every start,
    whatever a test sets ``extra_args`` to."""

    backend: tuple[str, ...] = ()

    def start(self) -> None:
        """Start with the backend options before the test's own."""
        own = self.extra_args
        self.extra_args = (*self.backend, *own)
        try:
            super().start()
        finally:
            self.extra_args = own


@contextmanager
def running_front(
    dovecot: DovecotInstance, *extra: str, backend_url: str | None = None
) -> Iterator[RunningServer]:
    """A front on a fresh data directory (no accounts file entries: logins go to Dovecot).

    The backend is ``dovecot``'s plain IMAP port unless ``backend_url`` names another.
    """
    root = Path(tempfile.mkdtemp(prefix="transcoder-front-"))
    backend = ("--backend", backend_url or f"imap://127.0.0.1:{dovecot.port}")
    server = FrontServer(root / "data", free_port(), free_port(), tuple(extra), backend=backend)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def front_login(server: RunningServer, user: str, mailbox: str | None = "INBOX") -> imaplib.IMAP4:
    """An imaplib session of ``user`` on the front (its Dovecot password)."""
    imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=60)
    imap.login(user, USERS[user])
    if mailbox is not None:
        typ, data = imap.select(mailbox)
        assert typ == "OK", data
    return imap


def direct_login(
    dovecot: DovecotInstance, user: str, mailbox: str | None = "INBOX"
) -> imaplib.IMAP4:
    """An imaplib session of ``user`` straight on Dovecot."""
    imap = imaplib.IMAP4("127.0.0.1", dovecot.port, timeout=60)
    imap.login(user, USERS[user])
    if mailbox is not None:
        typ, data = imap.select(mailbox)
        assert typ == "OK", data
    return imap


class WireClient:
    """A raw IMAP connection: exact lines, for BYE and IDLE checks."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""
        self.greeting = self.line()

    def line(self, timeout: float = 30) -> bytes:
        """The next line (CRLF stripped); b"" when the server closed."""
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                rest, self.buffer = self.buffer, b""
                return rest
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def send(self, data: bytes) -> None:
        """Send raw octets."""
        self.sock.sendall(data)

    def command(self, tag: bytes, text: bytes) -> list[bytes]:
        """Send ``tag text``; the lines up to the tagged answer, that one included."""
        self.send(tag + b" " + text + b"\r\n")
        return self.until(tag + b" ")

    def until(self, prefix: bytes, timeout: float = 30) -> list[bytes]:
        """Lines up to (and including) one starting with ``prefix``."""
        lines = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.line(max(0.1, deadline - time.monotonic()))
            lines.append(line)
            if line.startswith(prefix) or not line:
                return lines
        raise AssertionError(f"no {prefix!r} line: {lines}")

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


@contextmanager
def front_server(
    root: Path, accounts: Sequence[str], extra_args: Sequence[str] = ()
) -> Iterator[RunningServer]:
    """``tests.integration.transcoding.running_server``'s contract, served by a front.

    A Dovecot of its own holds ``accounts`` (with the integration suites'
    PASSWORD); ``root`` is unused (Dovecot must live outside pytest's 0700
    temporary directories).  Suites run against the front by patching their
    ``running_server`` with this, for their module only.
    """
    directory = Path(tempfile.mkdtemp(prefix="transcoder-dovecot-"))
    dovecot = DovecotInstance(directory / "dovecot", dict.fromkeys(accounts, PASSWORD))
    try:
        with dovecot, running_front(dovecot, *extra_args) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def rerun_through_front(suite: ModuleType) -> Any:
    """An autouse module fixture: the tests of ``suite``, star-imported into the calling
    module, run against fronts before Dovecot (``suite``'s own module is untouched)."""

    @pytest.fixture(scope="module", autouse=True)
    def _through_the_front() -> Iterator[None]:
        if not DovecotInstance.installed():
            pytest.skip("dovecot is not installed (Debian package dovecot-imapd)")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(suite, "running_server", front_server)
            yield

    return _through_the_front
