"""A port in use stops ``twistd -n transcoder`` with one line naming the port and the option."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration


def start(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Run the server as an operator would; it must exit by itself."""
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    return subprocess.run(
        [*command, "-n", "--pidfile=", "transcoder", "--data", str(tmp_path / "data"), *options],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("option", ["imap", "imaps"])
def test_port_in_use_is_one_line(tmp_path: Path, option: str) -> None:
    """Another process on the --imap (or --imaps) port: exit 1 and one line, no traceback."""
    with socket.socket() as taken, socket.socket() as free:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        free.bind(("127.0.0.1", 0))
        busy = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        other = f"tcp:{free.getsockname()[1]}:interface=127.0.0.1"
        endpoints = {"imap": busy, "imaps": other} if option == "imap" else {"imap": other}
        endpoints.setdefault("imaps", busy)
        free.close()
        done = start(tmp_path, "--imap", endpoints["imap"], "--imaps", endpoints["imaps"])
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    port = busy.split(":")[1]
    expected = (
        f"transcoder: cannot listen on port {port} (--{option} {busy}): address already in use;"
        f" choose another with --{option}"
    )
    lines = [line for line in output.splitlines() if "transcoder: cannot listen" in line]
    assert len(lines) == 1 and lines[0].endswith(expected), output
    assert "Traceback" not in output
