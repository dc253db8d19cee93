"""Logins at the front are checked by Dovecot (a module of its own: Dovecot's anvil slows
every later login from an address that failed)."""

from __future__ import annotations

import imaplib
from collections.abc import Iterator

import pytest

from tests.backend.conftest import USERS
from tests.backend.front import running_front
from tests.integration.conftest import RunningServer
from transcoder.backend.dovecot import DovecotInstance

pytestmark = pytest.mark.integration

ALICE, BOB = "alice@example.org", "bob@example.org"


@pytest.fixture(scope="module")
def front(dovecot: DovecotInstance) -> Iterator[RunningServer]:
    """The front before the module's Dovecot."""
    with running_front(dovecot) as server:
        yield server


def test_the_clients_address_is_passed_on_to_dovecot(
    front: RunningServer, dovecot: DovecotInstance
) -> None:
    """Before LOGIN the front tells Dovecot the client's address and port (ID, RFC 2971):
    Dovecot, trusting the front, logs the client's own port, not the front's."""
    import time

    imap = imaplib.IMAP4("127.0.0.1", front.imap_port, timeout=60)
    port = imap.sock.getsockname()[1]
    try:
        assert imap.login(ALICE, USERS[ALICE])[0] == "OK"
    finally:
        imap.logout()
    log = dovecot.directory / "dovecot.log"
    deadline = time.monotonic() + 10
    while f"x-originating-port={port}" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"x-originating-port={port}" in log.read_text()


def test_login_is_checked_by_the_backend(front: RunningServer) -> None:
    """Dovecot's password logs in; a wrong one or an unknown account is refused uniformly.

    In a module of its own: Dovecot slows later logins from an address that failed.
    """
    for user, password in ((ALICE, "wrong"), ("nobody@example.org", USERS[ALICE])):
        imap = imaplib.IMAP4("127.0.0.1", front.imap_port, timeout=60)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
            imap.login(user, password)
        imap.shutdown()
    imap = imaplib.IMAP4("127.0.0.1", front.imap_port, timeout=60)
    typ, _ = imap.login(BOB, USERS[BOB])  # quotes and backslashes in the password
    assert typ == "OK"
    imap.logout()
    # The front's own failed-login handling ran: its fail2ban line (docs/fail2ban.md).
    assert 'authentication failed: rip=127.0.0.1 user="alice@example.org"' in front.log.read_text()
