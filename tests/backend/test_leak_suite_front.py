"""The transcoded-FETCH leak suite of issues 4 and 5, run against the front before Dovecot.

Every test of :mod:`tests.integration.test_transcoded_fetch` -- every FETCH form
opens to the stored message with real decryptors (openssl, gpg), no form shows
the run's marker, sizes and structure describe the view, the same octets across
sessions and a restart -- runs here unchanged; only ``suite_server`` differs: a
front (``--backend``, with and without the view cache) before a Dovecot holding
the accounts, the messages APPENDed through the front.
"""

from __future__ import annotations

import imaplib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backend.front import running_front
from tests.integration.conftest import PASSWORD, RunningServer
from tests.integration.test_transcoded_fetch import *  # noqa: F403  (the tests and their fixtures)
from tests.integration.test_transcoded_fetch import MESSAGES
from tests.integration.transcoding import append, login
from transcoder.backend.dovecot import DovecotInstance

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["cache", "no-cache"])
def suite_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """bob and alice on Dovecot (PASSWORD), the three messages appended through the front."""
    if not DovecotInstance.installed():
        pytest.skip("dovecot is not installed (Debian package dovecot-imapd)")
    accounts = ["bob@example.org", "alice@example.org"]
    extra = ("--view-cache-size", "0") if request.param == "no-cache" else ()
    directory = Path(tempfile.mkdtemp(prefix="transcoder-dovecot-"))
    dovecot = DovecotInstance(directory / "dovecot", dict.fromkeys(accounts, PASSWORD))
    try:
        with dovecot, running_front(dovecot, *extra) as server:
            for user in accounts:
                imap = login(server, user)
                assert [append(imap, m) for m in MESSAGES.values()] == [1, 2, 3]
                imap.logout()
                # Stored in Dovecot, as sent: the suite reads Dovecot's mail through the front.
                direct = imaplib.IMAP4("127.0.0.1", dovecot.port)
                direct.login(user, PASSWORD)
                direct.select("INBOX")
                stored = direct.uid("FETCH", "1", "(BODY.PEEK[])")[1][0][1]
                assert stored == next(iter(MESSAGES.values()))
                direct.logout()
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)
