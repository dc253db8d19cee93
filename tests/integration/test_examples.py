"""The examples in examples/ run as documented."""

from __future__ import annotations

import imaplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, free_port

pytestmark = pytest.mark.integration


def wait_for_greeting(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else b""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(100).startswith(b"* OK"):
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("example server did not start")


def test_embedded_server_with_own_realm(tmp_path: Path) -> None:
    """examples/embed_server.py serves a Maildir through the hoster's own realm and checker."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "examples" / "embed_server.py"),
            str(tmp_path / "mail"),
            str(port),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_greeting(port, process)
        client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        client.login("user@example.org", "secret")
        client.append("INBOX", None, None, b"Subject: embedded\r\n\r\nhello\r\n")
        client.select("INBOX")
        _, data = client.fetch("1", "(BODY.PEEK[])")
        assert data[0][1] == b"Subject: embedded\r\n\r\nhello\r\n"
        client.logout()
    finally:
        process.terminate()
        process.wait(timeout=10)
