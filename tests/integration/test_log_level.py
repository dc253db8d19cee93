"""``--log-level`` under twistd: events below the level never reach twistd's log file."""

from __future__ import annotations

import imaplib
from pathlib import Path

import pytest

from .conftest import PASSWORD, RunningServer, admin, free_port


def _run_once(tmp_path: Path, *args: str) -> str:
    """Start a server with ``args``, fail one LOGIN, stop it; its log file's text."""
    data = tmp_path / "data"
    assert admin(data, "user", "add", "alice@example.org", stdin=PASSWORD + "\n").returncode == 0
    running = RunningServer(data, free_port(), free_port(), args)
    running.start()
    try:
        client = imaplib.IMAP4("127.0.0.1", running.imap_port)
        with pytest.raises(imaplib.IMAP4.error):
            client.login("alice@example.org", "wrong password")
        client.logout()
    finally:
        running.stop()
    return running.log.read_text()


def test_warn_level_keeps_warnings_and_drops_info(tmp_path: Path) -> None:
    log = _run_once(tmp_path, "--log-level", "warn")
    assert "authentication failed" in log
    # Logged by the listeners as they bind and by the reactor at SIGTERM, both at info.
    assert "Starting factory" not in log
    assert "Received SIGTERM" not in log


def test_info_level_is_the_default(tmp_path: Path) -> None:
    log = _run_once(tmp_path)
    assert "authentication failed" in log
    assert "Starting factory" in log
    assert "Received SIGTERM" in log
