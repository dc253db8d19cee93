"""The Dovecot fixture itself: a real server, its own accounts, mail dropped as an MDA does."""

from __future__ import annotations

import imaplib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.backend.conftest import USERS
from transcoder.backend.dovecot import DovecotInstance


def test_dovecot_serves_dropped_mail_to_its_accounts(dovecot: DovecotInstance) -> None:
    """Mail dropped into new/ is fetched byte for byte; the namespace delimiter is '/'."""
    message = b"Subject: fixture\r\n\r\nbody\r\n"
    dovecot.drop("bob@example.org", message, "Archive")
    client = imaplib.IMAP4("127.0.0.1", dovecot.port)
    try:
        client.login("bob@example.org", USERS["bob@example.org"])
        status, listing = client.list()
        assert status == "OK"
        assert b'(\\HasNoChildren) "/" Archive' in listing
        assert client.select("Archive") == ("OK", [b"1"])
        _, data = client.fetch("1", "(BODY.PEEK[])")
        assert data[0][1] == message
    finally:
        client.logout()


def test_dovecot_refuses_a_wrong_password(dovecot: DovecotInstance) -> None:
    """The passwd-file is the one Dovecot checks: a wrong password is refused."""
    client = imaplib.IMAP4("127.0.0.1", dovecot.port)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login("alice@example.org", "wrong")
    finally:
        client.shutdown()


def test_dovecot_is_stopped_by_pid() -> None:
    """stop() ends the master process it started, found by its PID."""
    directory = Path(tempfile.mkdtemp(prefix="transcoder-dovecot-"))
    instance = DovecotInstance(directory / "d", {"carol@example.org": "pw"})
    try:
        instance.start()
        pid = instance.pid
        os.kill(pid, 0)  # running
        instance.stop()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        instance.stop()
        shutil.rmtree(directory, ignore_errors=True)
