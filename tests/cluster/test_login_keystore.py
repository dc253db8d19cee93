"""LOGIN on a front whose PostgreSQL keystore is down: ``NO [UNAVAILABLE]``, not OK.

Before, LOGIN succeeded and the session's first SELECT failed; a client
(or a load balancer's retry) is better told at once.  Real PostgreSQL
stopped and started by PID, a real ``twistd transcoder`` on loopback.
"""

from __future__ import annotations

import imaplib
import time
from pathlib import Path

import pytest

from tests.integration.conftest import PASSWORD, RunningServer, admin, free_port
from tests.postgres import PostgresServer

pytestmark = pytest.mark.integration

ALICE = "alice@example.org"


def test_login_while_the_keystore_is_down_is_no_unavailable(tmp_path: Path) -> None:
    """PostgreSQL stopped: LOGIN with the right password is NO [UNAVAILABLE]; back: OK."""
    postgresql = PostgresServer()
    data = tmp_path / "data"
    assert admin(data, "user", "add", ALICE, stdin=PASSWORD + "\n").returncode == 0
    server = RunningServer(data, free_port(), free_port())
    try:
        postgresql.start()
        server.extra_args = ("--keystore", postgresql.new_database())
        server.start()
        imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
        assert imap.login(ALICE, PASSWORD)[0] == "OK"
        imap.logout()
        postgresql.stop()
        imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            imap.login(ALICE, PASSWORD)
        assert imap.state == "NONAUTH"
        imap.logout()
        postgresql.start()
        deadline = time.monotonic() + 30
        while True:
            imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
            try:
                assert imap.login(ALICE, PASSWORD)[0] == "OK"
                assert imap.select("INBOX")[0] == "OK"
                break
            except imaplib.IMAP4.error:
                assert time.monotonic() < deadline
                time.sleep(0.3)
            finally:
                imap.logout()
    finally:
        server.stop()
        postgresql.remove()
