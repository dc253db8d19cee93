"""Fixtures that run the real server (``twistd -n transcoder``) on loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def admin(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``transcoder-admin --data DATA ARGS`` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "transcoder.admin", "--data", str(data), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


@dataclass
class RunningServer:
    """A ``twistd -n transcoder`` process and how to reach it."""

    data: Path
    imap_port: int
    imaps_port: int
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.data.parent / "twistd.log"

    def start(self) -> None:
        """Start the server and wait until it greets on the IMAP port."""
        cmd = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            f"--logfile={self.log}",
            "transcoder",
            "--data",
            str(self.data),
            "--imap",
            f"tcp:{self.imap_port}:interface=127.0.0.1",
            "--imaps",
            f"tcp:{self.imaps_port}:interface=127.0.0.1",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                log = self.log.read_text() if self.log.exists() else ""
                raise RuntimeError(f"server exited: {err}\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.imap_port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start in 30 s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, as a service manager would)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same data directory and ports."""
        self.stop()
        self.start()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """A running server with accounts alice@example.org and bob@example.org."""
    data = tmp_path / "data"
    for address in ("alice@example.org", "bob@example.org"):
        result = admin(data, "user", "add", address, stdin=PASSWORD + "\n")
        assert result.returncode == 0, result.stderr
    running = RunningServer(data, free_port(), free_port())
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients connect straight to loopback whatever the environment says."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name, raising=False)
